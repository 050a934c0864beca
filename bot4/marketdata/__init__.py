"""Market data from recorded files, and the books rebuilt from it.

Modules: :mod:`~bot4.marketdata.lobster` (LOBSTER message / orderbook files: pair
discovery, bad-input accounting; its numba byte parsers are in ``lobster_parsers``) and
:mod:`~bot4.marketdata.builder` (the product's one book implementation: per-instrument
price levels and order map built from order messages, numba kernels; the md stage and the
ITCH gateway both use it; its one book step, :func:`~bot4.marketdata.book_step.apply_event`,
is in ``book_step``). Also here:
``files`` (recorded CSV / Parquet ticks), ``replay`` (a LOBSTER pair as the stage publishes
it: books built from its messages by ``builder``) and ``report`` (their bad-input report).
:mod:`~bot4.marketdata.book` is the tests' independent reference book, not product code.
"""

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
    "DUMMY_ASK_PRICE",
    "DUMMY_BID_PRICE",
    "EXCHANGE_TZ",
    "BadInputReport",
    "LobsterError",
    "LobsterFile",
    "LobsterName",
    "LobsterPair",
    "find_pairs",
    "local_to_utc_ns",
    "read_messages",
    "read_orderbook",
    "read_pair",
    "warm",
]


def warm() -> int:
    """Compile (or load from numba's cache) every kernel of this package on tiny inputs;
    returns how many entry points ran. For ``bot4 warm``."""
    import numpy as np

    from bot4.marketdata import lobster_parsers
    from bot4.records import MARKET_DATA, MD_BOOK_ADD, SIDE_BUY

    row = np.frombuffer(b"34200.5,1,7,100,5853300,1\n", dtype=np.uint8)
    lobster_parsers._parse_messages(row, lobster_parsers.MessageColumns.new(2))
    lobster_parsers._parse_int_rows(
        np.frombuffer(b"1,2,3,4\n", dtype=np.uint8), np.zeros((1, 4), np.int64)
    )
    rec = np.zeros(2, MARKET_DATA)
    rec["kind"], rec["side"], rec["price"], rec["qty"] = MD_BOOK_ADD, SIDE_BUY, 100, 1
    rec["order_id"], rec["seq"] = [1, 2], [1, 2]
    from bot4.marketdata.builder import BookBuilder

    ref = np.array([[101, 1, 100, 2], [101, 1, 100, 3]], np.int64)
    BookBuilder(1, 1, 1).build(rec, ref)
    b = BookBuilder(1, 1, 0, reference=False)
    b.build(rec)
    b.top(0, 1)
    b.reserve(64)
    from bot4.marketdata.csv_fast import FastLines
    from bot4.marketdata.files import _codes
    from bot4.records import DEFAULT_INSTRUMENTS

    idx = {"ts_event_ns": 0, "symbol": 1, "kind": 2, "side": 3, "price": 4, "qty": 5}
    FastLines(idx, 6, DEFAULT_INSTRUMENTS, *_codes(DEFAULT_INSTRUMENTS)).read(
        [b"1,AAPL,quote,bid,1.5,1\n"]
    )
    return 7
