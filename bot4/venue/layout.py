"""The venue's state layout: one named tuple of preallocated arrays,
:data:`VenueState`, that every kernel takes first (:class:`bot4.venue.matching.Venue`
builds it), its record dtypes and the constants that index it.

**State** lives in preallocated numpy arrays, bundled in one named tuple ``st``,
:data:`VenueState` (:class:`Venue` builds it), that every kernel takes first::

    field    shape / dtype           meaning
    pool     [capacity] RESTING       order slots: ours, external, quote (free list)
    free     [capacity] int64         stack of free pool slots, top in v[V_FREE_TOP]
    levels   [books, 2, L, 4] int64   per book and side (BID / ASK) the price levels,
                                      ascending key, best last; columns key, head,
                                      tail (pool slots), qty (shares resting)
    nlev     [books, 2] int64         levels in use per book and side
    books    [books, 4] int64         quote slot per side (-1 = none), md mode
    ours     [T, 2] int64             map (bot4.nbkit.u64map): client_order_id -> pool
                                      slot (live, >= 0) or -(history index + 1) (done)
    ext      [T, 2] int64             map: market-data order id -> pool slot
    hist     [history] DONE           ring of our finished orders
    queue    [queue] EXEC_REPORT      the delay queue (FIFO), head / tail in v
    v        [64] int64               counters, configuration and statistics (V_*)

A book is an instrument: book index = instrument id (1 .. books - 1). The key of a level
is the price on the bid side and minus the price on the ask side, so both sides search and
shift the same way and the best level is always the last one. A level's orders form a

Kernels pass these constants to other kernels as numpy scalars (``np.int64(OS_FILLED)``,
``np.bool_(False)``), never as bare Python ints / bools: numba types a bare constant
argument ``Literal[int](value)`` and compiles the callee once per value (issue 17:
``_report`` compiled 22 times). ``docs/compile.md``.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from bot4.records.errors import Code

BID = 0  # side row of the bid side in `levels`, `nlev` and `books`
ASK = 1  # side row of the ask side

# levels[..., column]
LK = 0  # key: price (bid) or -price (ask)
LH = 1  # head: pool slot of the first order (time priority), -1 = none
LT = 2  # tail: pool slot of the last order
LQ = 3  # shares resting at the level

# books[b, column]
BK_QUOTE = 0  # + side row: pool slot of the quote order of that side, -1 = none
BK_MODE = 2  # MODE_*
MODE_NONE = 0
MODE_QUOTES = 1  # quotes and trade prints drive the book
MODE_ORDERS = 2  # order-level events drive the book

# RESTING.owner
OWN_FREE = 0
OWN_OURS = 1  # our order (reports, client_order_id)
OWN_EXTERNAL = 2  # another participant's order from order-level market data (ext_id)
OWN_QUOTE = 3  # the quote order of one side (quote mode)
OWN_SNAPSHOT = 4  # external liquidity of the initial book (MD_BOOK_ADD flagged MDF_SNAPSHOT)

# RESTING.flags (ours)
RF_STP_EXPIRED = 1  # the order's rest was expired by self-trade prevention (it retires EXPIRED)

# how an aggressor treats the level at its limit price (see _take)
AT_LIMIT_ALL = 0  # the whole queue
AT_LIMIT_UNTIL = 1  # up to and including one named order
AT_LIMIT_FRONT = 2  # only our orders ahead of the first external order
AT_LIMIT_NONE = 3  # nothing at the limit price, strictly better prices only
AT_LIMIT_SNAPSHOT = 4  # only the initial-book (snapshot) orders at the front of the level

#: an order slot of the pool (128 bytes); ours carry every field, external ones price,
#: leaves, side, instrument and ext_id
RESTING = np.dtype(
    [
        ("price", np.int64),  # limit price, fixed point, instrument scale
        ("leaves", np.int64),  # shares still working
        ("cum_qty", np.int64),  # shares filled so far (ours)
        ("qty", np.int64),  # order quantity, shares (ours; changed by a replace)
        ("next", np.int64),  # next pool slot in the level's queue, -1 = last
        ("prev", np.int64),  # previous pool slot in the level's queue, -1 = first
        ("client_order_id", np.uint64),  # ours
        ("order_id", np.uint64),  # ours: the order id reports carry
        ("ext_id", np.uint64),  # external: the market data order id
        ("ts_event_ns", np.int64),  # ours: stamps of the request that placed it (copied)
        ("ts_recv_ns", np.int64),
        ("ts_order_ns", np.int64),
        ("instrument", np.uint32),  # = book index
        ("strategy", np.uint16),  # ours
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("tif", np.uint8),  # ours: TIF_DAY / TIF_GTC (only those rest)
        ("owner", np.uint8),  # OWN_*
        ("stp_mode", np.uint8),  # ours: STP_* applied when it takes liquidity (resolved)
        ("flags", np.uint8),  # ours: RF_*
        ("reserved0", np.uint8, (1,)),
        ("stp_group", np.uint32),  # ours: STP group; prevention only within one group
        ("reserved", np.uint8, (16,)),  # pads a slot to two cache lines
    ],
    align=True,
)

#: one finished order of ours, remembered for duplicate detection and ACTION_QUERY
DONE = np.dtype(
    [
        ("client_order_id", np.uint64),  # 0 = empty entry
        ("order_id", np.uint64),
        ("cum_qty", np.int64),  # shares filled
        ("qty", np.int64),  # order quantity, shares
        ("price", np.int64),  # last limit price
        ("instrument", np.uint32),
        ("strategy", np.uint16),
        ("side", np.int8),
        ("status", np.uint8),  # OS_FILLED / OS_CANCELLED / OS_REJECTED
        ("reserved", np.uint8, (16,)),
    ],
    align=True,
)

# v[...]: counters and configuration
V_FREE_TOP = 0  # free pool slots (top of the `free` stack)
# v[1] unused (was the exec_id counter: exec ids are now assigned at release)
V_ORDER_ID = 2  # last venue-assigned order id
V_LIVE_OURS = 3  # our live (resting) orders
V_HIST_NEXT = 4  # next history entry to (over)write
V_Q_HEAD = 5  # delay queue: position of the oldest report (monotonic)
V_Q_TAIL = 6  # delay queue: position after the newest report
V_LATENCY = 8  # ns from transaction to release of a report
V_MAKER_FEE = 9  # price units per share on a resting (maker) fill; < 0 = rebate
V_TAKER_FEE = 10  # price units per share on a taking fill
V_MAX_OPEN = 11  # limit on our live orders
V_QUOTE_FILL = 12  # quote-mode fill model of our resting orders: QF_*
V_STP_DEFAULT = 13  # STP_* an order of ours with stp_mode 0 gets (the venue's default mode)
V_STP_ALLOWED = 14  # bit (1 << STP_*) per mode an order may carry; others are rejected
V_STATS = 16  # first statistic

#: statistics, v[V_STATS + i]
STATS = (
    "orders_in",  # ORDER records handled
    "md_in",  # MARKET_DATA records handled
    "reports",  # reports queued
    "reports_lost",  # reports dropped on a full delay queue (size the queue up)
    "rejects",  # REJECTED reports
    "fills",  # fill reports of ours (taker and maker)
    "filled_qty",  # shares of ours filled
    "stp_matches",  # prevented matches: our taker met our resting order of its STP group
    "ext_added",  # external orders rested
    "ext_unknown",  # cancels / deletes / execs of unseen order ids (taken from the snapshot)
    "ext_duplicate",  # adds of an order id already resting (the old one is replaced)
    "ext_dropped",  # external orders not kept: pool or level capacity
    "ext_traded_qty",  # shares traded between external orders
    "exec_excess_qty",  # shares of an execution left after the named order (dropped)
    "md_ignored",  # market data records without effect here (mode, kind, bad fields)
    "levels_evicted",  # worst levels dropped to make room for a better one
    "stp_expired",  # orders of ours expired by self-trade prevention (EXEC_STP_EXPIRED)
    "stp_decremented",  # EXEC_STP_DECREMENTED reports (an order of ours reduced, still live)
    "stp_prevented_qty",  # shares of ours STP took off orders (prevented_qty of every report)
    "own_traded_qty",  # shares our orders traded with each other (STP none, or other groups)
)
(
    S_ORDERS_IN,
    S_MD_IN,
    S_REPORTS,
    S_REPORTS_LOST,
    S_REJECTS,
    S_FILLS,
    S_FILLED_QTY,
    S_STP_MATCHES,
    S_EXT_ADDED,
    S_EXT_UNKNOWN,
    S_EXT_DUPLICATE,
    S_EXT_DROPPED,
    S_EXT_TRADED,
    S_EXEC_EXCESS,
    S_MD_IGNORED,
    S_LEVELS_EVICTED,
    S_STP_EXPIRED,
    S_STP_DECREMENTED,
    S_STP_PREVENTED_QTY,
    S_OWN_TRADED,
) = range(V_STATS, V_STATS + len(STATS))
V_WORDS = 64

# reasons as plain ints (kernels compare and store them as integers)
QF_QUEUE = 0  # quote mode: prints and quotes trade in price-time order (quote orders first)
QF_TRADE_THROUGH = 1  # quote mode: ours fill only when the price goes strictly through them
QUOTE_FILL_NAMES = {"queue": QF_QUEUE, "trade_through": QF_TRADE_THROUGH}

R_OK = 0
R_DUPLICATE = int(Code.DUPLICATE_ORDER)
R_SELF_TRADE = int(Code.SELF_TRADE)
R_UNKNOWN_ORDER = int(Code.UNKNOWN_ORDER)
R_VENUE_REJECTED = int(Code.VENUE_REJECTED)
R_TOO_LATE = int(Code.TOO_LATE_TO_CANCEL)
R_UNKNOWN_INSTRUMENT = int(Code.UNKNOWN_INSTRUMENT)
R_INVALID_QTY = int(Code.INVALID_QTY)
R_NEGATIVE_PRICE = int(Code.NEGATIVE_PRICE)
R_MAX_OPEN = int(Code.MAX_OPEN_ORDERS)

_MARKET_BUY_LIMIT = np.int64(2**62)  # a market buy's limit: above any price

#: the venue's state, the one object every kernel takes first (fields: module doc)
VenueState = namedtuple(
    "VenueState",
    "pool free levels nlev books ours ext hist queue v",
)
