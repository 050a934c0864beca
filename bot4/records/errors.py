"""The one error and reason taxonomy of bot4.

``Code`` numbers every outcome that a record, a counter, a log line or an exception can
report: risk denial reasons (``RISK_DECISION.reason``), venue and OMS reasons
(``EXEC_REPORT.reason``), shared-memory attach failures, journal and database faults.
Values are stable (they are stored in records, the journal and PostgreSQL): never renumber,
only add. All fit uint16; the hundreds digit is the category:

    0    ok
    1xx  transport: shared-memory segments and rings
    2xx  input: market data and other external input
    3xx  risk: pre-trade denials
    4xx  oms: order state and venue answers
    5xx  persistence: journal and PostgreSQL
    6xx  runtime: stages and supervision
    7xx  config: configuration files

``Code`` is an ``IntEnum``: members compare equal to their ints, and numba kernels read
``Code.X`` as a compile-time constant. :class:`Bot4Error` is the base of every bot4
exception; subclasses set ``code``.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CATEGORIES",
    "EXIT_INPUT_REFUSED",
    "Bot4Error",
    "Code",
    "category",
    "describe",
]


class Code(IntEnum):
    OK = 0

    # 1xx transport / shared memory
    SEGMENT_MISSING = 100
    SEGMENT_TOO_SMALL = 101
    DTYPE_MISMATCH = 102
    LAYOUT_VERSION_MISMATCH = 103
    CAPACITY_MISMATCH = 104
    CAPACITY_NOT_POWER_OF_TWO = 105
    OWNER_ALIVE = 106
    RING_FULL_REJECTED = 107
    SHM_FULL = 108
    SEGMENT_EXISTS = 109
    BAD_MAGIC = 110
    MISALIGNED = 111
    SEGMENT_ACCESS = 112
    RING_POSITIONS_CORRUPT = 113

    # 2xx input / market data
    MALFORMED_ROW = 200
    TRUNCATED_FILE = 201
    TIME_BACKWARDS = 202
    NEGATIVE_PRICE = 203
    CROSSED_QUOTE = 204
    UNKNOWN_INSTRUMENT = 205
    OFF_TICK_PRICE = 206
    INVALID_QTY = 207
    UNKNOWN_KIND = 208
    SEQUENCE_GAP = 209
    INPUT_MISSING = 210

    # 3xx risk denials
    MAX_ORDER_QTY = 300
    MAX_NOTIONAL = 301
    POSITION_LIMIT = 302
    GROSS_LIMIT = 303
    MAX_OPEN_ORDERS = 304
    PRICE_BAND = 305
    STOP_LOSS_MISSING = 306
    STOP_LOSS_WRONG_SIDE = 307
    STOP_LOSS_TOO_FAR = 308
    RATE_LIMIT = 309
    DAILY_LOSS = 310
    STATE_HALTED = 311
    STATE_REDUCING = 312
    BREAKER_OPEN = 313
    NO_REFERENCE_PRICE = 314
    QTY_NOT_LOT_MULTIPLE = 315
    MARKET_DATA_STALE = 316
    BOOK_LIQUIDITY = 317
    FEED_GAP = 318

    # 4xx OMS
    ILLEGAL_TRANSITION = 400
    DUPLICATE_ORDER = 401
    SELF_TRADE = 402
    UNKNOWN_ORDER = 403
    VENUE_REJECTED = 404
    TOO_LATE_TO_CANCEL = 405
    RECONCILE_MISMATCH = 406
    EXEC_ID_CONFLICT = 407

    # 5xx persistence / database
    DB_UNAVAILABLE = 500
    SERIALIZATION_FAILURE = 501
    CONSTRAINT_VIOLATION = 502
    JOURNAL_TORN_TAIL = 503
    JOURNAL_CRC = 504
    DEADLOCK_DETECTED = 505
    JOURNAL_GAP = 506
    DB_RECONCILE_DIFFERENCE = 510
    DB_BEHIND_AT_EXIT = 511

    # 6xx runtime
    STAGE_DIED = 600
    STAGE_STALLED = 601
    RESTART_LIMIT = 602
    TOPOLOGY_INVALID = 603
    INTERNAL_ERROR = 604

    # 7xx configuration
    CONFIG_INVALID = 700
    INSTRUMENT_CONFIG_INVALID = 701


CATEGORIES: dict[int, str] = {
    0: "ok",
    1: "transport",
    2: "input",
    3: "risk",
    4: "oms",
    5: "persistence",
    6: "runtime",
    7: "config",
}

_DESCRIPTIONS: dict[Code, str] = {
    Code.OK: "ok",
    Code.SEGMENT_MISSING: "shared-memory segment does not exist",
    Code.SEGMENT_TOO_SMALL: "shared-memory segment is smaller than its layout needs",
    Code.DTYPE_MISMATCH: "ring carries a different record dtype than expected",
    Code.LAYOUT_VERSION_MISMATCH: "segment layout version differs from this build",
    Code.CAPACITY_MISMATCH: "ring capacity differs from the configured capacity",
    Code.CAPACITY_NOT_POWER_OF_TWO: "ring capacity is not a power of two",
    Code.OWNER_ALIVE: "the process owning this side of the ring is still alive",
    Code.RING_FULL_REJECTED: "ring full: record rejected and counted (reject policy)",
    Code.SHM_FULL: "shared-memory filesystem is full",
    Code.SEGMENT_EXISTS: "shared-memory segment already exists",
    Code.BAD_MAGIC: "segment does not start with the expected magic: not a bot4 segment",
    Code.MISALIGNED: "segment or slot is not aligned as its layout requires",
    Code.SEGMENT_ACCESS: "segment's owner or mode does not let this user map it so",
    Code.RING_POSITIONS_CORRUPT: "ring positions are further apart than its capacity: the segment is damaged",
    Code.MALFORMED_ROW: "input row cannot be parsed",
    Code.TRUNCATED_FILE: "input file ends in the middle of a record",
    Code.TIME_BACKWARDS: "event time earlier than the previous event's",
    Code.NEGATIVE_PRICE: "negative price",
    Code.CROSSED_QUOTE: "bid at or above ask",
    Code.UNKNOWN_INSTRUMENT: "instrument not in the instrument table",
    Code.OFF_TICK_PRICE: "price not a multiple of the instrument's tick size",
    Code.INVALID_QTY: "quantity zero, negative or out of range",
    Code.UNKNOWN_KIND: "unknown event kind",
    Code.SEQUENCE_GAP: "sequence number skipped: records missing",
    Code.INPUT_MISSING: "input file missing, empty, or not in a format bot4 reads",
    Code.MAX_ORDER_QTY: "order quantity above the per-order limit",
    Code.MAX_NOTIONAL: "order notional above the per-order limit",
    Code.POSITION_LIMIT: "position would exceed the instrument position limit",
    Code.GROSS_LIMIT: "gross exposure would exceed the account limit",
    Code.MAX_OPEN_ORDERS: "too many open orders",
    Code.PRICE_BAND: "limit price outside the allowed band around the reference price",
    Code.STOP_LOSS_MISSING: "order carries no stop-loss",
    Code.STOP_LOSS_WRONG_SIDE: "stop-loss on the wrong side of the entry price",
    Code.STOP_LOSS_TOO_FAR: "stop-loss farther from the entry price than allowed",
    Code.RATE_LIMIT: "order rate limit reached",
    Code.DAILY_LOSS: "daily loss limit reached",
    Code.STATE_HALTED: "trading state is HALTED",
    Code.STATE_REDUCING: "trading state is REDUCING: only position-reducing orders allowed",
    Code.BREAKER_OPEN: "a circuit breaker is open",
    Code.NO_REFERENCE_PRICE: "no market price to check the order against",
    Code.QTY_NOT_LOT_MULTIPLE: "quantity not a multiple of the instrument's lot size",
    Code.MARKET_DATA_STALE: "market data stale: no update within the staleness limit",
    Code.BOOK_LIQUIDITY: "order larger than its share of the visible book it would trade against",
    Code.FEED_GAP: "market data feed gap not yet recovered: the gateway's books are suspect",
    Code.ILLEGAL_TRANSITION: "event not allowed in the order's current state",
    Code.DUPLICATE_ORDER: "client order id already used",
    Code.SELF_TRADE: "order would trade against our own resting order",
    Code.UNKNOWN_ORDER: "order id not known",
    Code.VENUE_REJECTED: "venue rejected the order",
    Code.TOO_LATE_TO_CANCEL: "order already filled or closed: cannot cancel or replace",
    Code.RECONCILE_MISMATCH: "after a restart the venue and our records disagree: an operator must resume trading",
    Code.EXEC_ID_CONFLICT: "an execution id arrived again with different content: two executions under one id",
    Code.DB_UNAVAILABLE: "database unreachable",
    Code.SERIALIZATION_FAILURE: "database serialization failure (retried)",
    Code.CONSTRAINT_VIOLATION: "database constraint violated",
    Code.JOURNAL_TORN_TAIL: "journal ends in a partially written frame",
    Code.JOURNAL_CRC: "journal frame checksum mismatch",
    Code.DEADLOCK_DETECTED: "database deadlock detected (retried)",
    Code.DB_RECONCILE_DIFFERENCE: "journal and database disagree (executions or positions): an operator must look",
    Code.DB_BEHIND_AT_EXIT: "the database loader had not caught up with the journal when the run stopped: the rest loads at the next start or with `bot4 db load`",
    Code.JOURNAL_GAP: "journal frames missing: a segment is missing, renumbered or does not continue the previous one",
    Code.STAGE_DIED: "stage process exited",
    Code.STAGE_STALLED: "stage heartbeat stopped advancing",
    Code.RESTART_LIMIT: "stage restarted too often: giving up",
    Code.TOPOLOGY_INVALID: "pipeline topology is invalid",
    Code.INTERNAL_ERROR: "internal error (a bug)",
    Code.CONFIG_INVALID: "configuration invalid",
    Code.INSTRUMENT_CONFIG_INVALID: "instrument table configuration invalid",
}


def _check_taxonomy() -> None:
    missing = [c.name for c in Code if c not in _DESCRIPTIONS]
    if missing:
        raise AssertionError(f"codes without a description: {missing}")
    for c in Code:
        if not 0 <= c <= 0xFFFF or c // 100 not in CATEGORIES:
            raise AssertionError(f"code {c.name}={int(c)} outside the uint16 category ranges")


_check_taxonomy()


def _as_code(code: int) -> Code:
    try:
        return Code(code)
    except ValueError:
        raise ValueError(f"unknown bot4 code {code!r}") from None


def describe(code: int) -> str:
    """Short human description of a code; ValueError for a number that is not a code."""
    return _DESCRIPTIONS[_as_code(code)]


def category(code: int) -> str:
    """Category name of a code (``"risk"`` for 3xx, ...); ValueError if not a code."""
    return CATEGORIES[_as_code(code) // 100]


class Bot4Error(Exception):
    """Base of every bot4 exception. ``code`` is a :class:`Code`; subclasses set a default.

    ``str(err)`` is the message, or the code's description when there is none.
    """

    code: Code = Code.INTERNAL_ERROR

    def __init__(self, message: str = "", code: Code | None = None) -> None:
        if code is not None:
            self.code = _as_code(code)
        super().__init__(message or describe(self.code))


#: exit status of a stage process whose input cannot be used (a recorded data file that
#: does not read): every restart would fail the same way, so the supervisor halts the
#: pipeline naming the stage and the systemd unit does not restart it
#: (``RestartPreventExitStatus``)
EXIT_INPUT_REFUSED = 5
