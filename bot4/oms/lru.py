"""A bounded LRU map of u64 keys to i64 values in preallocated arrays.

The OMS keeps three: client order ids it has seen (duplicate intents; the value is the
order's final state once closed), exec ids it has seen (duplicate execution reports), and
the index of its open orders (client order id -> book slot; sized so it never evicts).

Layout (:class:`Lru`, a namedtuple of arrays that numba kernels take as one argument):

    tab   int32[T]   open-addressing table, linear probing: entry index + 1, 0 = empty;
                     T = a power of two >= 2 * capacity (load factor <= 1/2)
    keys  uint64[C]  entry key
    vals  int64[C]   entry value
    prv   int32[C]   recency list, towards the most recently used (-1 = none)
    nxt   int32[C]   recency list, towards the least recently used; free list when unused
    meta  int64[8]   M_HEAD (most recent entry), M_TAIL (least recent), M_SIZE, M_FREE
                     (free-list head), M_EVICTIONS, M_MASK (T - 1)

Every key (0 included) is storable. Deletion shifts the probe chain back (no tombstones),
so a table that has seen any number of puts and removals probes as if freshly filled.
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
from numba import njit

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
M_MASK = 5

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
    meta[M_MASK] = t - 1
    return Lru(
        np.zeros(t, np.int32),
        np.zeros(capacity, np.uint64),
        np.zeros(capacity, np.int64),
        np.full(capacity, -1, np.int32),
        nxt,
        meta,
    )


@njit(nogil=True, cache=True, inline="always")
def _hash(key):
    z = key + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.int64((z ^ (z >> np.uint64(31))) >> np.uint64(1))


@njit(nogil=True, cache=True)
def _probe(lru, key):
    """(table position, entry): the key's position and entry, or the empty position where
    it would go and -1."""
    key = np.uint64(key)
    mask = lru.meta[M_MASK]
    i = _hash(key) & mask
    while True:
        e = lru.tab[i]
        if e == 0:
            return i, -1
        if lru.keys[e - 1] == key:
            return i, e - 1
        i = (i + 1) & mask


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def _push_front(lru, e):
    h = lru.meta[M_HEAD]
    lru.prv[e] = -1
    lru.nxt[e] = h
    if h >= 0:
        lru.prv[h] = e
    else:
        lru.meta[M_TAIL] = e
    lru.meta[M_HEAD] = e


@njit(nogil=True, cache=True)
def _tab_delete(lru, i):
    """Empty table position ``i``, shifting later members of its probe chain back."""
    mask = lru.meta[M_MASK]
    j = i
    while True:
        j = (j + 1) & mask
        e = lru.tab[j]
        if e == 0:
            break
        k = _hash(lru.keys[e - 1]) & mask
        if (j > i and (k <= i or k > j)) or (j < i and k <= i and k > j):
            lru.tab[i] = e
            i = j
    lru.tab[i] = 0


@njit(nogil=True, cache=True)
def _drop(lru, pos, e):
    _tab_delete(lru, pos)
    _unlink(lru, e)
    lru.nxt[e] = lru.meta[M_FREE]
    lru.prv[e] = -1
    lru.meta[M_FREE] = e
    lru.meta[M_SIZE] -= 1


@njit(nogil=True, cache=True)
def lru_contains(lru, key):
    """Whether ``key`` is present (recency unchanged)."""
    return _probe(lru, key)[1] >= 0


@njit(nogil=True, cache=True)
def lru_peek(lru, key):
    """``(found, value)`` without touching recency (value 0 when not found)."""
    e = _probe(lru, key)[1]
    if e < 0:
        return False, np.int64(0)
    return True, lru.vals[e]


@njit(nogil=True, cache=True)
def lru_get(lru, key):
    """``(found, value)``; a found key becomes the most recently used."""
    e = _probe(lru, key)[1]
    if e < 0:
        return False, np.int64(0)
    if lru.meta[M_HEAD] != e:
        _unlink(lru, e)
        _push_front(lru, e)
    return True, lru.vals[e]


@njit(nogil=True, cache=True)
def lru_put(lru, key, value):
    """Set ``key`` to ``value`` as the most recently used; PUT_INSERTED, PUT_UPDATED or
    PUT_EVICTED (inserted after evicting the least recently used key)."""
    pos, e = _probe(lru, key)
    if e >= 0:
        lru.vals[e] = value
        if lru.meta[M_HEAD] != e:
            _unlink(lru, e)
            _push_front(lru, e)
        return PUT_UPDATED
    res = PUT_INSERTED
    if lru.meta[M_FREE] < 0:
        old = lru.meta[M_TAIL]
        opos = _probe(lru, lru.keys[old])[0]
        _drop(lru, opos, old)
        lru.meta[M_EVICTIONS] += 1
        res = PUT_EVICTED
        pos = _probe(lru, key)[0]  # the shift may have moved the empty position
    e = lru.meta[M_FREE]
    lru.meta[M_FREE] = lru.nxt[e]
    lru.keys[e] = key
    lru.vals[e] = value
    lru.tab[pos] = e + 1
    _push_front(lru, e)
    lru.meta[M_SIZE] += 1
    return res


@njit(nogil=True, cache=True)
def lru_remove(lru, key):
    """Remove ``key``; whether it was present."""
    pos, e = _probe(lru, key)
    if e < 0:
        return False
    _drop(lru, pos, e)
    return True


def lru_items(lru: Lru) -> list[tuple[int, int]]:
    """``(key, value)`` pairs from most to least recently used (tests, operator tools)."""
    out = []
    e = int(lru.meta[M_HEAD])
    while e >= 0:
        out.append((int(lru.keys[e]), int(lru.vals[e])))
        e = int(lru.nxt[e])
    return out
