"""A LOBSTER pair as the market data stage publishes it: order-level events, trades, and
top-of-book quotes and depth from the book built from the messages.

For each kept message k the stream carries (see :mod:`bot4.marketdata.builder`):

1. the order-level event itself (MD_BOOK_ADD / CANCEL / DELETE / EXEC / HIDDEN_EXEC ...),
   for the venue's queue model;
2. for an execution (types 4 and 5) a trade, MD_TRADE, at the message's price and size,
   ``side`` = the aggressor's (the opposite of the resting order's direction);
3. a quote (MD_QUOTE) for each side whose best price or size, in the book rebuilt from the
   messages, differs from the quote last published for it (both sides for the first
   message);
4. with ``depth`` > 0, BOOK_LEVEL records for the book positions that changed (a separate
   array: their ``parent_seq`` is the index of their event in the stream).

The book starts from LOBSTER's first orderbook row (the orders resting before the data
starts, message 1 taken back out); a level entering the file's depth-limited window is
taken from the orderbook row (``slide_in``: a level-N message file never describes it);
with ``check`` every row is compared with the rebuilt window (``check_mismatch``: counted,
the instrument flagged ``MDF_BOOK_STALE`` and re-seeded from the row). On LOBSTER's sample
files the rebuilt quotes equal the orderbook file's on every row, so the stream is the
same, record for record, as the one copied from the orderbook file before (issue 18).

``MDF_LAST_IN_BATCH`` marks the last record of a run of equal event times, so a consumer
knows when the book is consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bot4.marketdata.builder import BookBuilder
from bot4.marketdata.report import BadInputReport
from bot4.records import BOOK_LEVEL


@dataclass
class LobsterBuild:
    """What :func:`build_lobster_stream` made of one pair. ``levels[i]["parent_seq"]`` is
    the index in ``stream`` of the event the level update derives from; ``counters`` are
    the builder's (``bot4.marketdata.builder.BUILD_STATS``); ``window`` the file's levels."""

    stream: np.ndarray
    report: BadInputReport
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0, BOOK_LEVEL))
    counters: dict[str, int] = field(default_factory=dict)
    window: int = 0

    def gaps(self) -> dict[str, int]:
        from bot4.marketdata.builder import GAP_STATS

        return {k: self.counters.get(k, 0) for k in GAP_STATS}


def build_lobster_stream(path, *, depth: int = 0, check: bool = True, **kwargs) -> LobsterBuild:
    """Build the books of the one message/orderbook pair at ``path`` (file, zip or
    directory) from its messages; ``depth`` BOOK_LEVEL positions per side (capped at the
    file's levels), ``check`` the per-row cross-check. ``kwargs`` go to ``read_messages``."""
    from bot4.marketdata.lobster import find_pairs, read_pair

    pairs = find_pairs(path)
    if len(pairs) != 1:
        from bot4.marketdata.lobster import LobsterError

        raise LobsterError(path, f"holds {len(pairs)} pairs; name one of them")
    msgs, book, report = read_pair(pairs[0], **kwargs)
    window = max(1, book.shape[1] // 4 if book.ndim == 2 and book.shape[0] else pairs[0].levels)
    n_inst = int(msgs["instrument"].max()) + 1 if len(msgs) else 1
    builder = BookBuilder(n_inst, window, min(depth, window), check=check)
    stream, levels = builder.build(msgs, book)
    stream["seq"] = 0  # the stage numbers what it publishes
    return LobsterBuild(stream, report, levels, builder.counters(), window)


def read_lobster_stream(path, **kwargs) -> tuple[np.ndarray, BadInputReport]:
    """Records for the one message/orderbook pair at ``path`` (file, zip or directory)."""
    b = build_lobster_stream(path, **kwargs)
    return b.stream, b.report


def snapshot_of(first, row: np.ndarray) -> np.ndarray:
    """:func:`bot4.stages.marketdata.lobster_snapshot` from the pair's first kept message
    ``first`` (a MARKET_DATA record) and its orderbook ``row`` (int64[4 x levels])."""
    from bot4.records import (
        MARKET_DATA,
        MD_BOOK_ADD,
        MD_BOOK_CANCEL,
        MD_BOOK_DELETE,
        MD_BOOK_EXEC,
        MDF_REPLAY,
        MDF_SNAPSHOT,
        SIDE_BUY,
        SIDE_SELL,
    )

    levels: dict[tuple[int, int], int] = {}
    for i in range(len(row) // 4):
        ask_px, ask_q, bid_px, bid_q = (int(x) for x in row[4 * i : 4 * i + 4])
        if ask_q > 0 and 0 < ask_px < 9_999_999_999:
            levels[(SIDE_SELL, ask_px)] = ask_q
        if bid_q > 0 and 0 < bid_px < 9_999_999_999:
            levels[(SIDE_BUY, bid_px)] = bid_q
    key = (int(first["side"]), int(first["price"]))
    kind, q = int(first["kind"]), int(first["qty"])
    if kind == MD_BOOK_ADD and key in levels:
        levels[key] -= q
    elif kind in (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC):
        levels[key] = levels.get(key, 0) + q
    order = sorted(
        ((s, px, q) for (s, px), q in levels.items() if q > 0),
        key=lambda t: (-t[0], -t[1] if t[0] == SIDE_BUY else t[1]),
    )
    out = np.zeros(len(order), MARKET_DATA)
    for k, (s, px, q) in enumerate(order):
        out[k]["ts_event_ns"] = first["ts_event_ns"]
        out[k]["instrument"] = first["instrument"]
        out[k]["kind"] = MD_BOOK_ADD
        out[k]["side"] = s
        out[k]["price"] = px
        out[k]["qty"] = q
        out[k]["flags"] = MDF_SNAPSHOT | MDF_REPLAY
    return out
