"""The orders stage (OMS): our orders' state, identity, self-trade prevention, the venue.

Rings (``docs/protocol.md``)::

    input 0   orders          ORDER        from risk: ACTION_NEW, ACTION_CANCEL_ALL (kill
                                           switch), ACTION_CANCEL (orig_client_order_id)
    input 1   venue_execs     EXEC_REPORT  from the venue (a feedback ring: it closes the
                                           orders -> venue -> orders cycle)
    output 0  venue_orders    ORDER        NEW, CANCEL, REPLACE, QUERY, CANCEL_ALL
    output 1  fills           EXEC_REPORT  to risk: every report that changes position or
                                           open quantity (fills, partial fills, cancels,
                                           rejects, expiries, replaces), ours included
    output 2  order_events    ORDER        optional: copy of output 0 (persistence)
    output 3  exec_events     EXEC_REPORT  optional: every report received (less duplicates)
                                           and every report the OMS generated (persistence)

Identity. Risk sets ``client_order_id = (intent producer << 48) | intent seq`` and leaves
``order_id`` 0; the OMS assigns ``order_id`` from a monotonic counter when it creates the
order and sends it on every venue message. The idempotency key of an order is
``client_order_id:order_id`` (persistence stores orders and events under it; a replay
of the same intent yields the same client order id, and the OMS refuses to create a
second order for it). On restart the counter continues above anything seen: the
``first_order_id`` param, a restored snapshot and every ``order_id`` in a venue report.
The venue must echo ``ORDER.order_id`` in ``EXEC_REPORT.order_id``.

* A client order id seen before (LRU of ``seen_capacity`` ids, or an open order) never
  yields a second venue order: counted, and answered on ``fills`` with a REJECTED report,
  reason ``DUPLICATE_ORDER``, ``order_id`` 0 (it refers to the refused repeat; the
  original order stands). An LRU miss is not proof of a first use (eviction, restart):
  the database lookup behind a miss comes with the persistence issue.
* A report whose ``exec_id`` was seen (LRU of ``exec_capacity`` ids, each with the hash of
  its content, ``bot4.records.identity``) is dropped and counted when its content is the
  same (a repeat). Under a seen id with *different* content it is an identity conflict:
  counted (``exec_id_conflicts``), logged at ERROR, raised as an alarm on this stage's
  control-block words (``bot4 stats``) — and processed like a new report (forwarded to
  risk, copied to ``exec_events`` for the journal), never dropped: the venue says it
  happened. OMS-generated reports carry ``exec_id`` 0. A restarted OMS refills the LRU
  with the session's journalled reports (``bot4.oms.recovery``).
* A replace gets an OMS client order id, ``(0xFFFF << 48) | n``: intent producer id
  0xFFFF is reserved for the OMS. Reports to risk always carry the id risk sent.

Order states follow ``bot4.oms.states.TABLE``; an event the table refuses leaves the order
as it is and is counted per event (``summary()["illegal"]``). A fill is forwarded to risk
even then: the venue's fills are the position. Reports for orders the OMS does not know
(after a restart) are counted as ``UNKNOWN_ORDER`` and forwarded if they change position
or open quantity.

Self-trade prevention (``docs/stp.md``), chosen per venue with param ``stp``:

* ``venue`` (default): the venue prevents self-trades at match time with the exchanges'
  semantics. Every NEW carries ``stp_mode`` — param ``stp_mode`` (default
  ``venue_default``: 0, the venue's default mode; or ``cancel_new``, ``cancel_resting``,
  ``cancel_both``, ``decrement``), per strategy ``stp_by_strategy`` (``{ "2" =
  "decrement" }``) — unless risk already set one, and ``stp_group`` (param, default 0:
  orders of one group never trade with each other, other groups may). The venue's
  ``EXEC_STP_EXPIRED`` (terminal, EXPIRED) and ``EXEC_STP_DECREMENTED`` (``leaves_qty`` and
  the order's quantity reduced, state unchanged) reach risk like any report; neither is a
  fill.
* ``client``: the conservative pre-trade guard of ``bot4.oms.stp_guard`` runs on every new
  order against our open orders only, with the policy ``stp_mode`` /
  ``stp_by_strategy`` name (``venue_default`` = ``cancel_new``), for a venue without STP.
  Orders it expires or reduces before sending are reported to risk (EXPIRED, or REPLACED
  with the new ``leaves_qty``) with reason ``SELF_TRADE``; makers it cancels or reduces
  are cancelled / replaced at the venue, whose answers reach risk as usual. Orders carry
  ``stp_mode`` 0 and the ``stp_group``.
* ``none``: neither; orders carry ``stp_mode`` 0 (the venue's default applies, if any).

Shutdown policy: when the stage drains, it sends ``ACTION_CANCEL_ALL`` (instrument 0, all)
to the venue before it exits, so nothing of ours rests while no OMS runs; every open order
is marked CANCEL_PENDING locally. The stage then keeps reading ``venue_execs`` until the
venue's CANCELLED answers closed every open order (at most ``loop_drain.DRAIN_REPLY_S``), so they
are journalled and loaded like any report.

Restart recovery and reconciliation (a restarted OMS rebuilds from the journal, queries
the venue and holds new intents until answered) and the hooks beyond ``Stage`` that
carry them (``input_ready``, ``pending``, ``emit``): :mod:`bot4.stages.orders_restart`.

The per-record work is the OMS kernels of :mod:`bot4.oms.from_risk` (input 0),
:mod:`bot4.oms.from_venue` (input 1) and :mod:`bot4.oms.emit`, over the state object
:data:`bot4.oms.state.Oms`; this module is the stage: params, setup, batches, drain,
summary. ``orders_kernel`` and ``execs_kernel`` stay importable from here for the hot
group's cycle (``bot4.stages.hotloop``).
"""

from __future__ import annotations

import logging

import numpy as np

from bot4.logs import log_event
from bot4.oms.book import book_open
from bot4.oms.emit import emit_queries
from bot4.oms.from_risk import mark_cancel_all, orders_kernel
from bot4.oms.from_venue import execs_kernel
from bot4.oms.lru import (
    M_EVICTIONS,
    M_SIZE,
)
from bot4.oms.state import (
    C_BROKEN_FILLS,
    C_CANCEL_SENT,
    C_DUPLICATE_EXEC,
    C_EXEC_CONFLICT,
    C_EXECS,
    C_ILLEGAL,
    C_INTENTS,
    C_NEW_SENT,
    C_RECON_MISMATCH,
    C_RECON_OUTSTANDING,
    C_UNHELD_INTENTS,
    C_UNKNOWN_ORDER,
    COUNTER_NAMES,
    I_NEXT_ORDER_ID,
    MAX_STP_MAKERS,
    STP_WHERE,
    oms_new,
)
from bot4.oms.states import (
    EVENT_NAMES,
    STATE_NAMES,
)
from bot4.oms.stp_guard import (
    GUARD_CANCEL_NEW,
    parse_guard_policy,
)
from bot4.paths import session_seq_base
from bot4.records import (
    EXEC_REPORT,
    ORDER,
)
from bot4.records.errors import Code
from bot4.records.stp import STP_MODE_NAMES, parse_stp_mode
from bot4.shm.segment import SegmentMissingError
from bot4.stages.alarms import StageAlarms
from bot4.stages.base import ParamError, Stage, check_number, check_type
from bot4.stages.orders_restart import RECON_READY, RECON_WAITING, OrdersRestart

log = logging.getLogger("bot4.stage")


# --- the stage --------------------------------------------------------------------------------
def _stp_choice(name) -> tuple[int, int]:
    """``(STP_* an order carries to the venue, the guard's policy)`` for an ``stp_mode`` /
    ``stp_by_strategy`` name (``bot4.records.stp``; the guard also takes its former names,
    e.g. ``decrement_both``); ``venue_default`` is 0 at the venue and CancelNew for the
    guard. ValueError for an unknown name."""
    try:
        mode = parse_stp_mode(name)
    except ValueError:
        if str(name).lower().replace("-", "_") not in ("decrement_both", "decrementboth"):
            raise
        mode = STP_MODE_NAMES["decrement"]
    if mode == 0:
        return 0, GUARD_CANCEL_NEW
    names = {m: k for k, m in STP_MODE_NAMES.items()}
    return mode, parse_guard_policy(names[mode])


def _attach_trading(instance: str):
    """The instance's trading-state words (None when no shared risk stage made them)."""
    from bot4.shm.trading_state import TradingState

    try:
        return TradingState(instance).words
    except SegmentMissingError:
        return None


class OrdersStage(OrdersRestart, Stage):
    """params: ``stp`` (``venue``, ``client`` or ``none``: where self-trade prevention
    happens, module doc), ``stp_mode`` (``venue_default``) and ``stp_by_strategy``
    (``{id: mode}``): the mode orders carry (venue) or the guard's policy (client),
    ``stp_group`` (0), ``stp_max_makers`` (7, the guard's limit), ``max_open_orders``
    (4096), ``max_instrument`` (1023),
    ``seen_capacity`` / ``exec_capacity`` (65536 ids each), ``first_order_id``
    (the session's first sequence number, ``bot4.paths``: unique across sessions),
    ``reconcile_timeout_ms`` (2000)."""

    kind = "orders"
    warm_seconds = 60.0
    arity = (2, 2, 2, 4)
    input_types = ("ORDER", "EXEC_REPORT")
    output_types = ("ORDER", "EXEC_REPORT", "ORDER", "EXEC_REPORT")
    max_out_per_in = 1 + MAX_STP_MAKERS
    restart_state = (
        "rebuilt from the session's journal (bot4.oms.recovery): the open orders, reconciled "
        "with the venue by ACTION_QUERY before new intents are taken, every client order id "
        "used, the order-id counter and the venue exec ids seen with their content hashes "
        "(the last exec_capacity: a repeat stays a duplicate, a reused id a conflict). "
        "Without a journal (no persistence output) nothing of this; reports of orders it "
        "does not know are counted as UNKNOWN_ORDER and still forwarded to risk"
    )
    #: live in ``bot4 stats`` (docs/operations.md): a subset of the summary's ``counters``
    #: (bot4.oms.state.COUNTER_NAMES), the ones an operator watches during the day; busts
    #: are here (the order_gateway's slots are full)
    counter_names = ("intents", "new_sent", "cancels_sent", "exec_reports", "duplicate_execs",
                     "exec_conflicts", "unknown_order", "illegal", "broken_fills")  # fmt: skip
    _counter_slots = (C_INTENTS, C_NEW_SENT, C_CANCEL_SENT, C_EXECS, C_DUPLICATE_EXEC,
                      C_EXEC_CONFLICT, C_UNKNOWN_ORDER, C_ILLEGAL, C_BROKEN_FILLS)  # fmt: skip
    params_keys = frozenset(
        {
            "stp",
            "stp_mode",
            "stp_by_strategy",
            "stp_group",
            "stp_max_makers",
            "max_open_orders",
            "max_instrument",
            "seen_capacity",
            "exec_capacity",
            "first_order_id",
            "reconcile_timeout_ms",
            "recover",
        }
    )

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        # table sizes, bounded so a typo is refused here, not at every start
        for key, hi in (
            ("max_open_orders", 1 << 22),
            ("max_instrument", 65535),
            ("seen_capacity", 1 << 24),
            ("exec_capacity", 1 << 24),
        ):
            check_number(params, key, integer=True, lo=1, hi=hi)
        check_number(params, "stp_max_makers", integer=True, lo=1, hi=MAX_STP_MAKERS)
        check_number(params, "first_order_id", integer=True, lo=0)
        check_number(params, "reconcile_timeout_ms", lo=0)
        check_type(params, "recover", bool, "true or false")
        where = params.get("stp", "venue")
        if where not in STP_WHERE:
            raise ParamError(
                "stp",
                f"{where!r} is not one of {', '.join(STP_WHERE)} (the guard's policy is now "
                'stp_mode, with stp = "client")',
            )
        check_number(params, "stp_group", integer=True, lo=0, hi=(1 << 32) - 1)
        check_type(params, "stp_mode", str, "a mode name")  # setup reads it as text
        modes = {"stp_mode": params.get("stp_mode", "venue_default")}
        check_type(params, "stp_by_strategy", dict, "a table {strategy id = mode}")
        for sid, name in params.get("stp_by_strategy", {}).items():
            if not str(sid).isdigit() or not 0 <= int(sid) < 1 << 16:
                raise ParamError(f"stp_by_strategy.{sid}", "strategy ids are integers in 0..65535")
            modes[f"stp_by_strategy.{sid}"] = name
        for key, name in modes.items():
            try:
                _stp_choice(name)
            except ValueError as exc:
                raise ParamError(key, str(exc)) from None

    def hot_tables(self):
        """The OMS state (order slots, id maps, the exec-id set)."""
        return self.oms

    def setup(self) -> None:
        p = self.params
        self.oms = oms_new(
            max_open_orders=int(p.get("max_open_orders", 4096)),
            n_instruments=int(p.get("max_instrument", 1023)) + 1,
            seen_capacity=int(p.get("seen_capacity", 1 << 16)),
            exec_capacity=int(p.get("exec_capacity", 1 << 16)),
            stp_max_makers=int(p.get("stp_max_makers", MAX_STP_MAKERS)),
            first_order_id=int(p.get("first_order_id", session_seq_base(self.session))),
        )
        self.stp_where = p.get("stp", "venue")
        if self.stp_where not in STP_WHERE:
            raise ValueError(f"stp must be one of {list(STP_WHERE)}, got {self.stp_where!r}")
        self.oms.stp_where[0] = STP_WHERE[self.stp_where]
        self.oms.stp_group[0] = int(p.get("stp_group", 0))
        self.default_stp = str(p.get("stp_mode", "venue_default"))
        mode, policy = _stp_choice(self.default_stp)
        self.oms.stp_mode[:] = mode
        self.oms.policy[:] = policy
        for strategy, name in dict(p.get("stp_by_strategy", {})).items():
            sid = int(strategy)
            if not 0 <= sid < 1 << 16:
                raise ValueError(f"stp_by_strategy: strategy id {strategy!r} outside u16")
            self.oms.stp_mode[sid], self.oms.policy[sid] = _stp_choice(name)
        self.reconcile_timeout_ns = int(float(p.get("reconcile_timeout_ms", 2000)) * 1e6)
        self.recon = RECON_READY
        self.recon_deadline_ns = 0
        self.query_slots = np.zeros(0, np.int64)
        self.query_next = 0
        self.recon_attempt = 1
        self.intents_open = False  # reconciling, past the first timeout: intents flow
        self.mismatches_seen = 0  # C_RECON_MISMATCH when disagreements were last acted on
        self.drain_cancel_all = False
        self.drain_cancel_sent = False
        self.n_out = len(self.outputs)
        self.no_events = np.zeros(1, EXEC_REPORT)
        self._prime_kernels()
        self.halted_for = np.zeros_like(self.oms.needs_operator)  # needs_operator acted on
        self.trading = None
        self.recovered = None
        self.conflicts_alarmed = 0
        self.alarms = StageAlarms(
            self.instance, self.spec.index if self.topology is not None else None
        )
        if self.topology is not None and self.session > 0:
            self.trading = _attach_trading(self.instance)
            if p.get("recover", True) and self.n_out > 3:
                self._recover_from_journal()

    def _prime_kernels(self) -> None:
        """Load the kernels of the rare paths now, not at the first restart or drain."""
        o = np.zeros(1, ORDER)
        e = np.zeros(1, EXEC_REPORT)
        orders_kernel(o[:0], o, e, 1, self.oms, 0)
        execs_kernel(e[:0], e, e, True, 1, self.oms)
        emit_queries(self.oms, self.query_slots, 0, 0, o, 1, 0)
        mark_cancel_all(self.oms, 0)

    # -- batches ---------------------------------------------------------------------------
    def process(self, i, batch, outs, counts, seq):
        st = self.oms
        if i == 0:
            if self.recon != RECON_READY and not self.intents_open:
                st.ctr[C_UNHELD_INTENTS] += len(batch)
            nv, nf, seq = orders_kernel(batch, outs[0], outs[1], seq, st, self.clock())
            counts[0] = nv
            counts[1] = nf
            if self.n_out > 2:
                outs[2][:nv] = outs[0][:nv]
                counts[2] = nv
            if self.n_out > 3:
                outs[3][:nf] = outs[1][:nf]
                counts[3] = nf
            return seq
        keep = self.n_out > 3
        nf, ne, seq = execs_kernel(
            batch, outs[1], outs[3] if keep else self.no_events, keep, seq, st
        )
        counts[0] = 0
        counts[1] = nf
        if self.n_out > 2:
            counts[2] = 0
        if keep:
            counts[3] = ne
        self.after_reports()
        return seq

    def after_reports(self) -> None:
        """What the stage does in Python after venue reports went through ``execs_kernel``
        (``process``, and the group's compiled duty cycle, ``bot4.stages.hotloop``, after
        its batches): finish a reconciliation, halt on a late disagreement, alarm new
        exec-id conflicts."""
        st = self.oms
        if self.recon == RECON_WAITING and st.ctr[C_RECON_OUTSTANDING] <= 0:
            self._finish_reconcile(self.clock())
        elif self.recon == RECON_READY and st.ctr[C_RECON_MISMATCH] != self.mismatches_seen:
            self._halt_disagreeing()  # a late answer that genuinely disagrees
        if st.ctr[C_EXEC_CONFLICT] != self.conflicts_alarmed:
            self._alarm_conflicts()

    def _alarm_conflicts(self) -> None:
        """New identity conflicts in the last batch: an ERROR and an alarm (``bot4 stats``)."""
        n = int(self.oms.ctr[C_EXEC_CONFLICT]) - self.conflicts_alarmed
        self.conflicts_alarmed += n
        total = self.alarms.raise_alarm(Code.EXEC_ID_CONFLICT, n)
        log.error(
            "orders: %d execution report(s) reused an exec_id seen with different content "
            "(%d this process, %d alarms this session): processed and journalled, not dropped",
            n,
            self.conflicts_alarmed,
            total,
        )

    def on_drain(self) -> None:
        """Shutdown policy: cancel everything we have resting (one CANCEL_ALL, sent by the
        loop through ``emit`` before the stage exits)."""
        self.drain_cancel_all = True

    def on_stopped(self) -> None:
        """Logs the summary once the stage read its last record: after the venue's answers
        to the shutdown CANCEL_ALL (``awaiting_replies``), so the reports that came during
        the drain (fills, busts) are counted; logged at ``on_drain`` it missed them (the
        wire test saw 252 busts counted of the exchange's 253)."""
        log_event(log, logging.INFO, "stage_summary", "orders summary", summary=self.summary())
        log.info(
            "orders: draining with %d open orders; sending CANCEL_ALL",
            int(self.oms.book.meta[2]),
        )

    def awaiting_replies(self) -> bool:
        """Draining: the drain's CANCEL_ALL left and orders are still open (the venue's
        CANCELLED reports, read before we stop, close them and reach the journal)."""
        return self.drain_cancel_sent and int(self.oms.book.meta[2]) > 0

    def open_orders(self) -> np.ndarray:
        """Snapshot of the open orders (``OPEN_ORDER`` rows) for ``restore_open_orders``."""
        return book_open(self.oms.book)

    def counter_values(self) -> list[int]:
        oms = getattr(self, "oms", None)  # made by setup()
        if oms is None:
            return [0] * len(self._counter_slots)
        ctr = oms.ctr
        return [int(ctr[k]) for k in self._counter_slots]

    def summary(self) -> dict:
        st = self.oms
        ctr = {name: int(st.ctr[k]) for k, name in COUNTER_NAMES.items()}
        states: dict[str, int] = {}
        for s in st.book.slots["state"][st.book.slots["state"] != 0]:
            states[STATE_NAMES[s]] = states.get(STATE_NAMES[s], 0) + 1
        return {
            "counters": ctr,
            "illegal": {EVENT_NAMES[e]: int(v) for e, v in enumerate(st.illegal) if v},
            "needs_operator": {int(i): int(v) for i, v in enumerate(st.needs_operator) if v},
            "open_orders": int(st.book.meta[2]),
            "open_by_state": states,
            "next_order_id": int(st.ids[I_NEXT_ORDER_ID]),
            "reconciling": self.reconciling,
            "recovered": self.recovered,
            "stp": self.stp_where,
            "stp_mode": self.default_stp,
            "seen_ids": int(st.seen.meta[M_SIZE]),
            "seen_evictions": int(st.seen.meta[M_EVICTIONS]),
            "exec_ids": int(st.execs.meta[M_SIZE]),
            "alarms": self.alarms.count,
            "exec_evictions": int(st.execs.meta[M_EVICTIONS]),
        }
