"""The one open-addressing map of u64 keys: rows of int64, the key in column 0.

Layout: ``tab`` is ``int64[T, W]`` with ``T`` a power of two. Row ``tab[s]`` is one
entry: ``tab[s, 0]`` the key (its uint64 bit pattern; **0 marks an empty row**, so key 0
cannot be stored — callers use 0 as "no id", or keep it aside as :mod:`bot4.oms.lru`
does), ``tab[s, 1:]`` the caller's value columns. One row per entry keeps a hit to one
cache line where parallel arrays would touch one line per column.

Probing: linear, from ``map_home(key) = splitmix64(key) & (T - 1)``.

Deletion: backward shift, no tombstones. Removing row ``i`` moves later members of its
probe run back into the hole (whole rows, values included), so a table that has seen
any mix of puts and deletes probes as if freshly filled and a lookup stops at the first
empty row. The price: a delete may move other entries, so **a slot number is valid only
until the next delete** (callers re-find after deleting). Tombstones were not chosen:
they lengthen probes until a rebuild, and the hot tables here (book order maps, risk's
open orders) delete as often as they insert.

Capacity: the map never grows by itself. A caller keeps the load at or under 3/4
(``map_capacity_for``) and rehashes into a table twice the size when it must
(:func:`map_rehash`); ``map_put`` returns -1 only when every row is taken. Every loop is
bounded by ``T``, so a full table cannot hang a kernel.

Ownership: a table belongs to the one process (and kernel family) that allocated it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.hash import splitmix64
from bot4.nbkit.hot import hot

__all__ = [
    "map_capacity_for",
    "map_delete",
    "map_find",
    "map_home",
    "map_new",
    "map_put",
    "map_rehash",
]


def map_capacity_for(entries: int) -> int:
    """Rows for ``entries`` live keys at a load of at most 3/4 (a power of two, >= 8)."""
    need = max(8, -(-4 * max(int(entries), 1) // 3))
    return 1 << (need - 1).bit_length()


def map_new(rows: int, width: int) -> np.ndarray:
    """An empty table of ``rows`` (a power of two) rows of ``width`` int64 (key + values)."""
    if rows < 1 or rows & (rows - 1):
        raise ValueError(f"map rows {rows} is not a power of two")
    if width < 1:
        raise ValueError(f"map width {width} < 1 (column 0 is the key)")
    return np.zeros((rows, width), np.int64)


@njit(nogil=True, cache=True, inline="always")
def map_home(key, mask):
    """The row a key's probe starts at: ``splitmix64(key) & mask`` (int64)."""
    return np.int64(splitmix64(key) & np.uint64(mask))


@njit(nogil=True, cache=True, inline="always")
def map_find(tab, key):
    """Row of ``key`` (any integer, as its u64 bit pattern; 0 is never found), -1 if absent."""
    k = np.int64(key)
    if k == 0:
        return np.int64(-1)
    n = tab.shape[0]
    mask = n - 1
    i = map_home(k, mask)
    for _ in range(n):
        c = tab[i, 0]
        if c == k:
            return i
        if c == 0:
            return np.int64(-1)
        i = (i + 1) & mask
    return np.int64(-1)


@hot
def map_put(tab, key):
    """Row of ``key``, claiming an empty one (key written, value columns zeroed) if it is
    absent; -1 if the table is full or ``key`` is 0. The caller writes the values."""
    k = np.int64(key)
    if k == 0:
        return np.int64(-1)
    n = tab.shape[0]
    mask = n - 1
    i = map_home(k, mask)
    for _ in range(n):
        c = tab[i, 0]
        if c == k:
            return i
        if c == 0:
            tab[i, 0] = k
            for j in range(1, tab.shape[1]):
                tab[i, j] = 0
            return i
        i = (i + 1) & mask
    return np.int64(-1)


@hot
def map_delete(tab, i):
    """Empty row ``i`` (a row :func:`map_find` / :func:`map_put` returned), shifting the
    later members of its probe run back over it; other rows' numbers may change."""
    n = tab.shape[0]
    mask = n - 1
    w = tab.shape[1]
    j = i
    for _ in range(n):
        j = (j + 1) & mask
        c = tab[j, 0]
        if c == 0:
            break
        h = map_home(c, mask)
        # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
        if (i <= j and i < h <= j) or (i > j and (h > i or h <= j)):
            continue
        for col in range(w):
            tab[i, col] = tab[j, col]
        i = j
    tab[i, 0] = 0


@njit(nogil=True, cache=True)
def map_rehash(old, new):
    """Insert every entry of ``old`` into the empty table ``new`` (same width, enough
    rows); returns the entries moved, or -1 if ``new`` filled up."""
    moved = 0
    w = old.shape[1]
    for s in range(old.shape[0]):
        k = old[s, 0]
        if k == 0:
            continue
        d = map_put(new, k)
        if d < 0:
            return np.int64(-1)
        for col in range(1, w):
            new[d, col] = old[s, col]
        moved += 1
    return np.int64(moved)
