"""bot4 sweep's rows in PostgreSQL (migration events/0005): one row per run with its status,
error and metrics, equal to the Parquet table's; a resumed sweep writes nothing twice."""

from __future__ import annotations

import pytest

from bot4.research.sweep import SweepConfig, run_sweep
from tests.conftest import query
from tests.data_paths import lobster_dir

pytestmark = pytest.mark.timeout(240)
pytest.importorskip(
    "pandas",
    reason="the research extra (pip install -e .[research]) is not installed; CI installs it via the test extra",
)


def test_sweep_rows_land_once_and_match_the_table(tmp_path, new_db):
    dsn = new_db()
    cfg = SweepConfig(
        data=[str(lobster_dir() / "aapl_level10_first999")],
        out=str(tmp_path / "s"),
        grid=[("signals.qty", [100, 0])],
        executor="serial",
        dsn=dsn,
    )
    out = run_sweep(cfg)
    rows = query(dsn, "SELECT run_key, status, error, total_pnl, metrics->>'fills' "
                      "FROM sweep_runs ORDER BY run")  # fmt: skip
    t = out.table
    assert [r[0] for r in rows] == list(t["key"])
    assert [r[1] for r in rows] == ["ok", "failed"]
    assert rows[1][2] == t["error"].iloc[1] and "params.qty" in rows[1][2]
    assert float(rows[0][3]) == t["total_pnl"].iloc[0] and int(rows[0][4]) == t["fills"].iloc[0]
    run_sweep(cfg)  # resumed: nothing new
    assert query(dsn, "SELECT count(*) FROM sweep_runs")[0][0] == 2
