"""Market data from a journal: what ``bot4 record`` captured (or any journal holding
MARKET_DATA frames), read back for the market data stage and for replay.

Frames of other record types are skipped (not bad rows). Records come back in journal
order, which is the order the recording source published them; a record whose
``ts_event_ns`` is earlier than one before it makes the journal refused, as any unsorted
input is (:class:`~bot4.marketdata.report.UnsortedInputError`, ``docs/inputs.md``). A
torn tail (a recording cut by a crash) is counted as one ``TRUNCATED_FILE`` bad row; a
damaged frame or a gap is :class:`~bot4.journal.JournalCorrupt`. A missing directory or
one without market data is an error before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bot4.journal import JournalReader
from bot4.marketdata.report import BadInputReport, check_sorted
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
    reader = JournalReader(p)
    for _pos, rtype, recs in reader:
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
    check_sorted(str(p), data["ts_event_ns"], np.arange(1, len(data) + 1), "record")
    report.kept = len(data)
    if reader.torn_tail is not None:
        report.rows += 1  # the torn frame: records a crash cut off, counted, never read
        report.add(Code.TRUNCATED_FILE, len(data) + 1)
    assert data.dtype == MARKET_DATA
    return data, report


def _type_name(rtype: int) -> str:
    names = {i: n for n, i in RECORD_TYPE_IDS.items()}
    return names.get(rtype, f"record type {rtype}")
