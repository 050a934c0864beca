"""Process bodies and numba kernels for the multi-process ring tests.

Records carry ``seq`` (1-based, contiguous), ``price = seq * 3 + 1`` and
``qty = seq ^ 0x5A5A``, so a consumer can check continuity and every field of every record,
and a checksum over the whole stream is known in closed form.
"""

from __future__ import annotations

import os
import time

import numpy as np
from numba import njit

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment
from bot4.shm.atomics import load_acquire, sched_yield, store_release
from bot4.shm.ring_layout import W_CAPACITY
from bot4.shm.ring_ops import consumer_release, producer_commit, wait_claim, wait_peek

WAIT_NS = 20_000_000
# A log segment is a uint64 array: word 0 counts the seqs logged, words 1.. hold them, and
# the last word is set to 1 when a holding consumer has reached its awkward moment.


def expected_checksum(first: int, n: int) -> int:
    s = np.arange(first, first + n, dtype=np.uint64)
    return int((s * np.uint64(31) + (s * np.uint64(3) + np.uint64(1))).sum(dtype=np.uint64))


@njit(nogil=True, cache=True)
def produce(hdr, slots, first_seq, n, batch):
    mask = hdr[W_CAPACITY] - np.uint64(1)
    seq = np.uint64(first_seq)
    end = np.uint64(first_seq + n)
    while seq < end:
        want = min(np.int64(batch), np.int64(end - seq))
        pos, count = wait_claim(hdr, want, WAIT_NS)
        for i in range(count):
            s = seq + np.uint64(i)
            r = slots[(pos + np.uint64(i)) & mask]
            r.seq = s
            r.price = np.int64(s) * 3 + 1
            r.qty = np.int64(s ^ np.uint64(0x5A5A))
        producer_commit(hdr, count)
        seq += np.uint64(count)
    return np.int64(seq) - np.int64(first_seq)


@njit(nogil=True, cache=True)
def consume(hdr, slots, expect_first, n, batch, log, hold_after):
    """Read ``n`` records; check each; log every seq before releasing its batch.

    Returns (received, checksum, errors). ``hold_after`` > 0: after that many records, peek
    one more batch, log it, and spin forever without releasing (to be killed there).
    """
    mask = hdr[W_CAPACITY] - np.uint64(1)
    expect = np.uint64(expect_first)
    received = 0
    errors = 0
    checksum = np.uint64(0)
    while received < n:
        pos, count = wait_peek(hdr, min(np.int64(batch), n - received), WAIT_NS)
        for i in range(count):
            r = slots[(pos + np.uint64(i)) & mask]
            s = r.seq
            if (
                s != expect
                or r.price != np.int64(s) * 3 + 1
                or r.qty != np.int64(s ^ np.uint64(0x5A5A))
            ):
                errors += 1
            expect = s + np.uint64(1)
            checksum += s * np.uint64(31) + np.uint64(r.price)
            k = load_acquire(log, 0) + np.uint64(1)
            log[k] = s
            store_release(log, 0, k)
        if hold_after > 0 and received >= hold_after and count > 0:
            store_release(log, log.shape[0] - 1, np.uint64(1))
            while True:  # holding a peeked, logged, unreleased batch: the kill lands here
                sched_yield()
        consumer_release(hdr, count)
        received += count
    return received, checksum, errors


def producer_main(name: str, first_seq: int, n: int, batch: int) -> None:
    p = Producer(name, MARKET_DATA)
    produce(p.hdr, p.slots, first_seq, n, batch)
    p.close()


def consumer_main(
    name: str, first_seq: int, n: int, batch: int, log_name: str, hold_after: int, out
) -> None:
    c = Consumer(name, MARKET_DATA)
    seg = Segment.attach(log_name)
    log = np.frombuffer(seg.buf, np.uint64)
    t0 = time.perf_counter()
    received, checksum, errors = consume(c.hdr, c.slots, first_seq, n, batch, log, hold_after)
    out.put((int(received), int(checksum), int(errors), time.perf_counter() - t0))
    del log
    c.close()


def stats_main(name: str, stop_name: str, out) -> None:
    """A third process: snapshot the ring read-only until told to stop; report violations."""
    from bot4.shm.stats import RingReader

    r = RingReader(name)
    stop = Segment.attach(stop_name, readonly=True)
    flag = np.frombuffer(stop.buf, np.uint64, 1)
    snaps = violations = 0
    write_refused = False
    try:
        r.segment.buf[0:1] = b"x"
    except TypeError:
        write_refused = True
    last_prod = last_cons = 0
    pids: set[int] = set()
    first = None
    while flag[0] == 0:
        s = r.snapshot()
        snaps += 1
        if first is None:
            first = s.consumer_position
        rel_c = (s.consumer_position - first) % (1 << 64)
        rel_p = (s.producer_position - first) % (1 << 64)
        if not (0 <= s.depth <= s.capacity) or rel_p < rel_c:
            violations += 1
        if rel_p < last_prod or rel_c < last_cons:  # positions only grow
            violations += 1
        if s.consumed < 0 or s.produced < 0 or s.high_water > s.capacity:
            violations += 1
        last_prod, last_cons = rel_p, rel_c
        pids.update((s.producer_pid, s.consumer_pid))
    out.put((snaps, violations, write_refused, os.getpid(), sorted(pids)))
    del flag
    stop.close()
    r.close()


def claim_and_hang_main(name: str, published: int, claimed: int, flag_name: str) -> None:
    """Publish ``published`` records, then claim and fill ``claimed`` more and never commit."""
    p = Producer(name, MARKET_DATA)
    produce(p.hdr, p.slots, 1, published, 16)
    view = p.claim(claimed)
    view["seq"] = 999_999
    view["price"] = -1
    seg = Segment.attach(flag_name)
    np.frombuffer(seg.buf, np.uint64, 1)[0] = 1
    while True:
        time.sleep(1)
