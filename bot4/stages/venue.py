"""Venue stage: the simulated exchange. Orders and market data in, execution reports out.

Inputs: ring 0 carries ORDER records from the orders stage (NEW, CANCEL, REPLACE, QUERY,
CANCEL_ALL); the optional ring 1 carries MARKET_DATA from the md stage (other
participants' orders, quotes and trades: the liquidity our orders meet). Output ring 0
carries EXEC_REPORT records to the orders stage. Matching, market data handling and the
report delay queue are the :mod:`bot4.venue` kernels (``orders``, ``feed``, ``reports``;
:mod:`bot4.venue.matching` maps them); this class only wires them to the loop.

params (all optional):

* ``latency_ns`` (0): a report is released no earlier than ``latency_ns`` after the venue
  transaction that produced it;
* ``maker_fee`` / ``taker_fee`` (0 / 0): price units per share on each fill, negative for
  a rebate; a report's ``fee`` is that times ``last_qty``;
* ``instruments`` (16): books for instrument ids 1 .. instruments (others are rejected with
  ``UNKNOWN_INSTRUMENT``); ``capacity`` (65536): resting orders, ours and external;
  ``levels`` (1024): price levels per side and book; ``max_open`` (4096): live orders of
  ours; ``history`` (65536): finished orders remembered for duplicate detection and
  queries; ``queue`` (16384): undelivered reports;
* ``quote_fill`` (``queue``): how our resting orders fill on quote-level data (quotes
  and trade prints, no order-level events): ``queue`` (prints consume the displayed size
  ahead of ours first) or ``trade_through`` (only a price strictly through ours fills it;
  a touch never does) — see :mod:`bot4.venue.feed`;
* ``stp_profile`` (``binance``): self-trade prevention at match time with the semantics of
  the exchanges (``docs/stp.md``); the profile sets the default mode an order with
  ``stp_mode`` 0 gets and the modes an order may carry (others are rejected):
  ``binance`` (default EXPIRE_MAKER = ``cancel_resting``, all four modes), ``coinbase``
  (``decrement``, Coinbase's ``dc``, all four), ``cme`` (cancel resting, the Globex default
  without tag 8000; only ``cancel_new`` / ``cancel_resting``), ``none`` (no prevention
  unless the order asks for a mode); ``stp_default`` (the profile's): another default
  mode among the profile's (``cancel_new``, ``cancel_resting``, ``cancel_both``,
  ``decrement``, or ``none`` = no prevention), like a Binance symbol's
  ``defaultSelfTradePreventionMode``;
* ``md_time`` (``arrival``): the clock market data is applied on: ``arrival`` (the stage
  clock when the batch is processed) or ``event`` (each record's ``ts_event_ns``: the
  venue *is* the exchange that produced the data — replays);
* ``max_out_per_in`` (16): reports released per input record at most in one call. The
  kernels put reports in the delay queue, never straight into the ring, so one input may
  produce any number (a taker sweeping many levels, a cancel-all): what does not fit is
  released by the next calls, oldest first;
* ``orders_stage_index`` (-1 = off) and ``disconnect_after_s`` (2.0): cancel-on-disconnect.
  When the orders stage's heartbeat (control block, read-only) is older than
  ``disconnect_after_s``, every resting order of ours is cancelled once (reports with
  reason ``Code.STAGE_STALLED``, delivered when the orders stage reads its ring again);
  the watch re-arms when the heartbeat moves again.

Reports become due ``latency_ns`` after the order; between input batches the loop asks
:meth:`VenueStage.pending` and releases what is due through :meth:`VenueStage.emit`, which
is also where the orders stage's heartbeat is watched while no input arrives. Reports
still delayed at shutdown are released before the stage exits. The orders stage's index
comes from the topology (the producer of the order input) unless ``orders_stage_index``
is given.

Execution ids: a report's ``exec_id`` is its sequence number on the output ring, assigned
when it is released. The loop numbers a fresh stage's output from the session's first
sequence number and a restarted one from its cursors, so ids continue across a SIGKILL
and stay unique for the life of the data: 2^32 reports per session, after which the stage
refuses to number more (``docs/protocol.md``, identities).
"""

from __future__ import annotations

import logging

import numpy as np

from bot4.logs import log_event
from bot4.paths import SESSION_SEQ_SHIFT, session_seq_base
from bot4.records import STP_NONE
from bot4.records.errors import Bot4Error, Code
from bot4.records.stp import STP_MODE_NAMES, STP_PROFILES
from bot4.stages.base import ParamError, Stage, check_choice, check_number
from bot4.venue.matching import (
    QUOTE_FILL_NAMES,
    Venue,
    venue_cancel_all_kernel,
    venue_md_event_time_kernel,
    venue_md_kernel,
    venue_md_release_kernel,
    venue_order_kernel,
    venue_release_kernel,
)

log = logging.getLogger("bot4.stage")

_DEFAULTS = {
    "instruments": 16,
    "capacity": 1 << 16,
    "levels": 1024,
    "max_open": 4096,
    "history": 1 << 16,
    "queue": 1 << 14,
    "latency_ns": 0,
    "maker_fee": 0,
    "taker_fee": 0,
}


def stp_settings(params: dict) -> tuple[int, tuple[int, ...]]:
    """``(default STP mode, allowed modes)`` of the venue from its ``stp_profile`` and
    ``stp_default`` params; ValueError for an unknown profile or a default the profile
    does not allow."""
    profile = params.get("stp_profile", "binance")
    if profile not in STP_PROFILES:
        raise ValueError(f"stp_profile must be one of {sorted(STP_PROFILES)}, got {profile!r}")
    default, allowed = STP_PROFILES[profile]
    name = params.get("stp_default")
    if name is not None:
        names = {"none": STP_NONE, **{k: m for k, m in STP_MODE_NAMES.items() if m != STP_NONE}}
        if name not in names or (names[name] != STP_NONE and names[name] not in allowed):
            ok = ["none"] + [k for k, m in STP_MODE_NAMES.items() if m in allowed]
            raise ValueError(f"stp_default for profile {profile!r} must be one of {ok}")
        default = names[name]
    return default, allowed


class VenueStage(Stage):
    kind = "venue"
    exchange = True
    warm_seconds = 50.0  # in its three jobs
    warm_split_inputs = True
    arity = (1, 2, 1, 1)
    input_types = ("ORDER", "MARKET_DATA")
    output_types = ("EXEC_REPORT",)
    max_out_per_in = 16
    restart_state = (
        "everything: the books, our resting orders, the order history (duplicate detection, "
        "queries) and reports not yet released; a restarted venue starts empty and answers "
        "QUERY for earlier orders with UNKNOWN_ORDER. Kept: execution ids continue (a "
        "report's exec_id is its output seq, which the loop's cursors carry over)"
    )

    params_keys = frozenset(
        {
            *_DEFAULTS,
            "quote_fill",
            "stp_profile",
            "stp_default",
            "md_time",
            "max_out_per_in",
            "orders_stage_index",
            "disconnect_after_s",
        }
    )

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        # table sizes: whole numbers, bounded so a typo is refused here instead of
        # failing to allocate at every start of the stage
        for key, hi in (
            ("instruments", 65535),
            ("capacity", 1 << 22),
            ("levels", 1 << 16),
            ("max_open", 1 << 22),
            ("history", 1 << 22),
            ("queue", 1 << 20),
        ):
            check_number(params, key, integer=True, lo=1, hi=hi)
        check_number(params, "latency_ns", lo=0)
        check_number(params, "maker_fee")
        check_number(params, "taker_fee")
        check_choice(params, "quote_fill", sorted(QUOTE_FILL_NAMES))
        check_choice(params, "stp_profile", sorted(STP_PROFILES))
        try:
            stp_settings(params)
        except ValueError as exc:
            raise ParamError("stp_default", str(exc)) from None
        check_choice(params, "md_time", ("arrival", "event"))
        check_number(params, "max_out_per_in", integer=True, lo=1, hi=1 << 16)
        check_number(params, "orders_stage_index", integer=True, lo=-1)
        check_number(params, "disconnect_after_s", lo=0)

    @classmethod
    def replay_params(cls, params, journal_dir, deterministic):
        """On the simulated clock: the exchange's time is the data's event time and no
        orders stage's heartbeat is watched; fills on quote data by trade-through unless
        the topology chooses."""
        if deterministic:
            params["md_time"] = "event"
        params.setdefault("quote_fill", "trade_through")
        if deterministic:
            params["orders_stage_index"] = -1
        return params

    @classmethod
    def warm_params(cls, params):
        return tuple((k, params[k]) for k in ("md_time", "disconnect_after_s") if k in params)

    def warm_live(self) -> None:
        """As in a live topology, watching the orders stage's heartbeat (0: "not started
        yet"): its market data and release kernels are the live ones, not the replay's,
        unless ``disconnect_after_s`` is 0."""
        if float(self.params.get("disconnect_after_s", 2.0)) > 0:
            self.heartbeat = np.zeros(1, np.uint64)

    @classmethod
    def check_in_topology(cls, params, topology) -> str | None:
        """What ``params`` say about other stages, checked against ``topology`` at load
        (None: fine). ``orders_stage_index`` must name one of its stages: the watch reads
        that stage's heartbeat in the control block, which has one block per stage, so an
        index past them failed every start of the venue (a crash loop)."""
        i = int(params.get("orders_stage_index", -1))
        n = len(topology.stages)
        if i >= n:
            return (
                f"params.orders_stage_index: {i} is past the last stage (the topology has {n}: "
                f"0..{n - 1}); leave it out (-1: the producer of the venue's order input)"
            )
        return None

    @classmethod
    def out_per_in(cls, params):
        return int(params.get("max_out_per_in", cls.max_out_per_in))

    def __init__(self, spec, inputs, outputs, instance: str = "default", topology=None) -> None:
        super().__init__(spec, inputs, outputs, instance, topology)
        self.max_out_per_in = type(self).out_per_in(self.params)
        if self.max_out_per_in < 1:
            raise ValueError(f"venue max_out_per_in must be >= 1, got {self.max_out_per_in}")

    def hot_tables(self):
        """The venue's book, order pool and id maps."""
        return self.state

    def setup(self) -> None:
        p = self.params
        quote_fill = p.get("quote_fill", "queue")
        if quote_fill not in QUOTE_FILL_NAMES:
            raise ValueError(
                f"venue quote_fill must be one of {sorted(QUOTE_FILL_NAMES)}, got {quote_fill!r}"
            )
        self.md_time = p.get("md_time", "arrival")
        if self.md_time not in ("arrival", "event"):
            raise ValueError(f"venue md_time must be arrival or event, got {self.md_time!r}")
        self.stp_profile = p.get("stp_profile", "binance")
        stp_default, stp_allowed = stp_settings(p)
        self.venue = Venue(
            **{k: int(p.get(k, d)) for k, d in _DEFAULTS.items()},
            quote_fill=QUOTE_FILL_NAMES[quote_fill],
            stp_default=stp_default,
            stp_allowed=stp_allowed,
        )
        self.state = self.venue.state
        # a report's exec_id is its seq (bot4.venue.matching): unique for the life of the
        # data while the session's range lasts; past it, ids would enter the next session's
        self.seq_end = session_seq_base(self.session) + (1 << SESSION_SEQ_SHIFT) - 1
        self.orders_index = int(p.get("orders_stage_index", -1))
        if self.orders_index < 0 and self.topology is not None and self.inputs:
            # the orders stage is the producer of our order input
            self.orders_index = self.topology.stage(self.inputs[0].producer).index
        self.latency_ns = int(p.get("latency_ns", _DEFAULTS.get("latency_ns", 0)))
        self._next_poll_ns = 0
        self.disconnect_ns = int(float(p.get("disconnect_after_s", 2.0)) * 1e9)
        self.control = None
        self.heartbeat: np.ndarray | None = None
        self.disconnected = False
        self.disconnect_cancels = 0
        if self.orders_index >= 0 and self.disconnect_ns > 0:
            from bot4.shm.control import S_HEARTBEAT_NS, ControlBlock

            self.control = ControlBlock(self.instance, readonly=True)
            blk = self.control.stage(self.orders_index)
            self.heartbeat = blk[S_HEARTBEAT_NS : S_HEARTBEAT_NS + 1]
        venue_cancel_all_kernel(self.state, np.int64(0), np.int64(0), 0)  # load it now

    def _check_ids(self, seq: int, room: int) -> None:
        """Refuse to number reports past the session's range: an execution id must never
        repeat (the next session starts there). The stage fails; start a new session."""
        if seq + room > self.seq_end:
            raise Bot4Error(
                f"venue: execution ids of session {self.session} exhausted at {seq} "
                "(2^32 reports per session): start a new session",
                Code.INTERNAL_ERROR,
            )

    def process(self, i, batch, outs, counts, seq):
        self._check_ids(seq, len(outs[0]))
        now = self.clock()
        if i != 0 and self.heartbeat is None:  # market data, release: one kernel call
            n = venue_md_release_kernel(
                self.state, batch, now, self.md_time == "event", outs[0], seq
            )
            counts[0] = n
            return seq + n
        if i == 0:
            venue_order_kernel(self.state, batch, now)
        elif self.md_time == "event":
            venue_md_event_time_kernel(self.state, batch, now)
        else:
            venue_md_kernel(self.state, batch, now)
        if self.heartbeat is not None:
            self._watch_orders_stage(now)
        n = venue_release_kernel(self.state, outs[0], now, seq)
        counts[0] = n
        return seq + n

    def poll(self, now_ns: int, outs, counts, seq: int) -> int:
        """Without input: check the orders stage's heartbeat and release the reports now
        due into ``outs[0]`` (``counts[0]`` of them). Returns the next sequence number."""
        if self.heartbeat is not None:
            self._watch_orders_stage(now_ns)
        self._check_ids(seq, len(outs[0]))
        n = venue_release_kernel(self.state, outs[0], now_ns, seq)
        counts[0] = n
        return seq + n

    def pending(self, now_ns: int) -> int:
        """Reports waiting in the delay queue (polled at most every 50 us, or every
        ``latency_ns`` if shorter); also where the orders stage's heartbeat is watched
        while no input arrives."""
        if now_ns < self._next_poll_ns:
            return 0
        self._next_poll_ns = now_ns + min(50_000, max(1, self.latency_ns))
        if self.heartbeat is not None:
            self._watch_orders_stage(now_ns)
        return self.venue.pending

    def emit(self, outs, counts, seq: int) -> int:
        """The loop's call for stage-initiated records: release what is due."""
        return self.poll(self.clock(), outs, counts, seq)

    def _watch_orders_stage(self, now: int) -> None:
        beat = int(self.heartbeat[0])
        if beat == 0:
            return  # not started yet
        if now - beat > self.disconnect_ns:
            if not self.disconnected:
                self.disconnected = True
                n = venue_cancel_all_kernel(self.state, 0, now, int(Code.STAGE_STALLED))
                self.disconnect_cancels += n
                log.warning(
                    "orders stage %d silent for %.1f s: cancelled %d resting orders",
                    self.orders_index,
                    (now - beat) / 1e9,
                    n,
                )
        elif self.disconnected:
            self.disconnected = False
            log.info("orders stage %d beating again", self.orders_index)

    def summary(self) -> dict:
        return {
            **self.venue.counters(),
            "live_orders": self.venue.live_orders,
            "pending_reports": self.venue.pending,
            "disconnect_cancels": self.disconnect_cancels,
        }

    def on_drain(self) -> None:
        s = self.summary()
        if s["pending_reports"]:
            log.warning("venue stops with %d reports undelivered", s["pending_reports"])
        if s["reports_lost"]:
            log.error("venue lost %d reports on a full delay queue", s["reports_lost"])
        log_event(log, logging.INFO, "stage_summary", "venue summary", summary=s)
        if self.control is not None:
            self.heartbeat = None
            self.control.close()
            self.control = None
