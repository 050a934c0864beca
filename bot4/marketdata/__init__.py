"""Market data from recorded files, and the books rebuilt from it.

Modules: :mod:`~bot4.marketdata.lobster` (LOBSTER message / orderbook files: pair
discovery, byte parsers, bad-input accounting) and :mod:`~bot4.marketdata.book` (price-level
book and order-id table, numba kernels over ``MARKET_DATA`` batches). Also here:
``files`` (recorded CSV / Parquet ticks), ``replay`` (a LOBSTER pair as the stage publishes
it: books built from its messages by ``builder``) and ``report`` (their bad-input report).
"""

from bot4.marketdata.book import (
    ASK,
    BID,
    LevelBook,
    OrderTable,
    one_step_check,
)
from bot4.marketdata.lobster import (
    DUMMY_ASK_PRICE,
    DUMMY_BID_PRICE,
    EXCHANGE_TZ,
    BadInputReport,
    LobsterError,
    LobsterFile,
    LobsterName,
    LobsterPair,
    find_pairs,
    local_to_utc_ns,
    read_messages,
    read_orderbook,
    read_pair,
)

__all__ = [
    "ASK",
    "BID",
    "DUMMY_ASK_PRICE",
    "DUMMY_BID_PRICE",
    "EXCHANGE_TZ",
    "BadInputReport",
    "LevelBook",
    "LobsterError",
    "LobsterFile",
    "LobsterName",
    "LobsterPair",
    "OrderTable",
    "find_pairs",
    "local_to_utc_ns",
    "one_step_check",
    "read_messages",
    "read_orderbook",
    "read_pair",
    "warm",
]


def warm() -> int:
    """Compile (or load from numba's cache) every kernel of this package on tiny inputs;
    returns how many entry points ran. For ``bot4 warm``."""
    import numpy as np

    from bot4.marketdata import lobster
    from bot4.records import MARKET_DATA, MD_BOOK_ADD, SIDE_BUY

    row = np.frombuffer(b"34200.5,1,7,100,5853300,1\n", dtype=np.uint8)
    cols = [np.zeros(2, np.int64) for _ in range(7)]
    cols[2] = np.zeros(2, np.uint64)
    lobster._parse_messages(row, *cols)
    lobster._parse_int_rows(np.frombuffer(b"1,2,3,4\n", dtype=np.uint8), np.zeros((1, 4), np.int64))
    rec = np.zeros(2, MARKET_DATA)
    rec["kind"], rec["side"], rec["price"], rec["qty"] = MD_BOOK_ADD, SIDE_BUY, 100, 1
    rec["order_id"], rec["seq"] = [1, 2], [1, 2]
    book = LevelBook(4)
    book.apply(rec[0])
    book.apply_batch(rec)
    book.seed(np.array([101, 1, 100, 1], np.int64))
    book.top(1)
    one_step_check(rec, np.array([[101, 1, 100, 1], [101, 1, 100, 2]], np.int64), depth=1)
    orders = OrderTable(8)
    orders.apply_batch(rec)
    orders._grow()
    from bot4.marketdata.builder import BookBuilder

    ref = np.array([[101, 1, 100, 2], [101, 1, 100, 3]], np.int64)
    BookBuilder(1, 1, 1).build(rec, ref)
    BookBuilder(1, 1, 0, reference=False).build(rec)
    return 10
