"""Recorded ticks from CSV and Parquet files, as MARKET_DATA records.

Columns (a header row in CSV; the same names in Parquet):

========== ==============================================================================
column     meaning
========== ==============================================================================
ts_event_ns event time, integer ns since the Unix epoch (UTC), >= 0; Parquet may store
            it as a timestamp column (any unit, converted exactly)
symbol      instrument symbol from the instrument table
kind        ``quote`` (one side of the top of book) or ``trade``
side        quotes: ``bid`` or ``ask``; trades: ``buy`` / ``sell`` (aggressor) or empty
price       decimal dollars (``585.33``), converted exactly to the instrument's scale;
            Parquet may instead carry ``price_units`` (integers, already fixed point)
qty         integer shares (quotes: size at that price, 0 = side empty), at most MAX_QTY
========== ==============================================================================

CSV and Parquet go through the same row checks (:func:`_checked`), in this order, each
bad row counted once under the first reason that applies (:class:`BadInputReport`):

1. ``UNKNOWN_INSTRUMENT`` — the symbol is not in the instrument table;
2. ``MALFORMED_ROW`` — wrong number of fields, bytes that are not UTF-8, a NUL, a field
   that does not parse (numbers are ASCII decimal; a value that does not fit int64, a
   negative time, a price finer than the instrument's scale, an unknown kind or side);
   ``TRUNCATED_FILE`` instead for an unterminated last CSV line that does not parse;
3. ``NEGATIVE_PRICE`` — a negative price, or a trade at price 0;
4. ``INVALID_QTY`` — a negative quantity, a trade of 0, or more than ``MAX_QTY``;
5. event time order over the rows still kept: a row earlier than a row before it makes
   the whole file refused (:class:`~bot4.marketdata.report.UnsortedInputError`, naming
   the first such line), never thinned;
6. ``CROSSED_QUOTE`` — a quote that would cross or lock the book (bid >= ask).

A file that cannot be used at all — missing, empty, unreadable, a header that is not
UTF-8 text, a column missing or named twice, a Parquet column of a type that cannot hold
its field — raises :class:`MarketDataFileError` before any row is read. Both are read a
batch at a time (:func:`iter_csv`, :func:`iter_parquet`), checked with state carried
across batches, so a replay can stream them and still get exactly the checks the stage
gets. A CSV batch's plain lines are read by a numba kernel
(:mod:`bot4.marketdata.csv_fast`, ~10x the Python reading), every other line by the
Python parsers below, which the kernel agrees with on every line it claims.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from bot4.marketdata.csv_fast import FastLines
from bot4.marketdata.report import BadInputReport, check_sorted
from bot4.records import MARKET_DATA, MD_QUOTE, MD_TRADE, MDF_REPLAY, SIDE_BUY, SIDE_NONE, SIDE_SELL
from bot4.records.errors import Bot4Error, Code

COLUMNS = ("ts_event_ns", "symbol", "kind", "side", "price", "qty")
MAX_QTY = 10**12  # shares per row; more is a damaged number, not a market
CHUNK = 1 << 16  # rows (Parquet) or lines (CSV) read per batch
_INT64_MAX = 2**63 - 1
_INT = re.compile(r"\s*([+-]?)([0-9]{1,19})\s*", re.ASCII)
_DEC = re.compile(r"\s*([+-]?)([0-9]{1,19})(?:\.([0-9]*))?\s*", re.ASCII)
_KINDS = {"quote": MD_QUOTE, "trade": MD_TRADE}
_SIDES = {"bid": SIDE_BUY, "buy": SIDE_BUY, "ask": SIDE_SELL, "sell": SIDE_SELL, "": SIDE_NONE}


class MarketDataFileError(Bot4Error):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}", Code.INPUT_MISSING)
        self.path = str(path)


# --- field parsers: strict ASCII decimal, int64 range --------------------------------------


def _parse_int(s: object) -> int | None:
    """An ASCII decimal integer that fits int64, else None."""
    if not isinstance(s, str):
        return None
    m = _INT.fullmatch(s)
    if m is None:
        return None
    v = int(m[2])
    v = -v if m[1] == "-" else v
    return v if -_INT64_MAX <= v <= _INT64_MAX else None


def _decimal_to_units(text: object, scale: int) -> int | None:
    """Exact decimal text -> int64 units at ``scale`` (a power of ten), else None (not a
    number, finer than the scale, or beyond int64)."""
    if not isinstance(text, str):
        return None
    m = _DEC.fullmatch(text)
    if m is None:
        return None
    digits = len(str(scale)) - 1
    frac = (m[3] or "").rstrip("0")
    if 10**digits != scale or len(frac) > digits:
        return None
    v = int(m[2]) * scale + (int(frac.ljust(digits, "0")) if digits else 0)
    if v > _INT64_MAX:
        return None
    return -v if m[1] == "-" else v


def _ints(values: list) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros(len(values), np.int64)
    ok = np.zeros(len(values), bool)
    for i, s in enumerate(values):
        v = _parse_int(s)
        if v is not None:
            out[i], ok[i] = v, True
    return out, ok


def _word_code(w: object, mapping: dict, fold: bool) -> int:
    """``mapping``'s code for the text ``w`` (0 when unmapped); None reads as the empty
    string, a value that is not text maps to 0; ``fold``: stripped lower-case."""
    if w is None:
        w = ""
    elif isinstance(w, bytes):
        w = w.decode("utf-8", "replace")
    if not isinstance(w, str):
        return 0
    return mapping.get(w.strip().lower() if fold else w, 0)


# --- the checks every row goes through ------------------------------------------------------


@dataclass
class _State:
    """What the checks carry from one batch of an input to the next: the book's touch
    per instrument (crossed quotes) and the latest event time and its line (order)."""

    bid: np.ndarray
    ask: np.ndarray
    last_ts: int | None = None
    last_line: int = 0

    @classmethod
    def new(cls, table) -> _State:
        n = int(max(table.ids)) + 1
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64))


@njit(cache=True)
def _crossed(inst, kind, side, price, keep, bid, ask):
    """Mark quotes that would cross or lock the book (bid >= ask) over the kept rows, in
    order; ``bid`` / ``ask`` carry the touch per instrument across calls."""
    bad = np.zeros(inst.shape[0], np.bool_)
    for i in range(inst.shape[0]):
        if not keep[i] or kind[i] != MD_QUOTE:
            continue
        b = price[i] if side[i] > 0 else bid[inst[i]]
        a = price[i] if side[i] < 0 else ask[inst[i]]
        if b > 0 and a > 0 and b >= a:
            bad[i] = True
            continue
        if side[i] > 0:
            bid[inst[i]] = price[i]
        else:
            ask[inst[i]] = price[i]
    return bad


def _checked(
    source: str,
    report: BadInputReport,
    state: _State,
    table,
    line_of: np.ndarray,
    ts: np.ndarray,
    ts_ok: np.ndarray,
    ids: np.ndarray,
    kind: np.ndarray,
    side_code: np.ndarray,
    qty: np.ndarray,
    qty_ok: np.ndarray,
    price_of,
    what: str,
) -> np.ndarray:
    """The rows that pass every check (module doc), as MARKET_DATA; bad rows counted in
    ``report``. ``ids``, ``kind``, ``side_code``: the symbol, kind and side columns mapped
    through :func:`_codes` (0 = not known). ``price_of(ids, scale, known)`` -> (units, ok)
    reads the price column once the rows' instruments (and so their scales) are known."""
    n = len(line_of)
    report.rows += n
    keep = np.ones(n, bool)

    def drop(mask, code):
        idx = np.flatnonzero(mask & keep)
        report.add_many(code, line_of[idx])
        keep[idx] = False

    known = ids > 0
    scale = np.ones(n, np.int64)
    for iid in np.unique(ids[known]).tolist():
        scale[ids == iid] = table.price_scale(iid)
    kind = kind.astype(np.uint8)
    side = np.where(side_code == 99, SIDE_NONE, side_code).astype(np.int8)
    side_ok = np.where(
        kind == MD_QUOTE, (side_code == SIDE_BUY) | (side_code == SIDE_SELL), side_code != 0
    )
    price, price_ok = price_of(ids, scale, known)
    drop(~known, Code.UNKNOWN_INSTRUMENT)  # first: its price cannot be scaled
    drop(~(ts_ok & (ts >= 0) & qty_ok & price_ok & (kind != 0) & side_ok), Code.MALFORMED_ROW)
    drop((price < 0) | ((price == 0) & (kind == MD_TRADE)), Code.NEGATIVE_PRICE)
    drop((qty < 0) | ((qty == 0) & (kind == MD_TRADE)) | (qty > MAX_QTY), Code.INVALID_QTY)
    idx = np.flatnonzero(keep)
    check_sorted(source, ts[idx], line_of[idx], what, state.last_ts, state.last_line)
    if idx.size:
        state.last_ts, state.last_line = int(ts[idx[-1]]), int(line_of[idx[-1]])
    drop(_crossed(ids, kind, side, price, keep, state.bid, state.ask), Code.CROSSED_QUOTE)
    idx = np.flatnonzero(keep)
    out = np.zeros(len(idx), MARKET_DATA)
    out["ts_event_ns"] = ts[idx]
    out["price"] = price[idx]
    out["qty"] = qty[idx]
    out["instrument"] = ids[idx]
    out["kind"] = kind[idx]
    out["side"] = side[idx]
    out["flags"] = MDF_REPLAY
    report.kept += len(out)
    return out


def _codes(table) -> tuple[dict, dict, dict]:
    """The symbol, kind and side mappings of :func:`_checked`'s code columns."""
    by_symbol = {s: table.id_of(s) for s in table.symbols}
    return by_symbol, _KINDS, {**_SIDES, "": 99}  # side 99: empty, for trades only


def _decimal_prices(values: list):
    def price_of(ids, scale, known):
        units = np.zeros(len(values), np.int64)
        ok = np.zeros(len(values), bool)
        for i in np.flatnonzero(known).tolist():
            v = _decimal_to_units(values[i], int(scale[i]))
            if v is not None:
                units[i], ok[i] = v, True
        return units, ok

    return price_of


# --- readers ----------------------------------------------------------------------------------


def read_table(path: str | os.PathLike, instruments=None) -> tuple[np.ndarray, BadInputReport]:
    """Read a CSV or Parquet tick file into MARKET_DATA records (seq unset): the rows
    that pass the checks of the module doc, and the report of those that did not.
    MarketDataFileError for a file that cannot be used, UnsortedInputError for one not in
    event-time order."""
    from bot4.records import DEFAULT_INSTRUMENTS

    table = instruments or DEFAULT_INSTRUMENTS
    p = Path(path)
    _usable(p)
    report = BadInputReport(str(p))
    if p.suffix.lower() in (".parquet", ".pq"):
        chunks = list(iter_parquet(p, report, table))
        out = np.concatenate(chunks) if chunks else np.zeros(0, MARKET_DATA)
    else:
        out = _read_csv(p, report, table)
    if report.rows == 0:
        raise MarketDataFileError(p, "no data rows")
    return out, report


def _usable(p: Path) -> None:
    if not p.exists():
        raise MarketDataFileError(p, "no such file")
    if not p.is_file():
        raise MarketDataFileError(p, "not a file")
    if p.stat().st_size == 0:
        raise MarketDataFileError(p, "file is empty")


def _header(p: Path, names: list[str]) -> dict[str, int]:
    seen: set[str] = set()
    for h in names:
        if h in seen:
            raise MarketDataFileError(p, f"column {h!r} named twice in the header")
        seen.add(h)
    missing = [c for c in COLUMNS if c not in seen and not (c == "price" and "price_units" in seen)]
    if missing:
        raise MarketDataFileError(
            p, f"missing columns {missing} (have {names}; expected {list(COLUMNS)})"
        )
    return {h: k for k, h in enumerate(names)}


def _split(text: str) -> list[str] | None:
    """The fields of one CSV line (quotes honoured within the line), None if it does not
    parse."""
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error:
        return None


def _read_csv(p: Path, report: BadInputReport, table) -> np.ndarray:
    chunks = list(iter_csv(p, report, table))
    return np.concatenate(chunks) if chunks else np.zeros(0, MARKET_DATA)


def iter_csv(
    path: str | os.PathLike,
    report: BadInputReport | None = None,
    instruments=None,
    size: int = CHUNK,
) -> Iterator[np.ndarray]:
    """MARKET_DATA batches of a CSV tick file, ``size`` lines read per batch (at most
    ``size`` records), checked (module doc) with state carried across batches, as
    :func:`iter_parquet` does: memory stays flat however long the file. MarketDataFileError
    before the first batch for a file that cannot be used (unreadable, a header that is not
    UTF-8 text, a column missing or named twice); UnsortedInputError at the batch where
    the order breaks."""
    import itertools

    from bot4.records import DEFAULT_INSTRUMENTS

    table = instruments or DEFAULT_INSTRUMENTS
    p = Path(path)
    report = report if report is not None else BadInputReport(str(p))
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed below, also when the caller stops early
    except OSError as exc:
        raise MarketDataFileError(p, f"cannot read: {exc.strerror or exc}") from None
    with f:
        try:
            first = f.readline()
        except OSError as exc:
            raise MarketDataFileError(p, f"cannot read: {exc.strerror or exc}") from None
        # a UTF-8 byte-order mark (spreadsheets), then the line without its end
        first = first.removeprefix(b"\xef\xbb\xbf").removesuffix(b"\n").removesuffix(b"\r")
        try:
            head = first.decode("utf-8")
        except UnicodeDecodeError:
            raise MarketDataFileError(p, "header row is not UTF-8 text") from None
        names = _split(head) if "\x00" not in head else None
        if not names or not any(n.strip() for n in names):
            raise MarketDataFileError(p, f"no header row (expected {','.join(COLUMNS)})")
        idx = _header(p, [h.strip() for h in names])
        width = len(names)
        state = _State.new(table)
        by_symbol, kinds, sides = _codes(table)
        fast = FastLines(idx, width, table, by_symbol, kinds, sides)
        ln = 1
        while True:
            try:
                lines = list(itertools.islice(f, size))
            except OSError as exc:
                raise MarketDataFileError(
                    p, f"cannot read the lines after line {ln} ({exc})"
                ) from None
            if not lines:
                return
            # plain lines by the numba fast path (bot4.marketdata.csv_fast), the rest here
            got = fast.read(lines)
            keep = got[:, 0] == 1
            for k in np.flatnonzero(~keep).tolist():
                raw = lines[k]
                cut = not raw.endswith(b"\n")  # only the file's last line lacks one
                raw = raw.removesuffix(b"\n").removesuffix(b"\r")
                row = None
                if b"\x00" not in raw:
                    with contextlib.suppress(UnicodeDecodeError):  # not UTF-8: malformed
                        row = _split(raw.decode("utf-8"))
                if row is None or len(row) != width:
                    report.rows += 1
                    report.add(Code.TRUNCATED_FILE if cut else Code.MALFORMED_ROW, ln + 1 + k)
                    continue
                keep[k] = True
                _slow_row(got[k], row, idx, table, by_symbol, kinds, sides)
            rows = np.flatnonzero(keep)
            got = got[rows]
            ln += len(lines)
            units, units_ok = got[:, 6], got[:, 7] == 1
            yield _checked(
                str(p), report, state, table, rows + (ln - len(lines) + 1), got[:, 1],
                got[:, 8] == 1, got[:, 3], got[:, 4], got[:, 5], got[:, 2], got[:, 9] == 1,
                lambda ids, scale, known, u=units, o=units_ok: (u, o), "line",
            )  # fmt: skip


def _slow_row(r: np.ndarray, row: list[str], idx: dict, table, by_symbol, kinds, sides) -> None:
    """One CSV row the fast path left, read into ``r`` (a row of
    :meth:`~bot4.marketdata.csv_fast.FastLines.read`'s output) by the Python parsers."""

    def val(v):
        return (v, 1) if v is not None else (0, 0)

    r[1], r[8] = val(_parse_int(row[idx["ts_event_ns"]]))
    r[2], r[9] = val(_parse_int(row[idx["qty"]]))
    inst = _word_code(row[idx["symbol"]], by_symbol, False)
    r[3] = inst
    r[4] = _word_code(row[idx["kind"]], kinds, True)
    r[5] = _word_code(row[idx["side"]], sides, True)
    if "price" in idx:
        price = row[idx["price"]]
        r[6], r[7] = val(_decimal_to_units(price, table.price_scale(inst)) if inst > 0 else None)
    else:
        r[6], r[7] = val(_parse_int(row[idx["price_units"]]))


# --- Parquet ----------------------------------------------------------------------------------


def _column_kind(pa, t) -> str | None:
    """How a Parquet column of arrow type ``t`` is read: int, float, time, text, decimal
    or None (cannot hold a field of ours)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "time"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "text"
    return None


#: column -> the arrow column kinds it may have
_ALLOWED = {
    "ts_event_ns": ("int", "time", "text"),
    "symbol": ("text",),
    "kind": ("text",),
    "side": ("text",),
    "price": ("text", "float", "decimal", "int"),
    "price_units": ("int", "float", "text"),
    "qty": ("int", "float", "text"),
}


def _plain(col):
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _arrow_ints(col, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 values and a mask of the rows whose value is a whole number in int64
    (floats: finite, integral, below 2**53 where float64 is exact)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = _plain(col)
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)
    if kind == "text":
        vals = col.to_pylist()
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            vals = [v.decode("utf-8", "replace") if v is not None else None for v in vals]
        return _ints(vals)
    if kind == "time":
        unit = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[col.type.unit]
        raw = pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        ok = valid & (np.abs(raw) <= _INT64_MAX // unit)
        return np.where(ok, raw, 0).astype(np.int64) * unit, ok
    if kind == "float":
        raw = pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = valid & np.isfinite(raw) & (np.abs(raw) < 2.0**53) & (raw == np.floor(raw))
        return np.where(ok, raw, 0).astype(np.int64), ok
    raw = pc.fill_null(col, 0).to_numpy(zero_copy_only=False)
    ok = valid.copy()
    if raw.dtype == np.uint64:
        ok &= raw <= np.uint64(_INT64_MAX)
    out = np.where(ok, raw, 0).astype(np.int64)
    return out, ok


def _arrow_text(col) -> list:
    import pyarrow as pa

    col = _plain(col)
    # Arrow does not validate a string column's UTF-8 when it reads a file: a poisoned file's
    # bytes would raise in to_pylist. Read them as bytes and decode with replacement, so such
    # a value is a word no instrument or code has (its row counted), as for binary columns
    if pa.types.is_string(col.type):
        col = col.cast(pa.binary())
    elif pa.types.is_large_string(col.type):
        col = col.cast(pa.large_binary())
    vals = col.to_pylist()
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        vals = [v.decode("utf-8", "replace") if v is not None else None for v in vals]
    return vals


def _arrow_codes(col, mapping: dict, fold: bool = True) -> np.ndarray:
    """A text column mapped through ``mapping`` via its dictionary (each distinct word
    looked up once, as :func:`_word_code` does)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(col.type):
        return np.full(len(col), _word_code(None, mapping, fold), np.int64)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    words = _arrow_text(col.dictionary)  # bytes decoded with replacement, as for a plain column
    codes = np.asarray([_word_code(w, mapping, fold) for w in [*words, None]], np.int64)
    idx = pc.fill_null(col.indices, -1).to_numpy(zero_copy_only=False)
    return codes[idx]


def iter_parquet(
    path: str | os.PathLike,
    report: BadInputReport | None = None,
    instruments=None,
    size: int = CHUNK,
) -> Iterator[np.ndarray]:
    """MARKET_DATA batches of a Parquet tick file, at most ``size`` rows read per batch,
    checked as a CSV is (module doc) with state carried across batches; bad rows counted
    in ``report``. MarketDataFileError before the first batch for a file that cannot be
    used (unreadable, a column missing or of a type that cannot hold its field), or at
    the batch where the file turns out damaged; UnsortedInputError at the batch where the
    order breaks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bot4.records import DEFAULT_INSTRUMENTS

    table = instruments or DEFAULT_INSTRUMENTS
    p = Path(path)
    report = report if report is not None else BadInputReport(str(p))
    try:
        # pre_buffer (pyarrow's default) reads every column chunk of the file ahead:
        # 94 MB held for a 90 MB file of 10 M rows; without it one batch at a time (5 MB)
        f = pq.ParquetFile(p, pre_buffer=False)
        schema = f.schema_arrow
    except Exception as exc:  # pyarrow raises several types for a corrupt or cut file
        raise MarketDataFileError(p, f"not a readable Parquet file ({_short(exc)})") from None
    names = list(schema.names)
    _header(p, names)
    price_col = "price_units" if "price_units" in names else "price"
    use = ["ts_event_ns", "symbol", "kind", "side", price_col, "qty"]
    kinds = {}
    for c in use:
        k = _column_kind(pa, schema.field(c).type)
        if k not in _ALLOWED[c]:
            raise MarketDataFileError(
                p, f"column {c} has type {schema.field(c).type}, which cannot hold it"
            )
        kinds[c] = k
    state = _State.new(table)
    by_symbol, kinds_map, sides = _codes(table)
    row = 0
    batches = f.iter_batches(batch_size=size, columns=use, use_threads=False)
    while True:
        try:
            b = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a damaged page or row group, found as it is read
            raise MarketDataFileError(
                p, f"cannot read the rows after row {row} ({_short(exc)})"
            ) from None
        n = b.num_rows
        line_of = np.arange(row + 1, row + n + 1, dtype=np.int64)
        row += n
        col = dict(zip(use, b.columns, strict=True))
        ts, ts_ok = _arrow_ints(col["ts_event_ns"], kinds["ts_event_ns"])
        qty, qty_ok = _arrow_ints(col["qty"], kinds["qty"])
        if price_col == "price_units":
            units, units_ok = _arrow_ints(col["price_units"], kinds["price_units"])
            price_of = lambda ids, scale, known, u=units, o=units_ok: (u, o)  # noqa: E731
        else:
            pk = kinds["price"]
            vals = _arrow_text(col["price"])
            if pk == "float":
                vals = [repr(v) if isinstance(v, float) else None for v in vals]
            elif pk in ("decimal", "int"):
                vals = [None if v is None else str(v) for v in vals]
            price_of = _decimal_prices(vals)
        yield _checked(
            str(p), report, state, table, line_of, ts, ts_ok,
            _arrow_codes(col["symbol"], by_symbol, fold=False), _arrow_codes(col["kind"], kinds_map),
            _arrow_codes(col["side"], sides), qty, qty_ok, price_of, "row",
        )  # fmt: skip


def _short(exc: BaseException) -> str:
    """An exception as one short line (pyarrow's messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
