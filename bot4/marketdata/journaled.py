"""Market data from a journal: what ``bot4 record`` captured (or any journal holding
MARKET_DATA frames), read back for the market data stage and for replay.

Frames of other record types are skipped (counted in the report under their record type
name, not as bad rows). Records come back in journal order, which is the order the
recording source published them; a record whose ``ts_event_ns`` is earlier than the one
before it is kept out and counted as ``TIME_BACKWARDS`` (the stage paces on event time).
A missing directory or one without market data is an error before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bot4.journal import JournalReader
from bot4.marketdata.report import BadInputReport
from bot4.records import MARKET_DATA, RECORD_TYPE_IDS, RT_MARKET_DATA
from bot4.records.errors import Bot4Error, Code


def read_journal_market_data(path: str | os.PathLike) -> tuple[np.ndarray, BadInputReport]:
    """(MARKET_DATA records in journal order, report) of the journal directory ``path``."""
    p = Path(path)
    if not p.is_dir():
        raise Bot4Error(f"{p}: no such journal directory", Code.INPUT_MISSING)
    report = BadInputReport(str(p))
    chunks = []
    other: dict[int, int] = {}
    for _pos, rtype, recs in JournalReader(p):
        if rtype == RT_MARKET_DATA:
            chunks.append(recs)
        else:
            other[rtype] = other.get(rtype, 0) + len(recs)
    if not chunks:
        kinds = ", ".join(f"{n} {_type_name(t)}" for t, n in sorted(other.items())) or "nothing"
        raise Bot4Error(
            f"{p}: journal holds no market data ({kinds}); record some with `bot4 record`",
            Code.INPUT_MISSING,
        )
    data = np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
    report.rows = len(data)
    ts = data["ts_event_ns"]
    # a record earlier than the latest event time before it goes back in time
    back = np.flatnonzero(ts < np.maximum.accumulate(ts))
    if back.size:
        report.add_many(Code.TIME_BACKWARDS, back + 1)
        data = np.delete(data, back)
    report.kept = len(data)
    assert data.dtype == MARKET_DATA
    return data, report


def _type_name(rtype: int) -> str:
    names = {i: n for n, i in RECORD_TYPE_IDS.items()}
    return names.get(rtype, f"record type {rtype}")
