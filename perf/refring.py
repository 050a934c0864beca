"""A reference SPSC ring for ``ringrace``: the smallest faithful design, nothing of bot4's.

The stream loops and atomics of the reference ring issue 15 raced bot4 against
(``../shared/bench/refring.py``, busy-spin mode), kept here so the race runs from this
repository: two int64 counters, ``head`` (producer, release store) and ``tail`` (consumer,
release store), 128 bytes apart, then the 64-byte slots; slot index = counter & (cap - 1);
each side keeps its own counter in a register and caches the other's, reloading it
(acquire) only when it cannot proceed. No statistics, no wait strategy, no wake-up: the
floor a ring with bot4's duties is measured against.

Its own intrinsics (LLVM ``load atomic acquire`` / ``store atomic release`` / PAUSE) so that
nothing of bot4 is shared with the reference.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

REC_DTYPE = np.dtype(
    [
        ("seq", np.int64),
        ("ts", np.int64),
        ("px", np.float64),
        ("qty", np.float64),
        ("side", np.int32),
        ("flags", np.int32),
        ("pad", np.uint8, (24,)),
    ],
    align=True,
)
HDR_WORDS = 32  # 256 bytes: head at word 0, tail at word 16 (byte 128)
HEAD = 0
TAIL = 16
HDR_BYTES = HDR_WORDS * 8


def ring_bytes(capacity: int) -> int:
    """Bytes of one reference ring of ``capacity`` 64-byte slots."""
    return HDR_BYTES + capacity * REC_DTYPE.itemsize


def views(buf, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hdr, slots)`` over a buffer of ``ring_bytes(capacity)`` (int64 header words)."""
    raw = np.frombuffer(buf, np.uint8, ring_bytes(capacity))
    return raw[:HDR_BYTES].view(np.int64), raw[HDR_BYTES:].view(REC_DTYPE)


def _elem_ptr(context, builder, arrty, arrv, idxty, idxv):
    ary = context.make_array(arrty)(context, builder, arrv)
    idx = context.cast(builder, idxv, idxty, types.intp)
    return cgutils.get_item_pointer(
        context, builder, arrty, ary, [idx], wraparound=False, boundscheck=False
    )


@intrinsic
def load_acquire(typingctx, arr, idx):
    if not (isinstance(arr, types.Array) and arr.dtype in (types.int64, types.uint64)):
        return None

    def codegen(context, builder, signature, args):
        ptr = _elem_ptr(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return arr.dtype(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    if not (isinstance(arr, types.Array) and arr.dtype in (types.int64, types.uint64)):
        return None

    def codegen(context, builder, signature, args):
        ptr = _elem_ptr(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        v = context.cast(builder, args[2], signature.args[2], signature.args[0].dtype)
        builder.store_atomic(v, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(arr, idx, val), codegen


@intrinsic
def cpu_relax(typingctx):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def stream_produce(hdr, slots, n, batch):
    """Write ``n`` records (seq = i, px = i * 0.5), publishing ``head`` every ``batch``."""
    cap = slots.shape[0]
    mask = cap - 1
    h = hdr[HEAD]
    cached_tail = load_acquire(hdr, TAIL)
    i = 0
    while i < n:
        k = min(batch, n - i)
        while h + k - cached_tail > cap:
            cached_tail = load_acquire(hdr, TAIL)
            if h + k - cached_tail > cap:
                cpu_relax()
        for j in range(k):
            s = slots[(h + j) & mask]
            s.seq = i + j
            s.ts = 0
            s.px = (i + j) * 0.5
            s.qty = 1.0
            s.side = (i + j) & 1
        h += k
        i += k
        store_release(hdr, HEAD, h)
    return i


@njit(nogil=True, cache=True)
def stream_consume(hdr, slots, n, batch):
    """Read ``n`` records checking the sequence: ``(count, checksum, errors)``."""
    cap = slots.shape[0]
    mask = cap - 1
    t = hdr[TAIL]
    cached_head = load_acquire(hdr, HEAD)
    got = 0
    csum = 0
    errs = 0
    while got < n:
        if cached_head == t:
            cached_head = load_acquire(hdr, HEAD)
            while cached_head == t:
                cpu_relax()
                cached_head = load_acquire(hdr, HEAD)
        k = min(cached_head - t, batch)
        for j in range(k):
            s = slots[(t + j) & mask]
            sq = s.seq
            if sq != got + j or s.px != sq * 0.5 or s.side != (sq & 1):
                errs += 1
            csum += sq
        t += k
        got += k
        store_release(hdr, TAIL, t)
    return got, csum, errs
