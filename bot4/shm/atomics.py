"""Machine operations for shared words, one tiny numba ``@intrinsic`` per operation.

Every shared word bot4 touches from numba goes through this module: a plain numba load in
a spin loop may be hoisted out of the loop by LLVM and hang forever, so positions are read
with ``load_acquire`` and published with ``store_release``, which LLVM emits as atomic
instructions (on x86-64 a plain ``mov`` that the compiler may neither reorder nor cache).

The words are addressed as ``(array, index)`` where the array is a 1-D ``uint64`` view of a
shared segment (``array.dtype.itemsize == 8``, 8-byte aligned). The futex operations use the
low 32 bits of the addressed word (little-endian x86-64), so a futex word is a ``uint64``
slot whose owner bumps it by one.

The same functions called from plain Python go through the numba dispatcher (about 0.2 µs
per call); the Python-side ring uses ``memoryview`` accesses instead (see ``ring.py``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SYS_FUTEX = 202  # x86-64 syscall number
FUTEX_WAIT = 0  # shared (not PRIVATE): the word lives in a segment mapped by two processes
FUTEX_WAKE = 1
CLOCK_MONOTONIC = 1


def _word_ptr(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [idx])


def _check_u64(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint64 and arr.ndim == 1):
        raise TypeError("shared words are addressed through a 1-D uint64 array")


@intrinsic
def load_acquire(typingctx, arr, idx):
    """Load word ``arr[idx]`` with acquire ordering (later loads are not hoisted above it)."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return types.uint64(arr, idx), codegen


@intrinsic
def load_relaxed(typingctx, arr, idx):
    """Load word ``arr[idx]`` atomically with no ordering (never cached in a register)."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="monotonic", align=8)

    return types.uint64(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, value):
    """Store ``value`` to ``arr[idx]`` with release ordering (earlier stores land first)."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.uint64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(arr, idx, value), codegen


@intrinsic
def store_relaxed(typingctx, arr, idx, value):
    """Store ``value`` to ``arr[idx]`` atomically, no ordering: counters readers poll."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.uint64)
        builder.store_atomic(val, ptr, ordering="monotonic", align=8)
        return context.get_dummy_value()

    return types.void(arr, idx, value), codegen


@intrinsic
def add_pair(typingctx, arr, idx, a, b):
    """``arr[idx] += a; arr[idx + 1] += b`` as one 16-byte load and one 16-byte store;
    returns the new ``arr[idx]``. Not atomic and unordered: only for a pair of words that
    one thread alone reads and writes (a ring side's own position and batch count), where
    one store instead of two lets the store buffer hold twice as many commits while the
    other side holds the published position's line."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vty = ir.VectorType(i64, 2)
        ptr = builder.bitcast(
            _word_ptr(context, builder, sig.args[0], args[0], args[1]), vty.as_pointer()
        )
        inc = ir.Constant(vty, None)
        inc = builder.insert_element(
            inc, context.cast(builder, args[2], sig.args[2], types.uint64), ir.Constant(i32, 0)
        )
        inc = builder.insert_element(
            inc, context.cast(builder, args[3], sig.args[3], types.uint64), ir.Constant(i32, 1)
        )
        new = builder.add(builder.load(ptr, align=8), inc)
        builder.store(new, ptr, align=8)
        return builder.extract_element(new, ir.Constant(i32, 0))

    return types.uint64(arr, idx, a, b), codegen


@intrinsic
def compare_exchange(typingctx, arr, idx, expected, desired):
    """Atomically replace ``arr[idx]`` by ``desired`` if it equals ``expected``; True on success."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], sig.args[2], types.uint64)
        des = context.cast(builder, args[3], sig.args[3], types.uint64)
        res = builder.cmpxchg(ptr, exp, des, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return types.boolean(arr, idx, expected, desired), codegen


@intrinsic
def fence_seq_cst(typingctx):
    """Full fence: orders an earlier store before a later load (x86 ``mfence``)."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cpu_pause(typingctx):
    """The x86 PAUSE hint for spin loops (frees the sibling hyperthread, saves power)."""

    def codegen(context, builder, sig, args):
        # numba's JIT has no inline-asm parser; the LLVM intrinsic emits the same PAUSE.
        fn = _libc_fn(builder, "llvm.x86.sse2.pause", ir.VoidType(), [])
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


def _libc_fn(builder, name, ret, argtys, var_arg=False):
    mod = builder.module
    fnty = ir.FunctionType(ret, argtys, var_arg=var_arg)
    return cgutils.get_or_insert_function(mod, fnty, name)


@intrinsic
def sched_yield(typingctx):
    """Give the core to another runnable thread (``sched_yield(2)``)."""

    def codegen(context, builder, sig, args):
        fn = _libc_fn(builder, "sched_yield", ir.IntType(32), [])
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


def _timespec(builder, timeout_ns):
    i64 = ir.IntType(64)
    ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
    sec = builder.udiv(timeout_ns, ir.Constant(i64, 1_000_000_000))
    nsec = builder.urem(timeout_ns, ir.Constant(i64, 1_000_000_000))
    zero = ir.Constant(ir.IntType(32), 0)
    builder.store(sec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 0)]))
    builder.store(nsec, builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 1)]))
    return builder.ptrtoint(ts, i64)


@intrinsic
def futex_wait(typingctx, arr, idx, expected, timeout_ns):
    """Sleep while the low 32 bits of ``arr[idx]`` equal ``expected``, at most ``timeout_ns``.

    Returns the raw syscall result (0 woken, -1 with EAGAIN/ETIMEDOUT/EINTR otherwise);
    callers re-check their condition either way.
    """
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        addr = builder.ptrtoint(ptr, i64)
        exp = context.cast(builder, args[2], sig.args[2], types.uint64)
        exp32 = builder.zext(builder.trunc(exp, ir.IntType(32)), i64)
        tmo = context.cast(builder, args[3], sig.args[3], types.uint64)
        ts = _timespec(builder, tmo)
        fn = _libc_fn(builder, "syscall", i64, [i64], var_arg=True)
        zero = ir.Constant(i64, 0)
        res = builder.call(
            fn,
            [
                ir.Constant(i64, SYS_FUTEX),
                addr,
                ir.Constant(i64, FUTEX_WAIT),
                exp32,
                ts,
                zero,
                zero,
            ],
        )
        return res

    return types.int64(arr, idx, expected, timeout_ns), codegen


@intrinsic
def futex_wake(typingctx, arr, idx, count):
    """Wake up to ``count`` waiters sleeping on the low 32 bits of ``arr[idx]``."""
    _check_u64(arr)

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ptr = _word_ptr(context, builder, sig.args[0], args[0], args[1])
        addr = builder.ptrtoint(ptr, i64)
        cnt = context.cast(builder, args[2], sig.args[2], types.int64)
        fn = _libc_fn(builder, "syscall", i64, [i64], var_arg=True)
        zero = ir.Constant(i64, 0)
        return builder.call(
            fn,
            [
                ir.Constant(i64, SYS_FUTEX),
                addr,
                ir.Constant(i64, FUTEX_WAKE),
                cnt,
                zero,
                zero,
                zero,
            ],
        )

    return types.int64(arr, idx, count), codegen


@intrinsic
def monotonic_ns(typingctx):
    """CLOCK_MONOTONIC in ns: the one clock every bot4 timestamp uses (same as
    ``time.monotonic_ns()`` in Python, comparable across processes on one host)."""

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
        fn = _libc_fn(builder, "clock_gettime", ir.IntType(32), [ir.IntType(32), i64])
        builder.call(fn, [ir.Constant(ir.IntType(32), CLOCK_MONOTONIC), builder.ptrtoint(ts, i64)])
        zero = ir.Constant(ir.IntType(32), 0)
        sec = builder.load(builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 0)]))
        nsec = builder.load(builder.gep(ts, [zero, ir.Constant(ir.IntType(32), 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


@njit(nogil=True, cache=True)
def now_ns() -> int:
    """Numba-callable wrapper of :func:`monotonic_ns` (ns, CLOCK_MONOTONIC)."""
    return monotonic_ns()
