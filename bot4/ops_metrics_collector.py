"""The metric families of ``bot4 metrics serve``: :class:`Bot4Collector` turns one snapshot
of an instance (:func:`bot4.ops_stats.snapshot`, taken at each scrape) into Prometheus
families — the pipeline, stages (with psutil's CPU seconds, resident memory, context
switches and core per stage process), rings, breakers, trading states, latency histograms,
order flow, the loader's lag and the risk panel. The HTTP server, readiness and the
database check are :mod:`bot4.ops_metrics`'s.

Conventions: every family is prefixed ``bot4_``; the instance is the label
``bot4_instance`` (``instance`` is Prometheus' target label); counters end in ``_total``;
base units are seconds, bytes and shares; latency histograms have ``LATENCY_BUCKETS_S``
fixed ``le`` buckets (seconds). Names and meanings: docs/operations.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import psutil
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from bot4.ops_stats import snapshot
from bot4.shm import histogram as H
from bot4.shm.breakers import STATE_NAMES as BREAKER_STATES
from bot4.shm.control import LIVE_NAMES, PIPE_NAMES, STAGE_NAMES
from bot4.shm.trading_state import STATE_NAMES as TRADING_STATES

#: the ``le`` bounds of every latency histogram, seconds (``+Inf`` is added)
LATENCY_BUCKETS_S = (
    1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5,
)  # fmt: skip

_NS = 1e-9


def _sec(ns) -> float:
    return math.nan if ns is None else ns * _NS


class Bot4Collector:
    """Metric families of one instance, read from its segments at each scrape."""

    def __init__(self, instance: str, stage_names: list[str] | None = None) -> None:
        self.instance = instance
        self.stage_names = stage_names
        self._procs: dict[int, psutil.Process] = {}
        self.last_snapshot: dict | None = None

    def describe(self) -> list[Metric]:
        return []  # families depend on the instance's segments: no fixed description

    def collect(self) -> Iterator[Metric]:
        t0 = time.monotonic()
        snap = snapshot(self.instance, self.stage_names)
        self.last_snapshot = snap
        inst = self.instance
        up = GaugeMetricFamily(
            "bot4_instance_up", "1 while the instance has segments", labels=["bot4_instance"]
        )
        up.add_metric([inst], 1.0 if snap["exists"] else 0.0)
        yield up
        if snap["pipeline"] is not None:
            ps = StateSetMetricFamily(
                "bot4_pipeline_state", "pipeline state (control block)", labels=["bot4_instance"]
            )
            ps.add_metric(
                [inst], {n: snap["pipeline"] == n for n in PIPE_NAMES.values() if n != "none"}
            )
            yield ps
            stuck = GaugeMetricFamily(
                "bot4_pipeline_stuck_seconds",
                "no ring moved for this long while some hold records (0: moving)",
                labels=["bot4_instance"],
            )
            stuck.add_metric([inst], _sec(snap.get("pipeline_stuck_for_ns") or 0))
            yield stuck
        yield from self._stages(snap)
        yield from self._rings(snap)
        yield from self._breakers(snap)
        yield from self._trading(snap)
        yield from self._latency(snap)
        yield from self._flow(snap)
        yield from self._risk(snap)
        steal = (snap.get("host") or {}).get("steal_ns")
        if steal:
            fam = CounterMetricFamily(
                "bot4_host_steal_seconds",
                "time the hypervisor did not run this runnable vCPU, since boot (/proc/stat)",
                labels=["bot4_instance", "cpu"],
            )
            for cpu, ns in enumerate(steal):
                fam.add_metric([inst, str(cpu)], _sec(ns))
            yield fam
        took = GaugeMetricFamily(
            "bot4_exporter_scrape_duration_seconds",
            "time this scrape took to read the segments",
            labels=["bot4_instance"],
        )
        took.add_metric([inst], time.monotonic() - t0)
        yield took

    # -- stages -----------------------------------------------------------------------------
    def _stages(self, snap: dict) -> Iterator[Metric]:
        lab = ["bot4_instance", "stage"]
        state = StateSetMetricFamily("bot4_stage_state", "stage state", labels=lab)
        live = StateSetMetricFamily(
            "bot4_stage_liveness",
            "the supervisor's verdict from the ring cursors (blocked = backpressure)",
            labels=lab,
        )
        g = {
            k: GaugeMetricFamily(f"bot4_stage_{k}", h, labels=lab)
            for k, h in (
                ("heartbeat_age_seconds", "age of the stage's last heartbeat (NaN: none yet)"),
                ("stuck_seconds", "how long the stage has been stuck on an input (0: not)"),
                ("pid", "pid of the stage's process"),
                ("pinned_core", "the core the topology pins the stage to"),
                ("resident_memory_bytes", "resident set size of the stage's process"),
                ("cpu", "the core the stage's process last ran on"),
            )
        }
        c = {
            k: CounterMetricFamily(f"bot4_stage_{k}", h, labels=lab)
            for k, h in (
                ("restarts", "restarts of the stage this session"),
                ("records_in", "input records processed"),
                ("records_out", "output records published"),
                ("batches", "batches processed"),
                ("alarms", "integrity alarms raised this session"),
            )
        }
        cpu = CounterMetricFamily(
            "bot4_stage_cpu_seconds", "CPU time of the stage's process", labels=[*lab, "mode"]
        )
        ctx = CounterMetricFamily(
            "bot4_stage_context_switches",
            "context switches of the stage's process",
            labels=[*lab, "kind"],
        )
        named = GaugeMetricFamily(
            "bot4_stage_counter",
            "a stage's own named counter (docs/gateways.md: a gateway's gaps, re-requests, "
            "reconnects...), counted since the stage's process started",
            labels=[*lab, "counter"],
        )
        for s in snap["stages"]:
            v = [self.instance, s["name"]]
            for k, x in (s.get("counters") or {}).items():
                named.add_metric([*v, k], x)
            state.add_metric(v, {n: s["state"] == n for n in STAGE_NAMES.values() if n != "none"})
            live.add_metric(v, {n: s["liveness"] == n for n in LIVE_NAMES.values() if n != "-"})
            g["heartbeat_age_seconds"].add_metric(v, _sec(s["heartbeat_age_ns"]))
            g["stuck_seconds"].add_metric(v, _sec(s["stuck_for_ns"] or 0))
            g["pid"].add_metric(v, s["pid"])
            g["pinned_core"].add_metric(v, s["core"])
            c["restarts"].add_metric(v, s["restarts"])
            c["records_in"].add_metric(v, s["records_in"])
            c["records_out"].add_metric(v, s["records_out"])
            c["batches"].add_metric(v, s["batches"])
            c["alarms"].add_metric(v, s["alarms"])
            p = self._process(s["pid"])
            if p is None:
                continue
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    mem = p.memory_info().rss
                    sw = p.num_ctx_switches()
                    core = p.cpu_num()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu.add_metric([*v, "user"], t.user)
            cpu.add_metric([*v, "system"], t.system)
            ctx.add_metric([*v, "voluntary"], sw.voluntary)
            ctx.add_metric([*v, "involuntary"], sw.involuntary)
            g["resident_memory_bytes"].add_metric(v, mem)
            g["cpu"].add_metric(v, core)
        yield state
        yield live
        yield from g.values()
        yield from c.values()
        yield cpu
        yield ctx
        yield named

    def _process(self, pid: int) -> psutil.Process | None:
        """The stage's process (kept between scrapes so CPU times are per process)."""
        if pid <= 0:
            return None
        p = self._procs.get(pid)
        if p is None:
            try:
                p = psutil.Process(pid)
            except psutil.Error:
                return None
            self._procs = {q.pid: q for q in self._procs.values() if q.is_running()}
            self._procs[pid] = p
        return p

    # -- rings ------------------------------------------------------------------------------
    def _rings(self, snap: dict) -> Iterator[Metric]:
        lab = ["bot4_instance", "ring"]
        gauges = (
            ("capacity", "capacity", "slots"),
            ("depth", "depth", "records waiting (producer - consumer position)"),
            ("high_water", "high_water", "deepest the ring has been seen"),
        )
        counters = (
            ("produced", "produced_records", "records published"),
            ("consumed", "consumed_records", "records released by the consumer"),
            ("full_waits", "full_waits", "times the producer found the ring full"),
            ("empty_waits", "empty_waits", "times the consumer found the ring empty"),
            ("rejections", "rejections", "records rejected on a full reject-ring"),
            ("producer_batches", "producer_batches", "commits"),
            ("consumer_batches", "consumer_batches", "releases"),
        )
        fams: list[tuple[str, Metric]] = []
        for key, name, doc in gauges:
            fams.append((key, GaugeMetricFamily(f"bot4_ring_{name}", doc, labels=lab)))
        for key, name, doc in counters:
            fams.append((key, CounterMetricFamily(f"bot4_ring_{name}", doc, labels=lab)))
        beat = GaugeMetricFamily(
            "bot4_ring_heartbeat_age_seconds",
            "age of each side's heartbeat in the ring header (NaN: none)",
            labels=[*lab, "side"],
        )
        for r in snap["rings"]:
            v = [self.instance, r["ring"]]
            for key, fam in fams:
                fam.add_metric(v, r[key])
            beat.add_metric([*v, "producer"], _sec(r["producer_heartbeat_age_ns"]))
            beat.add_metric([*v, "consumer"], _sec(r["consumer_heartbeat_age_ns"]))
        for _, fam in fams:
            yield fam
        yield beat

    # -- breakers and trading states ----------------------------------------------------------
    def _breakers(self, snap: dict) -> Iterator[Metric]:
        rows = snap.get("breakers") or []
        if not rows:
            return
        lab = ["bot4_instance", "breaker"]
        st = StateSetMetricFamily("bot4_breaker_state", "circuit breaker state", labels=lab)
        forced = GaugeMetricFamily(
            "bot4_breaker_forced", "1: an operator forced it open", labels=lab
        )
        calls = GaugeMetricFamily(
            "bot4_breaker_window_calls", "calls in the rolling window", labels=lab
        )
        fails = GaugeMetricFamily(
            "bot4_breaker_window_failures", "failures in the rolling window", labels=lab
        )
        trips = CounterMetricFamily("bot4_breaker_trips", "times it opened", labels=lab)
        denied = CounterMetricFamily("bot4_breaker_denied", "calls it denied", labels=lab)
        for b in rows:
            v = [self.instance, b["name"]]
            st.add_metric(v, {n: b["state"] == n for n in BREAKER_STATES.values()})
            forced.add_metric(v, 1.0 if b.get("forced") else 0.0)
            calls.add_metric(v, b["window_calls"])
            fails.add_metric(v, b["window_failures"])
            trips.add_metric(v, b["trips"])
            denied.add_metric(v, b["denied"])
        yield from (st, forced, calls, fails, trips, denied)

    def _trading(self, snap: dict) -> Iterator[Metric]:
        tr = snap.get("trading")
        if not tr:
            return
        lab = ["bot4_instance", "instrument"]
        st = StateSetMetricFamily(
            "bot4_trading_state",
            "trading state: global, and every instrument not active or ever changed",
            labels=lab,
        )
        changes = CounterMetricFamily("bot4_trading_state_changes", "state changes", labels=lab)
        rows = [("global", tr["global"])] if tr["global"] is not None else []
        rows += [(str(r["instrument"]), r) for r in tr["instruments"]]
        for name, r in rows:
            st.add_metric(
                [self.instance, name], {n: r["state"] == n for n in TRADING_STATES.values()}
            )
            changes.add_metric([self.instance, name], r["changes"])
        yield st
        yield changes

    # -- latency and the order flow (the metrics segment) -----------------------------------
    def _latency(self, snap: dict) -> Iterator[Metric]:
        raw = snap.get("_hist") or {}
        if not raw:
            return
        fam = HistogramMetricFamily(
            "bot4_latency_seconds",
            "latency of the order path per hop, from the stamps of every NEW order "
            "(HdrHistogram, 2 significant figures; hops: tick_to_order, md_to_signals, "
            "signals_to_risk, risk_to_orders)",
            labels=["bot4_instance", "hop"],
        )
        bounds_ns = [round(b * 1e9) for b in LATENCY_BUCKETS_S]
        for name, h in raw.items():
            counts = H.counts_of(h)
            cum = H.cumulative_at(counts, bounds_ns)
            total = int(counts.sum())
            buckets = [(repr(b), c) for b, c in zip(LATENCY_BUCKETS_S, cum, strict=True)]
            buckets.append(("+Inf", total))
            fam.add_metric([self.instance, name], buckets, int(h[H.H_SUM]) * _NS)
        yield fam

    def _flow(self, snap: dict) -> Iterator[Metric]:
        f = snap.get("flow")
        if not f:
            return
        inst = self.instance

        def counter(name, doc, label, values):
            fam = CounterMetricFamily(name, doc, labels=["bot4_instance", label])
            for k, v in values.items():
                fam.add_metric([inst, k], v)
            return fam

        yield counter("bot4_orders", "orders the OMS sent, by action", "action", f["orders"])
        yield counter(
            "bot4_exec_reports",
            "execution reports the OMS received, by type",
            "exec_type",
            f["exec_reports"],
        )
        yield counter(
            "bot4_risk_decisions",
            "risk decisions",
            "decision",
            {"accepted": f["decisions_accepted"], "denied": f["decisions_denied"]},
        )
        yield counter("bot4_risk_denials", "risk denials by reason", "reason", f["denials"])
        yield counter("bot4_venue_rejects", "venue rejects by reason", "reason", f["rejects"])
        fills = CounterMetricFamily(
            "bot4_fills", "fills and partial fills", labels=["bot4_instance"]
        )
        fills.add_metric([inst], f["fills"])
        yield fills
        qty = CounterMetricFamily(
            "bot4_filled_shares", "quantity filled (shares)", labels=["bot4_instance"]
        )
        qty.add_metric([inst], f["filled_qty"])
        yield qty
        lag = f.get("loader")
        if lag:
            for key, name, doc in (
                ("journal_frames", "journal_frames", "frames the journal holds (next frame)"),
                ("loaded_frames", "loaded_frames", "frames loaded into the database"),
                ("behind_frames", "lag_frames", "journal frames not yet in the database"),
            ):
                g = GaugeMetricFamily(f"bot4_loader_{name}", doc, labels=["bot4_instance"])
                g.add_metric([inst], lag[key])
                yield g
        pos = GaugeMetricFamily(
            "bot4_position_shares",
            "net filled position per instrument id (buys minus sells)",
            labels=["bot4_instance", "instrument"],
        )
        for k, v in f["positions"].items():
            pos.add_metric([inst, k], v)
        yield pos

    # -- the risk stage's panel: PnL, positions, limit use -----------------------------------
    def _risk(self, snap: dict) -> Iterator[Metric]:
        r = snap.get("risk")
        if not r:
            return
        inst = self.instance
        lab = ["bot4_instance"]
        age = GaugeMetricFamily(
            "bot4_risk_panel_age_seconds",
            "age of the risk stage's last copy of its figures (it copies every 0.1 s)",
            labels=lab,
        )
        age.add_metric([inst], _sec(r["age_ns"]))
        yield age
        acct = GaugeMetricFamily(
            "bot4_risk_account_pnl",
            "account PnL in currency units: realised (fees deducted), unrealised, fees paid, "
            "daily (realised + unrealised since the daily reset)",
            labels=[*lab, "component"],
        )
        for k in ("realised", "unrealised", "fees"):
            acct.add_metric([inst, k], r[k])
        acct.add_metric([inst, "daily"], r["daily_pnl"])
        yield acct
        gross = GaugeMetricFamily(
            "bot4_risk_gross_exposure",
            "sum over instruments of worst-case |position| x price, currency units",
            labels=lab,
        )
        gross.add_metric([inst], r["gross"])
        yield gross
        il = [*lab, "instrument"]
        pnl, pos, open_sh, open_n, use = (
            GaugeMetricFamily(f"bot4_risk_{name}", doc, labels=[*il, *extra])
            for name, doc, extra in (
                ("pnl", "PnL per instrument in currency units: realised (fees deducted), "
                 "unrealised, fees", ["component"]),
                ("position_shares", "the risk stage's signed position per instrument (its "
                 "fills)", []),
                ("open_order_shares", "shares in open orders per instrument and side", ["side"]),
                ("open_orders", "orders resting per instrument ('account': all)", []),
                ("limit_utilisation_ratio", "used / limit (1: at the limit) for every limit "
                 "that is on: per instrument position (worst case with open orders) and "
                 "open_orders; instrument 'account': gross, open_orders, daily_loss, "
                 "daily_halt", ["limit"]),
            )
        )  # fmt: skip
        open_n.add_metric([inst, "account"], r["open_orders"])
        for k, v in r["utilisation"].items():
            if v is not None:
                use.add_metric([inst, "account", k], v)
        for ident, i in r["instruments"].items():
            v = [inst, ident]
            for k in ("realised", "unrealised", "fees"):
                pnl.add_metric([*v, k], i[k])
            pos.add_metric(v, i["position"])
            open_sh.add_metric([*v, "buy"], i["open_buy"])
            open_sh.add_metric([*v, "sell"], i["open_sell"])
            open_n.add_metric(v, i["open_orders"])
            for k, u in i["utilisation"].items():
                if u is not None:
                    use.add_metric([*v, k], u)
        yield from (pnl, pos, open_sh, open_n, use)
