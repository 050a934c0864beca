"""Risk stage: intents in, orders and risk decisions out; fills and market data in.

Inputs: 0 = ORDER_INTENT (intents), 1 = EXEC_REPORT (fills, a feedback ring), optional
2 = MARKET_DATA (reference prices; a record flagged ``MDF_BOOK_STALE`` — the md stage's
rebuilt book of that instrument is inconsistent — halts the instrument until its
unflagged data resumes), optional 3 = BOOK_LEVEL (the md stage's depth, for the liquidity
check ``max_book_take_pct``). Outputs: 0 = ORDER (``ACTION_NEW`` for accepted
intents, ``ACTION_CANCEL_ALL`` on entering HALTED), optional 1 = RISK_DECISION (one per
intent). The checks are :mod:`bot4.risk.checks`; the params are
:class:`bot4.risk.limits.RiskLimits` (plus ``shared``, below).

Shared state: the stage attaches the instance's breaker and trading-state segments
(``/bot4.<instance>.breakers``, ``/bot4.<instance>.trading``); the launcher creates them
(:func:`bot4.risk.create_risk_segments`). With ``shared = false`` it uses process-local
copies instead (warm-up, backtests), which no operator tool can reach.

Kill switch: a CANCEL_ALL queued by a new HALT goes out with the next batch of any input
(wire the MARKET_DATA input, so batches keep coming when intents stop) or, where the loop
calls the ``pending`` / ``emit`` hooks, at its next idle turn without any input.

Stale market data (trip conditions cascade to what they protect, and no further): an
instrument that has had market data on input 2 and then none for longer than its
``stale_after_ms`` (default 2000; 0 = off; per instrument like any instrument limit) is
HALTED (source risk, reason ``NO_REFERENCE_PRICE`` — :data:`bot4.risk.checks.R_STALE_FEED`),
so the kill switch cancels that instrument's orders only; no market data at all for longer
than ``feed_gone_after_ms`` (default 5000; 0 = off) halts global trading. Instruments that
never had data are not halted for staleness, and the feed is never "gone" before its first
record. The first record after a gap undoes what this rule set, and only that
(``relax_state``): an operator's halt stays. One halt per stale episode: an operator who
resumes a stale instrument by hand is not overridden until its data returns and stops
again. Staleness is evaluated between batches in ``pending`` (the loop
calls it every iteration, with or without input), at most every ``STALE_CHECK_NS`` (50 ms,
or half the smallest threshold if that is shorter), so a halt comes at most that late;
without the MARKET_DATA input nothing ever goes stale. See :mod:`bot4.risk.checks`.

The daily-loss reset instant (``daily_reset`` local time in ``timezone``) is computed here
in Python, converted to host monotonic ns and handed to the kernels, which apply it at the
first batch at or after it; the next one is scheduled after each reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bot4.logs import log_event
from bot4.records import (
    EXEC_BROKEN,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REPORT,
    MARKET_DATA,
    ORDER,
    RISK_DECISION,
    RT_EXEC_REPORT,
)
from bot4.records.errors import Bot4Error, Code
from bot4.risk import create_risk_segments
from bot4.risk.book import RiskBook
from bot4.risk.layout import C_BROKEN_FILLS, C_CANCEL_ALL, C_FEED_GONE, C_STALE
from bot4.risk.limits import (
    A_FEED_GONE_NS,
    L_BREAKER,
    L_KNOWN,
    L_STALE_NS,
    RiskConfigError,
    RiskLimits,
    build_arrays,
    next_reset_utc_ns,
    param_keys,
)
from bot4.shm import metrics as M
from bot4.shm.breakers import Breakers, local_breakers
from bot4.shm.operator_log import create_operator_log
from bot4.shm.segment import Segment
from bot4.shm.trading_state import TradingState, init_trading_state, trading_bytes
from bot4.stages.base import ParamError, Stage, check_type
from bot4.stages.state_log import SharedStateLog

log = logging.getLogger("bot4.stage")

STALE_CHECK_NS = 50_000_000  # staleness is evaluated at most this often (see above)


def monotonic_of_utc(utc_ns: int, clock=time.monotonic_ns, wall_clock=time.time_ns) -> int:
    """``clock`` ns of a wall-clock instant (ns since the Unix epoch), as of now (live: host
    monotonic ns; replay: the simulated clock, for which both are the same axis)."""
    return clock() + (utc_ns - wall_clock())


def limits_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`RiskLimits` part of a risk stage's params (without ``shared``,
    ``recover``)."""
    return {k: v for k, v in params.items() if k not in ("shared", "recover")}


class RiskStage(Stage):
    """params: every :class:`~bot4.risk.limits.RiskLimits` key (see that module), and
    ``shared`` (default true: attach the instance's breaker and trading-state segments)."""

    kind = "risk"
    warm_seconds = 30.0
    arity = (2, 4, 1, 2)
    input_types = ("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA", "BOOK_LEVEL")
    output_types = ("ORDER", "RISK_DECISION")
    max_out_per_in = 2  # an order and a decision per intent, plus room for CANCEL_ALLs
    restart_state = (
        "positions, average cost and realised PnL are rebuilt from the session's journalled "
        "fills (those the previous process had consumed; see _recover_positions); open "
        "orders, rate buckets and the daily-loss baseline restart empty; reference prices restart empty (orders wait for market data); breakers "
        "and trading states are shared memory and survive; a HALTED state found at start is "
        "swept again with CANCEL_ALL; market-data arrival times restart empty (nothing goes "
        "stale before its data comes back), and stale-data halts found at start are adopted "
        "(data resuming ends them)"
    )
    params_keys = param_keys() | {"shared", "recover"}

    @classmethod
    def replay_params(cls, params, journal_dir, deterministic):
        if deterministic:
            params["shared"] = False  # one process: no breaker or trading-state segments
        return params

    @classmethod
    def warm_params(cls, params):
        return (("shared", False),)  # process-local state: no shared segments to attach

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_type(params, "shared", bool, "true or false")
        check_type(params, "recover", bool, "true or false")

    @classmethod
    def validate(cls, params):
        """The limits parse (an ``instruments_file`` is read here)."""
        try:
            lim = RiskLimits.from_params(limits_params(params))
        except RiskConfigError as exc:
            key = getattr(exc, "key", "-").removeprefix("params.")
            raise ParamError(key, getattr(exc, "problem", str(exc))) from None
        try:  # what setup builds from them: money and times in int64, table sizes
            build_arrays(lim, lim.instrument_table(), risk_producer=0)
            if lim.max_tracked_orders > 1 << 24:
                raise ValueError(f"max_tracked_orders {lim.max_tracked_orders} above 2^24")
        except (OverflowError, ValueError) as exc:
            raise ParamError("-", f"limits cannot be used: {exc}") from None

    @classmethod
    def create_shared_segments(cls, params, instance: str) -> list[str]:
        """A shared risk stage (``shared``, the default) needs the instance's breakers,
        trading states and operator log; all or nothing."""
        if not params.get("shared", True):
            return []
        lim = RiskLimits.from_params(limits_params(params))  # recover = true is no limit
        made = create_risk_segments(
            instance, len(lim.breakers), max(lim.instrument_table().ids), lim.breakers
        )
        try:
            made.append(create_operator_log(instance))
        except BaseException:
            for name in made:
                Segment.unlink(name)
            raise
        return made

    @classmethod
    def publishes_risk_panel(cls, params) -> bool:
        """A shared risk stage copies its PnL, positions and limit use into the metrics
        segment (the first one of the topology: ``bot4.shm.metrics``, risk panel)."""
        return bool(params.get("shared", True))

    def hot_tables(self):
        """The risk book's arrays (positions, the seen-id map, limits' counters)."""
        return self.book.st

    def setup(self) -> None:
        params = dict(self.params)
        shared = params.pop("shared", True)
        recover = params.pop("recover", True)
        if not isinstance(shared, bool):
            raise Bot4Error("risk params: shared must be true or false", Code.CONFIG_INVALID)
        self.limits = RiskLimits.from_params(params)
        table = self.limits.instrument_table()
        self.table = table
        self.arrays = build_arrays(self.limits, table, risk_producer=self.spec.index)
        max_id = max(table.ids)
        self.state_log = None
        if shared:
            brk = Breakers(self.instance)
            ts = TradingState(self.instance)
            self._attachments = (brk, ts)  # mapped for the life of the process
            # the one process that logs breaker and trading-state changes (state_log)
            self.state_log = SharedStateLog(brk.words, ts.words, self._symbol)
            used = {int(b) for b in self.arrays.ilim[:, L_BREAKER] if b >= 0}
            if used and max(used) >= brk.count:
                raise Bot4Error(
                    f"risk: breaker index {max(used)} configured, segment has {brk.count}",
                    Code.CONFIG_INVALID,
                )
            if ts.n_instruments < max_id:
                raise Bot4Error(
                    f"risk: instrument ids up to {max_id}, trading-state segment has "
                    f"{ts.n_instruments}",
                    Code.CONFIG_INVALID,
                )
            brk_words, ts_words = brk.words, ts.words
        else:
            brk_words = local_breakers(self.limits.breakers, self.clock())
            ts_words = np.zeros(trading_bytes(max_id) // 8, np.uint64)
            init_trading_state(ts_words, max_id, self.clock())
        self.book = RiskBook(self.arrays, brk_words, ts_words, self.limits.max_tracked_orders)
        thresholds = [
            int(t)
            for t in (
                *self.arrays.ilim[self.arrays.ilim[:, L_KNOWN] != 0, L_STALE_NS],
                self.arrays.alim[A_FEED_GONE_NS],
            )
            if t > 0
        ]
        has_md = len(self.inputs) > 2
        self.stale_every = min(STALE_CHECK_NS, min(thresholds) // 2) if thresholds else 0
        if not has_md:
            self.stale_every = 0  # no market data input: nothing can go stale
        self._stale_due = 0
        # stale and feed-gone episodes logged (the counters', as restored)
        self._stale_logged = self._stale_episodes()
        self.scratch = np.zeros(max(1, self.spec.batch) * self.max_out_per_in, RISK_DECISION)
        self._no_md = np.zeros(0, MARKET_DATA)
        self._schedule_reset()
        self.recovered = None
        if self.topology is not None and self.session > 0 and recover:
            self._recover_positions()
        self._panel = None  # the metrics segment when this stage publishes the risk panel
        self._panel_due = 0
        if shared and self.topology is not None:
            try:
                seg = M.Metrics(self.instance)
            except (Bot4Error, ValueError):
                seg = None  # segments created without it (an older creator): no panel
            if seg is not None and seg.risk_writer == self.spec.index:
                self._panel = seg
                self._publish_panel()
            elif seg is not None:
                seg.close()

    def _publish_panel(self) -> None:
        account, rows = self.book.panel()
        M.publish_risk(self._panel.words, self.arrays.price_scale, account, rows)

    def _recover_positions(self) -> None:
        """A restart within the session: re-apply the fills the previous process had applied.

        The OMS writes each report to ``fills`` (our input 1) and to ``exec_events`` (to
        persistence) under the same ``seq``, in one batch, ``fills`` committed first.
        Everything from the first record still unread in our fills ring on reaches us again
        through the ring; every fill of the session before it was applied by the previous
        process and is applied again here, from :func:`applied_fills`: the session's
        ``exec_events`` as persistence journalled them *and* as still unconsumed in that
        ring (read first, then the journal: a record persistence releases in between is
        journalled before it is released), counted once by ``seq`` — so the rebuild is exact
        whatever persistence's lag, and a frame journalled twice (a persistence restart
        between writing it and releasing its input) is not applied twice. Positions,
        average cost and realised PnL follow; open orders do not (their reports move the
        position when they come, like any report for an order we do not know). The OMS of
        the same process (the hot group) is not running while this reads: nothing is
        written to either ring meanwhile.
        """
        if len(self.inputs) < 2:
            return
        fills = self.inputs[1]
        twin = self.topology.journalled_twin(fills.name)  # the pipeline knows who journals
        if twin is None:
            return
        events, journal = twin
        done = applied_fills(self.instance, fills.name, events.name, journal, self.session)
        if done is None or not len(done):
            return
        scratch = np.zeros(len(done) * self.max_out_per_in + 1, ORDER)
        self.book.fills(done, scratch, 0, self.clock())
        self.recovered = {"fills": len(done), "positions": self.book.positions()}
        log.warning("risk: restarted mid-session; %d fills re-applied from the journal", len(done))

    def _symbol(self, instrument_id: int) -> str:
        return self.table.symbol_of(instrument_id) if instrument_id in self.table else "?"

    def _schedule_reset(self) -> None:
        utc = next_reset_utc_ns(self.wall_clock(), self.limits.timezone, self.limits.daily_reset)
        self.book.schedule_reset(max(1, monotonic_of_utc(utc, self.clock, self.wall_clock)))

    def process(self, i, batch, outs, counts, seq):
        now = self.clock()
        if i == 0:
            decisions = outs[1] if len(outs) > 1 else self.scratch
            n_o, n_d = self.book.check(batch, outs[0], decisions, seq, now)
            counts[0] = n_o
            if len(outs) > 1:
                counts[1] = n_d
            seq += n_o + n_d
        else:
            fn = (self.book.fills, self.book.market_data, self.book.book_levels)[i - 1]
            n_o = fn(batch, outs[0], seq, now)
            counts[0] = n_o
            seq += n_o
        if self.book.reset_due:
            self._schedule_reset()
        return seq

    def summary(self) -> dict:
        stale = self.book.stale()
        stale["instruments"] = [self.table.symbol_of(i) for i in stale["instruments"]]
        return {
            "decisions": self.book.decision_counts(),
            "cancel_all_sent": int(self.book.counters[C_CANCEL_ALL]),
            "broken_fills": int(self.book.counters[C_BROKEN_FILLS]),
            "daily_pnl": self.book.daily_pnl(),
            "recovered": self.recovered,
            "stale": stale,
            "positions": {
                self.table.symbol_of(i): p
                for i, p in self.book.positions().items()
                if p["position"] or p["open_orders"] or p["realised"]
            },
        }

    def _stale_episodes(self) -> int:
        c = self.book.st.counters
        return int(c[C_STALE]) + int(c[C_FEED_GONE])

    def log_stale(self) -> None:
        """The warning for stale episodes started since the last one logged, from the
        counters: whoever ran the check (this stage's ``pending``, a compiled hot group,
        bot4.stages.hotloop, or the replay's quiet steps, bot4.replay.quiet) each
        episode is logged once, when the stage next looks."""
        episodes = self._stale_episodes()
        if episodes > self._stale_logged:
            st = self.book.stale()
            log.warning(
                "risk: market data stale (%d new): instruments %s%s",
                episodes - self._stale_logged,
                [self.table.symbol_of(i) for i in st["instruments"]],
                ", feed gone: global HALTED" if st["feed_gone"] else "",
            )
        self._stale_logged = episodes

    def pending(self, now_ns: int) -> int:
        """CANCEL_ALLs waiting to go out (loop hook: records sent outside an input batch,
        so the kill switch does not wait for the next input). Evaluates stale market data
        first, at most every ``stale_every`` ns."""
        if self.stale_every and now_ns >= self._stale_due:
            self._stale_due = now_ns + self.stale_every
            self.book.staleness(now_ns)
        self.observe(now_ns)
        return self.book.poll()

    def observe(self, now_ns: int) -> None:
        """Stale-data episodes and breaker / trading-state transitions into the log, the
        risk panel into its segment (at most every ``metrics.RISK_PANEL_NS``)."""
        self.log_stale()
        if self.state_log is not None:
            self.state_log.poll(now_ns)
        if self._panel is not None and now_ns >= self._panel_due:
            self._panel_due = now_ns + M.RISK_PANEL_NS
            self._publish_panel()

    def emit(self, outs, counts, seq: int) -> int:
        """Write waiting CANCEL_ALLs (at most ``len(outs[0])``) to output 0; next seq."""
        counts[:] = 0
        n = self.book.market_data(self._no_md, outs[0], seq, self.clock())
        counts[0] = n
        return seq + n

    def on_drain(self) -> None:
        """Shutdown policy: none of its own (the OMS cancels what rests when it drains)."""

    def on_stopped(self) -> None:
        """Logs the summary once the stage read its last record: in a group, after it
        trailed the fills the OMS forwarded while it drained (``StageRunner.trail``), so
        its positions are the net of every fill persistence journalled."""
        if self._panel is not None:
            self._publish_panel()
        log_event(log, logging.INFO, "stage_summary", "risk summary", summary=self.summary())


def first_unread_seq(instance: str, ring: str) -> int | None:
    """``seq`` of the first record of ``ring`` its consumer has not released, None when it
    holds none (read-only)."""
    from bot4.oms.recovery import unconsumed_records

    recs = unconsumed_records(instance, ring, EXEC_REPORT)
    return int(recs[0]["seq"]) if len(recs) else None


def applied_fills(
    instance: str, fills: str, events: str, journal: Path, session: int
) -> np.ndarray | None:
    """The fills (``EXEC_FILL`` / ``EXEC_PARTIAL_FILL`` with ``last_qty > 0``, and the trade
    busts, ``EXEC_BROKEN``, that reverse them) of
    ``session`` that the consumer of ring ``fills`` has released: those before the first
    record still in it by ``seq`` (all of them when it is empty), taken from ring
    ``events`` (the OMS's twin of ``fills``, unconsumed records) and then the journal its
    consumer writes, each ``seq`` once, in ``seq`` order. None before persistence made its
    journal and with nothing in ``events`` (a first start). See
    ``RiskStage._recover_positions``."""
    from bot4.journal import JournalReader
    from bot4.oms.recovery import session_range, unconsumed_records

    lo, hi = session_range(session)
    first_unread = first_unread_seq(instance, fills)
    if first_unread is not None:
        hi = min(hi, first_unread)
    parts = [unconsumed_records(instance, events, EXEC_REPORT)]  # the ring before the journal
    if journal.is_dir():
        parts += [recs for _pos, rtype, recs in JournalReader(journal) if rtype == RT_EXEC_REPORT]
    elif not len(parts[0]):
        return None
    recs = np.concatenate(parts) if len(parts) > 1 else parts[0]
    recs = recs[(recs["seq"] >= lo) & (recs["seq"] < hi) & (recs["last_qty"] > 0)]
    recs = recs[np.isin(recs["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_BROKEN))]
    _, first = np.unique(recs["seq"], return_index=True)  # sorted by seq, each seq once
    return recs[first]


def warm_kernels() -> int:
    """Compile (or load from numba's cache) the risk kernels on process-local state."""
    from bot4.records import BOOK_LEVEL, ORDER_INTENT
    from bot4.spec import RingSpec, StageSpec

    spec = StageSpec(name="warm", kind="risk", core=0, index=0, params={"shared": False})
    ins = [
        RingSpec(f"i{k}", "a", "warm", t, 8, 2, 0, False)
        for k, t in enumerate(("ORDER_INTENT", "EXEC_REPORT", "MARKET_DATA", "BOOK_LEVEL"))
    ]
    outs = [
        RingSpec(f"o{k}", "warm", "b", t, 8, 2, 0, False)
        for k, t in enumerate(("ORDER", "RISK_DECISION"))
    ]
    st = RiskStage(spec, ins, outs, "warm")
    st.setup()
    views = [np.zeros(16, ORDER), np.zeros(16, RISK_DECISION)]
    counts = np.zeros(2, np.int64)
    for k, dt in enumerate((ORDER_INTENT, EXEC_REPORT, MARKET_DATA, BOOK_LEVEL)):
        batch = np.zeros(2, dt)
        batch["seq"] = [1, 2]
        st.process(k, batch, views, counts, 1)
    st.pending(0)
    st.emit(views, counts, 1)
    return 6
