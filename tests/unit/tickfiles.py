"""Tick files for the tests: a Parquet tick file written again as CSV."""

from __future__ import annotations

from pathlib import Path


def csv_of_parquet(src: Path, dst: Path) -> Path:
    """``src`` (a Parquet tick file, ``bot4.replay.sources.write_parquet``) as a CSV tick
    file at ``dst``, the same columns (``price_units``), dictionary columns as text."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = pq.read_table(src)
    t = t.cast(pa.schema([(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type)
                          for f in t.schema]))  # fmt: skip
    pcsv.write_csv(t, dst)
    return dst
