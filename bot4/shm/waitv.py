"""``futex_waitv(2)`` from numba: sleep on several rings' data-signal words at once.

The compiled duty cycle of a stage group (``bot4.stages.hotloop``) parks inside numba, so
a producer's wake-up reaches the kernels without a return to the interpreter (the Python
``bot4.shm.multipark`` costs tens of µs of interpreter and argument unboxing per wake).
The protocol per ring is ``multipark``'s (announce: read the signal word, set ``parked``,
full fence, re-check the producer position; the producer fences, sees ``parked`` and
bumps and wakes the signal word), so no wake-up is lost.

``waiters`` is a u64 array of 3 words per ring, the kernel's ``struct futex_waitv``
(``val``, ``uaddr``, ``flags | reserved << 32``), filled by :func:`announce`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from bot4.nbkit.hot import hot
from bot4.shm.atomics import (
    CLOCK_MONOTONIC,
    _check_u64,
    _libc_fn,
    _word_ptr,
    fence_seq_cst,
    load_acquire,
    load_relaxed,
    store_release,
)
from bot4.shm.ring_layout import (
    W_CONSUMER_PARKED,
    W_CONSUMER_POSITION,
    W_DATA_SIGNAL,
    W_PRODUCER_POSITION,
)

SYS_FUTEX_WAITV = 449  # x86-64
FUTEX2_SIZE_U32 = 2  # shared (no FUTEX2_PRIVATE): the words live in shared segments


@intrinsic
def futex_waitv(typingctx, waiters, n, deadline_ns):
    """Sleep until one of the ``n`` futexes in ``waiters`` changes or CLOCK_MONOTONIC
    reaches ``deadline_ns`` (absolute). Returns the raw syscall result."""
    _check_u64(waiters)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ptr = builder.ptrtoint(
            _word_ptr(context, builder, sig.args[0], args[0], ir.Constant(i64, 0)), i64
        )
        cnt = context.cast(builder, args[1], sig.args[1], types.int64)
        dl = context.cast(builder, args[2], sig.args[2], types.int64)
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        zero = ir.Constant(ir.IntType(32), 0)
        sec = builder.sdiv(dl, ir.Constant(i64, 1_000_000_000))
        nsec = builder.srem(dl, ir.Constant(i64, 1_000_000_000))
        builder.store(sec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 0)]))
        builder.store(nsec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 1)]))
        fn = _libc_fn(builder, "syscall", i64, [i64], var_arg=True)
        return builder.call(
            fn,
            [
                ir.Constant(i64, SYS_FUTEX_WAITV),
                ptr,
                cnt,
                ir.Constant(i64, 0),
                builder.ptrtoint(ts, i64),
                ir.Constant(i64, CLOCK_MONOTONIC),
            ],
        )

    return types.int64(waiters, n, deadline_ns), codegen


@hot
def announce(hdr, waiters, k, uaddr):
    """Consumer side, ring ``hdr`` as waiter ``k``: False when a record is already there
    (do not sleep). Leaves ``parked`` set either way; :func:`end_park` clears it."""
    sig = load_acquire(hdr, W_DATA_SIGNAL)
    store_release(hdr, W_CONSUMER_PARKED, 1)
    fence_seq_cst()
    if load_acquire(hdr, W_PRODUCER_POSITION) != load_relaxed(hdr, W_CONSUMER_POSITION):
        return False
    waiters[3 * k] = sig & np.uint64(0xFFFFFFFF)
    waiters[3 * k + 1] = uaddr
    waiters[3 * k + 2] = FUTEX2_SIZE_U32
    return True


@hot
def end_park(hdr):
    store_release(hdr, W_CONSUMER_PARKED, 0)


def signal_address(hdr: np.ndarray) -> int:
    """``uaddr`` of a ring's data-signal word (the ring stays mapped while it is used)."""
    return int(hdr.ctypes.data) + 8 * W_DATA_SIGNAL
