"""``prefetch``: a software prefetch of one array row (LLVM's ``llvm.prefetch``, a hint:
no fault, no result, nothing changes if the hardware ignores it).

For per-record loops whose next loads are known a few records ahead but land at places no
hardware prefetcher can guess: an order map's home row (a hashed id), the row of a
reference book that only some records read. Issue it a few records before the load; it
does not change any result.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch"]


@intrinsic
def prefetch(typingctx, arr, row, col):
    """Prefetch (read, keep in all cache levels) the cache line holding ``arr[row, col]``
    of a C-contiguous 2-d array; ``row`` outside the array is clamped into it (nothing is
    done for an empty array), ``col`` is not checked (a hint never faults)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"):
        raise TypeError("prefetch takes a C-contiguous 2-d array")
    if not (isinstance(row, types.Integer) and isinstance(col, types.Integer)):
        raise TypeError("prefetch takes an integer row and column")

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        i64 = ir.IntType(64)
        r = context.cast(builder, args[1], sig.args[1], types.int64)
        rows = builder.extract_value(ary.shape, 0)
        with builder.if_then(builder.icmp_signed(">", rows, i64(0))):
            last = builder.sub(rows, i64(1))
            r = builder.select(builder.icmp_signed(">", r, last), last, r)
            r = builder.select(builder.icmp_signed("<", r, i64(0)), i64(0), r)
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            stride = builder.extract_value(ary.strides, 0)
            c = context.cast(builder, args[2], sig.args[2], types.int64)
            off = builder.add(builder.mul(r, stride), builder.mul(c, i64(aty.dtype.bitwidth // 8)))
            ptr = builder.gep(builder.bitcast(ary.data, i8p), [off])
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, row, col), codegen
