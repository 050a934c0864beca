"""A recorded input checked in one pass, then read again a batch at a time: what keeps the
replay's and the md stage's memory flat however long the input is.

:func:`open_streamed` runs the kind's reader once over the whole input through its checks
(the bad-row report, unsorted input refused, the kept count, first and last event times)
and keeps up to :data:`HOLD_RECORDS` checked records from that pass; a longer input is
read again by :meth:`Streamed.chunks` through the same reader (its records are a function
of the input). Kinds: ``file`` (CSV, :func:`bot4.marketdata.files.iter_csv`),
``parquet`` (:func:`~bot4.marketdata.files.iter_parquet`), ``lobster`` (a LOBSTER pair, its
books built from the messages, :func:`bot4.marketdata.lobster_stream.iter_lobster_stream`;
with a ``depth`` option, ``(records, levels)`` per block of the pair,
:func:`~bot4.marketdata.lobster_stream.iter_lobster_depth`),
``journal`` (the MARKET_DATA frames of a journal directory,
:func:`bot4.marketdata.journaled.iter_journal_market_data`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.marketdata.report import BadInputReport
from bot4.records import MARKET_DATA

__all__ = ["CHUNK", "HOLD_RECORDS", "RecordCursor", "Streamed", "file_kind", "open_streamed"]

CHUNK = 1 << 16  # records per chunk at most
#: an input whose checked records fit (64 MB) is kept from the check's pass and not read
#: twice; a longer one is read again, a batch at a time
HOLD_RECORDS = 1 << 20


def file_kind(path: str | os.PathLike) -> str:
    """The reader kind of a tick file by its suffix: ``parquet`` or ``file`` (CSV)."""
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "file"


def _reader(kind: str, opts: dict):
    """The reader of ``kind``, called ``(path, report)`` or ``(path, size=)``."""
    from bot4.marketdata.files import iter_csv, iter_parquet

    if kind == "lobster" and opts.get("depth"):
        from bot4.marketdata.lobster_stream import iter_lobster_depth

        # (records, levels) per block, not re-cut: a level's parent is a stream index
        return lambda p, report=None, size=CHUNK: iter_lobster_depth(p, report, **opts)
    if kind == "lobster":
        return lambda p, report=None, size=CHUNK: _iter_lobster(p, report, size, **opts)
    if kind == "journal":
        from bot4.marketdata.journaled import iter_journal_market_data

        return iter_journal_market_data
    return iter_parquet if kind == "parquet" else iter_csv


def _iter_lobster(p, report=None, size: int = CHUNK, *, counters=None, **opts):
    """A LOBSTER pair's stream a block of lines at a time, re-cut to ``size`` (a short
    chunk costs a replay a step); ``opts`` go to ``iter_lobster_stream``."""
    from bot4.marketdata.lobster_stream import iter_lobster_stream

    rest = None
    for c in iter_lobster_stream(p, report, counters=counters, **opts):
        if rest is not None:
            c = np.concatenate([rest, c])
        cut = len(c) - len(c) % size
        for i in range(0, cut, size):
            yield c[i : i + size]
        rest = c[cut:] if cut < len(c) else None
    if rest is not None:
        yield rest


@dataclass
class Streamed:
    """A checked input (module doc): ``kind``, ``path``, ``total`` records, ``first_ns`` /
    ``last_ns`` event times, the bad-input ``report``, a LOBSTER pair's book ``counters``
    (the builder's, after the check's pass), reader ``opts``."""

    kind: str
    path: str
    total: int
    first_ns: int | None
    last_ns: int | None
    report: BadInputReport
    counters: dict[str, int] = field(default_factory=dict)
    opts: dict = field(default_factory=dict)
    _held: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._held is not None

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """The checked records in chunks of at most ``size``, in order; for a LOBSTER pair
        read with ``depth``, ``(records, levels)`` per block of the pair instead."""
        if self._held is not None:
            for c in self._held:
                if isinstance(c, tuple):
                    yield c
                    continue
                for i in range(0, len(c), size):
                    yield c[i : i + size]
            return
        for item in _reader(self.kind, self.opts)(Path(self.path), size=size):
            if len(_records(item)):  # at most ``size``: bad rows only shrink a batch
                yield item


def open_streamed(path: str | os.PathLike, kind: str, hold: int | None = None, **opts) -> Streamed:
    """One checking pass over ``path`` (module doc); the reader's errors propagate.
    ``opts``: a LOBSTER pair's ``snapshot`` and ``check`` (:func:`iter_lobster_stream`)."""
    p = Path(path)
    hold = HOLD_RECORDS if hold is None else hold
    report = BadInputReport(str(p))
    counters: dict[str, int] = {}
    n = 0
    first = last = None
    held: list[np.ndarray] | None = []
    pass_opts = {**opts, "counters": counters} if kind == "lobster" else {}
    for item in _reader(kind, pass_opts)(p, report):
        recs = _records(item)
        if len(recs):
            first = int(recs["ts_event_ns"][0]) if first is None else first
            last = int(recs["ts_event_ns"][-1])
            n += len(recs)
            if held is not None:
                held.append(item)
                if n > hold:
                    held = None  # too long to keep: read again, a batch at a time
    return Streamed(kind, str(p), n, first, last, report, counters, opts, held)


def _records(item) -> np.ndarray:
    """The MARKET_DATA records of a reader's item (a records array, or records and levels)."""
    return item[0] if isinstance(item, tuple) else item


class RecordCursor:
    """Sequential access by stream position to a :class:`Streamed` input's records, one
    chunk in memory: :meth:`window` gives the records from a position to the end of the
    chunk holding it. Positions only move forward (a restarted stage makes a new cursor and
    skips to where it resumes by reading through)."""

    def __init__(self, source: Streamed, size: int = CHUNK) -> None:
        self.total = source.total
        self._chunks = source.chunks(size)
        self.base = 0  # stream position of buf[0]
        self.buf = np.zeros(0, MARKET_DATA)
        # a LOBSTER pair read with depth: the chunk's BOOK_LEVEL updates, the index in all
        # the levels of levels[0], and lv_off[k] = the first level of record buf[k]
        self.levels: np.ndarray | None = None
        self.lv_base = 0
        self.lv_off = np.zeros(1, np.int64)

    def window(self, position: int) -> np.ndarray:
        """Records ``position ..`` to the end of the chunk holding ``position`` (empty at or
        past the end of the stream)."""
        if position < self.base:
            raise ValueError(f"position {position} is behind the cursor ({self.base})")
        while position >= self.base + len(self.buf):
            if self.base + len(self.buf) >= self.total:
                return self.buf[:0]
            self.base += len(self.buf)
            item = next(self._chunks)
            if isinstance(item, tuple):
                self.buf, levels = item
                self.lv_base += 0 if self.levels is None else len(self.levels)
                self.levels = levels
                parents = levels["parent_seq"].astype(np.int64) - self.base
                self.lv_off = np.searchsorted(parents, np.arange(len(self.buf) + 1))
            else:
                self.buf = item
        return self.buf[position - self.base :]
