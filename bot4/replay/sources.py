"""What a replay reads: recorded market data, checked before any work, then streamed.

:func:`open_source` recognises ``DATA``:

* a LOBSTER pair — a message or orderbook CSV named like LOBSTER's files (its partner
  beside it), a LOBSTER zip, or a directory holding exactly one pair: the md stage's
  records (books built from the messages), with the initial book first as
  ``MDF_SNAPSHOT`` adds (:func:`bot4.stages.marketdata.lobster_snapshot`), so the venue's
  queue model starts from the real book; both files streamed a block of lines at a time
  (:func:`bot4.marketdata.lobster_stream.iter_lobster_stream`);
* a CSV or Parquet tick file (columns of :mod:`bot4.marketdata.files`), streamed batch
  by batch through the stage's checks (:func:`bot4.marketdata.files.iter_csv`,
  :func:`~bot4.marketdata.files.iter_parquet`), so memory stays flat however long the
  file is;
* a journal directory (``journal-*.bj4``) holding MARKET_DATA frames (``bot4 record``),
  streamed frame by frame;
* :class:`SyntheticSource` — a generated quote-and-trade stream (benchmarks, tests),
  produced chunk by chunk as a pure function of its position and seed.

Every source yields ``MARKET_DATA`` chunks in event-time order (``ts_event_ns``
non-decreasing), ``seq`` and ``ts_recv_ns`` zero (the harness stamps them). Problems that
make the input unusable are a :class:`ReplayInputError` before any work starts, its
``problem`` one of ``missing`` (no such path, nothing bot4 reads there, a file that
cannot be read), ``columns`` (unsupported columns), ``unsorted`` (an event earlier than
one before it: refused, as everywhere, ``docs/inputs.md``) and ``empty`` (no events); bad
rows inside a usable file are excluded and counted
(:class:`bot4.marketdata.report.BadInputReport`) by the same readers and checks the
market data stage uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.marketdata.report import BadInputReport

# CHUNK: records per chunk a source yields at most; HOLD_RECORDS: checked records a CSV,
# Parquet or LOBSTER input keeps from its check's pass
from bot4.marketdata.streamed import CHUNK, HOLD_RECORDS, Streamed
from bot4.nbkit import unowned
from bot4.records import (
    DEFAULT_INSTRUMENTS,
    MARKET_DATA,
    MD_QUOTE,
    MD_TRADE,
    MDF_SYNTHETIC,
    RT_MARKET_DATA,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.records.errors import Bot4Error, Code

__all__ = [
    "DataSource",
    "ReplayInputError",
    "SyntheticSource",
    "open_source",
    "write_parquet",
]

_PROBLEM_CODES = {
    "missing": Code.INPUT_MISSING,
    "columns": Code.INPUT_MISSING,
    "unsorted": Code.TIME_BACKWARDS,
    "empty": Code.INPUT_MISSING,
}


class ReplayInputError(Bot4Error):
    """Replay input that cannot be used. ``problem``: missing | columns | unsorted | empty;
    ``path``: what was given. The code is ``INPUT_MISSING`` (missing, columns, empty) or
    ``TIME_BACKWARDS`` (unsorted)."""

    def __init__(self, path: object, problem: str, detail: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {detail}", _PROBLEM_CODES[problem])


@dataclass
class DataSource:
    """A checked input: ``kind`` (lobster | file | parquet | journal | synthetic), ``path``,
    ``total`` records it will yield, ``first_ns`` / ``last_ns`` event times (ns since the
    epoch), the bad-input ``report`` and ``md_params`` (the md stage's params to read the
    same data in a full-topology run; None when the md stage cannot read it)."""

    kind: str
    path: str | None
    total: int
    first_ns: int
    last_ns: int
    report: BadInputReport | None = None
    md_params: dict | None = None
    _data: np.ndarray | None = field(default=None, repr=False)
    _streamed: Streamed | None = field(default=None, repr=False)

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """MARKET_DATA chunks of at most ``size`` records, in event-time order."""
        if self._data is not None:
            for i in range(0, len(self._data), size):
                yield self._data[i : i + size]
            return
        if self._streamed is not None:
            yield from self._streamed.chunks(size)
        elif self.kind == "journal":
            yield from _journal_chunks(Path(self.path), size)
        else:  # pragma: no cover - synthetic holds its data
            raise AssertionError(self.kind)

    def describe(self) -> dict:
        d = {"kind": self.kind, "path": self.path, "records": self.total}
        if self.report is not None:
            d["bad_input"] = self.report.as_dict()
        return d


def open_source(path: str | os.PathLike) -> DataSource:
    """Recognise and check ``path`` (module docstring); ReplayInputError before any work."""
    from bot4.marketdata.report import UnsortedInputError

    try:
        return _open(Path(path))
    except UnsortedInputError as exc:
        raise ReplayInputError(path, "unsorted", exc.detail) from None


def _open(p: Path) -> DataSource:
    from bot4.marketdata.files import MarketDataFileError
    from bot4.marketdata.lobster import LobsterError, LobsterName, find_pairs

    if not p.exists():
        raise ReplayInputError(p, "missing", "no such file or directory")
    if p.is_dir() and any(p.glob("journal-*.bj4")):
        return _open_journal(p)
    lobster = p.is_dir() or p.suffix.lower() == ".zip" or LobsterName.parse(p.name) is not None
    if lobster:
        try:
            pairs = find_pairs(p)
            if len(pairs) != 1:
                raise ReplayInputError(
                    p, "missing", f"holds {len(pairs)} LOBSTER pairs; name one message file"
                )
            return _open_streamed(p, "lobster")
        except LobsterError as exc:
            problem = "empty" if exc.code == Code.TRUNCATED_FILE else "missing"
            raise ReplayInputError(p, problem, exc.problem) from None
    if not p.is_file():
        raise ReplayInputError(p, "missing", "not a file, a journal or a LOBSTER directory")
    if p.stat().st_size == 0:
        raise ReplayInputError(p, "empty", "file is empty")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return _open_parquet(p)
        except MarketDataFileError as exc:
            text = str(exc).split(": ", 1)[-1]
            if "column" in text:
                raise ReplayInputError(p, "columns", f"unsupported columns: {text}") from None
            raise ReplayInputError(p, "missing", text) from None
    if suffix not in (".csv", ".txt"):
        raise ReplayInputError(
            p,
            "missing",
            f"unknown format {suffix!r}: expected .csv, .parquet, a LOBSTER "
            "pair or a journal directory",
        )
    try:
        return _open_streamed(p, "file")
    except MarketDataFileError as exc:
        text = str(exc)
        problem = "columns" if "missing columns" in text or "header" in text else "empty"
        if "cannot read" in text:
            problem = "missing"
        raise ReplayInputError(p, problem, text.split(": ", 1)[-1]) from None


# --- CSV and Parquet, streamed -------------------------------------------------------------------


def _open_parquet(p: Path) -> DataSource:
    return _open_streamed(p, "parquet")


def _open_streamed(p: Path, kind: str) -> DataSource:
    """One pass over a CSV ("file") or Parquet tick file or a LOBSTER pair through the
    stage's checks (:func:`bot4.marketdata.streamed.open_streamed`): the bad-row report,
    the kept count and the first and last event times. Up to ``HOLD_RECORDS`` checked
    records are kept from it; beyond that :meth:`DataSource.chunks` reads the input again
    through the same checks, so a replay holds one batch of a long input at a time."""
    from bot4.marketdata.streamed import open_streamed

    opts = {"snapshot": True} if kind == "lobster" else {}
    s = open_streamed(p, kind, HOLD_RECORDS, **opts)
    if s.report.rows == 0 or s.total == 0:
        what = "no data rows" if s.report.rows == 0 else "no usable rows: " + s.report.summary()
        raise ReplayInputError(p, "empty", what)
    if kind == "lobster":
        params = {"source": "lobster", "path": str(p), "snapshot": True}
    else:
        params = {"source": "file", "path": str(p)}
    return DataSource(kind, str(p), s.total, s.first_ns, s.last_ns, s.report, params,
                      _streamed=s)  # fmt: skip


def write_parquet(path: str | os.PathLike, chunks, row_group: int = CHUNK) -> int:
    """Write MARKET_DATA chunks (quotes and trades) as a Parquet tick file with
    ``price_units``; returns the rows written. For benchmarks and tests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = DEFAULT_INSTRUMENTS
    syms = np.asarray([""] + [table.symbol_of(i) for i in range(1, max(table.ids) + 1)], object)
    writer = None
    rows = 0
    try:
        for c in chunks:
            kind = np.where(c["kind"] == MD_QUOTE, "quote", "trade").astype(object)
            q = c["kind"] == MD_QUOTE
            side = np.where(
                q,
                np.where(c["side"] > 0, "bid", "ask"),
                np.where(c["side"] > 0, "buy", np.where(c["side"] < 0, "sell", "")),
            ).astype(object)
            t = pa.table(
                {
                    "ts_event_ns": pa.array(c["ts_event_ns"], pa.int64()),
                    "symbol": pa.array(syms[c["instrument"]]).dictionary_encode(),
                    "kind": pa.array(kind).dictionary_encode(),
                    "side": pa.array(side).dictionary_encode(),
                    "price_units": pa.array(c["price"], pa.int64()),
                    "qty": pa.array(c["qty"], pa.int64()),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(str(path), t.schema)
            writer.write_table(t, row_group_size=row_group)
            rows += len(c)
    finally:
        if writer is not None:
            writer.close()
    return rows


# --- journal, streamed ----------------------------------------------------------------------


def _open_journal(p: Path) -> DataSource:
    from bot4.journal import JournalReader
    from bot4.marketdata.report import check_sorted

    n = 0
    first = last = None
    reader = JournalReader(p)
    for _pos, rtype, recs in reader:
        if rtype != RT_MARKET_DATA or len(recs) == 0:
            continue
        ts = recs["ts_event_ns"]
        check_sorted(str(p), ts, np.arange(n + 1, n + len(recs) + 1), "record", last, n)
        first = int(ts[0]) if first is None else first
        last = max(int(ts[-1]), last if last is not None else int(ts[-1]))
        n += len(recs)
    if n == 0:
        raise ReplayInputError(p, "empty", "journal holds no market data events")
    report = BadInputReport(str(p), rows=n, kept=n)
    if reader.torn_tail is not None:  # as bot4.marketdata.journaled counts it
        report.rows += 1
        report.add(Code.TRUNCATED_FILE, n + 1)
    return DataSource(
        "journal", str(p), n, first, last, report, {"source": "journal", "path": str(p)}
    )


def _journal_chunks(p: Path, size: int) -> Iterator[np.ndarray]:
    from bot4.journal import JournalReader

    for _pos, rtype, recs in JournalReader(p):
        if rtype != RT_MARKET_DATA:
            continue
        for i in range(0, len(recs), size):
            c = recs[i : i + size].copy()
            c["seq"] = 0
            c["parent_seq"] = 0
            c["ts_recv_ns"] = 0
            yield c


# --- synthetic ------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _mix(a, b):
    z = (a ^ (b * np.uint64(0x9E3779B97F4A7C15))) * np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(31)
    z *= np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(29))


class SynthWalk(NamedTuple):
    """The synthetic stream's parameters and its random walk, carried from chunk to chunk
    (built once per pass over the source: chunks must come in order). Prices in price
    units, times in ns."""

    mids: np.ndarray  # int64[instruments]: each instrument's mid (moves as chunks go)
    base: np.ndarray  # int64[instruments]: its starting mid; a mid never falls below half
    seed: np.uint64  # the stream's seed
    t0_ns: int  # event time of record 0
    dt_ns: int  # between events
    half: int  # half the spread: quotes at mid -/+ half


@njit(nogil=True, cache=True)
def _synth(out, start, w):
    """Records ``start .. start + len(out) - 1`` of the synthetic stream into ``out``.

    Per instrument (round robin): a mid on a 1-cent grid that moves +-1 tick with
    probability 1/8 per event; each event is a quote of one side (85 %) with a random size,
    or a trade print (15 %) at the touch (aggressor random), or one tick through it after
    a move. ``w`` (:class:`SynthWalk`) carries the walk between chunks."""
    w = unowned(w)
    mids, base_px, seed, t0, dt_ns, half = w.mids, w.base, w.seed, w.t0_ns, w.dt_ns, w.half
    n_inst = mids.shape[0]
    for k in range(out.shape[0]):
        pos = np.uint64(start + k)
        inst = np.int64(pos % np.uint64(n_inst))
        h = _mix(seed, pos)
        r = out[k]
        r.ts_event_ns = t0 + np.int64(pos) * dt_ns
        r.instrument = inst + 1
        r.flags = MDF_SYNTHETIC
        move = np.int64(h & np.uint64(7))
        if move == 0:
            mids[inst] += 100
        elif move == 1:
            mids[inst] -= 100
        if mids[inst] < base_px[inst] // 2:
            mids[inst] = base_px[inst] // 2
        u = np.int64((h >> np.uint64(8)) & np.uint64(1023))
        side = SIDE_BUY if (h >> np.uint64(20)) & np.uint64(1) else SIDE_SELL
        r.qty = 100 * (1 + np.int64((h >> np.uint64(24)) & np.uint64(15)))
        if u < 870:
            r.kind = MD_QUOTE
            r.side = side
            r.price = mids[inst] - half if side == SIDE_BUY else mids[inst] + half
        else:
            r.kind = MD_TRADE
            r.side = side  # aggressor
            px = mids[inst] + half if side == SIDE_BUY else mids[inst] - half
            if move <= 1:
                px += 100 if side == SIDE_BUY else -100  # a print through the touch
            r.price = px
            r.qty = 100 * (1 + np.int64((h >> np.uint64(28)) & np.uint64(3)))


class SyntheticSource(DataSource):
    """``n`` generated quote/trade events over ``instruments`` instruments, one event every
    ``dt_ns`` ns from ``t0_ns`` (a pure function of position and ``seed``)."""

    def __init__(
        self,
        n: int,
        *,
        instruments: int = 3,
        seed: int = 1,
        dt_ns: int = 1_000,
        t0_ns: int = 1_340_285_400_000_000_000,  # 2012-06-21 13:30 UTC
    ) -> None:
        if n <= 0:
            raise ReplayInputError("<synthetic>", "empty", "no market data events to replay")
        super().__init__("synthetic", None, int(n), t0_ns, t0_ns + (n - 1) * dt_ns)
        self.instruments = int(instruments)
        self.seed = int(seed)
        self.dt_ns = int(dt_ns)
        self.t0_ns = int(t0_ns)

    def chunks(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        base = np.array([100 * 10_000 * (1 + i) for i in range(self.instruments)], np.int64)
        # mid half a cent off the grid: bid and ask on whole cents
        w = SynthWalk(base + 50, base, np.uint64(self.seed), np.int64(self.t0_ns),
                      np.int64(self.dt_ns), np.int64(50))  # fmt: skip
        for start in range(0, self.total, size):
            out = np.zeros(min(size, self.total - start), MARKET_DATA)
            _synth(out, start, w)
            yield out

    def describe(self) -> dict:
        return {
            "kind": "synthetic",
            "records": self.total,
            "instruments": self.instruments,
            "seed": self.seed,
            "dt_ns": self.dt_ns,
        }
