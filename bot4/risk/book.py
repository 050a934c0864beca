"""``RiskBook``: the state of one risk process and the calls into its kernels.

Python builds the :class:`~bot4.risk.layout.RiskState` once (setup) and passes it whole
to every kernel; the summaries an operator or a test reads (positions, decisions, stale
episodes) are read back from it here.
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit import map_new
from bot4.records.errors import Code
from bot4.risk.checks import check_intents
from bot4.risk.killswitch import (
    check_staleness,
    daily_loss,
    is_stale_halt,
    poll_states,
)
from bot4.risk.layout import (
    A_DAILY_HALT,
    A_DAILY_LOSS,
    A_MAX_GROSS,
    A_MAX_OPEN_ORDERS,
    C_BOOK_STALE,
    C_CANCEL_ALL,
    C_FEED_GONE,
    C_STALE,
    C_STALE_RELAXED,
    I_COST,
    I_FEES,
    I_OPEN_BUY,
    I_OPEN_ORDERS,
    I_OPEN_SELL,
    I_POS,
    I_REALISED,
    I_REF,
    I_STALE,
    I_UNREALISED,
    L_KNOWN,
    L_MAX_OPEN_ORDERS,
    L_MAX_POSITION,
    MAX_BOOK_LEVELS,
    NC,
    NI,
    NO,
    NX,
    R_OK,
    X_DAY_START,
    X_FEED_GONE,
    X_GROSS,
    X_NEXT_RESET_NS,
    X_OPEN_ORDERS,
    X_REALISED,
    X_TS_GEN,
    X_UNREALISED,
    RiskState,
)
from bot4.risk.limits import LimitArrays
from bot4.risk.positions import apply_book_levels, apply_fills, apply_market_data
from bot4.shm.trading_state import ACTIVE, W_INSTRUMENTS, state_word

__all__ = ["RiskBook", "risk_state_new"]


def risk_state_new(
    arrays: LimitArrays, brk: np.ndarray, trading: np.ndarray, max_tracked_orders: int
) -> RiskState:
    """A fresh state: flat positions, no open orders, nothing seen yet. ``brk`` and
    ``trading`` are the u64 words of the breaker and trading-state segments (or
    process-local arrays laid out the same way); ``max_tracked_orders`` rows (a power of
    two, validated by the limits) for the open-order map."""
    n_inst = arrays.ilim.shape[0]
    n_targets = min(n_inst, int(trading[W_INSTRUMENTS]) + 1)
    acct = np.zeros(NX, np.int64)
    acct[X_TS_GEN] = -1
    return RiskState(
        inst=np.zeros((n_inst, NI), np.int64),
        acct=acct,
        tat=np.zeros(arrays.slim.shape[0], np.int64),
        orders=map_new(max_tracked_orders, NO),
        seen=np.full(n_targets, -1, np.int64),
        pend=np.zeros(n_targets, np.int64),
        brk_seen=np.full(arrays.breaker_scope.shape[0], -1, np.int64),
        counters=np.zeros(NC, np.int64),
        scratch=np.full(2 * n_inst + 1, -1, np.int64),
        depth=np.zeros((n_inst, 2, MAX_BOOK_LEVELS), np.int64),
        ilim=arrays.ilim,
        slim=arrays.slim,
        alim=arrays.alim,
        brk_scope=arrays.breaker_scope,
        brk=brk,
        trading=trading,
    )


class RiskBook:
    """The state of one risk process (``st``) and the calls into its kernels.

    Everything in ``st`` but the breaker and trading-state words is process-local and
    written only by this process; see :mod:`bot4.risk.layout`.
    """

    def __init__(
        self,
        arrays: LimitArrays,
        brk: np.ndarray,
        trading: np.ndarray,
        max_tracked_orders: int,
    ) -> None:
        self.arrays = arrays
        self.st = risk_state_new(arrays, brk, trading, max_tracked_orders)
        self.n_targets = self.st.seen.shape[0]
        self._adopt_stale_halts()

    def __getattr__(self, name: str):
        """The state's arrays by name (``book.inst``, ``book.trading``, ...), read-only use."""
        st = self.__dict__.get("st")
        if st is not None and name in RiskState._fields:
            return getattr(st, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def _adopt_stale_halts(self) -> None:
        """A restarted stage takes over the stale-data halts its predecessor left, so data
        resuming ends them (it has no arrival times: none is halted again until data comes)."""
        for t in range(self.n_targets):
            if is_stale_halt(np.int64(state_word(self.st.trading, t))):
                if t == 0:
                    self.st.acct[X_FEED_GONE] = 1 + ACTIVE
                else:
                    self.st.inst[t, I_STALE] = 1 + ACTIVE

    def check(self, intents, out_orders, out_decisions, seq: int, now_ns: int) -> tuple[int, int]:
        n_o, n_d = check_intents(self.st, intents, out_orders, out_decisions, seq, now_ns)
        return int(n_o), int(n_d)

    def fills(self, execs, out_orders, seq: int, now_ns: int) -> int:
        return int(apply_fills(self.st, execs, out_orders, seq, now_ns))

    def market_data(self, md, out_orders, seq: int, now_ns: int) -> int:
        return int(apply_market_data(self.st, md, out_orders, seq, now_ns))

    def book_levels(self, levels, out_orders, seq: int, now_ns: int) -> int:
        """Apply BOOK_LEVEL records (the liquidity check's depth); writes no order."""
        apply_book_levels(self.st, levels)
        return 0

    def poll(self) -> int:
        """Queue CANCEL_ALLs for states that became HALTED; returns how many are queued."""
        return int(poll_states(self.st))

    def staleness(self, now_ns: int) -> int:
        """Halt what has gone stale by ``now_ns`` (see bot4.risk.checks); returns the stale
        episodes started. Call :meth:`poll` after it to queue the CANCEL_ALLs."""
        return int(check_staleness(self.st, now_ns))

    def stale(self) -> dict:
        """Instruments in a stale episode, whether the feed is gone, and the counts."""
        c = self.st.counters
        return {
            "instruments": [int(i) for i in np.nonzero(self.st.inst[:, I_STALE])[0]],
            "feed_gone": bool(self.st.acct[X_FEED_GONE]),
            "stale_episodes": int(c[C_STALE]),
            "feed_gone_episodes": int(c[C_FEED_GONE]),
            "relaxed": int(c[C_STALE_RELAXED]),
            "book_stale_episodes": int(c[C_BOOK_STALE]),
        }

    def schedule_reset(self, next_reset_ns: int) -> None:
        """Set the next daily reset (ns, host monotonic); kernels apply it once it passes."""
        self.st.acct[X_NEXT_RESET_NS] = next_reset_ns

    @property
    def reset_due(self) -> bool:
        """The last scheduled reset was applied (or none was scheduled)."""
        return int(self.st.acct[X_NEXT_RESET_NS]) == 0

    def daily_pnl(self) -> int:
        return -int(daily_loss(self.st))

    _PANEL_COLS = np.array(
        [I_POS, I_OPEN_BUY, I_OPEN_SELL, I_OPEN_ORDERS, I_REALISED, I_UNREALISED, I_FEES]
    )

    def panel(self) -> tuple[np.ndarray, np.ndarray]:
        """``(account, rows)`` for the metrics segment's risk panel, in the order of
        ``bot4.shm.metrics.RISK_ACCOUNT`` and ``RISK_ROW`` (one row per instrument id):
        copies of this process's own figures and limits, int64. The arrays are this
        book's own, refilled at each call (the risk stage's housekeeping: a few numpy
        calls, no kernel)."""
        st = self.st
        if self.__dict__.get("_panel_rows") is None:
            rows = np.zeros((st.inst.shape[0], 3 + len(self._PANEL_COLS)), np.int64)
            rows[:, 0] = st.ilim[:, L_KNOWN] != 0
            rows[:, -2] = st.ilim[:, L_MAX_POSITION]
            rows[:, -1] = st.ilim[:, L_MAX_OPEN_ORDERS]
            self._panel_rows, self._panel_account = rows, np.zeros(10, np.int64)
        a, lim, acc, rows = st.acct, st.alim, self._panel_account, self._panel_rows
        rows[:, 1 : 1 + len(self._PANEL_COLS)] = st.inst[:, self._PANEL_COLS]
        acc[:] = (
            a[X_REALISED],
            a[X_UNREALISED],
            rows[:, 7].sum(),  # fees
            a[X_REALISED] + a[X_UNREALISED] - a[X_DAY_START],  # -daily_loss(st)
            lim[A_DAILY_LOSS],
            lim[A_DAILY_HALT],
            a[X_GROSS],
            lim[A_MAX_GROSS],
            a[X_OPEN_ORDERS],
            lim[A_MAX_OPEN_ORDERS],
        )
        return acc, rows

    def positions(self) -> dict[int, dict[str, int]]:
        out = {}
        for i in np.nonzero(self.st.ilim[:, L_KNOWN])[0]:
            row = self.st.inst[i]
            out[int(i)] = {
                "position": int(row[I_POS]),
                "open_buy": int(row[I_OPEN_BUY]),
                "open_sell": int(row[I_OPEN_SELL]),
                "open_orders": int(row[I_OPEN_ORDERS]),
                "cost": int(row[I_COST]),
                "realised": int(row[I_REALISED]),
                "unrealised": int(row[I_UNREALISED]),
                "fees": int(row[I_FEES]),
                "reference": int(row[I_REF]),
            }
        return out

    def decision_counts(self) -> dict[str, int]:
        out = {}
        for code in np.nonzero(self.st.counters[:C_CANCEL_ALL])[0]:
            name = "ACCEPTED" if code == R_OK else Code(int(code)).name
            out[name] = int(self.st.counters[code])
        return out
