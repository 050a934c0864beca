"""Our own open orders, in preallocated arrays, by instrument / side / price / time.

A :class:`Book` is a namedtuple of arrays (numba kernels take it as one argument):

    slots  OPEN_ORDER[C]      one open order per slot; ``state == 0`` marks a free slot
    nxt    int32[C]           next slot in its price-time list (-1 = last)
    prv    int32[C]           previous slot (-1 = first)
    head   int32[I, 2]        first slot per (instrument, side): column 0 buys, 1 sells
    tail   int32[I, 2]        last slot per (instrument, side)
    free   int32[C]           stack of free slot numbers, ``meta[B_FREE]`` of them
    meta   int64[4]           B_FREE (free slots), B_ARRIVAL (insertion counter), B_OPEN
    index  Lru(2C)            client order id -> slot, for every open order's current id
                              and the id of a replace in flight (never evicts: 2 ids per
                              slot at most)

Each (instrument, side) list holds the orders that can rest at the venue (limit orders,
time in force not IOC / FOK) in the venue's matching priority: buys by descending price,
sells by ascending price, then by arrival. So "our orders an incoming order would cross"
is a prefix of the opposite list (see ``bot4.oms.stp_guard``). Market, stop and IOC / FOK
orders are open (indexed) but unlinked: they never rest.

Capacity ``C`` bounds our open orders; an order arriving at a full book is refused by
the OMS (reason ``MAX_OPEN_ORDERS``). Instrument ids index ``head`` / ``tail`` directly
(``1 .. I - 1``). Ownership: the orders stage process, alone.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.oms.lru import lru_new, lru_peek, lru_put, lru_remove
from bot4.records import OT_LIMIT, SIDE_BUY, TIF_FOK, TIF_IOC

__all__ = [
    "OPEN_ORDER",
    "Book",
    "book_add",
    "book_claim",
    "book_commit",
    "book_find",
    "book_list",
    "book_new",
    "book_open",
    "book_remove",
    "book_rests",
    "open_order",
]

OPEN_ORDER = np.dtype(
    [
        ("client_order_id", np.uint64),  # id the venue knows the order by (changes on replace)
        ("risk_client_order_id", np.uint64),  # id risk sent: dedup key, id on reports to risk
        ("alias_client_order_id", np.uint64),  # id of the replace in flight (0 = none)
        ("order_id", np.uint64),  # OMS order id (monotonic per OMS)
        ("arrival", np.uint64),  # book insertion counter: time priority
        ("ts_order_ns", np.int64),  # OMS send stamp, ns (host monotonic)
        ("qty", np.int64),  # total ordered, shares / lots (after replaces)
        ("cum_qty", np.int64),  # filled so far, shares / lots
        ("leaves_qty", np.int64),  # still working, shares / lots
        ("price", np.int64),  # limit price, fixed point (0 = market)
        ("stop_price", np.int64),  # fixed point (0 = none)
        ("instrument", np.uint32),
        ("strategy", np.uint16),
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("state", np.uint8),  # bot4.oms.states ST_* (0 = free slot)
        ("order_type", np.uint8),  # OT_*
        ("tif", np.uint8),  # TIF_*
        ("flags", np.uint8),  # F_* bits
        ("reserved", np.uint8, (29,)),
    ],
    align=True,
)
assert OPEN_ORDER.itemsize == 128

F_LINKED = 1  # in its (instrument, side) price-time list
F_AWAIT_STATUS = 2  # restart reconciliation: ACTION_QUERY sent, EXEC_STATUS not yet back
F_STP = 4  # the cancel / replace in flight was requested by self-trade prevention

B_FREE = 0
B_ARRIVAL = 1
B_OPEN = 2

Book = namedtuple("Book", "slots nxt prv head tail free meta index")


def book_new(capacity: int, n_instruments: int) -> Book:
    """An empty book for up to ``capacity`` open orders on instruments ``1 .. n - 1``."""
    if capacity < 1 or n_instruments < 2:
        raise ValueError(f"book capacity {capacity} / instruments {n_instruments} too small")
    meta = np.zeros(4, np.int64)
    meta[B_FREE] = capacity
    return Book(
        np.zeros(capacity, OPEN_ORDER),
        np.full(capacity, -1, np.int32),
        np.full(capacity, -1, np.int32),
        np.full((n_instruments, 2), -1, np.int32),
        np.full((n_instruments, 2), -1, np.int32),
        np.arange(capacity - 1, -1, -1, dtype=np.int32),  # pops slot 0 first
        meta,
        lru_new(2 * capacity),
    )


@hot
def book_rests(order_type, tif):
    """Whether an order of this type / time in force can rest in the venue's book."""
    return order_type == OT_LIMIT and tif != TIF_IOC and tif != TIF_FOK


@hot
def book_find(book, client_order_id):
    """Slot of the open order known by ``client_order_id`` (or its replace id), -1 if none."""
    found, s = lru_peek(book.index, client_order_id)
    return s if found else np.int64(-1)


@njit(nogil=True, cache=True, inline="always")
def _col(side):
    return 0 if side == SIDE_BUY else 1


@hot
def _link(book, s):
    """Insert slot ``s`` into its list after every order of better or equal priority."""
    o = book.slots[s]
    inst = np.int64(o.instrument)
    c = _col(o.side)
    buy = o.side == SIDE_BUY
    t = book.tail[inst, c]
    while t >= 0:
        p = book.slots[t].price
        if (buy and p < o.price) or (not buy and p > o.price):
            t = book.prv[t]
        else:
            break
    book.prv[s] = t
    if t < 0:
        n = book.head[inst, c]
        book.head[inst, c] = s
    else:
        n = book.nxt[t]
        book.nxt[t] = s
    book.nxt[s] = n
    if n < 0:
        book.tail[inst, c] = s
    else:
        book.prv[n] = s
    o.flags |= F_LINKED


@hot
def _unlink(book, s):
    o = book.slots[s]
    inst = np.int64(o.instrument)
    c = _col(o.side)
    p = book.prv[s]
    n = book.nxt[s]
    if p >= 0:
        book.nxt[p] = n
    else:
        book.head[inst, c] = n
    if n >= 0:
        book.prv[n] = p
    else:
        book.tail[inst, c] = p
    book.prv[s] = -1
    book.nxt[s] = -1
    o.flags &= ~np.uint8(F_LINKED)


@njit(nogil=True, cache=True, inline="always")
def book_claim(book, instrument):
    """A free slot for a new open order on ``instrument``, or -1 when the book is full or
    the instrument id is outside the book. The caller writes the order's fields into
    ``book.slots[s]`` (every field but the book's own: ``arrival``,
    ``alias_client_order_id``, ``flags``), then :func:`book_commit` it before anything
    else reads the book (the ring's claim-then-publish, in one process)."""
    if book.meta[B_FREE] == 0 or instrument <= 0 or instrument >= book.head.shape[0]:
        return np.int64(-1)
    book.meta[B_FREE] -= 1
    return np.int64(book.free[book.meta[B_FREE]])


@njit(nogil=True, cache=True, inline="always")
def book_commit(book, s):
    """Open the order written into claimed slot ``s``: its time priority (``arrival``),
    no replace in flight, no flags, indexed by its ``client_order_id``, and linked into
    its (instrument, side) list when it can rest."""
    o = book.slots[s]
    o.alias_client_order_id = 0
    o.arrival = book.meta[B_ARRIVAL]
    book.meta[B_ARRIVAL] += 1
    o.flags = 0
    book.prv[s] = -1
    book.nxt[s] = -1
    lru_put(book.index, o.client_order_id, s)
    if book_rests(o.order_type, o.tif):
        _link(book, s)
    book.meta[B_OPEN] += 1


def book_add(book: Book, row) -> int:
    """Add the open order ``row`` (an ``OPEN_ORDER`` record, from Python: a restart's
    snapshot, tests, benchmarks): :func:`book_claim`, copy, :func:`book_commit`. Its slot,
    or -1 when the book is full or the instrument id is outside the book. ``arrival``,
    ``alias_client_order_id`` and ``flags`` are the book's (the row's are ignored)."""
    s = int(book_claim(book, np.int64(row["instrument"])))
    if s >= 0:
        book.slots[s] = row
        book_commit(book, np.int64(s))
    return s


def open_order(**fields) -> np.void:
    """An ``OPEN_ORDER`` record with the given fields (the rest 0), for :func:`book_add`."""
    r = np.zeros(1, OPEN_ORDER)
    for k, v in fields.items():
        r[k] = v
    return r[0]


@hot
def book_remove(book, s):
    """Free slot ``s``: out of its list and the index (both ids), back on the free stack."""
    o = book.slots[s]
    if o.state == 0:
        return
    if o.flags & F_LINKED:
        _unlink(book, s)
    lru_remove(book.index, o.client_order_id)
    if o.alias_client_order_id != 0:
        lru_remove(book.index, o.alias_client_order_id)
    o.state = 0
    o.flags = 0
    o.alias_client_order_id = 0
    book.free[book.meta[B_FREE]] = s
    book.meta[B_FREE] += 1
    book.meta[B_OPEN] -= 1


@hot
def book_set_alias(book, s, alias):
    """Register the id of a replace in flight for slot ``s``."""
    book.slots[s].alias_client_order_id = alias
    lru_put(book.index, alias, s)


@hot
def book_drop_alias(book, s):
    """The replace was refused: forget its id."""
    o = book.slots[s]
    if o.alias_client_order_id != 0:
        lru_remove(book.index, o.alias_client_order_id)
        o.alias_client_order_id = 0


@hot
def book_rekey(book, s):
    """The replace went through: the order is now known by the replace id only."""
    o = book.slots[s]
    if o.alias_client_order_id != 0:
        lru_remove(book.index, o.client_order_id)
        o.client_order_id = o.alias_client_order_id
        o.alias_client_order_id = 0


def book_open(book: Book) -> np.ndarray:
    """Copy of the open orders (slot order): the snapshot the persistence issue stores."""
    return book.slots[book.slots["state"] != 0].copy()


def book_list(book: Book, instrument: int, side: int) -> list[int]:
    """Slots of one (instrument, side) list in matching priority (tests, operator tools)."""
    out = []
    s = int(book.head[instrument, 0 if side == SIDE_BUY else 1])
    while s >= 0:
        out.append(s)
        s = int(book.nxt[s])
    return out
