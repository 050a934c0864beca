"""``inner``: ``@njit`` for a helper that only other kernels call — compiled without the
CPython wrapper numba builds for every function by default.

The wrapper unboxes every argument from Python objects. For a helper handed a whole
state tuple (the venue's ``st``: dozens of arrays and scalars) that is a large function
of its own, typed, lowered, optimised by LLVM, emitted and cached with each signature,
and never run: kernels call the helper's native function directly. Measured on the hot
path group's ``_park`` (three member tuples): 1.8-2.0 CPU-seconds to compile with the
wrapper, 0.76-0.82 without (docs/compile.md). The machine code kernels run is the same.

Called from Python, such a helper would jump to a null entry point; :class:`Inner`
raises ``TypeError`` instead. Caching is as ``@njit(cache=True)`` (the keyed cache of
:mod:`bot4.nbcache` applies unchanged).
"""

from __future__ import annotations

from numba.core.registry import CPUDispatcher


class Inner(CPUDispatcher):
    """A dispatcher whose compiled functions have no CPython entry point."""

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.py_func.__module__}.{self.py_func.__qualname__} is compiled for other "
            "kernels only (bot4.nbkit.inner: no CPython wrapper); call it from a kernel"
        )


def inner(fn=None, *, nogil: bool = True, cache: bool = True, **options):
    """``@inner`` / ``@inner(nogil=..., cache=..., ...)``: like ``@njit`` with those
    options (``inline`` included), without the CPython wrapper."""

    def wrap(f):
        opts = {"nopython": True, "nogil": nogil, "no_cpython_wrapper": True, **options}
        d = Inner(py_func=f, targetoptions=opts)
        if cache:
            d.enable_caching()
        return d

    return wrap if fn is None else wrap(fn)
