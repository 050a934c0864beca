"""The CSV tick reader's fast path: a numba kernel that reads the plain lines of a batch.

:func:`bot4.marketdata.files.iter_csv` hands each batch of lines to :meth:`FastLines.read`.
The kernel claims a line only when its reading cannot differ from the Python one's
(:func:`~bot4.marketdata.files._split` and the field parsers there): ASCII, no NUL, no
double quote, exactly the header's number of fields, ``ts_event_ns`` / ``qty`` /
``price_units`` 1-19 plain digits within int64, ``price`` the same with an optional
fraction,
``kind`` and ``side`` ASCII letters only (or an empty side). For those it gives the same
values and codes: the time and size (always valid), the symbol's instrument id by exact
match (0 = unknown), kind and side codes through the same words folded to lower case,
and the price in the instrument's units with its validity (finer than the scale or past
int64: invalid, as ``_decimal_to_units`` says). Every other line (a sign, a space, a
quoted field, a wrong field count, UTF-8 text, ...) is left to the Python path, which
also decides what is malformed. A test compares both readings on random lines.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["FastLines"]

_INT64_MAX = np.int64(2**63 - 1)
_MAX_DIGITS = 19  # as the Python path's ``[0-9]{1,19}``; the value must also fit int64
_SLOW = np.int64(-(1 << 62))  # a field the fast path leaves to the Python path


@njit(nogil=True, cache=True, inline="always")
def _digits(buf, a, b):
    """Value of ``buf[a:b]`` if it is 1..19 ASCII digits worth at most int64's maximum,
    else -1 (19 digits fit uint64, so the sum cannot wrap before the check)."""
    if b <= a or b - a > _MAX_DIGITS:
        return np.int64(-1)
    v = np.uint64(0)
    for k in range(a, b):
        c = buf[k]
        if c < 48 or c > 57:
            return np.int64(-1)
        v = v * np.uint64(10) + np.uint64(c - 48)
    if v > np.uint64(_INT64_MAX):
        return np.int64(-1)
    return np.int64(v)


@njit(nogil=True, cache=True, inline="always")
def _word(buf, a, b, words, wlen, wcode, fold):
    """``wcode`` of the word ``buf[a:b]`` equals (ASCII-lowered when ``fold``), 0 if none;
    ``_SLOW`` when a folded field holds a byte other than an ASCII letter (the Python path
    then decides: it strips whitespace)."""
    n = b - a
    if fold:
        for k in range(a, b):
            c = buf[k] | 32
            if c < 97 or c > 122:
                return _SLOW
    for w in range(words.shape[0]):
        if wlen[w] != n:
            continue
        same = True
        for k in range(n):
            c = buf[a + k]
            if fold:
                c |= 32
            if c != words[w, k]:
                same = False
                break
        if same:
            return wcode[w]
    return np.int64(0)


@njit(nogil=True, cache=True)
def _read_lines(buf, ends, spec, symw, kindw, sidew, digits, out):
    """Lines ``buf[ends[k-1]:ends[k]]`` (each with its newline, the last maybe without):
    ``out[k]`` = (claimed, ts, qty, instrument, kind, side, price, price_ok, ts_ok, qty_ok)
    for the lines the fast path claims (both oks 1), claimed 0 for the others (module
    doc). ``spec``: width and the
    field index of ts, symbol, kind, side, price, qty, then 1 when the price is
    ``price_units``. ``symw``, ``kindw``, ``sidew``: the symbol, kind and side word tables
    (words, lengths, codes; :func:`_word`). ``digits[id]``: the instrument's price scale as
    a power of ten (-1: not one)."""
    syms, slen, sid = symw
    kinds, klen, kcode = kindw
    sides, slen2, scode = sidew
    width = spec[0]
    f_ts, f_sym, f_kind, f_side, f_px, f_qty, units = (spec[1], spec[2], spec[3], spec[4],
                                                       spec[5], spec[6], spec[7])  # fmt: skip
    if width > 64:  # the field bounds below hold 64: leave such files to the Python path
        out[:, 0] = 0
        return
    starts = np.empty(64, np.int64)
    stops = np.empty(64, np.int64)
    a = np.int64(0)
    for k in range(ends.shape[0]):
        e = ends[k]
        line_a = a
        a = e
        out[k, 0] = 0
        stop = e
        if stop > line_a and buf[stop - 1] == 10:
            stop -= 1
        if stop > line_a and buf[stop - 1] == 13:
            stop -= 1
        nf = 0
        ok = True
        fa = line_a
        for j in range(line_a, stop):
            c = buf[j]
            if c == 0 or c == 34 or c >= 128:
                ok = False
                break
            if c == 44:
                if nf >= width - 1:  # one field too many
                    ok = False
                    break
                starts[nf] = fa
                stops[nf] = j
                nf += 1
                fa = j + 1
        if not ok or nf != width - 1:
            continue
        starts[nf] = fa
        stops[nf] = stop
        ts = _digits(buf, starts[f_ts], stops[f_ts])
        qty = _digits(buf, starts[f_qty], stops[f_qty])
        if ts < 0 or qty < 0:
            continue
        inst = _word(buf, starts[f_sym], stops[f_sym], syms, slen, sid, False)
        kind = _word(buf, starts[f_kind], stops[f_kind], kinds, klen, kcode, True)
        side = _word(buf, starts[f_side], stops[f_side], sides, slen2, scode, True)
        if kind == _SLOW or side == _SLOW:
            continue
        pa, pb = starts[f_px], stops[f_px]
        price = np.int64(0)
        price_ok = 0
        if units:
            price = _digits(buf, pa, pb)
            if price < 0:
                continue
            price_ok = 1
        else:
            dot = pb
            for j in range(pa, pb):
                if buf[j] == 46:
                    dot = j
                    break
            whole = _digits(buf, pa, dot)
            if whole < 0:
                continue
            fb = pb  # the fraction without its trailing zeros
            if dot < pb:
                for j in range(dot + 1, pb):
                    c = buf[j]
                    if c < 48 or c > 57:
                        fb = -1
                        break
                if fb < 0:
                    continue
                while fb > dot + 1 and buf[fb - 1] == 48:
                    fb -= 1
            else:
                fb = dot + 1
            d = digits[inst] if 0 < inst < digits.shape[0] else np.int64(-1)
            if inst > 0:
                if d < 0 or d > 18:
                    continue  # a scale the fast path does not handle: the Python path
                nfrac = fb - (dot + 1)
                if nfrac <= d:
                    frac = np.int64(0)
                    for j in range(dot + 1, fb):
                        frac = frac * 10 + (buf[j] - 48)
                    p10 = np.int64(1)
                    for _ in range(d):
                        p10 *= 10
                    for _ in range(d - nfrac):
                        frac *= 10
                    if whole <= (_INT64_MAX - frac) // p10:
                        price = whole * p10 + frac
                        price_ok = 1
        out[k, 0] = 1
        out[k, 1] = ts
        out[k, 2] = qty
        out[k, 3] = inst
        out[k, 4] = kind
        out[k, 5] = side
        out[k, 6] = price
        out[k, 7] = price_ok
        out[k, 8] = 1
        out[k, 9] = 1


def _table(words: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = [(w.encode("ascii"), int(c)) for w, c in words.items() if w.isascii()]
    width = max([len(w) for w, _ in items] + [1])
    arr = np.zeros((max(len(items), 1), width), np.uint8)
    lens = np.full(max(len(items), 1), -1, np.int64)
    codes = np.zeros(max(len(items), 1), np.int64)
    for k, (w, c) in enumerate(items):
        arr[k, : len(w)] = np.frombuffer(w, np.uint8)
        lens[k] = len(w)
        codes[k] = c
    return arr, lens, codes


class FastLines:
    """The fast path for one CSV file: its header's layout (``idx``: column name -> field
    index, ``width`` fields) and the code tables of :func:`bot4.marketdata.files._codes`
    (symbols matched exactly, kinds and sides folded)."""

    #: out columns: claimed, ts, qty, instrument, kind, side, price, price_ok, ts_ok, qty_ok
    COLUMNS = 10

    def __init__(self, idx: dict[str, int], width: int, table, by_symbol, kinds, sides) -> None:
        units = "price" not in idx
        self.spec = np.array([width, idx["ts_event_ns"], idx["symbol"], idx["kind"],
                              idx["side"], idx["price_units" if units else "price"],
                              idx["qty"], int(units)], np.int64)  # fmt: skip
        self.syms = _table(by_symbol)
        self.kinds = _table(kinds)
        self.sides = _table(sides)
        top = int(max(table.ids)) + 1
        self.digits = np.full(top, -1, np.int64)
        for iid in table.ids:
            scale = int(table.price_scale(iid))
            d = len(str(scale)) - 1
            self.digits[iid] = d if 10**d == scale else -1

    def read(self, lines: list[bytes]) -> np.ndarray:
        """int64 (len(lines), :attr:`COLUMNS`) as :func:`_read_lines` fills it."""
        buf = np.frombuffer(b"".join(lines), np.uint8)
        ends = np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)))
        out = np.empty((len(lines), self.COLUMNS), np.int64)
        _read_lines(buf, ends, self.spec, self.syms, self.kinds, self.sides, self.digits, out)
        return out
