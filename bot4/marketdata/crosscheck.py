"""LOBSTER's orderbook file as a cross-check of the books the md stage publishes (issue 18).

The md stage builds its books from order messages (:mod:`bot4.marketdata.builder`); these
functions read what it published back into LOBSTER's shape and compare it with the
orderbook file, row by row, separating what the messages determine from what they cannot:

* a level-N message file only carries events that touched the N visible levels, so when a
  message removes a whole visible level (a delete, cancel or execution of at least the
  level's size in the row before), the level that slides into position N on that side is
  described by no message. Those cells — position N of that side, on that row — are the
  only ones not *determinable*: the builder takes them from the orderbook row (counted
  ``slide_in``). For a level-1 file that is the top of book on the rows where a message
  empties the best level (the data README's check 1);
* every other cell (levels 1..N-1 of level-5/10 files on every row, level N everywhere
  else, and the level-1 top on every other row) follows from the previous row and the
  message alone, and must equal the file.

:func:`copied_stream` is the stream the md stage published before issue 18, quotes copied
from the orderbook file: the reference for "the replay's results change only where the
rebuilt book differs from the copied one".

Pure numpy, for tests and ``perf/mdbookcheck.py``; nothing here is on the hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from bot4.marketdata.lobster import DUMMY_ASK_PRICE
from bot4.records import (
    MARKET_DATA,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_LAST_IN_BATCH,
    SIDE_BUY,
    SIDE_SELL,
)

__all__ = [
    "BookComparison",
    "journal_topology",
    "journalled",
    "logged_summary",
    "md_summary",
    "compare_with_orderbook",
    "copied_stream",
    "emptying",
    "latest",
    "message_of",
    "published_depth",
    "published_top",
]

#: (column offset within a level, side) in LOBSTER's order: AskPrice, AskSize, BidPrice, BidSize
SIDES = ((0, SIDE_SELL), (2, SIDE_BUY))


def message_of(stream: np.ndarray) -> np.ndarray:
    """Index of the message each MARKET_DATA record belongs to (events start a message)."""
    event = (stream["kind"] != MD_QUOTE) & (stream["kind"] != MD_TRADE)
    return np.cumsum(event) - 1


def latest(n: int, at: np.ndarray) -> np.ndarray:
    """For each message 0..n-1, the index into ``at`` (non-decreasing message indices) of
    the last entry at or before it (-1: none yet)."""
    last = np.full(n, -1, np.int64)
    last[at] = np.arange(at.size)  # later entries of one message overwrite earlier ones
    return np.maximum.accumulate(last)


def published_top(stream: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) AskPrice, AskSize, BidPrice, BidSize after each of ``n`` messages, from the
    quotes (0 where a side was not quoted yet)."""
    msg = message_of(stream)
    out = np.zeros((n, 4), np.int64)
    for col, side in SIDES:
        q = (stream["kind"] == MD_QUOTE) & (stream["side"] == side)
        idx = latest(n, msg[q])
        have = idx >= 0
        out[have, col] = stream["price"][q][idx[have]]
        out[have, col + 1] = stream["qty"][q][idx[have]]
    return out


def published_depth(
    stream: np.ndarray, levels: np.ndarray, parents: np.ndarray, n: int, depth: int
) -> np.ndarray:
    """(n, 4 x depth) in LOBSTER's column order after each message, from BOOK_LEVEL
    records; ``parents[i]`` is the index in ``stream`` of the event ``levels[i]`` derives
    from (0 where a position was not published yet)."""
    msg = message_of(stream)[np.asarray(parents, np.int64)]
    out = np.zeros((n, 4 * depth), np.int64)
    for k in range(depth):
        for col, side in SIDES:
            sel = (levels["side"] == side) & (levels["level"] == k)
            idx = latest(n, msg[sel])
            have = idx >= 0
            out[have, 4 * k + col] = levels["price"][sel][idx[have]]
            out[have, 4 * k + col + 1] = levels["qty"][sel][idx[have]]
    return out


def emptying(records: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Messages that remove a whole visible level (a delete, cancel or execution of at
    least the level's size in the row before), from the files alone: exactly the messages
    after which a level slides into the window on the message's side."""
    levels = book.shape[1] // 4
    rows = records["seq"].astype(np.int64) - 1
    prev = book[np.maximum(rows - 1, 0)]
    reduce = np.isin(records["kind"], (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC))
    ask = records["side"] == SIDE_SELL
    out = np.zeros(len(records), bool)
    for k in range(levels):
        px = np.where(ask, prev[:, 4 * k], prev[:, 4 * k + 2])
        sz = np.where(ask, prev[:, 4 * k + 1], prev[:, 4 * k + 3])
        out |= reduce & (records["price"] == px) & (records["qty"] >= sz)
    if len(records):
        # the first message has no row before it: it empties a level when its price is
        # not in row 1 on its side (the seed puts it back)
        first = book[rows[0]]
        cols = [4 * k + (0 if records["side"][0] == SIDE_SELL else 2) for k in range(levels)]
        out[0] = bool(reduce[0]) and int(records["price"][0]) not in first[cols]
    return out


@dataclass
class BookComparison:
    """Cells (one price and one size per level, side and row) compared with the file."""

    rows: int
    determinable: int  # cells the messages determine
    determinable_equal: int
    slid_in: int  # cells a level slid into (position N of the emptied side, that row)
    slid_in_equal: int
    emptying_messages: int  # from the files alone (must equal the builder's slide_in)

    @property
    def ok(self) -> bool:
        return self.determinable == self.determinable_equal

    def line(self) -> str:
        return (
            f"{self.rows} rows: determinable cells {self.determinable_equal}/{self.determinable}"
            f" equal; slid-in cells {self.slid_in_equal}/{self.slid_in} equal"
            f" ({self.emptying_messages} level-emptying messages)"
        )


def compare_with_orderbook(
    records: np.ndarray, book: np.ndarray, got: np.ndarray
) -> BookComparison:
    """Compare ``got`` ((n, 4 x L) in LOBSTER's column order after each of the n messages,
    L <= the file's levels) with the orderbook rows of ``records``: every determinable
    cell must be equal; the slid-in ones are reported apart."""
    file_levels = book.shape[1] // 4
    rows = book[records["seq"].astype(np.int64) - 1][:, : got.shape[1]]
    empt = emptying(records, book)
    slid = np.zeros(got.shape, bool)
    if got.shape[1] == 4 * file_levels:  # position N is published: mark its slid-in cells
        base = 4 * (file_levels - 1)
        for col, side in SIDES:
            hit = empt & (records["side"] == side)
            slid[hit, base + col] = True
            slid[hit, base + col + 1] = True
    equal = got == rows
    return BookComparison(
        rows=len(records),
        determinable=int((~slid).sum()),
        determinable_equal=int((equal & ~slid).sum()),
        slid_in=int(slid.sum()),
        slid_in_equal=int((equal & slid).sum()),
        emptying_messages=int(empt.sum()),
    )


def copied_stream(records: np.ndarray, book: np.ndarray) -> np.ndarray:
    """The md stage's stream as it was before issue 18, top of book copied from the
    orderbook file: per message its event, a trade for an execution (aggressor side), and
    a quote per side (ask first) whose best price or size differs from the previous
    message's row (both for the first message; LOBSTER's empty-level fillers never
    quoted); ``MDF_LAST_IN_BATCH`` on the message's last record; ``seq`` 0."""
    n = len(records)
    top = book[records["seq"].astype(np.int64) - 1, :4]
    prev = np.vstack([np.full((1, 4), -1, np.int64), top[:-1]]) if n else top
    trade = np.isin(records["kind"], (MD_BOOK_EXEC, MD_BOOK_HIDDEN_EXEC))
    quote = []
    for col, _side in SIDES:
        px, sz = top[:, col], top[:, col + 1]
        moved = (px != prev[:, col]) | (sz != prev[:, col + 1])
        quote.append(moved & (sz > 0) & (px > 0) & (px < DUMMY_ASK_PRICE))
    per = 1 + trade.astype(np.int64) + quote[0] + quote[1]
    start = np.cumsum(per) - per
    base = records.copy()
    base["flags"] &= ~base.dtype["flags"].type(MDF_LAST_IN_BATCH)
    base["seq"] = 0
    out = np.zeros(int(per.sum()), MARKET_DATA)
    out[start] = base
    at = start + 1
    out[at[trade]] = base[trade]
    out["kind"][at[trade]] = MD_TRADE
    out["side"][at[trade]] = -base["side"][trade]
    at = at + trade
    for (col, side), sel in zip(SIDES, quote, strict=True):
        out[at[sel]] = base[sel]
        out["kind"][at[sel]] = MD_QUOTE
        out["side"][at[sel]] = side
        out["price"][at[sel]] = top[sel, col]
        out["qty"][at[sel]] = top[sel, col + 1]
        out["order_id"][at[sel]] = 0
        at = at + sel
    last = start + per - 1
    out["flags"][last[(records["flags"] & MDF_LAST_IN_BATCH) != 0]] |= MDF_LAST_IN_BATCH
    return out


def journal_topology(instance: str, path, depth: int, journal, capacity: int = 4096) -> str:
    """A topology (TOML) running the md stage on the LOBSTER pair at ``path`` with ``depth``
    BOOK_LEVEL positions, its market data (ring ``md_journal``) and depth
    (``depth_journal``) journalled by persistence to ``journal``: what a pipeline
    publishes, to compare with the orderbook file. Stages and rings may be appended."""
    return f"""
instance = "{instance}"

[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "lobster", path = "{path}", depth = {depth} }}

[[stage]]
name = "persistence"
kind = "persistence"
core = 1
params = {{ dir = "{journal}", fsync = "none" }}

[[ring]]
name = "md_journal"
from = "md"
to = "persistence"
type = "market_data"
capacity = {capacity}

[[ring]]
name = "depth_journal"
from = "md"
to = "persistence"
type = "book_level"
capacity = {capacity}
"""


def md_summary(log: str) -> dict:
    """The md stage's summary (book counters under ``book``) from a run's log: its one
    ``market data summary`` line at drain (text format)."""
    return logged_summary(log, "market data summary")


def logged_summary(log: str, title: str) -> dict:
    """The JSON ``summary=`` of the one log line holding ``title`` (a stage's summary at
    drain, e.g. ``risk summary``), from a run's text-format log."""
    lines = [x for x in log.splitlines() if title in x and "summary=" in x]
    if len(lines) != 1:
        raise ValueError(f"{len(lines)} {title!r} lines in the log")
    return json.loads(lines[0].split("summary=", 1)[1])


def journalled(journal) -> tuple[np.ndarray, np.ndarray]:
    """(MARKET_DATA, BOOK_LEVEL) records of a journal directory, in journal order."""
    from bot4.journal import JournalReader
    from bot4.records import BOOK_LEVEL, RT_BOOK_LEVEL, RT_MARKET_DATA

    parts: dict[int, list[np.ndarray]] = {RT_MARKET_DATA: [], RT_BOOK_LEVEL: []}
    for _pos, rtype, recs in JournalReader(journal):
        if rtype in parts:
            parts[rtype].append(recs.copy())
    md = (
        np.concatenate(parts[RT_MARKET_DATA]) if parts[RT_MARKET_DATA] else np.zeros(0, MARKET_DATA)
    )
    lv = np.concatenate(parts[RT_BOOK_LEVEL]) if parts[RT_BOOK_LEVEL] else np.zeros(0, BOOK_LEVEL)
    return md, lv
