"""The simulated venue: price-time-priority limit order books fed by our orders and by
other participants' market data, with a report delay queue; :class:`Venue` holds
the state and calls the kernels.

Where each part lives (each module's doc says what it does):

    bot4.venue.layout       the state (:data:`VenueState`), dtypes, constants
    bot4.venue.book         pool slots, price levels, time-priority queues, id maps
    bot4.venue.queue_model  where a resized quote order stands in its queue
    bot4.venue.reports      reports, history of our finished orders, delay queue
    bot4.venue.match        matching, self-trade prevention, trade-through fills
    bot4.venue.orders       our orders (``venue_order_kernel``, cancel-all)
    bot4.venue.feed         market data (``venue_md_kernel`` and its variants)


Limits, each counted in ``v`` and never raised: the pool (``capacity`` orders, ours and
external), ``max_open`` live orders of ours (beyond: REJECTED ``MAX_OPEN_ORDERS``), ``levels``
price levels per side (a new better level evicts the worst level if it holds no order of
ours; otherwise the external order is dropped, or our remainder is cancelled with
``MAX_OPEN_ORDERS``), ``history`` finished orders remembered for duplicate detection and
queries (the oldest is forgotten first), and ``queue`` undelivered reports (a report that
finds the queue full is lost and counted in ``reports_lost``; size it for the worst burst).
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.u64map import map_new
from bot4.records import (
    EXEC_REPORT,
    SIDE_BUY,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEW,
    STP_CANCEL_RESTING,
    STP_DECREMENT,
    STP_NONE,
)
from bot4.venue.feed import (  # _md_reference_kernel: the reference the tests hold the fast path to
    _md_reference_kernel,
    venue_md_event_time_kernel,
    venue_md_kernel,
    venue_md_release_kernel,
    venue_md_until_report_kernel,
)
from bot4.venue.layout import (
    ASK,
    BID,
    BK_QUOTE,
    DONE,
    LH,
    LK,
    LQ,
    OWN_EXTERNAL,
    OWN_OURS,
    OWN_QUOTE,
    OWN_SNAPSHOT,
    QF_QUEUE,
    QF_TRADE_THROUGH,
    QUOTE_FILL_NAMES,
    RESTING,
    STATS,
    V_FREE_TOP,
    V_LATENCY,
    V_LIVE_OURS,
    V_MAKER_FEE,
    V_MAX_OPEN,
    V_Q_HEAD,
    V_Q_TAIL,
    V_QUOTE_FILL,
    V_STATS,
    V_STP_ALLOWED,
    V_STP_DEFAULT,
    V_TAKER_FEE,
    V_WORDS,
    VenueState,
)
from bot4.venue.orders import venue_cancel_all_kernel, venue_order_kernel
from bot4.venue.queue_model import queue_model_requeue
from bot4.venue.reports import next_release_ns, venue_release_kernel

__all__ = [
    "_md_reference_kernel",
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
