"""Pre-trade risk kernels: intents in, orders and decisions out; fills and market data in.

Three kernels share one process's state arrays (:class:`RiskBook` allocates and passes them):

* ``check_intents`` — every ORDER_INTENT gets a RISK_DECISION (ACCEPT, or DENY with the
  reason code, the value the rule measured and the limit it was held against); an accepted
  intent becomes an ORDER (``ACTION_NEW``, ``client_order_id = (intent producer << 48) |
  intent seq``, ``order_id`` 0 for the OMS, ``ts_risk_ns`` stamped).
* ``apply_fills`` — EXEC_REPORTs update positions, open quantities, cost and realised PnL,
  and (first answer per order) feed the order's breaker: ack or fill ok, reject failure.
* ``apply_market_data`` — MARKET_DATA sets reference prices (mid of the quotes, else the
  last trade) and marks positions to them (unrealised PnL, gross exposure); it also stamps
  each instrument's market-data arrival, which ends a stale-data halt (below).
* ``check_staleness`` — called between batches (no input needed): halts the instruments
  whose market data stopped, and global trading when all of it stopped.

Checks, in this order; the first that fails decides (checked / limit values in brackets):

1.  instrument known, side buy or sell, qty > 0, prices >= 0
    (UNKNOWN_INSTRUMENT [id, 0], MALFORMED_ROW [side, 0], INVALID_QTY [qty, 0],
    NEGATIVE_PRICE [price, 0])
2.  trading state, max(global, instrument): HALTED denies [state, 0]; REDUCING lets only
    position-reducing orders through [open qty on the order's side + qty, |position| if
    the order is against the position else 0]
3.  max order qty [qty, max]
4.  lot multiple [qty, lot]
5.  reference price, needed by market orders and by the price band: none [0, 0], or older
    than the max age [age ns, max age ns] -> NO_REFERENCE_PRICE
6.  price band of limit orders [|limit - ref|, band_bp * ref / 1e4 (floor)]
7.  max notional [qty * price, saturating at int64 max, max]
7b. visible liquidity, when ``max_book_take_pct`` > 0: qty at most that % of the visible
    size on the side the order trades against (asks for a buy), summed over the levels
    the book_level input carries (the md stage's rebuilt book) -> BOOK_LIQUIDITY
    [qty, pct * visible // 100]; no depth seen yet is no liquidity
8.  stop-loss: required for orders that add exposure when the strategy says so [0, 0];
    when given, below the entry for a buy / above for a sell [stop, entry] and at most
    max_stop_bp away [|entry - stop|, max_stop_bp * entry / 1e4 (floor)]
9.  position limit, worst case in the order's direction counting open orders
    [buy: position + open buys + qty; sell: open sells + qty - position, max]
10. gross limit, for orders that raise the instrument's worst-case |position| * mark
    [gross after, max]
11. max open orders, account then instrument [open + 1, max]
12. daily loss, for orders that add exposure: the loss since the daily reset
    (realised + unrealised) reaching the limit puts global trading in REDUCING
    [loss, limit]
13. duplicate client order id (a replayed intent still open) [intent seq, 0]
14. rate limit, per strategy token bucket (GCRA: one word per strategy)
    [bucket depth after this order, ns; burst * interval, ns]: their difference is how
    long until the order would pass
15. breaker of the instrument [breaker state, breaker index] — asked last, because a
    HALF_OPEN breaker admits this order as a probe, which must then really be sent.

"Entry" is the limit price, or the reference price for a market order. An order is
position-reducing when it is against the position and, with the open orders on its side,
does not flip it.

Kill switch: each kernel compares the trading-state generation with the last one it saw; a
target that became HALTED (or was set HALTED again) queues a CANCEL_ALL for that instrument
(0 = all: a global halt covers every instrument). Queued cancels are written before the
batch's orders into the room the batch does not need, and after them into what is left;
the rest wait for the next batch. With ``breaker_action = "halt"``, a breaker seen newly
OPEN halts what it guards (global if it guards every instrument) first.

Sequence numbers: one counter for both outputs. Per intent the decision takes ``seq`` and
an accepted order ``seq + 1``; each CANCEL_ALL takes one. A kernel consuming ``seq`` returns
counts whose sum is how far ``seq`` advanced.

Stale market data. Trip conditions cascade to what they protect, and no further: every
MARKET_DATA record of a known instrument stamps its arrival (``now_ns`` of the batch, the
host monotonic clock of this stage, not the record's md stamp: a stalled feed and a ring
that stops delivering look the same). ``check_staleness(now)`` then

* halts an instrument that has had market data and then none for longer than its
  ``stale_after_ms`` (``raise_state`` HALTED, reason ``R_STALE_FEED``, source risk): the
  kill switch above sends CANCEL_ALL for that instrument only. An instrument that never had
  data (since this process started) is never halted for staleness;
* halts global trading when the newest arrival of any instrument is older than
  ``feed_gone_after_ms`` (the feed is gone): CANCEL_ALL for all (target 0). Nothing is
  halted before the first record ever arrives.

Staleness is edge-triggered: one halt per stale episode, so an operator who resumes a stale
instrument by hand is not overridden until its data has come back and gone stale again.
The first record for the instrument after that ends the episode: ``relax_state`` undoes
the halt only if the word is still exactly the one this rule set (HALTED, R_STALE_FEED,
risk), so an operator's halt, a breaker's halt or anything set since is never undone. It
relaxes to ACTIVE, or to REDUCING when the halt escalated a REDUCING that no rule
re-asserts (an operator's; the daily-loss REDUCING is re-asserted by the daily-loss guard
in the same batch if the loss still holds, and is dropped if a daily reset passed in
between). Any record of any instrument ends a feed-gone halt the same way. A restarted
stage adopts the stale halts it finds in the trading state (they end when data resumes).

Inconsistent books. The md stage flags the market data of an instrument whose rebuilt book
is inconsistent (a gap: ``MDF_BOOK_STALE``, see :mod:`bot4.marketdata.builder`): such a
record starts a stale episode like a silent feed does (HALTED, ``R_STALE_FEED``, one halt
per episode, counted ``book_stale_episodes``), stamps the arrival but sets no price, and
the instrument's first unflagged record ends the episode as above.

PnL: a position keeps its signed cost (sum of qty * price of what is open). A fill that
reduces it releases cost pro rata, truncated toward zero, and realises the difference, so
the PnL of a round trip is exact once the position is flat. Fees are subtracted from
realised PnL. Unrealised = position * mark - cost; the mark is the reference price, else
the price of our last fill or accepted order. All money is int64 price units
(qty * price at the instruments' one price scale).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.records import (
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    DECISION_ACCEPT,
    DECISION_DENY,
    EXEC_ACK,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_CROSS_TRADE,
    MD_QUOTE,
    MD_TRADE,
    MDF_BOOK_STALE,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_REJECTED,
)
from bot4.records.errors import Code
from bot4.risk.accounting import average_cost_fill
from bot4.risk.limits import (
    A_BREAKER_FROM_EXECS,
    A_BREAKER_HALTS,
    A_DAILY_HALT,
    A_DAILY_LOSS,
    A_FEED_GONE_NS,
    A_INTENT_PRODUCER,
    A_MAX_GROSS,
    A_MAX_OPEN_ORDERS,
    A_REF_MAX_AGE_NS,
    A_RISK_PRODUCER,
    L_BAND_BP,
    L_BOOK_TAKE_PCT,
    L_BREAKER,
    L_KNOWN,
    L_LOT,
    L_MAX_NOTIONAL,
    L_MAX_OPEN_ORDERS,
    L_MAX_ORDER_QTY,
    L_MAX_POSITION,
    L_STALE_NS,
    S_BURST,
    S_INTERVAL_NS,
    S_MAX_STOP_BP,
    S_STOP_REQUIRED,
    LimitArrays,
)
from bot4.shm.breakers import OPEN as BRK_OPEN
from bot4.shm.breakers import (
    breaker_enter,
    breaker_record,
    breaker_release,
    breaker_state,
    breaker_state_word,
)
from bot4.shm.trading_state import (
    ACTIVE,
    HALTED,
    REASON_SHIFT,
    REDUCING,
    SOURCE_SHIFT,
    SRC_RISK,
    STATE_MASK,
    W_INSTRUMENTS,
    effective_state,
    raise_state,
    relax_state,
    state_generation,
    state_word,
)

__all__ = [
    "R_STALE_FEED",
    "RiskBook",
    "apply_book_levels",
    "apply_fills",
    "apply_market_data",
    "check_intents",
    "check_staleness",
    "poll_states",
]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
SEQ_MASK = (1 << 48) - 1

# reason codes as plain ints (compile-time constants)
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
# reason of the stale-data halts (instrument and feed-gone). No dedicated code exists yet;
# NO_REFERENCE_PRICE ("no market price to check the order against") is the closest.
R_STALE_FEED = int(Code.MARKET_DATA_STALE)

# inst[instrument id, I_*]: per-instrument state
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
# acct[X_*]: account state
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
# vals[slot, O_*]: the open-order table (keys: client_order_id, 0 = empty slot)
O_INST = 0
O_SIDE = 1
O_OPEN = 2  # shares still working as we know it
O_ANSWERED = 3  # 1 once the first ack / fill / reject fed the breaker
NO = 4
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
NC = 1024


# --- arithmetic -------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _mul_sat(a, b):
    """a * b, saturating at +-INT64_MAX instead of wrapping."""
    if a == 0 or b == 0:
        return np.int64(0)
    neg = (a < 0) != (b < 0)
    if a == INT64_MIN or b == INT64_MIN or abs(a) > INT64_MAX // abs(b):
        return -INT64_MAX if neg else INT64_MAX
    return a * b


@njit(nogil=True, cache=True)
def _add_sat(a, b):
    s = a + b
    if a > 0 and b > 0 and s < 0:
        return INT64_MAX
    if a < 0 and b < 0 and s >= 0:
        return -INT64_MAX
    return s


@njit(nogil=True, cache=True)
def _gross_qty(pos, open_buy, open_sell):
    return max(abs(pos + open_buy), abs(pos - open_sell))


# --- the open-order table (linear probing, backward-shift delete) -----------------------------


@njit(nogil=True, cache=True)
def _home(key, mask):
    z = key * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((z ^ (z >> np.uint64(29))) & np.uint64(mask))


@njit(nogil=True, cache=True)
def order_find(keys, key):
    """Slot of ``key`` (a client_order_id) in the open-order table, -1 if absent."""
    if key == 0:
        return -1
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    for _ in range(keys.shape[0]):
        k = keys[i]
        if k == key:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask
    return -1


@njit(nogil=True, cache=True)
def _order_insert(keys, vals, key, inst, side, qty):
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    for _ in range(keys.shape[0]):
        if keys[i] == 0:
            keys[i] = key
            vals[i, O_INST] = inst
            vals[i, O_SIDE] = side
            vals[i, O_OPEN] = qty
            vals[i, O_ANSWERED] = 0
            return i
        i = (i + 1) & mask
    return -1


@njit(nogil=True, cache=True)
def _order_remove(keys, vals, i):
    mask = keys.shape[0] - 1
    keys[i] = 0
    j = i
    while True:
        j = (j + 1) & mask
        if keys[j] == 0:
            return
        h = _home(keys[j], mask)
        stays = i < h and h <= j if i <= j else h > i or h <= j
        if stays:
            continue
        keys[i] = keys[j]
        for c in range(NO):
            vals[i, c] = vals[j, c]
        keys[j] = 0
        i = j


# --- positions and marks ----------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _remark(inst_st, acct, inst):
    """Recompute the instrument's unrealised PnL and gross exposure, and the totals."""
    mark = inst_st[inst, I_REF]
    if mark <= 0:
        mark = inst_st[inst, I_LAST_PX]
    pos = inst_st[inst, I_POS]
    unreal = np.int64(0)
    if pos != 0:
        unreal = _add_sat(_mul_sat(pos, mark), -inst_st[inst, I_COST])
    gross = _mul_sat(_gross_qty(pos, inst_st[inst, I_OPEN_BUY], inst_st[inst, I_OPEN_SELL]), mark)
    acct[X_UNREALISED] += unreal - inst_st[inst, I_UNREALISED]
    acct[X_GROSS] += gross - inst_st[inst, I_GROSS]
    inst_st[inst, I_UNREALISED] = unreal
    inst_st[inst, I_GROSS] = gross


@njit(nogil=True, cache=True)
def _apply_fill(inst_st, acct, inst, side, qty, px, fee):
    before = inst_st[inst, I_REALISED]
    p, c, realised, _closed = average_cost_fill(
        inst_st[inst, I_POS], inst_st[inst, I_COST], qty * side, px
    )
    inst_st[inst, I_POS] = p
    inst_st[inst, I_COST] = c
    inst_st[inst, I_REALISED] += realised - fee
    inst_st[inst, I_FEES] += fee
    inst_st[inst, I_LAST_PX] = px
    acct[X_REALISED] += inst_st[inst, I_REALISED] - before


# --- daily loss, trading states, kill switch --------------------------------------------------


@njit(nogil=True, cache=True)
def _daily_loss(acct):
    return acct[X_DAY_START] - (acct[X_REALISED] + acct[X_UNREALISED])


@njit(nogil=True, cache=True)
def _daily_guard(acct, alim, trading):
    """Escalate global trading if the loss since the reset reached a limit; returns the loss."""
    loss = _daily_loss(acct)
    halt = alim[A_DAILY_HALT]
    if halt > 0 and loss >= halt:
        raise_state(trading, 0, HALTED, R_DAILY_LOSS, SRC_RISK)
    limit = alim[A_DAILY_LOSS]
    if limit > 0 and loss >= limit:
        raise_state(trading, 0, REDUCING, R_DAILY_LOSS, SRC_RISK)
    return loss


@njit(nogil=True, cache=True)
def _maybe_reset(acct, trading, counters, now_ns):
    nxt = acct[X_NEXT_RESET_NS]
    if nxt > 0 and now_ns >= nxt:
        acct[X_DAY_START] = acct[X_REALISED] + acct[X_UNREALISED]
        acct[X_LAST_RESET_NS] = nxt
        acct[X_NEXT_RESET_NS] = 0
        relax_state(trading, 0, REDUCING, R_DAILY_LOSS, SRC_RISK, ACTIVE)
        counters[C_RESETS] += 1


@njit(nogil=True, cache=True)
def _stale_halt(trading, target):
    """Halt ``target`` for stale data; returns its stale flag: 1 + the state to relax to."""
    w = state_word(trading, target)
    prev = raise_state(trading, target, HALTED, R_STALE_FEED, SRC_RISK)
    if prev == REDUCING and w & STATE_MASK == REDUCING:
        by_daily_loss = (w >> REASON_SHIFT) & 0xFFFF == R_DAILY_LOSS and (
            w >> SOURCE_SHIFT
        ) & 0xFF == SRC_RISK
        if not by_daily_loss:  # nothing would re-assert it: keep it
            return 1 + REDUCING
    return 1 + ACTIVE


@njit(nogil=True, cache=True)
def _md_arrived(inst_st, acct, counters, trading, inst, now_ns):
    """Stamp a market-data arrival for ``inst``; end its stale episode and a feed-gone one."""
    t = max(now_ns, np.int64(1))
    inst_st[inst, I_MD_NS] = t
    if t > acct[X_LAST_MD_NS]:
        acct[X_LAST_MD_NS] = t
    f = inst_st[inst, I_STALE]
    if f != 0:
        inst_st[inst, I_STALE] = 0
        if relax_state(trading, inst, HALTED, R_STALE_FEED, SRC_RISK, f - 1):
            counters[C_STALE_RELAXED] += 1
    g = acct[X_FEED_GONE]
    if g != 0:
        acct[X_FEED_GONE] = 0
        if relax_state(trading, 0, HALTED, R_STALE_FEED, SRC_RISK, g - 1):
            counters[C_STALE_RELAXED] += 1


@njit(nogil=True, cache=True)
def check_staleness(now_ns, inst_st, acct, n_targets, counters, ilim, alim, trading):
    """Halt the instruments whose market data stopped (``L_STALE_NS``) and global trading if
    all of it stopped (``A_FEED_GONE_NS``); returns the stale episodes started now. The
    CANCEL_ALLs follow from the kill switch at the next poll."""
    started = 0
    for inst in range(1, min(ilim.shape[0], n_targets)):
        lim = ilim[inst, L_STALE_NS]
        last = inst_st[inst, I_MD_NS]
        if lim <= 0 or last == 0 or inst_st[inst, I_STALE] != 0 or now_ns - last <= lim:
            continue
        inst_st[inst, I_STALE] = _stale_halt(trading, inst)
        counters[C_STALE] += 1
        started += 1
    gone = alim[A_FEED_GONE_NS]
    last = acct[X_LAST_MD_NS]
    if gone > 0 and last > 0 and acct[X_FEED_GONE] == 0 and now_ns - last > gone:
        acct[X_FEED_GONE] = _stale_halt(trading, 0)
        counters[C_FEED_GONE] += 1
        started += 1
    return started


@njit(nogil=True, cache=True)
def _poll(trading, seen, pend, brk_seen, brk_scope, ilim, alim, acct, brk):
    """Breakers newly OPEN halt what they guard (``breaker_action = "halt"``); targets that
    became HALTED queue a CANCEL_ALL."""
    if alim[A_BREAKER_HALTS] != 0:
        for b in range(brk_scope.shape[0]):
            if brk_scope[b] < 0:
                continue
            w = breaker_state_word(brk, b)
            if w & 0xFF != BRK_OPEN or (w >> 16) == brk_seen[b]:
                continue
            brk_seen[b] = w >> 16
            if brk_scope[b] == 1:
                raise_state(trading, 0, HALTED, R_BREAKER_OPEN, SRC_RISK)
            else:
                for inst in range(1, seen.shape[0]):
                    if ilim[inst, L_BREAKER] == b:
                        raise_state(trading, inst, HALTED, R_BREAKER_OPEN, SRC_RISK)
    gen = state_generation(trading)
    if gen == acct[X_TS_GEN]:
        return
    acct[X_TS_GEN] = gen
    for t in range(seen.shape[0]):
        w = state_word(trading, t)
        if w == seen[t]:
            continue
        seen[t] = w
        if w & 0xFF == HALTED and pend[t] == 0:
            pend[t] = 1
            acct[X_PENDING] += 1


@njit(nogil=True, cache=True)
def _clear_order(o):
    o.parent_seq = 0
    o.ts_event_ns = 0
    o.ts_recv_ns = 0
    o.ts_signal_ns = 0
    o.ts_order_ns = 0
    o.orig_client_order_id = 0
    o.order_id = 0
    o.qty = 0
    o.limit_price = 0
    o.stop_price = 0
    o.strategy = 0
    o.side = 0
    o.order_type = 0
    o.tif = 0
    o.stp_mode = 0
    o.stp_group = 0
    o.model_id = 0
    for j in range(o.reserved.shape[0]):
        o.reserved[j] = 0
    for j in range(o.reserved2.shape[0]):
        o.reserved2[j] = 0


@njit(nogil=True, cache=True)
def _emit_cancels(out, n, end, s, now_ns, pend, acct, alim, counters):
    """Write queued CANCEL_ALLs into ``out[n:end]``; returns (n, s) after them."""
    if acct[X_PENDING] == 0:
        return n, s
    producer = np.uint64(alim[A_RISK_PRODUCER]) << np.uint64(48)
    for t in range(pend.shape[0]):
        if n >= end:
            break
        if pend[t] == 0:
            continue
        o = out[n]
        _clear_order(o)
        o.seq = s
        o.client_order_id = producer | np.uint64(s & SEQ_MASK)
        o.ts_risk_ns = now_ns
        o.instrument = t
        o.action = ACTION_CANCEL_ALL
        pend[t] = 0
        acct[X_PENDING] -= 1
        counters[C_CANCEL_ALL] += 1
        n += 1
        s += 1
        if t == 0:  # cancels every instrument: the per-instrument ones are covered
            for u in range(1, pend.shape[0]):
                if pend[u] != 0:
                    pend[u] = 0
                    acct[X_PENDING] -= 1
            break
    return n, s


# --- intents ----------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _check(r, now_ns, coid, inst_st, acct, tat, keys, ilim, slim, alim, brk, trading):
    """(reason, checked, limit, entry price, breaker ticket) for one intent."""
    inst = np.int64(r.instrument)
    if inst <= 0 or inst >= ilim.shape[0] or ilim[inst, L_KNOWN] == 0:
        return R_UNKNOWN_INSTRUMENT, inst, 0, 0, 0
    side = np.int64(r.side)
    q = r.qty
    if side != 1 and side != -1:
        return R_MALFORMED, side, 0, 0, 0
    if q <= 0:
        return R_INVALID_QTY, q, 0, 0, 0
    if r.limit_price < 0 or r.stop_price < 0:
        return R_NEGATIVE_PRICE, min(r.limit_price, r.stop_price), 0, 0, 0
    pos = inst_st[inst, I_POS]
    open_buy = inst_st[inst, I_OPEN_BUY]
    open_sell = inst_st[inst, I_OPEN_SELL]
    same_open = open_buy if side > 0 else open_sell
    reducible = abs(pos) if (pos > 0 and side < 0) or (pos < 0 and side > 0) else 0
    reducing = same_open + q <= reducible
    # 2 trading state
    ts = effective_state(trading, inst)
    if ts == HALTED:
        return R_STATE_HALTED, ts, 0, 0, 0
    if ts == REDUCING and not reducing:
        return R_STATE_REDUCING, same_open + q, reducible, 0, 0
    # 3, 4 size
    if q > ilim[inst, L_MAX_ORDER_QTY]:
        return R_MAX_ORDER_QTY, q, ilim[inst, L_MAX_ORDER_QTY], 0, 0
    if q % ilim[inst, L_LOT] != 0:
        return R_LOT, q, ilim[inst, L_LOT], 0, 0
    # 5, 6 reference price and band
    ref = inst_st[inst, I_REF]
    band = ilim[inst, L_BAND_BP]
    if r.limit_price == 0 or band > 0:
        if ref <= 0:
            return R_NO_REFERENCE, 0, 0, 0, 0
        max_age = alim[A_REF_MAX_AGE_NS]
        age = now_ns - inst_st[inst, I_REF_NS]
        if max_age > 0 and age > max_age:
            return R_NO_REFERENCE, age, max_age, 0, 0
    px = r.limit_price if r.limit_price > 0 else ref
    if r.limit_price > 0 and band > 0:
        dev = abs(r.limit_price - ref)
        allowed = _mul_sat(band, ref) // 10_000
        if dev > allowed:
            return R_PRICE_BAND, dev, allowed, px, 0
    # 7 notional
    notional = _mul_sat(q, px)
    if notional > ilim[inst, L_MAX_NOTIONAL]:
        return R_MAX_NOTIONAL, notional, ilim[inst, L_MAX_NOTIONAL], px, 0
    # 7b visible liquidity on the side the order trades against
    take = ilim[inst, L_BOOK_TAKE_PCT]
    if take > 0:
        visible = inst_st[inst, I_DEPTH_ASK if side > 0 else I_DEPTH_BID]
        allowed = _mul_sat(take, visible) // 100
        if q > allowed:
            return R_BOOK_LIQUIDITY, q, allowed, px, 0
    # 8 stop-loss
    srow = np.int64(r.strategy)
    if srow >= slim.shape[0]:
        srow = 0
    stop = r.stop_price
    if stop == 0:
        if slim[srow, S_STOP_REQUIRED] != 0 and not reducing:
            return R_STOP_MISSING, 0, 0, px, 0
    else:
        if (side > 0 and stop >= px) or (side < 0 and stop <= px):
            return R_STOP_WRONG_SIDE, stop, px, px, 0
        max_bp = slim[srow, S_MAX_STOP_BP]
        if max_bp > 0:
            dist = abs(px - stop)
            max_dist = _mul_sat(max_bp, px) // 10_000
            if dist > max_dist:
                return R_STOP_TOO_FAR, dist, max_dist, px, 0
    # 9 position, worst case in the order's direction
    worst = pos + open_buy + q if side > 0 else open_sell + q - pos
    if worst > ilim[inst, L_MAX_POSITION]:
        return R_POSITION_LIMIT, worst, ilim[inst, L_MAX_POSITION], px, 0
    # 10 gross
    mark = ref if ref > 0 else inst_st[inst, I_LAST_PX]
    if mark <= 0:
        mark = px
    new_buy = open_buy + q if side > 0 else open_buy
    new_sell = open_sell + q if side < 0 else open_sell
    new_gross = _mul_sat(_gross_qty(pos, new_buy, new_sell), mark)
    if new_gross > inst_st[inst, I_GROSS]:
        total = _add_sat(acct[X_GROSS] - inst_st[inst, I_GROSS], new_gross)
        if total > alim[A_MAX_GROSS]:
            return R_GROSS_LIMIT, total, alim[A_MAX_GROSS], px, 0
    # 11 open orders
    if acct[X_OPEN_ORDERS] >= alim[A_MAX_OPEN_ORDERS]:
        return R_MAX_OPEN_ORDERS, acct[X_OPEN_ORDERS] + 1, alim[A_MAX_OPEN_ORDERS], px, 0
    if inst_st[inst, I_OPEN_ORDERS] >= ilim[inst, L_MAX_OPEN_ORDERS]:
        return (
            R_MAX_OPEN_ORDERS,
            inst_st[inst, I_OPEN_ORDERS] + 1,
            ilim[inst, L_MAX_OPEN_ORDERS],
            px,
            0,
        )
    # 12 daily loss
    if not reducing:
        loss = _daily_guard(acct, alim, trading)
        limit = alim[A_DAILY_LOSS]
        if limit > 0 and loss >= limit:
            return R_DAILY_LOSS, loss, limit, px, 0
        halt = alim[A_DAILY_HALT]
        if halt > 0 and loss >= halt:
            return R_DAILY_LOSS, loss, halt, px, 0
    # 13 duplicate
    if order_find(keys, coid) >= 0:
        return R_DUPLICATE, np.int64(r.seq & np.uint64(SEQ_MASK)), 0, px, 0
    # 14 rate (tested here, committed by the caller once the breaker admits the order)
    interval = slim[srow, S_INTERVAL_NS]
    if interval > 0:
        depth = max(tat[srow], now_ns) + interval - now_ns
        cap = slim[srow, S_BURST] * interval
        if depth > cap:
            return R_RATE_LIMIT, depth, cap, px, 0
    # 15 breaker
    b = ilim[inst, L_BREAKER]
    ticket = np.int64(-1)
    if b >= 0:
        ticket = breaker_enter(brk, b, now_ns)
        if ticket == 0:
            return R_BREAKER_OPEN, breaker_state(brk, b), b, px, 0
    return R_OK, 0, 0, px, ticket


@njit(nogil=True, cache=True)
def check_intents(
    intents,
    out_orders,
    out_decisions,
    seq,
    now_ns,
    inst_st,
    acct,
    tat,
    keys,
    vals,
    seen,
    pend,
    brk_seen,
    counters,
    ilim,
    slim,
    alim,
    brk_scope,
    brk,
    trading,
):
    """Decide every intent; returns (orders written, decisions written).

    ``out_orders`` needs room for the accepted intents plus any CANCEL_ALLs (what is left
    after ``len(intents)`` slots is used for them); ``out_decisions`` for one per intent.
    Records are numbered from ``seq`` and use ``n_orders + n_decisions`` numbers.
    """
    _maybe_reset(acct, trading, counters, now_ns)
    _poll(trading, seen, pend, brk_seen, brk_scope, ilim, alim, acct, brk)
    k_in = intents.shape[0]
    n_o, s = _emit_cancels(
        out_orders, 0, out_orders.shape[0] - k_in, seq, now_ns, pend, acct, alim, counters
    )
    n_d = 0
    producer = np.uint64(alim[A_INTENT_PRODUCER]) << np.uint64(48)
    for k in range(k_in):
        r = intents[k]
        coid = producer | (r.seq & np.uint64(SEQ_MASK))
        reason, checked, limit, px, ticket = _check(
            r, now_ns, coid, inst_st, acct, tat, keys, ilim, slim, alim, brk, trading
        )
        inst = np.int64(r.instrument)
        pos = np.int64(0)
        if reason != R_UNKNOWN_INSTRUMENT:
            pos = inst_st[inst, I_POS]
        if reason == R_OK:
            slot = _order_insert(keys, vals, coid, inst, np.int64(r.side), r.qty)
            if slot < 0:  # unreachable: the table holds twice the open-order limit
                if ticket > 0:
                    breaker_release(brk, ilim[inst, L_BREAKER], ticket)
                reason = R_INTERNAL
        d = out_decisions[n_d]
        d.seq = s
        d.parent_seq = r.seq
        d.ts_event_ns = r.ts_event_ns
        d.ts_recv_ns = r.ts_recv_ns
        d.ts_signal_ns = r.ts_signal_ns
        d.ts_risk_ns = now_ns
        d.intent_seq = r.seq
        d.qty = r.qty
        d.limit_price = r.limit_price
        d.stop_price = r.stop_price
        d.position = pos
        d.exposure = _mul_sat(_add_sat(pos, r.qty * np.int64(r.side)), px)
        d.checked_value = checked
        d.limit_value = limit
        d.intent_producer = alim[A_INTENT_PRODUCER]
        d.instrument = r.instrument
        d.strategy = r.strategy
        d.reason = reason
        d.side = r.side
        d.decision = DECISION_ACCEPT if reason == R_OK else DECISION_DENY
        for j in range(d.reserved.shape[0]):
            d.reserved[j] = 0
        n_d += 1
        s += 1
        counters[reason] += 1
        if reason != R_OK:
            continue
        srow = np.int64(r.strategy)
        if srow >= slim.shape[0]:
            srow = 0
        interval = slim[srow, S_INTERVAL_NS]
        if interval > 0:
            tat[srow] = max(tat[srow], now_ns) + interval
        if r.side > 0:
            inst_st[inst, I_OPEN_BUY] += r.qty
        else:
            inst_st[inst, I_OPEN_SELL] += r.qty
        inst_st[inst, I_OPEN_ORDERS] += 1
        acct[X_OPEN_ORDERS] += 1
        inst_st[inst, I_LAST_PX] = px
        _remark(inst_st, acct, inst)
        o = out_orders[n_o]
        _clear_order(o)
        o.seq = s
        o.parent_seq = r.seq
        o.ts_event_ns = r.ts_event_ns
        o.ts_recv_ns = r.ts_recv_ns
        o.ts_signal_ns = r.ts_signal_ns
        o.ts_risk_ns = now_ns
        o.client_order_id = coid
        o.qty = r.qty
        o.limit_price = r.limit_price
        o.stop_price = r.stop_price
        o.instrument = r.instrument
        o.strategy = r.strategy
        o.side = r.side
        o.order_type = r.order_type
        o.tif = r.tif
        o.model_id = r.model_version  # which model decided travels with the order
        o.action = ACTION_NEW
        n_o += 1
        s += 1
    _poll(trading, seen, pend, brk_seen, brk_scope, ilim, alim, acct, brk)
    n_o, s = _emit_cancels(
        out_orders, n_o, out_orders.shape[0], s, now_ns, pend, acct, alim, counters
    )
    return n_o, n_d


# --- fills and market data --------------------------------------------------------------------


@njit(nogil=True, cache=True)
def apply_book_levels(levels, depth, inst_st, ilim, counters):
    """BOOK_LEVEL records into ``depth`` (n_inst, 2, max levels) int64 sizes per position
    (row 0 bids, 1 asks), keeping ``I_DEPTH_BID`` / ``I_DEPTH_ASK`` the sums over them.
    Positions beyond ``depth``'s and unknown instruments are ignored."""
    n_inst = ilim.shape[0]
    for k in range(levels.shape[0]):
        r = levels[k]
        inst = np.int64(r.instrument)
        lvl = np.int64(r.level)
        if inst <= 0 or inst >= n_inst or ilim[inst, L_KNOWN] == 0 or lvl >= depth.shape[2]:
            continue
        if r.side > 0:
            s, col = 0, I_DEPTH_BID
        elif r.side < 0:
            s, col = 1, I_DEPTH_ASK
        else:
            continue
        q = max(r.qty, np.int64(0))
        inst_st[inst, col] += q - depth[inst, s, lvl]
        depth[inst, s, lvl] = q
        counters[C_BOOK_LEVELS] += 1


@njit(nogil=True, cache=True)
def apply_fills(
    execs,
    out_orders,
    seq,
    now_ns,
    inst_st,
    acct,
    keys,
    vals,
    seen,
    pend,
    brk_seen,
    counters,
    ilim,
    alim,
    brk_scope,
    brk,
    trading,
):
    """Apply execution reports; returns the CANCEL_ALLs written to ``out_orders``.

    A report for an order in the open-order table sets its open quantity to ``leaves_qty``
    (0 once the status is FILLED, CANCELLED, REJECTED or EXPIRED, which also closes it);
    ``last_qty > 0`` is a fill at ``last_price`` on the report's side, with ``fee``.
    Reports for orders not in the table (sent before a restart) still move the position.
    """
    _maybe_reset(acct, trading, counters, now_ns)
    feed = alim[A_BREAKER_FROM_EXECS] != 0
    for k in range(execs.shape[0]):
        r = execs[k]
        inst = np.int64(r.instrument)
        side = np.int64(r.side)
        slot = order_find(keys, r.client_order_id)
        if slot >= 0:
            inst = vals[slot, O_INST]
            side = vals[slot, O_SIDE]
            status = r.status
            closed = status in (OS_FILLED, OS_CANCELLED, OS_REJECTED, OS_EXPIRED)
            left = np.int64(0) if closed else max(r.leaves_qty, 0)
            delta = left - vals[slot, O_OPEN]
            if side > 0:
                inst_st[inst, I_OPEN_BUY] += delta
            else:
                inst_st[inst, I_OPEN_SELL] += delta
            vals[slot, O_OPEN] = left
            et = r.exec_type
            if vals[slot, O_ANSWERED] == 0 and (
                et in (EXEC_ACK, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REJECTED)
            ):
                vals[slot, O_ANSWERED] = 1
                b = ilim[inst, L_BREAKER]
                if feed and b >= 0:
                    breaker_record(brk, b, et != EXEC_REJECTED, now_ns)
            if closed:
                _order_remove(keys, vals, slot)
                inst_st[inst, I_OPEN_ORDERS] -= 1
                acct[X_OPEN_ORDERS] -= 1
        else:
            if inst <= 0 or inst >= ilim.shape[0] or ilim[inst, L_KNOWN] == 0 or side == 0:
                counters[C_EXEC_BAD] += 1
                continue
            counters[C_EXEC_UNKNOWN_ORDER] += 1
        if r.last_qty > 0:
            _apply_fill(inst_st, acct, inst, side, r.last_qty, r.last_price, r.fee)
            counters[C_FILLS] += 1
        _remark(inst_st, acct, inst)
    return _after_batch(
        out_orders,
        seq,
        now_ns,
        trading,
        seen,
        pend,
        brk_seen,
        brk_scope,
        ilim,
        alim,
        acct,
        brk,
        counters,
    )


@njit(nogil=True, cache=True)
def _after_batch(
    out_orders,
    seq,
    now_ns,
    trading,
    seen,
    pend,
    brk_seen,
    brk_scope,
    ilim,
    alim,
    acct,
    brk,
    counters,
):
    """What every batch that moves PnL or state ends with: the daily-loss guard, the state
    poll, and the CANCEL_ALLs they call for; returns the number of orders written."""
    _daily_guard(acct, alim, trading)
    _poll(trading, seen, pend, brk_seen, brk_scope, ilim, alim, acct, brk)
    n, _ = _emit_cancels(
        out_orders, 0, out_orders.shape[0], seq, now_ns, pend, acct, alim, counters
    )
    return n


@njit(nogil=True, cache=True)
def apply_market_data(
    md,
    out_orders,
    seq,
    now_ns,
    inst_st,
    acct,
    seen,
    pend,
    brk_seen,
    counters,
    ilim,
    alim,
    brk_scope,
    brk,
    trading,
    scratch,
):
    """Update reference prices and marks; returns the CANCEL_ALLs written to ``out_orders``.

    Quotes set the bid or ask (qty 0 empties the side); trades (trade prints, crosses,
    book executions) set the last trade. The reference is the mid when both sides are
    known and not crossed, else the last trade. Every record of a known instrument, of any
    kind, stamps its arrival (and ends a stale-data halt: see the module docstring); a
    record flagged ``MDF_BOOK_STALE`` instead starts one and sets no price.

    Per batch, the arrival is stamped at an instrument's first record (the batch has one
    ``now_ns``: the later stamps would change nothing), and its reference, reference stamp
    and marks are computed once, from its last record that sets a price (nothing reads
    them in between, and the sums of the marks telescope): the same state as record by
    record. ``scratch``: int64 ``[2 * instruments + 1]``, the first ``instruments``
    words -1 (left so).
    """
    _maybe_reset(acct, trading, counters, now_ns)
    n_inst = ilim.shape[0]
    n_touched = 0
    for k in range(md.shape[0]):
        r = md[k]
        inst = np.int64(r.instrument)
        if inst <= 0 or inst >= n_inst or ilim[inst, L_KNOWN] == 0:
            continue
        if r.flags & MDF_BOOK_STALE:
            # the md stage's book is inconsistent: the data arrives but is not to be used
            t = max(now_ns, np.int64(1))
            inst_st[inst, I_MD_NS] = t
            if t > acct[X_LAST_MD_NS]:
                acct[X_LAST_MD_NS] = t
            if inst_st[inst, I_STALE] == 0:
                inst_st[inst, I_STALE] = _stale_halt(trading, inst)
                counters[C_BOOK_STALE] += 1
            if scratch[inst] != -1:
                scratch[inst] = -2  # an earlier record's price in this batch is not used
            continue
        if scratch[inst] == -1:  # the instrument's first record in this batch
            _md_arrived(inst_st, acct, counters, trading, inst, now_ns)
            scratch[n_inst + 1 + n_touched] = inst
            n_touched += 1
            scratch[inst] = -2  # arrived; no price set yet
        kind = r.kind
        if kind == MD_QUOTE:
            px = r.price if r.qty > 0 and r.price > 0 else 0
            if r.side > 0:
                inst_st[inst, I_BID] = px
            elif r.side < 0:
                inst_st[inst, I_ASK] = px
            else:
                continue
        elif kind in (MD_TRADE, MD_CROSS_TRADE, MD_BOOK_EXEC, MD_BOOK_HIDDEN_EXEC):
            if r.price <= 0:
                continue
            inst_st[inst, I_LAST_TRADE] = r.price
        else:
            continue
        scratch[inst] = k
        counters[C_MD] += 1
    for t in range(n_touched):
        inst = scratch[n_inst + 1 + t]
        last = scratch[inst]
        scratch[inst] = -1
        if last < 0:
            continue
        r = md[last]
        bid = inst_st[inst, I_BID]
        ask = inst_st[inst, I_ASK]
        ref = (bid + ask) // 2 if bid > 0 and ask > bid else inst_st[inst, I_LAST_TRADE]
        inst_st[inst, I_REF] = ref
        inst_st[inst, I_REF_NS] = r.ts_recv_ns if r.ts_recv_ns > 0 else now_ns
        _remark(inst_st, acct, inst)
    return _after_batch(
        out_orders,
        seq,
        now_ns,
        trading,
        seen,
        pend,
        brk_seen,
        brk_scope,
        ilim,
        alim,
        acct,
        brk,
        counters,
    )


@njit(nogil=True, cache=True)
def poll_states(acct, seen, pend, brk_seen, ilim, alim, brk_scope, brk, trading):
    """Look at the breakers and trading states now (outside any batch); returns the number
    of CANCEL_ALLs queued."""
    _poll(trading, seen, pend, brk_seen, brk_scope, ilim, alim, acct, brk)
    return acct[X_PENDING]


# --- Python side ------------------------------------------------------------------------------


class RiskBook:
    """The state of one risk process and the calls into its kernels.

    ``brk`` and ``trading`` are the u64 words of the breaker and trading-state segments
    (or process-local arrays laid out the same way). Everything else is process-local and
    written only by this process.
    """

    def __init__(
        self,
        arrays: LimitArrays,
        brk: np.ndarray,
        trading: np.ndarray,
        max_tracked_orders: int,
    ) -> None:
        self.arrays = arrays
        self.ilim, self.slim, self.alim = arrays.ilim, arrays.slim, arrays.alim
        self.brk_scope = arrays.breaker_scope
        self.brk = brk
        self.trading = trading
        n_inst = self.ilim.shape[0]
        n_targets = min(n_inst, int(trading[W_INSTRUMENTS]) + 1)
        self.inst = np.zeros((n_inst, NI), np.int64)
        self.acct = np.zeros(NX, np.int64)
        self.acct[X_TS_GEN] = -1
        self.tat = np.zeros(self.slim.shape[0], np.int64)
        self.keys = np.zeros(max_tracked_orders, np.uint64)
        self.vals = np.zeros((max_tracked_orders, NO), np.int64)
        self.seen = np.full(n_targets, -1, np.int64)
        self.pend = np.zeros(n_targets, np.int64)
        self.brk_seen = np.full(self.brk_scope.shape[0], -1, np.int64)
        self.counters = np.zeros(NC, np.int64)
        self.n_targets = n_targets
        self.md_scratch = np.full(2 * n_inst + 1, -1, np.int64)  # apply_market_data's
        self.depth = np.zeros((n_inst, 2, 256), np.int64)  # book_level sizes per position
        self._adopt_stale_halts()

    def _adopt_stale_halts(self) -> None:
        """A restarted stage takes over the stale-data halts its predecessor left, so data
        resuming ends them (it has no arrival times: none is halted again until data comes)."""
        for t in range(self.n_targets):
            w = int(state_word(self.trading, t))
            if (
                w & STATE_MASK == HALTED
                and (w >> REASON_SHIFT) & 0xFFFF == R_STALE_FEED
                and (w >> SOURCE_SHIFT) & 0xFF == SRC_RISK
            ):
                if t == 0:
                    self.acct[X_FEED_GONE] = 1 + ACTIVE
                else:
                    self.inst[t, I_STALE] = 1 + ACTIVE

    def check(self, intents, out_orders, out_decisions, seq: int, now_ns: int) -> tuple[int, int]:
        n_o, n_d = check_intents(
            intents,
            out_orders,
            out_decisions,
            seq,
            now_ns,
            self.inst,
            self.acct,
            self.tat,
            self.keys,
            self.vals,
            self.seen,
            self.pend,
            self.brk_seen,
            self.counters,
            self.ilim,
            self.slim,
            self.alim,
            self.brk_scope,
            self.brk,
            self.trading,
        )
        return int(n_o), int(n_d)

    def fills(self, execs, out_orders, seq: int, now_ns: int) -> int:
        return int(
            apply_fills(
                execs,
                out_orders,
                seq,
                now_ns,
                self.inst,
                self.acct,
                self.keys,
                self.vals,
                self.seen,
                self.pend,
                self.brk_seen,
                self.counters,
                self.ilim,
                self.alim,
                self.brk_scope,
                self.brk,
                self.trading,
            )
        )

    def market_data(self, md, out_orders, seq: int, now_ns: int) -> int:
        return int(
            apply_market_data(
                md,
                out_orders,
                seq,
                now_ns,
                self.inst,
                self.acct,
                self.seen,
                self.pend,
                self.brk_seen,
                self.counters,
                self.ilim,
                self.alim,
                self.brk_scope,
                self.brk,
                self.trading,
                self.md_scratch,
            )
        )

    def book_levels(self, levels, out_orders, seq: int, now_ns: int) -> int:
        """Apply BOOK_LEVEL records (the liquidity check's depth); writes no order."""
        apply_book_levels(levels, self.depth, self.inst, self.ilim, self.counters)
        return 0

    def poll(self) -> int:
        """Queue CANCEL_ALLs for states that became HALTED; returns how many are queued."""
        return int(
            poll_states(
                self.acct,
                self.seen,
                self.pend,
                self.brk_seen,
                self.ilim,
                self.alim,
                self.brk_scope,
                self.brk,
                self.trading,
            )
        )

    def staleness(self, now_ns: int) -> int:
        """Halt what has gone stale by ``now_ns`` (see the module docstring); returns the
        stale episodes started. Call :meth:`poll` after it to queue the CANCEL_ALLs."""
        return int(
            check_staleness(
                now_ns,
                self.inst,
                self.acct,
                self.n_targets,
                self.counters,
                self.ilim,
                self.alim,
                self.trading,
            )
        )

    def stale(self) -> dict:
        """Instruments in a stale episode, whether the feed is gone, and the counts."""
        return {
            "instruments": [int(i) for i in np.nonzero(self.inst[:, I_STALE])[0]],
            "feed_gone": bool(self.acct[X_FEED_GONE]),
            "stale_episodes": int(self.counters[C_STALE]),
            "feed_gone_episodes": int(self.counters[C_FEED_GONE]),
            "relaxed": int(self.counters[C_STALE_RELAXED]),
            "book_stale_episodes": int(self.counters[C_BOOK_STALE]),
        }

    def schedule_reset(self, next_reset_ns: int) -> None:
        """Set the next daily reset (ns, host monotonic); kernels apply it once it passes."""
        self.acct[X_NEXT_RESET_NS] = next_reset_ns

    @property
    def reset_due(self) -> bool:
        """The last scheduled reset was applied (or none was scheduled)."""
        return int(self.acct[X_NEXT_RESET_NS]) == 0

    def daily_pnl(self) -> int:
        return -int(_daily_loss(self.acct))

    def positions(self) -> dict[int, dict[str, int]]:
        out = {}
        for i in np.nonzero(self.ilim[:, L_KNOWN])[0]:
            row = self.inst[i]
            out[int(i)] = {
                "position": int(row[I_POS]),
                "open_buy": int(row[I_OPEN_BUY]),
                "open_sell": int(row[I_OPEN_SELL]),
                "open_orders": int(row[I_OPEN_ORDERS]),
                "cost": int(row[I_COST]),
                "realised": int(row[I_REALISED]),
                "unrealised": int(row[I_UNREALISED]),
                "fees": int(row[I_FEES]),
                "reference": int(row[I_REF]),
            }
        return out

    def decision_counts(self) -> dict[str, int]:
        out = {}
        for code in np.nonzero(self.counters[:C_CANCEL_ALL])[0]:
            name = "ACCEPTED" if code == R_OK else Code(int(code)).name
            out[name] = int(self.counters[code])
        return out
