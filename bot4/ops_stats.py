"""The operator view: every stage and ring of a pipeline instance, its circuit breakers and
trading states, read-only.

Attaches the control block, the rings, the breaker segment and the trading-state segment
``PROT_READ`` (it cannot write a word), takes a snapshot per interval and prints a table, or
JSON (orjson) for scripts. Segments the instance does not have are left out (``breakers``
and ``trading`` are then empty / None).

The table is drawn by :mod:`bot4.ops_stats_view` (``render``); this module reads.

``stages``: per stage its pid, core, state, heartbeat age, restarts, records in and out,
and its integrity alarms this session (``alarms``, with ``alarm`` the latest one's
errors.Code name: an execution id carrying two executions, the journal and the database
disagreeing — ``bot4.stages.alarms``), flagged ``ALARM`` in the table; and the
supervisor's liveness verdict from the ring cursors (``liveness``: idle, moving, blocked —
an output it needs is full —, stuck — an input holds records, the outputs have room, the
input does not move —, with ``liveness_ring``, ``liveness_records`` and ``stuck_for_ns``;
``-`` without a supervisor, under systemd). ``pipeline_stuck_for_ns``: no ring has moved
for this long while some hold records (None otherwise).

``breakers``: per breaker its index, name, state (closed / open / half_open), whether an
operator forced it open, the calls and failures in its rolling window, trips and calls
denied. ``trading``: the global state and every instrument that is not ACTIVE or has ever
changed, each with its state, reason (errors.Code name) and source (operator / risk).
``last_operator_action``: who changed what last — the newest record in the operator log
(``who`` as the kernel named the caller, action, target, old and new state, note, age),
None without one.

Names: every stage carries its ``name`` (from the topology when given, else the names the
creator stored in the metrics segment), every ring its short name (``ring``).
``latency``: per hop of the order path (``bot4.shm.metrics``: tick_to_order,
md_to_signals, signals_to_risk, risk_to_orders) the HdrHistogram summary since the session
started (count, mean, min, p50, p90, p99, p99.9, max, ns); the live table also shows the
last interval (the difference of two snapshots). ``flow``: the order flow the metrics
recorder saw (orders by action, execution reports by type, fills, decisions, denials and
rejects by reason, net position per instrument; ``loader``: the database loader's journal
frames written, loaded and behind, None without one). Heartbeat ages are taken against the
clock read after the heartbeat word (never negative); a stage restarted but not yet
beating shows none (``None``), not its predecessor's.

``host``: the machine's steal time per CPU since boot (``steal_ns``, ns; ``/proc/stat``):
time a hypervisor did not run a runnable vCPU. Nothing in the guest avoids it, and on a
VM it is where ~100 ms pauses of the whole pipeline come from (docs/systemd.md); the
table shows the last interval's and the total. None where ``/proc/stat`` has no steal.

Groups (shared mode, several stages in one process): each stage's ``group`` (the topology's
group name when a topology is given, else ``pid N`` for stages the control block shows in
one live process; None for a stage in a process of its own), and ``groups``: per group its
name, pid, core and members in stage order. The table lists them under the stages.
"""

from __future__ import annotations

import os
import time

import numpy as np
import orjson

import bot4.records as R
from bot4.records import (
    OP_BREAKER_RESET,
    OP_BREAKER_TRIP,
    OP_HALT,
    OP_REDUCE,
    OP_RESUME,
    TARGET_BREAKER,
    TARGET_GLOBAL,
)
from bot4.records.errors import Bot4Error, Code
from bot4.shm import control as C
from bot4.shm import histogram as H
from bot4.shm import metrics as M
from bot4.shm.breakers import BREAKERS_SEGMENT, Breakers
from bot4.shm.breakers import STATE_NAMES as BREAKER_STATES
from bot4.shm.operator_log import OPERATOR_SEGMENT, OperatorLog
from bot4.shm.segment import SegmentMissingError, instance_segments, segment_name
from bot4.shm.stats import instance_ring_snapshots
from bot4.shm.trading_state import STATE_NAMES as TRADING_STATES
from bot4.shm.trading_state import TRADING_SEGMENT, TradingState

BREAKER_FIELDS = (
    "index",
    "name",
    "state",
    "forced",
    "window_calls",
    "window_failures",
    "trips",
    "denied",
)


ACTION_NAMES = {
    getattr(R, n): n[7:].lower() for n in dir(R) if n.startswith("ACTION_") and n != "ACTION_NONE"
}
EXEC_NAMES = {
    getattr(R, n): n[5:].lower()
    for n in dir(R)
    if n.startswith("EXEC_") and isinstance(getattr(R, n), int) and n != "EXEC_NONE"
}


def _reason_name(code: int) -> str:
    if code == 0:
        return "-"
    try:
        return Code(code).name
    except ValueError:
        return str(code)


def breakers_snapshot(instance: str) -> list[dict]:
    """Every breaker of ``instance`` (read-only attach); [] without the segment."""
    if segment_name(instance, BREAKERS_SEGMENT) not in instance_segments(instance):
        return []
    try:
        brk = Breakers(instance, readonly=True)
    except (Bot4Error, ValueError):
        return []  # vanished, or not (yet) a valid segment
    try:
        return [{k: b[k] for k in BREAKER_FIELDS} for b in brk.snapshot()]
    finally:
        brk.close()


def trading_snapshot(instance: str) -> dict | None:
    """Global state and the instruments not ACTIVE or ever changed (read-only attach);
    None without the segment."""
    if segment_name(instance, TRADING_SEGMENT) not in instance_segments(instance):
        return None
    try:
        ts = TradingState(instance, readonly=True)
    except (Bot4Error, ValueError):
        return None
    try:
        rows = ts.snapshot()
        n = ts.n_instruments
    finally:
        ts.close()
    out: dict = {"n_instruments": n, "global": None, "instruments": []}
    for r in rows:
        row = {
            "state": r["state"],
            "reason": _reason_name(r["reason"]),
            "source": r["source"],
            "changes": r["changes"],
        }
        if r["target"] == 0:
            out["global"] = row
        else:
            out["instruments"].append({"instrument": r["target"], **row})
    return out


def metrics_snapshot(instance: str) -> tuple[list[str], dict, dict, dict, dict | None] | None:
    """``(stage names, latency summaries, flow, raw histograms, risk)`` from ``instance``'s
    metrics segment (read-only attach); None without it."""
    if segment_name(instance, M.METRICS_SEGMENT) not in instance_segments(instance):
        return None
    try:
        m = M.Metrics(instance, readonly=True)
    except (Bot4Error, ValueError):
        return None
    try:
        w = m.words
        names = M.stage_names(w)
        raw = {n: M.hist(w, k).copy() for k, n in enumerate(M.HIST_NAMES)}
        f = M.flow(w).copy()
        w_copy = w[: M.FLOW_BASE].copy()
        recorder = m.recorder
        panel = M.risk_panel(w)
    finally:
        del w
        m.close()
    latency = {n: H.summary(h) for n, h in raw.items()}
    flow = {
        "recorder": names[recorder] if recorder is not None and recorder < len(names) else None,
        "orders": {
            ACTION_NAMES.get(k, str(k)): v
            for k, v in M.by_slot(f[M.F_ORDERS : M.F_ORDERS + 16]).items()
        },
        "exec_reports": {
            EXEC_NAMES.get(k, str(k)): v
            for k, v in M.by_slot(f[M.F_EXECS : M.F_EXECS + 16]).items()
        },
        "fills": int(f[M.F_FILLS]),
        "filled_qty": int(f[M.F_FILLED_QTY]),
        "decisions_accepted": int(f[M.F_ACCEPTED]),
        "decisions_denied": int(f[M.F_DENIED]),
        "denials": {
            _reason_name(k): v
            for k, v in M.by_slot(f[M.F_DENIALS : M.F_DENIALS + M.N_REASONS]).items()
        },
        "rejects": {
            _reason_name(k): v
            for k, v in M.by_slot(f[M.F_REJECTS : M.F_REJECTS + M.N_REASONS]).items()
        },
        # the recorder's database loader: journal frames written, loaded, behind (None
        # without a loader)
        "loader": M.loader_lag(w_copy),
        "positions": {
            str(k): int(v)
            for k, v in enumerate(f[M.F_POSITION : M.F_POSITION + M.N_POSITIONS].view(np.int64))
            if v
        },
    }
    return names, latency, flow, raw, risk_view(panel)


def _ratio(used: float, limit: int) -> float | None:
    return None if limit <= 0 else round(used / limit, 6)


def risk_view(panel: dict | None, now_ns: int | None = None) -> dict | None:
    """The risk panel (``bot4.shm.metrics.risk_panel``) in currency units, with each
    limit's utilisation (used / limit; None when the limit is off): account-wide ``gross``,
    ``open_orders``, ``daily_loss`` (the loss since the daily reset against the loss that
    reduces trading) and ``daily_halt``; per instrument ``position`` (worst case with open
    orders, either side, against ``max_position``) and ``open_orders``."""
    if panel is None:
        return None
    scale = panel["price_scale"] or 1
    a = panel["account"]
    loss = max(0, -a["daily_pnl"])
    now = time.monotonic_ns() if now_ns is None else now_ns
    out = {
        "age_ns": max(0, now - panel["updated_ns"]),
        "price_scale": scale,
        **{k: a[k] / scale for k in ("realised", "unrealised", "fees", "daily_pnl", "gross")},
        "open_orders": a["open_orders"],
        "limits": {
            "gross": a["max_gross"] / scale or None,
            "open_orders": a["max_open_orders"] or None,
            "daily_loss": a["daily_loss_limit"] / scale or None,
            "daily_halt": a["daily_halt_limit"] / scale or None,
        },
        "utilisation": {
            "gross": _ratio(a["gross"], a["max_gross"]),
            "open_orders": _ratio(a["open_orders"], a["max_open_orders"]),
            "daily_loss": _ratio(loss, a["daily_loss_limit"]),
            "daily_halt": _ratio(loss, a["daily_halt_limit"]),
        },
        "instruments": {},
    }
    for ident, r in panel["instruments"].items():
        worst = max(abs(r["position"] + r["open_buy"]), abs(r["position"] - r["open_sell"]))
        out["instruments"][str(ident)] = {
            "position": r["position"],
            "open_buy": r["open_buy"],
            "open_sell": r["open_sell"],
            "open_orders": r["open_orders"],
            **{k: r[k] / scale for k in ("realised", "unrealised", "fees")},
            "max_position": r["max_position"] or None,
            "max_open_orders": r["max_open_orders"] or None,
            "utilisation": {
                "position": _ratio(worst, r["max_position"]),
                "open_orders": _ratio(r["open_orders"], r["max_open_orders"]),
            },
        }
    return out


def _groups(stages: list[dict], group_of: dict[str, str] | None) -> list[dict]:
    """Sets ``group`` on every stage and returns the groups (see the module docstring)."""
    by_pid: dict[int, list[dict]] = {}
    for st in stages:
        if st["pid"]:
            by_pid.setdefault(st["pid"], []).append(st)
    for st in stages:
        if group_of is not None:
            st["group"] = group_of.get(st["name"])
        else:
            shared = len(by_pid.get(st["pid"], ())) > 1
            st["group"] = f"pid {st['pid']}" if st["pid"] and shared else None
    groups: dict[str, dict] = {}
    for st in stages:
        if st["group"] is not None:
            g = groups.setdefault(
                st["group"], {"name": st["group"], "pid": st["pid"], "core": st["core"],
                              "members": []}
            )  # fmt: skip
            g["members"].append(st["name"])
    return list(groups.values())


def host_steal_ns() -> list[int] | None:
    """Steal time per CPU since boot, ns (``/proc/stat``: the 8th value of each ``cpuN``
    line, in USER_HZ ticks), CPUs in order; None where it cannot be read."""
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().split(b"\n")
        tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        return [
            int(ln.split()[8]) * tick_ns for ln in lines if ln[:3] == b"cpu" and ln[3:4].isdigit()
        ]
    except (OSError, ValueError, IndexError):
        return None


def snapshot(
    instance: str,
    stage_names: list[str] | None = None,
    group_of: dict[str, str] | None = None,
) -> dict:
    """Stages (from the control block, if present), rings, breakers, trading states,
    latency and flow of ``instance``. ``exists`` is False when it has no segment at all.
    ``stage_names``: from the topology (default: those stored in the metrics segment);
    ``group_of``: stage name -> group name from the topology (default: inferred from pids).
    Keys starting with ``_`` (raw histograms, for the live table's interval) are left out
    of the JSON."""
    segs = instance_segments(instance)
    out: dict = {
        "instance": instance,
        "exists": bool(segs),
        "taken_ns": time.monotonic_ns(),
        "pipeline": None,
        "stages": [],
        "groups": [],
        "rings": [],
        "breakers": [],
        "trading": None,
        "last_operator_action": None,
        "latency": {},
        "flow": None,
        "risk": None,
        "host": None,
    }
    steal = host_steal_ns()
    out["host"] = {"steal_ns": steal} if steal else None
    met = metrics_snapshot(instance)
    names = list(stage_names or [])
    if met is not None:
        names = names or met[0]
        out["latency"], out["flow"], out["_hist"], out["risk"] = met[1], met[2], met[3], met[4]
    if segment_name(instance, C.CONTROL_SEGMENT) in instance_segments(instance):
        try:
            cb = C.ControlBlock(instance, readonly=True)
        except (SegmentMissingError, ValueError):
            cb = None
        if cb is not None:
            now = time.monotonic_ns()
            out["pipeline"] = C.PIPE_NAMES.get(cb.pipeline_state, "?")
            stuck = int(cb.words[C.W_PIPE_STUCK_SINCE_NS])
            out["pipeline_stuck_for_ns"] = max(0, now - stuck) if stuck else None
            for i in range(cb.n_stages):
                b = cb.stage(i)
                beat, started = int(b[C.S_HEARTBEAT_NS]), int(b[C.S_STARTED_NS])
                # a beat older than the process's start is its predecessor's: none yet
                fresh = beat if beat and beat >= started else 0
                out["stages"].append(
                    {
                        "index": i,
                        "name": names[i] if i < len(names) else f"#{i}",
                        # supervised: the supervisor's record; under systemd: the stage's own
                        "pid": int(b[C.S_PID]) or int(b[C.S_PID_SEEN]),
                        "core": int(b[C.S_CORE]),
                        "state": C.STAGE_NAMES.get(int(b[C.S_STATE]), "?"),
                        "heartbeat_age_ns": (
                            max(0, time.monotonic_ns() - fresh) if fresh else None
                        ),
                        "restarts": int(b[C.S_RESTARTS]),
                        "last_error": int(b[C.S_LAST_ERROR]),
                        "batches": int(b[C.S_BATCHES]),
                        "records_in": int(b[C.S_RECORDS_IN]),
                        "records_out": int(b[C.S_RECORDS_OUT]),
                        # integrity alarms this session and the latest one's code name
                        "alarms": int(b[C.S_ALARMS]),
                        "alarm": _reason_name(int(b[C.S_ALARM_CODE])),
                        # the stage's own named counters (a gateway's gaps, reconnects...)
                        "counters": C.read_counters(b),
                        # the supervisor's verdict from the ring cursors (bot4.pipeline.liveness)
                        "liveness": C.LIVE_NAMES.get(int(b[C.S_LIVENESS]), "?"),
                        "liveness_ring": C.read_live_ring(b) or None,
                        "liveness_records": int(b[C.S_LIVE_RECORDS]),
                        "stuck_for_ns": (
                            max(0, now - int(b[C.S_STUCK_SINCE_NS]))
                            if int(b[C.S_STUCK_SINCE_NS])
                            else None
                        ),
                    }
                )
            del b
            cb.close()
    out["groups"] = _groups(out["stages"], group_of)
    out["rings"] = [
        {"ring": r.name.split(".", 2)[-1], **r.as_dict()} for r in instance_ring_snapshots(instance)
    ]
    out["breakers"] = breakers_snapshot(instance)
    out["trading"] = trading_snapshot(instance)
    out["last_operator_action"] = last_operator_action(instance)
    return out


def to_json(snap: dict) -> bytes:
    return orjson.dumps(
        {k: v for k, v in snap.items() if not k.startswith("_")}, option=orjson.OPT_INDENT_2
    )


_OP_NAMES = {
    OP_BREAKER_TRIP: "breaker trip",
    OP_BREAKER_RESET: "breaker reset",
    OP_HALT: "halt",
    OP_REDUCE: "reduce",
    OP_RESUME: "resume",
}


def last_operator_action(instance: str) -> dict | None:
    """The newest operator action still in ``instance``'s operator log (read-only attach):
    who (the kernel's name of the caller), action, target, old and new state, note and its
    age in ns; None without the segment or a record."""
    if segment_name(instance, OPERATOR_SEGMENT) not in instance_segments(instance):
        return None
    try:
        log = OperatorLog(instance, readonly=True)
    except (Bot4Error, ValueError):
        return None
    try:
        r = log.last()
    finally:
        log.close()
    if r is None:
        return None
    kind = int(r["target_kind"])
    if kind == TARGET_BREAKER:
        target, names = f"breaker {int(r['target'])}", BREAKER_STATES
    else:
        target = "global" if kind == TARGET_GLOBAL else f"instrument {int(r['target'])}"
        names = TRADING_STATES
    return {
        "seq": int(r["seq"]),
        "who": bytes(r["who"]).rstrip(b"\0").decode("ascii", "replace"),
        "action": _OP_NAMES.get(int(r["action"]), str(int(r["action"]))),
        "target": target,
        "old_state": names.get(int(r["old_state"]), str(int(r["old_state"]))),
        "new_state": names.get(int(r["new_state"]), str(int(r["new_state"]))),
        "note": bytes(r["note"]).rstrip(b"\0").decode("ascii", "replace"),
        "age_ns": max(0, time.monotonic_ns() - int(r["ts_ns"])),
    }
