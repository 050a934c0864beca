"""The sweep's comparison report (``OUT/report.html``): one static page, no script.

Sections, in order: what was searched and the best point with the trial count beside it;
the best N points by the objective's mean over their data files; a heat map of the
objective over two parameters (mean over everything else); walk-forward windows with the
point chosen in sample and its result out of sample; failed runs with their errors; every
run with a link to its own tearsheet; the sweep's configuration (collapsed).
"""

from __future__ import annotations

import json
import math
import re
from html import escape
from pathlib import Path

__all__ = ["heat_map_svg", "rank_points", "write_report"]

CSS = (
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
    "table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f4f4f4}td.l,th.l{text-align:left}.bad{color:#b03030}"
    "summary{cursor:pointer;font-weight:bold}pre{font-size:11px}"
)


def rank_points(df, objective: str, direction: str = "max"):
    """One row per parameter point: ``objective`` = mean over its runs (NaN if any run of
    the point failed), ``runs``, ``failed``; best first (NaN last)."""
    import pandas as pd

    if df is None or len(df) == 0:
        return pd.DataFrame(columns=["params", objective, "runs", "failed"])
    pcols = [c for c in df.columns if c.startswith("p:")]
    rows = []
    for params, g in df.groupby("params", sort=True):
        ok = g[g["status"] == "ok"]
        vals = ok[objective].astype("float64")
        failed = int((g["status"] != "ok").sum())
        v = float(vals.mean()) if failed == 0 and len(vals) and vals.notna().all() else math.nan
        r = {"params": params, objective: v, "runs": len(g), "failed": failed}
        for c in pcols:
            r[c] = g[c].iloc[0]
        rows.append(r)
    out = pd.DataFrame(rows)
    return out.sort_values(
        [objective, "params"], ascending=[direction == "min", True], na_position="last"
    ).reset_index(drop=True)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.4f}"
    return str(v)


def _color(v: float, lo: float, hi: float) -> str:
    """Red (low) through white to green (high), symmetric around 0 when the range spans it."""
    if math.isnan(v):
        return "#dddddd"
    m = max(abs(lo), abs(hi)) or 1.0
    t = max(-1.0, min(1.0, v / m))
    if t >= 0:
        r, g, b = int(255 - 170 * t), int(255 - 75 * t), int(255 - 170 * t)
    else:
        r, g, b = int(255 + 45 * t), int(255 + 190 * t), int(255 + 190 * t)
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map_svg(df, x: str, y: str, objective: str) -> str:
    """An SVG grid: columns = values of parameter ``x``, rows = values of ``y``, each cell
    the mean ``objective`` of the successful runs with those two values (grey: none)."""
    ok = df[df["status"] == "ok"]
    cx, cy = f"p:{x}", f"p:{y}"
    xs = sorted(df[cx].dropna().unique().tolist(), key=_sort_key)
    ys = sorted(df[cy].dropna().unique().tolist(), key=_sort_key)
    cw, ch, left, top = max(60, min(110, 660 // max(1, len(xs)))), 30, 110, 8
    w, h = left + cw * len(xs) + 20, top + ch * len(ys) + 40
    cells = {}
    for (vx, vy), g in ok.groupby([cx, cy]):
        vals = g[objective].astype("float64").dropna()
        if len(vals):
            cells[(vx, vy)] = float(vals.mean())
    finite = list(cells.values()) or [0.0]
    lo, hi = min(finite), max(finite)
    parts = [  # the title is page text above the grid: never cut by a narrow grid
        f'<p class="heat-title"><b>{escape(objective)}: {escape(y)} (rows) x {escape(x)} '
        "(columns)</b>, mean over the other parameters and data</p>",
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="heat map {escape(objective)}">',
    ]
    for j, vy in enumerate(ys):
        parts.append(
            f'<text x="{left - 6}" y="{top + j * ch + 19}" font-size="11" '
            f'text-anchor="end">{escape(_fmt(vy))}</text>'
        )
        for i, vx in enumerate(xs):
            v = cells.get((vx, vy), math.nan)
            parts.append(
                f'<rect class="cell" x="{left + i * cw}" y="{top + j * ch}" width="{cw - 2}" '
                f'height="{ch - 2}" fill="{_color(v, lo, hi)}" data-value="{_fmt(v)}">'
                f"<title>{escape(x)}={escape(_fmt(vx))} {escape(y)}={escape(_fmt(vy))}: "
                f"{escape(_fmt(v))}</title></rect>"
                f'<text x="{left + i * cw + cw / 2 - 1:.1f}" y="{top + j * ch + 19}" '
                f'font-size="10" text-anchor="middle">{escape(_fmt(v))}</text>'
            )
    for i, vx in enumerate(xs):
        parts.append(
            f'<text x="{left + i * cw + cw / 2:.1f}" y="{top + len(ys) * ch + 16}" '
            f'font-size="11" text-anchor="middle">{escape(_fmt(vx))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _sort_key(v):
    """Numbers by value; text in natural order (``const:30us`` before ``const:120us``)."""
    if isinstance(v, int | float):
        return (0, float(v), ())
    parts = re.split(r"(\d+(?:\.\d+)?)", str(v))
    return (1, 0.0, tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)))


def _table(headers: list[str], rows: list[list[str]], left: int = 0) -> str:
    """An HTML table; the first ``left`` columns left-aligned. Cells are already escaped."""
    th = "".join(
        f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _auto_heat(df) -> tuple[str, str] | None:
    pcols = [c[2:] for c in df.columns if c.startswith("p:") and df[c].nunique() > 1]
    return (pcols[0], pcols[1]) if len(pcols) >= 2 else None


def _calibration_cell(r) -> str:
    """A walk-forward row's calibration: the params file (linked) and 12 hex digits of its
    sha256, or the fit's error."""
    if r.get("calibration_error"):
        return f'<span class="bad">{escape(str(r["calibration_error"]))}</span>'
    f = str(r["params_file"])
    return (
        f'<a href="{escape(f)}">{escape(Path(f).name)}</a> {escape(str(r["params_sha256"])[:12])}'
    )


def write_report(
    out_dir: Path, df, wf, meta: dict, *, heat: tuple[str, str] | None = None, best: int = 10
) -> Path:
    """Write ``out_dir/report.html`` (module docstring); its path."""
    obj, direction = meta["objective"], meta["direction"]
    ranked = rank_points(df, obj, direction)
    n_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    n_failed = len(df) - n_ok
    html = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bot4 sweep</title><style>{CSS}</style></head><body>",
        "<h1>bot4 sweep</h1>",
    ]
    head = (
        f"{escape(meta['search'])} search, {meta['trials']} trials over {len(meta['data'])} "
        f"data file(s): {len(df)} runs, {n_ok} ok, "
        f'<span class="{"bad" if n_failed else ""}">{n_failed} failed</span>. '
        f"Objective: {escape(direction)} {escape(obj)} (mean over a point's data files)."
    )
    html.append(f"<p>{head}</p>")
    if len(ranked) and not math.isnan(ranked[obj].iloc[0]):
        b = ranked.iloc[0]
        html.append(
            f"<p><b>Best: {escape(obj)} = {escape(_fmt(float(b[obj])))}</b> with "
            f"<code>{escape(b['params'])}</code> (best of {meta['trials']} trials, "
            f"{len(ranked)} distinct points).</p>"
        )
    html.append(f"<h2>Best {min(best, len(ranked))} points</h2>")
    rows = [
        [str(i + 1), f"<code>{escape(r['params'])}</code>", escape(_fmt(r[obj])),
         str(r["runs"]), str(r["failed"])]
        for i, r in ranked.head(best).iterrows()
    ]  # fmt: skip
    html.append(_table(["rank", "params", obj, "runs", "failed"], rows, left=2))
    heat = heat or _auto_heat(df)
    if heat and f"p:{heat[0]}" in df.columns and f"p:{heat[1]}" in df.columns:
        html.append("<h2>Heat map</h2>")
        html.append(heat_map_svg(df, heat[0], heat[1], obj))
    if wf is not None and len(wf):
        html.append("<h2>Walk-forward: in sample vs out of sample</h2>")
        iso = wf["in_sample_objective"].astype("float64")
        oos = wf["out_of_sample_objective"].astype("float64")
        html.append(
            f"<p>Each window's best point (in sample) traded on the next window (out of "
            f"sample). Mean {escape(obj)}: in sample {escape(_fmt(float(iso.mean())))}, "
            f"out of sample {escape(_fmt(float(oos.mean())))} over {len(wf)} window(s).</p>"
        )
        rows = [
            [escape(Path(r["in_sample"]).name), escape(Path(r["out_of_sample"]).name),
             f"<code>{escape(str(r['params']))}</code>",
             f"{r['trials_ok']}/{r['trials']}", escape(_fmt(r["in_sample_objective"])),
             escape(_fmt(r["out_of_sample_objective"])), escape(str(r["out_of_sample_status"]))]
            for _, r in wf.iterrows()
        ]  # fmt: skip
        head = [
            "in sample",
            "out of sample",
            "chosen params",
            "trials ok",
            "in sample " + obj,
            "out of sample " + obj,
            "oos run",
        ]
        if "params_sha256" in wf.columns:  # --walk-forward-calibrate: window k's fit
            head.append("calibration (signals.params_file)")
            for row, (_, r) in zip(rows, wf.iterrows(), strict=True):
                row.append(_calibration_cell(r))
        html.append(
            _table(
                head,
                rows,
                left=3,
            )  # fmt: skip
        )
    if n_failed:
        html.append(f'<h2 class="bad">Failed runs ({n_failed})</h2>')
        bad = df[df["status"] != "ok"]
        rows = [
            [escape(r["key"]), escape(Path(r["data"]).name), f"<code>{escape(r['params'])}</code>",
             f'<span class="bad">{escape(str(r["error"]))}</span>']
            for _, r in bad.iterrows()
        ]  # fmt: skip
        html.append(_table(["key", "data", "params", "error"], rows, left=4))
    html.append(f"<h2>All runs ({len(df)})</h2>")
    cols = ["total_pnl", "fills", "round_trips", "hit_rate", "max_drawdown", "sharpe"]
    rows = []
    for _, r in df.iterrows():
        link = (
            f'<a href="{escape(r["report_html"])}">{escape(r["key"])}</a>'
            if r["status"] == "ok" and r["report_html"]
            else escape(r["key"])
        )
        rows.append(
            [str(r["run"]), link, escape(Path(r["data"]).name),
             f"<code>{escape(r['params'])}</code>", escape(r["status"])]
            + [escape(_fmt(r[c])) for c in cols]
        )  # fmt: skip
    html.append(_table(["run", "key", "data", "params", "status", *cols], rows, left=4))
    html.append(
        "<details><summary>Sweep configuration</summary><pre>"
        + escape(json.dumps(meta, indent=2, default=str))
        + "</pre></details></body></html>\n"
    )
    path = Path(out_dir) / "report.html"
    path.write_text("".join(html), encoding="utf-8")
    return path
