"""The single-producer / single-consumer ring over a POSIX shared-memory segment.

:func:`create_ring` lays out a segment (``ring_layout``); :class:`Producer` and
:class:`Consumer` attach to it, validate the header against what they expect, and claim
their side by writing their pid (refused while the recorded owner is alive). Each exposes:

* ``hdr`` / ``slots`` — the numpy views that numba kernels take (see ``ring_ops``);
* a Python API: ``try_push``/``push`` and ``try_pop``/``pop`` for one record, and
  ``claim``/``commit`` and ``peek``/``release`` for zero-copy batches (views of the slots,
  contiguous, never crossing the wrap point).

The Python fast path reads and writes the shared words through a ``memoryview`` of the
header: each access is one aligned 8-byte ``mov`` inside CPython's C code, which neither
the C compiler nor the CPU reorders with the slot copies around it on x86-64 (TSO: loads
are acquire, stores are release). On other architectures the module refuses to load the
fast path and goes through the numba functions instead. Ordering guarantees are those of
``ring_ops``: a slot is visible to the consumer only after the producer's position store.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import psutil

from bot4.records import dtype_fingerprint
from bot4.records.errors import Code
from bot4.shm import ring_ops as ops
from bot4.shm.ring_layout import (
    BP_REJECT,
    HEADER_BYTES,
    HEADER_WORDS,
    LAYOUT_VERSION,
    MAGIC,
    W_BACKPRESSURE,
    W_CAPACITY,
    W_CONSUMER_BATCHES,
    W_CONSUMER_CACHED_PRODUCER,
    W_CONSUMER_HIGH_WATER,
    W_CONSUMER_PID,
    W_CONSUMER_POSITION,
    W_CREATED_NS,
    W_FINGERPRINT,
    W_INITIAL_POSITION,
    W_MAGIC,
    W_PRODUCER_BATCHES,
    W_PRODUCER_CACHED_CONSUMER,
    W_PRODUCER_OWN_POSITION,
    W_PRODUCER_PID,
    W_PRODUCER_POSITION,
    W_RECORD_TYPE,
    W_SLOT_SIZE,
    W_VERSION,
    W_WAIT,
    WAIT_SPIN_PARK,
    is_power_of_two,
    segment_bytes,
)
from bot4.shm.segment import Segment, SegmentTooSmallError, ShmError

_X86 = platform.machine() in ("x86_64", "AMD64")
_M64 = (1 << 64) - 1
DEFAULT_WAIT_TIMEOUT_NS = 50_000_000


class RingLayoutError(ShmError):
    """The segment is not a ring, or not the ring the attacher expects."""


class OwnerAliveError(ShmError):
    def __init__(self, segment: str, side: str, pid: int) -> None:
        super().__init__(Code.OWNER_ALIVE, segment, f"{side} side is owned by live pid {pid}")
        self.pid = pid


class RingFullError(ShmError):
    def __init__(self, segment: str) -> None:
        super().__init__(Code.RING_FULL_REJECTED, segment, "ring full: record rejected")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie can no longer write)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_ring(
    name: str,
    dtype: np.dtype,
    capacity: int,
    *,
    wait: int = WAIT_SPIN_PARK,
    backpressure: int = 0,
    initial_position: int = 0,
    record_type: int = 0,
) -> None:
    """Create ring segment ``name`` (a full POSIX name) of ``capacity`` slots of ``dtype``.

    ``initial_position`` (any u64) is where both positions start; tests use values just
    below 2^63 and 2^64 to cross the wrap.
    """
    if not is_power_of_two(capacity):
        raise RingLayoutError(
            Code.CAPACITY_NOT_POWER_OF_TWO, name, f"capacity {capacity} is not a power of two"
        )
    dtype = np.dtype(dtype)
    if dtype.itemsize % 8:
        raise RingLayoutError(
            Code.DTYPE_MISMATCH, name, f"slot size {dtype.itemsize} not a multiple of 8"
        )
    seg = Segment.create(name, segment_bytes(capacity, dtype.itemsize))
    try:
        hdr = np.frombuffer(seg.buf, np.uint64, HEADER_WORDS)
        hdr[W_VERSION] = LAYOUT_VERSION
        hdr[W_FINGERPRINT] = dtype_fingerprint(dtype)
        hdr[W_CAPACITY] = capacity
        hdr[W_SLOT_SIZE] = dtype.itemsize
        hdr[W_WAIT] = wait
        hdr[W_BACKPRESSURE] = backpressure
        hdr[W_CREATED_NS] = time.monotonic_ns()
        p = initial_position & _M64
        hdr[W_INITIAL_POSITION] = p
        hdr[W_RECORD_TYPE] = record_type
        for w in (
            W_PRODUCER_POSITION,
            W_CONSUMER_POSITION,
            W_PRODUCER_OWN_POSITION,
            W_PRODUCER_CACHED_CONSUMER,
            W_CONSUMER_CACHED_PRODUCER,
        ):
            hdr[w] = p
        hdr[W_MAGIC] = MAGIC  # last: a half-initialised segment never validates
        del hdr
    finally:
        seg.close()


@dataclass(frozen=True)
class RingHeader:
    """The creator-written identity of a ring."""

    capacity: int
    slot_size: int
    fingerprint: int
    wait: int
    backpressure: int
    record_type: int
    initial_position: int


def validate_header(
    seg: Segment, dtype: np.dtype | None = None, capacity: int | None = None
) -> RingHeader:
    """Check magic, layout version, size, and (if given) dtype and capacity; raise naming the difference."""
    name = seg.name
    if seg.size < HEADER_BYTES:
        raise SegmentTooSmallError(name, seg.size, HEADER_BYTES)
    # a copy: an exception raised below must not keep an export of the mapping alive
    hdr = np.frombuffer(seg.buf, np.uint64, HEADER_WORDS).copy()
    if int(hdr[W_MAGIC]) != MAGIC:
        raise RingLayoutError(Code.BAD_MAGIC, name, "is not a bot4 ring (bad magic)")
    if int(hdr[W_VERSION]) != LAYOUT_VERSION:
        raise RingLayoutError(
            Code.LAYOUT_VERSION_MISMATCH,
            name,
            f"layout version {int(hdr[W_VERSION])}, this build reads {LAYOUT_VERSION}",
        )
    h = RingHeader(
        capacity=int(hdr[W_CAPACITY]),
        slot_size=int(hdr[W_SLOT_SIZE]),
        fingerprint=int(hdr[W_FINGERPRINT]),
        wait=int(hdr[W_WAIT]),
        backpressure=int(hdr[W_BACKPRESSURE]),
        record_type=int(hdr[W_RECORD_TYPE]),
        initial_position=int(hdr[W_INITIAL_POSITION]),
    )
    if not is_power_of_two(h.capacity):
        raise RingLayoutError(
            Code.CAPACITY_NOT_POWER_OF_TWO,
            name,
            f"header capacity {h.capacity} is not a power of two",
        )
    needed = segment_bytes(h.capacity, h.slot_size)
    if seg.size < needed:
        raise SegmentTooSmallError(name, seg.size, needed)
    if dtype is not None:
        dtype = np.dtype(dtype)
        fp = dtype_fingerprint(dtype)
        if fp != h.fingerprint or dtype.itemsize != h.slot_size:
            raise RingLayoutError(
                Code.DTYPE_MISMATCH,
                name,
                f"record dtype differs: segment holds fingerprint {h.fingerprint:#018x} "
                f"({h.slot_size} B slots), caller expects {fp:#018x} ({dtype.itemsize} B)",
            )
    if capacity is not None and capacity != h.capacity:
        raise RingLayoutError(
            Code.CAPACITY_MISMATCH, name, f"capacity {h.capacity}, caller expects {capacity}"
        )
    return h


class _Side:
    _pid_word: int
    _position_word: int
    _own_word: int | None  # the side's own copy of its position, if it keeps one
    _side: str

    def __init__(
        self,
        name: str,
        dtype: np.dtype,
        capacity: int | None = None,
        *,
        takeover: bool = False,
    ) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.segment = Segment.attach(name)
        try:
            self.header = validate_header(self.segment, self.dtype, capacity)
            self.capacity = self.header.capacity
            self.mask = self.capacity - 1
            self.hdr = np.frombuffer(self.segment.buf, np.uint64, HEADER_WORDS)
            self.slots = np.frombuffer(self.segment.buf, self.dtype, self.capacity, HEADER_BYTES)
            self._w = memoryview(self.segment.buf)[:HEADER_BYTES].cast("Q") if _X86 else None
            self._buf = self.segment.buf
            self._off0 = HEADER_BYTES
            self._size = self.dtype.itemsize
            self.pid = os.getpid()
            self._claim(takeover)
            if self._own_word is not None:
                # the producer's own copy of its position restarts from what was published:
                # a producer killed inside a commit published nothing of it (ring_layout)
                self.hdr[self._own_word] = self.hdr[self._position_word]
        except BaseException:
            self._drop_views()
            self.segment.close()
            raise

    def _claim(self, takeover: bool) -> None:
        while True:
            old = int(self.hdr[self._pid_word])
            if old != 0 and pid_alive(old) and not takeover:
                raise OwnerAliveError(self.name, self._side, old)
            if ops.claim_owner(self.hdr, self._pid_word, old, self.pid):
                return

    def _drop_views(self) -> None:
        for attr in ("_w",):
            v = getattr(self, attr, None)
            if v is not None:
                v.release()
        self.hdr = self.slots = None  # type: ignore[assignment]

    def close(self) -> None:
        """Give up the side (clear our pid if still ours) and unmap."""
        if self.hdr is not None:
            ops.claim_owner(self.hdr, self._pid_word, self.pid, 0)
        self._drop_views()
        # a caller may still hold a slot view; the mapping then goes when the view does
        with contextlib.suppress(BufferError):
            self.segment.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def producer_position(self) -> int:
        return int(self.hdr[W_PRODUCER_POSITION])

    @property
    def consumer_position(self) -> int:
        return int(self.hdr[W_CONSUMER_POSITION])


class Producer(_Side):
    """The single writer of a ring. Owns the producer position and producer counter lines."""

    _pid_word = W_PRODUCER_PID
    _position_word = W_PRODUCER_POSITION
    _own_word = W_PRODUCER_OWN_POSITION
    _side = "producer"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reject = self.header.backpressure == BP_REJECT
        self._park = self.header.wait == WAIT_SPIN_PARK

    def try_push(self, record) -> bool:
        """Copy one record (np.void, 0-d array, bytes of the slot size, or tuple) in;
        False when full.

        Every position is read from the header (never a private copy), so Python calls
        and numba kernels may drive the same side in turn.
        """
        w = self._w
        if w is None:
            return bool(ops.try_push(self.hdr, self.slots, np.asarray(record, self.dtype)[()]))
        pos = w[W_PRODUCER_OWN_POSITION]
        if (pos - w[W_PRODUCER_CACHED_CONSUMER]) & _M64 >= self.capacity:
            cons = w[W_CONSUMER_POSITION]
            w[W_PRODUCER_CACHED_CONSUMER] = cons
            if (pos - cons) & _M64 >= self.capacity:
                return False
        off = self._off0 + (pos & self.mask) * self._size
        if isinstance(record, bytes):
            self._buf[off : off + self._size] = record
        elif isinstance(record, np.void | np.ndarray) and record.dtype == self.dtype:
            self._buf[off : off + self._size] = record.tobytes()
        else:
            self._buf[off : off + self._size] = np.asarray(record, self.dtype).tobytes()
        w[W_PRODUCER_OWN_POSITION] = (pos + 1) & _M64
        w[W_PRODUCER_BATCHES] += 1
        w[W_PRODUCER_POSITION] = (pos + 1) & _M64
        if self._park:
            ops.wake_consumer(self.hdr)
        return True

    def push(self, record, timeout: float | None = None) -> bool:
        """Push under the ring's backpressure policy.

        ``block``: wait (ring's wait strategy) until there is room or ``timeout`` seconds
        pass (None: forever); ``reject``: one try; on failure the rejection is counted and
        False returned — the caller has been told and decides.
        """
        if self.try_push(record):
            return True
        if self.reject:
            ops.count_rejection(self.hdr, 1)
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        rec = np.asarray(record, self.dtype)[()]
        while True:
            if ops.push_wait(self.hdr, self.slots, rec, DEFAULT_WAIT_TIMEOUT_NS):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def claim(self, n: int, timeout: float | None = 0.0) -> np.ndarray:
        """A writable view of up to ``n`` free contiguous slots (may be shorter, or empty).

        ``timeout`` > 0 waits for at least one slot with the ring's strategy.
        """
        if timeout:
            pos, count = ops.wait_claim(self.hdr, n, int(timeout * 1e9))
        else:
            pos, count = ops.producer_claim(self.hdr, n)
        i = int(pos) & self.mask
        return self.slots[i : i + int(count)]

    def room(self, n: int) -> int:
        """Free slots, up to ``n``, counted across the wrap point (``ring_ops.producer_room``)."""
        return int(ops.producer_room(self.hdr, n)[1])

    def write_wrapped(self, src: np.ndarray) -> None:
        """Copy ``src`` into the next ``len(src)`` slots, the tail of the ring then its head.

        The caller has checked :meth:`room` and publishes with :meth:`commit`. Costs one
        extra copy: use it where a group of records must not be split across two claims
        (a stage's outputs for one input), not on every batch."""
        n = len(src)
        i = int(self.hdr[W_PRODUCER_OWN_POSITION]) & self.mask
        first = min(n, self.capacity - i)
        self.slots[i : i + first] = src[:first]
        if n > first:
            self.slots[: n - first] = src[first:]

    def push_many(self, records: np.ndarray) -> int:
        """Copy as many of ``records`` as fit (across the wrap) and publish them together;
        returns how many. Nothing waits and nothing is counted as rejected."""
        n = self.room(len(records))
        if n:
            self.write_wrapped(records[:n])
            ops.producer_commit(self.hdr, n)
        return n

    def commit(self, count: int) -> None:
        """Publish the first ``count`` slots of the last claim (or of ``write_wrapped``)."""
        if count:
            ops.producer_commit(self.hdr, count)

    def beat(self) -> None:
        ops.beat_producer(self.hdr)


class Consumer(_Side):
    """The single reader of a ring. Owns the consumer position and consumer counter lines."""

    _pid_word = W_CONSUMER_PID
    _position_word = W_CONSUMER_POSITION
    _own_word = None
    _side = "consumer"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._park = self.header.wait == WAIT_SPIN_PARK

    def try_pop(self):
        """The oldest record as a copy (a read-only np.void over its own bytes), or None."""
        w = self._w
        if w is None:
            out = np.empty(1, self.dtype)
            return out[0] if ops.try_pop(self.hdr, self.slots, out, 0) else None
        pos = w[W_CONSUMER_POSITION]
        prod = w[W_CONSUMER_CACHED_PRODUCER]
        if pos == prod:
            prod = w[W_PRODUCER_POSITION]
            depth = (prod - pos) & _M64
            if depth == 0 or depth > self.capacity:
                return None  # empty, or a damaged word (ring_ops): never cached nor read
            w[W_CONSUMER_CACHED_PRODUCER] = prod
            if depth > w[W_CONSUMER_HIGH_WATER]:
                w[W_CONSUMER_HIGH_WATER] = depth
        elif (prod - pos) & _M64 > self.capacity:
            return None  # this side's own word damaged: never a phantom record
        off = self._off0 + (pos & self.mask) * self._size
        rec = np.frombuffer(self._buf[off : off + self._size], self.dtype)[0]  # bytes: a copy
        w[W_CONSUMER_POSITION] = (pos + 1) & _M64
        w[W_CONSUMER_BATCHES] += 1
        if self._park:
            ops.wake_producer(self.hdr)
        return rec

    def pop(self, timeout: float | None = None):
        """The oldest record, waiting with the ring's strategy; None after ``timeout`` s."""
        rec = self.try_pop()
        if rec is not None:
            return rec
        view = self.peek(1, timeout=timeout if timeout is not None else 3600.0 * 24 * 365)
        if len(view) == 0:
            return None
        rec = view[0].copy()
        self.release(1)
        return rec

    def peek(self, n: int, timeout: float | None = 0.0) -> np.ndarray:
        """A read-only view of up to ``n`` readable contiguous slots (may be shorter, or empty).

        The view stays valid until :meth:`release`; ``timeout`` > 0 waits for one record.
        """
        if timeout:
            deadline = time.monotonic() + timeout
            while True:
                step = min(
                    DEFAULT_WAIT_TIMEOUT_NS, max(1, int((deadline - time.monotonic()) * 1e9))
                )
                pos, count = ops.wait_peek(self.hdr, n, step)
                if count or time.monotonic() >= deadline:
                    break
        else:
            pos, count = ops.consumer_peek(self.hdr, n)
        i = int(pos) & self.mask
        view = self.slots[i : i + int(count)]
        view.flags.writeable = False
        return view

    def release(self, count: int) -> None:
        """Hand back the first ``count`` slots of the last peek."""
        if count:
            ops.consumer_release(self.hdr, count)

    @property
    def depth(self) -> int:
        return (int(self.hdr[W_PRODUCER_POSITION]) - int(self.hdr[W_CONSUMER_POSITION])) & _M64

    def beat(self) -> None:
        ops.beat_consumer(self.hdr)
