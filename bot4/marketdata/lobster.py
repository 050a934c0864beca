"""LOBSTER files (NASDAQ TotalView-ITCH rebuilt by lobsterdata.com): find, parse, validate.

A LOBSTER sample is a pair of headerless CSV files named
``TICKER_DATE_START_END_{message|orderbook}_LEVELS.csv`` (START / END in ms after
midnight), as plain files or inside LOBSTER's zip archives (read in memory, never
extracted). Row *k* of the orderbook file is the book after message *k*.

Message row ``time,type,order_id,size,price,direction`` -> one ``MARKET_DATA`` record:

    field        from                  guarantee
    seq          line number (1-based) monotonic; a gap means rows were excluded, and the
                                       orderbook row of a record is ``seq - 1``
    ts_event_ns  time                  UTC epoch ns: seconds after midnight of DATE in
                                       exchange-local time (``tz``, America/New_York), parsed
                                       from the decimal text exactly; digits past the 9th
                                       are truncated, never rounded, never rejected
    ts_recv_ns   -                     0: a replayed file has no receive stamp
    kind         type                  1..7 = MD_BOOK_ADD .. MD_TRADING_HALT, same numbers
    order_id     order id              0 on hidden executions (type 5) and halts
    qty          size                  shares, > 0 (halts: 0)
    price        price                 $ x 10_000, LOBSTER's unit and the default instrument
                                       price scale (halts: 0)
    side         direction             +1 buy / -1 sell limit order. On executions (types
                                       4, 5) it is the side of the *resting* order, so -1
                                       is a buyer-initiated trade. Halts: 0
    instrument   TICKER                via ``instruments`` (symbol -> id)
    flags        -                     MDF_REPLAY always; MDF_LAST_IN_BATCH on the last
                                       kept row of a run of equal ts_event_ns; type 7:
                                       price -1 / 0 / 1 -> MDF_HALT / MDF_QUOTING / MDF_RESUME

Bad rows are excluded and counted by reason (:class:`BadInputReport`), never raised:
``MALFORMED_ROW`` (column count, non-numeric field, direction not +-1, halt price not
-1/0/1), ``TRUNCATED_FILE`` (an unterminated last line that does not parse),
``UNKNOWN_KIND`` (type not 1..7), ``NEGATIVE_PRICE`` and ``INVALID_QTY`` (size <= 0),
checked in that order so each row counts once. A row that parses but is earlier than a
row before it makes the whole file refused
(:class:`~bot4.marketdata.report.UnsortedInputError`, ``docs/inputs.md``). A missing,
empty or unnamed file, or an unknown ticker, is a :class:`LobsterError` before any
parsing; so is a pair whose orderbook does not have one row per message line. The byte
parsers are numba kernels (``bot4.marketdata.lobster_parsers``); everything around them
is vectorised numpy.
"""

from __future__ import annotations

import os
import posixpath
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import numpy as np

from bot4.marketdata.lobster_parsers import (
    _NS_PER_S,
    _OK,
    MessageColumns,
    _parse_int_rows,
    _parse_messages,
)
from bot4.marketdata.report import BadInputReport, check_sorted
from bot4.records import (
    DEFAULT_INSTRUMENTS,
    MARKET_DATA,
    MD_TRADING_HALT,
    MDF_HALT,
    MDF_LAST_IN_BATCH,
    MDF_QUOTING,
    MDF_REPLAY,
    MDF_RESUME,
    InstrumentTable,
)
from bot4.records.errors import Bot4Error, Code

__all__ = [
    "DUMMY_ASK_PRICE",
    "DUMMY_BID_PRICE",
    "EXCHANGE_TZ",
    "BadInputReport",
    "LobsterError",
    "LobsterFile",
    "LobsterName",
    "LobsterPair",
    "find_pairs",
    "local_to_utc_ns",
    "read_messages",
    "read_orderbook",
    "read_pair",
]

EXCHANGE_TZ = "America/New_York"  # NASDAQ local time; LOBSTER's times are local (inferred)
DUMMY_ASK_PRICE = 9_999_999_999  # LOBSTER's filler for a missing ask level (size 0)
DUMMY_BID_PRICE = -9_999_999_999  # LOBSTER's filler for a missing bid level (size 0)

_NAME = re.compile(
    r"^(?P<ticker>[^_/\\]+)_(?P<day>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
    r"(?P<role>message|orderbook)_(?P<levels>\d+)\.csv$"
)
_NS_PER_HOUR = 3600 * _NS_PER_S


class LobsterError(Bot4Error, ValueError):
    """A LOBSTER input that cannot be read at all; ``path`` names the file or container.

    Codes: ``INPUT_MISSING`` (missing path, not a LOBSTER name, no pair, bad zip),
    ``TRUNCATED_FILE`` (empty file), ``UNKNOWN_INSTRUMENT`` (ticker not in the table),
    ``MALFORMED_ROW`` (an orderbook row that does not parse).
    """

    code = Code.INPUT_MISSING

    def __init__(self, path: object, problem: str, code: Code | None = None) -> None:
        super().__init__(f"{path}: {problem}", code)
        self.path = str(path)
        self.problem = problem


# --- names, files and pairs -------------------------------------------------------------


@dataclass(frozen=True)
class LobsterName:
    """The fields of a LOBSTER file name. ``start_ms`` / ``end_ms``: ms after midnight."""

    ticker: str
    day: date
    start_ms: int
    end_ms: int
    role: str  # "message" or "orderbook"
    levels: int

    @classmethod
    def parse(cls, filename: str) -> LobsterName | None:
        """The fields of ``filename`` (a base name), or None when it is not a LOBSTER name."""
        m = _NAME.match(filename)
        if m is None or int(m["levels"]) < 1:
            return None
        try:
            day = date.fromisoformat(m["day"])
        except ValueError:
            return None
        return cls(m["ticker"], day, int(m["start"]), int(m["end"]), m["role"], int(m["levels"]))

    def partner(self) -> str:
        """File name of the other half of the pair."""
        other = "orderbook" if self.role == "message" else "message"
        return (
            f"{self.ticker}_{self.day.isoformat()}_{self.start_ms}_{self.end_ms}_"
            f"{other}_{self.levels}.csv"
        )


@dataclass(frozen=True)
class LobsterFile:
    """One CSV: a plain file (``member`` None) or the member ``member`` of the zip ``path``."""

    path: Path
    member: str | None = None

    @property
    def filename(self) -> str:
        return posixpath.basename(self.member) if self.member is not None else self.path.name

    @property
    def location(self) -> str:
        """Where the file sits: its directory, or the zip plus the member's folder."""
        if self.member is None:
            return str(self.path.parent)
        return f"{self.path}!{posixpath.dirname(self.member)}"

    @property
    def info(self) -> LobsterName | None:
        return LobsterName.parse(self.filename)

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member is not None else str(self.path)

    def size(self) -> int:
        """Uncompressed size in bytes; LobsterError if the file or member does not exist."""
        if self.member is None:
            try:
                return self.path.stat().st_size
            except OSError as e:
                raise LobsterError(self, f"cannot read: {e.strerror or e}") from e
        with _open_zip(self.path) as zf:
            try:
                return zf.getinfo(self.member).file_size
            except KeyError:
                raise LobsterError(self, "no such member in the zip") from None

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The file as a binary stream (a zip member decompressed as it is read), for
        readers that take it a block at a time; LobsterError when it cannot be opened."""
        if self.member is None:
            try:
                fh = open(self.path, "rb")  # noqa: SIM115 - closed below
            except OSError as e:
                raise LobsterError(self, f"cannot read: {e.strerror or e}") from e
            with fh:
                yield fh
            return
        with _open_zip(self.path) as zf:
            try:
                fh = zf.open(self.member)
            except (KeyError, zipfile.BadZipFile, OSError) as e:
                raise LobsterError(self, f"cannot read from the zip: {e}") from e
            with fh:
                yield fh

    def read_bytes(self) -> bytes:
        if self.member is None:
            try:
                return self.path.read_bytes()
            except OSError as e:
                raise LobsterError(self, f"cannot read: {e.strerror or e}") from e
        with _open_zip(self.path) as zf:
            try:
                return zf.read(self.member)
            except (KeyError, zipfile.BadZipFile, OSError) as e:
                raise LobsterError(self, f"cannot read from the zip: {e}") from e


@dataclass(frozen=True)
class LobsterPair:
    """A message file and its orderbook file (same ticker, day, window and levels)."""

    message: LobsterFile
    orderbook: LobsterFile
    info: LobsterName = field(repr=False)

    @property
    def ticker(self) -> str:
        return self.info.ticker

    @property
    def day(self) -> date:
        return self.info.day

    @property
    def levels(self) -> int:
        return self.info.levels

    def __str__(self) -> str:
        return str(self.message)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise LobsterError(path, f"cannot open as a zip: {e}") from e


def _pairs_among(files: list[LobsterFile]) -> list[LobsterPair]:
    by_name = {(f.location, f.filename): f for f in files}
    pairs = []
    for (where, name), f in by_name.items():
        info = LobsterName.parse(name)
        if info is None or info.role != "message":
            continue
        book = by_name.get((where, info.partner()))
        if book is not None:
            pairs.append(LobsterPair(f, book, info))
    return pairs


def _zip_files(path: Path) -> list[LobsterFile]:
    with _open_zip(path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
    return [LobsterFile(path, n) for n in names if LobsterName.parse(posixpath.basename(n))]


def find_pairs(path: str | os.PathLike[str], *, recursive: bool = False) -> list[LobsterPair]:
    """Message/orderbook pairs at ``path``, sorted by (ticker, day, levels, location).

    ``path`` may be a message CSV or an orderbook CSV (its partner must sit beside it), a
    LOBSTER zip (pairs among its members, read in place), or a directory (pairs among its
    CSVs and inside its zips; subdirectories too when ``recursive``). Files without a
    partner are ignored in a directory or zip. LobsterError if the path does not exist,
    a CSV is not named like a LOBSTER file or has no partner, or nothing pairs up.
    """
    p = Path(path)
    if not p.exists():
        raise LobsterError(p, "does not exist")
    if p.is_dir():
        files: list[LobsterFile] = []
        for child in sorted(p.rglob("*") if recursive else p.iterdir()):
            if not child.is_file():
                continue
            if child.suffix.lower() == ".zip":
                files.extend(_zip_files(child))
            elif LobsterName.parse(child.name):
                files.append(LobsterFile(child))
        pairs = _pairs_among(files)
    elif p.suffix.lower() == ".zip":
        pairs = _pairs_among(_zip_files(p))
    else:
        info = LobsterName.parse(p.name)
        if info is None:
            raise LobsterError(p, "not a LOBSTER file name (TICKER_DATE_START_END_ROLE_LEVELS.csv)")
        partner = p.with_name(info.partner())
        if not partner.is_file():
            raise LobsterError(p, f"partner file {partner.name} not found beside it")
        if info.role == "message":
            return [LobsterPair(LobsterFile(p), LobsterFile(partner), info)]
        return [LobsterPair(LobsterFile(partner), LobsterFile(p), LobsterName.parse(partner.name))]
    if not pairs:
        raise LobsterError(p, "no LOBSTER message/orderbook pair found")
    return sorted(pairs, key=lambda q: (q.ticker, q.day, q.levels, str(q.message)))


def _as_file(source: str | os.PathLike[str] | LobsterFile | LobsterPair, role: str) -> LobsterFile:
    """The one ``role`` file that ``source`` names (a zip or directory must hold one pair)."""
    if isinstance(source, LobsterPair):
        return source.message if role == "message" else source.orderbook
    if isinstance(source, LobsterFile):
        return source
    p = Path(source)
    if not p.exists():
        raise LobsterError(p, "does not exist")
    if p.is_dir() or p.suffix.lower() == ".zip":
        pairs = find_pairs(p)
        if len(pairs) != 1:
            raise LobsterError(p, f"holds {len(pairs)} pairs; name one of them")
        return _as_file(pairs[0], role)
    return LobsterFile(p)


def _load(f: LobsterFile) -> bytes:
    """The bytes of ``f``; LobsterError before reading when it is missing or empty."""
    if f.size() == 0:
        raise LobsterError(f, "file is empty", Code.TRUNCATED_FILE)
    data = f.read_bytes()
    if not data.strip():
        raise LobsterError(f, "file holds no rows (only whitespace)", Code.TRUNCATED_FILE)
    return data


# --- messages -------------------------------------------------------------------------------


def _instrument_id(
    symbol: str, instruments: InstrumentTable | Mapping[str, int], where: object
) -> int:
    if isinstance(instruments, InstrumentTable):
        if symbol in instruments.symbols:
            return instruments.id_of(symbol)
    elif symbol in instruments:
        return int(instruments[symbol])
    raise LobsterError(
        where, f"ticker {symbol!r} not in the instrument table", Code.UNKNOWN_INSTRUMENT
    )


def _utc_offsets_ns(day: date, hours: int, tz: ZoneInfo) -> np.ndarray:
    """UTC offset (ns) of local wall time ``day`` 00:00 + h hours, for h in 0..hours."""
    midnight = datetime(day.year, day.month, day.day)
    return np.array(
        [
            (midnight + timedelta(hours=h)).replace(tzinfo=tz).utcoffset()
            // timedelta(microseconds=1)
            * 1000
            for h in range(hours + 1)
        ],
        dtype=np.int64,
    )


def local_to_utc_ns(
    day: date, local_ns: np.ndarray, tz: str | ZoneInfo = EXCHANGE_TZ
) -> np.ndarray:
    """UTC epoch ns of ``local_ns`` (ns after local midnight of ``day`` in ``tz``).

    Exact integer arithmetic. The offset is taken per local wall-clock hour, so a day with
    a DST change is converted correctly on each side of the change.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    local_ns = np.asarray(local_ns, dtype=np.int64)
    midnight_as_utc = (
        (datetime(day.year, day.month, day.day) - datetime(1970, 1, 1))
        // timedelta(microseconds=1)
        * 1000
    )
    if local_ns.size == 0:
        return local_ns.copy()
    hour = local_ns // _NS_PER_HOUR
    offsets = _utc_offsets_ns(day, int(hour.max()), zone)
    return local_ns + np.int64(midnight_as_utc) - offsets[hour]


def _count_reasons(status: np.ndarray, keep_lines: int) -> tuple[dict, dict]:
    counts: dict[Code, int] = {}
    first: dict[Code, tuple[int, ...]] = {}
    codes, n = np.unique(status[status != _OK], return_counts=True)
    for code, count in zip(codes.tolist(), n.tolist(), strict=True):
        c = Code(code)
        counts[c] = count
        first[c] = tuple((np.flatnonzero(status == code)[:keep_lines] + 1).tolist())
    return counts, first


def message_records(
    f: object,
    cols: MessageColumns,
    rows: int,
    line0: int,
    instrument: int,
    day: date,
    zone: ZoneInfo,
    prev: tuple[int | None, int] = (None, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """``(records, status)`` of the first ``rows`` slots of ``cols``, parsed from the file's
    lines ``line0 + 1 ..``: the kept rows as MARKET_DATA (module doc; ``MDF_LAST_IN_BATCH``
    as if nothing followed) and every line's parse status. ``prev``: the (local time, line)
    of the latest kept row before ``line0``, for the sort check (UnsortedInputError)."""
    ts, kind, oid, qty, price, side, status = (a[:rows] for a in cols)
    ok = status == _OK
    # out of time order among the rows that parse: the whole file is refused
    check_sorted(str(f), ts[ok], np.flatnonzero(ok) + 1 + line0, "line", *prev)
    keep = np.flatnonzero(ok)
    out = np.zeros(keep.size, dtype=MARKET_DATA)
    out["seq"] = keep + 1 + line0
    out["ts_event_ns"] = local_to_utc_ns(day, ts[keep], zone)
    out["instrument"] = instrument
    k = kind[keep]
    out["kind"] = k
    halt = k == MD_TRADING_HALT
    out["order_id"] = oid[keep]
    out["qty"] = np.where(halt, 0, qty[keep])
    out["price"] = np.where(halt, 0, price[keep])
    out["side"] = np.where(halt, 0, side[keep])
    flags = np.full(keep.size, MDF_REPLAY, dtype=np.uint16)
    hp = price[keep]
    flags[halt & (hp == -1)] |= MDF_HALT
    flags[halt & (hp == 0)] |= MDF_QUOTING
    flags[halt & (hp == 1)] |= MDF_RESUME
    if keep.size:
        t = out["ts_event_ns"]
        last = np.ones(keep.size, dtype=bool)
        last[:-1] = t[1:] != t[:-1]
        flags[last] |= MDF_LAST_IN_BATCH
    out["flags"] = flags
    return out, status


def message_file(
    source: str | os.PathLike[str] | LobsterFile | LobsterPair,
    instruments: InstrumentTable | Mapping[str, int] = DEFAULT_INSTRUMENTS,
    symbol: str | None = None,
    day: date | None = None,
    tz: str | ZoneInfo = EXCHANGE_TZ,
) -> tuple[LobsterFile, int, date, ZoneInfo]:
    """``(file, instrument id, day, zone)`` of a message file (:func:`read_messages`'
    arguments), checked before reading it: LobsterError as there."""
    f = _as_file(source, "message")
    info = f.info
    if info is not None and info.role != "message":
        raise LobsterError(f, "is an orderbook file, not a message file")
    symbol = symbol or (info.ticker if info else None)
    day = day or (info.day if info else None)
    if symbol is None or day is None:
        raise LobsterError(f, "not a LOBSTER file name: pass symbol= and day=")
    instrument = _instrument_id(symbol, instruments, f)
    return f, instrument, day, tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def read_messages(
    source: str | os.PathLike[str] | LobsterFile | LobsterPair,
    *,
    instruments: InstrumentTable | Mapping[str, int] = DEFAULT_INSTRUMENTS,
    symbol: str | None = None,
    day: date | None = None,
    tz: str | ZoneInfo = EXCHANGE_TZ,
    keep_lines: int = 5,
) -> tuple[np.ndarray, BadInputReport]:
    """Parse a LOBSTER message file into ``MARKET_DATA`` records (see the module doc).

    ``source``: a message CSV, a :class:`LobsterFile`, a :class:`LobsterPair`, or a zip /
    directory holding exactly one pair. ``symbol`` and ``day`` default to the file name's
    TICKER and DATE (required when the name is not a LOBSTER name). ``instruments`` maps the
    symbol to the instrument id: an InstrumentTable or a plain {symbol: id} mapping.

    Returns ``(records, report)``: records in file order, bad rows excluded and counted in
    ``report`` (up to ``keep_lines`` line numbers per reason). LobsterError, before any
    parsing, when the file is missing or empty, the symbol or day is unknown, or the file
    is an orderbook file.
    """
    f, instrument, day, zone = message_file(source, instruments, symbol, day, tz)
    data = _load(f)

    buf = np.frombuffer(data, dtype=np.uint8)
    cols = MessageColumns.new(data.count(b"\n") + 1)
    rows = _parse_messages(buf, cols)
    out, status = message_records(f, cols, rows, 0, instrument, day, zone)
    counts, first = _count_reasons(status, keep_lines)
    return out, BadInputReport(str(f), rows, len(out), counts, first)


# --- orderbook ------------------------------------------------------------------------------


def read_orderbook(
    source: str | os.PathLike[str] | LobsterFile | LobsterPair, *, levels: int | None = None
) -> np.ndarray:
    """Parse a LOBSTER orderbook file into an int64 array of shape (rows, 4 * levels).

    Columns per level i (1-based): AskPrice_i, AskSize_i, BidPrice_i, BidSize_i; prices
    $ x 10_000, missing levels as LOBSTER writes them (+-9999999999, size 0). ``levels``
    defaults to the file name's LEVELS, else to the first row's column count / 4. The
    orderbook is a reference, so a row that does not parse is a LobsterError naming the
    line (nothing is silently dropped that would misalign rows with messages).
    """
    f = _as_file(source, "orderbook")
    info = f.info
    if info is not None and info.role != "orderbook":
        raise LobsterError(f, "is a message file, not an orderbook file")
    data = _load(f)
    levels = orderbook_levels(f, data, levels)
    return orderbook_rows(f, data, levels)


def orderbook_levels(f: LobsterFile, data: bytes, levels: int | None = None) -> int:
    """The levels of the orderbook file ``f`` whose text starts with ``data``: ``levels``,
    else the file name's, else the first row's column count / 4; LobsterError when the
    first row does not have 4 x that many columns."""
    first_line = data[: data.find(b"\n")] if b"\n" in data else data
    ncols = first_line.count(b",") + 1
    if levels is None:
        info = f.info
        levels = info.levels if info is not None else ncols // 4
    if levels < 1 or ncols != 4 * levels:
        raise LobsterError(
            f, f"first row has {ncols} columns, expected 4 x {levels} levels", Code.MALFORMED_ROW
        )
    return levels


def orderbook_rows(f: LobsterFile, data: bytes, levels: int, line0: int = 0) -> np.ndarray:
    """int64 (rows, 4 x ``levels``) of the orderbook lines ``data`` (the file's lines
    ``line0 + 1 ..``); LobsterError naming the first line that does not parse."""
    out = np.empty((data.count(b"\n") + 1, 4 * levels), dtype=np.int64)
    rows, bad_line, bad_status = _parse_int_rows(np.frombuffer(data, dtype=np.uint8), out)
    if bad_line:
        raise LobsterError(f, f"line {line0 + bad_line} does not parse", Code(bad_status))
    return out[:rows]


def read_pair(
    pair: LobsterPair | str | os.PathLike[str], **kwargs
) -> tuple[np.ndarray, np.ndarray, BadInputReport]:
    """``(records, orderbook, report)`` of one pair; ``kwargs`` go to :func:`read_messages`.

    Record ``r`` belongs to orderbook row ``r["seq"] - 1``.
    """
    if not isinstance(pair, LobsterPair):
        pairs = find_pairs(pair)
        if len(pairs) != 1:
            raise LobsterError(pair, f"holds {len(pairs)} pairs; name one of them")
        pair = pairs[0]
    records, report = read_messages(pair, **kwargs)
    book = read_orderbook(pair)
    if len(book) != report.rows:
        raise pair_mismatch(pair, len(book), report.rows)
    return records, book, report


def pair_mismatch(pair: LobsterPair, book_rows: int, message_rows: int) -> LobsterError:
    """The error for a pair whose files differ in length."""
    # row k of the orderbook is the book after message k: a file cut short (or one from
    # another pair) would put every quote after the cut on the wrong message
    return LobsterError(
        pair.orderbook,
        f"has {book_rows} rows but its message file {pair.message.filename} has "
        f"{message_rows}: not a matching pair (one orderbook row per message)",
    )
