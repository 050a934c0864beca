"""The sweep's comparison report: the heat map's cells are the objective's mean over the
other parameters, text values sort naturally, the title is page text (never cut by a narrow
grid); points rank by their mean, a point with a failed run last."""

from __future__ import annotations

import re

import pytest

pd = pytest.importorskip(
    "pandas",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)


def table() -> object:
    rows = []
    for lat in ("const:120us", "const:30us"):
        for thr in (0.5, 2.0):
            for data, pnl in (("a", 10.0), ("b", 20.0)):
                bump = 100.0 if (lat, thr) == ("const:30us", 2.0) else 0.0
                rows.append(
                    {
                        "params": f'{{"l": "{lat}", "t": {thr}}}',
                        "p:latency.order": lat,
                        "p:signals.threshold": thr,
                        "data": data,
                        "status": "ok",
                        "total_pnl": pnl + bump + thr,
                    }  # fmt: skip
                )
    rows[-1] = {**rows[-1], "status": "failed", "total_pnl": None}
    return pd.DataFrame(rows)


def test_the_heat_map_cells_are_means_in_natural_order_under_a_page_title():
    from bot4.research.compare import heat_map_svg

    html = heat_map_svg(table(), "latency.order", "signals.threshold", "total_pnl")
    title, svg = html.split("<svg", 1)
    assert "signals.threshold (rows) x latency.order (columns)" in title
    cells = re.findall(r"<title>([^<]*)</title>", svg)
    assert cells == [
        "latency.order=const:30us signals.threshold=0.5000: 15.5000",
        "latency.order=const:120us signals.threshold=0.5000: 15.5000",
        "latency.order=const:30us signals.threshold=2.0000: 112.0000",  # the ok run alone
        "latency.order=const:120us signals.threshold=2.0000: 17.0000",
    ]


def test_points_rank_by_their_mean_and_a_failed_run_ranks_last():
    from bot4.research.compare import rank_points

    r = rank_points(table(), "total_pnl")
    assert list(r["failed"]) == [0, 0, 0, 1]
    assert list(r["total_pnl"][:3]) == [17.0, 15.5, 15.5] and pd.isna(r["total_pnl"].iloc[3])
