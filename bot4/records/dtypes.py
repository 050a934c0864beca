"""Every record that crosses a ring, declared once.

A record is a numpy structured dtype built with ``align=True``, laid out by hand so that
fields sit in offset order with no implicit holes (checked at import) and the itemsize is
an exact multiple of 64 bytes, one or two cache lines (checked at import). Spare bytes are
an explicit trailing ``reserved`` field, always written as zero.

Ownership: every field of a record is written by the producer of the ring that carries it,
before the slot is published; readers never write a slot. A stage that derives a record
from another (intent from tick, order from intent) copies the stamps it received and adds
its own, so tick-to-order latency is read off every record.

Common leading fields, same name, type and offset in every record:

    offset  field       type  meaning
    0       seq         u8    producer's monotonic sequence number, starts at 1 (0 = unset)
    8       parent_seq  u8    ``seq`` of the record this one derives from (0 = none)

Units:

- ``ts_event_ns`` is source time (exchange / feed clock, ns), copied through unchanged; it
  is not comparable with the host stamps. Every other ``ts_*_ns`` is a host
  ``CLOCK_MONOTONIC`` stamp in ns (``time.monotonic_ns``), so differences between them are
  latencies. A stamp not (yet) taken is 0.
- Prices are int64 fixed point in the instrument's scale (``price_scale`` units per 1 of
  currency, see :mod:`bot4.records.instruments`); real data has sub-tick prices, so the
  tick validates, it is not the unit. Quantities are int64 shares / lots. Money other than
  prices (fees, notionals) is int64 in the same price units; see :mod:`bot4.records.fixed`.
- ``side`` is int8: ``SIDE_BUY`` (+1, buy / bid), ``SIDE_SELL`` (-1, sell / ask),
  ``SIDE_NONE`` (0).
- Every enumerated field uses 0 for "unset", so a zeroed slot is recognisably empty.

Market data comes in two shapes, by choice:

- ``MARKET_DATA`` (64 B): one event, one side, one price and one quantity — an order-book
  message (add, cancel, delete, execution, hidden execution, cross trade, halt: kinds 1-7
  equal LOBSTER message types, so a LOBSTER row maps without a table), a trade print
  (``MD_TRADE``) or one side of a quote (``MD_QUOTE``, ``side`` says which).
- ``BOOK_TOP`` (128 B): a two-sided top-of-book snapshot (best bid, best ask, last trade).
- ``BOOK_LEVEL`` (64 B): one price level of the md stage's rebuilt book, by position from
  the best (level 0), as it is after an event: price, aggregate size, order count. Only
  positions whose content changed are published, so a consumer keeps a ``depth``-level
  array per side and overwrites slot ``level`` (qty 0 = no level at that position).

A single row that carried both quote sides would have pushed every book message past one
cache line; keeping the event record at 64 bytes and giving two-sided quotes their own
record keeps the hot, high-volume path at one line per event.

``OPERATOR_ACTION`` (128 B) is the audit record of an operator tool acting on a circuit
breaker or a trading state (``bot4 breaker``, ``bot4 halt|reduce|resume``): who, what,
the state before and after.

``TXN_DECISION`` (64 B) is the two-phase-commit coordinator's decision about one load
transaction of the journal loader (``bot4.db.twophase``): it never crosses a ring; it is
journaled (fsync'ed) in the coordinator's own journal before the first COMMIT PREPARED.

Constants are plain module-level ints (numba reads module globals as compile-time
constants). Record-type ids (``RT_*``), the record types by name and the layout
fingerprints are in :mod:`bot4.records.types`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACTION_CANCEL",
    "ACTION_NEW",
    "ACTION_NONE",
    "ACTION_QUERY",
    "ACTION_CANCEL_ALL",
    "ACTION_REPLACE",
    "BOOK_LEVEL",
    "BOOK_TOP",
    "COMMON_FIELDS",
    "DECISION_ACCEPT",
    "DECISION_DENY",
    "DECISION_NONE",
    "BROKEN_EXEC_ID_BIT",
    "EXEC_ACK",
    "EXEC_BROKEN",
    "EXEC_CANCELLED",
    "EXEC_CANCEL_REJECTED",
    "EXEC_EXPIRED",
    "EXEC_FILL",
    "EXEC_NONE",
    "EXEC_PARTIAL_FILL",
    "EXEC_REJECTED",
    "EXEC_REPLACED",
    "EXEC_REPORT",
    "EXEC_STATUS",
    "EXEC_STP_DECREMENTED",
    "EXEC_STP_EXPIRED",
    "STP_CANCEL_BOTH",
    "STP_CANCEL_NEW",
    "STP_CANCEL_RESTING",
    "STP_DECREMENT",
    "STP_NONE",
    "MARKET_DATA",
    "MDF_BOOK_STALE",
    "MDF_HALT",
    "MDF_LAST_IN_BATCH",
    "MDF_QUOTING",
    "MDF_REPLAY",
    "MDF_RESUME",
    "MDF_SNAPSHOT",
    "MDF_SYNTHETIC",
    "MD_BOOK_ADD",
    "MD_BOOK_CANCEL",
    "MD_BOOK_DELETE",
    "MD_BOOK_EXEC",
    "MD_BOOK_HIDDEN_EXEC",
    "MD_CROSS_TRADE",
    "MD_NONE",
    "MD_QUOTE",
    "MD_TRADE",
    "MD_TRADING_HALT",
    "ORDER",
    "ORDER_INTENT",
    "OS_CANCELLED",
    "OS_EXPIRED",
    "OS_FILLED",
    "OS_NEW",
    "OS_NONE",
    "OS_PARTIALLY_FILLED",
    "OS_PENDING_CANCEL",
    "OS_PENDING_NEW",
    "OS_PENDING_REPLACE",
    "OS_REJECTED",
    "OT_LIMIT",
    "OT_MARKET",
    "OT_NONE",
    "OT_STOP",
    "OT_STOP_LIMIT",
    "OPERATOR_ACTION",
    "OP_BREAKER_RESET",
    "OP_BREAKER_TRIP",
    "OP_HALT",
    "OP_NONE",
    "OP_REDUCE",
    "OP_RESUME",
    "RECORD_ALIGN",
    "RISK_DECISION",
    "SIDE_BUY",
    "SIDE_NONE",
    "SIDE_SELL",
    "TARGET_BREAKER",
    "TARGET_GLOBAL",
    "TARGET_INSTRUMENT",
    "TARGET_NONE",
    "TIF_DAY",
    "TIF_FOK",
    "TIF_GTC",
    "TIF_IOC",
    "TIF_NONE",
    "TXN_ABORT",
    "TXN_COMMIT",
    "TXN_DECISION",
]

RECORD_ALIGN = 64  # bytes; every record itemsize is a multiple of this

# --- side (int8) ---------------------------------------------------------------------------
SIDE_NONE = 0
SIDE_BUY = 1  # buy order / bid side
SIDE_SELL = -1  # sell order / ask side

# --- MARKET_DATA.kind (uint8); 1-7 equal LOBSTER message types ------------------------------
MD_NONE = 0
MD_BOOK_ADD = 1  # new resting order: price, qty, order_id; side of the order
MD_BOOK_CANCEL = 2  # partial cancel: qty is the amount removed
MD_BOOK_DELETE = 3  # whole order removed: qty is what was left
MD_BOOK_EXEC = 4  # visible resting order executed: qty traded; side of the resting order
MD_BOOK_HIDDEN_EXEC = 5  # hidden liquidity executed: qty traded; side of the resting order
MD_CROSS_TRADE = 6  # auction / cross print: price, qty
MD_TRADING_HALT = 7  # halt state change, given by MDF_HALT / MDF_QUOTING / MDF_RESUME
MD_QUOTE = 8  # one side of the top of book: side, price, qty (qty 0 = side empty)
MD_TRADE = 9  # trade print: price, qty; side = aggressor side, 0 if unknown

# --- MARKET_DATA.flags / BOOK_TOP.flags (uint16 bit set) ------------------------------------
MDF_SNAPSHOT = 1 << 0  # part of an initial book snapshot, not a live event
MDF_SYNTHETIC = 1 << 1  # produced by the synthetic market-data source
MDF_REPLAY = 1 << 2  # read back from a recorded file
MDF_LAST_IN_BATCH = 1 << 3  # last event sharing this ts_event_ns: the book is consistent
MDF_HALT = 1 << 4  # MD_TRADING_HALT: trading halted
MDF_QUOTING = 1 << 5  # MD_TRADING_HALT: quoting resumed, trading still halted
MDF_RESUME = 1 << 6  # MD_TRADING_HALT: trading resumed
MDF_BOOK_STALE = 1 << 7  # the md stage's book of this instrument is inconsistent (a gap):
#   no quote or depth is published from it until it is consistent again; risk halts it

# --- order_type (uint8) ---------------------------------------------------------------------
OT_NONE = 0
OT_MARKET = 1
OT_LIMIT = 2  # limit_price set
OT_STOP = 3  # stop_price triggers a market order
OT_STOP_LIMIT = 4  # stop_price triggers a limit order at limit_price

# --- tif, time in force (uint8) -------------------------------------------------------------
TIF_NONE = 0
TIF_DAY = 1
TIF_GTC = 2  # good till cancelled
TIF_IOC = 3  # immediate or cancel
TIF_FOK = 4  # fill or kill

# --- ORDER.action (uint8) -------------------------------------------------------------------
ACTION_NONE = 0
ACTION_NEW = 1
ACTION_CANCEL = 2  # cancels orig_client_order_id
ACTION_REPLACE = 3  # replaces orig_client_order_id with client_order_id, qty, prices
ACTION_QUERY = 4  # status of client_order_id (restart reconciliation); venue answers EXEC_STATUS
ACTION_CANCEL_ALL = 5  # kill switch: cancel every resting order of `instrument` (0 = all)

# --- EXEC_REPORT.exec_type (uint8) ----------------------------------------------------------
EXEC_NONE = 0
EXEC_ACK = 1  # accepted by the venue, working
EXEC_PARTIAL_FILL = 2  # last_qty filled, leaves_qty > 0
EXEC_FILL = 3  # last_qty filled, leaves_qty == 0
EXEC_CANCELLED = 4
EXEC_REJECTED = 5  # reason says why
EXEC_EXPIRED = 6  # time in force ran out
EXEC_REPLACED = 7
EXEC_CANCEL_REJECTED = 8  # cancel / replace refused (e.g. already filled); order unchanged
EXEC_STATUS = 9  # answer to ACTION_QUERY: status, cum_qty, leaves_qty as the venue has them
EXEC_STP_EXPIRED = 10  # self-trade prevention expired (cancelled) the order's rest; prevented_qty
EXEC_STP_DECREMENTED = 11  # self-trade prevention decremented the order by prevented_qty
# trade bust: the venue broke an execution reported before (OUCH Broken Trade). exec_id =
# BROKEN_EXEC_ID_BIT | the broken execution's exec_id (its own identity, the broken one's
# readable); last_qty / last_price / fee / side as in the broken fill, which every consumer
# reverses (an opposite fill at the same price); cum_qty / leaves_qty / status unchanged
# (the order is not reopened). See docs/records.md
EXEC_BROKEN = 12
BROKEN_EXEC_ID_BIT = 1 << 62  # EXEC_BROKEN exec_id = this | the broken execution's exec_id

# self-trade prevention modes an ORDER carries to the venue (applied at match time; the
# aggressor's mode governs). See docs/stp.md for the mapping to Binance, Coinbase and CME.
STP_NONE = 0  # no prevention: own orders may match each other
STP_CANCEL_NEW = (
    1  # expire the aggressor (Binance EXPIRE_TAKER, Coinbase cn, CME cancel-aggressing)
)
STP_CANCEL_RESTING = 2  # expire the resting own order met (EXPIRE_MAKER, co, CME cancel-resting)
STP_CANCEL_BOTH = 3  # expire both (EXPIRE_BOTH, cb)
STP_DECREMENT = 4  # decrement both by the smaller size (Binance DECREMENT, Coinbase dc)

# --- EXEC_REPORT.status: order status after the report (uint8) ------------------------------
OS_NONE = 0
OS_PENDING_NEW = 1
OS_NEW = 2  # acknowledged, working, nothing filled
OS_PARTIALLY_FILLED = 3
OS_FILLED = 4
OS_PENDING_CANCEL = 5
OS_CANCELLED = 6
OS_PENDING_REPLACE = 7
OS_REJECTED = 8
OS_EXPIRED = 9

# --- RISK_DECISION.decision (uint8) ---------------------------------------------------------
DECISION_NONE = 0
DECISION_ACCEPT = 1
DECISION_DENY = 2  # reason says which rule

# --- OPERATOR_ACTION.action (uint8) ---------------------------------------------------------
OP_NONE = 0
OP_BREAKER_TRIP = 1  # force a breaker OPEN (stays open until reset)
OP_BREAKER_RESET = 2  # force a breaker CLOSED, window cleared
OP_HALT = 3  # trading state HALTED (risk cancels resting orders: kill switch)
OP_REDUCE = 4  # trading state REDUCING (only position-reducing orders)
OP_RESUME = 5  # trading state ACTIVE

# --- TXN_DECISION.decision (uint8) -----------------------------------------------------------
TXN_COMMIT = 1  # both databases prepared: commit them (presumed abort: no record = roll back)
TXN_ABORT = 2  # explicitly abandoned (optional: absence of COMMIT already means abort)

# --- OPERATOR_ACTION.target_kind (uint8) ----------------------------------------------------
TARGET_NONE = 0
TARGET_BREAKER = 1  # target = breaker index (bot4.shm.breakers)
TARGET_INSTRUMENT = 2  # target = instrument id
TARGET_GLOBAL = 3  # target = 0: every instrument

COMMON_FIELDS = ("seq", "parent_seq")

_COMMON = [
    ("seq", np.uint64),  # producer's monotonic sequence number, from 1 (0 = unset)
    ("parent_seq", np.uint64),  # seq of the record this one derives from (0 = none)
]


def _check(ok: bool, message: str) -> None:
    """Import-time layout assertion that ``python -O`` cannot strip."""
    if not ok:
        raise AssertionError(message)


def _record(name: str, fields: list[tuple]) -> np.dtype:
    """Build an aligned record dtype and check the layout guarantees of this module."""
    dt = np.dtype(_COMMON + fields, align=True)
    _check(dt.itemsize % RECORD_ALIGN == 0, f"{name}: itemsize {dt.itemsize} not a multiple of 64")
    _check(
        sum(dt.fields[f][0].itemsize for f in dt.names) == dt.itemsize,
        f"{name}: implicit padding; declare fields in offset order and pad with `reserved`",
    )
    for i, field in enumerate(COMMON_FIELDS):
        _check(dt.fields[field][1] == 8 * i, f"{name}: common field {field} misplaced")
    return dt


MARKET_DATA = _record(
    "MARKET_DATA",
    [
        ("ts_event_ns", np.int64),  # source / exchange time of the event, ns
        ("ts_recv_ns", np.int64),  # md stage receive stamp, ns (host monotonic)
        ("price", np.int64),  # fixed point, instrument price scale
        ("qty", np.int64),  # shares / lots (see MD_* for what the quantity means)
        ("order_id", np.uint64),  # venue order reference (book events), 0 if none
        ("instrument", np.uint32),  # instrument id (instrument table)
        ("kind", np.uint8),  # MD_*
        ("side", np.int8),  # SIDE_*: side of the resting order / quote; trade: aggressor
        ("flags", np.uint16),  # MDF_* bits
    ],
)
_check(MARKET_DATA.itemsize == 64, "MARKET_DATA must be exactly one cache line")

BOOK_TOP = _record(
    "BOOK_TOP",
    [
        ("ts_event_ns", np.int64),  # source / exchange time of the book state, ns
        ("ts_recv_ns", np.int64),  # md stage receive stamp, ns (host monotonic)
        ("bid_px", np.int64),  # best bid, fixed point, instrument scale (0 if no bid)
        ("bid_qty", np.int64),  # shares / lots at the best bid (0 = no bid)
        ("ask_px", np.int64),  # best ask, fixed point, instrument scale (0 if no ask)
        ("ask_qty", np.int64),  # shares / lots at the best ask (0 = no ask)
        ("last_px", np.int64),  # last trade price, fixed point (0 if none yet)
        ("last_qty", np.int64),  # last trade quantity, shares / lots
        ("volume", np.int64),  # traded quantity since session start, shares / lots
        ("instrument", np.uint32),  # instrument id
        ("bid_orders", np.uint32),  # orders at the best bid (0 = unknown / none)
        ("ask_orders", np.uint32),  # orders at the best ask (0 = unknown / none)
        ("flags", np.uint16),  # MDF_* bits
        ("reserved", np.uint8, (26,)),  # zero
    ],
)

ORDER_INTENT = _record(
    "ORDER_INTENT",
    [
        ("ts_event_ns", np.int64),  # source time of the triggering tick, ns (copied)
        ("ts_recv_ns", np.int64),  # md receive stamp of the triggering tick, ns (copied)
        ("ts_signal_ns", np.int64),  # signal stage decision stamp, ns (host monotonic)
        ("qty", np.int64),  # shares / lots, > 0 (direction is `side`)
        ("limit_price", np.int64),  # fixed point, instrument scale (0 = none, market)
        ("stop_price", np.int64),  # stop-loss level, fixed point (0 = none)
        ("signal_value", np.float64),  # model output that triggered the intent (unitless)
        ("instrument", np.uint32),  # instrument id
        ("model_version", np.uint32),  # version of the model / parameters that decided
        ("strategy", np.uint16),  # strategy id
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("order_type", np.uint8),  # OT_*
        ("tif", np.uint8),  # TIF_*
        ("reserved", np.uint8, (43,)),  # zero
    ],
)

ORDER = _record(
    "ORDER",
    [
        ("ts_event_ns", np.int64),  # source time of the triggering tick, ns (copied)
        ("ts_recv_ns", np.int64),  # md receive stamp, ns (copied)
        ("ts_signal_ns", np.int64),  # signal stamp, ns (copied)
        ("ts_risk_ns", np.int64),  # risk decision stamp, ns (host monotonic)
        ("ts_order_ns", np.int64),  # OMS send stamp, ns (0 until the OMS sends it)
        ("client_order_id", np.uint64),  # our order id, unique per session
        ("orig_client_order_id", np.uint64),  # cancel / replace: the order acted on (else 0)
        ("order_id", np.uint64),  # venue order id, 0 until acknowledged
        ("qty", np.int64),  # shares / lots, > 0
        ("limit_price", np.int64),  # fixed point, instrument scale (0 = none)
        ("stop_price", np.int64),  # stop-loss level, fixed point (0 = none)
        ("instrument", np.uint32),  # instrument id
        ("strategy", np.uint16),  # strategy id
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("order_type", np.uint8),  # OT_*
        ("tif", np.uint8),  # TIF_*
        ("action", np.uint8),  # ACTION_*
        ("stp_mode", np.uint8),  # STP_*: self-trade prevention the venue applies (v2)
        ("reserved", np.uint8, (1,)),  # zero
        ("stp_group", np.uint32),  # STP / SMP group: orders of one group never match (v2)
        ("model_id", np.uint32),  # model registry id that produced the intent, 0 = none (v2)
        ("reserved2", np.uint8, (4,)),  # zero
    ],
)

EXEC_REPORT = _record(
    "EXEC_REPORT",
    [
        ("ts_event_ns", np.int64),  # source time of the originating tick, ns (copied)
        ("ts_recv_ns", np.int64),  # md receive stamp of the originating tick, ns (copied)
        ("ts_order_ns", np.int64),  # OMS send stamp of the order answered, ns (copied)
        ("ts_venue_ns", np.int64),  # venue transaction time, ns (simulated venue: host clock)
        ("exec_id", np.uint64),  # venue execution id, unique per venue session
        ("client_order_id", np.uint64),  # our order id
        ("order_id", np.uint64),  # venue order id
        ("last_qty", np.int64),  # shares / lots filled by this report (0 if no fill)
        ("last_price", np.int64),  # price of this fill, fixed point (0 if no fill)
        ("cum_qty", np.int64),  # shares / lots filled so far on the order
        ("leaves_qty", np.int64),  # shares / lots still working
        ("fee", np.int64),  # fee of this report, price units (fixed point money; rebate < 0)
        ("instrument", np.uint32),  # instrument id
        ("reason", np.uint16),  # errors.Code for rejects / cancels (0 = OK)
        ("strategy", np.uint16),  # strategy id of the order (copied)
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("exec_type", np.uint8),  # EXEC_*
        ("status", np.uint8),  # OS_*: order status after this report
        ("venue", np.uint8),  # venue id: an execution is identified by (venue, exec_id) (v2)
        ("prevented_qty", np.uint32),  # shares / lots an STP match prevented (EXEC_STP_*) (v2)
    ],
)

RISK_DECISION = _record(
    "RISK_DECISION",
    [
        ("ts_event_ns", np.int64),  # source time of the triggering tick, ns (copied)
        ("ts_recv_ns", np.int64),  # md receive stamp, ns (copied)
        ("ts_signal_ns", np.int64),  # signal stamp, ns (copied)
        ("ts_risk_ns", np.int64),  # risk decision stamp, ns (host monotonic)
        ("intent_seq", np.uint64),  # seq of the intent decided on
        ("qty", np.int64),  # shares / lots asked for
        ("limit_price", np.int64),  # fixed point, instrument scale (0 = none)
        ("stop_price", np.int64),  # stop-loss level asked for, fixed point (0 = none)
        ("position", np.int64),  # signed position in the instrument before, shares / lots
        ("exposure", np.int64),  # signed notional of position + order, price units * qty
        ("checked_value", np.int64),  # value the deciding rule measured (0 if accepted)
        ("limit_value", np.int64),  # limit it was held against, same units (0 if accepted)
        ("intent_producer", np.uint32),  # producer id of the intent's ring
        ("instrument", np.uint32),  # instrument id
        ("strategy", np.uint16),  # strategy id
        ("reason", np.uint16),  # errors.Code (0 = OK when accepted)
        ("side", np.int8),  # SIDE_BUY / SIDE_SELL
        ("decision", np.uint8),  # DECISION_*
        ("reserved", np.uint8, (2,)),  # zero
    ],
)

OPERATOR_ACTION = _record(
    "OPERATOR_ACTION",
    [
        ("ts_ns", np.int64),  # when the operator tool acted, ns (host monotonic)
        ("who", "S32"),  # OS user who ran the tool, ASCII, NUL padded
        ("target", np.uint32),  # breaker index or instrument id, per target_kind (0 = global)
        ("reason", np.uint16),  # errors.Code given by the operator (0 = none)
        ("action", np.uint8),  # OP_*
        ("target_kind", np.uint8),  # TARGET_*
        ("old_state", np.uint8),  # state before: breaker CLOSED/OPEN/HALF_OPEN 0/1/2,
        ("new_state", np.uint8),  #   trading ACTIVE/REDUCING/HALTED 0/1/2; state after
        ("note", "S40"),  # free text from the operator, ASCII, NUL padded
        ("reserved", np.uint8, (22,)),  # zero
    ],
)
_check(OPERATOR_ACTION.itemsize == 128, "OPERATOR_ACTION must be two cache lines")

BOOK_LEVEL = _record(
    "BOOK_LEVEL",
    [
        ("ts_event_ns", np.int64),  # source time of the event that changed the level, ns
        ("ts_recv_ns", np.int64),  # md stage receive stamp, ns (host monotonic)
        ("price", np.int64),  # level price, fixed point, instrument scale (0 = no level)
        ("qty", np.int64),  # aggregate visible size at the level, shares / lots (0 = none)
        ("instrument", np.uint32),  # instrument id
        ("orders", np.uint32),  # orders resting at the level (a lower bound, docs/records.md)
        ("side", np.int8),  # SIDE_BUY (bid) / SIDE_SELL (ask)
        ("level", np.uint8),  # position from the best on that side, 0 = best
        ("flags", np.uint16),  # MDF_* bits (MDF_LAST_IN_BATCH: last update of the batch)
        ("reserved", np.uint8, (4,)),  # zero
    ],
)
_check(BOOK_LEVEL.itemsize == 64, "BOOK_LEVEL must be exactly one cache line")

TXN_DECISION = _record(
    "TXN_DECISION",
    [
        ("ts_ns", np.int64),  # when the coordinator decided, ns (wall clock, time.time_ns)
        ("first_frame", np.int64),  # loaded journal frames [first_frame, end_frame)
        ("end_frame", np.int64),
        ("token", np.uint64),  # random id of this transaction attempt, part of its gids
        ("fills", np.uint32),  # fills (ledger postings) the transaction carries
        ("decision", np.uint8),  # TXN_*
        ("reserved", np.uint8, (11,)),  # zero
    ],
)
_check(TXN_DECISION.itemsize == 64, "TXN_DECISION must be exactly one cache line")
