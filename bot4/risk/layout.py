"""Every column of the risk arrays, the state object the kernels take, and the order-id
layout: declared once, here.

Configuration (built by :func:`bot4.risk.limits.build_arrays`, read-only to the kernels)::

    ilim[instrument id, L_*]   per-instrument limits        int64 (NL columns)
    slim[strategy id, S_*]     per-strategy limits          int64 (NS columns)
    alim[A_*]                  account-wide settings        int64 (NA words)

State (process-local, written only by the risk process that allocated it)::

    inst[instrument id, I_*]   position, open quantities, PnL, references, staleness
    acct[X_*]                  the account's totals, resets, kill-switch bookkeeping
    orders[row, O_*]           open orders: a bot4.nbkit u64 map keyed by client_order_id
    counters[...]              decisions by reason code (index = code, 0 = accepted), C_*

:class:`RiskState` bundles them with the shared breaker and trading-state words, so every
kernel takes one object (``st``) instead of a row of loose arrays; numba compiles it as a
tuple of arrays (``cache=True`` works, which structrefs do not yet).

Client order ids: ``(producer << COID_PRODUCER_SHIFT) | (seq & COID_SEQ_MASK)`` — an
accepted intent's id is built from the intent's producer and seq, a CANCEL_ALL's from
risk's own producer and the record's seq.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from bot4.records.errors import Code

__all__ = ["RiskState"]

INT64_MAX = np.iinfo(np.int64).max

# --- order ids --------------------------------------------------------------------------------
COID_PRODUCER_SHIFT = 48
COID_SEQ_MASK = (1 << COID_PRODUCER_SHIFT) - 1

# --- configuration columns (bot4.risk.limits.build_arrays fills them) --------------------------
# ilim[instrument id, L_*]
L_KNOWN = 0  # 1 if the instrument is in the table
L_LOT = 1  # lot size, shares
L_MAX_ORDER_QTY = 2  # shares
L_MAX_NOTIONAL = 3  # price units (qty * price)
L_MAX_POSITION = 4  # shares, worst case with open orders, either side
L_MAX_OPEN_ORDERS = 5  # orders resting at once in this instrument
L_BAND_BP = 6  # limit price at most this far from the reference, bp (0 = no band)
L_BREAKER = 7  # breaker index guarding this instrument's orders (-1 = none)
L_STALE_NS = 8  # no market data for longer than this after some halts the instrument (0 = off)
L_BOOK_TAKE_PCT = 9  # order qty at most this % of the opposite side's visible depth (0 = off)
NL = 10
# slim[strategy id, S_*]
S_STOP_REQUIRED = 0  # 1: orders that add exposure must carry a stop-loss
S_MAX_STOP_BP = 1  # stop at most this far from the entry price, bp (0 = no bound)
S_INTERVAL_NS = 2  # token bucket emission interval, ns per order (0 = no rate limit)
S_BURST = 3  # token bucket capacity, orders
NS = 4
# alim[A_*]
A_MAX_GROSS = 0  # price units, sum over instruments of worst-case |position| * price
A_MAX_OPEN_ORDERS = 1  # orders resting at once, account
A_DAILY_LOSS = 2  # price units; loss since the daily reset at which trading REDUCES (0 = off)
A_DAILY_HALT = 3  # price units; loss at which trading HALTS (0 = off)
A_BREAKER_HALTS = 4  # 1: a breaker opening halts what it guards (kill switch)
A_BREAKER_FROM_EXECS = 5  # 1: execution reports feed the breakers (ack ok, reject failure)
A_REF_MAX_AGE_NS = 6  # a reference price older than this is no reference (0 = any age)
A_INTENT_PRODUCER = 7  # producer id of the intents (the signals stage index)
A_RISK_PRODUCER = 8  # producer id of this risk stage (its CANCEL_ALL order ids)
A_FEED_GONE_NS = 9  # no market data at all for longer than this halts globally (0 = off)
NA = 10

# --- state columns ----------------------------------------------------------------------------
# inst[instrument id, I_*]
I_POS = 0  # signed position, shares
I_OPEN_BUY = 1  # shares in open buy orders
I_OPEN_SELL = 2  # shares in open sell orders
I_OPEN_ORDERS = 3  # open orders
I_COST = 4  # signed cost of the open position, price units
I_REALISED = 5  # realised PnL, fees deducted, price units
I_UNREALISED = 6  # position * mark - cost, price units
I_GROSS = 7  # worst-case |position| * mark, price units (this instrument's share of gross)
I_BID = 8  # latest bid, price units (0 = none)
I_ASK = 9  # latest ask, price units (0 = none)
I_LAST_TRADE = 10  # latest market trade price (0 = none)
I_REF = 11  # reference price: mid, else last trade (0 = none)
I_REF_NS = 12  # receive stamp of the reference, ns (host monotonic)
I_LAST_PX = 13  # price of our last fill or accepted order (mark without a reference)
I_FEES = 14  # fees paid, price units
I_MD_NS = 15  # arrival of the instrument's last market-data record, ns monotonic (0 = never)
I_STALE = 16  # 0, or 1 + the state to relax to: in a stale episode (halted by this rule)
I_DEPTH_BID = 17  # visible bid size over the levels of the book_level input, shares
I_DEPTH_ASK = 18  # visible ask size over the levels of the book_level input, shares
NI = 19
# acct[X_*]
X_REALISED = 0  # sum of I_REALISED
X_UNREALISED = 1  # sum of I_UNREALISED
X_GROSS = 2  # sum of I_GROSS
X_OPEN_ORDERS = 3  # open orders, all instruments
X_DAY_START = 4  # realised + unrealised at the last daily reset
X_NEXT_RESET_NS = 5  # next daily reset, ns monotonic (Python writes it; 0 = not scheduled)
X_LAST_RESET_NS = 6  # the reset instant last applied
X_TS_GEN = 7  # trading-state generation last seen (-1: never)
X_PENDING = 8  # CANCEL_ALLs waiting for room
X_LAST_MD_NS = 9  # newest market-data arrival of any instrument, ns monotonic (0 = never)
X_FEED_GONE = 10  # 0, or 1 + the state to relax to: feed gone (global halted by this rule)
NX = 11
# orders[row, O_*]: a bot4.nbkit.u64map table (column 0 the key: client_order_id, 0 = empty)
O_KEY = 0
O_INST = 1
O_SIDE = 2
O_OPEN = 3  # shares still working as we know it
O_ANSWERED = 4  # 1 once the first ack / fill / reject fed the breaker
NO = 5
# counters[...]: index = reason code for decisions (0 = accepted), and these
C_CANCEL_ALL = 1000
C_FILLS = 1001
C_EXEC_UNKNOWN_ORDER = 1002
C_MD = 1003
C_RESETS = 1004
C_EXEC_BAD = 1005
C_STALE = 1006  # stale episodes of instruments (each halted once)
C_FEED_GONE = 1007  # feed-gone episodes (global halted once each)
C_STALE_RELAXED = 1008  # stale halts undone by resumed data (instrument or global)
C_BOOK_STALE = 1009  # stale episodes started by md-flagged inconsistent books
C_BOOK_LEVELS = 1010  # BOOK_LEVEL records applied
C_BROKEN_FILLS = 1011  # EXEC_BROKEN reports whose fill was reversed (trade busts)
NC = 1024
MAX_BOOK_LEVELS = 256  # depth[inst, side, level]: book_level positions tracked per side

# --- reason codes as plain ints (compile-time constants) ---------------------------------------
R_OK = int(Code.OK)
R_UNKNOWN_INSTRUMENT = int(Code.UNKNOWN_INSTRUMENT)
R_MALFORMED = int(Code.MALFORMED_ROW)
R_INVALID_QTY = int(Code.INVALID_QTY)
R_NEGATIVE_PRICE = int(Code.NEGATIVE_PRICE)
R_STATE_HALTED = int(Code.STATE_HALTED)
R_STATE_REDUCING = int(Code.STATE_REDUCING)
R_MAX_ORDER_QTY = int(Code.MAX_ORDER_QTY)
R_LOT = int(Code.QTY_NOT_LOT_MULTIPLE)
R_NO_REFERENCE = int(Code.NO_REFERENCE_PRICE)
R_PRICE_BAND = int(Code.PRICE_BAND)
R_MAX_NOTIONAL = int(Code.MAX_NOTIONAL)
R_STOP_MISSING = int(Code.STOP_LOSS_MISSING)
R_STOP_WRONG_SIDE = int(Code.STOP_LOSS_WRONG_SIDE)
R_STOP_TOO_FAR = int(Code.STOP_LOSS_TOO_FAR)
R_POSITION_LIMIT = int(Code.POSITION_LIMIT)
R_GROSS_LIMIT = int(Code.GROSS_LIMIT)
R_MAX_OPEN_ORDERS = int(Code.MAX_OPEN_ORDERS)
R_DAILY_LOSS = int(Code.DAILY_LOSS)
R_DUPLICATE = int(Code.DUPLICATE_ORDER)
R_RATE_LIMIT = int(Code.RATE_LIMIT)
R_BREAKER_OPEN = int(Code.BREAKER_OPEN)
R_BOOK_LIQUIDITY = int(Code.BOOK_LIQUIDITY)
R_INTERNAL = int(Code.INTERNAL_ERROR)
R_STALE_FEED = int(Code.MARKET_DATA_STALE)  # reason of the stale-data halts

#: The state of one risk process, as the kernels take it (one argument, ``st``).
#:
#: ``inst`` int64[ids, NI], ``acct`` int64[NX], ``tat`` int64[strategies] (GCRA theoretical
#: arrival time per strategy, ns), ``orders`` int64[max_tracked_orders, NO] (u64 map),
#: ``seen`` / ``pend`` int64[targets] (last trading-state word seen, CANCEL_ALL queued),
#: ``brk_seen`` int64[breakers] (last OPEN epoch acted on), ``counters`` int64[NC],
#: ``scratch`` int64[2 * ids + 1] (apply_market_data's; the first ``ids`` words -1),
#: ``depth`` int64[ids, 2, MAX_BOOK_LEVELS] (book_level sizes per position); read-only
#: ``ilim`` / ``slim`` / ``alim`` / ``brk_scope`` (bot4.risk.limits.LimitArrays); shared
#: ``brk`` and ``trading`` (u64 words of the breaker and trading-state segments, or
#: process-local arrays laid out the same way).
RiskState = namedtuple(
    "RiskState",
    "inst acct tat orders seen pend brk_seen counters scratch depth "
    "ilim slim alim brk_scope brk trading",
)
