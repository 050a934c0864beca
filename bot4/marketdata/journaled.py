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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bot4.journal import JournalReader
from bot4.marketdata.report import BadInputReport, check_sorted
from bot4.records import MARKET_DATA, RECORD_TYPE_IDS, RT_MARKET_DATA
from bot4.records.errors import Bot4Error, Code


def read_journal_market_data(path: str | os.PathLike) -> tuple[np.ndarray, BadInputReport]:
    """(MARKET_DATA records in journal order, report) of the journal directory ``path``."""
    report = BadInputReport(str(path))
    chunks = list(iter_journal_market_data(path, report))
    data = np.concatenate(chunks) if chunks else np.zeros(0, MARKET_DATA)
    assert data.dtype == MARKET_DATA
    return data, report


def iter_journal_market_data(
    path: str | os.PathLike, report: BadInputReport | None = None, size: int = 1 << 16
) -> Iterator[np.ndarray]:
    """The journal's MARKET_DATA records frame by frame (at most ``size`` at a time), order
    checked across frames; ``report`` complete at the end (module doc). A missing
    directory is an error before the first record, one without market data at the end."""
    p = Path(path)
    if not p.is_dir():
        raise Bot4Error(f"{p}: no such journal directory", Code.INPUT_MISSING)
    report = report if report is not None else BadInputReport(str(p))
    other: dict[int, int] = {}
    reader = JournalReader(p)
    n = frames = 0
    last = None
    for _pos, rtype, recs in reader:
        if rtype != RT_MARKET_DATA:
            other[rtype] = other.get(rtype, 0) + len(recs)
            continue
        ts = recs["ts_event_ns"]
        check_sorted(str(p), ts, np.arange(n + 1, n + len(recs) + 1), "record", last, n)
        if len(recs):
            last = int(ts.max()) if last is None else max(last, int(ts.max()))
        n += len(recs)
        frames += 1
        report.rows += len(recs)
        report.kept += len(recs)
        for i in range(0, len(recs), size):
            yield recs[i : i + size].copy()  # the caller may keep it past the reader
    if frames == 0:
        kinds = ", ".join(f"{k} {_type_name(t)}" for t, k in sorted(other.items())) or "nothing"
        raise Bot4Error(
            f"{p}: journal holds no market data ({kinds}); record some with `bot4 record`",
            Code.INPUT_MISSING,
        )
    if reader.torn_tail is not None:
        report.rows += 1  # the torn frame: records a crash cut off, counted, never read
        report.add(Code.TRUNCATED_FILE, n + 1)


def _type_name(rtype: int) -> str:
    names = {i: n for n, i in RECORD_TYPE_IDS.items()}
    return names.get(rtype, f"record type {rtype}")
