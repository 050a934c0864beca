"""Stand-in stages for the default topology, until the market data, signals, risk, orders
and persistence issues replace them. Each does real work on real records, simply:

* ``synthetic-md`` — a seeded source of top-of-book quotes and trades for several
  instruments: a random-walk mid with volatility clustering (GARCH-like variance), a
  spread of one or more ticks, Poisson-ish bursty arrivals at ``rate`` ticks/s.
* ``signals-standin`` — per instrument EWMA of the mid; an intent to fade moves larger
  than ``threshold_bp`` (mean reversion), with a stop-loss ``stop_bp`` away.
* ``risk-standin`` — fan-in of intents and fills; per-instrument position limit counted
  with open orders; passes orders on with ``ts_risk_ns`` stamped.
* ``orders-standin`` — a stand-in venue: fills each order at its limit price; fan-out of
  the execution report to risk (fills, a feedback ring) and to persistence.
* ``count-sink`` — counts what arrives by record kind; as the instance's metrics recorder
  (``bot4.shm.metrics``) it records the order flow and the tick-to-order and per-hop
  latencies of the NEW orders it reads.

Restart state (not rebuilt): the mid walk of ``synthetic-md`` restarts from its
instruments' base prices; signal EWMAs restart empty; risk positions restart flat
(the risk issue rebuilds them from persistence); the sink's counts cover one process.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.logs import log_event
from bot4.nbkit import copy_stamps, copy_terms, splitmix64, unowned
from bot4.records import (
    ACTION_NEW,
    EXEC_BROKEN,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    MD_QUOTE,
    MD_TRADE,
    OS_FILLED,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.records.errors import Bot4Error
from bot4.shm.histogram import summary as hist_summary
from bot4.shm.metrics import (
    HIST_TICK_TO_ORDER,
    Metrics,
    hist,
    private_metrics,
    record_decisions,
    record_execs,
    record_orders,
)
from bot4.signals.features import intent_stamp
from bot4.stages.base import Stage, check_number

log = logging.getLogger("bot4.stage")


@njit(nogil=True, cache=True)
def _u01(seed, p, salt):
    return (
        splitmix64(seed ^ (np.uint64(p) * np.uint64(0x100000001B3) + np.uint64(salt)))
        >> np.uint64(11)
    ) * (1.0 / 9007199254740992.0)


@njit(nogil=True, cache=True)
def _normal(seed, p, salt):
    u1 = max(_u01(seed, p, salt), 1e-300)
    u2 = _u01(seed, p, salt + 7)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class MdWalk(NamedTuple):
    """The synthetic market data stand-in's GARCH-like walk, built at setup, owned by its
    stage."""

    mids: np.ndarray  # float64[instruments]: mid per instrument, price units (1e-4 $)
    var: np.ndarray  # float64[instruments]: return variance per instrument
    tick: np.ndarray  # int64[instruments]: tick per instrument, price units
    seed: np.uint64  # the stream's seed


class StandinSignals(NamedTuple):
    """The signals stand-in's EWMAs and parameters, built at setup, owned by its stage."""

    ewma: np.ndarray  # float64[64]: price EWMA per instrument - 1, price units
    count: np.ndarray  # int64[64]: quotes seen per instrument - 1
    every: int  # intents only on every ``every``-th record of an instrument
    threshold_bp: float  # least deviation from the EWMA for an intent, bp
    stop_bp: float  # stop distance, bp of the price
    qty: int  # intent quantity, lots


@njit(nogil=True, cache=True)
def _md_kernel(out, position, k, seq, now, w):
    """Records ``position .. position + k - 1`` of the walk ``w`` (:class:`MdWalk` or
    ``tuple()`` of it: the stage passes the plain tuple, which numba's dispatcher types
    ~1 us faster, see ``bot4.signals.routing.RoutedState``) into ``out``, numbered from
    ``seq``, stamped ``now`` (ns); returns the next seq."""
    w = unowned(MdWalk(*w))
    seed, mids, var, tick = w.seed, w.mids, w.var, w.tick
    n_inst = mids.shape[0]
    omega, alpha, beta = 1e-10, 0.08, 0.9
    for i in range(k):
        p = position + i
        inst = np.int64(splitmix64(seed ^ np.uint64(p)) % np.uint64(n_inst))
        z = _normal(seed, p, 1)
        ret = np.sqrt(var[inst]) * z
        var[inst] = omega + alpha * ret * ret + beta * var[inst]
        var[inst] = min(max(var[inst], 1e-10), 1e-4)
        mids[inst] = mids[inst] * (1.0 + ret)
        r = out[i]
        r.seq = seq + i
        r.parent_seq = 0
        r.ts_event_ns = now
        r.ts_recv_ns = now
        r.instrument = inst + 1
        r.order_id = 0
        r.flags = 2  # MDF_SYNTHETIC
        half = tick[inst] * (1 + np.int64(_u01(seed, p, 3) * 3.0))
        mid_units = np.int64(mids[inst] / tick[inst]) * tick[inst]
        u = _u01(seed, p, 5)
        if u < 0.15:
            r.kind = MD_TRADE
            r.side = SIDE_BUY if z > 0 else SIDE_SELL
            r.price = mid_units + half if z > 0 else mid_units - half
            r.qty = 100 * (1 + np.int64(_u01(seed, p, 9) * 5))
        else:
            r.kind = MD_QUOTE
            side = SIDE_BUY if u < 0.575 else SIDE_SELL
            r.side = side
            r.price = mid_units - half if side == SIDE_BUY else mid_units + half
            r.qty = 100 * (1 + np.int64(_u01(seed, p, 11) * 20))
    return seq + k


class SyntheticMarketData(Stage):
    """params: ``rate`` ticks/s (default 20000), ``instruments`` (3), ``seed`` (1),
    ``count`` (0 = unbounded)."""

    kind = "synthetic-md"
    source = True
    replay_feed = True
    arity = (0, 0, 1, 4)
    output_types = ("MARKET_DATA",)
    restart_state = "the mid-price walk restarts from the base prices"
    params_keys = frozenset({"rate", "count", "instruments", "seed"})

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_number(params, "rate", lo=0)
        check_number(params, "count", integer=True, lo=0)
        check_number(params, "instruments", integer=True, lo=1, hi=65535)
        check_number(params, "seed", integer=True, lo=0)

    def setup(self) -> None:
        self.rate = float(self.params.get("rate", 20000))
        self.count = int(self.params.get("count", 0))
        n = int(self.params.get("instruments", 3))
        self.seed = np.uint64(int(self.params.get("seed", 1)))
        self.walk = MdWalk(
            np.array([100.0 * 10_000 * (1 + 0.5 * i) for i in range(n)]),
            np.full(n, 1e-8),
            np.full(n, 100, np.int64),  # $0.01 at scale 1e4
            self.seed,
        )
        self.walk_t = tuple(self.walk)  # what the kernel gets (_md_kernel's doc)
        self.n = n
        self.t_last = self.clock()
        self.tokens = 0.0
        self.offered = 0  # source_ready's last offer, spent by generate

    def source_done(self, position: int) -> bool:
        return self.count > 0 and position >= self.count

    def source_ready(self, position: int, now_ns: int) -> int:
        """Token bucket: ``rate`` ticks/s, 5x during one 100 ms slot in ten (bursts), at
        most 10 ms of ticks saved up. The tokens are spent by what :meth:`generate`
        emits, not by what is offered here: a batch the runner cuts short (its batch size,
        an output's room) keeps the rest for the next call. Spent here, every call that
        offered more than a batch (256) lost the difference, and above ~25 k ticks/s the
        source emitted less than its ``rate`` whenever its loop fell behind."""
        left = self.count - position if self.count else 1 << 30
        if self.rate <= 0:
            return left
        burst = 5.0 if (now_ns // 100_000_000) % 10 == 0 else 1.0
        dt = (now_ns - self.t_last) / 1e9
        self.t_last = now_ns
        self.tokens = min(self.tokens + dt * self.rate * burst, max(1.0, self.rate * 0.01))
        self.offered = min(left, int(self.tokens))
        return self.offered

    def generate(self, position, n, outs, counts, seq):
        self.tokens -= min(n, self.offered)  # what was offered and is emitted now
        self.offered = 0
        nxt = _md_kernel(outs[0], position, n, seq, self.clock(), self.walk_t)
        for j in range(1, len(outs)):
            outs[j][:n] = outs[0][:n]
        counts[: len(outs)] = n
        return n, nxt


@njit(nogil=True, cache=True)
def _signals_kernel(inp, out, seq, sp, now):
    """Intents from ``inp`` into ``out`` (numbered from ``seq``, stamped ``now``, ns) by
    the stand-in's rule over its :class:`StandinSignals` ``sp`` (or ``tuple()`` of it, as
    :func:`_md_kernel`); returns how many."""
    sp = unowned(StandinSignals(*sp))
    ewma, count, every, threshold_bp = sp.ewma, sp.count, sp.every, sp.threshold_bp
    stop_bp, qty = sp.stop_bp, sp.qty
    n = 0
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = r.instrument - 1
        if inst < 0 or inst >= ewma.shape[0] or r.price <= 0:
            continue
        px = float(r.price)
        if ewma[inst] == 0.0:
            ewma[inst] = px
        ewma[inst] = 0.99 * ewma[inst] + 0.01 * px
        count[inst] += 1
        dev_bp = (px - ewma[inst]) / ewma[inst] * 1e4
        if count[inst] % every != 0 or abs(dev_bp) < threshold_bp:
            continue
        o = out[n]
        intent_stamp(o, seq + n, r.seq, r.ts_event_ns, r.ts_recv_ns, now, r.instrument, np.int64(0))
        o.side = SIDE_SELL if dev_bp > 0 else SIDE_BUY
        o.qty = qty
        o.limit_price = r.price
        stop = np.int64(px * stop_bp / 1e4)
        o.stop_price = r.price + stop if o.side == SIDE_SELL else r.price - stop
        o.signal_value = -dev_bp
        n += 1
    return n


class SignalsStandin(Stage):
    kind = "signals-standin"
    arity = (1, 1, 1, 1)
    input_types = ("MARKET_DATA",)
    output_types = ("ORDER_INTENT",)
    restart_state = "EWMAs restart empty"
    params_keys = frozenset({"every", "threshold_bp", "stop_bp", "qty"})

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_number(params, "every", integer=True, lo=1)
        check_number(params, "threshold_bp", lo=0)
        check_number(params, "stop_bp", lo=0)
        check_number(params, "qty", integer=True, lo=1)

    def setup(self) -> None:
        self.sp = StandinSignals(
            np.zeros(64),
            np.zeros(64, np.int64),
            int(self.params.get("every", 10)),
            float(self.params.get("threshold_bp", 0.5)),
            float(self.params.get("stop_bp", 100)),
            int(self.params.get("qty", 100)),
        )
        self.sp_t = tuple(self.sp)  # what the kernel gets (_md_kernel's doc)

    def process(self, i, batch, outs, counts, seq):
        n = _signals_kernel(batch, outs[0], seq, self.sp_t, self.clock())
        counts[0] = n
        return seq + n


@njit(nogil=True, cache=True)
def _risk_intents(inp, out, seq, position, open_qty, limit, now):
    n = 0
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = r.instrument - 1
        signed = r.qty if r.side == SIDE_BUY else -r.qty
        worst = abs(position[inst] + open_qty[inst] + signed)
        if worst > limit:
            continue
        open_qty[inst] += signed
        o = out[n]
        o.seq = seq + n
        o.parent_seq = r.seq
        copy_stamps(o, r)
        o.ts_risk_ns = now
        o.client_order_id = r.seq
        copy_terms(o, r)
        o.action = ACTION_NEW
        n += 1
    return n


@njit(nogil=True, cache=True)
def _risk_fills(inp, position, open_qty):
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = r.instrument - 1
        signed = r.last_qty if r.side == SIDE_BUY else -r.last_qty
        position[inst] += signed
        open_qty[inst] -= signed


class RiskStandin(Stage):
    kind = "risk-standin"
    arity = (1, 2, 1, 1)
    input_types = ("ORDER_INTENT", "EXEC_REPORT")
    output_types = ("ORDER",)
    restart_state = "positions and open quantities restart flat"
    params_keys = frozenset({"max_position"})

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_number(params, "max_position", integer=True, lo=0)

    def setup(self) -> None:
        self.position = np.zeros(64, np.int64)
        self.open_qty = np.zeros(64, np.int64)
        self.limit = int(self.params.get("max_position", 1000))

    def process(self, i, batch, outs, counts, seq):
        if i == 0:
            n = _risk_intents(
                batch, outs[0], seq, self.position, self.open_qty, self.limit, self.clock()
            )
            counts[0] = n
            return seq + n
        _risk_fills(batch, self.position, self.open_qty)
        counts[0] = 0
        return seq


@njit(nogil=True, cache=True)
def _venue_fill(inp, out, seq, exec_id0, now):
    for i in range(inp.shape[0]):
        r = inp[i]
        e = out[i]
        e.seq = seq + i
        e.parent_seq = r.seq
        e.ts_event_ns = r.ts_event_ns
        e.ts_recv_ns = r.ts_recv_ns
        e.ts_order_ns = now
        e.ts_venue_ns = now
        e.exec_id = exec_id0 + i
        e.client_order_id = r.client_order_id
        e.order_id = r.seq
        e.instrument = r.instrument
        e.strategy = r.strategy
        e.side = r.side
        e.exec_type = EXEC_FILL
        e.status = OS_FILLED
        e.last_qty = r.qty
        e.last_price = r.limit_price
        e.cum_qty = r.qty
        e.leaves_qty = 0
        e.fee = 0
    return seq + inp.shape[0]


class OrdersStandin(Stage):
    """Shutdown policy: orders fill at once, so nothing rests to cancel at drain."""

    kind = "orders-standin"
    arity = (1, 1, 1, 2)
    input_types = ("ORDER",)
    output_types = ("EXEC_REPORT",)
    restart_state = "stateless (every order is filled immediately)"

    def process(self, i, batch, outs, counts, seq):
        nxt = _venue_fill(batch, outs[0], seq, np.uint64(seq), self.clock())
        for j in range(1, len(outs)):
            outs[j][: batch.shape[0]] = outs[0][: batch.shape[0]]
        counts[: len(outs)] = batch.shape[0]
        return nxt


_RECORDERS = {
    "ORDER": record_orders,
    "EXEC_REPORT": record_execs,
    "RISK_DECISION": record_decisions,
}


@njit(nogil=True, cache=True)
def _count_exec(inp, net):
    for i in range(inp.shape[0]):
        e = inp[i]
        if (
            e.exec_type == EXEC_FILL or e.exec_type == EXEC_PARTIAL_FILL
        ) and e.instrument < net.shape[0]:
            net[e.instrument] += e.last_qty if e.side == SIDE_BUY else -e.last_qty
        elif e.exec_type == EXEC_BROKEN and e.instrument < net.shape[0]:  # reverses a fill
            net[e.instrument] -= e.last_qty if e.side == SIDE_BUY else -e.last_qty


class CountSink(Stage):
    """Counts records and the net filled quantity per instrument (buys minus sells: the
    position the fills make). The instance's metrics recorder (``bot4.shm.metrics``: the
    first persistence or count-sink of the topology) also records, per batch in a numba
    kernel, the order flow and the latencies of every NEW order into the metrics segment;
    any other (or one without the segment: replay, tests) records into process memory, so
    its summary has them too."""

    kind = "count-sink"
    arity = (1, 8, 0, 0)

    @classmethod
    def warm_shapes(cls, ring_types):
        return [(tuple(ring_types), ())]  # one job, every type on an input

    input_types = ("*",)
    restart_state = (
        "counts cover the current process; the metrics segment's cover the session"
        " (at least once across a restart)"
    )
    #: ``bot4.shm.metrics``: this kind records the order flow and latencies it reads
    records_metrics = True

    def setup(self) -> None:
        self.counts_by_input = np.zeros(len(self.inputs), np.int64)
        self.net = np.zeros(64, np.int64)
        self.metrics_seg = None
        self.metrics = None
        if self.topology is not None:
            try:
                seg = Metrics(self.instance)
            except (Bot4Error, ValueError):
                seg = None  # a topology created without it: record privately
            if seg is not None and seg.recorder == self.spec.index:
                self.metrics_seg, self.metrics = seg, seg.words
            elif seg is not None:
                seg.close()
        if self.metrics is None:
            self.metrics = private_metrics()
        self._recorders = [_RECORDERS.get(r.type) for r in self.inputs]

    def process(self, i, batch, outs, counts, seq):
        self.counts_by_input[i] += batch.shape[0]
        if self.inputs[i].type == "EXEC_REPORT":
            _count_exec(batch, self.net)
        rec = self._recorders[i]
        if rec is not None:
            rec(self.metrics, batch)
        return seq

    def summary(self) -> dict:
        return {
            "records": {
                r.name: int(c) for r, c in zip(self.inputs, self.counts_by_input, strict=True)
            },
            # bot4.shm.histogram's summary (ns) of NEW orders' ts_order_ns - ts_recv_ns
            "tick_to_order_latency": hist_summary(hist(self.metrics, HIST_TICK_TO_ORDER)),
            "net_filled": {int(k): int(self.net[k]) for k in np.flatnonzero(self.net)},
        }

    def on_drain(self) -> None:
        log_event(log, logging.INFO, "stage_summary", "summary", summary=self.summary())
