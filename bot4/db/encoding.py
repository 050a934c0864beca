"""Binary COPY encoding with numpy: the wire rows of PostgreSQL's ``COPY ... (FORMAT
BINARY)``, NUMERIC included (fixed point becomes base-10000 digits exactly, no per-row
Python), and the loader's instruments as conversion data.

Used by the loader's COPY paths (:mod:`bot4.db.rows` builds the fields of each table) and
by ``perf/bench_db.py``'s raw COPY baseline.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from bot4.records.errors import Bot4Error, Code
from bot4.records.fixed import from_fixed
from bot4.records.instruments import InstrumentTable

__all__ = [
    "Field",
    "Instruments",
    "SlowPathNeeded",
    "copy_stream",
    "ints",
    "numeric_payload",
    "split_sign",
    "u64_numeric",
    "write_chunks",
]


class SlowPathNeeded(Exception):
    """A batch the fast path cannot encode (a value outside a column's range)."""


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_NUMERIC_INT_GROUPS = 5  # base-10000 digits before the point: 10000**5 > 2**64
_NUMERIC_NEG = 0x4000


def _numeric_dtype(frac_groups: int) -> np.dtype:
    """Binary NUMERIC with a fixed digit count: ndigits, weight, sign, dscale, then 5
    integer and ``frac_groups`` fraction base-10000 digits, most significant first
    (PostgreSQL strips zero digits at either end on input)."""
    return np.dtype(
        [
            ("ndigits", ">i2"),
            ("weight", ">i2"),
            ("sign", ">u2"),
            ("dscale", ">i2"),
            ("digits", ">i2", (_NUMERIC_INT_GROUPS + frac_groups,)),
        ]
    )


def split_sign(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|units|, units < 0)`` of int64 ``units`` as uint64 magnitudes (INT64_MIN too)."""
    signed = np.asarray(units).astype(np.int64, copy=False)
    negative = signed < 0
    magnitude = signed.view(np.uint64).copy()
    magnitude[negative] = ~magnitude[negative] + np.uint64(1)
    return magnitude, negative


def numeric_payload(
    magnitude: np.ndarray,
    negative: np.ndarray | None,
    scale: np.ndarray | int,
    decimals: np.ndarray | int,
    frac_groups: int,
) -> np.ndarray:
    """``±magnitude / scale`` as binary NUMERIC with ``decimals`` places, exactly.

    ``magnitude`` uint64; ``scale`` (per row or one) must divide ``10**(4 * frac_groups)``
    and ``decimals`` be at most ``4 * frac_groups``.
    """
    n = len(magnitude)
    out = np.empty(n, _numeric_dtype(frac_groups))
    out["ndigits"] = _NUMERIC_INT_GROUPS + frac_groups
    out["weight"] = _NUMERIC_INT_GROUPS - 1
    out["sign"] = 0 if negative is None else np.where(negative, _NUMERIC_NEG, 0)
    out["dscale"] = decimals
    digits = np.empty((n, _NUMERIC_INT_GROUPS + frac_groups), dtype=np.int16)
    whole = magnitude.astype(np.uint64, copy=True)
    if frac_groups:
        scale = np.asarray(scale, dtype=np.uint64)
        frac = (whole % scale) * (np.uint64(10 ** (4 * frac_groups)) // scale)
        whole //= scale
        for k in range(frac_groups):
            digits[:, _NUMERIC_INT_GROUPS + frac_groups - 1 - k] = frac % np.uint64(10_000)
            frac //= np.uint64(10_000)
    for k in range(_NUMERIC_INT_GROUPS):
        digits[:, _NUMERIC_INT_GROUPS - 1 - k] = whole % np.uint64(10_000)
        whole //= np.uint64(10_000)
    out["digits"] = digits
    return out


@dataclass(slots=True)
class Field:
    """One column of a binary COPY: its payload per row (big-endian dtype), NULL mask, and
    whether its (``S``) payload has a per-row length (rows are then grouped by value)."""

    payload: np.ndarray
    null: np.ndarray | None = None
    varlen: bool = False


def copy_stream(fields: list[Field], n: int) -> list:
    """The binary COPY stream of ``n`` rows of ``fields``, built with numpy, as a list of
    buffers to write in order (no copy of the rows into one ``bytes``).

    A row format is fixed per row only when every column has a fixed length, so rows are
    grouped by their NULL pattern and by the value of each ``varlen`` column; each group
    is one numpy array of wire rows. Row order is not kept across groups (COPY does not
    care; the fast path inserts every row or none).
    """
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for f in fields:
        if f.null is not None:
            key += f.null.astype(np.int64) * radix
            radix *= 2
        if f.varlen:
            values, inverse = np.unique(f.payload, return_inverse=True)
            key += inverse.astype(np.int64) * radix
            radix *= len(values)
    if radix == 1 or key.min() == key.max():
        groups = [None]  # one row format: encode the columns as they are, no copies
    else:
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))
        groups = np.split(order, bounds[:-1])
    chunks = [_COPY_HEADER]
    for rows in groups:
        r0 = 0 if rows is None else int(rows[0])
        count = n if rows is None else len(rows)
        wire: list[tuple] = [("ncols", ">i2")]
        plan = []
        for k, f in enumerate(fields):
            wire.append((f"l{k}", ">i4"))
            if f.null is not None and f.null[r0]:
                plan.append((k, -1, None))
                continue
            if f.varlen:
                value = bytes(f.payload[r0])
                dtype = np.dtype(f"S{len(value)}")
                plan.append((k, len(value), value))
            else:
                dtype = f.payload.dtype
                plan.append((k, dtype.itemsize, f.payload if rows is None else f.payload[rows]))
            wire.append((f"v{k}", dtype))
        out = np.empty(count, dtype=np.dtype(wire))
        out["ncols"] = len(fields)
        for k, length, values in plan:
            out[f"l{k}"] = length
            if values is not None:
                out[f"v{k}"] = values
        chunks.append(memoryview(out.view(np.uint8)))
    chunks.append(_COPY_TRAILER)
    return chunks


def write_chunks(copy, chunks: list) -> None:
    for chunk in chunks:
        copy.write(chunk)


def ints(values: np.ndarray, wire: str) -> np.ndarray:
    """An integer column in ``wire`` (``>i8``, ``>i4``, ``>i2``); uint64 by bit pattern
    into bigint, like the staging path. SlowPathNeeded if a value does not fit."""
    if wire == ">i8":
        return (values.view(np.int64) if values.dtype == np.uint64 else values).astype(wire)
    info = np.iinfo(np.dtype(wire).newbyteorder("="))
    if len(values) and (values.max() > info.max or values.min() < info.min):
        raise SlowPathNeeded(f"value out of {wire} range")
    return values.astype(wire)


# --- tables: one column spec drives the fast (COPY) and the slow (SQL) path -----------------


class Instruments:
    """The loader's instruments as NUMERIC conversion data, per id and as sorted arrays.

    ``decimals`` of a scale: the fewest decimal places that hold ``1 / scale`` exactly
    (scales with prime factors other than 2 and 5 are refused); the COPY path carries
    ``ceil(max decimals / 4)`` base-10000 fraction digits.
    """

    def __init__(self, table: InstrumentTable) -> None:
        self.by_id: dict[int, tuple[int, Decimal, str, Decimal, int]] = {}
        for ident in table.ids:
            scale = table.price_scale(ident)
            try:
                unit = from_fixed(1, scale)
            except ValueError:
                raise Bot4Error(
                    f"instrument {ident}: price_scale {scale} has no exact decimal unit "
                    "(only factors 2 and 5 convert exactly to NUMERIC)",
                    Code.INSTRUMENT_CONFIG_INVALID,
                ) from None
            tick = from_fixed(table.tick_size(ident), scale)
            self.by_id[ident] = (scale, unit, table.symbol_of(ident), tick, table.lot_size(ident))
        self.ids = np.array(sorted(self.by_id), dtype=np.uint32)
        self.scales = np.array([self.by_id[int(i)][0] for i in self.ids], dtype=np.uint64)
        self.decimals = np.array([-self.by_id[int(i)][1].as_tuple().exponent for i in self.ids])
        self.frac_groups = math.ceil(int(self.decimals.max(initial=0)) / 4)
        self.copy_ok = self.frac_groups <= 4  # fraction digits fit uint64 arithmetic
        self.accounts = np.array(
            [f"position:{self.by_id[int(i)][2]}".encode() for i in self.ids], dtype=object
        )

    def scale(self, ident: int) -> int:
        return self.by_id[ident][0]

    def known(self, instruments: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.ids, instruments), len(self.ids) - 1)
        return self.ids[at] == instruments

    def rows(self, instruments: np.ndarray) -> np.ndarray:
        """Index into the sorted arrays of each (known) instrument."""
        return np.searchsorted(self.ids, instruments)

    def money(self, units: np.ndarray, instruments: np.ndarray) -> np.ndarray:
        """Binary NUMERIC of fixed-point ``units`` in each row's instrument scale."""
        at = self.rows(instruments)
        magnitude, negative = split_sign(units)
        return numeric_payload(
            magnitude, negative, self.scales[at], self.decimals[at], self.frac_groups
        )


def u64_numeric(values: np.ndarray) -> np.ndarray:
    return numeric_payload(values.astype(np.uint64, copy=False), None, 1, 0, 0)


# --- the loader -----------------------------------------------------------------------------
