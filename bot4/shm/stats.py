"""Read-only snapshots of ring headers, for operator tools (``bot4 stats``).

A reader maps the segment ``PROT_READ`` — it physically cannot write — and reads each
word once. Positions are read consumer, producer, consumer again and retried until the
two consumer reads agree, so a snapshot always satisfies
``0 <= producer - consumer <= capacity`` even while the pair runs flat out.

``produced`` and ``consumed`` are not counters in the segment: they are each position's
distance from the ring's initial position (u64, wrapping), so the hot path stores nothing
per commit for them and ``consumed <= produced`` holds in every snapshot. Batches, waits,
rejections and high-water are counters their owning side keeps in its own line; the
high-water shown is the larger of the consumer's, the producer's and the depth seen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from bot4.shm import ring_layout as L
from bot4.shm.segment import Segment, SegmentMissingError, instance_segments

_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class RingSnapshot:
    """One consistent-enough view of a ring; positions exact, counters monotone per owner."""

    name: str
    capacity: int
    slot_size: int
    wait: str
    backpressure: str
    producer_position: int
    consumer_position: int
    depth: int
    high_water: int
    producer_pid: int
    consumer_pid: int
    produced: int
    consumed: int
    producer_batches: int
    consumer_batches: int
    full_waits: int
    empty_waits: int
    rejections: int
    producer_heartbeat_age_ns: int | None
    consumer_heartbeat_age_ns: int | None
    taken_ns: int

    def as_dict(self) -> dict:
        return asdict(self)


_WAIT_NAMES = {v: k for k, v in L.WAIT_NAMES.items()}
_BP_NAMES = {v: k for k, v in L.BACKPRESSURE_NAMES.items()}


def snapshot_header(name: str, hdr: np.ndarray) -> RingSnapshot:
    """Snapshot from a header array (read-only access; never writes ``hdr``)."""
    for _ in range(1000):
        c1 = int(hdr[L.W_CONSUMER_POSITION])
        p = int(hdr[L.W_PRODUCER_POSITION])
        c2 = int(hdr[L.W_CONSUMER_POSITION])
        if c1 == c2:
            break
    now = time.monotonic_ns()
    # records are positions counted from where both started (no per-commit counter): exact,
    # and consumed <= produced follows from the consistent pair of positions
    initial = int(hdr[L.W_INITIAL_POSITION])
    produced = (p - initial) & _M64
    consumed = (c1 - initial) & _M64
    cap = int(hdr[L.W_CAPACITY])
    depth = (p - c1) & _M64

    def age(word: int) -> int | None:
        beat = int(hdr[word])
        # the clock is read after the word: a beat stored since ``now`` is age 0, never < 0
        return None if beat == 0 else max(0, time.monotonic_ns() - beat)

    return RingSnapshot(
        name=name,
        capacity=cap,
        slot_size=int(hdr[L.W_SLOT_SIZE]),
        wait=_WAIT_NAMES.get(int(hdr[L.W_WAIT]), "?"),
        backpressure=_BP_NAMES.get(int(hdr[L.W_BACKPRESSURE]), "?"),
        producer_position=p,
        consumer_position=c1,
        depth=depth,
        # the consumer's (at its peeks), the producer's (on its full path) and what this
        # snapshot sees: a full ring never reads below its depth
        high_water=min(
            cap,
            max(int(hdr[L.W_CONSUMER_HIGH_WATER]), int(hdr[L.W_PRODUCER_HIGH_WATER]), depth),
        ),
        producer_pid=int(hdr[L.W_PRODUCER_PID]),
        consumer_pid=int(hdr[L.W_CONSUMER_PID]),
        produced=produced,
        consumed=consumed,
        producer_batches=int(hdr[L.W_PRODUCER_BATCHES]),
        consumer_batches=int(hdr[L.W_CONSUMER_BATCHES]),
        full_waits=int(hdr[L.W_PRODUCER_FULL_WAITS]),
        empty_waits=int(hdr[L.W_CONSUMER_EMPTY_WAITS]),
        rejections=int(hdr[L.W_PRODUCER_REJECTIONS]),
        producer_heartbeat_age_ns=age(L.W_PRODUCER_HEARTBEAT_NS),
        consumer_heartbeat_age_ns=age(L.W_CONSUMER_HEARTBEAT_NS),
        taken_ns=now,
    )


class RingReader:
    """A read-only attachment to one ring, for repeated snapshots (1 Hz or so)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.segment = Segment.attach(name, readonly=True, min_size=L.HEADER_BYTES)
        self.hdr = np.frombuffer(self.segment.buf, np.uint64, L.HEADER_WORDS)
        if int(self.hdr[L.W_MAGIC]) != L.MAGIC:
            self.close()
            raise ValueError(f"segment {name}: not a bot4 ring")

    def snapshot(self) -> RingSnapshot:
        return snapshot_header(self.name, self.hdr)

    def close(self) -> None:
        self.hdr = None  # type: ignore[assignment]
        self.segment.close()


def is_ring(name: str) -> bool:
    """True if segment ``name`` starts with the ring magic (read-only peek)."""
    try:
        seg = Segment.attach(name, readonly=True)
    except Exception:
        return False
    try:
        return seg.size >= 8 and int.from_bytes(seg.buf[:8], "little") == L.MAGIC
    finally:
        seg.close()


def instance_ring_snapshots(instance: str) -> list[RingSnapshot]:
    """Snapshots of every ring segment of ``instance`` (other segments are skipped)."""
    out = []
    for name in instance_segments(instance):
        if not is_ring(name):
            continue
        try:
            r = RingReader(name)
        except (SegmentMissingError, ValueError):
            continue  # unlinked since it was listed (the instance stopping): not a ring now
        try:
            out.append(r.snapshot())
        finally:
            r.close()
    return out
