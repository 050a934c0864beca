"""Park one consumer thread on several rings at once (``futex_waitv``, Linux >= 5.16).

A stage with several inputs, or a group of stages in one process, has nothing to do only
when *every* ring it reads is empty; it must wake as soon as *any* producer publishes.
A futex watches one word, so the single-ring park (``wait.park_consumer``) could only
sleep on one input with a short timeout while the others waited. ``futex_waitv`` sleeps on
the data-signal word of every input at once.

Protocol per ring (the same Dekker pairing as ``wait.park_consumer``, so no wake-up is
lost): read the signal word, store ``consumer parked = 1``, full fence, re-check the
producer position; the producer stores its position, fences, loads ``parked`` and, when
set, bumps the signal word and wakes (``ring_ops.wake_consumer``). Only rings whose
producer honours ``parked`` (``wait = "park"``) can wake a sleeper; for the others the
sleep is bounded by the timeout. The consumer owns its ``parked`` words (single writer).

Where ``futex_waitv`` is missing (older kernels, ENOSYS) the park falls back to the
single-ring futex on the first ring with the same timeout.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np
from numba import njit

from bot4.shm.atomics import fence_seq_cst, load_acquire, store_release
from bot4.shm.ring_layout import W_CONSUMER_PARKED, W_DATA_SIGNAL, W_PRODUCER_POSITION
from bot4.shm.wait import park_consumer

SYS_FUTEX_WAITV = 449  # x86-64
FUTEX2_SIZE_U32 = 0x02  # shared (no FUTEX2_PRIVATE): the words live in shared segments
_CLOCK_MONOTONIC = 1


class _Waiter(ctypes.Structure):
    _fields_ = [
        ("val", ctypes.c_uint64),
        ("uaddr", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


@njit(nogil=True, cache=True)
def announce_park(hdr, position):
    """Consumer side, before sleeping on this ring: the signal word as read *before*
    announcing, or -1 when the producer has already moved past ``position`` (no sleep).
    Leaves ``parked`` set in both cases; ``end_park`` clears it."""
    sig = load_acquire(hdr, W_DATA_SIGNAL)
    store_release(hdr, W_CONSUMER_PARKED, 1)
    fence_seq_cst()
    if load_acquire(hdr, W_PRODUCER_POSITION) != position:
        return np.int64(-1)
    return np.int64(sig & np.uint64(0xFFFFFFFF))


@njit(nogil=True, cache=True)
def end_park(hdr):
    store_release(hdr, W_CONSUMER_PARKED, 0)


class MultiPark:
    """Sleep until any of ``hdrs`` (ring headers this thread consumes) gets a record.

    ``park(positions, timeout_ns)``: ``positions[i]`` is the consumer position of ring i
    (what the caller found empty). Returns at once if any ring moved; otherwise sleeps
    until a producer signals or ``timeout_ns`` passes. Spurious returns are allowed:
    callers re-check their rings either way.
    """

    def __init__(self, hdrs: list[np.ndarray]) -> None:
        self.hdrs = list(hdrs)
        n = len(self.hdrs)
        self._waiters = (_Waiter * max(1, n))()
        for i, h in enumerate(self.hdrs):
            self._waiters[i].uaddr = h.ctypes.data + 8 * W_DATA_SIGNAL
            self._waiters[i].flags = FUTEX2_SIZE_U32
        self._ts = _Timespec()
        self.waitv = n > 1
        self.parks = 0

    def park(self, positions: list[int], timeout_ns: int) -> None:
        hdrs = self.hdrs
        if not hdrs:
            return
        if not self.waitv:
            park_consumer(hdrs[0], np.uint64(positions[0]), timeout_ns)
            return
        try:
            for i, h in enumerate(hdrs):
                sig = int(announce_park(h, np.uint64(positions[i])))
                if sig < 0:
                    return  # data arrived while announcing
                self._waiters[i].val = sig
            deadline = time.monotonic_ns() + timeout_ns
            self._ts.tv_sec, self._ts.tv_nsec = divmod(deadline, 1_000_000_000)
            self.parks += 1
            r = _syscall(
                SYS_FUTEX_WAITV,
                self._waiters,
                ctypes.c_uint(len(hdrs)),
                ctypes.c_uint(0),
                ctypes.byref(self._ts),
                ctypes.c_int(_CLOCK_MONOTONIC),
            )
            if r < 0 and ctypes.get_errno() == 38:  # ENOSYS: kernel without futex_waitv
                self.waitv = False
        finally:
            for h in hdrs:
                end_park(h)
