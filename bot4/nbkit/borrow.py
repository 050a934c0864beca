"""``unowned``: an array view a kernel can hand to its helpers without reference counting.

numba increfs every array it binds to a helper's parameter (a call, or an inlined body's
argument copy) and decrefs it after: an atomic add on the array's NRT meminfo each, which
its reference-count pruning cannot always drop across the helpers' branches. In a
per-message loop over many arrays that is a fifth of the time (perf/README.md,
bookbench). A kernel entry point rebinds its arrays to ``unowned`` views once; the incref
and decref of a view with no meminfo is a null test, no atomic.

Safe only while the caller keeps the arrays alive for the call (every entry kernel's
arguments are held by its Python caller) and the views never escape: not returned, not
stored in an array or object that outlives the call.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["unowned"]


@intrinsic
def unowned(typingctx, arr):
    """The same array view without its NRT meminfo and parent: references to it are not
    counted."""
    if not isinstance(arr, types.Array):
        raise TypeError("unowned takes an array")

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()

    return arr(arr), codegen
