"""The operator view: every stage and ring of a pipeline instance, its circuit breakers and
trading states, read-only.

Attaches the control block, the rings, the breaker segment and the trading-state segment
``PROT_READ`` (it cannot write a word), takes a snapshot per interval and prints a table, or
JSON (orjson) for scripts. Segments the instance does not have are left out (``breakers``
and ``trading`` are then empty / None).

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
"""

from __future__ import annotations

import time

import orjson

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


def snapshot(instance: str) -> dict:
    """Stages (from the control block, if present) and rings of ``instance``."""
    out: dict = {
        "instance": instance,
        "taken_ns": time.monotonic_ns(),
        "pipeline": None,
        "stages": [],
        "rings": [],
        "breakers": [],
        "trading": None,
        "last_operator_action": None,
    }
    if segment_name(instance, C.CONTROL_SEGMENT) in instance_segments(instance):
        try:
            cb = C.ControlBlock(instance, readonly=True)
        except (SegmentMissingError, ValueError):
            cb = None
        if cb is not None:
            now = time.monotonic_ns()
            out["pipeline"] = C.PIPE_NAMES.get(cb.pipeline_state, "?")
            stuck = int(cb.words[C.W_PIPE_STUCK_SINCE_NS])
            out["pipeline_stuck_for_ns"] = (now - stuck) if stuck else None
            for i in range(cb.n_stages):
                b = cb.stage(i)
                beat = int(b[C.S_HEARTBEAT_NS])
                out["stages"].append(
                    {
                        "index": i,
                        # supervised: the supervisor's record; under systemd: the stage's own
                        "pid": int(b[C.S_PID]) or int(b[C.S_PID_SEEN]),
                        "core": int(b[C.S_CORE]),
                        "state": C.STAGE_NAMES.get(int(b[C.S_STATE]), "?"),
                        "heartbeat_age_ns": (now - beat) if beat else None,
                        "restarts": int(b[C.S_RESTARTS]),
                        "last_error": int(b[C.S_LAST_ERROR]),
                        "batches": int(b[C.S_BATCHES]),
                        "records_in": int(b[C.S_RECORDS_IN]),
                        "records_out": int(b[C.S_RECORDS_OUT]),
                        # integrity alarms this session and the latest one's code name
                        "alarms": int(b[C.S_ALARMS]),
                        "alarm": _reason_name(int(b[C.S_ALARM_CODE])),
                        # the supervisor's verdict from the ring cursors (bot4.pipeline.liveness)
                        "liveness": C.LIVE_NAMES.get(int(b[C.S_LIVENESS]), "?"),
                        "liveness_ring": C.read_live_ring(b) or None,
                        "liveness_records": int(b[C.S_LIVE_RECORDS]),
                        "stuck_for_ns": (
                            (now - int(b[C.S_STUCK_SINCE_NS]))
                            if int(b[C.S_STUCK_SINCE_NS])
                            else None
                        ),
                    }
                )
            del b
            cb.close()
    out["rings"] = [r.as_dict() for r in instance_ring_snapshots(instance)]
    out["breakers"] = breakers_snapshot(instance)
    out["trading"] = trading_snapshot(instance)
    out["last_operator_action"] = last_operator_action(instance)
    return out


def to_json(snap: dict) -> bytes:
    return orjson.dumps(snap, option=orjson.OPT_INDENT_2)


def _live(s: dict) -> str:
    """``moving``, ``idle``, ``blocked>RING`` (its full output), ``STUCK 3.2s<RING`` (an
    input with records that does not move while the outputs have room), or ``-``."""
    live, ring = s.get("liveness") or "-", s.get("liveness_ring")
    if live == "blocked" and ring:
        return f"blocked>{ring}"
    if live == "stuck" and ring:
        return f"STUCK {(s.get('stuck_for_ns') or 0) / 1e9:.1f}s<{ring}"
    return live


def _age(ns) -> str:
    return "-" if ns is None else f"{ns / 1e9:.2f}s"


def render(snap: dict, prev: dict | None = None, stage_names: list[str] | None = None) -> str:
    """A text table; with ``prev`` (the snapshot before), rates per second."""
    dt = (snap["taken_ns"] - prev["taken_ns"]) / 1e9 if prev else 0.0
    head = f"instance {snap['instance']}  pipeline {snap['pipeline'] or '-'}"
    if snap.get("pipeline_stuck_for_ns"):
        head += f"  STUCK: no ring moved for {snap['pipeline_stuck_for_ns'] / 1e9:.1f} s"
    lines = [head]
    if snap["stages"]:
        lines.append(
            f"{'stage':<14}{'pid':>8}{'core':>5} {'state':<9}{'beat':>8}{'restarts':>9}{'in':>12}{'out':>12}{'in/s':>10}  {'live':<24}alarms"
        )
        for k, s in enumerate(snap["stages"]):
            name = stage_names[k] if stage_names and k < len(stage_names) else f"#{s['index']}"
            rate = ""
            if prev and dt > 0 and k < len(prev["stages"]):
                rate = f"{(s['records_in'] - prev['stages'][k]['records_in']) / dt:,.0f}"
            lines.append(
                f"{name:<14}{s['pid']:>8}{s['core']:>5} {s['state']:<9}{_age(s['heartbeat_age_ns']):>8}"
                f"{s['restarts']:>9}{s['records_in']:>12,}{s['records_out']:>12,}{rate:>10}"
                f"  {_live(s):<24}"
                + (f"{s['alarms']} ALARM {s['alarm']}" if s.get("alarms") else "")
            )
    lines.append(
        f"{'ring':<26}{'cap':>7}{'depth':>7}{'high':>7}{'produced':>12}{'rate/s':>10}{'fullw':>7}{'emptyw':>8}{'rej':>6}{'pids':>14}{'beat p/c':>14}"
    )
    prev_rings = {r["name"]: r for r in prev["rings"]} if prev else {}
    for r in snap["rings"]:
        rate = ""
        if r["name"] in prev_rings and dt > 0:
            rate = f"{(r['produced'] - prev_rings[r['name']]['produced']) / dt:,.0f}"
        short = r["name"].split(".", 2)[-1]
        lines.append(
            f"{short:<26}{r['capacity']:>7}{r['depth']:>7}{r['high_water']:>7}{r['produced']:>12,}{rate:>10}"
            f"{r['full_waits']:>7}{r['empty_waits']:>8}{r['rejections']:>6}"
            f"{str(r['producer_pid']) + '/' + str(r['consumer_pid']):>14}"
            f"{_age(r['producer_heartbeat_age_ns']) + '/' + _age(r['consumer_heartbeat_age_ns']):>14}"
        )
    lines += _render_breakers(snap.get("breakers") or [])
    lines += _render_trading(snap.get("trading"))
    lines += _render_operator(snap.get("last_operator_action"))
    return "\n".join(lines)


def _render_breakers(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = [f"{'breaker':<20}{'state':<15}{'calls':>8}{'fails':>8}{'trips':>8}{'denied':>10}"]
    for b in rows:
        state = b["state"] + (" (forced)" if b.get("forced") else "")
        out.append(
            f"{b['index']:>2} {b['name']:<17}{state:<15}{b['window_calls']:>8,}"
            f"{b['window_failures']:>8,}{b['trips']:>8,}{b['denied']:>10,}"
        )
    return out


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


def _render_operator(op: dict | None) -> list[str]:
    if not op:
        return []
    note = f"  ({op['note']})" if op["note"] else ""
    return [
        f"last operator action: {op['who']} {op['action']} {op['target']} "
        f"{op['old_state']} -> {op['new_state']}, {op['age_ns'] / 1e9:.1f} s ago{note}"
    ]


def _render_trading(tr: dict | None) -> list[str]:
    if not tr:
        return []
    out = [f"{'trading':<20}{'state':<12}{'reason':<22}{'source':<10}{'changes':>8}"]
    rows = []
    if tr["global"] is not None:
        rows.append(("global", tr["global"]))
    rows += [(f"instrument {r['instrument']}", r) for r in tr["instruments"]]
    for label, r in rows:
        out.append(
            f"{label:<20}{r['state']:<12}{r['reason']:<22}{r['source']:<10}{r['changes']:>8,}"
        )
    return out
