"""The replay report's numbers, apart from the journal reading and the document: exact
money text, the metrics of an equity series (Sharpe, Sortino, drawdown), one instrument's
position and round trips as the risk stage accounts them, round-trip statistics and
latency statistics. What each figure means is in :mod:`bot4.replay.report`'s docstring
and docs/replay.md; :func:`bot4.replay.report.report_from_journal` calls these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from bot4.risk.accounting import average_cost_fill, pro_rata
from bot4.shm import histogram as H

__all__ = [
    "MIN_RETURNS_ANNUALISED",
    "MIN_SPAN_ANNUALISED_NS",
    "PERIODS_PER_YEAR_NS",
    "drawdown_series",
    "equity_metrics",
    "latency_stats",
    "round_trips",
    "trade_stats",
]

#: ns of trading in a year: 252 sessions of 6.5 hours (annualisation of per-interval ratios)
PERIODS_PER_YEAR_NS = 252 * 6.5 * 3600 * 1e9
#: annualised ratios are given only from this many returns spanning at least this long: a
#: sample deviation of a handful of returns, scaled by sqrt(98,280 minutes a year), is noise
#: (a 40-second session once printed an annualised Sharpe of -902)
MIN_RETURNS_ANNUALISED = 30
MIN_SPAN_ANNUALISED_NS = 3600 * 10**9


def _money(units: int, scale: int) -> str:
    """Exact decimal text of ``units`` at ``scale`` units per currency unit."""
    digits = max(0, len(str(scale)) - 1)
    return str((Decimal(int(units)) / Decimal(scale)).quantize(Decimal(1).scaleb(-digits)))


# --- metrics on an equity series ------------------------------------------------------------


def equity_metrics(equity_units: list[int], scale: int, interval_ns: int) -> dict:
    """Sharpe, Sortino and max drawdown of an equity series sampled every ``interval_ns``
    (int price units, the first point being the start). Returns floats in currency units;
    ratios are None where undefined (fewer than two returns, zero deviation). The
    annualised ratios are None, and ``annualised_note`` says why, unless there are at least
    :data:`MIN_RETURNS_ANNUALISED` returns spanning :data:`MIN_SPAN_ANNUALISED_NS`."""
    eq = [int(e) for e in equity_units]
    rets = [(eq[i] - eq[i - 1]) / scale for i in range(1, len(eq))]
    n = len(rets)
    out: dict = {"intervals": n, "interval_ns": int(interval_ns)}
    ann = math.sqrt(PERIODS_PER_YEAR_NS / interval_ns)
    mean = math.fsum(rets) / n if n else 0.0
    if n >= 2:
        var = math.fsum((r - mean) ** 2 for r in rets) / (n - 1)
        sd = math.sqrt(var)
    else:
        sd = 0.0
    down = math.sqrt(math.fsum(min(r, 0.0) ** 2 for r in rets) / n) if n else 0.0
    out["mean_return"] = mean
    out["stdev_return"] = sd
    out["downside_deviation"] = down
    out["sharpe"] = mean / sd if n >= 2 and sd > 0 else None
    out["sortino"] = mean / down if n and down > 0 else None
    meaningful = n >= MIN_RETURNS_ANNUALISED and n * interval_ns >= MIN_SPAN_ANNUALISED_NS
    out["annualised_note"] = (
        None
        if meaningful
        else f"not meaningful: {n} returns over {n * interval_ns / 1e9:g} s; annualised "
        f"ratios need >= {MIN_RETURNS_ANNUALISED} returns spanning >= "
        f"{MIN_SPAN_ANNUALISED_NS // 10**9 // 60} min (the per-interval ratios stand)"
    )
    ok = meaningful
    out["sharpe_annualised"] = out["sharpe"] * ann if ok and out["sharpe"] is not None else None
    out["sortino_annualised"] = out["sortino"] * ann if ok and out["sortino"] is not None else None
    out["periods_per_year"] = PERIODS_PER_YEAR_NS / interval_ns
    peak = 0
    mdd = 0
    start = 0
    for e in [0, *eq]:
        peak = max(peak, e)
        mdd = max(mdd, peak - e)
    out["max_drawdown_units"] = mdd
    out["start_units"] = start
    return out


def drawdown_series(equity_units: list[int]) -> list[int]:
    """Equity minus its running peak (<= 0; the peak starts at 0), price units."""
    peak = 0
    out = []
    for e in equity_units:
        peak = max(peak, int(e))
        out.append(int(e) - peak)
    return out


# --- accounting -----------------------------------------------------------------------------


@dataclass
class _Book:
    """One instrument's position, as the risk stage keeps it (``bot4.replay.report``'s
    docstring)."""

    pos: int = 0
    cost: int = 0
    realised: int = 0
    fees: int = 0
    last_px: int = 0
    bought: int = 0
    sold: int = 0
    turnover: int = 0
    fills: int = 0
    trip: int = 0  # PnL of the open round trip so far (fees included)
    trips: list = field(default_factory=list)
    # the open trip's facts for the trade list: opened at (ns), side, shares and value in
    # (opening fills) and out (closing fills), largest |position|, fees (price units)
    t_open: int = 0
    t_side: int = 0
    t_in: list = field(default_factory=lambda: [0, 0])
    t_out: list = field(default_factory=lambda: [0, 0])
    t_max: int = 0
    t_fees: int = 0
    trip_rows: list = field(default_factory=list)

    def _open_trip(self, t: int, side: int) -> None:
        self.t_open, self.t_side, self.t_in, self.t_out = t, side, [0, 0], [0, 0]
        self.t_max = self.t_fees = 0

    def apply(self, side: int, qty: int, px: int, fee: int, t: int = 0) -> None:
        """A fill of ``qty`` shares at ``px`` on ``side`` paying ``fee`` (price units) at
        ``t`` (ns; only the trade list uses it)."""
        if self.pos == 0:
            self._open_trip(t, side)
        before = self.realised
        p, c, realised, closing_q = average_cost_fill(self.pos, self.cost, qty * side, px)
        self.pos, self.cost, closing_q = int(p), int(c), int(closing_q)
        self.realised += int(realised) - fee
        self.fees += fee
        self.last_px = px
        self.turnover += qty * px
        self.fills += 1
        if side > 0:
            self.bought += qty
        else:
            self.sold += qty
        gross = self.realised - before + fee  # what the fill realised before its fee
        if not closing_q:
            self.trip -= fee  # opening or adding: its fee belongs to the open trip
            self.t_in[0] += qty
            self.t_in[1] += qty * px
            self.t_fees += fee
            self.t_max = max(self.t_max, abs(self.pos))
            return
        fee_close = int(pro_rata(fee, closing_q, qty))  # the closing share of the fee
        self.trip += gross - fee_close
        self.t_out[0] += closing_q
        self.t_out[1] += closing_q * px
        self.t_fees += fee_close
        if p == 0 or closing_q < qty:  # flat, or flipped: the trip is closed
            self.trips.append(self.trip)
            self.trip_rows.append(
                {
                    "opened_ns": self.t_open,
                    "closed_ns": t,
                    "side": self.t_side,
                    "max_position": self.t_max,
                    "qty_in": self.t_in[0],
                    "value_in": self.t_in[1],
                    "qty_out": self.t_out[0],
                    "value_out": self.t_out[1],
                    "fees": self.t_fees,
                    "pnl": self.trip,
                }
            )
            self.trip = -(fee - fee_close) if p != 0 else 0
            if p != 0:  # flipped: the rest of the fill opens the next trip
                self._open_trip(t, side)
                self.t_in = [qty - closing_q, (qty - closing_q) * px]
                self.t_fees = fee - fee_close
                self.t_max = abs(self.pos)

    def unrealised(self, mark: int) -> int:
        m = mark if mark > 0 else self.last_px
        return self.pos * m - self.cost if self.pos else 0


def round_trips(books: dict[int, _Book]) -> list[int]:
    """PnL of every closed round trip (price units, fees included), instrument by
    instrument in id order, in the order they closed."""
    out: list[int] = []
    for i in sorted(books):
        out.extend(books[i].trips)
    return out


def trade_stats(books: dict[int, _Book], scale: int) -> dict:
    """Round-trip statistics a quant reads first (NautilusTrader's tearsheet, hftbacktest's
    stats): winners and losers (average, largest), expectancy (mean trip PnL), the long
    share of trips, the mean holding time, and the largest absolute position. Money as
    exact decimal text; None where there is nothing to average."""
    rows = [r for i in sorted(books) for r in books[i].trip_rows]
    wins = [r["pnl"] for r in rows if r["pnl"] > 0]
    losses = [r["pnl"] for r in rows if r["pnl"] < 0]

    def avg(v: list[int]) -> str | None:
        return _money(int(sum(v) / len(v)), scale) if v else None

    held = [r["closed_ns"] - r["opened_ns"] for r in rows]
    return {
        "avg_winner": avg(wins),
        "avg_loser": avg(losses),
        "max_winner": _money(max(wins), scale) if wins else None,
        "max_loser": _money(min(losses), scale) if losses else None,
        "expectancy": avg([r["pnl"] for r in rows]),
        "long_ratio": sum(1 for r in rows if r["side"] > 0) / len(rows) if rows else None,
        "mean_holding_ns": int(sum(held) / len(held)) if held else None,
        "max_position": max(
            [r["max_position"] for r in rows] + [abs(b.pos) for b in books.values()], default=0
        ),
    }


# --- latency --------------------------------------------------------------------------------


def latency_stats(ns: np.ndarray) -> dict:
    """Count, mean, min, p50/p90/p99/p99.9 and max, and a log2 histogram of latencies
    (ns), from bot4's one latency histogram (``bot4.shm.histogram``, HdrHistogram's layout:
    percentiles and max to 2 significant figures, the same numbers ``bot4 stats`` and the
    exporter give for the same values). Negative values (a stamp out of order) are left
    out; callers leave out records with a missing stamp."""
    v = np.asarray(ns, np.int64)
    h = H.new()
    H.record_many(h, v[v >= 0])
    out = H.summary(h)
    if out["count"] == 0:
        return {"count": 0, "histogram": []}
    out["histogram"] = H.log2_buckets(H.counts_of(h))
    return out
