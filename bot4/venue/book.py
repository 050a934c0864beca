"""The books: order slots of the pool, price levels and their time-priority queues,
the id maps.

A book is an instrument; each side's levels are kept in ascending key order (best last,
:mod:`bot4.venue.layout`); a level's orders are a doubly linked list through the pool.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.nbkit.u64map import map_delete, map_find, map_put
from bot4.records import SIDE_BUY
from bot4.venue.layout import (
    ASK,
    BID,
    BK_QUOTE,
    LH,
    LK,
    LQ,
    LT,
    OWN_FREE,
    OWN_OURS,
    OWN_QUOTE,
    S_LEVELS_EVICTED,
    V_FREE_TOP,
)


@njit(nogil=True, cache=True, inline="always")
def _map_set(tab, key, val):
    """Map ``key`` (never 0 here) to ``val``; the maps are sized never to fill (load <= 1/2)."""
    i = map_put(tab, key)
    if i >= 0:
        tab[i, 1] = val


@hot
def _alloc(st):
    return _a_alloc(st.pool, st.free, st.v)


@njit(nogil=True, cache=True, inline="always")
def _a_alloc(pool, free, v):
    if v[V_FREE_TOP] == 0:
        return -1
    v[V_FREE_TOP] -= 1
    m = free[v[V_FREE_TOP]]
    o = pool[m]
    o.next = -1
    o.prev = -1
    o.cum_qty = 0
    o.client_order_id = 0
    o.order_id = 0
    o.ext_id = 0
    o.ts_event_ns = 0
    o.ts_recv_ns = 0
    o.ts_order_ns = 0
    o.strategy = 0
    o.tif = 0
    o.stp_mode = 0
    o.flags = 0
    o.stp_group = 0
    return m


@hot
def _release_slot(st, m):
    _a_release_slot(st.pool, st.free, st.v, m)


@njit(nogil=True, cache=True, inline="always")
def _a_release_slot(pool, free, v, m):
    pool[m].owner = OWN_FREE
    free[v[V_FREE_TOP]] = m
    v[V_FREE_TOP] += 1


@hot
def _row(side):
    return BID if side == SIDE_BUY else ASK


@hot
def _level_pos(levels, nlev, b, s, key):
    """Insertion point of ``key`` in side ``s`` of book ``b`` (binary search)."""
    lo = 0
    hi = nlev[b, s]
    while lo < hi:
        mid = (lo + hi) >> 1
        if levels[b, s, mid, LK] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True, inline="always")
def _a_level_of(pool, levels, nlev, m):
    o = pool[m]
    s = _row(o.side)
    key = o.price if s == BID else -o.price
    return s, _level_pos(levels, nlev, np.int64(o.instrument), s, key)


@hot
def _unlink(st, m):
    """Take resting slot ``m`` out of its level's queue (the level goes when empty)."""
    _a_unlink(st.pool, st.levels, st.nlev, m)


@njit(nogil=True, cache=True, inline="always")
def _a_unlink(pool, levels, nlev, m):
    o = pool[m]
    b = np.int64(o.instrument)
    s, j = _a_level_of(pool, levels, nlev, m)
    if o.prev >= 0:
        pool[o.prev].next = o.next
    else:
        levels[b, s, j, LH] = o.next
    if o.next >= 0:
        pool[o.next].prev = o.prev
    else:
        levels[b, s, j, LT] = o.prev
    levels[b, s, j, LQ] -= o.leaves
    o.next = -1
    o.prev = -1
    if levels[b, s, j, LH] < 0:
        n = nlev[b, s]
        for k in range(j, n - 1):
            for c in range(4):
                levels[b, s, k, c] = levels[b, s, k + 1, c]
        nlev[b, s] = n - 1


@hot
def _discard_external(st, m):
    """Forget external / quote slot ``m`` (already unlinked or never rested)."""
    _a_discard_external(st.pool, st.free, st.books, st.ext, st.v, m)


@njit(nogil=True, cache=True, inline="always")
def _a_discard_external(pool, free, books, ext, v, m):
    o = pool[m]
    if o.owner == OWN_QUOTE:
        b = np.int64(o.instrument)
        s = _row(o.side)
        if books[b, BK_QUOTE + s] == m:
            books[b, BK_QUOTE + s] = -1
    elif o.ext_id != 0:
        i = map_find(ext, o.ext_id)
        if i >= 0 and ext[i, 1] == m:
            map_delete(ext, i)
    _a_release_slot(pool, free, v, m)


@hot
def _a_evict_worst(pool, free, levels, nlev, books, ext, v, incoming):
    """Drop the worst level of the full side slot ``incoming`` is to rest on, if that level
    holds no order of ours."""
    b = np.int64(pool[incoming].instrument)
    s = _row(pool[incoming].side)
    m = levels[b, s, 0, LH]
    while m >= 0:
        if pool[m].owner == OWN_OURS:
            return False
        m = pool[m].next
    m = levels[b, s, 0, LH]
    while m >= 0:
        nxt = pool[m].next
        _a_unlink(pool, levels, nlev, m)
        _a_discard_external(pool, free, books, ext, v, m)
        m = nxt
    v[S_LEVELS_EVICTED] += 1
    return True


@hot
def _append(st, m):
    """Rest slot ``m`` at the back of its price level; False if no level can be had."""
    return _a_append(st.pool, st.free, st.levels, st.nlev, st.books, st.ext, st.v, m)


@njit(nogil=True, cache=True, inline="always")
def _a_append(pool, free, levels, nlev, books, ext, v, m):
    o = pool[m]
    b = np.int64(o.instrument)
    s = _row(o.side)
    key = o.price if s == BID else -o.price
    j = _level_pos(levels, nlev, b, s, key)
    if j >= nlev[b, s] or levels[b, s, j, LK] != key:
        cap = levels.shape[2]
        if nlev[b, s] == cap:
            if j == 0 or not _a_evict_worst(pool, free, levels, nlev, books, ext, v, m):
                return False
            j -= 1
        n = nlev[b, s]
        for k in range(n, j, -1):
            for c in range(4):
                levels[b, s, k, c] = levels[b, s, k - 1, c]
        levels[b, s, j, LK] = key
        levels[b, s, j, LH] = -1
        levels[b, s, j, LT] = -1
        levels[b, s, j, LQ] = 0
        nlev[b, s] = n + 1
    tail = levels[b, s, j, LT]
    o.prev = tail
    o.next = -1
    if tail >= 0:
        pool[tail].next = m
    else:
        levels[b, s, j, LH] = m
    levels[b, s, j, LT] = m
    levels[b, s, j, LQ] += o.leaves
    return True


@hot
def _resize(st, m, new_leaves):
    """Change the working size of resting slot ``m`` in place (keeps its priority)."""
    _a_resize(st.pool, st.levels, st.nlev, m, new_leaves)


@njit(nogil=True, cache=True, inline="always")
def _a_resize(pool, levels, nlev, m, new_leaves):
    s, j = _a_level_of(pool, levels, nlev, m)
    o = pool[m]
    levels[np.int64(o.instrument), s, j, LQ] += new_leaves - o.leaves
    o.leaves = new_leaves
