"""Ring race: bot4's ring against a reference SPSC ring, like for like (issue 15).

The same produce/consume loops around each ring's own primitives (``refring`` for the
reference; ``ring_ops.producer_claim``/``producer_commit`` and
``consumer_peek``/``consumer_release`` for bot4, exactly as ``../shared/bench/ringrace.py``
drives them), two forked processes pinned to cores 0 (producer) and 1 (consumer), a
4096-slot ring of 64-byte records, ``n`` records per race, single-record publishes
(``batch`` 1) and batches of 128. Rounds interleave the kinds (reference, bot4, ...) so
that load on a shared machine hits them alike; the figure of a kind is the median of its
rounds and the ratio is bot4 / reference of those medians.

Kinds:

* ``reference`` — ``refring``: two counters and the slots, nothing else;
* ``bot4`` — a bot4 ring with ``wait = "busy-spin"`` (as in the issue's race): each commit
  stores the position and counts the batch;
* ``bot4-park`` — the same with ``wait = "park"``: each commit also pays the fence and
  the load of the consumer's ``parked`` word (``wake_consumer``) that lets a parked
  consumer be woken; the consumer here never parks, so this is the fence's price.

The consumer checks every record's sequence and the checksum; a race that lost or
reordered a record raises. Each side reports its involuntary context switches during the
timed loop: a race in which either side was preempted measured the scheduler, and the
table says how many were.

    .venv/bin/python perf/ringrace.py                      # 5 rounds of 20 M records
    .venv/bin/python perf/ringrace.py --rounds 7 --records 4e6 --kinds reference,bot4
    .venv/bin/python perf/ringrace.py --asm                # NRT calls in the loops (want 0)
    .venv/bin/python perf/ringrace.py --fifo               # both sides SCHED_FIFO (root)

Segments are ``/dev/shm/bot4.race<pid>.*``, unlinked after every race (and stale ones of
dead runs at start). ``bench_ringrace.py`` runs the same races under pyperf.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import re
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import bot4  # noqa: F401  (configures numba's CPU features before numba is imported)
from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.shm import ring_ops as ops
from bot4.shm.atomics import cpu_pause
from bot4.shm.ring_layout import HEADER_WORDS, W_CAPACITY, WAIT_BUSY_SPIN, WAIT_SPIN_PARK
from bot4.shm.segment import PREFIX, SHM_DIR

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refring  # noqa: E402
from numba import njit  # noqa: E402  (after bot4)

CAPACITY = 4096
BATCHED = 128
RECORDS = 20_000_000
KINDS = ("reference", "bot4", "bot4-park")
WAITS = {"bot4": WAIT_BUSY_SPIN, "bot4-park": WAIT_SPIN_PARK}
TARGETS = {1: 0.8, BATCHED: 0.95}  # bot4 / reference, issue 15
CTX = mp.get_context("fork")  # the children inherit the compiled kernels
FIFO_PRIORITY = 10


class RaceError(RuntimeError):
    """A race lost or reordered records, or a side did not finish in time."""


@njit(nogil=True)  # not cached: numba keys a cache on this file only, not on ring_ops
def b4_produce(hdr, slots, n, batch):
    mask = np.int64(slots.shape[0] - 1)
    i = 0
    while i < n:
        pos, count = ops.producer_claim(hdr, min(batch, n - i))
        if count == 0:
            cpu_pause()
            continue
        base = np.int64(pos) & mask
        for k in range(count):
            rec = slots[base + k]
            rec.seq = i + k
            rec.price = i + k
        ops.producer_commit(hdr, count)
        i += count
    return i


@njit(nogil=True)  # not cached: numba keys a cache on this file only, not on ring_ops
def b4_consume(hdr, slots, n, batch):
    mask = np.int64(slots.shape[0] - 1)
    got = 0
    csum = 0
    errs = 0
    while got < n:
        pos, count = ops.consumer_peek(hdr, batch)
        if count == 0:
            cpu_pause()
            continue
        base = np.int64(pos) & mask
        for k in range(count):
            s = np.int64(slots[base + k].seq)
            if s != got + k:
                errs += 1
            csum += s
        ops.consumer_release(hdr, count)
        got += count
    return got, csum, errs


@dataclass(frozen=True)
class Race:
    kind: str
    batch: int
    records: int
    seconds: float
    preempted: int  # involuntary context switches of both sides during the timed loops

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def _side(kind: str, role: str, name: str, n: int, batch: int, fifo: bool, out, barrier) -> None:
    try:
        if fifo:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
        _run_side(kind, role, name, n, batch, out, barrier)
    except Exception as exc:  # the parent reports it; a child's traceback helps no one
        out.put(("error", f"{role}: {type(exc).__name__}: {exc}"))


def _run_side(kind: str, role: str, name: str, n: int, batch: int, out, barrier) -> None:
    os.sched_setaffinity(0, {0 if role == "p" else 1})
    if kind == "reference":
        keep = Segment.attach(name)
        hdr, slots = refring.views(keep.buf, CAPACITY)
        fn = refring.stream_produce if role == "p" else refring.stream_consume
    else:
        keep = (Producer if role == "p" else Consumer)(name, MARKET_DATA, CAPACITY)
        hdr, slots = keep.hdr, keep.slots
        fn = b4_produce if role == "p" else b4_consume
    barrier.wait(30)
    sw0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
    t0 = time.perf_counter_ns()
    r = fn(hdr, slots, n, batch)
    t1 = time.perf_counter_ns()
    sw = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - sw0
    out.put((role, t0, t1, r if role == "c" else int(r), sw))
    del hdr, slots
    with contextlib.suppress(BufferError):
        keep.close()


_count = 0


def race(kind: str, batch: int, n: int, *, fifo: bool = False, timeout_s: float = 120.0) -> Race:
    """One race of ``n`` records between a producer on core 0 and a consumer on core 1
    (``fifo``: both sides ``SCHED_FIFO``, see ``--fifo``)."""
    global _count
    _count += 1
    name = segment_name(f"race{os.getpid()}", f"{kind.replace('-', '')}{_count}")
    if kind == "reference":
        Segment.create(name, refring.ring_bytes(CAPACITY)).close()
    else:
        create_ring(name, MARKET_DATA, CAPACITY, wait=WAITS[kind])
    out = CTX.Queue()
    barrier = CTX.Barrier(2)
    procs = [
        CTX.Process(target=_side, args=(kind, role, name, n, batch, fifo, out, barrier))
        for role in "pc"
    ]
    try:
        for p in procs:
            p.start()
        got = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < 2:
            try:
                role, *rest = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RaceError(f"{kind} batch {batch}: no result within {timeout_s:g} s") from None
            if role == "error":
                raise RaceError(f"{kind} batch {batch}: {rest[0]}")
            got[role] = rest
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        Segment.unlink(name)
    (pt0, pt1, sent, psw), (ct0, ct1, (count, csum, errs), csw) = got["p"], got["c"]
    if sent != n or count != n or errs or csum != n * (n - 1) // 2:
        raise RaceError(f"{kind} batch {batch}: sent {sent}, got {count}, {errs} out of order")
    return Race(kind, batch, n, (max(pt1, ct1) - min(pt0, ct0)) * 1e-9, psw + csw)


def warm() -> float:
    """Compile (or load) both rings' loops in this process before any race forks."""
    t = time.perf_counter()
    inst = f"race{os.getpid()}"
    name = segment_name(inst, "warmref")
    seg = Segment.create(name, refring.ring_bytes(CAPACITY))
    try:
        hdr, slots = refring.views(seg.buf, CAPACITY)
        refring.stream_produce(hdr, slots, 10, 1)
        refring.stream_consume(hdr, slots, 10, 1)
        del hdr, slots
    finally:
        seg.close()
        Segment.unlink(name)
    name = segment_name(inst, "warmb4")
    create_ring(name, MARKET_DATA, CAPACITY, wait=WAIT_BUSY_SPIN)
    try:
        with Producer(name, MARKET_DATA) as p, Consumer(name, MARKET_DATA) as c:
            b4_produce(p.hdr, p.slots, 10, 1)
            b4_consume(c.hdr, c.slots, 10, 1)
    finally:
        Segment.unlink(name)
    return time.perf_counter() - t


_OURS = re.compile(rf"^{re.escape(PREFIX)}race(\d+)\.")


def sweep_stale_segments() -> list[str]:
    """Unlink ``bot4.race<pid>.*`` segments whose process is gone."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(SHM_DIR)):
            m = _OURS.match(entry)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                Segment.unlink("/" + entry)
                removed.append("/" + entry)
    return removed


def nrt_calls() -> dict[str, int]:
    """NRT reference-count calls in the native code of bot4's race loops (want 0: each is
    a locked instruction per record)."""
    out = {}
    hdr = np.zeros(HEADER_WORDS, np.uint64)
    hdr[W_CAPACITY] = CAPACITY
    slots = np.zeros(CAPACITY, MARKET_DATA)
    for fn in (b4_produce, b4_consume):
        fresh = njit(nogil=True)(fn.py_func)  # numba shows no assembly for cached code
        fresh(hdr, slots, 10, 1)
        (asm,) = fresh.inspect_asm().values()
        out[fn.__name__] = len(
            re.findall(r"\bNRT_(?:incref|decref)\b", asm.split("_ZN7cpython")[0])
        )
    return out


def run_rounds(
    kinds: list[str], batches: list[int], rounds: int, n: int, *, fifo: bool = False
) -> dict[tuple[str, int], list[Race]]:
    """``rounds`` interleaved rounds (every batch size, every kind) of races."""
    out: dict[tuple[str, int], list[Race]] = {}
    for _ in range(rounds):
        for batch in batches:
            for kind in kinds:
                out.setdefault((kind, batch), []).append(race(kind, batch, n, fifo=fifo))
    return out


def print_table(results: dict[tuple[str, int], list[Race]]) -> None:
    batches = sorted({b for _, b in results})
    kinds = [k for k in KINDS if any(k == kk for kk, _ in results)]
    print(f"{'batch':>5}  {'kind':<10}{'median M rec/s':>15}{'vs reference':>14}  rounds (M rec/s)")
    for batch in batches:
        ref = results.get(("reference", batch))
        ref_rate = statistics.median(r.rate for r in ref) if ref else None
        for kind in kinds:
            rs = results.get((kind, batch))
            if not rs:
                continue
            med = statistics.median(r.rate for r in rs)
            ratio = f"{med / ref_rate:.2f}x" if ref_rate else "-"
            each = ", ".join(f"{r.rate / 1e6:.0f}" + ("*" if r.preempted else "") for r in rs)
            print(f"{batch:>5}  {kind:<10}{med / 1e6:>15.1f}{ratio:>14}  {each}")
    hit = sum(1 for rs in results.values() for r in rs if r.preempted)
    total = sum(len(rs) for rs in results.values())
    print(f"* a side was preempted during the race ({hit} of {total}): the scheduler, not the ring")
    for batch, target in TARGETS.items():
        ref, b4 = results.get(("reference", batch)), results.get(("bot4", batch))
        if ref and b4:
            ratio = statistics.median(r.rate for r in b4) / statistics.median(r.rate for r in ref)
            verdict = "PASS" if ratio >= target else "FAIL"
            print(f"target batch {batch}: bot4 >= {target:g}x reference: {ratio:.2f}x {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--records", type=float, default=RECORDS, help="records per race (20e6)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--batches", default=f"1,{BATCHED}", help="comma list of batch sizes")
    ap.add_argument("--asm", action="store_true", help="print NRT calls in bot4's loops and exit")
    ap.add_argument(
        "--fifo",
        action="store_true",
        help="run both sides SCHED_FIFO (root): on a shared machine the races measure the "
        "rings, not the scheduler (the kernel's RT throttling leaves others 5%%)",
    )
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        print(f"ringrace: error: --kinds takes {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        print("ringrace: error: needs cores 0 and 1", file=sys.stderr)
        return 2
    sweep_stale_segments()
    print(f"kernels ready in {warm():.1f} s; load average {os.getloadavg()[0]:.2f}")
    if args.asm:
        print("NRT reference-count calls in the native loops:", nrt_calls())
        return 0
    batches = [int(b) for b in args.batches.split(",") if b]
    try:
        results = run_rounds(kinds, batches, args.rounds, int(args.records), fifo=args.fifo)
    except RaceError as exc:
        print(f"ringrace: error: {exc}", file=sys.stderr)
        return 1
    print_table(results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the race in progress unlinked its segment on the way out
        sys.exit(130)
