"""The results table of a sweep: one row per run, in plan order, as Parquet.

``OUT/results.parquet`` is rewritten (to a temporary file, then renamed) by the driver
alone as runs finish (the first at once, then at most every
``bot4.research.sweep.WRITE_EVERY_S``, and when the runs are done), so a sweep killed at any
moment leaves a readable table of the runs that finished (all but the last second's); the
next start of the same sweep skips their keys.

Columns: ``run`` (place in the plan), ``key``, ``data``, ``params`` (JSON text), one
``p:KEY`` column per parameter (numbers as float64 / int64, anything else as text),
``seed``, ``status`` (ok | failed), ``error``, the metric columns
(``bot4.research.runs.METRICS``), ``report_html`` / ``report_json`` / ``trades_csv``
(relative to OUT), ``journal_sha256``, ``command`` (the equivalent ``bot4 replay``),
``code_version``, and the run's own facts that are not reproducible: ``wall_s`` and
``worker`` (:data:`VOLATILE`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["VOLATILE", "ResultsTable"]

#: columns that differ between two executions of the same run (host facts)
VOLATILE = ("wall_s", "worker")

FILE = "results.parquet"


class ResultsTable:
    """Rows by run key, loaded from ``OUT/results.parquet`` when it exists."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / FILE
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            import pyarrow.parquet as pq

            for r in pq.read_table(self.path).to_pylist():
                r = {k: v for k, v in r.items() if not k.startswith("p:")}
                self.rows[r["key"]] = r

    def done(self, key: str, *, retry_failed: bool = False) -> bool:
        r = self.rows.get(key)
        return r is not None and (r["status"] == "ok" or not retry_failed)

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = row

    def frame(self):
        """The table as a pandas DataFrame in plan order, with the ``p:KEY`` columns."""
        import pandas as pd

        rows = sorted(self.rows.values(), key=lambda r: (r["run"], r["key"]))
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        params = [json.loads(p) for p in df["params"]]
        keys = sorted({k for p in params for k in p})
        for k in keys:
            vals = [p.get(k) for p in params]
            nums = [v for v in vals if v is not None]
            if nums and all(isinstance(v, int | float) and not isinstance(v, bool) for v in nums):
                col = pd.Series(vals, dtype="float64")
                if all(isinstance(v, int) for v in nums) and len(nums) == len(vals):
                    col = col.astype("int64")
            else:
                col = pd.Series([None if v is None else str(v) for v in vals], dtype="object")
            df[f"p:{k}"] = col
        return df

    def write(self) -> Path:
        """Rewrite the Parquet file atomically; its path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        df = self.frame()
        table = pa.Table.from_pandas(df, preserve_index=False)
        tmp = self.path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        return self.path
