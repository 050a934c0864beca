"""The numba kit: small kernels every domain package shares, below everything but records.

* :mod:`~bot4.nbkit.hash` — ``splitmix64``, the one 64-bit mixer (map homes, seeds,
  routing draws);
* :mod:`~bot4.nbkit.u64map` — the one open-addressing map of u64 keys (rows of int64:
  the key in column 0, the value columns after it; linear probing, backward-shift
  deletion);
* :mod:`~bot4.nbkit.sat` — saturating int64 arithmetic (money that must not wrap);
* :mod:`~bot4.nbkit.stamps` — ``copy_stamps``: a derived record takes the ``ts_*_ns``
  stamps of the record it came from; ``copy_terms``: an order's terms likewise;
* :mod:`~bot4.nbkit.borrow` — ``unowned``: an array view whose references numba does not
  count (an entry kernel's arrays handed to inlined helpers in a per-record loop);
* :mod:`~bot4.nbkit.prefetch` — ``prefetch``: a software prefetch hint of one array row
  (an order map's home row a few records ahead);
* :mod:`~bot4.nbkit.inner` — ``inner``: ``@njit(cache=True)`` for a helper only kernels
  call, without numba's CPython wrapper (less to compile; a call from Python raises).
* :mod:`~bot4.nbkit.hot` — ``hot``: ``@njit(nogil=True, cache=True)`` without numba's
  reference counting, for kernels that allocate nothing and return no array (the hot path
  group's tree and the venue's: no ``NRT_incref`` / ``NRT_decref`` calls per array at
  every call boundary).

Layering: imports numpy, numba and :mod:`bot4.records` only; every package above may use
it, :mod:`bot4.shm` included (its layer sits between shm and records). Nothing here allocates after setup or holds state of its own.
"""

from bot4.nbkit.borrow import unowned
from bot4.nbkit.hash import splitmix64
from bot4.nbkit.prefetch import prefetch
from bot4.nbkit.sat import add_sat, mul_sat
from bot4.nbkit.stamps import STAMP_FIELDS, TERM_FIELDS, copy_stamps, copy_terms
from bot4.nbkit.u64map import (
    map_capacity_for,
    map_delete,
    map_find,
    map_home,
    map_new,
    map_put,
    map_rehash,
)

__all__ = [
    "STAMP_FIELDS",
    "TERM_FIELDS",
    "add_sat",
    "copy_stamps",
    "copy_terms",
    "map_capacity_for",
    "map_delete",
    "map_find",
    "map_home",
    "map_new",
    "map_put",
    "map_rehash",
    "mul_sat",
    "prefetch",
    "unowned",
    "splitmix64",
]
