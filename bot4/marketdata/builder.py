"""Per-instrument order books built from order messages: what the md stage publishes.

The md stage's books are built here from order-level events (``MD_BOOK_ADD`` / ``CANCEL``
/ ``DELETE`` / ``EXEC`` records), never copied from a reference book: LOBSTER through
:func:`build_kernel`, and md_gateway's ITCH decoder, which applies each event with the same
step (:func:`apply_event`): the product's one book implementation. Per instrument and
side the book keeps up to ``window`` price levels (stored worst first: see
:mod:`bot4.marketdata.book_step`), each with its aggregate visible size and an order
count, plus one order map (id -> remaining size, price, side, add seq; open addressing,
one 32-byte row per order) to apply executes, partial cancels and deletes by order id.

For each message, in order, :func:`build_kernel` writes the records the stage publishes:

1. the order-level event itself (for the venue's queue model);
2. for an execution (kinds 4 and 5) a trade, ``MD_TRADE`` at the message's price and size,
   ``side`` the aggressor's (the opposite of the resting order's);
3. an ``MD_QUOTE`` per side whose best level (price, size) differs from the quote last
   published for it (qty 0 when a side that was quoted empties);
4. with ``depth`` > 0, a ``BOOK_LEVEL`` per position 0..depth-1 whose (price, size,
   orders) differs from what was last published for it.

``MDF_LAST_IN_BATCH`` moves to the last record of the message (and of its levels). With a
consistent book and the same reference rows, steps 1-3 give exactly the stream
:func:`bot4.marketdata.replay` used to copy from LOBSTER's orderbook file.

**Reference rows** (LOBSTER's orderbook file, row ``seq - 1`` for a record; optional).
They are used for three things, each counted:

* *seed* — the orders resting before the data starts: the first row, with the first
  message taken back out (an add's size removed from its level, a cancel's, delete's or
  visible execution's size put back), is the snapshot the book starts from; each of its
  levels counts as one order of unknown id (``seeded`` levels);
* *slide-in* — a level-N LOBSTER message file only carries events that touched the N
  visible levels. When a message removes a level, the level that enters the window from
  below (position N) was never described by any message: it is taken from the reference
  row, the way a depth-limited market-by-price feed sends the level that slides in
  (``slide_in`` levels). Nothing the messages determine is ever taken from the row;
* *check* (``check``, on by default) — after each message the whole window is compared
  with the row; a difference counts ``check_mismatch`` and is a gap (below).

**Gaps and inconsistencies**, counted by reason (``BUILD_STATS``), never published
silently: a cancel, delete or execution at a price with no level (``missing_level``), one
larger than its level (``negative_level``: the level is removed), one for an unknown order
that carries no price to apply it by (``unknown_order_gap``), a check mismatch — the book
is then wrong: it is flagged stale and re-seeded from the reference row when there is one
(``resync``), else it stays stale to the end of the data — and a crossed or locked book
(``crossed``: stale while it lasts). While an instrument is stale its market-data records
carry ``MDF_BOOK_STALE`` (risk halts the instrument until they stop) and no quote or level
is published from its book; the first message after which it is consistent again
publishes every side and position that differs from what was last published. References
to orders the map does not know, applied by the message's price (orders resting before
the data started, or placed beyond a depth-limited window), are counted
(``unknown_order``) but are no gap: the level's size covers them. Nor is a reduction of
a known order whose price lies beyond a full window (added there, or pushed out by better
levels; md_gateway's full-depth books keep ``levels`` a side): the book never held that
level (``beyond_window``). Such levels do not come back when better ones empty: a side
would have to lose its whole window before the quote was affected.

Ownership: a :class:`BookBuilder` and its arrays belong to the one stage (or test) that
feeds it; ``build_kernel`` is the hot path (``@njit(nogil=True, cache=True)``). It hands
its helpers borrowed views of its arrays (:func:`bot4.nbkit.unowned`: no atomic reference
counting per message) and prefetches the order-map and reference rows of the message
``PREFETCH`` ahead (:func:`bot4.nbkit.prefetch`); neither changes a result.

The one book step (:func:`apply_event`), its level helpers, the order map's row layout
and the ``BUILD_STATS`` slots are :mod:`bot4.marketdata.book_step`'s (re-exported here);
this module is the LOBSTER kernel around it (reference rows, publishing) and the
:class:`BookBuilder` that owns the arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.marketdata.book_step import (
    ASK,
    B_CHECK_MISMATCH,
    B_CHECKED,
    B_CROSSED,
    B_RESYNC,
    B_SEEDED,
    B_SLIDE_IN,
    B_STALE_MESSAGES,
    BID,
    BUILD_STATS,
    GAP_STATS,
    NO,
    BookArrays,
    _better,
    _find,
    _insert_level,
    _remove_level,
    _shift,
    apply_event,
    order_side,
)
from bot4.marketdata.lobster import DUMMY_ASK_PRICE, DUMMY_BID_PRICE
from bot4.nbkit import (
    map_home,
    map_new,
    map_rehash,
    prefetch,
    unowned,
)
from bot4.records import (
    BOOK_LEVEL,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_BOOK_STALE,
    MDF_LAST_IN_BATCH,
    SIDE_BUY,
    SIDE_SELL,
)

__all__ = [
    "BUILD_STATS",
    "GAP_STATS",
    "BookArrays",
    "BookBuilder",
    "BuildState",
    "apply_event",
    "build_kernel",
    "order_side",
    "top_kernel",
]

STALE_GAP = 1  # stale until re-seeded from a snapshot
STALE_CROSSED = 2  # stale while crossed

# cfg slots (int64)
CFG_WINDOW = 0  # levels kept per side (<= the arrays' capacity)
CFG_DEPTH = 1  # BOOK_LEVEL positions published per side (0 = none)
CFG_CHECK = 2  # 1: compare every message's window with its reference row
CFG_REFERENCE = 3  # 1: reference rows seed, slide in and resync
NCFG = 4

PREFETCH = 10  # messages ahead whose order-map and reference rows the kernel prefetches


class BuildState(NamedTuple):
    """:func:`build_kernel`'s state object: the book (:class:`BookArrays`) and what the
    LOBSTER kernel keeps around it, per instrument (``BookBuilder.state()``). Owned by the
    builder's one caller; rebuilt after the order map grows."""

    book: BookArrays  # levels, counters, order map
    cfg: np.ndarray  # int64[NCFG]: CFG_* settings
    seeded: np.ndarray  # int64[books]: 1 once seeded from a reference row
    stale: np.ndarray  # int64[books]: STALE_* bits
    qpx: np.ndarray  # int64[books, 2]: last quote published (price; -1 = none)
    qqty: np.ndarray  # int64[books, 2]: its size (-1 = none)
    ppx: np.ndarray  # int64[books, 2, depth]: last BOOK_LEVEL published per position
    pqty: np.ndarray  # int64[books, 2, depth]
    pcnt: np.ndarray  # int64[books, 2, depth]


# --- levels against a reference row (LOBSTER's orderbook file) ------------------------


@njit(nogil=True, cache=True, inline="always")
def _ref_level(ref, row, s, k):
    """(price, size) of level ``k`` of side ``s`` in LOBSTER row ``ref[row]``, size 0 when
    absent. Rows are passed as (array, index), never as views: a view per message costs
    the kernel a reference-count pair."""
    c = 4 * k + (2 if s == BID else 0)
    p = ref[row, c]
    q = ref[row, c + 1]
    if q <= 0 or p <= 0 or p >= DUMMY_ASK_PRICE:  # LOBSTER's fillers: -/+9999999999
        return np.int64(0), np.int64(0)
    return p, q


@njit(nogil=True, cache=True, inline="always")
def _seed(px, qty, cnt, n, window, i, ref, row):
    """Replace instrument ``i``'s book with a reference row (each level one order)."""
    levels = min(ref.shape[1] // 4, window)
    seeded = 0
    for s in range(2):
        m = 0
        for k in range(levels):
            if _ref_level(ref, row, s, k)[1] != 0:
                m += 1
        n[i, s] = m
        seeded += m
        for k in range(levels):  # best first from the row, stored worst first
            p, q = _ref_level(ref, row, s, k)
            if q == 0:
                continue
            m -= 1
            px[i, s, m] = p
            qty[i, s, m] = q
            cnt[i, s, m] = 1
    return seeded


NONE_WORSE = np.int64(1) << 62  # no level yet: every price is worse than +this (bid) / -this


@njit(nogil=True, cache=True, inline="always")
def _worse_levels(ref, row, s, g, w, room, rows, top):
    """The reference levels from ``g`` on that are worse than price ``w`` (and each other;
    ``w`` = +/-``NONE_WORSE`` for an empty side), at most ``room``: counted, and written
    into ``rows`` (the side's price, size and count rows) at indices ``top``, ``top - 1``,
    ... when ``top`` >= 0. Returns how many."""
    levels = ref.shape[1] // 4
    ps, qs, cs = rows
    a = 0
    for k in range(g, levels):
        if a >= room:
            break
        p, q = _ref_level(ref, row, s, k)
        if q == 0 or not _better(s, w, p):
            continue
        if top >= 0:
            ps[top - a] = p
            qs[top - a] = q
            cs[top - a] = 1
        w = p
        a += 1
    return a


@njit(nogil=True, cache=True, inline="always")
def _slide_in(px, qty, cnt, n, window, i, ref, row):
    """Fill each side's window from the reference levels worse than its worst level.

    A row's valid levels are a best-first prefix (LOBSTER's order), so the levels no
    better than the window's worst that come before the first worse one are skipped
    without reading them: the scan starts at the last one (found from position ``m``
    back), usually one level, one cache line (the row's last, which the kernel
    prefetched), instead of the whole row from the best level down. The levels found go
    below the worst (index 0: the window moves up by as many)."""
    levels = ref.shape[1] // 4
    added = 0
    for s in range(2):
        m = n[i, s]
        if m >= window:
            continue
        g = min(m, levels)
        w = px[i, s, 0]
        if m > 0:
            while g > 0:
                p, q = _ref_level(ref, row, s, g - 1)
                if q != 0 and not _better(s, w, p):
                    break  # level g - 1 is no better than the worst: all before it too
                g -= 1
        if m == 0:
            w = NONE_WORSE if s == BID else -NONE_WORSE
        rows = (px[i, s], qty[i, s], cnt[i, s])
        a = _worse_levels(ref, row, s, g, w, window - m, rows, -1)
        if a == 0:
            continue
        _shift(px, qty, cnt, i, s, a, 0, m)
        _worse_levels(ref, row, s, g, w, a, rows, a - 1)
        n[i, s] = m + a
        added += a
    return added


@njit(nogil=True, cache=True, inline="always")
def _matches(px, qty, n, window, i, ref, row):
    """The window of instrument ``i`` equals the reference row's (prices and sizes)."""
    levels = ref.shape[1] // 4
    for s in range(2):
        m = n[i, s]
        for k in range(min(levels, window)):
            p, q = _ref_level(ref, row, s, k)
            if k < m:
                if px[i, s, m - 1 - k] != p or qty[i, s, m - 1 - k] != q:
                    return False
            elif q != 0:
                return False
    return True


@njit(nogil=True, cache=True, inline="always")
def _unapply(b, window, i, r):
    """Take message ``r`` back out of instrument ``i``'s book ``b`` (the seed: row 1 is the
    book *after* message 1)."""
    kind, side, p, q = r.kind, r.side, r.price, r.qty
    px, qty, cnt, n = b.px, b.qty, b.cnt, b.n
    if kind < MD_BOOK_ADD or kind > MD_BOOK_EXEC or (side != SIDE_BUY and side != SIDE_SELL):
        return
    s = BID if side == SIDE_BUY else ASK
    j = _find(px, n, i, s, p)
    if kind == MD_BOOK_ADD:
        if j >= 0:
            left = qty[i, s, j] - q
            if left > 0:
                qty[i, s, j] = left
            else:
                _remove_level(px, qty, cnt, n, i, s, j)
    elif j >= 0:
        qty[i, s, j] += q
    else:
        _insert_level(b, window, i, s, -j - 1, p, q, 1)


@njit(nogil=True, cache=True, inline="always")
def _publish(st, r, flags, out, nm, lv, nl, parent):
    """Quotes (into ``out`` from ``nm``) and levels (into ``lv`` from ``nl``) of message
    ``r``'s instrument that differ from what was last published (``st``: the
    :class:`BuildState`); returns the new (nm, nl)."""
    i = np.int64(r.instrument)
    px, qty, cnt, n = st.book.px, st.book.qty, st.book.cnt, st.book.n
    qpx, qqty, ppx, pqty, pcnt = st.qpx, st.qqty, st.ppx, st.pqty, st.pcnt
    depth = st.cfg[CFG_DEPTH]
    for s in (ASK, BID):
        top = n[i, s] - 1  # the best level's index (sides are stored worst first)
        have = top >= 0
        p = px[i, s, top] if have else 0
        q = qty[i, s, top] if have else 0
        if p != qpx[i, s] or q != qqty[i, s]:
            # an empty side is quoted (qty 0) only once it had been quoted
            if have or qqty[i, s] > 0:
                o = out[nm]
                o.seq = r.seq
                o.parent_seq = r.parent_seq
                o.ts_event_ns = r.ts_event_ns
                o.ts_recv_ns = r.ts_recv_ns
                o.price = p
                o.qty = q
                o.order_id = 0
                o.instrument = r.instrument
                o.kind = MD_QUOTE
                o.side = SIDE_BUY if s == BID else SIDE_SELL
                o.flags = flags
                nm += 1
            qpx[i, s] = p
            qqty[i, s] = q
    for s in (ASK, BID):
        top = n[i, s] - 1
        for k in range(depth):
            have = k <= top
            p = px[i, s, top - k] if have else 0
            q = qty[i, s, top - k] if have else 0
            c = cnt[i, s, top - k] if have else 0
            if p == ppx[i, s, k] and q == pqty[i, s, k] and c == pcnt[i, s, k]:
                continue
            ppx[i, s, k] = p
            pqty[i, s, k] = q
            pcnt[i, s, k] = c
            o = lv[nl]
            o.seq = 0
            o.parent_seq = parent
            o.ts_event_ns = r.ts_event_ns
            o.ts_recv_ns = r.ts_recv_ns
            o.price = p
            o.qty = q
            o.instrument = r.instrument
            o.orders = np.uint32(min(c, 0xFFFFFFFF))
            o.side = SIDE_BUY if s == BID else SIDE_SELL
            o.level = k
            o.flags = flags
            nl += 1
    return nm, nl


@njit(nogil=True, cache=True)
def build_kernel(msgs, start, ref, st, out, counts, lv):
    """Apply ``msgs[start:]`` in order to the books of ``st`` (:class:`BuildState`),
    writing what is published to ``out`` (MARKET_DATA) and ``lv`` (BOOK_LEVEL) from
    ``counts[0]`` / ``counts[1]`` on (advanced).

    ``ref``: int64 (rows, 4 x levels) reference rows, record ``r`` -> row ``r.seq - 1``
    (0 rows: none). A BOOK_LEVEL's ``parent_seq`` is the index in ``out`` of the event it
    derives from. Returns the index of the first message not applied: ``msgs.size``, or
    earlier when the order map is 3/4 full or an output has less room than one message
    needs (4 records; 2 x depth levels), so the caller can grow them and call again.
    """
    # borrowed views (bot4.nbkit.borrow): the helpers below take these arrays once per
    # message, and counting their references was ~20 % of the kernel's time
    msgs, ref, out, counts, lv = (
        unowned(msgs),
        unowned(ref),
        unowned(out),
        unowned(counts),
        unowned(lv),
    )
    st = unowned(st)
    b = st.book
    px, qty, cnt, n, stats, otab, live = b.px, b.qty, b.cnt, b.n, b.stats, b.otab, b.live
    cfg, seeded, stale = st.cfg, st.seeded, st.stale
    window = cfg[CFG_WINDOW]
    depth = cfg[CFG_DEPTH]
    check = cfg[CFG_CHECK] != 0
    use_ref = cfg[CFG_REFERENCE] != 0 and ref.shape[0] > 0
    limit = otab.shape[0] * 3 // 4
    omask = otab.shape[0] - 1
    ref_last = ref.shape[1] - 1
    ref_first = 0 if check else 4 * max(min(window, ref.shape[1] // 4) - 2, 0)
    n_inst = px.shape[0]
    nm = counts[0]
    nl = counts[1]
    for m in range(start, msgs.shape[0]):
        if nm + 4 > out.shape[0] or nl + 2 * depth > lv.shape[0] or live[0] + 1 > limit:
            counts[0] = nm
            counts[1] = nl
            return m
        if m + PREFETCH < msgs.shape[0]:
            # the order map's home row and the reference row of a message PREFETCH ahead:
            # both are cache misses a hardware prefetcher cannot guess (hashed ids; rows
            # read only when a level slides in)
            a = msgs[m + PREFETCH]
            if a.order_id != 0:
                prefetch(otab, map_home(a.order_id, omask), 0)
            if use_ref:
                # what a slide-in reads: the levels from the window's second-worst on (two
                # lines: a row starts anywhere in a line); the whole row when it is checked
                ra = np.int64(a.seq) - 1
                for c in range(ref_first, ref_last, 8):
                    prefetch(ref, ra, c)
                prefetch(ref, ra, ref_last)
        r = msgs[m]
        i = np.int64(r.instrument)
        flags = r.flags & ~MDF_LAST_IN_BATCH
        ev = nm
        out[nm] = r
        nm += 1
        if r.kind == MD_BOOK_EXEC or r.kind == MD_BOOK_HIDDEN_EXEC:
            out[nm] = r
            out[nm].kind = MD_TRADE
            out[nm].side = -r.side
            nm += 1
        if i < 0 or i >= n_inst:
            out[ev].flags = flags
            if nm > ev + 1:
                out[nm - 1].flags = flags
            if r.flags & MDF_LAST_IN_BATCH:
                out[nm - 1].flags |= MDF_LAST_IN_BATCH
            continue
        row = np.int64(r.seq) - 1
        has_row = use_ref and 0 <= row < ref.shape[0]
        if has_row and seeded[i] == 0:
            seeded[i] = 1
            stats[B_SEEDED] += _seed(px, qty, cnt, n, window, i, ref, row)
            _unapply(b, window, i, r)
        gap = apply_event(b, window, i, r)
        if has_row:
            stats[B_SLIDE_IN] += _slide_in(px, qty, cnt, n, window, i, ref, row)
            if check:
                stats[B_CHECKED] += 1
                if not _matches(px, qty, n, window, i, ref, row):
                    stats[B_CHECK_MISMATCH] += 1
                    gap = True
        if gap:
            stale[i] |= STALE_GAP
            if has_row:
                _seed(px, qty, cnt, n, window, i, ref, row)
                stats[B_RESYNC] += 1
                stale[i] &= ~STALE_GAP
        nb, na = n[i, BID], n[i, ASK]
        if nb > 0 and na > 0 and px[i, BID, nb - 1] >= px[i, ASK, na - 1]:
            if stale[i] & STALE_CROSSED == 0:
                stats[B_CROSSED] += 1
            stale[i] |= STALE_CROSSED
        else:
            stale[i] &= ~STALE_CROSSED
        lv0 = nl
        if gap or stale[i] != 0:
            stats[B_STALE_MESSAGES] += 1
            flags |= MDF_BOOK_STALE
        else:
            nm, nl = _publish(st, r, flags, out, nm, lv, nl, ev)
        for k in range(ev, nm):
            out[k].flags = flags
        if r.flags & MDF_LAST_IN_BATCH:
            out[nm - 1].flags |= MDF_LAST_IN_BATCH
            if nl > lv0:
                lv[nl - 1].flags |= MDF_LAST_IN_BATCH
    counts[0] = nm
    counts[1] = nl
    return msgs.shape[0]


@njit(nogil=True, cache=True)
def top_kernel(px, qty, n, i, levels, out):
    """Instrument ``i``'s best ``levels`` levels into ``out`` (int64[4 * levels]) in
    LOBSTER's column order: AskPrice, AskSize, BidPrice, BidSize per level, best first;
    missing levels as LOBSTER's dummies."""
    na, nb = n[i, ASK], n[i, BID]
    for k in range(levels):
        if k < na:
            out[4 * k] = px[i, ASK, na - 1 - k]
            out[4 * k + 1] = qty[i, ASK, na - 1 - k]
        else:
            out[4 * k] = DUMMY_ASK_PRICE
            out[4 * k + 1] = 0
        if k < nb:
            out[4 * k + 2] = px[i, BID, nb - 1 - k]
            out[4 * k + 3] = qty[i, BID, nb - 1 - k]
        else:
            out[4 * k + 2] = DUMMY_BID_PRICE
            out[4 * k + 3] = 0


# --- Python API ------------------------------------------------------------------------------


class BookBuilder:
    """Books of ``instruments`` instrument ids (0..instruments-1), ``window`` levels per side,
    publishing ``depth`` BOOK_LEVEL positions per side (0 = no levels).

    ``check``: compare each message's window with its reference row (when rows are given).
    ``reference``: use reference rows at all (seed, slide-in, resync); False builds from
    the messages alone, from an empty book.
    """

    def __init__(
        self,
        instruments: int,
        window: int,
        depth: int = 0,
        *,
        check: bool = True,
        reference: bool = True,
        orders: int = 1 << 16,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 level, got {window}")
        if not 0 <= depth <= min(window, 255):
            raise ValueError(f"depth must be in 0..{min(window, 255)}, got {depth}")
        shape = (instruments, 2, window)
        self.px = np.zeros(shape, np.int64)
        self.qty = np.zeros(shape, np.int64)
        self.cnt = np.zeros(shape, np.int64)
        self.n = np.zeros((instruments, 2), np.int64)
        self.seeded = np.zeros(instruments, np.int64)
        self.stale = np.zeros(instruments, np.int64)
        self.qpx = np.full((instruments, 2), -1, np.int64)  # last quote published, -1 = none
        self.qqty = np.full((instruments, 2), -1, np.int64)
        dshape = (instruments, 2, max(depth, 1))
        self.ppx = np.zeros(dshape, np.int64)  # last BOOK_LEVEL published per position
        self.pqty = np.zeros(dshape, np.int64)
        self.pcnt = np.zeros(dshape, np.int64)
        self.cfg = np.zeros(NCFG, np.int64)
        self.cfg[CFG_WINDOW] = window
        self.cfg[CFG_DEPTH] = depth
        self.cfg[CFG_CHECK] = int(check)
        self.cfg[CFG_REFERENCE] = int(reference)
        cap = 1 << max(int(orders) - 1, 3).bit_length()
        self._alloc_orders(cap)
        self.live = np.zeros(1, np.int64)
        self.stats = np.zeros(len(BUILD_STATS), np.int64)

    def _alloc_orders(self, cap: int) -> None:
        self.otab = map_new(cap, NO)  # the order map (O_* columns)

    def __len__(self) -> int:
        """Live orders in the order map."""
        return int(self.live[0])

    def reserve(self, adds: int) -> None:
        """Grow the order map (doubling, rehashed) until ``adds`` more orders fit under its
        3/4 load limit: between kernel calls, for callers that apply events one by one
        (:func:`apply_event`) rather than through :meth:`build`."""
        while self.live[0] + adds > self.otab.shape[0] * 3 // 4:
            old = self.otab
            self._alloc_orders(2 * old.shape[0])
            map_rehash(old, self.otab)

    def arrays(self) -> BookArrays:
        """The book step's state object over this builder's arrays (the order map as it is
        now: build it again after :meth:`reserve` grew it)."""
        return BookArrays(self.px, self.qty, self.cnt, self.n, self.stats, self.otab, self.live)

    def state(self) -> BuildState:
        """:func:`build_kernel`'s state object (as :meth:`arrays`, rebuilt after growth)."""
        return BuildState(self.arrays(), self.cfg, self.seeded, self.stale, self.qpx, self.qqty,
                          self.ppx, self.pqty, self.pcnt)  # fmt: skip

    @property
    def window(self) -> int:
        return int(self.cfg[CFG_WINDOW])

    @property
    def depth(self) -> int:
        return int(self.cfg[CFG_DEPTH])

    def build(
        self, msgs: np.ndarray, ref: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(MARKET_DATA stream, BOOK_LEVEL stream) for ``msgs`` applied in order (views of
        buffers sized for the worst case; only the pages written are resident).

        The BOOK_LEVEL records' ``parent_seq`` is the index of their event in the first
        array; ``seq`` is left as the messages' (MARKET_DATA) or 0 (BOOK_LEVEL).
        """
        if msgs.dtype != MARKET_DATA:
            raise TypeError(f"expected MARKET_DATA records, got {msgs.dtype}")
        if ref is None:
            ref = np.zeros((0, 4), np.int64)
        ref = np.ascontiguousarray(ref, dtype=np.int64)
        # Sized once for the common case (a message writes at most 4 records; LOBSTER's
        # files average 1-6 level updates a message at depth 10) and returned as views, not
        # copies: np.zeros maps untouched pages lazily, so the slack costs address space,
        # not memory, where growing and copying cost page faults and copies (on GOOG-10 at
        # depth 10 they were ~80 % of the build's time).
        out = np.zeros(4 * len(msgs) + 8, MARKET_DATA)
        per = min(2 * self.depth, 8)
        lv = np.zeros(max(2 * self.depth * 8, per * len(msgs) + 2 * self.depth + 8), BOOK_LEVEL)
        counts = np.zeros(2, np.int64)
        m = 0
        while True:
            m = build_kernel(msgs, m, ref, self.state(), out, counts, lv)
            if m >= len(msgs):
                break
            if counts[1] + 2 * self.depth > len(lv):
                lv = np.concatenate([lv, np.zeros(len(lv), BOOK_LEVEL)])
            if self.live[0] + 1 > self.otab.shape[0] * 3 // 4:
                old = self.otab
                self._alloc_orders(2 * old.shape[0])
                map_rehash(old, self.otab)
        return out[: counts[0]], lv[: counts[1]]

    def top(self, instrument: int, levels: int | None = None) -> np.ndarray:
        """int64[4 * levels] in LOBSTER's column order (AskPrice, AskSize, BidPrice, BidSize
        per level, best first; missing levels as LOBSTER's dummies)."""
        levels = self.window if levels is None else levels
        out = np.zeros(4 * levels, np.int64)
        top_kernel(self.px, self.qty, self.n, instrument, levels, out)
        return out

    def counters(self) -> dict[str, int]:
        return dict(zip(BUILD_STATS, self.stats.tolist(), strict=True))

    def gaps(self) -> dict[str, int]:
        """The inconsistencies met, by reason (all zero: the book never went stale)."""
        c = self.counters()
        return {k: c[k] for k in GAP_STATS}


def side_name(side: int) -> str:
    return "bid" if side == SIDE_BUY else "ask" if side == SIDE_SELL else "?"
