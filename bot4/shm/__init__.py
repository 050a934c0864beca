"""Shared memory: segments, atomics, the SPSC ring, wait strategies and read-only stats.

Modules, one idea each:

* ``segment``      — named POSIX segments (create / attach / unlink), per-instance names
* ``atomics``      — numba intrinsics: acquire/release words, fences, PAUSE, futex, clock
* ``ring_layout``  — the ring header's byte diagram and word offsets
* ``ring_ops``     — the ring's hot path as numba functions (kernels call these)
* ``wait``         — busy-spin / yield / park idle strategies
* ``ring``         — Python attach/validate/ownership and the Python-side ring API
* ``stats``        — read-only header snapshots for operator tools
* ``histogram``    — the one latency histogram (HdrHistogram's layout in a u64 array)
* ``metrics``      — the metrics segment: stage names, order flow, latency histograms
"""

from bot4.shm.ring import Consumer, OwnerAliveError, Producer, RingLayoutError, create_ring
from bot4.shm.ring_layout import (
    BP_BLOCK,
    BP_REJECT,
    WAIT_BUSY_SPIN,
    WAIT_SPIN_PARK,
    WAIT_SPIN_YIELD,
)
from bot4.shm.segment import (
    ForeignSegmentError,
    Segment,
    SegmentAccessError,
    SegmentExistsError,
    SegmentMissingError,
    SegmentTooSmallError,
    ShmError,
    ShmFullError,
    segment_name,
)

__all__ = [
    "BP_BLOCK",
    "BP_REJECT",
    "WAIT_BUSY_SPIN",
    "WAIT_SPIN_PARK",
    "WAIT_SPIN_YIELD",
    "Consumer",
    "ForeignSegmentError",
    "OwnerAliveError",
    "Producer",
    "RingLayoutError",
    "Segment",
    "SegmentAccessError",
    "SegmentExistsError",
    "SegmentMissingError",
    "SegmentTooSmallError",
    "ShmError",
    "ShmFullError",
    "create_ring",
    "segment_name",
]
