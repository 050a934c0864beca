"""bot4: a low-latency trading pipeline of pinned processes joined by shared-memory rings.

The package is layered (see docs/DESIGN.md in the shared folder): ``records`` (dtypes,
fixed point, error taxonomy) < ``shm`` (segments, atomics, the SPSC ring) < ``stages`` <
``pipeline`` < ``cli``. Lower layers never import higher ones.
"""

__version__ = "0.1.0"

from bot4 import nbcache as _nbcache
from bot4 import simd as _simd

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
