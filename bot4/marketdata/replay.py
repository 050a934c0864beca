"""A LOBSTER pair as the market data stage publishes it: order-level events, trades and
top-of-book quotes, interleaved in message order.

For each kept message k (its orderbook row is LOBSTER's book *after* it):

1. the order-level event itself (MD_BOOK_ADD / CANCEL / DELETE / EXEC / HIDDEN_EXEC ...),
   for the venue's queue model;
2. for an execution (types 4 and 5) a trade, MD_TRADE, at the message's price and size,
   ``side`` = the aggressor's (the opposite of the resting order's direction);
3. a quote (MD_QUOTE) for each side whose best price or size differs from the previous
   kept message's orderbook row (both sides for the first message).

``MDF_LAST_IN_BATCH`` marks the last record of a run of equal event times, so a consumer
knows when the book is consistent.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.marketdata.report import BadInputReport
from bot4.records import (
    MARKET_DATA,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_QUOTE,
    MD_TRADE,
    MDF_LAST_IN_BATCH,
    SIDE_BUY,
    SIDE_SELL,
)


@njit(cache=True)
def _interleave(msgs, book, out):
    n = 0
    prev = -1
    for k in range(msgs.shape[0]):
        m = msgs[k]
        row = np.int64(m.seq) - 1
        last = (m.flags & MDF_LAST_IN_BATCH) != 0
        out[n] = m
        out[n].flags = m.flags & ~MDF_LAST_IN_BATCH
        n += 1
        if m.kind == MD_BOOK_EXEC or m.kind == MD_BOOK_HIDDEN_EXEC:
            out[n] = m
            out[n].kind = MD_TRADE
            out[n].side = -m.side
            out[n].flags = m.flags & ~MDF_LAST_IN_BATCH
            n += 1
        for side in (SIDE_SELL, SIDE_BUY):
            c = 0 if side == SIDE_SELL else 2  # AskPrice_1, AskSize_1 | BidPrice_1, BidSize_1
            px = book[row, c]
            sz = book[row, c + 1]
            if prev >= 0 and book[prev, c] == px and book[prev, c + 1] == sz:
                continue
            if sz <= 0 or px <= 0 or px >= 9999999999:
                continue  # LOBSTER's empty-level filler
            out[n] = m
            out[n].kind = MD_QUOTE
            out[n].side = side
            out[n].price = px
            out[n].qty = sz
            out[n].order_id = 0
            out[n].flags = m.flags & ~MDF_LAST_IN_BATCH
            n += 1
        if last:
            out[n - 1].flags |= MDF_LAST_IN_BATCH
        prev = row
    return n


def read_lobster_stream(path, **kwargs) -> tuple[np.ndarray, BadInputReport]:
    """Records for the one message/orderbook pair at ``path`` (file, zip or directory)."""
    from bot4.marketdata.lobster import read_pair

    msgs, book, report = read_pair(path, **kwargs)
    out = np.zeros(4 * len(msgs) + 2, MARKET_DATA)
    n = _interleave(msgs, book, out)
    stream = out[:n].copy()
    stream["seq"] = 0  # the stage numbers what it publishes
    return stream, report
