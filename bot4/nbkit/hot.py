"""``hot``: ``@njit(nogil=True, cache=True)`` for kernels that allocate nothing — compiled
without numba's reference counting (NRT).

numba counts references to every array a function holds: an ``NRT_incref`` / ``NRT_decref``
call (an out-of-line function call each, even on a borrowed view whose meminfo is null,
:func:`bot4.nbkit.unowned`) whenever a function receives, unpacks or passes on an array,
array by array through every (named) tuple. The hot path group hands its members' tuples
(the OMS state alone holds ~45 arrays) from call to call: its compiled code carried about
1,000 NRT call sites, and one step's entry and exit ran ~70-140 of them (the ``orders_step``
prologue, ``_wake_peers``, the OMS's ``_on_new``). Without them the in-group hops measured
about half as long (``perf/hopbench.py``, docs/hotpath.md).

Rules for a ``hot`` function (numba enforces the first, review the second):

* it allocates nothing: ``np.empty`` / ``np.zeros``, array concatenation, lists and dicts
  need NRT and fail to compile here with numba's own error naming the call;
* it returns no array (nor a tuple holding one): its caller, or Python, would own a
  reference nobody counted. Views it makes and passes down are fine: the caller's
  reference keeps the memory alive for the call.

Helpers without the CPython wrapper take the same option: ``@inner(_nrt=False)``
(:mod:`bot4.nbkit.inner`). The flag is part of numba's compile flags, so a cached
function keeps what it was compiled with; every function a ``hot`` kernel calls is
``hot`` itself (``tests/unit/test_hot_nrt.py``), because numba would otherwise count
references in the callee's own entry and exit.
"""

from __future__ import annotations

from numba import njit


def hot(fn=None, **options):
    """``@hot`` / ``@hot(inline="always", ...)``: ``@njit(nogil=True, cache=True,
    _nrt=False)`` with those options."""
    opts = {"nogil": True, "cache": True, "_nrt": False, **options}
    return njit(**opts) if fn is None else njit(**opts)(fn)
