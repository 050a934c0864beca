"""The live view of ``bot4 stats``: a snapshot of :func:`bot4.ops_stats.snapshot` as a text
table at most ``WIDTH`` columns wide — stages (with their counters, alarms and liveness),
groups, rings, latency per hop (the last interval from two snapshots, and since start), the
database loader's lag, the risk panel, breakers, trading states and the last operator
action — highlighted on a terminal.

Pure formatting: it reads nothing but the snapshots it is given.
"""

from __future__ import annotations

from bot4.shm import histogram as H

STALE_HEARTBEAT_NS = 1_000_000_000  # the live table highlights a heartbeat older than this

#: utilisation at or above this is highlighted in the live table
RISK_HIGHLIGHT = 0.9


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


def _num(n: int) -> str:
    """A count in at most 10 characters: 9,999,999 then 12.3M, 1.23G."""
    if n < 10_000_000:
        return f"{n:,}"
    if n < 1_000_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e9:.2f}G"


def _us(ns, width: int = 8) -> str:
    """ns as µs in fewer than ``width`` characters (one blank separates columns): a value
    too wide in µs is shown in ms or s with its unit (a 1.57 s max ran into the next
    column under load)."""
    if ns is None:
        return "-"
    us = ns / 1e3
    if ns >= 1e9:
        fits = (f"{ns / 1e9:.2f}s", f"{ns / 1e9:.1f}s")
    else:
        fits = (f"{us:.1f}" if us < 1_000 else "", f"{us:,.0f}", f"{ns / 1e6:.1f}ms")
    for s in fits:
        if s and len(s) < width:
            return s
    return f"{ns / 1e6:.0f}ms" if ns < 1e9 else f"{ns / 1e9:.0f}s"


WIDTH = 100  # every line of the table fits this many columns (highlighting aside)
_RED, _YELLOW, _OFF = "\033[1;31m", "\033[33m", "\033[0m"


def _mark(line: str, on: bool, color: bool, code: str = _RED) -> str:
    return f"{code}{line}{_OFF}" if on and color else line


def render(
    snap: dict,
    prev: dict | None = None,
    stage_names: list[str] | None = None,
    *,
    color: bool = False,
) -> str:
    """A text table at most ``WIDTH`` columns wide; with ``prev`` (the snapshot before),
    rates per second and the last interval's latencies. ``color`` (a terminal only):
    full rings, stale heartbeats, stuck or failed stages, open breakers and trading that
    is not active are highlighted."""
    dt = (snap["taken_ns"] - prev["taken_ns"]) / 1e9 if prev else 0.0
    head = f"instance {snap['instance']}  pipeline {snap['pipeline'] or '-'}"
    if snap.get("pipeline_stuck_for_ns"):
        head += f"  STUCK: no ring moved for {snap['pipeline_stuck_for_ns'] / 1e9:.1f} s"
    lines = [_mark(head, bool(snap.get("pipeline_stuck_for_ns")), color)]
    if snap["stages"]:
        lines.append(
            f"{'stage':<13}{'pid':>7}{'core':>5} {'state':<9}{'beat':>6}{'rst':>4}"
            f"{'in':>10}{'out':>10}{'in/s':>9}  live"
        )
        prev_stages = prev["stages"] if prev else []
        for k, s in enumerate(snap["stages"]):
            name = s.get("name") or (
                stage_names[k] if stage_names and k < len(stage_names) else f"#{s['index']}"
            )
            if stage_names and k < len(stage_names):
                name = stage_names[k]
            rate = ""
            if prev and dt > 0 and k < len(prev_stages):
                rate = _num(max(0, round((s["records_in"] - prev_stages[k]["records_in"]) / dt)))
            age = s["heartbeat_age_ns"]
            bad = (
                s["state"] == "failed"
                or s.get("liveness") == "stuck"
                or (s["state"] == "running" and (age is None or age > STALE_HEARTBEAT_NS))
            )
            row = (
                f"{name[:13]:<13}{s['pid']:>7}{s['core']:>5} {s['state']:<9}{_age(age):>6}"
                f"{s['restarts']:>4}{_num(s['records_in']):>10}{_num(s['records_out']):>10}"
                f"{rate:>9}  {_live(s)}"
            )
            lines.append(_mark(row, bad, color))
            if s.get("counters"):
                lines += _render_counters(s["counters"])
            if s.get("alarms"):  # on a line of its own: the code names are long
                lines.append(_mark(f"{'':13}{s['alarms']} ALARM {s['alarm']}", True, color))
    for g in snap.get("groups") or []:
        lines.append(
            f"group {g['name']} (pid {g['pid']}, core {g['core']}): {', '.join(g['members'])}"
        )
    lines.append(
        f"{'ring':<15}{'cap':>6}{'depth':>6}{'high':>6}{'produced':>10}{'rate/s':>9}"
        f"{'fullw':>7}{'emptyw':>7}{'rej':>6}{'pids':>14}{'beat p/c':>14}"
    )
    prev_rings = {r["name"]: r for r in prev["rings"]} if prev else {}
    for r in snap["rings"]:
        rate = ""
        if r["name"] in prev_rings and dt > 0:
            rate = _num(max(0, round((r["produced"] - prev_rings[r["name"]]["produced"]) / dt)))
        short = r.get("ring") or r["name"].split(".", 2)[-1]
        pids = f"{r['producer_pid']}/{r['consumer_pid']}"
        beats = f"{_age(r['producer_heartbeat_age_ns'])}/{_age(r['consumer_heartbeat_age_ns'])}"
        row = (
            f"{short[:15]:<15}{r['capacity']:>6}{r['depth']:>6}{r['high_water']:>6}"
            f"{_num(r['produced']):>10}{rate:>9}{_num(r['full_waits']):>7}"
            f"{_num(r['empty_waits']):>7}{_num(r['rejections']):>6}{pids:>14}{beats:>14}"
        )
        lines.append(_mark(row, r["depth"] >= r["capacity"], color))
    lines += _render_latency(snap, prev)
    lines += _render_steal(snap, prev, color)
    lag = (snap.get("flow") or {}).get("loader")
    if lag:
        lines.append(
            f"database loader: {lag['behind_frames']:,} journal frames behind "
            f"({lag['loaded_frames']:,} of {lag['journal_frames']:,} loaded)"
        )
    lines += _render_risk(snap.get("risk"), color)
    lines += _render_breakers(snap.get("breakers") or [], color)
    lines += _render_trading(snap.get("trading"), color)
    lines += _render_operator(snap.get("last_operator_action"))
    return "\n".join(ln if "\033" in ln else ln[:WIDTH] for ln in lines)


def _render_counters(counters: dict[str, int]) -> list[str]:
    """A stage's named counters, indented under its row, wrapped within ``WIDTH``."""
    out, line = [], ""
    for k, v in counters.items():
        item = f"{k} {_num(v)}"
        if line and len(line) + 2 + len(item) > WIDTH:
            out.append(line)
            line = ""
        line = f"{line}  {item}" if line else f"{'':13}{item}"
    return [*out, line] if line else out


def _render_latency(snap: dict, prev: dict | None) -> list[str]:
    """Per hop of the order path: the last interval and since start, µs."""
    lat = snap.get("latency") or {}
    if not lat:
        return []
    cols = ("p50_ns", "p99_ns", "p999_ns", "max_ns")
    out = [
        f"{'latency us':<16}{'interval n':>11}{'p50':>7}{'p99':>8}{'p99.9':>8}{'max':>8}"
        f" |{'total n':>9}{'p50':>7}{'p99':>8}{'p99.9':>8}{'max':>8}"
    ]
    raw, praw = snap.get("_hist") or {}, (prev or {}).get("_hist") or {}
    for name, total in lat.items():
        if name in raw and name in praw:
            iv = H.summary(raw[name], praw[name])
            ivs = f"{_num(iv['count']):>11}" + "".join(
                f"{_us(iv.get(c), w):>{w}}" for c, w in zip(cols, (7, 8, 8, 8), strict=True)
            )
        else:
            ivs = f"{'-':>11}{'-':>7}{'-':>8}{'-':>8}{'-':>8}"
        tot = f"{_num(total['count']):>9}" + "".join(
            f"{_us(total.get(c), w):>{w}}" for c, w in zip(cols, (7, 8, 8, 8), strict=True)
        )
        out.append(f"{name:<16}{ivs} |{tot}")
    return out


def _render_steal(snap: dict, prev: dict | None, color: bool = False) -> list[str]:
    """The host's steal time (a hypervisor not running a vCPU): in the last interval the
    CPUs that had any, in ms (most first: two named, the rest counted), highlighted; since
    boot the sum over the CPUs, in s. Nothing when there was none since boot, or it is
    unknown."""
    now = (snap.get("host") or {}).get("steal_ns")
    if not now or not any(now):
        return []
    was = ((prev or {}).get("host") or {}).get("steal_ns")
    d = (
        [max(0, a - b) for a, b in zip(now, was, strict=True)]
        if was and len(was) == len(now)
        else []
    )
    hit = sorted(((x, -i) for i, x in enumerate(d) if x), reverse=True)
    iv = (
        ", ".join(f"cpu{-i} {x / 1e6:,.0f} ms" for x, i in hit[:2])
        if hit
        else ("none" if d else "-")
    )
    if len(hit) > 2:
        iv += f" +{len(hit) - 2} CPUs"
    line = f"host steal       interval {iv} | since boot {sum(now) / 1e9:,.1f} s"
    return [_mark(line, bool(hit), color)]


def _money(x: float) -> str:
    """Currency in at most 11 characters: -999,999.99 then -12.35M, 1.23G."""
    if abs(x) < 1e6:
        return f"{x:,.2f}"
    if abs(x) < 1e9:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1e9:.2f}G"


def _pct(u: float | None) -> str:
    return "-" if u is None else f"{100 * u:.0f}%"


def _render_risk(risk: dict | None, color: bool = False) -> list[str]:
    """The risk stage's PnL and how much of each limit is used (the fullest instrument's
    position limit), highlighted from ``RISK_HIGHLIGHT``."""
    if not risk:
        return []
    u = risk["utilisation"]
    pos = [
        (i["utilisation"]["position"], k)
        for k, i in risk["instruments"].items()
        if i["utilisation"]["position"] is not None
    ]
    top = max(pos) if pos else (None, "-")
    pnl = (
        f"risk pnl {_money(risk['realised'] + risk['unrealised'])} realised "
        f"{_money(risk['realised'])} unrealised {_money(risk['unrealised'])} fees "
        f"{_money(risk['fees'])} daily {_money(risk['daily_pnl'])}"
    )
    use = (
        f"limits used: daily loss {_pct(u['daily_loss'])}, halt {_pct(u['daily_halt'])}, "
        f"gross {_pct(u['gross'])}, open orders {_pct(u['open_orders'])}, "
        f"position {_pct(top[0])} ({top[1]})"
    )
    hot = any(v is not None and v >= RISK_HIGHLIGHT for v in [*u.values(), top[0]])
    return [pnl, _mark(use, hot, color)]


def _render_breakers(rows: list[dict], color: bool = False) -> list[str]:
    if not rows:
        return []
    out = [f"{'breaker':<20}{'state':<15}{'calls':>8}{'fails':>8}{'trips':>8}{'denied':>10}"]
    for b in rows:
        state = b["state"] + (" (forced)" if b.get("forced") else "")
        row = (
            f"{b['index']:>2} {b['name'][:17]:<17}{state:<15}{b['window_calls']:>8,}"
            f"{b['window_failures']:>8,}{b['trips']:>8,}{b['denied']:>10,}"
        )
        code = _RED if b["state"] == "open" else _YELLOW
        out.append(_mark(row, b["state"] != "closed", color, code))
    return out


def _render_operator(op: dict | None) -> list[str]:
    if not op:
        return []
    note = f"  ({op['note']})" if op["note"] else ""
    return [
        f"last operator action: {op['who']} {op['action']} {op['target']} "
        f"{op['old_state']} -> {op['new_state']}, {op['age_ns'] / 1e9:.1f} s ago{note}"
    ]


def _render_trading(tr: dict | None, color: bool = False) -> list[str]:
    if not tr:
        return []
    out = [f"{'trading':<20}{'state':<12}{'reason':<22}{'source':<10}{'changes':>8}"]
    rows = []
    if tr["global"] is not None:
        rows.append(("global", tr["global"]))
    rows += [(f"instrument {r['instrument']}", r) for r in tr["instruments"]]
    for label, r in rows:
        row = f"{label:<20}{r['state']:<12}{r['reason']:<22}{r['source']:<10}{r['changes']:>8,}"
        code = _RED if r["state"] == "halted" else _YELLOW
        out.append(_mark(row, r["state"] != "active", color, code))
    return out
