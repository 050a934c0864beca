"""Market data: other participants' liquidity from the external feed, in order mode
or quote mode, and the market data kernels.


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
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.nbkit.hot import hot
from bot4.nbkit.u64map import map_find
from bot4.records import (
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_SNAPSHOT,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.venue.book import (
    _a_alloc,
    _a_append,
    _a_discard_external,
    _a_release_slot,
    _a_resize,
    _a_unlink,
    _alloc,
    _append,
    _discard_external,
    _level_pos,
    _map_set,
    _release_slot,
    _resize,
    _row,
    _unlink,
)
from bot4.venue.layout import (
    ASK,
    AT_LIMIT_ALL,
    AT_LIMIT_FRONT,
    AT_LIMIT_SNAPSHOT,
    AT_LIMIT_UNTIL,
    BID,
    BK_MODE,
    BK_QUOTE,
    LH,
    LK,
    MODE_ORDERS,
    MODE_QUOTES,
    OWN_EXTERNAL,
    OWN_OURS,
    OWN_QUOTE,
    OWN_SNAPSHOT,
    QF_TRADE_THROUGH,
    S_EXEC_EXCESS,
    S_EXT_ADDED,
    S_EXT_DROPPED,
    S_EXT_DUPLICATE,
    S_EXT_UNKNOWN,
    S_MD_IGNORED,
    S_MD_IN,
    S_REPORTS,
    V_QUOTE_FILL,
)
from bot4.venue.match import (
    _crosses,
    _quote_through,
    _take,
    _through,
)
from bot4.venue.queue_model import queue_model_requeue
from bot4.venue.reports import venue_release_kernel


@hot
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


@hot
def _external(st, b, order, now, pseq):
    """A new external / quote order ``(side, price, qty, owner, ext_id)`` in book ``b``:
    trades, then rests. Returns its slot or -1."""
    side, price, qty, owner, ext_id = order
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
    _take(st, b, (np.int64(side), price, qty, m), np.int64(AT_LIMIT_ALL), np.int64(-1), now, pseq)
    if o.leaves == 0:
        _release_slot(st, m)
        return -1
    if not _append(st, m):
        v[S_EXT_DROPPED] += 1
        _release_slot(st, m)
        return -1
    return m


@hot
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


@hot
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
            m = _external(st, b, (side, r.price, r.qty, owner, r.order_id), now, r.seq)
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
                (-np.int64(o.side), o.price, r.qty, np.int64(-1)),
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
                st,
                b,
                (-np.int64(side), r.price, r.qty, np.int64(-1)),
                mode,
                np.int64(-1),
                now,
                r.seq,
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
                (aside, r.price, r.qty, np.int64(-1)),
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
        m = _external(st, b, (side, r.price, r.qty, np.int64(OWN_QUOTE), np.uint64(0)), now, r.seq)
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


@hot
def _md_batch(st, md, now_ns, event_time, until_report):
    """MARKET_DATA records in order: the common quote-mode cases on the unpacked arrays
    (:func:`_md_quote_fast`), the rest through :func:`_md_one`, each at ``now_ns`` or, with
    ``event_time``, at its own ``ts_event_ns`` (``now_ns`` when it has none). With
    ``until_report``, stops after the first record that queued a report. Returns the
    records applied. The one copy of the per-record loop every market data kernel calls
    (with non-literal flags: numba compiles a callee once per literal argument value)."""
    st = unowned(st)  # borrowed: the caller holds the arrays; no counting per helper call
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


@hot
def venue_md_kernel(st, md, now_ns):
    """Apply MARKET_DATA records in order (other participants' liquidity, see the module
    doc); fills of our resting orders go to the delay queue. Returns reports queued."""
    before = st.v[S_REPORTS]
    _md_batch(st, md, now_ns, np.bool_(False), np.bool_(False))
    return st.v[S_REPORTS] - before


@hot
def venue_md_event_time_kernel(st, md, now_ns):
    """``venue_md_kernel`` on the exchange's clock: each record is applied at its own
    ``ts_event_ns`` (``now_ns`` for a record without one), so the reports it causes carry
    that ``ts_venue_ns``. For replays, where the venue is the exchange that produced the
    data. Returns reports queued."""
    before = st.v[S_REPORTS]
    _md_batch(st, md, now_ns, np.bool_(True), np.bool_(False))
    return st.v[S_REPORTS] - before


@hot
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
    st = unowned(st)  # borrowed: the caller holds the arrays; no counting per helper call
    v = st.v
    before = v[S_REPORTS]
    for i in range(md.shape[0]):
        v[S_MD_IN] += 1
        t = md[i].ts_event_ns
        _md_one(st, md[i], t if event_time and t > 0 else now_ns)
    return v[S_REPORTS] - before
