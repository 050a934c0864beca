"""``bot4.replay(...)`` for notebooks: one replay returning a :class:`ReplayRun` whose
tables are pandas DataFrames (the package ``bot4.replay`` is callable; ``bot4.sweep(...)``
is the research tools', :mod:`bot4.research.api`, whose docstring says why pandas).

>>> import bot4
>>> r = bot4.replay("GOOG_2012-06-21_..._message_1.csv", params={"signals.threshold": 0.8})
>>> r.metrics["total_pnl"], r.fills.head(), r.trades, r.equity.plot(x="time", y="equity")

Prices and money are floats in currency in these frames (the report's exact decimal text
is in ``.doc``); times are tz-aware timestamps on the exchange's clock (New York) beside
the raw ``ts_ns``. :func:`metrics_of` gives the metric columns a sweep's table has.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

__all__ = ["ReplayRun", "metrics_of", "replay"]


def latency_dict(latency) -> dict[str, str]:
    if latency is None:
        return {}
    if isinstance(latency, dict):
        return {str(k): str(v) for k, v in latency.items()}
    out = {}
    for spec in latency:
        name, _eq, model = str(spec).partition("=")
        out[name.strip()] = model.strip()
    return out


def duration_ns(v) -> int:
    from bot4.replay.latency import parse_duration_ns

    return int(v) if isinstance(v, int) else parse_duration_ns(str(v))


def _times(ns):
    import pandas as pd

    return pd.to_datetime(pd.Series(ns, dtype="int64"), unit="ns", utc=True).dt.tz_convert(
        "America/New_York"
    )


def _num(text) -> float | None:
    return None if text is None else float(Decimal(str(text)))


def metrics_of(doc: dict) -> dict:
    """The table's metric columns from a report document (``Report.doc``)."""
    s, m = doc["summary"], doc["metrics"]
    t2o = doc["latency"]["tick_to_order"]
    return {
        "total_pnl": _num(s["total_pnl"]),
        "realised": _num(s["realised"]),
        "unrealised": _num(s["unrealised"]),
        "fees": _num(s["fees"]),
        "turnover": _num(s["turnover"]),
        "max_drawdown": _num(s["max_drawdown"]),
        "fills": s["fills"],
        "partial_fills": s["partial_fills"],
        "orders": s["orders"],
        "shares_traded": s["shares_traded"],
        "round_trips": s["round_trips"],
        "winning_round_trips": s["winning_round_trips"],
        "hit_rate": s["hit_rate"],
        "profit_factor": s["profit_factor"],
        "sharpe": m["sharpe"],
        "sortino": m["sortino"],
        "sharpe_annualised": m["sharpe_annualised"],
        "intervals": m["intervals"],
        "denials": doc["denials"]["total"],
        "events": doc["run"].get("events"),
        "tick_to_order_p50_ns": t2o.get("p50_ns"),
        "tick_to_order_p99_ns": t2o.get("p99_ns"),
    }


@dataclass
class ReplayRun:
    """One replay's results: ``report`` (:class:`bot4.replay.report.Report`), ``doc`` (its
    JSON document), ``metrics`` (the sweep table's metric columns), ``run`` (wall-clock
    facts), the output directory and the report's paths; DataFrames below."""

    report: object
    run: dict
    out_dir: Path
    html_path: Path
    json_path: Path

    @property
    def doc(self) -> dict:
        return self.report.doc

    @property
    def metrics(self) -> dict:
        return metrics_of(self.report.doc)

    def _sym(self, i: int) -> str:
        return self.report.symbols.get(i, str(i))

    @property
    def fills(self):
        """Every fill in time order: time, ts_ns, symbol, side (+1 buy / -1 sell), qty,
        price, fee, partial, client_order_id, exec_id, position and realised after it."""
        import pandas as pd

        s = self.report.scale
        rows = [
            {**f, "symbol": self._sym(f["instrument"]), "price": f["price"] / s,
             "fee": f["fee"] / s, "realised": f["realised"] / s}
            for f in self.report.fills
        ]  # fmt: skip
        cols = ["time", "ts_ns", "symbol", "instrument", "side", "qty", "price", "fee",
                "partial", "client_order_id", "exec_id", "position", "realised"]  # fmt: skip
        df = pd.DataFrame(rows, columns=[c for c in cols if c != "time"])
        df.insert(0, "time", _times(df["ts_ns"]))
        return df

    @property
    def positions(self):
        """Position over time: one row per fill (time, symbol, position after it)."""
        return self.fills[["time", "ts_ns", "symbol", "position"]]

    @property
    def trades(self):
        """Closed round trips: symbol, side, opened/closed, holding_s, max_position, qty and
        average price in and out, fees and pnl (fees included)."""
        import pandas as pd

        s = self.report.scale
        rows = []
        for r in self.report.trades:
            rows.append(
                {
                    "symbol": self._sym(r["instrument"]),
                    "side": "long" if r["side"] > 0 else "short",
                    "opened_ns": r["opened_ns"],
                    "closed_ns": r["closed_ns"],
                    "holding_s": (r["closed_ns"] - r["opened_ns"]) / 1e9,
                    "max_position": r["max_position"],
                    "qty_in": r["qty_in"],
                    "avg_in": r["value_in"] / r["qty_in"] / s if r["qty_in"] else None,
                    "qty_out": r["qty_out"],
                    "avg_out": r["value_out"] / r["qty_out"] / s if r["qty_out"] else None,
                    "fees": r["fees"] / s,
                    "pnl": r["pnl"] / s,
                }
            )
        df = pd.DataFrame(rows, columns=[
            "symbol", "side", "opened_ns", "closed_ns", "holding_s", "max_position", "qty_in",
            "avg_in", "qty_out", "avg_out", "fees", "pnl"])  # fmt: skip
        df.insert(2, "opened", _times(df["opened_ns"]))
        df.insert(3, "closed", _times(df["closed_ns"]))
        return df

    @property
    def equity(self):
        """The equity curve: time, ts_ns, equity and drawdown (currency)."""
        import pandas as pd

        from bot4.replay.report_metrics import drawdown_series

        s = self.report.scale
        e = self.report.equity_units
        df = pd.DataFrame(
            {
                "ts_ns": list(self.report.times_ns),
                "equity": [x / s for x in e],
                "drawdown": [x / s for x in drawdown_series(e)],
            }
        )
        df.insert(0, "time", _times(df["ts_ns"]))
        return df

    @property
    def quotes(self):
        """Our limit orders' resting intervals: symbol, side, price, qty, from/to."""
        import pandas as pd

        s = self.report.scale
        df = pd.DataFrame(
            [{**q, "symbol": self._sym(q["instrument"]), "price": q["price"] / s}
             for q in self.report.quotes],
            columns=["client_order_id", "instrument", "symbol", "side", "price", "qty",
                     "from_ns", "to_ns"],
        )  # fmt: skip
        return df

    def _repr_html_(self) -> str:
        from html import escape

        m = self.metrics
        rows = "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(str(m[k]))}</td></tr>"
            for k in ("total_pnl", "realised", "unrealised", "fees", "fills", "orders",
                      "round_trips", "hit_rate", "max_drawdown", "sharpe")
        )  # fmt: skip
        return (
            f"<b>bot4 replay</b> ({escape(str(self.out_dir))}): <a href="
            f'"{escape(str(self.html_path))}">tearsheet</a><table>{rows}</table>'
        )


def replay(
    data: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    topology: str | os.PathLike | None = None,
    params: dict | None = None,
    latency: dict | list | None = None,
    seed: int = 1,
    step: int | str | None = None,
    interval: int | str = "60s",
    mode: str = "deterministic",
    progress: bool = False,
) -> ReplayRun:
    """Replay ``data`` (anything ``bot4 replay`` reads) and return a :class:`ReplayRun`.

    ``params``: ``{"STAGE.PARAM": value}`` set in the topology (``topology``: base TOML
    path, default the packaged one), and ``latency.NAME`` keys as latency models;
    ``latency``: ``{"order": "const:80us"}`` or ``["order=const:80us"]``; ``step`` /
    ``interval``: ns or text (``"100us"``, ``"60s"``; step default: the replay's own); ``out``: output directory (default:
    a new temporary directory). The same arguments give the same results as
    ``bot4 replay`` and as the sweep's run of that point."""
    import sys

    from bot4.pipeline.topology import load_topology
    from bot4.replay.latency import LatencyConfig
    from bot4.replay.points import base_topology_text, check_key, topology_text
    from bot4.replay.runner import replay as run_replay

    params = dict(params or {})
    lat = latency_dict(latency)
    for k in list(params):
        if check_key(k) == "latency":
            lat[k.split(".", 1)[1]] = str(params.pop(k))
        elif k == "seed":
            seed = int(params.pop(k))
        elif k == "step":
            step = params.pop(k)
    out_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="bot4-replay-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    topo = None
    if params:
        base, _src = base_topology_text(None if topology is None else str(topology))
        (out_dir / "topology.toml").write_text(topology_text(base, params))
        topo = load_topology(out_dir / "topology.toml")
    elif topology is not None:
        topo = load_topology(topology)
    o = run_replay(
        str(data),
        out_dir,
        mode=mode,
        topology=topo,
        latency=LatencyConfig.from_specs(lat),
        seed=seed,
        interval_ns=duration_ns(interval),
        progress=sys.stderr if progress else None,
        **({} if step is None else {"step_ns": duration_ns(step)}),
    )
    return ReplayRun(o.report, o.run, o.out_dir, o.html_path, o.json_path)
