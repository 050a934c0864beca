"""A sweep's rows in the project's PostgreSQL (``sweep_runs``, migration
``events/0005_sweep_runs.sql``), written by the driver as runs finish.

The Parquet table is the sweep's record; the database is a copy for SQL and dashboards. A
database that cannot be reached does not stop the sweep: the rows wait in memory and are
sent with the next write; :meth:`SweepDB.close` says, once, how many never landed.
Writes are idempotent (``ON CONFLICT (sweep, run_key) DO UPDATE``).
"""

from __future__ import annotations

import json
import math
import sys

from bot4.research.runs import METRICS

__all__ = ["SweepDB"]

_UPSERT = """
INSERT INTO sweep_runs (sweep, run_key, run, data, params, seed, status, error, metrics,
                        total_pnl, report_html, journal_sha256, command, code_version,
                        wall_s, worker)
VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (sweep, run_key) DO UPDATE SET
    run = EXCLUDED.run, status = EXCLUDED.status, error = EXCLUDED.error,
    metrics = EXCLUDED.metrics, total_pnl = EXCLUDED.total_pnl,
    report_html = EXCLUDED.report_html, journal_sha256 = EXCLUDED.journal_sha256,
    command = EXCLUDED.command, code_version = EXCLUDED.code_version,
    wall_s = EXCLUDED.wall_s, worker = EXCLUDED.worker, recorded_at = now()
"""


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


class SweepDB:
    """Rows of sweep ``sweep`` (its output directory) into the database at ``dsn``; the
    events migrations are applied first (idempotent)."""

    def __init__(self, dsn: str, sweep: str) -> None:
        from bot4.db.migrate import migrate

        self.dsn = dsn
        self.sweep = sweep
        self.pending: list[dict] = []
        self.error: str | None = None
        migrate(dsn, ("events",))

    def write(self, rows: list[dict]) -> bool:
        """Send ``rows`` (and any that waited); False when the database could not take
        them (they wait for the next call)."""
        import psycopg

        self.pending.extend(rows)
        try:
            with psycopg.connect(self.dsn, autocommit=False, connect_timeout=5) as conn:
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT, [self._params(r) for r in self.pending])
                conn.commit()
        except psycopg.Error as exc:
            self.error = " ".join(str(exc).split())
            return False
        self.pending.clear()
        return True

    def _params(self, r: dict) -> tuple:
        metrics = {m: _clean(r.get(m)) for m in METRICS}
        return (
            self.sweep, r["key"], int(r["run"]), r["data"], r["params"], int(r["seed"]),
            r["status"], r["error"], json.dumps(metrics), metrics["total_pnl"],
            r.get("report_html"), r.get("journal_sha256"), r.get("command"),
            r["code_version"], _clean(r.get("wall_s")), r.get("worker"),
        )  # fmt: skip

    def close(self) -> None:
        if self.pending and not self.write([]):
            print(
                f"bot4: warning: {len(self.pending)} sweep rows not written to the database "
                f"({self.error}); they are in results.parquet",
                file=sys.stderr,
            )
