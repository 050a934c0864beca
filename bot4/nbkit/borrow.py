"""``unowned``: an array view a kernel can hand to its helpers without reference counting.

numba increfs every array it binds to a helper's parameter (a call, or an inlined body's
argument copy) and decrefs it after: an atomic add on the array's NRT meminfo each, which
its reference-count pruning cannot always drop across the helpers' branches. In a
per-message loop over many arrays that is a fifth of the time (perf/README.md,
bookbench). A kernel entry point rebinds its arrays (or its whole state object) to ``unowned`` views
once; the incref and decref of a view with no meminfo is a null test, no atomic.

Safe only while the caller keeps the arrays alive for the call (every entry kernel's
arguments are held by its Python caller) and the views never escape: not returned, not
stored in an array or object that outlives the call.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["unowned"]


def _strip(context, builder, ty, val):
    """``val`` (of numba type ``ty``) with every array in it stripped of meminfo and parent."""
    if isinstance(ty, types.Array):
        ary = context.make_array(ty)(context, builder, val)
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    if isinstance(ty, types.BaseTuple):  # a state object: a (named) tuple of arrays
        out = val
        for i, t in enumerate(ty.types):
            item = _strip(context, builder, t, builder.extract_value(val, i))
            out = builder.insert_value(out, item, i)
        return out
    return val


def _borrowable(ty) -> bool:
    if isinstance(ty, types.Array):
        return True
    return isinstance(ty, types.BaseTuple) and any(_borrowable(t) for t in ty.types)


@intrinsic
def unowned(typingctx, arr):
    """The same array view without its NRT meminfo and parent: references to it are not
    counted. A (named) tuple of arrays, nested ones included (a kernel family's state
    object: ``RiskState``, ``Oms`` with its ``Book`` and ``Lru`` parts), comes back with
    every array in it borrowed, same type."""
    if not _borrowable(arr):
        raise TypeError("unowned takes an array or a (named) tuple of arrays")

    def codegen(context, builder, sig, args):
        return _strip(context, builder, sig.args[0], args[0])

    return arr(arr), codegen
