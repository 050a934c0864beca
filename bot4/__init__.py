"""bot4: a low-latency trading pipeline of pinned processes joined by shared-memory rings.

The package is layered (docs/ARCHITECTURE.md): ``records`` (dtypes, fixed point, error
taxonomy) < ``shm`` (segments, atomics, the SPSC ring) < ``stages`` < ``pipeline`` <
``replay`` < the tools (``cli``, ``research``). Lower layers never import higher ones.

This module, the package root, is the notebook facade (``bot4.replay(...)``,
``bot4.sweep(...)``) and so belongs to the top layer: no module below the tools imports
it. What every module needs from it at import, numba's SIMD width and cache keys, is
done here by the foundation modules ``simd`` and ``nbcache``.
"""

from bot4 import nbcache as _nbcache
from bot4 import simd as _simd
from bot4.version import __version__ as __version__

SIMD_MODE = _simd.configure()  # before anything imports numba
_nbcache.install()  # before any kernel module: numba's cache keyed by its dependencies


def __getattr__(name: str):
    """``bot4.sweep(...)`` and ``bot4.replay(...)`` for notebooks (``bot4.research.api``),
    imported on first use so ``import bot4`` stays light."""
    if name == "sweep":
        from bot4.research.api import sweep

        return sweep
    if name == "replay":
        import bot4.replay as replay_package  # a callable package: bot4.replay(...)

        return replay_package
    raise AttributeError(f"module 'bot4' has no attribute {name!r}")
