"""The simulated venue: price-time-priority limit order books fed by our orders and by
other participants' market data, with a report delay queue.

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
doubly linked list through the pool in arrival order: list order *is* time priority.

**Matching.** An incoming order (ours, an external add, a quote) first takes liquidity
from the opposite side in price-time order at prices better than or equal to its limit;
fills are at the resting order's price; what is left rests (DAY / GTC), or is cancelled
(IOC, market); FOK fills completely or is cancelled without touching the book. The book is
therefore never crossed. Our taker gets one fill report per price level it trades at
(the fills of one level are summed, so a sweep reports at most one line per level); each
of our resting makers gets one report per fill. External orders trading against each other
produce no report.

**Self-trade prevention** (``docs/stp.md``), at match time, with the exchanges' semantics:
when our taker meets our own resting order of the same ``stp_group``, the *taker's* mode
(``ORDER.stp_mode``; 0 = the venue's default, ``v[V_STP_DEFAULT]``) is applied to that
resting order, the one actually met in price-time order: liquidity of others (and of our
other groups) ahead of it or at better prices trades first. ``STP_CANCEL_RESTING`` expires
the resting order and the taker goes on; ``STP_CANCEL_NEW`` expires the taker's remaining
quantity (the resting order stays); ``STP_CANCEL_BOTH`` expires both; ``STP_DECREMENT``
reduces both by the smaller leaves, expiring the one that reaches 0 (both when equal), and
the taker goes on with what it has left. An expiry is reported ``EXEC_STP_EXPIRED``
(status EXPIRED, leaves 0), a reduction ``EXEC_STP_DECREMENTED`` (still live, leaves and
qty reduced), each with ``prevented_qty`` and reason ``Code.SELF_TRADE``, resting order
first; neither is a fill. The resting order's own mode is ignored. A FOK taker counts only
what would fill (prevented quantity does not). Market data never carries our orders, so
the market-data paths (external aggressors, quote and order-level fills of our resting
orders) have no self-trade to prevent.

**Our orders** (``venue_order_kernel``). NEW is acknowledged first, then trades. It is
rejected (nothing after) for a client order id of 0 or one the venue remembers (live or
finished: ``DUPLICATE_ORDER``), an unknown instrument, a side other than buy / sell, a
quantity <= 0, a limit price <= 0, a stop order or an STP mode the venue does not allow
(``VENUE_REJECTED``), and when ours or the pool are at capacity (``MAX_OPEN_ORDERS``).
``TIF_NONE`` counts as DAY; ``OT_MARKET`` is an IOC (or FOK) without a price limit. DAY and
GTC orders never expire here (no session clock). CANCEL names ``orig_client_order_id``, and
its report carries that id. REPLACE names ``orig_client_order_id`` and the new
``client_order_id`` (0 = keep the id), the new total ``qty`` including what has filled (0 =
unchanged; refused with ``INVALID_QTY`` unless above the filled quantity) and
``limit_price`` (0 = unchanged); the order loses its time priority on a price change or a
quantity increase, and trades at once if the new price crosses (under its STP mode: the
REPLACE's ``stp_mode`` if set, else the order's; the ``stp_group`` is the order's). A new
id retires the old one: it is remembered as CANCELLED with its fills, so a cancel of it is
TOO_LATE. QUERY names ``client_order_id`` (or ``orig_client_order_id`` when that is 0) and
answers STATUS with the order's status, cum and leaves.

**Market data** (``venue_md_kernel``), per book in one of two modes, chosen by the feed:

* order mode (from the first ``MD_BOOK_*`` event of the instrument on; quotes and trade
  prints of that instrument are then ignored, they are derived from the same events):
  ``MD_BOOK_ADD`` is an external order (matched, then resting, under its order id);
  ``MD_BOOK_CANCEL`` reduces it in place (no loss of priority); ``MD_BOOK_DELETE`` removes
  it; ``MD_BOOK_EXEC`` of order X at price p for q shares is an aggressor of q shares
  walking X's side in price-time order up to and including X: our orders at better prices,
  and our orders ahead of X at p, fill *instead of* X (what reaches X executes X, the rest
  beyond X is dropped and counted). ``MD_BOOK_HIDDEN_EXEC`` fills ours at better prices
  and those ahead of every external order at p (displayed orders have priority over
  hidden ones).
* the initial book: a feed that starts mid-session (LOBSTER) refers to orders placed
  before its first message. Adds flagged ``MDF_SNAPSHOT`` (order id optional) seed that
  book as anonymous snapshot orders; a cancel, delete or execution of an order id the
  venue never saw at price p is taken from the snapshot orders at p (they are older than
  anything of ours, so ours at p fill only once they are gone; at better prices ours fill).
* quote mode (quotes and trades only): an ``MD_QUOTE`` is one external order per side,
  replacing the previous quote order of that side. At an unchanged price it keeps its place
  in the queue and only its size changes (:func:`queue_model_requeue` decides); at a new
  price it is a new order at the back. How our resting orders fill is the ``quote_fill``
  model (``v[V_QUOTE_FILL]``):

  - ``QF_QUEUE`` (0, default): an ``MD_TRADE`` (side = aggressor, 0 = inferred from the
    book) is an aggressor of its size limited at its price: it consumes the quote order and
    our orders in price-time order, so ours fill once the volume ahead of them traded; a
    quote that crosses ours trades with it like any order.
  - ``QF_TRADE_THROUGH`` (1): without order-level data the queue ahead of ours is unknown,
    so a touch never fills. A trade print strictly through our price (below our bid, above
    our ask; either side when the aggressor is unknown) fills ours at our price, best price
    first, time order within a price, up to the print's size; an opposite quote strictly
    through our price fills ours completely (the market moved through it). Quotes and
    prints never consume the quote orders here (the next quote restates them); a quote that
    touches or crosses the opposite quote order replaces it (the feed moved), and one that
    touches our order rests beside it: the book may be locked at our price, never crossed
    by quote orders.

**Reports** go to the delay queue, never straight out: ``venue_release_kernel`` copies
those due (``ts_venue_ns + latency_ns <= now``) into an output array, oldest first, as many
as fit, numbering them with the caller's ``seq``. One input may therefore produce any
number of reports (a sweep, a cancel-all) while every call stays within its output room.
A report of a request (ACK, REJECTED, CANCELLED, REPLACED, CANCEL_REJECTED, STATUS) copies
the request's ``ts_event_ns`` / ``ts_recv_ns`` / ``ts_order_ns``; a fill or a cancellation
the venue initiates copies those of the order it reports on. ``parent_seq`` is the ``seq``
of the input record (ORDER or MARKET_DATA) that caused the report (0 for cancel-on-
disconnect). ``exec_id`` is assigned at release: it is the report's ``seq`` (the caller's
numbering of the venue's output), so a venue stage's execution ids are as unique as its
output sequence numbers — session-scoped and continued across restarts by the stage loop's
cursors (``docs/protocol.md``, identities). ``order_id`` echoes the order's ``order_id``
(OMS-assigned) or, when that is 0, a venue-assigned id from 1.

Ownership: the arrays belong to the one process (the venue stage, or a replay) that calls
the kernels; nothing here is shared memory.

Limits, each counted in ``v`` and never raised: the pool (``capacity`` orders, ours and
external), ``max_open`` live orders of ours (beyond: REJECTED ``MAX_OPEN_ORDERS``), ``levels``
price levels per side (a new better level evicts the worst level if it holds no order of
ours; otherwise the external order is dropped, or our remainder is cancelled with
``MAX_OPEN_ORDERS``), ``history`` finished orders remembered for duplicate detection and
queries (the oldest is forgotten first), and ``queue`` undelivered reports (a report that
finds the queue full is lost and counted in ``reports_lost``; size it for the worst burst).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from bot4.nbkit.u64map import map_delete, map_find, map_new, map_put
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STATUS,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_SNAPSHOT,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
    OT_LIMIT,
    OT_MARKET,
    OT_NONE,
    SIDE_BUY,
    SIDE_SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEW,
    STP_CANCEL_RESTING,
    STP_DECREMENT,
    STP_NONE,
    TIF_DAY,
    TIF_FOK,
    TIF_IOC,
    TIF_NONE,
)
from bot4.records.errors import Code

__all__ = [
    "ASK",
    "BID",
    "DONE",
    "OWN_EXTERNAL",
    "OWN_OURS",
    "OWN_QUOTE",
    "OWN_SNAPSHOT",
    "RESTING",
    "STATS",
    "Venue",
    "VenueState",
    "QF_QUEUE",
    "QF_TRADE_THROUGH",
    "QUOTE_FILL_NAMES",
    "next_release_ns",
    "queue_model_requeue",
    "venue_cancel_all_kernel",
    "venue_md_event_time_kernel",
    "venue_md_kernel",
    "venue_md_release_kernel",
    "venue_md_until_report_kernel",
    "venue_order_kernel",
    "venue_release_kernel",
]

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


# --- borrowed state ----------------------------------------------------------------------------


@intrinsic
def _unowned(typingctx, arr):
    """The same array view without its NRT meminfo (and parent): references to it are not
    counted. Every helper takes the whole state tuple, and numba increfs / decrefs each of
    its ten arrays around each call (an atomic add each, ~60 ns per call in all); the
    entry kernels hand the helpers borrowed views instead. Safe because the caller (the
    stage or the replay, through :class:`Venue`) keeps the arrays alive for the call.

    Passing the tuple still costs: its ~100 words go by value into every call. The
    per-record market-data path therefore unpacks the arrays once per batch and calls the
    ``_a_*`` helpers, which take only the arrays they use and are inlined
    (``inline="always"``); the ``st`` helpers are thin wrappers around them."""
    if not isinstance(arr, types.Array):
        raise TypeError("_unowned takes an array")

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()

    return arr(arr), codegen


@njit(nogil=True, cache=True)
def _borrow(st):
    """The state with every array borrowed (see :func:`_unowned`)."""
    return VenueState(
        _unowned(st.pool), _unowned(st.free), _unowned(st.levels), _unowned(st.nlev),
        _unowned(st.books), _unowned(st.ours), _unowned(st.ext), _unowned(st.hist),
        _unowned(st.queue), _unowned(st.v),
    )  # fmt: skip


# --- queue-position model hook ---------------------------------------------------------------


@njit(nogil=True, cache=True)
def queue_model_requeue(old_qty, new_qty):
    """Queue-position model hook: does a quote order whose size changes at an unchanged
    price go to the back of its level (True) or keep its place (False)?

    The quote order stands for the whole displayed size at the top of one side; our orders
    behind it fill only once it has traded away. The default keeps its place on every
    change: a decrease is taken to come from ahead of ours (it would be, for a cancel at the
    front), an increase to join ahead of ours too (pessimistic: new orders really join
    behind). A probabilistic queue model (e.g. the share of a decrease that was ahead of
    ours growing with our position) plugs in here, or by splitting the quote order in two
    at our position. Order-level feeds need no model: positions are known exactly.
    """
    return False


# --- id maps (bot4.nbkit.u64map: key in column 0, value in column 1) -------------------------


@njit(nogil=True, cache=True, inline="always")
def _map_set(tab, key, val):
    """Map ``key`` (never 0 here) to ``val``; the maps are sized never to fill (load <= 1/2)."""
    i = map_put(tab, key)
    if i >= 0:
        tab[i, 1] = val


# --- reports ---------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _claim(st, now, pseq, etype, status, reason):
    """Queue slot of a new report with the venue's fields set and every amount zero; -1
    when the queue is full (the report is lost, and counted)."""
    queue = st.queue
    v = st.v
    cap = queue.shape[0]
    tail = v[V_Q_TAIL]
    if tail - v[V_Q_HEAD] >= cap:
        v[S_REPORTS_LOST] += 1
        return -1
    v[V_Q_TAIL] = tail + 1
    v[S_REPORTS] += 1
    if etype == EXEC_REJECTED:
        v[S_REJECTS] += 1
    k = tail & (cap - 1)
    e = queue[k]
    e.seq = 0
    e.parent_seq = pseq
    e.ts_venue_ns = now
    e.exec_id = 0  # assigned at release
    e.exec_type = etype
    e.status = status
    e.reason = reason
    e.last_qty = 0
    e.last_price = 0
    e.fee = 0
    return k


@njit(nogil=True, cache=True)
def _report(st, now, pseq, x, stamps, etype, status, reason, cum, leaves):
    """Queue a report on order ``x`` (an ORDER, RESTING or DONE record: ids, side,
    instrument, strategy) with the stamps of ``stamps`` (ORDER or RESTING). Returns the
    queue slot (to add a fill's amounts) or -1."""
    k = _claim(st, now, pseq, etype, status, reason)
    if k >= 0:
        e = st.queue[k]
        e.client_order_id = x.client_order_id
        e.order_id = x.order_id
        e.side = x.side
        e.instrument = x.instrument
        e.strategy = x.strategy
        e.ts_event_ns = stamps.ts_event_ns
        e.ts_recv_ns = stamps.ts_recv_ns
        e.ts_order_ns = stamps.ts_order_ns
        e.cum_qty = cum
        e.leaves_qty = leaves
    return k


@njit(nogil=True, cache=True)
def _report_own(st, now, pseq, m, etype, status, reason):
    """Queue a report on our order in pool slot ``m``, with its own stamps."""
    o = st.pool[m]
    leaves = 0 if status in (OS_CANCELLED, OS_FILLED) else o.leaves
    return _report(st, now, pseq, o, o, etype, status, reason, o.cum_qty, leaves)


@njit(nogil=True, cache=True)
def _report_fill(st, now, pseq, m, qty, price, fee_per_share):
    """Queue the fill of ``qty`` shares at ``price`` of our order in slot ``m`` (its
    cum_qty / leaves already updated)."""
    done = st.pool[m].leaves == 0
    etype = EXEC_FILL if done else EXEC_PARTIAL_FILL
    k = _report_own(
        st, now, pseq, m, etype, OS_FILLED if done else OS_PARTIALLY_FILLED, np.int64(R_OK)
    )
    if k >= 0:
        e = st.queue[k]
        e.last_qty = qty
        e.last_price = price
        e.fee = fee_per_share * qty
    v = st.v
    v[S_FILLS] += 1
    v[S_FILLED_QTY] += qty


@njit(nogil=True, cache=True)
def _live_status(cum):
    return OS_PARTIALLY_FILLED if cum > 0 else OS_NEW


@njit(nogil=True, cache=True)
def _report_stp(st, now, pseq, m, etype, prevented):
    """Queue a self-trade prevention report on our order in slot ``m`` (its leaves / qty
    already reduced): ``EXEC_STP_EXPIRED`` (status EXPIRED, leaves 0) or
    ``EXEC_STP_DECREMENTED`` (still live), ``prevented_qty`` = the shares this event took
    off the order, reason ``SELF_TRADE``, no fill, no fee."""
    o = st.pool[m]
    expired = etype == EXEC_STP_EXPIRED
    status = OS_EXPIRED if expired else _live_status(o.cum_qty)
    leaves = 0 if expired else o.leaves
    k = _report(st, now, pseq, o, o, etype, status, np.int64(R_SELF_TRADE), o.cum_qty, leaves)
    if k >= 0:
        st.queue[k].prevented_qty = prevented
    v = st.v
    v[S_STP_EXPIRED if expired else S_STP_DECREMENTED] += 1
    v[S_STP_PREVENTED_QTY] += prevented


# --- pool, levels, queues --------------------------------------------------------------------


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def _release_slot(st, m):
    _a_release_slot(st.pool, st.free, st.v, m)


@njit(nogil=True, cache=True, inline="always")
def _a_release_slot(pool, free, v, m):
    pool[m].owner = OWN_FREE
    free[v[V_FREE_TOP]] = m
    v[V_FREE_TOP] += 1


@njit(nogil=True, cache=True)
def _row(side):
    return BID if side == SIDE_BUY else ASK


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def _a_evict_worst(pool, free, levels, nlev, books, ext, v, b, s):
    """Drop the worst level of a full side if it holds no order of ours."""
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


@njit(nogil=True, cache=True)
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
            if j == 0 or not _a_evict_worst(pool, free, levels, nlev, books, ext, v, b, s):
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


@njit(nogil=True, cache=True)
def _resize(st, m, new_leaves):
    """Change the working size of resting slot ``m`` in place (keeps its priority)."""
    _a_resize(st.pool, st.levels, st.nlev, m, new_leaves)


@njit(nogil=True, cache=True, inline="always")
def _a_resize(pool, levels, nlev, m, new_leaves):
    s, j = _a_level_of(pool, levels, nlev, m)
    o = pool[m]
    levels[np.int64(o.instrument), s, j, LQ] += new_leaves - o.leaves
    o.leaves = new_leaves


@njit(nogil=True, cache=True)
def _hist_add(st, x, cum, qty, price, status):
    """Remember a finished order of ours (ids, side, instrument, strategy from record
    ``x``), forgetting the oldest remembered one; maps its client order id there."""
    hist = st.hist
    v = st.v
    h = v[V_HIST_NEXT]
    v[V_HIST_NEXT] = (h + 1) % hist.shape[0]
    e = hist[h]
    code = -(h + 1)
    if e.client_order_id != 0:
        i = map_find(st.ours, e.client_order_id)
        if i >= 0 and st.ours[i, 1] == code:
            map_delete(st.ours, i)
    e.client_order_id = x.client_order_id
    e.order_id = x.order_id
    e.cum_qty = cum
    e.qty = qty
    e.price = price
    e.instrument = x.instrument
    e.strategy = x.strategy
    e.side = x.side
    e.status = status
    _map_set(st.ours, x.client_order_id, code)


@njit(nogil=True, cache=True)
def _retire(st, m, status):
    """Our order in slot ``m`` (unlinked) is done: into the history, slot freed."""
    o = st.pool[m]
    _hist_add(st, o, o.cum_qty, o.qty, o.price, status)
    st.v[V_LIVE_OURS] -= 1
    _release_slot(st, m)


# --- matching --------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _crosses(aside, px, limit):
    return px <= limit if aside == SIDE_BUY else px >= limit


@njit(nogil=True, cache=True)
def _take(st, b, aside, limit, qty, taker, at_limit, stop, now, pseq):
    """An aggressor of side ``aside`` takes up to ``qty`` shares at prices crossing
    ``limit`` from book ``b``, best price first, in time order within a price.

    ``taker`` is the aggressor's pool slot (ours: reports, self-trade prevention;
    external: no reports) or -1 for an execution seen in market data. ``at_limit`` says
    how far into the level at the limit price it may go (AT_LIMIT_*; ``stop`` is the
    named order of AT_LIMIT_UNTIL). Returns the shares left untraded.

    Self-trade prevention: when our taker with a mode other than ``STP_NONE`` meets our
    resting order of its ``stp_group``, :func:`_prevent` applies the taker's mode to that
    order (the one actually met, in priority order; liquidity ahead of it has traded); the
    taker's fills of the level so far are reported first. An expired taker stops here.
    """
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    v = st.v
    ms = ASK if aside == SIDE_BUY else BID
    ours_taker = taker >= 0 and pool[taker].owner == OWN_OURS
    stp_mode = pool[taker].stp_mode if ours_taker else STP_NONE
    stp_group = pool[taker].stp_group if ours_taker else np.uint32(0)
    rem = qty
    while rem > 0 and nlev[b, ms] > 0:
        j = nlev[b, ms] - 1
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if not _crosses(aside, px, limit):
            break
        at_lim = px == limit
        if at_lim and at_limit == AT_LIMIT_NONE:
            break
        done_here = False
        level_fill = np.int64(0)
        m = levels[b, ms, j, LH]
        while m >= 0 and rem > 0:
            o = pool[m]
            nxt = o.next
            if at_lim and (
                (at_limit == AT_LIMIT_FRONT and o.owner != OWN_OURS)
                or (at_limit == AT_LIMIT_SNAPSHOT and o.owner != OWN_SNAPSHOT)
            ):
                done_here = True
                break
            if stp_mode != STP_NONE and o.owner == OWN_OURS and o.stp_group == stp_group:
                if level_fill > 0:
                    _taker_fill(st, taker, level_fill, px, now, pseq)
                    level_fill = np.int64(0)
                rem = _prevent(st, m, taker, stp_mode, now, pseq)
                if rem == 0:
                    done_here = True
                    break
                m = nxt
                continue
            f = min(rem, o.leaves)
            o.leaves -= f
            levels[b, ms, j, LQ] -= f
            rem -= f
            level_fill += f
            if o.owner == OWN_OURS:
                o.cum_qty += f
                if ours_taker:
                    v[S_OWN_TRADED] += f
                _report_fill(st, now, pseq, m, f, px, v[V_MAKER_FEE])
                if o.leaves == 0:
                    _unlink(st, m)
                    _retire(st, m, np.int64(OS_FILLED))
            else:
                if not ours_taker:
                    v[S_EXT_TRADED] += f
                if o.leaves == 0:
                    _unlink(st, m)
                    _discard_external(st, m)
            if at_lim and at_limit == AT_LIMIT_UNTIL and m == stop:
                done_here = True
                break
            m = nxt
        if taker >= 0 and level_fill > 0:
            if ours_taker:
                _taker_fill(st, taker, level_fill, px, now, pseq)
            else:
                pool[taker].leaves -= level_fill
        if done_here:
            break
    return rem


@njit(nogil=True, cache=True)
def _taker_fill(st, taker, qty, px, now, pseq):
    """Our taker in slot ``taker`` filled ``qty`` shares at ``px``: book it, report it."""
    t = st.pool[taker]
    t.leaves -= qty
    t.cum_qty += qty
    _report_fill(st, now, pseq, taker, qty, px, st.v[V_TAKER_FEE])


@njit(nogil=True, cache=True)
def _stp_expire_resting(st, m, prevented, now, pseq):
    """Our resting order in slot ``m`` expires by self-trade prevention."""
    _unlink(st, m)
    _report_stp(st, now, pseq, m, np.int64(EXEC_STP_EXPIRED), prevented)
    _retire(st, m, np.int64(OS_EXPIRED))


@njit(nogil=True, cache=True)
def _stp_expire_taker(st, taker, prevented, now, pseq):
    """Our taker in slot ``taker`` (not resting) expires: reported now, retired EXPIRED by
    its caller (``RF_STP_EXPIRED``)."""
    t = st.pool[taker]
    t.leaves = 0
    t.flags |= RF_STP_EXPIRED
    _report_stp(st, now, pseq, taker, np.int64(EXEC_STP_EXPIRED), prevented)


@njit(nogil=True, cache=True)
def _prevent(st, m, taker, mode, now, pseq):
    """Our taker (slot ``taker``, mode ``mode``) meets our resting order in slot ``m`` of
    its STP group: a prevented match. Reports go resting order first, then taker. Returns
    what the taker has left (0: it expired, matching stops).

    ``STP_CANCEL_RESTING``: the resting order expires (prevented = its leaves), the taker
    goes on. ``STP_CANCEL_NEW``: the taker expires (prevented = its leaves), the resting
    order stays untouched. ``STP_CANCEL_BOTH``: both expire. ``STP_DECREMENT``: both are
    reduced by ``d = min(both leaves)`` (their ``qty`` too, so ``leaves = qty - cum``
    holds); one that reaches 0 expires (both when equal), the other is reported
    ``EXEC_STP_DECREMENTED``; the taker goes on if it has shares left."""
    pool = st.pool
    o = pool[m]
    t = pool[taker]
    st.v[S_STP_MATCHES] += 1
    if mode == STP_CANCEL_RESTING:
        _stp_expire_resting(st, m, o.leaves, now, pseq)
        return t.leaves
    if mode == STP_CANCEL_NEW:
        _stp_expire_taker(st, taker, t.leaves, now, pseq)
        return np.int64(0)
    if mode == STP_CANCEL_BOTH:
        _stp_expire_resting(st, m, o.leaves, now, pseq)
        _stp_expire_taker(st, taker, t.leaves, now, pseq)
        return np.int64(0)
    d = min(o.leaves, t.leaves)  # STP_DECREMENT
    if d == o.leaves:
        _stp_expire_resting(st, m, d, now, pseq)
    else:
        _resize(st, m, o.leaves - d)
        o.qty -= d
        _report_stp(st, now, pseq, m, np.int64(EXEC_STP_DECREMENTED), d)
    if d == t.leaves:
        t.qty -= d
        _stp_expire_taker(st, taker, d, now, pseq)
        return np.int64(0)
    t.leaves -= d
    t.qty -= d
    _report_stp(st, now, pseq, taker, np.int64(EXEC_STP_DECREMENTED), d)
    return t.leaves


@njit(nogil=True, cache=True)
def _through(st, b, aside, limit, qty, now, pseq):
    """Trade-through fills (``QF_TRADE_THROUGH``): an aggressor of side ``aside`` at price
    ``limit`` fills our resting orders on the other side at prices strictly better than
    ``limit`` (ours only: other participants' liquidity is neither consumed nor in the way),
    best price first, time order within a price, at our price, up to ``qty`` shares.
    Returns the shares left."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    v = st.v
    ms = ASK if aside == SIDE_BUY else BID
    rem = qty
    j = nlev[b, ms] - 1
    while j >= 0 and rem > 0:
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if (ms == BID and px <= limit) or (ms == ASK and px >= limit):
            break
        m = levels[b, ms, j, LH]
        while m >= 0 and rem > 0:
            o = pool[m]
            nxt = o.next
            if o.owner == OWN_OURS:
                f = min(rem, o.leaves)
                o.leaves -= f
                o.cum_qty += f
                levels[b, ms, j, LQ] -= f
                rem -= f
                _report_fill(st, now, pseq, m, f, px, v[V_MAKER_FEE])
                if o.leaves == 0:
                    _unlink(st, m)  # an emptied level goes; the worse ones keep their index
                    _retire(st, m, np.int64(OS_FILLED))
            m = nxt
        j -= 1
    return rem


@njit(nogil=True, cache=True)
def _quote_through(st, b, side, price, qty, now, pseq):
    """A new quote order in ``QF_TRADE_THROUGH`` mode: fill ours strictly through its price
    completely, drop the opposite quote order it touches or crosses, rest it unmatched.
    Returns its slot or -1."""
    books = st.books
    v = st.v
    _through(st, b, np.int64(side), price, np.int64(2**62), now, pseq)
    opp = books[b, BK_QUOTE + (ASK if side == SIDE_BUY else BID)]
    if opp >= 0:
        op = st.pool[opp].price
        if (side == SIDE_BUY and op <= price) or (side == SIDE_SELL and op >= price):
            _unlink(st, opp)
            _discard_external(st, opp)
    m = _alloc(st)
    if m < 0:
        v[S_EXT_DROPPED] += 1
        return -1
    o = st.pool[m]
    o.price = price
    o.leaves = qty
    o.qty = qty
    o.ext_id = 0
    o.instrument = b
    o.side = side
    o.owner = OWN_QUOTE
    if not _append(st, m):
        v[S_EXT_DROPPED] += 1
        _release_slot(st, m)
        return -1
    return m


@njit(nogil=True, cache=True)
def _available(st, b, aside, limit, want, mode, group):
    """Shares our aggressor (STP ``mode``, ``group``) could *fill* up to ``limit``, in
    priority order (stops counting at ``want``): prevented quantity is not filled. Our
    resting orders of ``group`` are skipped under ``STP_CANCEL_RESTING`` (they would
    expire) and end the count under the other modes (the taker expires or is
    decremented there); under ``STP_NONE``, and for other groups, they are liquidity."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    ms = ASK if aside == SIDE_BUY else BID
    total = 0
    for j in range(nlev[b, ms] - 1, -1, -1):
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if not _crosses(aside, px, limit):
            break
        m = levels[b, ms, j, LH]
        while m >= 0:
            o = pool[m]
            if mode != STP_NONE and o.owner == OWN_OURS and o.stp_group == group:
                if mode != STP_CANCEL_RESTING:
                    return total
            else:
                total += o.leaves
                if total >= want:
                    return total
            m = o.next
    return total


@njit(nogil=True, cache=True)
def _work(st, m, tif, now, pseq):
    """Our order in slot ``m`` (not resting) trades what it can, then rests or ends."""
    o = st.pool[m]
    b = np.int64(o.instrument)
    _take(
        st,
        b,
        np.int64(o.side),
        o.price,
        o.leaves,
        m,
        np.int64(AT_LIMIT_ALL),
        np.int64(-1),
        now,
        pseq,
    )
    if o.leaves == 0:
        _retire(st, m, OS_EXPIRED if o.flags & RF_STP_EXPIRED else OS_FILLED)
        return
    reason = R_OK
    if tif != TIF_IOC and tif != TIF_FOK:
        if _append(st, m):
            return
        reason = R_MAX_OPEN
    _report_own(st, now, pseq, m, np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), reason)
    _retire(st, m, np.int64(OS_CANCELLED))


# --- our orders ------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _reject(st, now, r, reason, remember):
    """REJECTED for request ``r``; remembered (so a repeat is a duplicate) if asked."""
    _report(
        st,
        now,
        r.seq,
        r,
        r,
        np.int64(EXEC_REJECTED),
        np.int64(OS_REJECTED),
        reason,
        np.int64(0),
        np.int64(0),
    )
    if remember:
        _hist_add(st, r, np.int64(0), r.qty, r.limit_price, np.int64(OS_REJECTED))


@njit(nogil=True, cache=True)
def _on_new(st, r, now):
    pool = st.pool
    v = st.v
    nbooks = st.nlev.shape[0]
    clid = r.client_order_id
    if clid == 0:
        _reject(st, now, r, np.int64(R_VENUE_REJECTED), np.bool_(False))
        return
    if map_find(st.ours, clid) >= 0:
        _reject(st, now, r, np.int64(R_DUPLICATE), np.bool_(False))
        return
    tif = r.tif if r.tif != TIF_NONE else TIF_DAY
    limit = r.limit_price
    reason = R_OK
    if r.instrument == 0 or r.instrument >= nbooks:
        reason = R_UNKNOWN_INSTRUMENT
    elif r.side != SIDE_BUY and r.side != SIDE_SELL:
        reason = R_VENUE_REJECTED
    elif r.qty <= 0:
        reason = R_INVALID_QTY
    elif tif > TIF_FOK:
        reason = R_VENUE_REJECTED
    elif r.order_type == OT_MARKET:
        limit = _MARKET_BUY_LIMIT if r.side == SIDE_BUY else np.int64(0)
        if tif != TIF_FOK:
            tif = TIF_IOC
    elif r.order_type != OT_LIMIT and r.order_type != OT_NONE:
        reason = R_VENUE_REJECTED
    elif limit <= 0:
        reason = R_NEGATIVE_PRICE
    stp = r.stp_mode if r.stp_mode != STP_NONE else v[V_STP_DEFAULT]
    if reason == R_OK and not _stp_allowed(v, r.stp_mode):
        reason = R_VENUE_REJECTED
    if reason == R_OK and (v[V_FREE_TOP] == 0 or v[V_LIVE_OURS] >= v[V_MAX_OPEN]):
        reason = R_MAX_OPEN
    if reason != R_OK:
        _reject(st, now, r, reason, np.bool_(True))
        return
    m = _alloc(st)
    o = pool[m]
    o.price = limit
    o.leaves = r.qty
    o.qty = r.qty
    o.client_order_id = clid
    if r.order_id != 0:
        o.order_id = r.order_id
    else:
        v[V_ORDER_ID] += 1
        o.order_id = np.uint64(v[V_ORDER_ID])
    o.ts_event_ns = r.ts_event_ns
    o.ts_recv_ns = r.ts_recv_ns
    o.ts_order_ns = r.ts_order_ns
    o.instrument = r.instrument
    o.strategy = r.strategy
    o.side = r.side
    o.tif = tif
    o.owner = OWN_OURS
    o.stp_mode = stp
    o.stp_group = r.stp_group
    _map_set(st.ours, clid, m)
    v[V_LIVE_OURS] += 1
    _report_own(st, now, r.seq, m, np.int64(EXEC_ACK), np.int64(OS_NEW), np.int64(R_OK))
    b = np.int64(r.instrument)
    if tif == TIF_FOK and (
        _available(st, b, np.int64(o.side), limit, o.leaves, o.stp_mode, o.stp_group) < o.leaves
    ):
        _report_own(
            st, now, r.seq, m, np.int64(EXEC_CANCELLED), np.int64(OS_CANCELLED), np.int64(R_OK)
        )
        _retire(st, m, np.int64(OS_CANCELLED))
        return
    _work(st, m, np.int64(tif), now, r.seq)


@njit(nogil=True, cache=True)
def _stp_allowed(v, mode):
    """May an order carry STP ``mode``? 0 (the venue's default) always may."""
    if mode == STP_NONE:
        return True
    if mode > STP_DECREMENT:
        return False
    return (v[V_STP_ALLOWED] >> np.int64(mode)) & 1 == 1


@njit(nogil=True, cache=True)
def _live_slot(st, clid):
    """Pool slot of our live order ``clid``, or -1."""
    i = map_find(st.ours, clid)
    if i < 0 or st.ours[i, 1] < 0:
        return -1
    return st.ours[i, 1]


@njit(nogil=True, cache=True)
def _answer(st, now, r, target, etype, reason_live, reason_done, reason_unknown):
    """Report ``etype`` on ``target`` as the venue knows it, answering request ``r``: a
    live order (``reason_live``), a finished one (``reason_done``; leaves 0) or an unknown
    id (status OS_NONE, ``reason_unknown``, ids and side from the request)."""
    i = map_find(st.ours, target)
    if i < 0:
        k = _report(
            st, now, r.seq, r, r, etype, np.int64(OS_NONE), reason_unknown, np.int64(0), np.int64(0)
        )
        if k >= 0:
            st.queue[k].client_order_id = target
        return
    val = st.ours[i, 1]
    if val < 0:
        h = st.hist[-val - 1]
        _report(
            st, now, r.seq, h, r, etype, np.int64(h.status), reason_done, h.cum_qty, np.int64(0)
        )
        return
    o = st.pool[val]
    _report(st, now, r.seq, o, r, etype, _live_status(o.cum_qty), reason_live, o.cum_qty, o.leaves)


@njit(nogil=True, cache=True)
def _on_cancel(st, r, now):
    target = r.orig_client_order_id
    m = _live_slot(st, target)
    if m < 0:
        _answer(
            st,
            now,
            r,
            target,
            np.int64(EXEC_CANCEL_REJECTED),
            np.int64(R_OK),
            np.int64(R_TOO_LATE),
            np.int64(R_UNKNOWN_ORDER),
        )
        return
    o = st.pool[m]
    _unlink(st, m)
    _report(
        st,
        now,
        r.seq,
        o,
        r,
        np.int64(EXEC_CANCELLED),
        np.int64(OS_CANCELLED),
        np.int64(R_OK),
        o.cum_qty,
        np.int64(0),
    )
    _retire(st, m, np.int64(OS_CANCELLED))


@njit(nogil=True, cache=True)
def _refuse_replace(st, now, r, target, reason):
    _answer(
        st,
        now,
        r,
        target,
        np.int64(EXEC_CANCEL_REJECTED),
        reason,
        np.int64(R_TOO_LATE),
        np.int64(R_UNKNOWN_ORDER),
    )


@njit(nogil=True, cache=True)
def _on_replace(st, r, now):
    target = r.orig_client_order_id
    m = _live_slot(st, target)
    if m < 0:
        _refuse_replace(st, now, r, target, np.int64(R_OK))
        return
    o = st.pool[m]
    new_id = r.client_order_id if r.client_order_id != 0 else target
    if new_id != target and map_find(st.ours, new_id) >= 0:
        _refuse_replace(st, now, r, target, np.int64(R_DUPLICATE))
        return
    qty = r.qty if r.qty > 0 else o.qty
    price = r.limit_price if r.limit_price > 0 else o.price
    if qty <= o.cum_qty:
        _refuse_replace(st, now, r, target, np.int64(R_INVALID_QTY))
        return
    if not _stp_allowed(st.v, r.stp_mode):
        _refuse_replace(st, now, r, target, np.int64(R_VENUE_REJECTED))
        return
    if r.stp_mode != STP_NONE:
        o.stp_mode = r.stp_mode
    if new_id != target:
        _hist_add(st, o, o.cum_qty, o.qty, o.price, np.int64(OS_CANCELLED))
        _map_set(st.ours, new_id, m)
        o.client_order_id = new_id
    o.ts_event_ns = r.ts_event_ns
    o.ts_recv_ns = r.ts_recv_ns
    o.ts_order_ns = r.ts_order_ns
    status = _live_status(o.cum_qty)
    if price != o.price or qty > o.qty:
        _unlink(st, m)
        o.price = price
        o.qty = qty
        o.leaves = qty - o.cum_qty
        _report_own(st, now, r.seq, m, np.int64(EXEC_REPLACED), status, np.int64(R_OK))
        _work(st, m, np.int64(o.tif), now, r.seq)
        return
    _resize(st, m, qty - o.cum_qty)
    o.qty = qty
    _report_own(st, now, r.seq, m, np.int64(EXEC_REPLACED), status, np.int64(R_OK))


@njit(nogil=True, cache=True)
def _on_query(st, r, now):
    target = r.client_order_id if r.client_order_id != 0 else r.orig_client_order_id
    _answer(
        st,
        now,
        r,
        target,
        np.int64(EXEC_STATUS),
        np.int64(R_OK),
        np.int64(R_OK),
        np.int64(R_UNKNOWN_ORDER),
    )


@njit(nogil=True, cache=True)
def _cancel_ours(st, m, now, pseq, reason, stamps, own_stamps):
    """Cancel our resting order in slot ``m``; the report carries the stamps of record
    ``stamps``, or the order's own (``own_stamps``)."""
    o = st.pool[m]
    _unlink(st, m)
    if own_stamps:
        _report(
            st,
            now,
            pseq,
            o,
            o,
            np.int64(EXEC_CANCELLED),
            np.int64(OS_CANCELLED),
            reason,
            o.cum_qty,
            np.int64(0),
        )
    else:
        _report(
            st,
            now,
            pseq,
            o,
            stamps,
            np.int64(EXEC_CANCELLED),
            np.int64(OS_CANCELLED),
            reason,
            o.cum_qty,
            np.int64(0),
        )
    _retire(st, m, np.int64(OS_CANCELLED))


@njit(nogil=True, cache=True)
def _cancel_all(st, inst, now, pseq, reason, stamps, own_stamps):
    """Cancel every resting order of ours in book ``inst`` (0 = every book), book by book,
    bids then asks, best level first, time order within a level (see _cancel_ours for the
    stamps). Returns the number cancelled."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    n = 0
    lo = 1 if inst == 0 else inst
    hi = nlev.shape[0] if inst == 0 else min(inst + 1, nlev.shape[0])
    for b in range(lo, hi):
        for s in range(2):
            for j in range(nlev[b, s] - 1, -1, -1):
                m = levels[b, s, j, LH]
                while m >= 0:
                    nxt = pool[m].next
                    if pool[m].owner == OWN_OURS:
                        _cancel_ours(st, m, now, pseq, reason, stamps, own_stamps)
                        n += 1
                    m = nxt
    return n


@njit(nogil=True, cache=True)
def venue_order_kernel(st, orders, now_ns):
    """Handle ORDER records in order (NEW, CANCEL, REPLACE, QUERY, CANCEL_ALL); reports
    go to the delay queue. Returns the number of reports queued."""
    v = st.v
    before = v[S_REPORTS]
    for i in range(orders.shape[0]):
        r = orders[i]
        v[S_ORDERS_IN] += 1
        a = r.action
        if a == ACTION_NEW:
            _on_new(st, r, now_ns)
        elif a == ACTION_CANCEL:
            _on_cancel(st, r, now_ns)
        elif a == ACTION_REPLACE:
            _on_replace(st, r, now_ns)
        elif a == ACTION_QUERY:
            _on_query(st, r, now_ns)
        elif a == ACTION_CANCEL_ALL:
            _cancel_all(
                st, np.int64(r.instrument), now_ns, r.seq, np.int64(R_OK), r, np.bool_(False)
            )
        else:
            _reject(st, now_ns, r, np.int64(R_VENUE_REJECTED), np.bool_(False))
    return v[S_REPORTS] - before


@njit(nogil=True, cache=True)
def venue_cancel_all_kernel(st, instrument, now_ns, reason):
    """Cancel every resting order of ours (``instrument`` 0 = all books), e.g. when the
    orders stage stops beating. Reports carry ``reason``, each order's own stamps and
    ``parent_seq`` 0. Returns the number of orders cancelled."""
    return _cancel_all(st, instrument, now_ns, np.uint64(0), reason, st.pool[0], np.bool_(True))


# --- market data -----------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _set_mode(st, b, mode):
    books = st.books
    if books[b, BK_MODE] == mode:
        return
    if mode == MODE_ORDERS:
        for s in range(2):
            q = books[b, BK_QUOTE + s]
            if q >= 0:
                _unlink(st, q)
                _discard_external(st, q)
    books[b, BK_MODE] = mode


@njit(nogil=True, cache=True)
def _external(st, b, side, price, qty, owner, ext_id, now, pseq):
    """A new external / quote order: trades, then rests. Returns its slot or -1."""
    v = st.v
    m = _alloc(st)
    if m < 0:
        v[S_EXT_DROPPED] += 1
        return -1
    o = st.pool[m]
    o.price = price
    o.leaves = qty
    o.qty = qty
    o.ext_id = ext_id
    o.instrument = b
    o.side = side
    o.owner = owner
    _take(st, b, np.int64(side), price, qty, m, np.int64(AT_LIMIT_ALL), np.int64(-1), now, pseq)
    if o.leaves == 0:
        _release_slot(st, m)
        return -1
    if not _append(st, m):
        v[S_EXT_DROPPED] += 1
        _release_slot(st, m)
        return -1
    return m


@njit(nogil=True, cache=True)
def _shrink_snapshot(st, b, side, price, qty):
    """A cancel / delete of an order the venue never saw: taken from the initial-book
    (snapshot) orders at that price, front first."""
    pool = st.pool
    levels = st.levels
    nlev = st.nlev
    s = _row(side)
    key = price if s == BID else -price
    j = _level_pos(levels, nlev, b, s, key)
    if j >= nlev[b, s] or levels[b, s, j, LK] != key:
        return
    m = levels[b, s, j, LH]
    while m >= 0 and qty > 0:
        nxt = pool[m].next
        if pool[m].owner == OWN_SNAPSHOT:
            f = min(qty, pool[m].leaves)
            qty -= f
            if f == pool[m].leaves:
                _unlink(st, m)
                _discard_external(st, m)
            else:
                _resize(st, m, pool[m].leaves - f)
        m = nxt


@njit(nogil=True, cache=True)
def _md_one(st, r, now):
    v = st.v
    books = st.books
    nbooks = books.shape[0]
    k = r.kind
    b = np.int64(r.instrument)
    side = r.side
    if b <= 0 or b >= nbooks or (side != SIDE_BUY and side != SIDE_SELL and k != MD_TRADE):
        v[S_MD_IGNORED] += 1
        return
    if MD_BOOK_ADD <= k <= MD_BOOK_HIDDEN_EXEC:
        _set_mode(st, b, np.int64(MODE_ORDERS))
        idx = map_find(st.ext, r.order_id) if r.order_id != 0 else -1
        if k == MD_BOOK_ADD:
            snapshot = (r.flags & MDF_SNAPSHOT) != 0
            if (r.order_id == 0 and not snapshot) or r.qty <= 0 or r.price <= 0:
                v[S_MD_IGNORED] += 1
                return
            if idx >= 0:
                old = st.ext[idx, 1]
                _unlink(st, old)
                _discard_external(st, old)
                v[S_EXT_DUPLICATE] += 1
            owner = OWN_SNAPSHOT if snapshot else OWN_EXTERNAL
            m = _external(st, b, side, r.price, r.qty, owner, r.order_id, now, r.seq)
            if m >= 0:
                if r.order_id != 0:
                    _map_set(st.ext, r.order_id, m)
                v[S_EXT_ADDED] += 1
        elif k in (MD_BOOK_CANCEL, MD_BOOK_DELETE):
            if idx < 0:
                v[S_EXT_UNKNOWN] += 1
                _shrink_snapshot(st, b, np.int64(side), r.price, r.qty)
                return
            m = st.ext[idx, 1]
            if k == MD_BOOK_DELETE or r.qty >= st.pool[m].leaves:
                _unlink(st, m)
                _discard_external(st, m)
            elif r.qty > 0:
                _resize(st, m, st.pool[m].leaves - r.qty)
        elif k == MD_BOOK_EXEC and idx >= 0:
            x = st.ext[idx, 1]
            o = st.pool[x]
            rem = _take(
                st,
                b,
                -np.int64(o.side),
                o.price,
                r.qty,
                np.int64(-1),
                np.int64(AT_LIMIT_UNTIL),
                x,
                now,
                r.seq,
            )
            v[S_EXEC_EXCESS] += rem
        else:
            if k == MD_BOOK_EXEC:
                v[S_EXT_UNKNOWN] += 1
            mode = AT_LIMIT_SNAPSHOT if k == MD_BOOK_EXEC else AT_LIMIT_FRONT
            _take(
                st, b, -np.int64(side), r.price, r.qty, np.int64(-1), mode, np.int64(-1), now, r.seq
            )
        return
    if k != MD_QUOTE and k != MD_TRADE:
        v[S_MD_IGNORED] += 1
        return
    if books[b, BK_MODE] == MODE_ORDERS:
        v[S_MD_IGNORED] += 1
        return
    _set_mode(st, b, np.int64(MODE_QUOTES))
    through = v[V_QUOTE_FILL] == QF_TRADE_THROUGH
    if k == MD_TRADE and through:
        if r.qty > 0 and r.price > 0:
            if side in (SIDE_BUY, SIDE_SELL):
                _through(st, b, np.int64(side), r.price, r.qty, now, r.seq)
            else:
                rem = _through(st, b, np.int64(SIDE_BUY), r.price, r.qty, now, r.seq)
                _through(st, b, np.int64(SIDE_SELL), r.price, rem, now, r.seq)
        return
    if k == MD_TRADE:
        aside = np.int64(side)
        if aside != SIDE_BUY and aside != SIDE_SELL:
            nlev = st.nlev
            levels = st.levels
            if nlev[b, ASK] > 0 and -levels[b, ASK, nlev[b, ASK] - 1, LK] <= r.price:
                aside = SIDE_BUY
            elif nlev[b, BID] > 0 and levels[b, BID, nlev[b, BID] - 1, LK] >= r.price:
                aside = SIDE_SELL
            else:
                v[S_MD_IGNORED] += 1
                return
        if r.qty > 0:
            _take(
                st,
                b,
                aside,
                r.price,
                r.qty,
                np.int64(-1),
                np.int64(AT_LIMIT_ALL),
                np.int64(-1),
                now,
                r.seq,
            )
        return
    s = _row(side)
    old = books[b, BK_QUOTE + s]
    if r.qty <= 0 or r.price <= 0:
        if old >= 0:
            _unlink(st, old)
            _discard_external(st, old)
        return
    if old >= 0 and st.pool[old].price == r.price:
        o = st.pool[old]
        if r.qty != o.leaves:
            if queue_model_requeue(o.leaves, r.qty):
                _unlink(st, old)
                o.leaves = r.qty
                if not _append(st, old):
                    _discard_external(st, old)
            else:
                _resize(st, old, r.qty)
        return
    if old >= 0:
        _unlink(st, old)
        _discard_external(st, old)
    if through:
        m = _quote_through(st, b, side, r.price, r.qty, now, r.seq)
    else:
        m = _external(st, b, side, r.price, r.qty, np.int64(OWN_QUOTE), np.uint64(0), now, r.seq)
    if m >= 0:
        books[b, BK_QUOTE + s] = m


@njit(nogil=True, cache=True, inline="always")
def _ours_through(pool, levels, nlev, b, aside, limit):
    """Would :func:`_through` (aside, limit, any size > 0) fill anything: is an order of
    ours resting at a price strictly through ``limit``? Same walk, no change."""
    ms = ASK if aside == SIDE_BUY else BID
    j = nlev[b, ms] - 1
    while j >= 0:
        key = levels[b, ms, j, LK]
        px = key if ms == BID else -key
        if (ms == BID and px <= limit) or (ms == ASK and px >= limit):
            return False
        m = levels[b, ms, j, LH]
        while m >= 0:
            if pool[m].owner == OWN_OURS:
                return True
            m = pool[m].next
        j -= 1
    return False


@njit(nogil=True, cache=True, inline="always")
def _md_quote_fast(pool, free, levels, nlev, books, ext, v, r):
    """The quote-mode records that touch no order of ours, on the unpacked arrays (no
    call with the whole state tuple): exactly what :func:`_md_one` does for them. Returns
    False, having changed nothing, for every other record (order-level events, queue-mode
    prints, a quote or print that would fill or trade with something): :func:`_md_one`
    handles those."""
    k = r.kind
    if k != MD_QUOTE and k != MD_TRADE:
        return False
    b = np.int64(r.instrument)
    side = r.side
    if b <= 0 or b >= books.shape[0] or books[b, BK_MODE] == MODE_ORDERS:
        return False
    through = v[V_QUOTE_FILL] == QF_TRADE_THROUGH
    if k == MD_TRADE:
        if not through:
            return False
        if r.qty > 0 and r.price > 0:
            if side in (SIDE_BUY, SIDE_SELL):
                if _ours_through(pool, levels, nlev, b, np.int64(side), r.price):
                    return False
            elif _ours_through(pool, levels, nlev, b, np.int64(SIDE_BUY), r.price) or (
                _ours_through(pool, levels, nlev, b, np.int64(SIDE_SELL), r.price)
            ):
                return False
        books[b, BK_MODE] = MODE_QUOTES
        return True
    if side != SIDE_BUY and side != SIDE_SELL:
        return False
    s = _row(side)
    old = books[b, BK_QUOTE + s]
    price = r.price
    qty = r.qty
    if qty <= 0 or price <= 0:
        books[b, BK_MODE] = MODE_QUOTES
        if old >= 0:
            _a_unlink(pool, levels, nlev, old)
            _a_discard_external(pool, free, books, ext, v, old)
        return True
    if old >= 0 and pool[old].price == price:
        books[b, BK_MODE] = MODE_QUOTES
        o = pool[old]
        if qty != o.leaves:
            if queue_model_requeue(o.leaves, qty):
                _a_unlink(pool, levels, nlev, old)
                o.leaves = qty
                if not _a_append(pool, free, levels, nlev, books, ext, v, old):
                    _a_discard_external(pool, free, books, ext, v, old)
            else:
                _a_resize(pool, levels, nlev, old, qty)
        return True
    # a quote order at a new price: the opposite side decides whether ours are in play
    if through:
        if _ours_through(pool, levels, nlev, b, np.int64(side), price):
            return False
    else:
        ms = ASK if side == SIDE_BUY else BID
        if nlev[b, ms] > 0:
            key = levels[b, ms, nlev[b, ms] - 1, LK]
            if _crosses(np.int64(side), key if ms == BID else -key, price):
                return False  # it trades (_take)
    books[b, BK_MODE] = MODE_QUOTES
    if old >= 0:
        _a_unlink(pool, levels, nlev, old)
        _a_discard_external(pool, free, books, ext, v, old)
    if through:  # _quote_through: the opposite quote order it touches or crosses goes
        opp = books[b, BK_QUOTE + (ASK if side == SIDE_BUY else BID)]
        if opp >= 0:
            op = pool[opp].price
            if (side == SIDE_BUY and op <= price) or (side == SIDE_SELL and op >= price):
                _a_unlink(pool, levels, nlev, opp)
                _a_discard_external(pool, free, books, ext, v, opp)
    m = _a_alloc(pool, free, v)
    if m < 0:
        v[S_EXT_DROPPED] += 1
        return True
    o = pool[m]
    o.price = price
    o.leaves = qty
    o.qty = qty
    o.ext_id = 0
    o.instrument = b
    o.side = side
    o.owner = OWN_QUOTE
    if not _a_append(pool, free, levels, nlev, books, ext, v, m):
        v[S_EXT_DROPPED] += 1
        _a_release_slot(pool, free, v, m)
        return True
    books[b, BK_QUOTE + s] = m
    return True


@njit(nogil=True, cache=True)
def _md_batch(st, md, now_ns, event_time, until_report):
    """MARKET_DATA records in order: the common quote-mode cases on the unpacked arrays
    (:func:`_md_quote_fast`), the rest through :func:`_md_one`, each at ``now_ns`` or, with
    ``event_time``, at its own ``ts_event_ns`` (``now_ns`` when it has none). With
    ``until_report``, stops after the first record that queued a report. Returns the
    records applied. The one copy of the per-record loop every market data kernel calls
    (with non-literal flags: numba compiles a callee once per literal argument value)."""
    st = _borrow(st)
    pool = st.pool
    free = st.free
    levels = st.levels
    nlev = st.nlev
    books = st.books
    ext = st.ext
    v = st.v
    for i in range(md.shape[0]):
        v[S_MD_IN] += 1
        r = md[i]
        if _md_quote_fast(pool, free, levels, nlev, books, ext, v, r):
            continue
        now = now_ns
        if event_time:
            t = r.ts_event_ns
            now = t if t > 0 else now_ns
        before = v[S_REPORTS]
        _md_one(st, r, now)
        if until_report and v[S_REPORTS] != before:
            return i + 1
    return md.shape[0]


@njit(nogil=True, cache=True)
def venue_md_until_report_kernel(st, md, now_ns):
    """``venue_md_event_time_kernel`` that stops after the first record that queued a
    report (a fill of ours): returns the records applied (``md.shape[0]`` when none
    did). The event-exact replay applies a window of market data in one call this way
    and learns, at the record that caused it, when the next report is due: nothing else
    can reach the venue before then (``bot4.replay.engine``)."""
    return _md_batch(st, md, now_ns, np.bool_(True), np.bool_(True))


@njit(nogil=True, cache=True)
def venue_md_kernel(st, md, now_ns):
    """Apply MARKET_DATA records in order (other participants' liquidity, see the module
    doc); fills of our resting orders go to the delay queue. Returns reports queued."""
    before = st.v[S_REPORTS]
    _md_batch(st, md, now_ns, np.bool_(False), np.bool_(False))
    return st.v[S_REPORTS] - before


@njit(nogil=True, cache=True)
def venue_md_event_time_kernel(st, md, now_ns):
    """``venue_md_kernel`` on the exchange's clock: each record is applied at its own
    ``ts_event_ns`` (``now_ns`` for a record without one), so the reports it causes carry
    that ``ts_venue_ns``. For replays, where the venue is the exchange that produced the
    data. Returns reports queued."""
    before = st.v[S_REPORTS]
    _md_batch(st, md, now_ns, np.bool_(True), np.bool_(False))
    return st.v[S_REPORTS] - before


@njit(nogil=True, cache=True)
def venue_md_release_kernel(st, md, now_ns, event_time, out, seq):
    """``venue_md_event_time_kernel`` (``event_time``) or ``venue_md_kernel``, then
    ``venue_release_kernel`` into ``out`` at ``now_ns``, in one call (the stage's market
    data path without a heartbeat watch). Returns the reports released."""
    _md_batch(st, md, now_ns, event_time, np.bool_(False))
    return venue_release_kernel(st, out, now_ns, seq)


@njit(nogil=True, cache=True)
def _md_reference_kernel(st, md, now_ns, event_time):
    """Every record through :func:`_md_one` (no fast path): the reference the tests hold
    :func:`venue_md_kernel` and :func:`venue_md_event_time_kernel` to, state and reports."""
    st = _borrow(st)
    v = st.v
    before = v[S_REPORTS]
    for i in range(md.shape[0]):
        v[S_MD_IN] += 1
        t = md[i].ts_event_ns
        _md_one(st, md[i], t if event_time and t > 0 else now_ns)
    return v[S_REPORTS] - before


def next_release_ns(st) -> int:
    """When the oldest undelivered report becomes due (ns, the kernels' clock), or -1 when
    the delay queue is empty. Python (a replay's scheduler), not a kernel."""
    v = st.v
    head, tail = int(v[V_Q_HEAD]), int(v[V_Q_TAIL])
    if head >= tail:
        return -1
    q = st.queue
    return int(q["ts_venue_ns"][head & (q.shape[0] - 1)]) + int(v[V_LATENCY])


# --- delay queue -----------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def venue_release_kernel(st, out, now_ns, seq):
    """Move the reports due at ``now_ns`` (oldest first, as many as ``out`` holds) into
    ``out``, numbering them ``seq, seq + 1, ...``; a report's ``exec_id`` is its ``seq``.
    Returns how many were moved."""
    queue = st.queue
    v = st.v
    mask = queue.shape[0] - 1
    lat = v[V_LATENCY]
    head = v[V_Q_HEAD]
    tail = v[V_Q_TAIL]
    n = 0
    while head < tail and n < out.shape[0]:
        e = queue[head & mask]
        if e.ts_venue_ns + lat > now_ns:
            break
        out[n] = e
        out[n].seq = seq + n
        out[n].exec_id = seq + n
        head += 1
        n += 1
    v[V_Q_HEAD] = head
    return n


# --- Python API ------------------------------------------------------------------------------


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 1).bit_length()


class Venue:
    """The venue's state and its Python entry points (the kernels take ``self.state``).

    ``instruments``: books for instrument ids 1 .. instruments. ``capacity``: order slots,
    ours and external together. ``levels``: price levels per side and book. ``max_open``:
    live orders of ours. ``history``: finished orders of ours remembered (duplicates,
    queries). ``queue``: undelivered reports (rounded up to a power of two).
    ``latency_ns``: delay before a report is released. ``maker_fee`` / ``taker_fee``: price
    units per share on each fill (negative = rebate); a report's ``fee`` is that times
    ``last_qty``. ``quote_fill``: the quote-mode fill model, ``QF_QUEUE`` or
    ``QF_TRADE_THROUGH`` (module doc). ``stp_default``: the ``STP_*`` mode of an order of
    ours with ``stp_mode`` 0; ``stp_allowed``: the modes an order may carry (others are
    rejected), default all (``bot4.records.stp.STP_PROFILES`` gives both per venue profile).
    """

    def __init__(
        self,
        *,
        instruments: int = 16,
        capacity: int = 1 << 16,
        levels: int = 1024,
        max_open: int = 4096,
        history: int = 1 << 16,
        queue: int = 1 << 14,
        latency_ns: int = 0,
        maker_fee: int = 0,
        taker_fee: int = 0,
        quote_fill: int = QF_QUEUE,
        stp_default: int = STP_CANCEL_RESTING,
        stp_allowed: tuple[int, ...] = (
            STP_CANCEL_NEW,
            STP_CANCEL_RESTING,
            STP_CANCEL_BOTH,
            STP_DECREMENT,
        ),
    ) -> None:
        for name, value in (
            ("instruments", instruments),
            ("capacity", capacity),
            ("levels", levels),
            ("max_open", max_open),
            ("history", history),
            ("queue", queue),
        ):
            if int(value) < 1:
                raise ValueError(f"venue {name} must be >= 1, got {value}")
        if latency_ns < 0:
            raise ValueError(f"latency_ns must be >= 0, got {latency_ns}")
        books = int(instruments) + 1
        capacity = int(capacity)
        pool = np.zeros(capacity, RESTING)
        free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        lv = np.zeros((books, 2, int(levels), 4), np.int64)
        nlev = np.zeros((books, 2), np.int64)
        bk = np.zeros((books, 4), np.int64)
        bk[:, BK_QUOTE + BID] = -1
        bk[:, BK_QUOTE + ASK] = -1
        n_ours = _pow2(2 * (int(max_open) + int(history)))
        n_ext = _pow2(2 * capacity)
        hist = np.zeros(int(history), DONE)
        q = np.zeros(_pow2(queue), EXEC_REPORT)
        v = np.zeros(V_WORDS, np.int64)
        v[V_FREE_TOP] = capacity
        v[V_LATENCY] = int(latency_ns)
        v[V_MAKER_FEE] = int(maker_fee)
        v[V_TAKER_FEE] = int(taker_fee)
        v[V_MAX_OPEN] = int(max_open)
        if int(quote_fill) not in QUOTE_FILL_NAMES.values():
            raise ValueError(f"quote_fill must be one of {sorted(QUOTE_FILL_NAMES)}")
        v[V_QUOTE_FILL] = int(quote_fill)
        modes = {int(m) for m in stp_allowed}
        if not modes <= {STP_CANCEL_NEW, STP_CANCEL_RESTING, STP_CANCEL_BOTH, STP_DECREMENT}:
            raise ValueError(f"stp_allowed: unknown STP modes {sorted(modes)}")
        if int(stp_default) != STP_NONE and int(stp_default) not in modes:
            raise ValueError(f"stp_default {stp_default} is not among the allowed modes")
        v[V_STP_DEFAULT] = int(stp_default)
        v[V_STP_ALLOWED] = sum(1 << m for m in modes)
        self.next_seq = 1  # numbering of release() without a seq: 1, 2, ...
        self.state = VenueState(
            pool=pool,
            free=free,
            levels=lv,
            nlev=nlev,
            books=bk,
            ours=map_new(n_ours, 2),
            ext=map_new(n_ext, 2),
            hist=hist,
            queue=q,
            v=v,
        )

    # -- hot path ---------------------------------------------------------------------------
    def on_orders(self, orders: np.ndarray, now_ns: int) -> int:
        """Handle ORDER records; returns the number of reports queued."""
        return int(venue_order_kernel(self.state, orders, np.int64(now_ns)))

    def on_market_data(self, md: np.ndarray, now_ns: int) -> int:
        """Apply MARKET_DATA records; returns the number of reports queued."""
        return int(venue_md_kernel(self.state, md, np.int64(now_ns)))

    def cancel_all_ours(self, now_ns: int, instrument: int = 0, reason: int = 0) -> int:
        """Cancel every resting order of ours (cancel-on-disconnect); returns the count."""
        return int(
            venue_cancel_all_kernel(self.state, np.int64(instrument), np.int64(now_ns), reason)
        )

    def release(self, out: np.ndarray, now_ns: int, seq: int | None = None) -> int:
        """Move due reports into ``out`` (see :func:`venue_release_kernel`), numbered from
        ``seq`` (default: after the last report released, from 1), which is also their
        ``exec_id``."""
        if seq is None:
            seq = self.next_seq
        n = int(venue_release_kernel(self.state, out, np.int64(now_ns), np.int64(seq)))
        self.next_seq = seq + n
        return n

    # -- inspection (tests, replay, operator tools; allocates) ------------------------------
    def drain(self, now_ns: int, seq: int | None = None) -> np.ndarray:
        """Every report due at ``now_ns``, as a new array (numbered as :meth:`release`)."""
        out = np.zeros(max(self.pending, 1), EXEC_REPORT)
        return out[: self.release(out, now_ns, seq)]

    @property
    def pending(self) -> int:
        """Reports queued and not yet released."""
        v = self.state.v
        return int(v[V_Q_TAIL] - v[V_Q_HEAD])

    @property
    def live_orders(self) -> int:
        """Our resting orders."""
        return int(self.state.v[V_LIVE_OURS])

    def resting(self, instrument: int, side: int) -> list[tuple[int, int, int, int]]:
        """``(price, owner, id, leaves)`` of every order resting on ``side`` of the book,
        in priority order; id is the client order id (ours), the market data order id
        (external) or 0 (quote)."""
        st = self.state
        pool, lv, nlev = st.pool, st.levels, st.nlev
        s = BID if side == SIDE_BUY else ASK
        out = []
        for j in range(int(nlev[instrument, s]) - 1, -1, -1):
            m = int(lv[instrument, s, j, LH])
            while m >= 0:
                o = pool[m]
                owner = int(o["owner"])
                ident = o["client_order_id"] if owner == OWN_OURS else o["ext_id"]
                out.append((int(o["price"]), owner, int(ident), int(o["leaves"])))
                m = int(o["next"])
        return out

    def levels(self, instrument: int, side: int) -> list[tuple[int, int]]:
        """``(price, shares)`` per level of ``side``, best first."""
        lv, nlev = self.state.levels, self.state.nlev
        s = BID if side == SIDE_BUY else ASK
        rows = lv[instrument, s, : int(nlev[instrument, s])][::-1]
        return [(int(k) if s == BID else -int(k), int(q)) for k, q in rows[:, [LK, LQ]]]

    def counters(self) -> dict[str, int]:
        v = self.state.v
        return {name: int(v[V_STATS + i]) for i, name in enumerate(STATS)}
