"""The LOBSTER byte parsers (numba kernels of :mod:`bot4.marketdata.lobster`): message rows
into column arrays with a status per row, orderbook rows into an int64 table. The row rules
(which row is malformed, truncated, of an unknown kind, ...) are in that module's docstring.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.records import MD_TRADING_HALT
from bot4.records.errors import Code

__all__: list[str] = []  # private kernels: bot4.marketdata.lobster calls them


_NS_PER_S = 1_000_000_000

# Row status written by the parser kernels: 0 or a Code value (numba reads these as
# compile-time constants).
_OK = 0
_MALFORMED = int(Code.MALFORMED_ROW)
_TRUNCATED = int(Code.TRUNCATED_FILE)
_UNKNOWN_KIND = int(Code.UNKNOWN_KIND)
_NEGATIVE_PRICE = int(Code.NEGATIVE_PRICE)
_INVALID_QTY = int(Code.INVALID_QTY)
_COMMA = 44
_NL = 10
_CR = 13
_DOT = 46
_MINUS = 45
_ZERO = 48


@njit(nogil=True, cache=True)
def _int_field(buf, i, end, max_digits):
    """Signed decimal at ``buf[i:]`` up to ',' or ``end``: (value, stop index, ok)."""
    neg = False
    if i < end and buf[i] == _MINUS:
        neg = True
        i += 1
    v = np.int64(0)
    nd = 0
    while i < end and buf[i] != _COMMA:
        d = np.int64(buf[i]) - _ZERO
        if d < 0 or d > 9:
            return v, i, False
        v = v * 10 + d
        nd += 1
        i += 1
    if nd == 0 or nd > max_digits:
        return v, i, False
    return (-v if neg else v), i, True


@njit(nogil=True, cache=True)
def _uint_field(buf, i, end):
    """Unsigned decimal of at most 19 digits (fits u8) up to ',' or ``end``."""
    v = np.uint64(0)
    nd = 0
    while i < end and buf[i] != _COMMA:
        d = np.int64(buf[i]) - _ZERO
        if d < 0 or d > 9:
            return v, i, False
        v = v * np.uint64(10) + np.uint64(d)
        nd += 1
        i += 1
    return v, i, 0 < nd <= 19


@njit(nogil=True, cache=True)
def _time_field(buf, i, end):
    """``SECONDS[.FRACTION]`` -> ns; fraction digits past the 9th are truncated."""
    sec = np.int64(0)
    nd = 0
    while i < end and buf[i] != _COMMA and buf[i] != _DOT:
        d = np.int64(buf[i]) - _ZERO
        if d < 0 or d > 9:
            return sec, i, False
        sec = sec * 10 + d
        nd += 1
        i += 1
    if nd == 0 or nd > 6:
        return sec, i, False
    frac = np.int64(0)
    nf = 0
    if i < end and buf[i] == _DOT:
        i += 1
        while i < end and buf[i] != _COMMA:
            d = np.int64(buf[i]) - _ZERO
            if d < 0 or d > 9:
                return sec, i, False
            if nf < 9:
                frac = frac * 10 + d
            nf += 1
            i += 1
        if nf == 0:
            return sec, i, False
        for _ in range(min(nf, 9), 9):
            frac *= 10
    return sec * _NS_PER_S + frac, i, True


class MessageColumns(NamedTuple):
    """A LOBSTER message file parsed into columns, one slot per line (``new`` sizes them
    for a file); owned by the caller that parses the file."""

    ts: np.ndarray  # int64: seconds after midnight as ns (exchange local time)
    kind: np.ndarray  # int64: LOBSTER event type 1..7
    oid: np.ndarray  # uint64: order id
    qty: np.ndarray  # int64: size, shares
    price: np.ndarray  # int64: price, 1e-4 $
    side: np.ndarray  # int64: 1 buy, -1 sell
    status: np.ndarray  # int64: the line's parse status (_OK, _MALFORMED, ...)

    @classmethod
    def new(cls, n: int) -> MessageColumns:
        """Empty columns for ``n`` lines."""
        z = np.zeros
        return cls(z(n, np.int64), z(n, np.int64), z(n, np.uint64), z(n, np.int64),
                   z(n, np.int64), z(n, np.int64), z(n, np.int64))  # fmt: skip


@njit(nogil=True, cache=True)
def _message_line(buf, i, end, r, cols):
    """Parse one message row ``buf[i:end]`` into slot ``r`` of the
    :class:`MessageColumns` ``cols``; returns its status."""
    ts, kind, oid, qty, price, side = cols.ts, cols.kind, cols.oid, cols.qty, cols.price, cols.side
    t, i, ok = _time_field(buf, i, end)
    if not ok or i >= end:
        return _MALFORMED
    k, i, ok = _int_field(buf, i + 1, end, 3)
    if not ok or i >= end:
        return _MALFORMED
    o, i, ok = _uint_field(buf, i + 1, end)
    if not ok or i >= end:
        return _MALFORMED
    s, i, ok = _int_field(buf, i + 1, end, 18)
    if not ok or i >= end:
        return _MALFORMED
    p, i, ok = _int_field(buf, i + 1, end, 18)
    if not ok or i >= end:
        return _MALFORMED
    d, i, ok = _int_field(buf, i + 1, end, 2)
    if not ok or i != end:
        return _MALFORMED
    ts[r] = t
    kind[r] = k
    oid[r] = o
    qty[r] = s
    price[r] = p
    side[r] = d
    if k < 1 or k > 7:
        return _UNKNOWN_KIND
    if k == MD_TRADING_HALT:
        return _OK if -1 <= p <= 1 else _MALFORMED
    if d != 1 and d != -1:
        return _MALFORMED
    if p < 0:
        return _NEGATIVE_PRICE
    if s <= 0:
        return _INVALID_QTY
    return _OK


@njit(nogil=True, cache=True, inline="always")
def _line_at(buf, pos):
    """The line starting at ``pos``: ``(end, stop)``, ``end`` its newline (or the buffer's
    end), ``stop`` the end of its text (a CRLF's CR left out)."""
    n = buf.size
    end = pos
    while end < n and buf[end] != _NL:
        end += 1
    stop = end
    if stop > pos and buf[stop - 1] == _CR:
        stop -= 1
    return end, stop


@njit(nogil=True, cache=True)
def _parse_messages(buf, cols):
    """Every line of ``buf`` into slot (line - 1) of the :class:`MessageColumns` ``cols``
    (borrowed for the call); returns the number of lines.

    A final empty segment (after the last newline) is not a line. An unterminated last
    line that does not parse is TRUNCATED_FILE rather than MALFORMED_ROW.
    """
    cols = unowned(cols)
    status = cols.status
    n = buf.size
    pos = 0
    r = 0
    while pos < n:
        end, stop = _line_at(buf, pos)
        st = _message_line(buf, pos, stop, r, cols)
        if st == _MALFORMED and end == n:
            st = _TRUNCATED
        status[r] = st
        r += 1
        pos = end + 1
    return r


@njit(nogil=True, cache=True)
def _parse_int_rows(buf, out):
    """Rows of ``out.shape[1]`` comma-separated int64 into ``out``.

    Returns (rows, bad_line, bad_status): bad_line is the 1-based line of the first row
    that does not parse (0 if none), bad_status MALFORMED_ROW or TRUNCATED_FILE.
    """
    n = buf.size
    ncols = out.shape[1]
    pos = 0
    r = 0
    while pos < n:
        end, stop = _line_at(buf, pos)
        i = pos
        for c in range(ncols):
            v, i, ok = _int_field(buf, i, stop, 18)
            last = c == ncols - 1
            if not ok or (last and i != stop) or (not last and i >= stop):
                return r, r + 1, (_TRUNCATED if end == n else _MALFORMED)
            out[r, c] = v
            i += 1
        r += 1
        pos = end + 1
    return r, 0, _OK
