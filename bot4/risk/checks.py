"""Pre-trade risk: intents in, orders and decisions out; fills and market data in.

The kernels share one process's state (:class:`~bot4.risk.layout.RiskState`, which
:class:`~bot4.risk.book.RiskBook` allocates and passes as one argument). This module holds
the intent checks; :mod:`~bot4.risk.positions` the fill and market-data kernels;
:mod:`~bot4.risk.killswitch` the trading-state side (kill switch, staleness, daily loss);
:mod:`~bot4.risk.layout` every column and the state object:

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

from bot4.nbkit import add_sat, copy_stamps, copy_terms, map_find, map_put, mul_sat, unowned
from bot4.nbkit.hot import hot
from bot4.records import ACTION_NEW, DECISION_ACCEPT, DECISION_DENY
from bot4.risk.killswitch import (
    clear_order,
    daily_guard_of,
    emit_cancels,
    maybe_reset,
    poll_states,
)
from bot4.risk.layout import (
    A_DAILY_HALT,
    A_DAILY_LOSS,
    A_INTENT_PRODUCER,
    A_MAX_GROSS,
    A_MAX_OPEN_ORDERS,
    A_REF_MAX_AGE_NS,
    COID_PRODUCER_SHIFT,
    COID_SEQ_MASK,
    I_DEPTH_ASK,
    I_DEPTH_BID,
    I_GROSS,
    I_LAST_PX,
    I_MD_NS,
    I_OPEN_BUY,
    I_OPEN_ORDERS,
    I_OPEN_SELL,
    I_POS,
    I_REF,
    I_REF_NS,
    I_STALE,
    L_BAND_BP,
    L_BOOK_TAKE_PCT,
    L_BREAKER,
    L_KNOWN,
    L_LOT,
    L_MAX_NOTIONAL,
    L_MAX_OPEN_ORDERS,
    L_MAX_ORDER_QTY,
    L_MAX_POSITION,
    O_ANSWERED,
    O_INST,
    O_OPEN,
    O_SIDE,
    R_BOOK_LIQUIDITY,
    R_BREAKER_OPEN,
    R_DAILY_LOSS,
    R_DUPLICATE,
    R_GROSS_LIMIT,
    R_INTERNAL,
    R_INVALID_QTY,
    R_LOT,
    R_MALFORMED,
    R_MAX_NOTIONAL,
    R_MAX_OPEN_ORDERS,
    R_MAX_ORDER_QTY,
    R_NEGATIVE_PRICE,
    R_NO_REFERENCE,
    R_OK,
    R_POSITION_LIMIT,
    R_PRICE_BAND,
    R_RATE_LIMIT,
    R_STALE_FEED,
    R_STATE_HALTED,
    R_STATE_REDUCING,
    R_STOP_MISSING,
    R_STOP_TOO_FAR,
    R_STOP_WRONG_SIDE,
    R_UNKNOWN_INSTRUMENT,
    S_BURST,
    S_INTERVAL_NS,
    S_MAX_STOP_BP,
    S_STOP_REQUIRED,
    X_FEED_GONE,
    X_GROSS,
    X_LAST_MD_NS,
    X_NEXT_RESET_NS,
    X_OPEN_ORDERS,
)
from bot4.risk.positions import gross_qty, remark_of
from bot4.shm.breakers import breaker_enter, breaker_release, breaker_state
from bot4.shm.trading_state import HALTED, REDUCING, effective_state

# I_* / X_* below: still imported from here by bot4.replay.engine (bot4.risk.layout is home)
__all__ = [
    "I_MD_NS",
    "I_STALE",
    "R_STALE_FEED",
    "X_FEED_GONE",
    "X_LAST_MD_NS",
    "X_NEXT_RESET_NS",
    "check_intents",
]


@hot
def _strategy_row(slim, strategy):
    """The row of slim / tat for a strategy id (row 0: strategies without their own)."""
    srow = np.int64(strategy)
    return srow if srow < slim.shape[0] else np.int64(0)


@njit(nogil=True, cache=True, inline="always")
def _check(r, now_ns, coid, st):
    """(reason, checked, limit, entry price, breaker ticket) for intent ``r`` (client
    order id ``coid``) at ``now_ns`` (ns), against the RiskState ``st``, which the caller
    has borrowed (``unowned``: binding a state object's arrays per call without it was
    most of the check's time)."""
    inst_st, acct, tat, orders = st.inst, st.acct, st.tat, st.orders
    ilim, slim, alim = st.ilim, st.slim, st.alim
    brk, trading = st.brk, st.trading
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
        allowed = mul_sat(band, ref) // 10_000
        if dev > allowed:
            return R_PRICE_BAND, dev, allowed, px, 0
    # 7 notional
    notional = mul_sat(q, px)
    if notional > ilim[inst, L_MAX_NOTIONAL]:
        return R_MAX_NOTIONAL, notional, ilim[inst, L_MAX_NOTIONAL], px, 0
    # 7b visible liquidity on the side the order trades against
    take = ilim[inst, L_BOOK_TAKE_PCT]
    if take > 0:
        visible = inst_st[inst, I_DEPTH_ASK if side > 0 else I_DEPTH_BID]
        allowed = mul_sat(take, visible) // 100
        if q > allowed:
            return R_BOOK_LIQUIDITY, q, allowed, px, 0
    # 8 stop-loss
    srow = _strategy_row(slim, r.strategy)
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
            max_dist = mul_sat(max_bp, px) // 10_000
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
    new_gross = mul_sat(gross_qty(pos, new_buy, new_sell), mark)
    if new_gross > inst_st[inst, I_GROSS]:
        total = add_sat(acct[X_GROSS] - inst_st[inst, I_GROSS], new_gross)
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
        loss = daily_guard_of(acct, alim, trading)
        limit = alim[A_DAILY_LOSS]
        if limit > 0 and loss >= limit:
            return R_DAILY_LOSS, loss, limit, px, 0
        halt = alim[A_DAILY_HALT]
        if halt > 0 and loss >= halt:
            return R_DAILY_LOSS, loss, halt, px, 0
    # 13 duplicate
    if map_find(orders, coid) >= 0:
        return R_DUPLICATE, np.int64(r.seq & np.uint64(COID_SEQ_MASK)), 0, px, 0
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


@hot
def _track(o, coid, r):
    """Enter an accepted intent in open-order table ``o``; its row, -1 if the table is full."""
    slot = map_put(o, coid)
    if slot >= 0:
        o[slot, O_INST] = np.int64(r.instrument)
        o[slot, O_SIDE] = np.int64(r.side)
        o[slot, O_OPEN] = r.qty
        o[slot, O_ANSWERED] = 0
    return slot


@hot
def _decision(d, r, s, now_ns, producer, verdict, pos):
    """The RISK_DECISION on intent ``r``: ``verdict`` is what :func:`_check` returned."""
    reason, checked, limit, px, _ticket = verdict
    d.seq = s
    d.parent_seq = r.seq
    copy_stamps(d, r)
    d.ts_risk_ns = now_ns
    d.intent_seq = r.seq
    d.qty = r.qty
    d.limit_price = r.limit_price
    d.stop_price = r.stop_price
    d.position = pos
    d.exposure = mul_sat(add_sat(pos, r.qty * np.int64(r.side)), px)
    d.checked_value = checked
    d.limit_value = limit
    d.intent_producer = producer
    d.instrument = r.instrument
    d.strategy = r.strategy
    d.reason = reason
    d.side = r.side
    d.decision = DECISION_ACCEPT if reason == R_OK else DECISION_DENY
    for j in range(d.reserved.shape[0]):
        d.reserved[j] = 0


@hot
def _order(o, r, s, now_ns, coid):
    """The ORDER (``ACTION_NEW``) of accepted intent ``r`` (``o`` cleared by the caller)."""
    o.seq = s
    o.parent_seq = r.seq
    copy_stamps(o, r)
    o.ts_risk_ns = now_ns
    o.client_order_id = coid
    copy_terms(o, r)
    o.model_id = r.model_version  # which model decided travels with the order
    o.action = ACTION_NEW


@hot
def check_intents(st, intents, out_orders, out_decisions, seq, now_ns):
    """Decide every intent; returns (orders written, decisions written).

    ``out_orders`` needs room for the accepted intents plus any CANCEL_ALLs (what is left
    after ``len(intents)`` slots is used for them); ``out_decisions`` for one per intent.
    Records are numbered from ``seq`` and use ``n_orders + n_decisions`` numbers.
    """
    st = unowned(st)  # helpers bind views: no reference counting per call (issue 13)
    maybe_reset(st, now_ns)
    poll_states(st)
    k_in = intents.shape[0]
    n_o, s = emit_cancels(st, out_orders, np.int64(0), out_orders.shape[0] - k_in, seq, now_ns)
    n_d = 0
    intent_producer = st.alim[A_INTENT_PRODUCER]
    producer = np.uint64(intent_producer) << np.uint64(COID_PRODUCER_SHIFT)
    inst_st = st.inst
    acct = st.acct
    for k in range(k_in):
        r = intents[k]
        coid = producer | (r.seq & np.uint64(COID_SEQ_MASK))
        verdict = _check(r, now_ns, coid, st)
        reason, _checked, _limit, px, ticket = verdict
        inst = np.int64(r.instrument)
        pos = np.int64(0)
        if reason != R_UNKNOWN_INSTRUMENT:
            pos = inst_st[inst, I_POS]
        # the table holds twice the open-order limit: a full one is unreachable
        if reason == R_OK and _track(st.orders, coid, r) < 0:
            if ticket > 0:
                breaker_release(st.brk, st.ilim[inst, L_BREAKER], ticket)
            reason = R_INTERNAL
            verdict = (reason, verdict[1], verdict[2], px, ticket)
        _decision(out_decisions[n_d], r, s, now_ns, intent_producer, verdict, pos)
        n_d += 1
        s += 1
        st.counters[reason] += 1
        if reason != R_OK:
            continue
        srow = _strategy_row(st.slim, r.strategy)
        interval = st.slim[srow, S_INTERVAL_NS]
        if interval > 0:
            st.tat[srow] = max(st.tat[srow], now_ns) + interval
        if r.side > 0:
            inst_st[inst, I_OPEN_BUY] += r.qty
        else:
            inst_st[inst, I_OPEN_SELL] += r.qty
        inst_st[inst, I_OPEN_ORDERS] += 1
        acct[X_OPEN_ORDERS] += 1
        inst_st[inst, I_LAST_PX] = px
        remark_of(inst_st, acct, inst)
        o = out_orders[n_o]
        clear_order(o)
        _order(o, r, s, now_ns, coid)
        n_o += 1
        s += 1
    poll_states(st)
    n_o, s = emit_cancels(st, out_orders, n_o, out_orders.shape[0], s, now_ns)
    return n_o, n_d
