"""A LOBSTER pair read and built a block of lines at a time, so memory stays flat however
long the day is.

:func:`iter_lobster_stream` yields, chunk by chunk, exactly the records that
:func:`bot4.stages.marketdata.load_recorded` (``"lobster"``) returns for the same pair in
one array: the snapshot first (``snapshot``), then each kept message's event, trade and
quotes from the book rebuilt from the messages (:mod:`bot4.marketdata.replay`), ``seq``
zero. Both files are read ``lines`` lines at a time (a zip member decompressed as it is
read); message line k and orderbook row k are read together. The builder's state carries
from chunk to chunk; a chunk's last record waits for the next chunk's first time to know
whether it ends a run of equal times (``MDF_LAST_IN_BATCH``), so one parsed chunk is read
ahead.

Checks are those of :func:`bot4.marketdata.lobster.read_pair` and are raised as the
stream meets them (LobsterError: a line of the orderbook that does not parse, files of
different lengths; UnsortedInputError), so a caller that must refuse bad input before any
work makes one pass first (``bot4.replay.sources``). Bad message rows are excluded and
counted in the ``report`` given, complete when the stream ends.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator

import numpy as np

from bot4.marketdata.builder import BookBuilder
from bot4.marketdata.lobster import (
    DEFAULT_INSTRUMENTS,
    LobsterError,
    LobsterFile,
    LobsterPair,
    find_pairs,
    message_file,
    message_records,
    orderbook_levels,
    orderbook_rows,
    pair_mismatch,
)
from bot4.marketdata.lobster_parsers import _OK, MessageColumns, _parse_messages
from bot4.marketdata.report import BadInputReport
from bot4.records import BOOK_LEVEL, MDF_LAST_IN_BATCH
from bot4.records.errors import Code

__all__ = ["LINES", "iter_lobster_depth", "iter_lobster_stream", "one_pair", "tile_pair"]

LINES = 1 << 16  # lines of each file per chunk
_OPEN_NS = 34_200 * 10**9  # 9:30, ns after midnight (tile_pair)
_SESSION_NS = 23_400 * 10**9  # 9:30-16:00
_BLOCK = 1 << 22  # bytes per read


class _Lines:
    """A LOBSTER file's lines, ``take(n)`` at a time, read as a stream from ``fh``."""

    def __init__(self, f: LobsterFile, fh) -> None:
        self.f = f
        self._fh = fh
        self._buf = b""
        self.lines = 0  # lines taken so far
        self.blank = True  # nothing but whitespace taken so far

    def _read(self) -> bytes:
        try:
            return self._fh.read(_BLOCK)
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise LobsterError(self.f, f"cannot read: {e}") from e

    def take(self, n: int) -> bytes:
        """The next ``n`` lines, each with its newline (fewer at the end of the file, the
        last one without a newline if the file has none); b"" at the end."""
        parts = []
        need = n
        buf = self._buf
        while need > 0:
            if not buf:
                buf = self._read()
                if not buf:
                    break
            k = buf.count(b"\n")
            if k < need:
                parts.append(buf)
                need -= k
                buf = b""
                continue
            nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
            cut = int(nl[need - 1]) + 1
            parts.append(buf[:cut])
            buf = buf[cut:]
            need = 0
        self._buf = buf
        data = b"".join(parts)
        if data:
            self.lines += data.count(b"\n") + (not data.endswith(b"\n"))
            self.blank = self.blank and data.isspace()
        return data

    def count_rest(self) -> int:
        """Read to the end; the number of lines taken in all."""
        while self.take(LINES):
            pass
        return self.lines


def one_pair(path: str | os.PathLike[str]) -> LobsterPair:
    """The one message/orderbook pair at ``path`` (file, zip or directory): LobsterError
    when there are none or several."""
    pairs = find_pairs(path)
    if len(pairs) != 1:
        raise LobsterError(path, f"holds {len(pairs)} pairs; name one of them")
    return pairs[0]


def _empty(f: LobsterFile, lines: _Lines) -> None:
    if lines.lines == 0:
        raise LobsterError(f, "file is empty", Code.TRUNCATED_FILE)
    if lines.blank:
        raise LobsterError(f, "file holds no rows (only whitespace)", Code.TRUNCATED_FILE)


def _parsed(pair: LobsterPair, report: BadInputReport, lines: int, keep_lines: int, **kwargs):
    """``(records, rows, line0, window)`` per chunk with a kept message: the chunk's
    records (``MDF_LAST_IN_BATCH`` as if nothing followed), the orderbook rows of its lines
    and the line before its first."""
    f, instrument, day, zone = message_file(pair, **kwargs)
    if f.size() == 0:
        raise LobsterError(f, "file is empty", Code.TRUNCATED_FILE)
    prev: tuple[int | None, int] = (None, 0)
    levels = None
    with f.open() as mfh, pair.orderbook.open() as bfh:
        msg, book = _Lines(f, mfh), _Lines(pair.orderbook, bfh)
        while True:
            line0 = msg.lines
            data = msg.take(lines)
            while msg.blank and data:  # only whitespace so far: refused if it all is
                more = msg.take(lines)
                if not more:
                    _empty(f, msg)
                data += more
            bdata = book.take(msg.lines - line0)
            if not data:
                _empty(f, msg)
                if bdata or book.count_rest() != msg.lines:
                    raise pair_mismatch(pair, book.count_rest(), msg.lines)
                report.rows = msg.lines
                return
            cols = MessageColumns.new(data.count(b"\n") + 1)
            rows = _parse_messages(np.frombuffer(data, np.uint8), cols)
            if levels is None:
                if book.blank and book.lines < msg.lines:
                    _empty(pair.orderbook, book)
                levels = orderbook_levels(pair.orderbook, bdata)
            ref = orderbook_rows(pair.orderbook, bdata, levels, line0)
            if len(ref) != rows:
                raise pair_mismatch(pair, book.count_rest(), msg.count_rest())
            recs, status = message_records(f, cols, rows, line0, instrument, day, zone, prev)
            for code in np.unique(status[status != _OK]).tolist():
                report.add_many(Code(code), np.flatnonzero(status == code) + 1 + line0, keep_lines)
            if len(recs):
                last = int(np.flatnonzero(status == _OK)[-1])
                prev = (int(cols.ts[last]), line0 + last + 1)
                report.kept += len(recs)
                yield recs, ref, line0, levels


def iter_lobster_stream(
    path: str | os.PathLike[str] | LobsterPair, report: BadInputReport | None = None, **opts
) -> Iterator[np.ndarray]:
    """MARKET_DATA chunks of the pair at ``path`` (module doc); ``report`` is filled as
    :func:`~bot4.marketdata.lobster.read_messages` fills its own (complete at the end).
    ``opts``: :func:`iter_lobster_depth`'s (``snapshot``, ``check``, ``lines``,
    ``keep_lines``, ``instruments``, ``counters``), without ``depth``."""
    for stream, _levels in iter_lobster_depth(path, report, **opts):
        yield stream


def iter_lobster_depth(
    path: str | os.PathLike[str] | LobsterPair,
    report: BadInputReport | None = None,
    *,
    depth: int = 0,
    snapshot: bool = True,
    check: bool = True,
    lines: int = LINES,
    keep_lines: int = 5,
    instruments=DEFAULT_INSTRUMENTS,
    counters: dict | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`iter_lobster_stream` with the BOOK_LEVEL updates of ``depth`` positions per
    side (capped at the file's levels): ``(records, levels)`` per chunk, each level's
    ``parent_seq`` the index of its event in the whole stream (snapshot included), as
    :func:`bot4.stages.marketdata.load_lobster` gives them. ``snapshot``: the initial book
    first; ``check``: the builder's per-row cross-check; ``lines`` per block; ``counters``
    (when given): the builder's ``BUILD_STATS`` at the end."""
    pair = path if isinstance(path, LobsterPair) else one_pair(path)
    report = BadInputReport("") if report is None else report
    report.source = str(pair.message)  # as read_messages names it
    builder = None
    pending = None
    done = 0  # records yielded so far: the stream index of the next chunk's first
    for recs, ref, line0, window in _parsed(pair, report, lines, keep_lines,
                                           instruments=instruments):  # fmt: skip
        if builder is None:
            builder = BookBuilder(int(recs["instrument"][0]) + 1, window, min(depth, window),
                                  check=check)  # fmt: skip
            if snapshot:
                from bot4.marketdata.replay import snapshot_of

                snap = snapshot_of(recs[0], ref[int(recs[0]["seq"]) - 1 - line0])
                done += len(snap)
                yield snap, np.zeros(0, BOOK_LEVEL)
        if pending is not None:
            if pending[0]["ts_event_ns"][-1] == recs["ts_event_ns"][0]:
                pending[0]["flags"][-1] &= np.uint16(~MDF_LAST_IN_BATCH & 0xFFFF)
            stream, levels = _built(builder, *pending, done)
            done += len(stream)
            yield stream, levels
        pending = (recs, ref, line0)
    if pending is not None:
        yield _built(builder, *pending, done)
    if counters is not None and builder is not None:
        counters.update(builder.counters())


def _built(builder: BookBuilder, recs: np.ndarray, ref: np.ndarray, line0: int, done: int):
    recs["seq"] -= line0  # the builder finds a record's row at seq - 1 of the rows given
    stream, levels = builder.build(recs, ref)
    stream["seq"] = 0  # as build_lobster_stream: the stage numbers what it publishes
    levels["parent_seq"] += np.uint64(done)  # index in this chunk -> in the whole stream
    return stream, levels


def tile_pair(pair: LobsterPair, directory: str | os.PathLike[str], copies: int) -> LobsterPair:
    """Write ``copies`` of ``pair`` back to back as one longer pair in ``directory`` (same
    file names), for benchmarks and tests of long days. LOBSTER times are seconds after
    midnight, so the copies share the trading session (9:30-16:00): copy k's times are
    mapped to its k-th part, ``open + (t - open + k x session) / copies`` (non-decreasing
    across the copies), and its order ids shifted by k x 10^10. Each copy ends by deleting
    the orders its messages added and left resting (type 3 at its last time), so the live
    orders do not pile up from copy to copy; its orderbook rows are copied as they are,
    the seam's deletes repeating the last one (the builder's check counts the seam and
    re-seeds from the row)."""
    out = os.fspath(directory)
    os.makedirs(out, exist_ok=True)
    with pair.message.open() as fh:
        rows = [line.split(b",") for line in fh.read().splitlines() if line.strip()]
    with pair.orderbook.open() as fh:
        book = fh.read().splitlines()
    live: dict[int, list] = {}  # order id -> [size, price, direction] of what the day added
    for _t, kind, oid, size, price, side in rows:
        o, k = int(oid), int(kind)
        if k == 1:
            live[o] = [int(size), price, side]
        elif k in (2, 3, 4) and o in live:
            live[o][0] -= int(size)
            if k == 3 or live[o][0] <= 0:
                del live[o]
    msg_path = os.path.join(out, pair.message.filename)
    with open(msg_path, "wb") as m, open(os.path.join(out, pair.orderbook.filename), "wb") as b:
        for k in range(copies):
            shift, ids = _SESSION_NS * k, 10**10 * k
            lines = []
            for t, kind, oid, size, price, side in rows:
                sec, _, frac = t.partition(b".")
                ns = int(sec) * 10**9 + int(frac.ljust(9, b"0")[:9] or b"0") - _OPEN_NS
                ns = _OPEN_NS + (ns + shift) // copies
                t = b"%d.%09d" % divmod(ns, 10**9)
                o = int(oid)
                lines.append(
                    b"%s,%s,%d,%s,%s,%s" % (t, kind, o + ids if o else 0, size, price, side)
                )
            lines += [
                b"%s,3,%d,%d,%s,%s" % (t, o + ids, q, px, d) for o, (q, px, d) in live.items()
            ]
            m.write(b"\n".join(lines) + b"\n")
            b.write(b"\n".join(book + book[-1:] * len(live)) + b"\n")
    return one_pair(msg_path)
