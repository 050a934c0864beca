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
