"""Market data stage: a source of MARKET_DATA records — synthetic, recorded files, LOBSTER.

params:

* ``source`` — ``synthetic`` (default), ``file`` (CSV or Parquet, see
  ``bot4.marketdata.files``) or ``lobster`` (a LOBSTER message/orderbook pair, plain or
  zipped, see ``bot4.marketdata.lobster``) or ``journal`` (the MARKET_DATA frames of a
  journal directory, e.g. what ``bot4 record`` captured, ``bot4.marketdata.journaled``);
* ``path`` — the file or journal directory (file, lobster, journal);
* ``speed`` — replay pace: 0 = as fast as the pipeline takes it (default), 1 = the
  recorded pace, 10 = ten times faster;
* ``snapshot`` — lobster: first publish the initial book as ``MD_BOOK_ADD`` records flagged
  ``MDF_SNAPSHOT`` (default false; see :func:`lobster_snapshot`), so a venue in order mode
  starts from the book the file starts in, not from an empty one;
* ``depth`` — lobster: BOOK_LEVEL positions per side published on the stage's
  ``book_level`` outputs (default 5, capped at the file's levels; outputs of type
  ``book_level`` get nothing from other sources; their rings need a capacity of at least
  2 x depth, the most one message can change);
* ``book_check`` — lobster: compare the rebuilt book with LOBSTER's orderbook file after
  every message (default true; a difference is a gap: counted, the instrument flagged
  ``MDF_BOOK_STALE``, the book re-seeded from the row);
* synthetic: ``rate`` (ticks/s), ``instruments``, ``seed``, ``count``.

Recorded data is read, validated and normalised at start-up: bad rows are counted by
reason, logged, and never reach signals (``summary()`` carries the counts). Every
recorded input is checked in one pass and then published from a cursor over one chunk at
a time (:mod:`bot4.marketdata.streamed`; an input of up to ``HOLD_RECORDS`` records is
kept from the check's pass, a longer one read again as it is published), so the stage's
memory stays flat however long the file; a LOBSTER pair's BOOK_LEVEL updates come with
their chunk (:func:`bot4.marketdata.lobster_stream.iter_lobster_depth`). A LOBSTER pair's
books are built from its order messages, per instrument (:mod:`bot4.marketdata.builder`):
the quotes and depth published come from that book, not from LOBSTER's orderbook file,
which seeds the book (orders resting before the data starts), supplies the levels that
slide into its depth-limited window, and cross-checks it; the builder's counts by reason
are logged and in ``summary()``. Each record is stamped with this stage's sequence number
and its receive time (``ts_recv_ns``) as it is published, in batches: live, where every
output carries MARKET_DATA, by the compiled publish call just before the commit
(``bot4.stages.publish``); otherwise when ``generate`` builds the batch. A restarted stage
resumes at the position its cursors say: the records of a file are a pure function of
their position (the cursor reads forward to it).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from numba import njit

from bot4.logs import log_event
from bot4.stages.base import DepthSource, ParamError, Stage, check_number, check_type
from bot4.stages.standins import SyntheticMarketData

log = logging.getLogger("bot4.stage")


@njit(nogil=True, cache=True)
def _emit(data, out, position, k, seq, now):
    for i in range(k):
        out[i] = data[position + i]
        out[i].seq = seq + i
        out[i].parent_seq = 0
        out[i].ts_recv_ns = now
    return seq + k


@njit(nogil=True, cache=True)
def _emit_levels(levels, out, a, b, lv_seq, position, seq, now):
    """BOOK_LEVEL records ``levels[a:b]`` (``parent_seq``: the stream position of their
    event) numbered ``lv_seq + index``, their parent renumbered as the market data of
    positions ``position..`` is (from ``seq``); returns how many were written."""
    for i in range(b - a):
        out[i] = levels[a + i]
        out[i].seq = lv_seq + a + i
        out[i].parent_seq = seq + (np.int64(levels[a + i].parent_seq) - position)
        out[i].ts_recv_ns = now
    return b - a


def lobster_snapshot(path: str) -> np.ndarray:
    """The book a LOBSTER pair starts in, as ``MD_BOOK_ADD`` records flagged
    ``MDF_SNAPSHOT | MDF_REPLAY`` (order id 0: one anonymous order per visible level, bids
    best first, then asks), stamped with the first message's time and instrument.

    LOBSTER's orderbook row k is the book *after* message k, so the first row has message 1
    taken back out: an add's size is removed from its level, a cancel's, delete's or
    visible execution's size is put back (hidden executions change no visible level).
    Orders deeper than the file's levels stay unknown; the venue takes executions of
    unknown ids from these snapshot orders (``bot4.venue.matching``)."""
    from bot4.marketdata.lobster import read_pair
    from bot4.marketdata.replay import snapshot_of
    from bot4.records import MARKET_DATA

    msgs, book, _report = read_pair(path)
    if len(msgs) == 0 or len(book) == 0:
        return np.zeros(0, MARKET_DATA)
    return snapshot_of(msgs[0], book[int(msgs[0]["seq"]) - 1])


#: market data sources and what their ``path`` names
SOURCES = {
    "synthetic": "nothing (generated)",
    "file": "CSV or Parquet tick file",
    "lobster": "LOBSTER message/orderbook pair (file, zip or directory)",
    "journal": "journal directory",
}


def load_recorded(source: str, path: str, *, snapshot: bool = False):
    """(records, bad-input report) for a recorded source; ``snapshot`` (lobster) puts
    :func:`lobster_snapshot` first."""
    if source == "lobster":
        b = load_lobster(path, snapshot=snapshot)
        return b.stream, b.report
    return _load_other(source, path)


def load_lobster(path: str, *, snapshot: bool = False, depth: int = 0, check: bool = True):
    """A LOBSTER pair's books built from its messages (:class:`~bot4.marketdata.replay.
    LobsterBuild`); ``snapshot`` puts :func:`lobster_snapshot` first (the level updates'
    ``parent_seq`` indices shift with it)."""
    from bot4.marketdata.replay import build_lobster_stream

    b = build_lobster_stream(path, depth=depth, check=check)
    if snapshot:
        snap = lobster_snapshot(path)
        b.stream = np.concatenate([snap, b.stream])
        b.levels["parent_seq"] += len(snap)
    return b


def _stream_kind(mode: str, path) -> str:
    """The :mod:`bot4.marketdata.streamed` reader of a recorded source."""
    from bot4.marketdata.streamed import file_kind

    return mode if mode in ("lobster", "journal") else file_kind(path)


def _stream_opts(params: dict) -> dict:
    """A LOBSTER source's reader options from the stage's params (snapshot, book_check)."""
    if params.get("source") != "lobster":
        return {}
    return {"snapshot": bool(params.get("snapshot", False)),
            "check": bool(params.get("book_check", True))}  # fmt: skip


def _load_other(source: str, path: str):
    if source == "file":
        from bot4.marketdata.files import read_table

        return read_table(path)
    if source == "journal":
        from bot4.marketdata.journaled import read_journal_market_data

        return read_journal_market_data(path)
    raise ValueError(f"unknown market data source {source!r} (synthetic, file, lobster, journal)")


def _input_problem(path, exc: Exception) -> str:
    """One line for an input that could not be read: a bot4 error's own message, else the
    exception's type and text (a reader's bug must not become a traceback)."""
    from bot4.records.errors import Bot4Error

    if isinstance(exc, Bot4Error):
        return str(exc)
    return f"{path}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"


class MarketDataStage(DepthSource, Stage):
    kind = "md"
    source = True
    replay_feed = True
    reads_recorded = True
    arity = (0, 0, 1, 6)
    output_types = ("MARKET_DATA", "*")  # then market_data or book_level (depth; lobster)
    restart_state = (
        "recorded sources: none (records are a function of position; a LOBSTER pair's "
        "books are rebuilt from its messages at start-up); synthetic: the mid walk"
    )
    params_keys = (
        frozenset({"source", "path", "speed", "snapshot", "depth", "book_check"})
        | SyntheticMarketData.params_keys
    )
    #: live, ``ts_recv_ns`` is stamped as the batch is published (``bot4.stages.publish``),
    #: not when ``generate`` built it: the stamp is the instant the tick reaches the rings
    stamp_on_publish = True

    @classmethod
    def out_per_in(cls, params) -> int:
        return max(1, 2 * int(params.get("depth", cls.DEFAULT_DEPTH)))

    @classmethod
    def warm_parts(cls, params):
        recorded = params.get("source", "synthetic") != "synthetic"
        return ("market data readers",) if recorded else ()

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        mode = params.get("source", "synthetic")
        if mode not in SOURCES:
            raise ParamError(
                "source", f"unknown market data source {mode!r} (one of: {', '.join(SOURCES)})"
            )
        if mode == "synthetic":
            SyntheticMarketData.check_params(
                {k: v for k, v in params.items() if k in SyntheticMarketData.params_keys}
            )
        elif "path" not in params:
            raise ParamError("path", f'missing: source = "{mode}" reads a {SOURCES[mode]}')
        check_type(params, "path", str, "a path string")
        check_number(params, "speed", lo=0)
        check_type(params, "snapshot", bool, "true or false")
        check_number(params, "depth", integer=True, lo=1, hi=255)
        check_type(params, "book_check", bool, "true or false")

    @classmethod
    def validate(cls, params):
        """The recorded source is there (a file, one LOBSTER pair, a journal directory)
        and reads as ``setup`` will read it: every row checked, unsorted input refused, at
        least one usable row. Returns the bad-input line when rows are kept out (the
        commands print it), None when the input is clean."""
        from pathlib import Path

        mode = params.get("source", "synthetic")
        if mode == "synthetic":
            return
        p = Path(params["path"])
        if mode == "lobster":
            from bot4.marketdata.lobster import find_pairs
            from bot4.records.errors import Bot4Error

            try:
                pairs = find_pairs(p)
            except Bot4Error as exc:
                raise ParamError("path", str(exc)) from None
            if len(pairs) != 1:
                raise ParamError("path", f"{p}: holds {len(pairs)} LOBSTER pairs; name one of them")
        elif mode == "journal":
            if not p.is_dir():
                raise ParamError("path", f"{p}: no such journal directory")
        elif not p.is_file():
            raise ParamError("path", f"{p}: no such file")
        elif p.stat().st_size == 0:
            raise ParamError("path", f"{p}: file is empty")
        from bot4.marketdata.report import bad_input_line

        try:  # one checking pass that keeps nothing (bot4.marketdata.streamed)
            from bot4.marketdata.streamed import open_streamed

            s = open_streamed(p, _stream_kind(mode, p), 0, **_stream_opts(params))
            report, total = s.report, s.total
        except Exception as exc:  # any reader failure is one line, never a traceback
            raise ParamError("path", _input_problem(p, exc)) from None
        if total == 0:
            raise ParamError("path", f"no usable rows: {report.summary()}")
        return bad_input_line(report)

    def setup(self) -> None:
        """Read the input (recorded sources: checked, then held or streamed; module doc).
        A recorded input that cannot be used ends the process after one ERROR line with
        ``EXIT_INPUT_REFUSED``: every restart would read the same file, so the supervisor
        halts the pipeline naming this stage instead of restarting it (``bot4 run`` read
        the file before any segment existed: this is what is left for a file changed
        since)."""
        from bot4.records.errors import EXIT_INPUT_REFUSED

        try:
            self._setup()
        except Exception as exc:
            if self.params.get("source", "synthetic") == "synthetic":
                raise
            problem = _input_problem(self.params["path"], exc)
            log.error("stage %s: params.path: %s (not restarted)", self.spec.name, problem)
            raise SystemExit(EXIT_INPUT_REFUSED) from None

    def _setup(self) -> None:
        p = self.params
        self.mode = p.get("source", "synthetic")
        if self.mode == "synthetic":
            self.synth = SyntheticMarketData(self.spec, self.inputs, self.outputs, self.instance)
            self.synth.setup()
            self.report = None
            return
        self.book_counters: dict[str, int] | None = None
        from bot4.marketdata.streamed import RecordCursor, open_streamed

        t0 = time.perf_counter()
        path = p["path"]
        opts = _stream_opts(p)
        # a LOBSTER pair's BOOK_LEVEL updates ride with its records (book_level outputs);
        # other sources publish none
        self.depth_levels = self.mode == "lobster" and bool(self.level_outs)
        if self.depth_levels:
            from bot4.paths import session_seq_base

            opts["depth"] = int(p.get("depth", self.DEFAULT_DEPTH))
            self.lv_seq = session_seq_base(self.session)
        s = open_streamed(path, _stream_kind(self.mode, path), **opts)
        if self.mode == "file" and s.report.rows == 0:
            from bot4.marketdata.files import MarketDataFileError

            raise MarketDataFileError(path, "no data rows")
        self.report, self.total, self.cursor = s.report, s.total, RecordCursor(s)
        if self.mode == "lobster":
            from bot4.marketdata.builder import GAP_STATS

            self.book_counters = s.counters
            gaps = {k: s.counters[k] for k in GAP_STATS if s.counters.get(k)}
            log.info("market data books built from %d messages in %.0f ms, read included "
                     "(%s): %s%s", int(s.report.kept), 1e3 * (time.perf_counter() - t0),
                     "held" if s.held else "checked, then read again as it is published",
                     ", ".join(f"{k} {v}" for k, v in s.counters.items() if v),
                     f"; GAPS {gaps}" if gaps else "; no gaps")  # fmt: skip
        first = s.first_ns
        log_event(
            log, logging.INFO, "input_report", "market data input", report=self.report.summary()
        )
        self.speed = float(p.get("speed", 0))
        self.t0: int | None = None
        self.ev0 = first if first is not None else 0

    def source_done(self, position: int) -> bool:
        if self.mode == "synthetic":
            return self.synth.source_done(position)
        return position >= self.total

    def source_ready(self, position: int, now_ns: int) -> int:
        if self.mode == "synthetic":
            return self.synth.source_ready(position, now_ns)
        if self.speed <= 0:
            return self.total - position  # generate publishes what the cursor's chunk holds
        w = self.cursor.window(position)["ts_event_ns"]
        if len(w) == 0:
            return 0
        if self.t0 is None:
            self.t0 = now_ns - int((int(w[0]) - self.ev0) / self.speed)
        due_ev = self.ev0 + (now_ns - self.t0) * self.speed
        return int(np.searchsorted(w, due_ev, side="right"))  # at most to the chunk's end

    def generate(self, position, n, outs, counts, seq):
        if self.mode == "synthetic":
            if not self.level_outs:
                return self.synth.generate(position, n, outs, counts, seq)
            sub = np.zeros(len(self.md_outs), np.int64)
            k, nxt = self.synth.generate(position, n, [outs[j] for j in self.md_outs], sub, seq)
            counts[self.md_outs] = sub
            counts[self.level_outs] = 0
            return k, nxt
        w = self.cursor.window(position)  # the records from position, one chunk at most
        n = min(n, len(w))
        c = self.cursor
        k = position - c.base
        if self.depth_levels and n > 0:
            # never more level updates than the level views hold (a book_level ring needs a
            # capacity of at least 2 x depth, the most one position carries)
            room = min(len(outs[j]) for j in self.level_outs)
            fit = int(np.searchsorted(c.lv_off, c.lv_off[k] + room, side="right")) - 1 - k
            n = min(n, fit)
        if n <= 0:
            return 0, seq
        now = self.clock()
        first = self.md_outs[0]
        nxt = _emit(w, outs[first], 0, n, seq, now)
        for j in self.md_outs[1:]:
            outs[j][:n] = outs[first][:n]
        counts[self.md_outs] = n
        for j in self.level_outs:
            if not self.depth_levels:
                counts[j] = 0
                continue
            a, b = int(c.lv_off[k]), int(c.lv_off[k + n])
            counts[j] = _emit_levels(c.levels, outs[j], a, b, self.lv_seq + c.lv_base,
                                     position, seq, now)  # fmt: skip
        return n, nxt

    def summary(self) -> dict:
        if self.report is None:
            return {"source": "synthetic"}
        out = {"source": self.mode, **self.report.as_dict()}
        if self.book_counters is not None:
            out["book"] = dict(self.book_counters)
        return out

    def on_drain(self) -> None:
        if self.report is not None:
            log_event(
                log, logging.INFO, "stage_summary", "market data summary", summary=self.summary()
            )
