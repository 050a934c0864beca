"""The backtest report: what was traded, what it earned, how fast — from a journal.

:func:`report_from_journal` reads the ORDER, EXEC_REPORT and RISK_DECISION frames a
persistence stage wrote (a replay's ``out/journal``, or ``bot4 run``'s journal) and builds
a :class:`Report`: a JSON document (``Report.to_json``, orjson, keys sorted) and a
self-contained HTML page with inline SVG plots (``Report.to_html``: equity curve,
drawdown, tick-to-order latency histogram; no script, no external file, no network).

Accounting (exact, int64 price units, the risk stage's own method): a position keeps its
signed cost; a fill that reduces it releases cost pro rata (truncated toward zero) and
realises the difference; each fill's ``fee`` (negative = rebate) is subtracted from
realised PnL when it is paid. Unrealised PnL = position x mark - cost, the mark being the
last mid given in ``marks`` (else the last fill price). Partial fills count one by one.
Executions are taken once each (by ``exec_id``; a persistence stage restarted mid-batch
may journal a batch twice). Money in the JSON is exact decimal text in the currency
(``"-12.3400"``); ratios are floats.

Metrics (see docs/replay.md):

* the equity series: realised + unrealised PnL at the end of every ``interval_ns`` (default
  60 s of the journal's clock) from the first to the last event, marked with the mark
  series when given (a replay samples the mid at every boundary), else with the last fill
  price; its per-interval changes are the *returns* (currency, not percent: the run has no
  capital base, and the ratios below do not need one);
* ``sharpe`` = mean / sample standard deviation of the returns; ``sortino`` = mean /
  downside deviation (root mean square of the negative returns, target 0); both per
  interval and annualised by sqrt(intervals per year), a year being 252 sessions of 6.5 h;
* ``max_drawdown``: the largest fall of equity from a previous peak (starting at 0);
* round trips: per instrument, from a flat position back to flat (a fill that flips the
  position closes one and opens the next; its fee is split by quantity). ``hit_rate`` =
  winning round trips / round trips; ``profit_factor`` = sum of winning round trips'
  PnL / |sum of losing ones'| (null without a loss); both count fees;
* ``turnover``: sum of |qty x price| of every fill; ``fills``: execution reports with a
  quantity (partial fills each count); ``stp_expired`` / ``stp_decremented``: the venue's
  self-trade prevention reports (``EXEC_STP_EXPIRED`` / ``EXEC_STP_DECREMENTED``, never
  fills: they move no position), ``stp_prevented_qty`` the shares they took off orders;
* ``denials``: risk decisions denied, by reason name (``bot4.records.errors.Code``), with
  their total;
* latency: ``tick_to_order`` = ``ts_order_ns - ts_recv_ns`` of every NEW order (md receive
  to the OMS sending it), ``order_to_venue`` = ``ts_venue_ns - ts_order_ns`` of every ACK;
  percentiles (HdrHistogram's, ``bot4.shm.histogram``: 2 significant figures) and a
  log2 histogram (bucket ``[2^k, 2^(k+1))`` ns). Measured stamps in a live run; modelled
  ones in a deterministic replay.

Floating-point values are computed with ``math.fsum`` over Python floats in a fixed order,
so a report does not depend on the SIMD width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from bot4.records import (
    ACTION_NEW,
    DECISION_DENY,
    DEFAULT_INSTRUMENTS,
    EXEC_ACK,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    RT_EXEC_REPORT,
    RT_ORDER,
    RT_RISK_DECISION,
    InstrumentTable,
)
from bot4.records.errors import Bot4Error, Code
from bot4.replay.models import model_lines
from bot4.replay.report_metrics import (
    _Book,
    _money,
    drawdown_series,
    equity_metrics,
    latency_stats,
    round_trips,
    trade_stats,
)

__all__ = [
    "Report",
    "report_from_journal",
]

SESSION_SHIFT = 32  # bot4.paths.SESSION_SEQ_SHIFT: seq >> 32 is the session


# --- the report -----------------------------------------------------------------------------


@dataclass
class Report:
    """A built report: ``doc`` (the JSON document) and the series the plots draw
    (``times_ns``, ``equity_units``, ``scale``), and what the tearsheet and the notebook API
    show beyond the document: ``fills`` (one dict per fill in time order, with the position
    and the instrument's realised PnL after it), ``trades`` (closed round trips),
    ``quotes`` (our orders' resting intervals), ``marks`` (the mid series) and
    ``symbols`` (instrument id -> symbol). Prices and money in those are int price units."""

    doc: dict
    times_ns: list[int]
    equity_units: list[int]
    scale: int
    fills: list[dict] = field(default_factory=list)
    trades: list[dict] = field(default_factory=list)
    quotes: list[dict] = field(default_factory=list)
    marks: tuple | None = None
    symbols: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self.doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def summary_lines(self) -> list[str]:
        """Two terminal lines: PnL, fills, orders, turnover; Sharpe, drawdown, hit rate."""
        s, m, d = self.doc["summary"], self.doc["metrics"], self.doc["denials"]
        every = f"{m['interval_ns'] / 1e9:g} s"
        if m["sharpe_annualised"] is not None:
            sharpe = f"sharpe {m['sharpe_annualised']:.2f} (annualised)"
        elif m["sharpe"] is not None:
            sharpe = f"sharpe {m['sharpe']:.3f} per {every} ({m['intervals']} returns; too few to annualise)"
        else:
            sharpe = f"sharpe - ({m['intervals']} returns of {every})"
        hit = "-" if s["hit_rate"] is None else f"{s['hit_rate']:.1%}"
        return [
            f"pnl {s['total_pnl']} (realised {s['realised']}, unrealised {s['unrealised']}, "
            f"fees {s['fees']})  fills {s['fills']}  orders {s['orders']}  "
            f"turnover {s['turnover']}",
            f"{sharpe}  max drawdown {s['max_drawdown']}  hit rate {hit}  denials {d['total']}",
            *model_lines(self.doc.get("models")),
        ]

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """``report.json``, ``report.html``, ``trades.csv`` (round trips) and ``fills.csv``
        into ``out_dir``; the paths of the first two."""
        from bot4.replay.tearsheet import fills_csv, trades_csv

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        j, h = d / "report.json", d / "report.html"
        j.write_bytes(self.to_json() + b"\n")
        h.write_text(self.to_html(), encoding="utf-8")
        (d / "trades.csv").write_text(trades_csv(self), encoding="utf-8")
        (d / "fills.csv").write_text(fills_csv(self), encoding="utf-8")
        return j, h

    def to_html(self) -> str:
        """The tearsheet (``bot4.replay.tearsheet``): one self-contained page."""
        from bot4.replay.tearsheet import render

        return render(self)


def _read_journal(journal_dir: Path, session: int | None):
    from bot4.journal import JournalReader

    parts: dict[int, list[np.ndarray]] = {RT_ORDER: [], RT_EXEC_REPORT: [], RT_RISK_DECISION: []}
    for _pos, rtype, recs in JournalReader(journal_dir):
        if rtype in parts:
            if session is not None:
                recs = recs[(recs["seq"] >> np.uint64(SESSION_SHIFT)) == np.uint64(session)]
            if len(recs):
                parts[rtype].append(recs)
    from bot4.records import EXEC_REPORT, ORDER, RISK_DECISION

    def cat(rt, dt):
        return np.concatenate(parts[rt]) if parts[rt] else np.zeros(0, dt)

    return (
        cat(RT_ORDER, ORDER),
        cat(RT_EXEC_REPORT, EXEC_REPORT),
        cat(RT_RISK_DECISION, RISK_DECISION),
    )


def report_from_journal(
    journal_dir: str | os.PathLike,
    instruments: InstrumentTable | None = None,
    marks: dict[int, int] | tuple[np.ndarray, dict[int, np.ndarray]] | None = None,
    *,
    interval_ns: int = 60_000_000_000,
    span_ns: tuple[int, int] | None = None,
    session: int | None = None,
    run: dict | None = None,
) -> Report:
    """The report of what the journal at ``journal_dir`` traded (module docstring).

    ``instruments``: symbols and price scale (default: the built-in table). ``marks``:
    final marks ``{instrument id: price units}``, or a mark series ``(times_ns, {id:
    mids})`` sampled on the journal's clock (0 = no mark yet), or None (last fill prices).
    ``span_ns``: (first, last) event time the equity grid covers (default: the first and
    last fill). ``session``: only records of that session (``seq >> 32``). ``run``: extra
    facts copied under ``"run"`` (configuration; keep it free of wall-clock values for a
    reproducible document)."""
    jd = Path(journal_dir)
    if not jd.is_dir():
        raise Bot4Error(f"{jd}: no such journal directory", Code.INPUT_MISSING)
    table = instruments or DEFAULT_INSTRUMENTS
    scales = {table.price_scale(i) for i in table.ids}
    if len(scales) != 1:
        raise Bot4Error("report: instruments must share one price scale", Code.CONFIG_INVALID)
    scale = scales.pop()
    orders, execs, decisions = _read_journal(jd, session)

    # executions, each once (exec_id 0: generated by the OMS, never a fill)
    if len(execs):
        ids = execs["exec_id"]
        keep = np.ones(len(execs), bool)
        nz = np.flatnonzero(ids != 0)
        _u, first = np.unique(ids[nz], return_index=True)
        keep[nz] = False
        keep[nz[first]] = True
        execs = execs[keep]
    is_fill = np.isin(execs["exec_type"], (EXEC_PARTIAL_FILL, EXEC_FILL)) & (execs["last_qty"] > 0)
    fills = execs[is_fill]
    stp = execs[np.isin(execs["exec_type"], (EXEC_STP_EXPIRED, EXEC_STP_DECREMENTED))]

    series_t: np.ndarray | None = None
    series_v: dict[int, np.ndarray] = {}
    final_marks: dict[int, int] = {}
    if isinstance(marks, tuple):
        series_t, series_v = marks
        series_t = np.asarray(series_t, np.int64)
        for i, v in series_v.items():
            nzv = np.asarray(v)[np.asarray(v) > 0]
            if len(nzv):
                final_marks[int(i)] = int(nzv[-1])
    elif isinstance(marks, dict):
        final_marks = {int(k): int(v) for k, v in marks.items()}

    # the equity grid
    if span_ns is not None:
        lo, hi = int(span_ns[0]), int(span_ns[1])
    elif len(fills):
        lo, hi = int(fills["ts_venue_ns"].min()), int(fills["ts_venue_ns"].max())
    else:
        lo = hi = 0
    if series_t is not None and len(series_t):
        grid = (
            [int(t) for t in series_t if lo <= t <= hi] if span_ns else [int(t) for t in series_t]
        )
    else:
        first = (lo // interval_ns + 1) * interval_ns
        grid = list(range(first, hi + 1, interval_ns)) if hi > lo else []
    times = [lo, *grid, hi] if hi > lo else [lo]
    times = sorted(set(times))
    mark_at: dict[int, dict[int, int]] = {}
    if series_t is not None and len(series_t):
        for i, v in series_v.items():
            arr = np.asarray(v, np.int64)
            idx = np.searchsorted(series_t, np.asarray(times, np.int64), side="right") - 1
            mark_at[int(i)] = {
                t: (int(arr[k]) if 0 <= k < len(arr) else 0)
                for t, k in zip(times, idx, strict=True)
            }

    books: dict[int, _Book] = {}
    equity: list[int] = []
    fill_rows: list[dict] = []

    def apply(f) -> None:
        inst = int(f["instrument"])
        b = books.setdefault(inst, _Book())
        tf = int(f["ts_venue_ns"])
        b.apply(int(f["side"]), int(f["last_qty"]), int(f["last_price"]), int(f["fee"]), tf)
        fill_rows.append(
            {
                "ts_ns": tf,
                "instrument": inst,
                "side": int(f["side"]),
                "qty": int(f["last_qty"]),
                "price": int(f["last_price"]),
                "fee": int(f["fee"]),
                "client_order_id": int(f["client_order_id"]),
                "exec_id": int(f["exec_id"]),
                "partial": int(f["exec_type"]) == EXEC_PARTIAL_FILL,
                "position": b.pos,
                "realised": b.realised,
            }
        )

    fi = 0
    fill_t = fills["ts_venue_ns"] if len(fills) else np.zeros(0, np.int64)
    for t in times:
        while fi < len(fills) and int(fill_t[fi]) <= t:
            apply(fills[fi])
            fi += 1
        total = 0
        for i, b in books.items():
            m = mark_at.get(i, {}).get(t, 0) if mark_at else 0
            if t == times[-1] and not mark_at:
                m = final_marks.get(i, 0)
            total += b.realised + b.unrealised(m)
        equity.append(total)
    while fi < len(fills):  # fills after the grid's end (none when span covers them)
        apply(fills[fi])
        fi += 1
    # final figures at the final marks
    positions = {}
    realised = unrealised = fees = turnover = 0
    for i in sorted(books):
        b = books[i]
        m = final_marks.get(i, 0)
        u = b.unrealised(m)
        realised += b.realised
        unrealised += u
        fees += b.fees
        turnover += b.turnover
        sym = table.symbol_of(i) if i in table else str(i)
        positions[sym] = {
            "instrument": i,
            "position": b.pos,
            "bought": b.bought,
            "sold": b.sold,
            "cost": _money(b.cost, scale),
            "realised": _money(b.realised, scale),
            "unrealised": _money(u, scale),
            "fees": _money(b.fees, scale),
            "fills": b.fills,
            "mark": _money(m if m > 0 else b.last_px, scale),
            "round_trips": len(b.trips),
        }
    if equity:
        equity[-1] = realised + unrealised  # the last point is the final figure
    trips = round_trips(books)
    wins = [p for p in trips if p > 0]
    losses = [p for p in trips if p < 0]
    metrics = equity_metrics(equity, scale, interval_ns)
    denied = decisions[decisions["decision"] == DECISION_DENY] if len(decisions) else decisions
    by_reason: dict[str, int] = {}
    for code, n in zip(*np.unique(denied["reason"], return_counts=True), strict=True):
        try:
            name = Code(int(code)).name
        except ValueError:
            name = f"CODE_{int(code)}"
        by_reason[name] = int(n)
    new = orders[orders["action"] == ACTION_NEW] if len(orders) else orders
    t2o = new[new["ts_recv_ns"] > 0]
    acks = execs[execs["exec_type"] == EXEC_ACK] if len(execs) else execs
    acks = acks[acks["ts_order_ns"] > 0]
    doc = {
        "summary": {
            "realised": _money(realised, scale),
            "unrealised": _money(unrealised, scale),
            "total_pnl": _money(realised + unrealised, scale),
            "fees": _money(fees, scale),
            "turnover": _money(turnover, scale),
            "shares_traded": sum(b.bought + b.sold for b in books.values()),
            "fills": int(len(fills)),
            "partial_fills": int((fills["exec_type"] == EXEC_PARTIAL_FILL).sum()),
            "stp_expired": int((stp["exec_type"] == EXEC_STP_EXPIRED).sum()),
            "stp_decremented": int((stp["exec_type"] == EXEC_STP_DECREMENTED).sum()),
            "stp_prevented_qty": int(stp["prevented_qty"].astype(np.int64).sum()),
            "orders": int(len(new)),
            "round_trips": len(trips),
            "winning_round_trips": len(wins),
            "hit_rate": len(wins) / len(trips) if trips else None,
            "profit_factor": (sum(wins) / -sum(losses)) if losses else None,
            "max_drawdown": _money(metrics["max_drawdown_units"], scale),
            "price_scale": scale,
        },
        "metrics": metrics,
        "positions": positions,
        "denials": {
            "total": int(len(denied)),
            "decisions": int(len(decisions)),
            "by_reason": by_reason,
        },
        "latency": {
            "tick_to_order": latency_stats(
                t2o["ts_order_ns"].astype(np.int64) - t2o["ts_recv_ns"].astype(np.int64)
            ),
            "order_to_venue": latency_stats(
                acks["ts_venue_ns"].astype(np.int64) - acks["ts_order_ns"].astype(np.int64)
            ),
        },
        "equity": {
            "times_ns": times,
            "equity_units": equity,
            "drawdown_units": drawdown_series(equity),
        },
        "trade_stats": trade_stats(books, scale),
        "run": run or {},
    }
    symbols = {i: (table.symbol_of(i) if i in table else str(i)) for i in books}
    trades = []
    for i in sorted(books):
        trades.extend({"instrument": i, **r} for r in books[i].trip_rows)
    trades.sort(key=lambda r: (r["closed_ns"], r["instrument"]))
    quotes = _resting_quotes(orders, execs, hi if hi > lo else None)
    for q in quotes:
        symbols.setdefault(
            q["instrument"],
            table.symbol_of(q["instrument"]) if q["instrument"] in table else str(q["instrument"]),
        )
    return Report(
        doc,
        times,
        equity,
        scale,
        fills=fill_rows,
        trades=trades,
        quotes=quotes,
        marks=(series_t, series_v) if series_t is not None else None,
        symbols=symbols,
    )


#: exec types after which an order rests nowhere
_TERMINAL = (EXEC_FILL, EXEC_CANCELLED, EXEC_REJECTED, EXEC_EXPIRED, EXEC_STP_EXPIRED)


def _resting_quotes(orders: np.ndarray, execs: np.ndarray, end_ns: int | None) -> list[dict]:
    """Our limit orders' resting intervals: from the venue's ACK (else the send stamp) to
    the report that ended them (fill, cancel, reject, expiry), else ``end_ns``; price units.
    Orders the venue never acknowledged (rejected at once) are left out."""
    new = (
        orders[(orders["action"] == ACTION_NEW) & (orders["limit_price"] > 0)]
        if len(orders)
        else orders
    )
    if not len(new):
        return []
    start: dict[int, int] = {}
    stop: dict[int, int] = {}
    for e in execs:
        c = int(e["client_order_id"])
        if int(e["exec_type"]) == EXEC_ACK and c not in start:
            start[c] = int(e["ts_venue_ns"])
        elif int(e["exec_type"]) in _TERMINAL and c not in stop:
            stop[c] = int(e["ts_venue_ns"])
    out = []
    for o in new:
        c = int(o["client_order_id"])
        if c not in start:
            continue
        a = start[c]
        b = stop.get(c, end_ns if end_ns is not None else a)
        out.append(
            {
                "client_order_id": c,
                "instrument": int(o["instrument"]),
                "side": int(o["side"]),
                "price": int(o["limit_price"]),
                "qty": int(o["qty"]),
                "from_ns": a,
                "to_ns": max(a, b),
            }
        )
    return out
