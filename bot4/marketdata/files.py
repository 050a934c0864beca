"""Recorded ticks from CSV and Parquet files, as MARKET_DATA records.

Columns (a header row in CSV; the same names in Parquet):

========== ==============================================================================
column     meaning
========== ==============================================================================
ts_event_ns event time, integer ns since the Unix epoch (UTC)
symbol      instrument symbol from the instrument table
kind        ``quote`` (one side of the top of book) or ``trade``
side        quotes: ``bid`` or ``ask``; trades: ``buy`` / ``sell`` (aggressor) or empty
price       decimal dollars (``585.33``), converted exactly to the instrument's scale;
            Parquet may instead carry ``price_units`` (int64, already fixed point)
qty         integer shares (quotes: size at that price, 0 = side empty)
========== ==============================================================================

Bad rows are excluded and counted by reason (:class:`BadInputReport`): a malformed row
(wrong number of fields, a field that does not parse), a truncated last line, an unknown
instrument, a negative price or quantity, a timestamp earlier than the previous row's, and
a quote that would cross or lock the book (bid >= ask). A missing or empty file, or one
without the required columns, raises :class:`MarketDataFileError` before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numba import njit

from bot4.marketdata.report import BadInputReport
from bot4.records import MARKET_DATA, MD_QUOTE, MD_TRADE, MDF_REPLAY, SIDE_BUY, SIDE_NONE, SIDE_SELL
from bot4.records.errors import Bot4Error, Code

COLUMNS = ("ts_event_ns", "symbol", "kind", "side", "price", "qty")


class MarketDataFileError(Bot4Error):
    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}", Code.INPUT_MISSING)
        self.path = str(path)


def _decimal_to_units(prices: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact decimal strings -> int64 units at each row's scale. Returns (units, ok)."""
    out = np.zeros(len(prices), np.int64)
    ok = np.zeros(len(prices), bool)
    for i, (s, sc) in enumerate(zip(prices, scale, strict=True)):
        s = s.strip()
        neg = s.startswith("-")
        if neg:
            s = s[1:]
        whole, _, frac = s.partition(".")
        if not whole.isdigit() or (frac and not frac.isdigit()):
            continue
        digits = len(str(int(sc))) - 1  # scale is a power of ten
        if 10**digits != sc or len(frac.rstrip("0")) > digits:
            continue  # not representable at this instrument's scale
        v = int(whole) * int(sc) + (int(frac.ljust(digits, "0")[:digits]) if digits else 0)
        out[i] = -v if neg else v
        ok[i] = True
    return out, ok


@njit(cache=True)
def _sequence_checks(ts, inst, kind, side, price, n_inst, keep, why):
    """Sequential checks (time order, crossed quotes) over the rows still kept.

    why: 1 = time backwards, 2 = crossed quote."""
    bid = np.zeros(n_inst, np.int64)
    ask = np.zeros(n_inst, np.int64)
    last = np.int64(-(2**62))
    for i in range(ts.shape[0]):
        if not keep[i]:
            continue
        if ts[i] < last:
            keep[i] = False
            why[i] = 1
            continue
        if kind[i] == MD_QUOTE:
            b = price[i] if side[i] > 0 else bid[inst[i]]
            a = price[i] if side[i] < 0 else ask[inst[i]]
            if b > 0 and a > 0 and b >= a:
                keep[i] = False
                why[i] = 2
                continue
            if side[i] > 0:
                bid[inst[i]] = price[i]
            else:
                ask[inst[i]] = price[i]
        last = ts[i]


def read_table(path: str | os.PathLike, instruments=None) -> tuple[np.ndarray, BadInputReport]:
    """Read a CSV or Parquet tick file into MARKET_DATA records (seq unset)."""
    from bot4.records import DEFAULT_INSTRUMENTS

    table = instruments or DEFAULT_INSTRUMENTS
    p = Path(path)
    if not p.exists():
        raise MarketDataFileError(p, "no such file")
    if p.stat().st_size == 0:
        raise MarketDataFileError(p, "file is empty")
    report = BadInputReport(str(p))
    line_of: np.ndarray
    if p.suffix.lower() in (".parquet", ".pq"):
        cols, line_of = _read_parquet(p)
    else:
        cols, line_of = _read_csv(p, report)
    n = len(line_of)
    report.rows += n
    if n == 0:
        raise MarketDataFileError(p, "no data rows")
    keep = np.ones(n, bool)

    def drop(mask, code):
        idx = np.flatnonzero(mask & keep)
        report.add_many(code, line_of[idx])
        keep[idx] = False

    sym = np.asarray(cols["symbol"], dtype=object)
    ids = np.zeros(n, np.int64)
    scale = np.ones(n, np.int64)
    known = np.zeros(n, bool)
    for s in set(sym.tolist()):
        m = sym == s
        if isinstance(s, str) and s in table.symbols:
            iid = table.id_of(s)
            ids[m] = iid
            scale[m] = table.price_scale(iid)
            known[m] = True
    ts = np.zeros(n, np.int64)
    ts_ok = np.zeros(n, bool)
    for i, v in enumerate(cols["ts_event_ns"]):
        try:
            ts[i] = int(v)
            ts_ok[i] = True
        except (TypeError, ValueError):
            pass
    qty = np.zeros(n, np.int64)
    qty_ok = np.zeros(n, bool)
    for i, v in enumerate(cols["qty"]):
        try:
            qty[i] = int(v)
            qty_ok[i] = True
        except (TypeError, ValueError):
            pass
    kinds = np.asarray([str(k).strip().lower() for k in cols["kind"]])
    sides = np.asarray(["" if s is None else str(s).strip().lower() for s in cols["side"]])
    kind = np.where(kinds == "quote", MD_QUOTE, np.where(kinds == "trade", MD_TRADE, 0)).astype(
        np.uint8
    )
    side = np.zeros(n, np.int8)
    side[np.isin(sides, ("bid", "buy"))] = SIDE_BUY
    side[np.isin(sides, ("ask", "sell"))] = SIDE_SELL
    side_ok = np.where(
        kind == MD_QUOTE, np.isin(sides, ("bid", "ask")), np.isin(sides, ("buy", "sell", ""))
    )
    if "price_units" in cols:
        price = np.asarray(cols["price_units"], np.int64)
        price_ok = np.ones(n, bool)
    else:
        price, price_ok = _decimal_to_units(np.asarray([str(x) for x in cols["price"]]), scale)
    drop(~known, Code.UNKNOWN_INSTRUMENT)  # first: its price cannot be scaled
    drop(~(ts_ok & qty_ok & price_ok & (kind != 0) & side_ok), Code.MALFORMED_ROW)
    drop((price < 0) | ((price == 0) & (kind == MD_TRADE)), Code.NEGATIVE_PRICE)
    drop((qty < 0) | ((qty == 0) & (kind == MD_TRADE)), Code.INVALID_QTY)
    why = np.zeros(n, np.uint8)
    _sequence_checks(ts, ids, kind, side, price, int(max(table.ids)) + 1, keep, why)
    report.add_many(Code.TIME_BACKWARDS, line_of[why == 1])
    report.add_many(Code.CROSSED_QUOTE, line_of[why == 2])
    idx = np.flatnonzero(keep)
    out = np.zeros(len(idx), MARKET_DATA)
    out["ts_event_ns"] = ts[idx]
    out["price"] = price[idx]
    out["qty"] = qty[idx]
    out["instrument"] = ids[idx]
    out["kind"] = kind[idx]
    out["side"] = np.where(side[idx] == 0, SIDE_NONE, side[idx])
    out["flags"] = MDF_REPLAY
    report.kept = len(out)
    return out, report


def _read_csv(p: Path, report: BadInputReport):
    import csv

    with open(p, newline="") as f:
        data = f.read()
    truncated_last = not data.endswith("\n")
    rows = list(csv.reader(data.splitlines()))
    if not rows:
        raise MarketDataFileError(p, "no header row")
    header = [h.strip() for h in rows[0]]
    missing = [
        c for c in COLUMNS if c not in header and not (c == "price" and "price_units" in header)
    ]
    if missing:
        raise MarketDataFileError(
            p, f"missing columns {missing} (have {header}; expected {list(COLUMNS)})"
        )
    idx = {h: k for k, h in enumerate(header)}
    good, lines = [], []
    last_line = len(rows)
    for ln, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            code = (
                Code.TRUNCATED_FILE if (ln == last_line and truncated_last) else Code.MALFORMED_ROW
            )
            report.rows += 1
            report.add(code, ln)
            continue
        good.append(row)
        lines.append(ln)
    cols = {h: [r[k] for r in good] for h, k in idx.items()}
    return cols, np.asarray(lines, np.int64)


def _read_parquet(p: Path):
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several types for a corrupt or cut file
        raise MarketDataFileError(p, f"not a readable Parquet file ({exc})") from None
    names = set(t.column_names)
    missing = [
        c for c in COLUMNS if c not in names and not (c == "price" and "price_units" in names)
    ]
    if missing:
        raise MarketDataFileError(p, f"missing columns {missing} (have {sorted(names)})")
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    return cols, np.arange(1, t.num_rows + 1, dtype=np.int64)
