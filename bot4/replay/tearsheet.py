"""The replay tearsheet: ``report.html``, one static self-contained page (inline SVG, no
script, no external file), and its CSV exports.

Order, as a quant reads it: what ran (data, session on the exchange's clock, mode, seed);
the summary figures; price with our fills and resting quotes; position over time; equity
and drawdown; round trips (``trades.csv``) and fills (``fills.csv``), each also embedded in
the page as a ``data:`` link so the page alone is enough; end positions; risk denials;
latency (the one histogram implementation's figures, ``bot4.shm.histogram``); and the run
configuration, collapsed, at the end.

Time axes are the session's clock in the exchange's zone (New York: the data's own axis
is ns since the epoch), not seconds since the start. Ratios that need more data than a
short session has say so instead of printing a number (``metrics.annualised_note``).
The page is a pure function of the report, so two identical runs give identical bytes.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from decimal import Decimal
from html import escape
from zoneinfo import ZoneInfo

import orjson

__all__ = ["ZONE", "fills_csv", "render", "trades_csv"]

ZONE = ZoneInfo("America/New_York")  # the exchange clock the time axes read

CSS = (
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1180px}"
    "h1{margin-bottom:2px}p.sub{color:#555;margin-top:0}"
    "table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f4f4f4;text-align:left}svg{display:block;margin:8px 0}"
    ".cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}"
    ".card{border:1px solid #ddd;border-radius:4px;padding:8px 12px;min-width:120px}"
    ".card b{display:block;font-size:18px}.card span{color:#666;font-size:12px}"
    ".neg{color:#b03030}.pos{color:#1a7a30}.note{color:#777;font-size:12px}"
    "summary{cursor:pointer;font-weight:bold;margin:12px 0}pre{font-size:11px}"
    ".cols{display:flex;gap:24px;flex-wrap:wrap}"
)


def _clock(t_ns: int, fmt: str = "%H:%M:%S") -> str:
    dt = datetime.fromtimestamp(t_ns / 1e9, ZONE)
    return dt.strftime(fmt) + f".{(t_ns // 1_000_000) % 1000:03d}"


def _duration(ns: int) -> str:
    s = ns / 1e9
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _money(units: int, scale: int) -> str:
    digits = max(0, len(str(scale)) - 1)
    return str((Decimal(int(units)) / Decimal(scale)).quantize(Decimal(1).scaleb(-digits)))


def _cls(text) -> str:
    if text is None:
        return ""
    return "neg" if str(text).startswith("-") else ("pos" if str(text).strip("0.") else "")


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _ns_label(ns: int) -> str:
    ns = int(ns)
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:g}ms"
    if ns >= 1_000:
        return f"{ns / 1e3:g}us"
    return f"{ns}ns"


# --- CSV exports ----------------------------------------------------------------------------


def _step_label(run: dict) -> str:
    """The clock's step in the subtitle: 0 is the default event-exact time, not a step."""
    if "step_ns" not in run:
        return ""
    return ", event-exact time" if not run["step_ns"] else f", step {_ns_label(run['step_ns'])}"


def trades_csv(rep) -> str:
    """Closed round trips, one per line: instrument, side (long/short), opened and closed
    (ISO times, exchange zone), holding seconds, largest position, shares and average price
    in and out, fees and PnL (fees included) in currency."""
    s = rep.scale
    out = io.StringIO()
    out.write(
        "symbol,side,opened,closed,holding_s,max_position,qty_in,avg_in,qty_out,avg_out,fees,pnl\n"
    )
    for r in rep.trades:
        avg_in = _money(r["value_in"] // r["qty_in"], s) if r["qty_in"] else ""
        avg_out = _money(r["value_out"] // r["qty_out"], s) if r["qty_out"] else ""
        out.write(
            f"{rep.symbols.get(r['instrument'], r['instrument'])},"
            f"{'long' if r['side'] > 0 else 'short'},"
            f"{_iso(r['opened_ns'])},{_iso(r['closed_ns'])},"
            f"{(r['closed_ns'] - r['opened_ns']) / 1e9:.6f},{r['max_position']},"
            f"{r['qty_in']},{avg_in},{r['qty_out']},{avg_out},"
            f"{_money(r['fees'], s)},{_money(r['pnl'], s)}\n"
        )
    return out.getvalue()


def fills_csv(rep) -> str:
    """Every fill in time order: time (ISO, exchange zone) and ns, symbol, side, qty,
    price, fee, partial, our order id, the venue's exec id, position and the instrument's
    realised PnL after it."""
    s = rep.scale
    out = io.StringIO()
    out.write(
        "time,ts_ns,symbol,side,qty,price,fee,partial,client_order_id,exec_id,position,realised\n"
    )
    for f in rep.fills:
        out.write(
            f"{_iso(f['ts_ns'])},{f['ts_ns']},{rep.symbols.get(f['instrument'], f['instrument'])},"
            f"{'buy' if f['side'] > 0 else 'sell'},{f['qty']},{_money(f['price'], s)},"
            f"{_money(f['fee'], s)},{int(f['partial'])},{f['client_order_id']},"
            f"{f['exec_id']},{f['position']},{_money(f['realised'], s)}\n"
        )
    return out.getvalue()


def _iso(t_ns: int) -> str:
    dt = datetime.fromtimestamp(t_ns // 10**9, ZONE)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{t_ns % 10**9:09d}" + dt.strftime("%z")


def _data_link(name: str, text: str) -> str:
    b64 = base64.b64encode(text.encode()).decode()
    return f'<a download="{name}" href="data:text/csv;base64,{b64}">{name}</a>'


# --- the page -------------------------------------------------------------------------------


def _span(rep) -> tuple[int, int]:
    ts = list(rep.times_ns)
    ts += [f["ts_ns"] for f in rep.fills]
    ts += [q["from_ns"] for q in rep.quotes] + [q["to_ns"] for q in rep.quotes]
    if rep.marks is not None and len(rep.marks[0]):
        ts += [int(rep.marks[0][0]), int(rep.marks[0][-1])]
    ts = [t for t in ts if t > 0]
    if not ts:
        return 0, 1
    lo, hi = min(ts), max(ts)
    return lo, hi if hi > lo else lo + 1


def _price_charts(rep, t0: int, t1: int) -> list[str]:
    from bot4.replay.svg import time_chart

    s = rep.scale
    charts = []
    insts = sorted(
        {f["instrument"] for f in rep.fills}
        | {q["instrument"] for q in rep.quotes}
        | (set(map(int, rep.marks[1])) if rep.marks is not None else set())
    )
    for i in insts:
        lines = []
        if rep.marks is not None and i in rep.marks[1]:
            mt, mv = rep.marks
            pts = [(int(t), int(v)) for t, v in zip(mt, mv[i], strict=False) if int(v) > 0]
            if pts:
                lines.append(([p[0] for p in pts], [p[1] / s for p in pts], "#555", False))
        segs = [
            (q["from_ns"], q["to_ns"], q["price"] / s,
             "#1a8a3a" if q["side"] > 0 else "#c0392b",
             f"{'bid' if q['side'] > 0 else 'ask'} {q['qty']} @ {_money(q['price'], s)} "
             f"{_clock(q['from_ns'])}-{_clock(q['to_ns'])}")
            for q in rep.quotes if q["instrument"] == i
        ]  # fmt: skip
        marks = [
            (f["ts_ns"], f["price"] / s, f["side"],
             f"{'bought' if f['side'] > 0 else 'sold'} {f['qty']} @ {_money(f['price'], s)} "
             f"{_clock(f['ts_ns'])}, position {f['position']}")
            for f in rep.fills if f["instrument"] == i
        ]  # fmt: skip
        sym = rep.symbols.get(i, str(i))
        charts.append(
            time_chart(
                f"{sym}: mid (grey, every {rep.doc['metrics']['interval_ns'] / 1e9:g} s), our "
                "resting quotes (bars), our fills "
                f"(\u25b2 buy {sum(1 for m in marks if m[2] > 0)}, "
                f"\u25bc sell {sum(1 for m in marks if m[2] <= 0)})",
                t0,
                t1,
                ZONE,
                lines=lines,
                segments=segs,
                markers=marks,
                height=300,
                css_class="chart price",
            )  # fmt: skip
        )
    return charts


def _position_charts(rep, t0: int, t1: int) -> list[str]:
    from bot4.replay.svg import time_chart

    by: dict[int, tuple[list, list]] = {}
    for f in rep.fills:
        ts, ps = by.setdefault(f["instrument"], ([t0], [0]))
        ts.append(f["ts_ns"])
        ps.append(f["position"])
    return [
        time_chart(
            f"{rep.symbols.get(i, str(i))}: position (shares)",
            t0,
            t1,
            ZONE,
            lines=[(ts, ps, "#6a3d9a", True)],
            include_zero=True,
            css_class="chart position",
        )  # fmt: skip
        for i, (ts, ps) in sorted(by.items())
    ]


def _models_section(m) -> list[str]:
    """A replay with ``model_slot``: its rollout (``doc["models"]``), as the terminal
    summary gives it (``bot4.replay.models.model_lines``)."""
    if not m:
        return []
    from bot4.replay.models import model_lines

    return [
        "<h2>Models: routing and rollout</h2>",
        "<pre>" + escape("\n".join(model_lines(m))) + "</pre>",
        '<p class="note">Per-model PnL is of virtual sub-positions (attribution only; risk '
        "limits are on the total), in price units; a rolled-back model's inventory is handed "
        "to the champion at the mid. See docs/models.md.</p>",
    ]


def render(rep) -> str:
    """The tearsheet of ``rep`` (a :class:`bot4.replay.report.Report`)."""
    from bot4.replay.report_metrics import drawdown_series
    from bot4.replay.svg import bar_chart, time_chart

    doc, s = rep.doc, rep.scale
    su, m, ts = doc["summary"], doc["metrics"], doc.get("trade_stats", {})
    run = doc.get("run", {})
    t0, t1 = _span(rep)
    src = run.get("source", {}) or {}
    what = escape(str(src.get("path") or run.get("topology") or "journal"))
    day = datetime.fromtimestamp(t0 / 1e9, ZONE).strftime("%Y-%m-%d")
    latency = run.get("latency") or {}
    sub = (
        f"{what}<br>{day} {_clock(t0)} to {_clock(t1)} New York ({_duration(t1 - t0)}), "
        f"{escape(str(run.get('mode', '')))} mode"
        + (f", seed {run['seed']}" if "seed" in run else "")
        + _step_label(run)
        + (
            ", latency " + ", ".join(f"{escape(k)} {escape(v)}" for k, v in sorted(latency.items()))
            if latency
            else ""
        )
    )
    every = f"{m['interval_ns'] / 1e9:g} s"
    cards = [
        ("total PnL", su["total_pnl"]),
        ("realised", su["realised"]),
        ("unrealised", su["unrealised"]),
        ("fees", su["fees"]),
        ("max drawdown", su["max_drawdown"]),
        ("fills", su["fills"]),
        ("round trips", su["round_trips"]),
        ("hit rate", "-" if su["hit_rate"] is None else f"{su['hit_rate']:.1%}"),
    ]
    card_html = "".join(
        f'<div class="card"><span>{escape(k)}</span><b class="{_cls(v) if "PnL" in k or k in ("realised", "unrealised") else ""}">'
        f"{escape(str(v))}</b></div>"
        for k, v in cards
    )
    if m["sharpe_annualised"] is not None:
        sharpe_ann = f"{m['sharpe_annualised']:.2f}"
        sortino_ann = _cell(m["sortino_annualised"])
    else:
        sharpe_ann = sortino_ann = (
            f'<span class="note">{escape(m["annualised_note"] or "-")}</span>'
        )
    left = [
        ("total PnL", su["total_pnl"]), ("realised", su["realised"]),
        ("unrealised", su["unrealised"]), ("fees (rebates negative)", su["fees"]),
        ("turnover", su["turnover"]), ("shares traded", su["shares_traded"]),
        ("orders sent", su["orders"]), ("fills (partial)", f"{su['fills']} ({su['partial_fills']})"),
        ("largest |position|", ts.get("max_position")),
        ("denials", doc["denials"]["total"]),
    ]  # fmt: skip
    right = [
        ("round trips (won)", f"{su['round_trips']} ({su['winning_round_trips']})"),
        ("hit rate", None if su["hit_rate"] is None else f"{su['hit_rate']:.1%}"),
        ("profit factor", su["profit_factor"]),
        ("expectancy per trip", ts.get("expectancy")),
        ("average winner / loser", f"{ts.get('avg_winner') or '-'} / {ts.get('avg_loser') or '-'}"),
        ("largest winner / loser", f"{ts.get('max_winner') or '-'} / {ts.get('max_loser') or '-'}"),
        ("mean holding time", None if ts.get("mean_holding_ns") is None else _duration(ts["mean_holding_ns"])),
        ("max drawdown", su["max_drawdown"]),
        (f"Sharpe per {every} (n = {m['intervals']})", m["sharpe"]),
        (f"Sortino per {every}", m["sortino"]),
    ]  # fmt: skip

    def kv(rows) -> str:
        return (
            "<table>"
            + "".join(f"<tr><th>{escape(k)}</th><td>{escape(_cell(v))}</td></tr>" for k, v in rows)
            + "</table>"
        )

    ann = (
        f"<table><tr><th>Sharpe, annualised (252 sessions of 6.5 h)</th><td>{sharpe_ann}</td></tr>"
        f"<tr><th>Sortino, annualised</th><td>{sortino_ann}</td></tr></table>"
    )
    xs = rep.times_ns
    eq = [e / s for e in rep.equity_units]
    dd = [d / s for d in drawdown_series(rep.equity_units)]
    body = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>bot4 replay '
        f"report</title><style>{CSS}</style></head><body>",
        "<h1>bot4 replay report</h1>",
        f'<p class="sub">{sub}</p>',
        f'<div class="cards">{card_html}</div>',
        "<h2>Summary</h2>",
        f'<div class="cols">{kv(left)}{kv(right)}</div>',
        ann,
        '<p class="note">Returns are equity changes per interval in currency (no capital '
        "base). Money is exact decimal at the instrument's price scale.</p>",
        *_models_section(doc.get("models")),
        "<h2>Price, our quotes and fills</h2>",
        *_price_charts(rep, t0, t1),
        "<h2>Position</h2>",
        *(_position_charts(rep, t0, t1) or ['<p class="note">No fills: flat throughout.</p>']),
        "<h2>Equity and drawdown</h2>",
        time_chart(
            f"Equity (realised + unrealised PnL), sampled every {every} and at each end",
            t0,
            t1,
            ZONE,
            lines=[(xs, eq, "#1f5fa8", False)],
            include_zero=True,
            css_class="chart equity",
        ),  # fmt: skip
        time_chart(
            "Drawdown from peak",
            t0,
            t1,
            ZONE,
            lines=[(xs, dd, "#b03030", False)],
            include_zero=True,
            fill_to_zero=True,
            css_class="chart drawdown",
        ),  # fmt: skip
    ]
    body += _trades_section(rep)
    pos_rows = "".join(
        f"<tr><td>{escape(sym)}</td><td>{p['position']}</td><td>{escape(p['realised'])}</td>"
        f"<td>{escape(p['unrealised'])}</td><td>{escape(p['fees'])}</td>"
        f"<td>{p['fills']}</td><td>{escape(p['mark'])}</td></tr>"
        for sym, p in sorted(doc["positions"].items())
    )
    body.append(
        "<h2>End positions</h2><table><tr><th>instrument</th><th>position</th>"
        "<th>realised</th><th>unrealised</th><th>fees</th><th>fills</th><th>mark</th></tr>"
        + pos_rows
        + "</table>"
    )
    den = doc["denials"]
    den_rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(den["by_reason"].items())
    )
    body.append(
        f"<h2>Risk denials ({den['total']} of {den['decisions']} decisions)</h2>"
        "<table><tr><th>reason</th><th>count</th></tr>" + den_rows + "</table>"
    )
    lat_rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{v.get('count', 0)}</td>"
        f"<td>{_ns_label(v.get('min_ns', 0))}</td><td>{_ns_label(v.get('p50_ns', 0))}</td>"
        f"<td>{_ns_label(v.get('p90_ns', 0))}</td><td>{_ns_label(v.get('p99_ns', 0))}</td>"
        f"<td>{_ns_label(v.get('max_ns', 0))}</td></tr>"
        for name, v in sorted(doc["latency"].items())
    )
    body.append(
        "<h2>Latency</h2><table><tr><th></th><th>count</th><th>min</th><th>p50</th>"
        "<th>p90</th><th>p99</th><th>max</th></tr>" + lat_rows + "</table>"
        '<p class="note">HdrHistogram figures (2 significant digits) from bot4.shm.histogram; '
        "modelled stamps in a deterministic replay, measured ones in a full run.</p>"
    )
    for name, title in (
        ("tick_to_order", "Tick-to-order latency (log2 buckets)"),
        ("order_to_venue", "Order-to-venue latency (log2 buckets)"),
    ):
        h = doc["latency"].get(name, {}).get("histogram", [])
        body.append(bar_chart([_ns_label(b["lo_ns"]) for b in h], [b["count"] for b in h], title))
    body.append(
        "<details><summary>Run configuration</summary><pre>"
        + escape(orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        + "</pre></details></body></html>\n"
    )
    return "".join(body)


MAX_ROWS = 500  # rows of a table in the page; the CSV has them all


def _trades_section(rep) -> list[str]:
    s = rep.scale
    tcsv, fcsv = trades_csv(rep), fills_csv(rep)
    out = [
        f"<h2>Round trips ({len(rep.trades)})</h2>",
        f"<p>Export: {_data_link('trades.csv', tcsv)} (also written beside this page), "
        f"{_data_link('fills.csv', fcsv)}.</p>",
    ]
    rows = []
    for r in rep.trades[:MAX_ROWS]:
        pnl = _money(r["pnl"], s)
        rows.append(
            f"<tr><td>{escape(rep.symbols.get(r['instrument'], str(r['instrument'])))}</td>"
            f"<td>{'long' if r['side'] > 0 else 'short'}</td><td>{_clock(r['opened_ns'])}</td>"
            f"<td>{_clock(r['closed_ns'])}</td><td>{_duration(r['closed_ns'] - r['opened_ns'])}</td>"
            f"<td>{r['max_position']}</td>"
            f"<td>{_money(r['value_in'] // r['qty_in'], s) if r['qty_in'] else '-'}</td>"
            f"<td>{_money(r['value_out'] // r['qty_out'], s) if r['qty_out'] else '-'}</td>"
            f'<td>{_money(r["fees"], s)}</td><td class="{_cls(pnl)}">{pnl}</td></tr>'
        )
    out.append(
        "<table><tr><th>instrument</th><th>side</th><th>opened</th><th>closed</th>"
        "<th>held</th><th>max position</th><th>avg in</th><th>avg out</th><th>fees</th>"
        "<th>PnL</th></tr>" + "".join(rows) + "</table>"
    )
    if len(rep.trades) > MAX_ROWS:
        out.append(f'<p class="note">First {MAX_ROWS} of {len(rep.trades)}; all in trades.csv.</p>')
    out.append(f"<details><summary>Fills ({len(rep.fills)})</summary>")
    rows = [
        f"<tr><td>{_clock(f['ts_ns'])}</td>"
        f"<td>{escape(rep.symbols.get(f['instrument'], str(f['instrument'])))}</td>"
        f"<td>{'buy' if f['side'] > 0 else 'sell'}</td><td>{f['qty']}</td>"
        f"<td>{_money(f['price'], s)}</td><td>{_money(f['fee'], s)}</td>"
        f"<td>{f['position']}</td><td>{_money(f['realised'], s)}</td></tr>"
        for f in rep.fills[:MAX_ROWS]
    ]
    out.append(
        "<table><tr><th>time</th><th>instrument</th><th>side</th><th>qty</th><th>price</th>"
        "<th>fee</th><th>position</th><th>realised</th></tr>"
        + "".join(rows)
        + "</table>"
        + (
            f'<p class="note">First {MAX_ROWS} of {len(rep.fills)}; all in fills.csv.</p>'
            if len(rep.fills) > MAX_ROWS
            else ""
        )
        + "</details>"
    )
    return out
