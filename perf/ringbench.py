"""Measurement primitives for the ring benchmarks: two pinned processes and one mechanism.

A :class:`Pair` spawns two peer processes (multiprocessing ``spawn``), pins them (``two-cores``:
peer A on core 0, peer B on core 1; ``one-core``: both on core 0) and connects them with one
mechanism, in both directions (A->B and B->A):

* ``ring-numba``  — two bot4 rings; both loops run inside ``@njit(nogil=True)`` kernels over
  ``ring_ops``, idling with the ring's own wait strategy (``ops.wait_claim``/``wait_peek``).
* ``ring-python`` — two bot4 rings; plain Python loops over ``Producer.try_push`` /
  ``Consumer.try_pop`` (busy-spin retries, yield calls ``os.sched_yield`` after a few
  failed tries, park uses the blocking ``push`` / ``pop``); batches use claim/commit and
  peek/release of up to 128 slots.
* ``mp-queue``    — two ``multiprocessing.Queue``; a record travels as ``rec.tobytes()``.
* ``faster-fifo`` — two ``faster_fifo.Queue``, likewise.

Every mechanism carries the same 64-byte ``MARKET_DATA`` record and offers three measurements:

* :meth:`Pair.latency` — ping-pong: A stamps, sends record ``k`` to B, B echoes it, A reads
  it back and stamps again. Every round trip is kept (ns, int64); one-way latency is half a
  round trip. Both stamps come from ``CLOCK_MONOTONIC`` in the same process.
* :meth:`Pair.stream` ``batch=1`` — A sends ``n`` records one at a time, B reads them one at a
  time, checks each ``seq`` is the next one and checksums ``seq + price`` of every record.
  Elapsed time runs from A's stamp before its first send to B's stamp after its last read
  (both ``CLOCK_MONOTONIC``, comparable across processes). Count and checksum are compared
  with what A sent; a mismatch raises.
* :meth:`Pair.stream` ``batch=128`` — the same with batches: the rings claim/commit and
  peek/release up to 128 slots; the queues send each batch as one ``arr.tobytes()`` and the
  consumer checksums every record of ``np.frombuffer``.

Segments are unlinked as soon as both peers have attached (the mappings stay valid), so a
killed benchmark leaves nothing in ``/dev/shm``; :meth:`Pair.close` and the ``finally``
around setup unlink again in case attaching failed. Peers never outlive their pipe: a peer
whose parent vanished sees EOF and exits; every loop also has a deadline.

Call :func:`warm_numba_cache` once in the parent before starting pairs: ``cache=True`` writes
the compiled kernels to ``perf/__pycache__`` and the spawned peers load them from there.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import multiprocessing as mp
import os
import re
import signal
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from bot4.records import MARKET_DATA
from bot4.shm import (
    BP_BLOCK,
    WAIT_BUSY_SPIN,
    WAIT_SPIN_PARK,
    WAIT_SPIN_YIELD,
    Consumer,
    Producer,
    Segment,
    create_ring,
    segment_name,
)
from bot4.shm import histogram as H
from bot4.shm import ring_ops as ops
from bot4.shm.atomics import monotonic_ns
from bot4.shm.ring_layout import W_CAPACITY
from bot4.shm.segment import PREFIX, SHM_DIR, instance_segments

MECHANISMS = ("ring-numba", "ring-python", "mp-queue", "faster-fifo")
RING_MECHANISMS = ("ring-numba", "ring-python")
WAITS = {"busy-spin": WAIT_BUSY_SPIN, "yield": WAIT_SPIN_YIELD, "park": WAIT_SPIN_PARK}
PLACEMENTS = {"two-cores": (0, 1), "one-core": (0, 0)}

DTYPE = MARKET_DATA
BATCH = 128
RING_CAPACITY = 4096  # slots per ring (256 KiB of 64-byte records)
QUEUE_BYTES = 4 << 20  # faster-fifo buffer per queue
PY_SPIN_TRIES = 8  # Python yield strategy: failed tries before each os.sched_yield()
PRICE0 = 1_000_000  # price of record seq is PRICE0 + (seq & 1023), ticks
SLICE_NS = 10_000_000  # longest single wait inside a kernel before it checks its deadline
_ONE = np.uint64(1)

# Default run lengths: about 0.3-0.5 s per measurement on a 2-core VM; scale them with
# ``run_lengths(mechanism, scale)``.
RUN_LENGTHS = {
    #                round trips, single records, batched records
    "ring-numba": (500_000, 2_000_000, 15_000_000),
    "ring-python": (50_000, 80_000, 2_000_000),
    "mp-queue": (5_000, 50_000, 2_000_000),
    "faster-fifo": (5_000, 60_000, 2_500_000),
}
CHUNK = 1024  # Python senders prepare records CHUNK at a time (vectorised), then send each
LATENCY_WARMUP = 100  # round trips run (untimed) before the recorded ones in every call


def run_lengths(
    mechanism: str, scale: float = 1.0, wait: str = "busy-spin"
) -> tuple[int, int, int]:
    """``(round trips, single records, batched records)`` for a run of ``mechanism``.

    A ring-numba round trip that yields or parks takes ~25x one that busy-spins."""
    rt, single, batched = RUN_LENGTHS[mechanism]
    if mechanism == "ring-numba" and wait in ("yield", "park"):
        rt //= 25
    return tuple(max(1, int(n * scale)) for n in (rt, single, batched))


# ----------------------------------------------------------------------------------------
# results


def _one_way_percentiles(rt_ns: np.ndarray) -> dict[str, float]:
    """Half the round trip's percentiles, through bot4's one latency histogram."""
    return {k: v / 2.0 for k, v in H.percentiles_of(rt_ns).items()}


@dataclass
class Latency:
    """Every round trip of one ping-pong run (ns); one-way figures are half a round trip."""

    rt_ns: np.ndarray
    errors: int = 0

    @property
    def percentiles(self) -> dict[str, float]:
        """One-way ``p50_ns``, ``p99_ns``, ``p999_ns``."""
        return _one_way_percentiles(self.rt_ns)

    @property
    def p50_ns(self) -> float:
        return self.percentiles["p50_ns"]

    def histogram(self) -> Histogram:
        return Histogram.of(self.rt_ns)


@dataclass
class Stream:
    """One streaming run: ``records`` delivered and checked in ``seconds``."""

    records: int
    seconds: float
    batch: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else math.inf


@dataclass
class Histogram:
    """Round trips (ns) in bot4's one latency histogram (``bot4.shm.histogram``:
    HdrHistogram's layout, 1 ns..1 h, 2 significant figures): sparse counts by HdrHistogram
    index, mergeable across processes."""

    counts: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values_ns: np.ndarray) -> Histogram:
        h = H.new()
        H.record_many(h, np.asarray(values_ns, np.int64))
        c = H.counts_of(h)
        return cls({int(k): int(c[k]) for k in np.flatnonzero(c)})

    def merge(self, other: Histogram) -> Histogram:
        out = dict(self.counts)
        for k, c in other.counts.items():
            out[k] = out.get(k, 0) + c
        return Histogram(out)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def _dense(self) -> np.ndarray:
        c = np.zeros(H.COUNTS_LEN, np.int64)
        for k, n in self.counts.items():
            c[k] = n
        return c

    def percentile(self, q: float) -> float:
        """Value (ns) at percentile ``q`` (0..100), HdrHistogram's (its bucket's highest)."""
        if not self.counts:
            return math.nan
        return float(H.value_at_percentile(self._dense(), q))

    def one_way(self) -> dict[str, float]:
        if not self.counts:
            return {"p50_ns": math.nan, "p99_ns": math.nan, "p999_ns": math.nan}
        p50, p99, p999 = H.values_at_percentiles(self._dense(), (50.0, 99.0, 99.9))
        return {"p50_ns": float(p50) / 2, "p99_ns": float(p99) / 2, "p999_ns": float(p999) / 2}

    def to_json(self) -> dict:
        return {
            "unit": "ns",
            "quantity": "round trip",
            "bucket": "HdrHistogram counts index (bot4.shm.histogram: 1 ns..1 h, 2 figures)",
            "count": self.count,
            "one_way": self.one_way(),
            "counts": {str(k): c for k, c in sorted(self.counts.items())},
        }

    @classmethod
    def from_json(cls, d: dict) -> Histogram:
        return cls({int(k): int(c) for k, c in d["counts"].items()})


class BenchError(RuntimeError):
    """A peer failed, timed out, or delivered the wrong records."""


# ----------------------------------------------------------------------------------------
# numba kernels (ring-numba). Positions are u64; slot indices are taken as ``pos & mask``.


@njit(nogil=True, cache=True)
def _claim(hdr, n, deadline_ns):
    """``ops.wait_claim`` until at least one slot or the deadline: ``(pos, count)``."""
    while True:
        pos, count = ops.wait_claim(hdr, n, SLICE_NS)
        if count > 0 or monotonic_ns() > deadline_ns:
            return pos, count


@njit(nogil=True, cache=True)
def _peek(hdr, n, deadline_ns):
    """``ops.wait_peek`` until at least one record or the deadline: ``(pos, count)``."""
    while True:
        pos, count = ops.wait_peek(hdr, n, SLICE_NS)
        if count > 0 or monotonic_ns() > deadline_ns:
            return pos, count


@njit(nogil=True, cache=True)
def ping_kernel(out_hdr, out_slots, in_hdr, in_slots, rt_ns, warmup, deadline_ns):
    """Peer A: ``warmup + len(rt_ns)`` round trips; ``rt_ns`` gets the recorded ones.

    Returns the number of echoes with a wrong ``seq``, or -1 on deadline."""
    out_mask = out_hdr[W_CAPACITY] - _ONE
    in_mask = in_hdr[W_CAPACITY] - _ONE
    errors = 0
    for k in range(warmup + rt_ns.shape[0]):
        seq = np.uint64(k + 1)
        t0 = monotonic_ns()
        pos, count = _claim(out_hdr, 1, deadline_ns)
        if count == 0:
            return -1
        rec = out_slots[pos & out_mask]
        rec.seq = seq
        rec.ts_recv_ns = t0
        rec.price = PRICE0
        ops.producer_commit(out_hdr, 1)
        pos, count = _peek(in_hdr, 1, deadline_ns)
        if count == 0:
            return -1
        if in_slots[pos & in_mask].seq != seq:
            errors += 1
        ops.consumer_release(in_hdr, 1)
        t1 = monotonic_ns()
        if k >= warmup:
            rt_ns[k - warmup] = t1 - t0
    return errors


@njit(nogil=True, cache=True)
def pong_kernel(out_hdr, out_slots, in_hdr, in_slots, n, deadline_ns):
    """Peer B: echo ``n`` records back unchanged. Returns records echoed, or -1 on deadline."""
    out_mask = out_hdr[W_CAPACITY] - _ONE
    in_mask = in_hdr[W_CAPACITY] - _ONE
    for _ in range(n):
        ipos, count = _peek(in_hdr, 1, deadline_ns)
        if count == 0:
            return -1
        opos, count = _claim(out_hdr, 1, deadline_ns)
        if count == 0:
            return -1
        out_slots[opos & out_mask] = in_slots[ipos & in_mask]
        ops.producer_commit(out_hdr, 1)
        ops.consumer_release(in_hdr, 1)
    return n


@njit(nogil=True, cache=True)
def produce_kernel(hdr, slots, n, batch, deadline_ns):
    """Send records ``seq`` = 1..n in claims of up to ``batch`` slots.

    Returns ``(t0_ns, sent, checksum)``; checksum is the sum of ``seq + price``."""
    mask = hdr[W_CAPACITY] - _ONE
    checksum = np.int64(0)
    t0 = monotonic_ns()
    i = 0
    while i < n:
        pos, count = _claim(hdr, min(batch, n - i), deadline_ns)
        if count == 0:
            break
        base = np.int64(pos & mask)
        for k in range(count):
            seq = i + k + 1
            price = PRICE0 + (seq & 1023)
            rec = slots[base + k]
            rec.seq = seq
            rec.ts_recv_ns = t0
            rec.price = price
            rec.qty = 1 + (seq & 7)
            checksum += seq + price
        ops.producer_commit(hdr, count)
        i += count
    return t0, i, checksum


@njit(nogil=True, cache=True)
def consume_kernel(hdr, slots, n, batch, deadline_ns):
    """Read ``n`` records in peeks of up to ``batch``; check ``seq`` order, checksum.

    Returns ``(t1_ns, received, checksum, out_of_order)``."""
    mask = hdr[W_CAPACITY] - _ONE
    checksum = np.int64(0)
    errors = 0
    i = 0
    while i < n:
        pos, count = _peek(hdr, min(batch, n - i), deadline_ns)
        if count == 0:
            break
        base = np.int64(pos & mask)
        for k in range(count):
            rec = slots[base + k]
            seq = np.int64(rec.seq)
            if seq != i + k + 1:
                errors += 1
            checksum += seq + rec.price
        ops.consumer_release(hdr, count)
        i += count
    return monotonic_ns(), i, checksum, errors


# ----------------------------------------------------------------------------------------
# peers: one object per process, ``out`` towards the other peer and ``in`` from it


def _deadline(timeout_s: float) -> int:
    return time.monotonic_ns() + int(timeout_s * 1e9)


def _fill_batch(arr: np.ndarray, first_seq: int, t0: int) -> int:
    """Write records ``first_seq ..`` into ``arr`` (vectorised); return their checksum."""
    seq = np.arange(first_seq, first_seq + len(arr), dtype=np.int64)
    price = PRICE0 + (seq & 1023)
    arr["seq"] = seq
    arr["ts_recv_ns"] = t0
    arr["price"] = price
    arr["qty"] = 1 + (seq & 7)
    return int(seq.sum() + price.sum())


def _echo_errors(echoes: list, first_seq: int) -> int:
    """Echoed records (np.void) that do not carry ``seq`` = first_seq, first_seq + 1, ..."""
    return sum(int(r["seq"]) != first_seq + k for k, r in enumerate(echoes))


def _check_batch(arr: np.ndarray, first_seq: int) -> tuple[int, int]:
    """``(checksum, out_of_order)`` of a received batch expected to start at ``first_seq``."""
    seq = arr["seq"].astype(np.int64)
    bad = int(np.count_nonzero(seq != np.arange(first_seq, first_seq + len(arr))))
    return int(seq.sum() + arr["price"].sum()), bad


class _RingPeer:
    def __init__(self, out_name: str, in_name: str) -> None:
        self.out = Producer(out_name, DTYPE)
        self.inp = Consumer(in_name, DTYPE)
        self.wait = self.out.header.wait

    def close(self) -> None:
        self.out.close()
        self.inp.close()


class RingNumbaPeer(_RingPeer):
    def ping(self, n: int, warmup: int, timeout_s: float):
        rt = np.empty(n, np.int64)
        errors = ping_kernel(
            self.out.hdr,
            self.out.slots,
            self.inp.hdr,
            self.inp.slots,
            rt,
            warmup,
            _deadline(timeout_s),
        )
        if errors < 0:
            raise BenchError("ping timed out")
        return rt, int(errors)

    def pong(self, n: int, timeout_s: float):
        got = pong_kernel(
            self.out.hdr, self.out.slots, self.inp.hdr, self.inp.slots, n, _deadline(timeout_s)
        )
        if got < 0:
            raise BenchError("pong timed out")

    def produce(self, n: int, batch: int, timeout_s: float):
        t0, sent, checksum = produce_kernel(
            self.out.hdr, self.out.slots, n, batch, _deadline(timeout_s)
        )
        return int(t0), int(sent), int(checksum)

    def consume(self, n: int, batch: int, timeout_s: float):
        t1, got, checksum, errors = consume_kernel(
            self.inp.hdr, self.inp.slots, n, batch, _deadline(timeout_s)
        )
        return int(t1), int(got), int(checksum), int(errors)


class RingPythonPeer(_RingPeer):
    """Plain Python loops over the ring's Python API."""

    def _push(self, rec, deadline: int) -> None:
        """Slow path of a push that found the ring full."""
        p = self.out
        if self.wait == WAIT_SPIN_PARK:
            if not p.push(rec, timeout=max(0.0, (deadline - time.monotonic_ns()) / 1e9)):
                raise BenchError("push timed out")
            return
        tries = 0
        while not p.try_push(rec):
            tries += 1
            if self.wait == WAIT_SPIN_YIELD and tries >= PY_SPIN_TRIES:
                os.sched_yield()
            if tries & 1023 == 0 and time.monotonic_ns() > deadline:
                raise BenchError("push timed out")

    def _pop(self, deadline: int):
        """Slow path of a pop that found the ring empty."""
        c = self.inp
        if self.wait == WAIT_SPIN_PARK:
            rec = c.pop(timeout=max(0.0, (deadline - time.monotonic_ns()) / 1e9))
            if rec is None:
                raise BenchError("pop timed out")
            return rec
        tries = 0
        while (rec := c.try_pop()) is None:
            tries += 1
            if self.wait == WAIT_SPIN_YIELD and tries >= PY_SPIN_TRIES:
                os.sched_yield()
            if tries & 1023 == 0 and time.monotonic_ns() > deadline:
                raise BenchError("pop timed out")
        return rec

    def ping(self, n: int, warmup: int, timeout_s: float):
        deadline = _deadline(timeout_s)
        try_push, try_pop, clock = self.out.try_push, self.inp.try_pop, time.monotonic_ns
        chunk = np.zeros(CHUNK, DTYPE)
        rt = np.empty(n, np.int64)
        echoes = []
        for k in range(warmup + n):
            j = k % CHUNK
            if j == 0:
                _fill_batch(chunk, k + 1, clock())
            rec = chunk[j]
            t0 = clock()
            if not try_push(rec):
                self._push(rec, deadline)
            got = try_pop()
            if got is None:
                got = self._pop(deadline)
            t1 = clock()
            echoes.append(got)
            if k >= warmup:
                rt[k - warmup] = t1 - t0
        return rt, _echo_errors(echoes, 1)

    def pong(self, n: int, timeout_s: float):
        deadline = _deadline(timeout_s)
        try_push, try_pop = self.out.try_push, self.inp.try_pop
        for _ in range(n):
            got = try_pop()
            if got is None:
                got = self._pop(deadline)
            if not try_push(got):
                self._push(got, deadline)

    def produce(self, n: int, batch: int, timeout_s: float):
        deadline = _deadline(timeout_s)
        p = self.out
        t0 = time.monotonic_ns()
        if batch == 1:
            try_push = p.try_push
            chunk = np.zeros(CHUNK, DTYPE)
            checksum = 0
            for first in range(0, n, CHUNK):
                part = chunk[: min(CHUNK, n - first)]
                checksum += _fill_batch(part, first + 1, t0)
                for rec in part:
                    if not try_push(rec):
                        self._push(rec, deadline)
            return t0, n, checksum
        checksum = i = 0
        tries = 0
        while i < n:
            view = self._claim(min(batch, n - i), tries, deadline)
            if len(view) == 0:
                tries += 1
                continue
            tries = 0
            checksum += _fill_batch(view, i + 1, t0)
            k = len(view)
            del view
            p.commit(k)
            i += k
        return t0, n, checksum

    def _claim(self, n: int, tries: int, deadline: int):
        p = self.out
        check = self.wait == WAIT_SPIN_PARK or tries & 1023 == 0
        if tries and check and time.monotonic_ns() > deadline:
            raise BenchError("claim timed out")
        if self.wait == WAIT_SPIN_PARK:
            return p.claim(n, timeout=0.01)
        if self.wait == WAIT_SPIN_YIELD and tries >= PY_SPIN_TRIES:
            os.sched_yield()
        return p.claim(n)

    def _peek(self, n: int, tries: int, deadline: int):
        c = self.inp
        if self.wait == WAIT_SPIN_PARK:
            view = c.peek(n, timeout=0.01)
        else:
            if self.wait == WAIT_SPIN_YIELD and tries >= PY_SPIN_TRIES:
                os.sched_yield()
            view = c.peek(n)
        check = self.wait == WAIT_SPIN_PARK or tries & 1023 == 0
        if len(view) == 0 and check and time.monotonic_ns() > deadline:
            raise BenchError("peek timed out")
        return view

    def consume(self, n: int, batch: int, timeout_s: float):
        deadline = _deadline(timeout_s)
        c = self.inp
        checksum = errors = 0
        if batch == 1:
            try_pop = c.try_pop
            for seq in range(1, n + 1):
                rec = try_pop()
                if rec is None:
                    rec = self._pop(deadline)
                got = int(rec["seq"])
                if got != seq:
                    errors += 1
                checksum += got + int(rec["price"])
            return time.monotonic_ns(), n, checksum, errors
        i = tries = 0
        while i < n:
            view = self._peek(min(batch, n - i), tries, deadline)
            if len(view) == 0:
                tries += 1
                continue
            tries = 0
            s, bad = _check_batch(view, i + 1)
            checksum += s
            errors += bad
            k = len(view)
            del view
            c.release(k)
            i += k
        return time.monotonic_ns(), n, checksum, errors


class QueuePeer:
    """``multiprocessing.Queue`` or ``faster_fifo.Queue``: records travel as bytes."""

    def __init__(self, out_q, in_q) -> None:
        self.out_q = out_q
        self.in_q = in_q
        # multiprocessing.Queue.get(timeout=...) adds a poll(2) per record: the baseline
        # blocks without one (the parent ends a stuck peer). faster-fifo always takes one.
        self.fifo = not hasattr(in_q, "_reader")

    def close(self) -> None:
        pass

    def _get(self, timeout_s: float):
        if self.fifo:
            return functools.partial(self.in_q.get, timeout=timeout_s)
        return self.in_q.get

    def ping(self, n: int, warmup: int, timeout_s: float):
        put, get, clock = self.out_q.put, self._get(timeout_s), time.monotonic_ns
        chunk = np.zeros(CHUNK, DTYPE)
        rt = np.empty(n, np.int64)
        echoes = []
        for k in range(warmup + n):
            j = k % CHUNK
            if j == 0:
                _fill_batch(chunk, k + 1, clock())
            rec = chunk[j]
            t0 = clock()
            put(rec.tobytes())
            got = np.frombuffer(get(), DTYPE)[0]
            t1 = clock()
            echoes.append(got)
            if k >= warmup:
                rt[k - warmup] = t1 - t0
        return rt, _echo_errors(echoes, 1)

    def pong(self, n: int, timeout_s: float):
        put, get = self.out_q.put, self._get(timeout_s)
        for _ in range(n):
            put(get())

    def produce(self, n: int, batch: int, timeout_s: float):
        put = self.out_q.put
        t0 = time.monotonic_ns()
        checksum = 0
        if batch == 1:
            chunk = np.zeros(CHUNK, DTYPE)
            for first in range(0, n, CHUNK):
                part = chunk[: min(CHUNK, n - first)]
                checksum += _fill_batch(part, first + 1, t0)
                for rec in part:
                    put(rec.tobytes())
            return t0, n, checksum
        arr = np.zeros(batch, DTYPE)
        for first in range(0, n, batch):
            chunk = arr[: min(batch, n - first)]
            checksum += _fill_batch(chunk, first + 1, t0)
            put(chunk.tobytes())
        return t0, n, checksum

    def consume(self, n: int, batch: int, timeout_s: float):
        get = self._get(timeout_s)
        checksum = errors = 0
        if batch == 1:
            for seq in range(1, n + 1):
                rec = np.frombuffer(get(), DTYPE)[0]
                got = int(rec["seq"])
                if got != seq:
                    errors += 1
                checksum += got + int(rec["price"])
            return time.monotonic_ns(), n, checksum, errors
        i = 0
        while i < n:
            arr = np.frombuffer(get(), DTYPE)
            s, bad = _check_batch(arr, i + 1)
            checksum += s
            errors += bad
            i += len(arr)
        return time.monotonic_ns(), i, checksum, errors


def _peer_main(role: str, setup: Setup, out, inp, conn) -> None:
    """A peer process: pin, attach, then serve commands from the parent until EOF/stop.

    Every command is answered twice: ``("armed",)`` when received, then ``("ok", result)``
    or ``("error", text)``. The parent arms the receiving side before the sending side."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and ends us
    core = PLACEMENTS[setup.placement][0 if role == "A" else 1]
    os.sched_setaffinity(0, {core})
    try:
        if setup.mechanism == "ring-numba":
            peer = RingNumbaPeer(out, inp)
        elif setup.mechanism == "ring-python":
            peer = RingPythonPeer(out, inp)
        else:
            peer = QueuePeer(out, inp)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return
            if msg[0] == "stop":
                return
            op, kwargs = msg
            conn.send(("armed",))
            try:
                conn.send(("ok", getattr(peer, op)(**kwargs)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        peer.close()


# ----------------------------------------------------------------------------------------
# the pair


@dataclass(frozen=True)
class Setup:
    """What is measured: ``mechanism`` with ``wait`` strategy (rings only), on ``placement``."""

    mechanism: str
    wait: str = "busy-spin"
    placement: str = "two-cores"

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism {self.mechanism!r} not in {MECHANISMS}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement {self.placement!r} not in {tuple(PLACEMENTS)}")
        if self.mechanism in RING_MECHANISMS:
            if self.wait not in WAITS:
                raise ValueError(f"wait {self.wait!r} not in {tuple(WAITS)}")
            if self.wait == "busy-spin" and self.placement == "one-core":
                raise ValueError("never busy-spin two processes on one shared core")
        elif self.wait != "-":
            object.__setattr__(self, "wait", "-")

    @property
    def label(self) -> str:
        wait = "" if self.wait == "-" else f" {self.wait}"
        return f"{self.mechanism}{wait}"


_pair_ids = itertools.count()
# the pairs' instances (perf<pid>) and ttobench's default runs (tto<pid>)
_OUR_SEGMENT = re.compile(rf"^{re.escape(PREFIX)}(?:perf|tto)(\d+)\.")


def default_instance() -> str:
    """The segment instance name used by this process's pairs: ``perf<pid>``."""
    return f"perf{os.getpid()}"


def sweep_segments(instance: str | None = None) -> list[str]:
    """Unlink every ``/dev/shm/bot4.<instance>.*`` segment; return the names removed."""
    names = instance_segments(instance or default_instance())
    for name in names:
        Segment.unlink(name)
    return names


def sweep_stale_segments() -> list[str]:
    """Unlink ``bot4.perf<pid>.*`` and ``bot4.tto<pid>.*`` segments whose creating process
    is gone.

    Segments normally live only until both peers attach (a ``bot4 run`` unlinks its own);
    this removes the few a SIGKILL during pair setup or during ttobench's run can leave
    behind."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    removed = []
    for entry in sorted(entries):
        m = _OUR_SEGMENT.match(entry)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Segment.unlink("/" + entry)
            removed.append("/" + entry)
    return removed


class Pair:
    """Two pinned peer processes joined by one mechanism in both directions."""

    def __init__(self, setup: Setup, *, instance: str | None = None, capacity: int = RING_CAPACITY):
        self.setup = setup
        self.instance = instance or default_instance()
        self.capacity = capacity
        self.procs: list = []
        self.conns: list = []
        self.segments: list[str] = []

    def __enter__(self) -> Pair:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout_s: float = 60.0) -> None:
        cores = set(PLACEMENTS[self.setup.placement])
        if not cores <= os.sched_getaffinity(0):
            raise BenchError(f"{self.setup.placement} needs cores {sorted(cores)}")
        ctx = mp.get_context("spawn")
        try:
            if self.setup.mechanism in RING_MECHANISMS:
                pid = next(_pair_ids)
                ab = segment_name(self.instance, f"p{pid}ab")
                ba = segment_name(self.instance, f"p{pid}ba")
                for name in (ab, ba):
                    self.segments.append(name)
                    create_ring(
                        name,
                        DTYPE,
                        self.capacity,
                        wait=WAITS[self.setup.wait],
                        backpressure=BP_BLOCK,
                    )
                ends = {"A": (ab, ba), "B": (ba, ab)}
            elif self.setup.mechanism == "mp-queue":
                qab, qba = ctx.Queue(), ctx.Queue()
                ends = {"A": (qab, qba), "B": (qba, qab)}
            else:
                import faster_fifo

                qab = faster_fifo.Queue(max_size_bytes=QUEUE_BYTES)
                qba = faster_fifo.Queue(max_size_bytes=QUEUE_BYTES)
                ends = {"A": (qab, qba), "B": (qba, qab)}
            for role in ("A", "B"):
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(
                    target=_peer_main,
                    args=(role, self.setup, *ends[role], child_end),
                    name=f"ringbench-{role}",
                    daemon=True,
                )
                proc.start()
                child_end.close()
                self.procs.append(proc)
                self.conns.append(parent_end)
            for i in range(2):
                self._expect(i, "ready", timeout_s)
        except BaseException:
            self.close(grace_s=0.2)
            raise
        finally:
            self._unlink()

    def _unlink(self) -> None:
        for name in self.segments:
            Segment.unlink(name)
        self.segments.clear()

    def _recv(self, i: int, timeout_s: float):
        conn, proc = self.conns[i], self.procs[i]
        end = time.monotonic() + timeout_s
        while not conn.poll(0.2):
            if not proc.is_alive():
                raise BenchError(f"{self.setup.label}: peer {'AB'[i]} died (exit {proc.exitcode})")
            if time.monotonic() > end:
                raise BenchError(f"{self.setup.label}: peer {'AB'[i]} silent for {timeout_s:.0f} s")
        return conn.recv()

    def _expect(self, i: int, kind: str, timeout_s: float):
        msg = self._recv(i, timeout_s)
        if msg[0] == "error":
            raise BenchError(f"{self.setup.label}: peer {'AB'[i]} failed:\n{msg[1]}")
        if msg[0] != kind:
            raise BenchError(
                f"{self.setup.label}: peer {'AB'[i]} sent {msg[0]!r}, expected {kind!r}"
            )
        return msg[1] if len(msg) > 1 else None

    def _run(self, b_op: tuple, a_op: tuple, timeout_s: float):
        """Arm B, then start A; return ``(result_a, result_b)``. A failure ends the pair."""
        try:
            self.conns[1].send(b_op)
            self._expect(1, "armed", timeout_s)
            self.conns[0].send(a_op)
            self._expect(0, "armed", timeout_s)
            ra = self._expect(0, "ok", timeout_s + 5)
            rb = self._expect(1, "ok", timeout_s + 5)
            return ra, rb
        except BaseException:
            self.close(grace_s=0.2)
            raise

    def latency(self, n: int, *, warmup: int = LATENCY_WARMUP, timeout_s: float = 120.0) -> Latency:
        """``n`` recorded round trips after ``warmup`` untimed ones."""
        (rt, errors), _ = self._run(
            ("pong", {"n": warmup + n, "timeout_s": timeout_s}),
            ("ping", {"n": n, "warmup": warmup, "timeout_s": timeout_s}),
            timeout_s,
        )
        if errors:
            raise BenchError(f"{self.setup.label}: {errors} echoes carried the wrong seq")
        return Latency(rt, errors)

    def stream(self, n: int, *, batch: int = 1, timeout_s: float = 120.0) -> Stream:
        """A sends ``n`` records to B (batches of up to ``batch``); B checks every one."""
        (t0, sent, sum_a), (t1, got, sum_b, bad) = self._run(
            ("consume", {"n": n, "batch": batch, "timeout_s": timeout_s}),
            ("produce", {"n": n, "batch": batch, "timeout_s": timeout_s}),
            timeout_s,
        )
        if sent != n or got != n or sum_a != sum_b or bad:
            raise BenchError(
                f"{self.setup.label}: sent {sent}, received {got} of {n}, "
                f"checksum {sum_b} vs {sum_a}, {bad} out of order"
            )
        return Stream(n, (t1 - t0) / 1e9, batch)

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the peers (politely for ``grace_s``, then by force) and unlink anything left."""
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        for proc in self.procs:
            proc.join(grace_s)
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.procs.clear()
        self.conns.clear()
        self._unlink()


# ----------------------------------------------------------------------------------------
# warming the numba cache


def warm_numba_cache() -> float:
    """Compile (or load) every kernel and ring op the peers call; return seconds taken.

    Runs on a scratch ring per wait strategy in this process; the peers then load the
    kernels from the on-disk cache instead of compiling them twice each."""
    t = time.perf_counter()
    instance = default_instance()
    for wait_name, wait in WAITS.items():
        name = segment_name(instance, f"warm{wait_name.replace('-', '')}")
        create_ring(name, DTYPE, RING_CAPACITY, wait=wait, backpressure=BP_BLOCK)
        try:
            with Producer(name, DTYPE) as p, Consumer(name, DTYPE) as c:
                # The Python API first: its fast path keeps private copies of the positions
                # and does not see positions a kernel moved through p.hdr (see README).
                rec = np.zeros(1, DTYPE)[0]
                p.try_push(rec)
                p.push(rec)
                c.try_pop()
                c.pop(timeout=0.01)
                view = p.claim(4)
                p.commit(len(view))
                del view
                view = c.peek(4, timeout=0.01)
                c.release(len(view))
                del view
                p.claim(1, timeout=0.01)
                soon = _deadline(1.0)
                rt = np.empty(0, np.int64)
                ping_kernel(p.hdr, p.slots, c.hdr, c.slots, rt, 0, soon)
                pong_kernel(p.hdr, p.slots, c.hdr, c.slots, 0, soon)
                produce_kernel(p.hdr, p.slots, 8, BATCH, soon)
                consume_kernel(c.hdr, c.slots, 8, BATCH, soon)
                produce_kernel(p.hdr, p.slots, 1, 1, soon)
                consume_kernel(c.hdr, c.slots, 1, 1, soon)
        finally:
            Segment.unlink(name)
    return time.perf_counter() - t
