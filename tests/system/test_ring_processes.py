"""Two (and three) processes on one ring: continuity, checksums, wrap, backpressure, kills.

Every test names the outcomes it allows. Processes start with the spawn method, are ended
by pid at teardown (``procs`` fixture), and the ``instance`` fixture fails the test if a
segment of ours is left in /dev/shm.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from bot4.records import MARKET_DATA
from bot4.shm import (
    BP_REJECT,
    WAIT_SPIN_PARK,
    WAIT_SPIN_YIELD,
    Consumer,
    OwnerAliveError,
    Producer,
    Segment,
    create_ring,
    segment_name,
)
from bot4.shm.stats import RingReader
from tests.seeds import seeded_rng
from tests.system import ring_workers as w

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]
CTX = mp.get_context("spawn")


class Pair:
    """A ring, a log segment, and helpers to start producer/consumer processes."""

    def __init__(
        self, instance, procs, capacity=1024, wait=WAIT_SPIN_PARK, start=0, log_words=1 << 16, bp=0
    ):
        self.procs = procs
        self.name = segment_name(instance, "ring")
        create_ring(
            self.name, MARKET_DATA, capacity, wait=wait, initial_position=start, backpressure=bp
        )
        self.segments = [self.name]
        self.out = CTX.Queue()

    def log(self, instance, tag, words):
        name = segment_name(instance, tag)
        Segment.create(name, words * 8).close()
        self.segments.append(name)
        return name

    def start(self, target, *args):
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        return self.procs.add(p)

    def close(self):
        for s in self.segments:
            Segment.unlink(s)


@pytest.fixture
def pair_factory(instance, procs):
    made = []

    def make(**kw):
        p = Pair(instance, procs, **kw)
        made.append(p)
        return p

    yield make
    procs.end_all()
    for p in made:
        p.close()


def read_log(name):
    seg = Segment.attach(name)
    arr = np.frombuffer(seg.buf, np.uint64)
    n = int(arr[0])
    out = arr[1 : 1 + n].copy()
    del arr
    seg.close()
    return out


def run_stream(pair, instance, n, batch):
    log = pair.log(instance, "log", n + 2)
    c = pair.start(w.consumer_main, pair.name, 1, n, batch, log, 0, pair.out)
    p = pair.start(w.producer_main, pair.name, 1, n, batch)
    received, checksum, errors, _secs = pair.out.get(timeout=200)
    p.join(30)
    c.join(30)
    assert p.exitcode == 0 and c.exitcode == 0
    return received, checksum, errors, log


def test_ten_million_records_arrive_once_in_order_with_checksum(instance, pair_factory):
    n = 10_000_000
    pair = pair_factory(capacity=4096, wait=WAIT_SPIN_PARK)
    received, checksum, errors, _ = run_stream(pair, instance, n, 256)
    assert (received, errors) == (n, 0)
    assert checksum == w.expected_checksum(1, n)


@pytest.mark.parametrize("wait", [WAIT_SPIN_YIELD, WAIT_SPIN_PARK], ids=["yield", "park"])
@pytest.mark.parametrize("batch", [1, 100])
def test_one_million_records_per_wait_strategy_and_batch_size(instance, pair_factory, wait, batch):
    n = 1_000_000
    pair = pair_factory(capacity=1024, wait=wait)
    received, checksum, errors, log = run_stream(pair, instance, n, batch)
    assert (received, errors) == (n, 0)
    assert checksum == w.expected_checksum(1, n)
    seqs = read_log(log)
    assert len(seqs) == n and seqs[0] == 1 and np.all(np.diff(seqs) == 1)


@pytest.mark.parametrize("start", [(1 << 63) - 300_000, (1 << 64) - 300_000], ids=["2^63", "2^64"])
def test_positions_crossing_the_wrap(instance, pair_factory, start):
    n = 1_000_000
    pair = pair_factory(capacity=512, wait=WAIT_SPIN_YIELD, start=start)
    received, checksum, errors, _ = run_stream(pair, instance, n, 64)
    assert (received, errors) == (n, 0)
    assert checksum == w.expected_checksum(1, n)
    with Consumer(pair.name, MARKET_DATA) as c:
        assert c.consumer_position == (start + n) % (1 << 64)  # crossed and kept counting
        assert c.depth == 0


def test_full_ring_with_slow_consumer_blocks_the_producer(instance, pair_factory):
    n = 3000
    pair = pair_factory(capacity=64, wait=WAIT_SPIN_PARK)
    p = pair.start(w.producer_main, pair.name, 1, n, 1)
    got = []
    with Consumer(pair.name, MARKET_DATA) as c:
        while len(got) < n:
            rec = c.pop(timeout=30)
            assert rec is not None, "producer stopped delivering"
            got.append(int(rec["seq"]))
            if len(got) % 100 == 0:
                time.sleep(0.01)  # slow consumer: the ring fills
        p.join(30)
        snap = RingReader(pair.name)
        s = snap.snapshot()
        snap.close()
    assert got == list(range(1, n + 1))  # blocked, never dropped
    assert s.full_waits > 0 and s.rejections == 0 and s.high_water == 64


def test_full_ring_with_reject_policy_tells_the_producer_and_counts(instance, pair_factory):
    n = 3000
    pair = pair_factory(capacity=64, wait=WAIT_SPIN_YIELD, bp=BP_REJECT)
    with Producer(pair.name, MARKET_DATA) as prod, Consumer(pair.name, MARKET_DATA) as cons:
        rec = np.zeros((), MARKET_DATA)
        accepted, rejected, got = [], 0, []
        for seq in range(1, n + 1):
            rec["seq"] = seq
            if prod.push(rec):
                accepted.append(seq)
            else:
                rejected += 1
            if seq % 3 == 0:  # consumer drains at a third of the producer's rate
                r = cons.try_pop()
                if r is not None:
                    got.append(int(r["seq"]))
        while (r := cons.try_pop()) is not None:
            got.append(int(r["seq"]))
        assert rejected > 0
        assert int(prod.hdr[52]) == rejected  # every rejection counted in the producer line
        assert got == accepted  # nothing accepted was lost; nothing rejected appeared


def test_consumer_killed_mid_batch_resumes_with_only_that_batch_again(instance, pair_factory):
    n, batch = 200_000, 64
    pair = pair_factory(capacity=1024, wait=WAIT_SPIN_YIELD)
    log_a = pair.log(instance, "loga", n + 2)
    log_b = pair.log(instance, "logb", n + 2)
    p = pair.start(w.producer_main, pair.name, 1, n, batch)
    a = pair.start(w.consumer_main, pair.name, 1, n, batch, log_a, 50_000, pair.out)
    seg = Segment.attach(log_a, readonly=True)
    words = np.frombuffer(seg.buf, np.uint64)
    deadline = time.monotonic() + 60
    while words[-1] == 0:
        assert time.monotonic() < deadline and a.is_alive()
        time.sleep(0.01)
    del words
    seg.close()
    os.kill(a.pid, signal.SIGKILL)  # mid-batch: peeked and logged, not released
    a.join(10)
    seen_a = read_log(log_a)
    with Consumer(pair.name, MARKET_DATA) as c:  # the replacement attaches: old owner is dead
        resume_at = c.consumer_position
    b = pair.start(
        w.consumer_main, pair.name, resume_at + 1, n - resume_at, batch, log_b, 0, pair.out
    )
    received, checksum, errors, _ = pair.out.get(timeout=120)
    b.join(30)
    p.join(30)
    seen_b = read_log(log_b)
    assert errors == 0 and received == n - resume_at
    # A saw 1..k continuously; B resumes at the last released position + 1
    assert np.array_equal(seen_a, np.arange(1, len(seen_a) + 1))
    assert seen_b[0] == resume_at + 1 and seen_b[-1] == n and np.all(np.diff(seen_b) == 1)
    # the only records delivered twice are A's unreleased batch, recognisable by their seqs
    again = np.intersect1d(seen_a, seen_b)
    assert 1 <= len(again) <= batch
    assert np.array_equal(again, np.arange(resume_at + 1, len(seen_a) + 1))
    assert checksum == w.expected_checksum(resume_at + 1, n - resume_at)


def test_consumer_killed_at_random_moments_loses_nothing(instance, pair_factory):
    """Three consumers in turn, each SIGKILLed once it has logged a random number of records
    (10k..300k of the 2M left): wherever the kill lands (mid-batch, mid-log, mid-release),
    the next consumer resumes at the released position, so nothing is skipped and at most
    the one unreleased batch is read twice. Allowed outcome besides: a consumer finishing
    before the kill lands (the test process descheduled for the time it takes to read the
    rest); then there is nothing left to kill and its own report must be complete."""
    n, batch = 2_000_000, 32
    pair = pair_factory(capacity=256, wait=WAIT_SPIN_YIELD)
    p = pair.start(w.producer_main, pair.name, 1, n, batch)
    rng, seed = seeded_rng("consumer killed at random moments")
    resume = 0
    for round_ in range(3):
        log = pair.log(instance, f"log{round_}", n + 2)
        cons = pair.start(
            w.consumer_main, pair.name, resume + 1, n - resume, batch, log, 0, pair.out
        )
        kill_after = int(rng.integers(10_000, 300_000))
        seg = Segment.attach(log, readonly=True)
        words = np.frombuffer(seg.buf, np.uint64, 1)
        deadline = time.monotonic() + 120
        while words[0] < kill_after:  # it has kill_after of n - resume left: still reading
            assert cons.is_alive(), f"seed {seed}: consumer {round_} died on its own"
            assert time.monotonic() < deadline, f"seed {seed}: consumer {round_} too slow"
            time.sleep(0.0005)
        os.kill(cons.pid, signal.SIGKILL)  # wherever it is: mid-batch, mid-log, mid-release
        del words
        seg.close()
        cons.join(30)
        with Consumer(pair.name, MARKET_DATA) as c:
            new_resume = c.consumer_position
        seen = read_log(log)
        # allowed: nothing skipped (it logged every released record, from resume + 1 on);
        # at most the one unreleased batch beyond the released position
        assert seen[0] == resume + 1 and np.all(np.diff(seen) == 1), f"seed {seed}"
        if cons.exitcode == 0:  # finished before the kill landed
            received, checksum, errors, _ = pair.out.get(timeout=30)
            assert (received, errors, new_resume, seen[-1]) == (n - resume, 0, n, n)
            assert checksum == w.expected_checksum(resume + 1, n - resume)
            p.join(30)
            return
        assert cons.exitcode == -signal.SIGKILL, f"seed {seed}: exit code {cons.exitcode}"
        assert new_resume <= seen[-1] <= new_resume + batch, f"seed {seed}"
        resume = new_resume
    last = pair.log(instance, "loglast", n + 2)
    pair.start(w.consumer_main, pair.name, resume + 1, n - resume, batch, last, 0, pair.out)
    received, checksum, errors, _ = pair.out.get(timeout=120)
    p.join(30)
    assert errors == 0 and received == n - resume, f"seed {seed}"
    assert checksum == w.expected_checksum(resume + 1, n - resume), f"seed {seed}"
    seen = read_log(last)
    assert seen[0] == resume + 1 and seen[-1] == n, f"seed {seed}"


def test_producer_killed_after_claim_never_exposes_the_claimed_slots(instance, pair_factory):
    pair = pair_factory(capacity=64, wait=WAIT_SPIN_YIELD)
    flag = pair.log(instance, "flag", 1)
    p = pair.start(w.claim_and_hang_main, pair.name, 20, 10, flag)
    seg = Segment.attach(flag, readonly=True)
    f = np.frombuffer(seg.buf, np.uint64, 1)
    deadline = time.monotonic() + 60
    while f[0] == 0:
        assert time.monotonic() < deadline and p.is_alive()
        time.sleep(0.01)
    del f
    seg.close()
    with Consumer(pair.name, MARKET_DATA) as c:
        with pytest.raises(OwnerAliveError):
            Producer(pair.name, MARKET_DATA)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        got = [int(c.try_pop()["seq"]) for _ in range(20)]
        assert got == list(range(1, 21))
        assert c.try_pop() is None  # the 10 claimed-but-unpublished slots never appear
        with Producer(pair.name, MARKET_DATA) as p2:  # replacement takes over the dead side
            rec = np.zeros((), MARKET_DATA)
            for seq in (21, 22):
                rec["seq"] = seq
                assert p2.try_push(rec)
        assert [int(c.try_pop()["seq"]) for _ in range(2)] == [21, 22]
        assert c.try_pop() is None


def test_stats_reader_sees_consistent_values_and_never_writes(instance, pair_factory):
    n = 2_000_000
    pair = pair_factory(capacity=1024, wait=WAIT_SPIN_PARK)
    stop = pair.log(instance, "stop", 1)
    log = pair.log(instance, "log", n + 2)
    seg = Segment.attach(pair.name, readonly=True)
    identity_before = bytes(seg.buf[:128])
    stats = pair.start(w.stats_main, pair.name, stop, pair.out)
    time.sleep(1.0)  # the reader is attached and snapshotting
    c = pair.start(w.consumer_main, pair.name, 1, n, 64, log, 0, pair.out)
    p = pair.start(w.producer_main, pair.name, 1, n, 64)
    results = [pair.out.get(timeout=200)]
    p.join(30)
    c.join(30)
    s = Segment.attach(stop)
    np.frombuffer(s.buf, np.uint64, 1)[0] = 1
    s.close()
    results.append(pair.out.get(timeout=30))
    stats.join(30)
    received, _, errors, _ = next(r for r in results if len(r) == 4)
    snaps, violations, write_refused, stats_pid, pids_seen = next(r for r in results if len(r) == 5)
    assert (received, errors) == (n, 0)
    assert snaps > 10 and violations == 0
    assert write_refused  # its mapping is PROT_READ: a write is refused, not performed
    assert bytes(seg.buf[:128]) == identity_before
    # the header only ever named the pair (or nobody): the reader never claimed a side
    assert set(pids_seen) - {0} == {p.pid, c.pid} and stats_pid not in pids_seen
    seg.close()
