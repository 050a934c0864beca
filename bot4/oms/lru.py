"""A bounded LRU map of u64 keys to i64 values in preallocated arrays.

The OMS keeps three: client order ids it has seen (duplicate intents; the value is the
order's final state once closed), exec ids it has seen (duplicate execution reports), and
the index of its open orders (client order id -> book slot; sized so it never evicts).

Layout (:class:`Lru`, a namedtuple of arrays that numba kernels take as one argument):

    tab   int64[T, 2]  the key index: a bot4.nbkit u64 map, row = (key, entry index);
                     T = a power of two >= 2 * capacity (load factor <= 1/2)
    keys  uint64[C]  entry key
    vals  int64[C]   entry value
    prv   int32[C]   recency list, towards the most recently used (-1 = none)
    nxt   int32[C]   recency list, towards the least recently used; free list when unused
    meta  int64[8]   M_HEAD (most recent entry), M_TAIL (least recent), M_SIZE, M_FREE
                     (free-list head), M_EVICTIONS, M_ZERO (entry of key 0, -1 = none)

Every key (0 included) is storable: the map marks empty rows with key 0, so key 0's entry
is kept in ``meta[M_ZERO]`` instead. Deletion shifts the probe run back (the kit map's
backward shift, no tombstones), so a table that has seen any number of puts and removals
probes as if freshly filled.
Nothing allocates after :func:`lru_new`. ``lru_get`` and ``lru_put`` make the key the
most recent; ``lru_contains`` and ``lru_peek`` do not. A full map evicts its least
recently used entry on insert (counted in ``meta[M_EVICTIONS]``).

Ownership: a map belongs to the one stage process that created it; nothing is shared.

An LRU miss is not proof that a key was never used: it may have been evicted, or used
before a restart. The persistence issue adds the database lookup behind a miss.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from bot4.nbkit import map_delete, map_find, map_new, map_put
from bot4.nbkit.hot import hot

__all__ = [
    "Lru",
    "lru_contains",
    "lru_get",
    "lru_items",
    "lru_new",
    "lru_peek",
    "lru_put",
    "lru_remove",
]

Lru = namedtuple("Lru", "tab keys vals prv nxt meta")

M_HEAD = 0
M_TAIL = 1
M_SIZE = 2
M_FREE = 3
M_EVICTIONS = 4
M_ZERO = 5  # entry of key 0 (which the map cannot hold), -1 = not present

PUT_INSERTED = 0
PUT_UPDATED = 1
PUT_EVICTED = 2  # inserted, and the least recently used entry was evicted to make room


def lru_new(capacity: int) -> Lru:
    """An empty map holding up to ``capacity`` (>= 1) keys."""
    if capacity < 1 or capacity >= 1 << 30:
        raise ValueError(f"LRU capacity {capacity} outside 1 .. 2^30")
    t = 1
    while t < 2 * capacity:
        t <<= 1
    nxt = np.arange(1, capacity + 1, dtype=np.int32)
    nxt[-1] = -1
    meta = np.zeros(8, np.int64)
    meta[M_HEAD] = meta[M_TAIL] = -1
    meta[M_FREE] = 0
    meta[M_ZERO] = -1
    return Lru(
        map_new(t, 2),
        np.zeros(capacity, np.uint64),
        np.zeros(capacity, np.int64),
        np.full(capacity, -1, np.int32),
        nxt,
        meta,
    )


@hot
def _find(lru, key):
    """The key's entry, -1 if absent."""
    if np.uint64(key) == 0:
        return lru.meta[M_ZERO]
    row = map_find(lru.tab, key)
    return lru.tab[row, 1] if row >= 0 else np.int64(-1)


@hot
def _unlink(lru, e):
    p = lru.prv[e]
    n = lru.nxt[e]
    if p >= 0:
        lru.nxt[p] = n
    else:
        lru.meta[M_HEAD] = n
    if n >= 0:
        lru.prv[n] = p
    else:
        lru.meta[M_TAIL] = p


@hot
def _push_front(lru, e):
    h = lru.meta[M_HEAD]
    lru.prv[e] = -1
    lru.nxt[e] = h
    if h >= 0:
        lru.prv[h] = e
    else:
        lru.meta[M_TAIL] = e
    lru.meta[M_HEAD] = e


@hot
def _index_remove(lru, key):
    if np.uint64(key) == 0:
        lru.meta[M_ZERO] = -1
    else:
        map_delete(lru.tab, map_find(lru.tab, key))


@hot
def _index_add(lru, key, e):
    if np.uint64(key) == 0:
        lru.meta[M_ZERO] = e
    else:
        lru.tab[map_put(lru.tab, key), 1] = e  # never full: T >= 2 * capacity


@hot
def _drop(lru, e):
    _index_remove(lru, lru.keys[e])
    _unlink(lru, e)
    lru.nxt[e] = lru.meta[M_FREE]
    lru.prv[e] = -1
    lru.meta[M_FREE] = e
    lru.meta[M_SIZE] -= 1


@hot
def lru_contains(lru, key):
    """Whether ``key`` is present (recency unchanged)."""
    return _find(lru, key) >= 0


@hot
def lru_peek(lru, key):
    """``(found, value)`` without touching recency (value 0 when not found)."""
    e = _find(lru, key)
    if e < 0:
        return False, np.int64(0)
    return True, lru.vals[e]


@hot
def lru_get(lru, key):
    """``(found, value)``; a found key becomes the most recently used."""
    e = _find(lru, key)
    if e < 0:
        return False, np.int64(0)
    if lru.meta[M_HEAD] != e:
        _unlink(lru, e)
        _push_front(lru, e)
    return True, lru.vals[e]


@hot
def lru_put(lru, key, value):
    """Set ``key`` to ``value`` as the most recently used; PUT_INSERTED, PUT_UPDATED or
    PUT_EVICTED (inserted after evicting the least recently used key)."""
    e = _find(lru, key)
    if e >= 0:
        lru.vals[e] = value
        if lru.meta[M_HEAD] != e:
            _unlink(lru, e)
            _push_front(lru, e)
        return PUT_UPDATED
    res = PUT_INSERTED
    if lru.meta[M_FREE] < 0:
        _drop(lru, lru.meta[M_TAIL])
        lru.meta[M_EVICTIONS] += 1
        res = PUT_EVICTED
    e = lru.meta[M_FREE]
    lru.meta[M_FREE] = lru.nxt[e]
    lru.keys[e] = key
    lru.vals[e] = value
    _index_add(lru, key, e)
    _push_front(lru, e)
    lru.meta[M_SIZE] += 1
    return res


@hot
def lru_remove(lru, key):
    """Remove ``key``; whether it was present."""
    e = _find(lru, key)
    if e < 0:
        return False
    _drop(lru, e)
    return True


def lru_items(lru: Lru) -> list[tuple[int, int]]:
    """``(key, value)`` pairs from most to least recently used (tests, operator tools)."""
    out = []
    e = int(lru.meta[M_HEAD])
    while e >= 0:
        out.append((int(lru.keys[e]), int(lru.vals[e])))
        e = int(lru.nxt[e])
    return out
