"""The tests' reference book: ``MARKET_DATA`` book events applied per price level and per
order id, written independently of the product's book.

**Not product code.** The md stage and md_gateway both build their books with
:mod:`bot4.marketdata.builder` (one book implementation, issue 18); nothing under
``bot4/`` imports this module. It stays as the reference the tests compare against
(``one_step_check`` against LOBSTER's orderbook file row by row, hypothesis models of the
level book and order table in tests/unit/test_lobster.py), so its layout differs on
purpose (best level *last*, binary search) from the builder's.

**Price levels** (:class:`LevelBook`). Each side is two fixed-capacity int64 rows, ``keys``
and ``sizes``, sorted ascending by key with the best level *last*: key = price on the bid
side and -price on the ask side, so both sides share one search and one shift, and the
frequent changes near the top of the book move few elements. ``n[side]`` counts the
levels in use. ``apply`` follows LOBSTER's aggregation exactly: ``MD_BOOK_ADD`` adds
``qty`` at ``price`` on ``side``; ``MD_BOOK_CANCEL``, ``MD_BOOK_DELETE`` and
``MD_BOOK_EXEC`` subtract it; every other kind (hidden executions included) changes
nothing; a level at zero size disappears. Oddities are counted in ``stats``, never raised:
a subtraction at a price with no level (``ST_MISSING_LEVEL``), one that takes a level
below zero (``ST_UNDERFLOW``, the level is removed), an add to a full side
(``ST_OVERFLOW``, the worst level is dropped), a side that is neither buy nor sell
(``ST_BAD_SIDE``).

**Orders** (:class:`OrderTable`). Open-addressing hash table (linear probing,
backward-shift deletion, power-of-two capacity, load <= 3/4, grown by the Python wrapper
between kernel calls) from order id to remaining size, price, side and the ``seq`` of the
add, the last of which gives time priority for a queue model. References to ids that were
never added (LOBSTER files start mid-stream: thousands per day) are counted
(``ORD_UNKNOWN``) and ignored.

Ownership: a book and its arrays belong to the one stage (or test) that applies records
to it; readers copy out with :meth:`LevelBook.top`. The ``*_kernel`` functions are the hot
path, ``@njit(nogil=True, cache=True)``, and can be called from other kernels with the
arrays of a book.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.marketdata.lobster import DUMMY_ASK_PRICE, DUMMY_BID_PRICE
from bot4.nbkit import map_delete, map_find, map_new, map_put, map_rehash, unowned
from bot4.records import (
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    SIDE_BUY,
    SIDE_SELL,
)

__all__ = [
    "ASK",
    "BID",
    "LEVEL_STATS",
    "ORDER_STATS",
    "LevelBook",
    "OrderTable",
    "book_apply_batch_kernel",
    "book_apply_kernel",
    "book_seed_kernel",
    "book_top_kernel",
    "one_step_check",
]

BID = 0  # row of the bid side in LevelBook arrays
ASK = 1  # row of the ask side

# LevelBook.stats slots (counts of records)
ST_APPLIED = 0  # book events applied (kinds 1-4 with a valid side)
ST_IGNORED = 1  # other kinds: hidden executions, trades, quotes, halts
ST_MISSING_LEVEL = 2  # cancel / delete / exec at a price with no level on that side
ST_UNDERFLOW = 3  # subtraction larger than the level: level removed
ST_OVERFLOW = 4  # add of a new level to a full side: the worst level was dropped
ST_BAD_SIDE = 5  # side neither SIDE_BUY nor SIDE_SELL
LEVEL_STATS = ("applied", "ignored", "missing_level", "underflow", "overflow", "bad_side")

# OrderTable.stats slots (counts of records)
ORD_ADDED = 0  # adds of a new id
ORD_REMOVED = 1  # orders gone: deleted, or cancelled / executed to zero
ORD_UNKNOWN = 2  # cancel / delete / exec of an id not in the table
ORD_DUPLICATE = 3  # add of an id already live: the new add replaces it
ORD_OVERFILL = 4  # cancel / exec larger than the remaining size: order removed
ORD_DELETE_MISMATCH = 5  # delete whose size differs from the remaining size
ORD_IGNORED = 6  # other kinds, and adds with order id 0
ORDER_STATS = ("added", "removed", "unknown", "duplicate", "overfill", "delete_mismatch", "ignored")


# --- price levels: kernels ------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _side_row(side):
    if side == SIDE_BUY:
        return BID
    if side == SIDE_SELL:
        return ASK
    return -1


@njit(nogil=True, cache=True)
def _level_add(keys, sizes, n, stats, s, key, qty):
    m = n[s]
    pos = np.searchsorted(keys[s, :m], key)
    if pos < m and keys[s, pos] == key:
        sizes[s, pos] += qty
        return
    if m == keys.shape[1]:
        stats[ST_OVERFLOW] += 1
        if pos == 0:
            return
        for j in range(pos - 1):
            keys[s, j] = keys[s, j + 1]
            sizes[s, j] = sizes[s, j + 1]
        keys[s, pos - 1] = key
        sizes[s, pos - 1] = qty
        return
    for j in range(m, pos, -1):
        keys[s, j] = keys[s, j - 1]
        sizes[s, j] = sizes[s, j - 1]
    keys[s, pos] = key
    sizes[s, pos] = qty
    n[s] = m + 1


@njit(nogil=True, cache=True)
def _level_sub(keys, sizes, n, stats, s, key, qty):
    m = n[s]
    pos = np.searchsorted(keys[s, :m], key)
    if pos >= m or keys[s, pos] != key:
        stats[ST_MISSING_LEVEL] += 1
        return
    left = sizes[s, pos] - qty
    if left > 0:
        sizes[s, pos] = left
        return
    if left < 0:
        stats[ST_UNDERFLOW] += 1
    for j in range(pos, m - 1):
        keys[s, j] = keys[s, j + 1]
        sizes[s, j] = sizes[s, j + 1]
    n[s] = m - 1


@njit(nogil=True, cache=True)
def book_apply_kernel(keys, sizes, n, stats, kind, side, price, qty):
    """Apply one book event (fields of a MARKET_DATA record) to the level arrays."""
    if kind < MD_BOOK_ADD or kind > MD_BOOK_EXEC:
        stats[ST_IGNORED] += 1
        return
    s = _side_row(side)
    if s < 0:
        stats[ST_BAD_SIDE] += 1
        return
    key = price if s == BID else -price
    if kind == MD_BOOK_ADD:
        _level_add(keys, sizes, n, stats, s, key, qty)
    else:
        _level_sub(keys, sizes, n, stats, s, key, qty)
    stats[ST_APPLIED] += 1


@njit(nogil=True, cache=True)
def book_apply_batch_kernel(keys, sizes, n, stats, records):
    """Apply every record of a MARKET_DATA array, in order."""
    for i in range(records.size):
        r = records[i]
        book_apply_kernel(keys, sizes, n, stats, r.kind, r.side, r.price, r.qty)


@njit(nogil=True, cache=True)
def book_top_kernel(keys, sizes, n, depth, out):
    """Best ``depth`` levels into ``out`` (int64[4 * depth]) in LOBSTER's column order:
    AskPrice, AskSize, BidPrice, BidSize per level; missing levels as LOBSTER's dummies."""
    for i in range(depth):
        if i < n[ASK]:
            j = n[ASK] - 1 - i
            out[4 * i] = -keys[ASK, j]
            out[4 * i + 1] = sizes[ASK, j]
        else:
            out[4 * i] = DUMMY_ASK_PRICE
            out[4 * i + 1] = 0
        if i < n[BID]:
            j = n[BID] - 1 - i
            out[4 * i + 2] = keys[BID, j]
            out[4 * i + 3] = sizes[BID, j]
        else:
            out[4 * i + 2] = DUMMY_BID_PRICE
            out[4 * i + 3] = 0


@njit(nogil=True, cache=True)
def book_seed_kernel(keys, sizes, n, row):
    """Replace the book with a LOBSTER orderbook row (4 columns per level, best first).

    Dummy levels and sizes <= 0 are skipped; beyond capacity the worst levels are left
    out. Returns False (book left as far as filled) if a side is not strictly ordered.
    """
    levels = row.size // 4
    cap = keys.shape[1]
    ok = True
    for s in range(2):
        col = 0 if s == ASK else 2
        m = 0
        for i in range(min(levels, cap) - 1, -1, -1):
            px = row[4 * i + col]
            sz = row[4 * i + col + 1]
            if sz <= 0 or px in (DUMMY_ASK_PRICE, DUMMY_BID_PRICE):
                continue
            key = px if s == BID else -px
            if m > 0 and key <= keys[s, m - 1]:
                ok = False
            keys[s, m] = key
            sizes[s, m] = sz
            m += 1
        n[s] = m
    return ok


class Levels(NamedTuple):
    """A :class:`LevelBook`'s arrays as one state object (the LevelBook owns them)."""

    keys: np.ndarray  # int64[2, capacity]: level keys per side, ascending, best last
    sizes: np.ndarray  # int64[2, capacity]: aggregated size per level, shares
    n: np.ndarray  # int64[2]: levels in use per side
    stats: np.ndarray  # int64[len(LEVEL_STATS)]: counters ST_*


@njit(nogil=True, cache=True)
def _one_step_kernel(records, rows, orderbook, depth, lv, match, emptied):
    """:func:`one_step_check`'s loop over ``records`` with the LevelBook state ``lv``
    (:class:`Levels`, borrowed for the call); writes ``match`` / ``emptied``."""
    lv = unowned(lv)
    keys, sizes, n, stats = lv.keys, lv.sizes, lv.n, lv.stats
    width = 4 * depth
    top = np.empty(width, np.int64)
    for i in range(records.size):
        row = rows[i]
        if row < 1 or row >= orderbook.shape[0]:
            continue
        book_seed_kernel(keys, sizes, n, orderbook[row - 1])
        r = records[i]
        s = _side_row(r.side)
        best = np.int64(0)
        had = False
        if s >= 0 and n[s] > 0:
            had = True
            best = keys[s, n[s] - 1]
        book_apply_kernel(keys, sizes, n, stats, r.kind, r.side, r.price, r.qty)
        if had and r.kind != MD_BOOK_ADD:
            emptied[i] = n[s] == 0 or keys[s, n[s] - 1] != best
        book_top_kernel(keys, sizes, n, depth, top)
        same = True
        for c in range(width):
            if top[c] != orderbook[row, c]:
                same = False
                break
        match[i] = same


# --- price levels: Python API ----------------------------------------------------------------


class LevelBook:
    """Aggregated size per price level, both sides, for one instrument.

    ``keys``/``sizes`` int64[2, capacity] (row BID / ASK, ascending key, best last, see the
    module doc), ``n`` int64[2] levels in use, ``stats`` int64 counters (``ST_*``).
    """

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 level per side, got {capacity}")
        self.keys = np.zeros((2, capacity), np.int64)
        self.sizes = np.zeros((2, capacity), np.int64)
        self.n = np.zeros(2, np.int64)
        self.stats = np.zeros(len(LEVEL_STATS), np.int64)
        self.state = Levels(self.keys, self.sizes, self.n, self.stats)  # the kernels' view

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    def clear(self) -> None:
        self.n[:] = 0

    def apply(self, record) -> None:
        """Apply one MARKET_DATA record (a structured scalar)."""
        book_apply_kernel(
            self.keys,
            self.sizes,
            self.n,
            self.stats,
            int(record["kind"]),
            int(record["side"]),
            int(record["price"]),
            int(record["qty"]),
        )

    def apply_batch(self, records: np.ndarray) -> None:
        """Apply a MARKET_DATA array in order (one kernel call)."""
        if records.dtype != MARKET_DATA:
            raise TypeError(f"expected MARKET_DATA records, got {records.dtype}")
        book_apply_batch_kernel(self.keys, self.sizes, self.n, self.stats, records)

    def seed(self, orderbook_row: np.ndarray) -> None:
        """Replace the book with one LOBSTER orderbook row; ValueError if it is unordered."""
        row = np.ascontiguousarray(orderbook_row, dtype=np.int64)
        if row.ndim != 1 or row.size % 4:
            raise ValueError(f"an orderbook row has 4 columns per level, got shape {row.shape}")
        if not book_seed_kernel(self.keys, self.sizes, self.n, row):
            self.clear()
            raise ValueError("orderbook row is not strictly ordered best-first on each side")

    def top(self, depth: int = 1) -> np.ndarray:
        """int64[4 * depth]: AskPrice, AskSize, BidPrice, BidSize per level, best first."""
        out = np.empty(4 * depth, np.int64)
        book_top_kernel(self.keys, self.sizes, self.n, depth, out)
        return out

    def levels(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(prices, sizes) of every level of ``side`` (SIDE_BUY / SIDE_SELL), best first."""
        s = BID if side == SIDE_BUY else ASK
        m = int(self.n[s])
        keys = self.keys[s, :m][::-1]
        return (keys.copy() if s == BID else -keys), self.sizes[s, :m][::-1].copy()

    def counters(self) -> dict[str, int]:
        return dict(zip(LEVEL_STATS, self.stats.tolist(), strict=True))


def one_step_check(
    records: np.ndarray,
    orderbook: np.ndarray,
    depth: int | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check each record against a reference book, re-seeding before every record.

    For record ``i`` with orderbook row ``k = rows[i]`` (default ``seq - 1``, as
    :func:`~bot4.marketdata.lobster.read_messages` numbers them): seed a LevelBook from
    row ``k - 1``, apply the record, compare the best ``depth`` levels (default LEVELS - 1,
    at least 1) with row ``k``. Returns bool arrays ``(match, emptied)``; ``emptied[i]``:
    the record removed the best level of its side (the next best is then beyond what a
    ``depth``-level reference row shows when depth = LEVELS). Records whose row ``k`` has
    no row ``k - 1`` are neither matched nor emptied.
    """
    if records.dtype != MARKET_DATA:
        raise TypeError(f"expected MARKET_DATA records, got {records.dtype}")
    orderbook = np.ascontiguousarray(orderbook, dtype=np.int64)
    levels = orderbook.shape[1] // 4
    if depth is None:
        depth = max(levels - 1, 1)
    if not 1 <= depth <= levels:
        raise ValueError(f"depth {depth} outside 1..{levels}")
    if rows is None:
        rows = records["seq"].astype(np.int64) - 1
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    book = LevelBook(capacity=max(levels, 1))
    match = np.zeros(records.size, dtype=np.bool_)
    emptied = np.zeros(records.size, dtype=np.bool_)
    _one_step_kernel(records, rows, orderbook, depth, book.state, match, emptied)
    return match, emptied


# --- orders: kernels -------------------------------------------------------------------------
# tab[row] = (order id, remaining qty, price, side, add seq): a bot4.nbkit u64 map (id 0 =
# empty row), one 40-byte row per order.
T_ID, T_QTY, T_PX, T_SIDE, T_SEQ = range(5)
NT = 5


@njit(nogil=True, cache=True, inline="always")
def _set(tab, j, r):
    tab[j, T_QTY] = r.qty
    tab[j, T_PX] = r.price
    tab[j, T_SIDE] = r.side
    tab[j, T_SEQ] = np.int64(r.seq)


@njit(nogil=True, cache=True)
def orders_apply_kernel(tab, live, stats, records, start):
    """Apply ``records[start:]`` to the order map ``tab`` (``T_*`` columns); returns the
    index of the first record not applied (``records.size`` when all were): an add stops
    the batch when the table is 3/4 full, so the caller can grow it and call again from
    there. ``live[0]`` counts live orders.
    """
    limit = tab.shape[0] * 3 // 4
    for i in range(start, records.size):
        r = records[i]
        k = r.kind
        if k == MD_BOOK_ADD:
            if r.order_id == 0:
                stats[ORD_IGNORED] += 1
                continue
            j = map_find(tab, r.order_id)
            if j >= 0:
                stats[ORD_DUPLICATE] += 1
                _set(tab, j, r)
                continue
            if live[0] + 1 > limit:
                return i
            j = map_put(tab, r.order_id)  # never -1 below 3/4 full
            _set(tab, j, r)
            live[0] += 1
            stats[ORD_ADDED] += 1
        elif k in (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC):
            j = map_find(tab, r.order_id)  # id 0 is never found
            if j < 0:
                stats[ORD_UNKNOWN] += 1
                continue
            left = tab[j, T_QTY] - r.qty
            if k == MD_BOOK_DELETE:
                if left != 0:
                    stats[ORD_DELETE_MISMATCH] += 1
                left = 0
            if left > 0:
                tab[j, T_QTY] = left
                continue
            if left < 0:
                stats[ORD_OVERFILL] += 1
            map_delete(tab, j)
            live[0] -= 1
            stats[ORD_REMOVED] += 1
        else:
            stats[ORD_IGNORED] += 1
    return records.size


# --- orders: Python API ----------------------------------------------------------------------


class OrderTable:
    """Live orders by venue order id: remaining size, price, side and the add's ``seq``.

    ``capacity`` is rounded up to a power of two; the table doubles when 3/4 full.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        cap = 1 << max(int(capacity) - 1, 3).bit_length()
        self._alloc(cap)
        self.live = np.zeros(1, np.int64)
        self.stats = np.zeros(len(ORDER_STATS), np.int64)

    def _alloc(self, cap: int) -> None:
        self.tab = map_new(cap, NT)  # T_* columns; id 0 = empty row

    @property
    def capacity(self) -> int:
        return self.tab.shape[0]

    def __len__(self) -> int:
        return int(self.live[0])

    def __contains__(self, order_id: object) -> bool:
        try:
            oid = operator.index(order_id)
        except TypeError:
            return False
        return 0 < oid < 1 << 64 and self._slot(oid) >= 0

    def _slot(self, order_id: int) -> int:
        return int(map_find(self.tab, np.uint64(order_id)))

    def get(self, order_id: int) -> tuple[int, int, int, int] | None:
        """(remaining qty, price, side, add seq) of a live order, None if not live."""
        i = self._slot(order_id)
        if i < 0:
            return None
        row = self.tab[i]
        return int(row[T_QTY]), int(row[T_PX]), int(row[T_SIDE]), int(row[T_SEQ])

    def remaining(self, order_id: int) -> int:
        """Remaining size of a live order, 0 if it is not live (or was never seen)."""
        i = self._slot(order_id)
        return int(self.tab[i, T_QTY]) if i >= 0 else 0

    def _grow(self) -> None:
        old = self.tab
        self._alloc(2 * self.capacity)
        map_rehash(old, self.tab)

    def apply_batch(self, records: np.ndarray) -> None:
        """Apply a MARKET_DATA array in order, growing the table between kernel calls."""
        if records.dtype != MARKET_DATA:
            raise TypeError(f"expected MARKET_DATA records, got {records.dtype}")
        i = 0
        while True:
            i = orders_apply_kernel(self.tab, self.live, self.stats, records, i)
            if i >= records.size:
                return
            self._grow()

    def apply(self, record) -> None:
        """Apply one MARKET_DATA record (a structured scalar)."""
        self.apply_batch(np.array([record], dtype=MARKET_DATA))

    def counters(self) -> dict[str, int]:
        return dict(zip(ORDER_STATS, self.stats.tolist(), strict=True))
