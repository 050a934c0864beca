"""The instrument table: id, symbol and the fixed-point scale of every instrument.

Records name instruments by a u4 ``id`` (> 0; 0 means unset). Each instrument's prices are
int64 counts of ``1 / price_scale`` currency units (``price_scale = 10_000``: a unit is
0.0001 dollar, LOBSTER's price unit). ``tick_size`` is the minimum price increment in those
units; it only validates prices, it is not the unit, since real data has sub-tick prices.
``lot_size`` is the quantity increment in shares.

The table is built once at start-up from TOML (or a mapping of the same shape) and is
immutable afterwards: the numpy array is read-only, so a stage can hand it to a kernel
without a copy and nobody can change a scale under a running kernel.

TOML shape (one ``[[instrument]]`` table per instrument; ``lot_size`` defaults to 1)::

    [[instrument]]
    id = 1
    symbol = "AAPL"
    price_scale = 10000   # units per dollar
    tick_size = "0.01"    # dollars, decimal string (a TOML float is refused: no float money)
    lot_size = 1
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from bot4.records.errors import Bot4Error, Code
from bot4.records.fixed import INT64_MAX, to_fixed

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "INSTRUMENT",
    "SYMBOL_BYTES",
    "InstrumentConfigError",
    "InstrumentTable",
    "UnknownInstrumentError",
    "load_instruments",
    "validate_price",
]

SYMBOL_BYTES = 16
MAX_INSTRUMENT_ID = 2**32 - 1

INSTRUMENT = np.dtype(
    [
        ("price_scale", np.int64),  # price units per 1 currency unit (10_000: unit = 1e-4 $)
        ("tick_size", np.int64),  # minimum price increment, price units (validates only)
        ("lot_size", np.int64),  # quantity increment, shares
        ("id", np.uint32),  # instrument id used in records, > 0
        ("symbol", f"S{SYMBOL_BYTES}"),  # ASCII, NUL padded
        ("reserved", np.uint8, (20,)),  # zero
    ],
    align=True,
)
if INSTRUMENT.itemsize != 64:
    raise AssertionError(f"INSTRUMENT is {INSTRUMENT.itemsize} bytes, expected 64")

_REQUIRED_KEYS = ("id", "symbol", "price_scale", "tick_size")
_KEYS = (*_REQUIRED_KEYS, "lot_size")


class InstrumentConfigError(Bot4Error, ValueError):
    """An instrument table that cannot be used; names the source, the entry and the problem."""

    code = Code.INSTRUMENT_CONFIG_INVALID

    def __init__(self, source: str, entry: str | None, problem: str) -> None:
        where = f"{source}: {entry}" if entry else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.entry = entry
        self.problem = problem


class UnknownInstrumentError(Bot4Error, LookupError):
    """Instrument id or symbol not in the table."""

    code = Code.UNKNOWN_INSTRUMENT


@dataclass(frozen=True, eq=False, repr=False)
class InstrumentTable:
    """Immutable instrument table: ``array`` holds ``INSTRUMENT`` rows sorted by id.

    Built by :func:`load_instruments`; constructing one directly re-checks the invariants
    (unique positive ids, unique symbols, positive scale, tick and lot).
    """

    array: np.ndarray
    source: str = "<table>"
    _row_by_id: dict[int, int] = field(init=False, repr=False)
    _row_by_symbol: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.array.dtype != INSTRUMENT or self.array.ndim != 1:
            raise InstrumentConfigError(self.source, None, "array is not a 1-d INSTRUMENT array")
        array = np.sort(self.array, order="id")
        array.flags.writeable = False
        by_id: dict[int, int] = {}
        by_symbol: dict[str, int] = {}
        for i, row in enumerate(array):
            ident, symbol = int(row["id"]), row["symbol"].decode("ascii")
            entry = f"instrument id {ident} ({symbol!r})"
            if ident == 0:
                raise InstrumentConfigError(self.source, entry, "id must be > 0")
            if ident in by_id or symbol in by_symbol:
                raise InstrumentConfigError(self.source, entry, "duplicate id or symbol")
            if min(int(row["price_scale"]), int(row["tick_size"]), int(row["lot_size"])) <= 0:
                raise InstrumentConfigError(
                    self.source, entry, "price_scale, tick_size and lot_size must be > 0"
                )
            by_id[ident] = i
            by_symbol[symbol] = i
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "_row_by_id", by_id)
        object.__setattr__(self, "_row_by_symbol", by_symbol)

    def __repr__(self) -> str:
        return f"InstrumentTable({self.source!r}, symbols={self.symbols!r})"

    def __len__(self) -> int:
        return len(self.array)

    def __iter__(self) -> Iterator[int]:
        return iter(self._row_by_id)

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._row_by_id

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self._row_by_id)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._row_by_symbol)

    def index_of(self, instrument_id: int) -> int:
        """Row of ``instrument_id`` in ``array``; UnknownInstrumentError if absent."""
        try:
            return self._row_by_id[int(instrument_id)]
        except KeyError:
            raise UnknownInstrumentError(
                f"instrument id {instrument_id} not in {self.source}"
            ) from None

    def row(self, instrument_id: int) -> np.void:
        """The (read-only) ``INSTRUMENT`` row of ``instrument_id``."""
        return self.array[self.index_of(instrument_id)]

    def id_of(self, symbol: str) -> int:
        """Instrument id of ``symbol``; UnknownInstrumentError if absent."""
        try:
            return int(self.array[self._row_by_symbol[symbol]]["id"])
        except KeyError:
            raise UnknownInstrumentError(f"symbol {symbol!r} not in {self.source}") from None

    def symbol_of(self, instrument_id: int) -> str:
        return self.row(instrument_id)["symbol"].decode("ascii")

    def price_scale(self, instrument_id: int) -> int:
        return int(self.row(instrument_id)["price_scale"])

    def tick_size(self, instrument_id: int) -> int:
        return int(self.row(instrument_id)["tick_size"])

    def lot_size(self, instrument_id: int) -> int:
        return int(self.row(instrument_id)["lot_size"])

    def dense_index(self, max_id: int = 1 << 16) -> np.ndarray:
        """int32 array mapping id -> row of ``array`` (-1 where no instrument), for kernels.

        ValueError if an id exceeds ``max_id`` (the array would be that long).
        """
        top = max(self._row_by_id, default=0)
        if top > max_id:
            raise ValueError(f"instrument id {top} above max_id {max_id}: dense index too large")
        index = np.full(top + 1, -1, dtype=np.int32)
        for ident, i in self._row_by_id.items():
            index[ident] = i
        index.flags.writeable = False
        return index


def validate_price(table: InstrumentTable, instrument_id: int, price_units: int) -> bool:
    """Whether ``price_units`` lies on the instrument's tick grid.

    Only a check: sub-tick prices are legal data (hidden liquidity, averaged prints), so
    callers decide what an off-tick price means. UnknownInstrumentError if the id is absent.
    """
    return int(price_units) % table.tick_size(instrument_id) == 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_name(n: int, raw: Mapping[str, Any]) -> str:
    label = f"[[instrument]] #{n}"
    if isinstance(raw.get("symbol"), str):
        label += f" (symbol {raw['symbol']!r})"
    elif _is_int(raw.get("id")):
        label += f" (id {raw['id']})"
    return label


def _parse_entry(source: str, n: int, raw: object) -> tuple[int, str, int, int, int]:
    if not isinstance(raw, Mapping):
        raise InstrumentConfigError(source, f"[[instrument]] #{n}", "is not a table")
    entry = _entry_name(n, raw)

    def fail(problem: str) -> InstrumentConfigError:
        return InstrumentConfigError(source, entry, problem)

    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise fail(f"missing key(s) {', '.join(missing)}")

    ident = raw["id"]
    if not _is_int(ident) or not 0 < ident <= MAX_INSTRUMENT_ID:
        raise fail(f"id must be an integer in 1..{MAX_INSTRUMENT_ID}, got {ident!r}")

    symbol = raw["symbol"]
    if not isinstance(symbol, str) or not symbol:
        raise fail(f"symbol must be a non-empty string, got {symbol!r}")
    if not (symbol.isascii() and symbol.isprintable()) or symbol != symbol.strip():
        raise fail(f"symbol {symbol!r} must be printable ASCII without surrounding spaces")
    if len(symbol) > SYMBOL_BYTES:
        raise fail(f"symbol {symbol!r} too long: {len(symbol)} > {SYMBOL_BYTES} bytes")

    scale = raw["price_scale"]
    if not _is_int(scale) or not 0 < scale <= INT64_MAX:
        raise fail(f"price_scale must be a positive integer (units per 1), got {scale!r}")

    tick_raw = raw["tick_size"]
    if isinstance(tick_raw, float):
        raise fail(f'tick_size {tick_raw!r} is a float: write it as a string, e.g. "0.01"')
    if not isinstance(tick_raw, str | int | Decimal) or isinstance(tick_raw, bool):
        raise fail(f"tick_size must be a decimal string, got {tick_raw!r}")
    try:
        tick = to_fixed(tick_raw, scale)
    except (ValueError, OverflowError) as e:
        raise fail(
            f"tick_size {tick_raw!r} not representable at price_scale {scale}: {e}"
        ) from None
    if tick <= 0:
        raise fail(f"tick_size must be > 0, got {tick_raw!r}")

    lot = raw.get("lot_size", 1)
    if not _is_int(lot) or not 0 < lot <= INT64_MAX:
        raise fail(f"lot_size must be a positive integer (shares), got {lot!r}")
    return ident, symbol, scale, tick, lot


def load_instruments(
    path_or_mapping: str | os.PathLike[str] | Mapping[str, Any], *, source: str | None = None
) -> InstrumentTable:
    """Load and validate an instrument table from a TOML file or an already-parsed mapping.

    Raises :class:`InstrumentConfigError` naming the file (or ``source``), the entry and
    the problem: unreadable or invalid TOML, unknown or missing key, duplicate id or symbol,
    non-positive scale, tick not representable at the scale, symbol too long.
    """
    if isinstance(path_or_mapping, Mapping):
        doc = path_or_mapping
        source = source or "<mapping>"
    else:
        path = Path(path_or_mapping)
        source = source or str(path)
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise InstrumentConfigError(source, None, f"cannot read: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise InstrumentConfigError(source, None, f"invalid TOML: {e}") from e

    extra = sorted(set(doc) - {"instrument"})
    if extra:
        raise InstrumentConfigError(
            source, None, f"unknown top-level key(s) {', '.join(extra)}; expected [[instrument]]"
        )
    entries = doc.get("instrument")
    if not isinstance(entries, list) or not entries:
        raise InstrumentConfigError(source, None, "no [[instrument]] entries")

    rows = np.zeros(len(entries), dtype=INSTRUMENT)
    first_by_id: dict[int, int] = {}
    first_by_symbol: dict[str, int] = {}
    for n, raw in enumerate(entries, start=1):
        ident, symbol, scale, tick, lot = _parse_entry(source, n, raw)
        entry = _entry_name(n, raw)
        if ident in first_by_id:
            raise InstrumentConfigError(
                source, entry, f"duplicate id {ident} (also [[instrument]] #{first_by_id[ident]})"
            )
        if symbol in first_by_symbol:
            raise InstrumentConfigError(
                source,
                entry,
                f"duplicate symbol {symbol!r} (also [[instrument]] #{first_by_symbol[symbol]})",
            )
        first_by_id[ident] = n
        first_by_symbol[symbol] = n
        rows[n - 1] = (scale, tick, lot, ident, symbol.encode("ascii"), 0)
    return InstrumentTable(rows, source)


DEFAULT_INSTRUMENTS: InstrumentTable = load_instruments(
    {
        "instrument": [
            {"id": i, "symbol": s, "price_scale": 10_000, "tick_size": "0.01", "lot_size": 1}
            for i, s in enumerate(("AAPL", "AMZN", "GOOG", "MSFT", "INTC"), start=1)
        ]
    },
    source="<DEFAULT_INSTRUMENTS>",
)
