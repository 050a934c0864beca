"""Positions, marks and market references: the risk kernels fed by fills, market data and
book levels (rules in :mod:`bot4.risk.checks`' docstring: PnL, stale data, inconsistent
books).

Every kernel takes the process's :class:`~bot4.risk.layout.RiskState` (``st``) first.
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit import add_sat, map_delete, map_find, mul_sat
from bot4.nbkit.hot import hot
from bot4.records import (
    EXEC_ACK,
    EXEC_BROKEN,
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
from bot4.risk.accounting import average_cost_fill
from bot4.risk.killswitch import after_batch, maybe_reset, md_arrived, stale_halt
from bot4.risk.layout import (
    A_BREAKER_FROM_EXECS,
    C_BOOK_LEVELS,
    C_BOOK_STALE,
    C_BROKEN_FILLS,
    C_EXEC_BAD,
    C_EXEC_UNKNOWN_ORDER,
    C_FILLS,
    C_MD,
    I_ASK,
    I_BID,
    I_COST,
    I_DEPTH_ASK,
    I_DEPTH_BID,
    I_FEES,
    I_GROSS,
    I_LAST_PX,
    I_LAST_TRADE,
    I_MD_NS,
    I_OPEN_BUY,
    I_OPEN_ORDERS,
    I_OPEN_SELL,
    I_POS,
    I_REALISED,
    I_REF,
    I_REF_NS,
    I_STALE,
    I_UNREALISED,
    L_BREAKER,
    L_KNOWN,
    O_ANSWERED,
    O_INST,
    O_OPEN,
    O_SIDE,
    X_GROSS,
    X_LAST_MD_NS,
    X_OPEN_ORDERS,
    X_REALISED,
    X_UNREALISED,
)
from bot4.shm.breakers import breaker_record

__all__ = [
    "apply_book_levels",
    "apply_fills",
    "apply_market_data",
    "gross_qty",
    "remark",
    "remark_of",
]


@hot
def gross_qty(pos, open_buy, open_sell):
    """Worst-case |position| with every open order on one side filled, shares."""
    return max(abs(pos + open_buy), abs(pos - open_sell))


@hot
def remark(st, inst):
    """Recompute the instrument's unrealised PnL and gross exposure, and the totals."""
    remark_of(st.inst, st.acct, inst)


@hot
def remark_of(i_st, acct, inst):
    """:func:`remark` on the two arrays it touches (the per-intent check's form)."""
    mark = i_st[inst, I_REF]
    if mark <= 0:
        mark = i_st[inst, I_LAST_PX]
    pos = i_st[inst, I_POS]
    unreal = np.int64(0)
    if pos != 0:
        unreal = add_sat(mul_sat(pos, mark), -i_st[inst, I_COST])
    gross = mul_sat(gross_qty(pos, i_st[inst, I_OPEN_BUY], i_st[inst, I_OPEN_SELL]), mark)
    acct[X_UNREALISED] += unreal - i_st[inst, I_UNREALISED]
    acct[X_GROSS] += gross - i_st[inst, I_GROSS]
    i_st[inst, I_UNREALISED] = unreal
    i_st[inst, I_GROSS] = gross


@hot
def _apply_fill(st, inst, side, qty, px, fee):
    i_st = st.inst
    before = i_st[inst, I_REALISED]
    p, c, realised, _closed = average_cost_fill(
        i_st[inst, I_POS], i_st[inst, I_COST], qty * side, px
    )
    i_st[inst, I_POS] = p
    i_st[inst, I_COST] = c
    i_st[inst, I_REALISED] += realised - fee
    i_st[inst, I_FEES] += fee
    i_st[inst, I_LAST_PX] = px
    st.acct[X_REALISED] += i_st[inst, I_REALISED] - before


@hot
def apply_book_levels(st, levels):
    """BOOK_LEVEL records into ``st.depth`` (ids, 2, max levels) int64 sizes per position
    (row 0 bids, 1 asks), keeping ``I_DEPTH_BID`` / ``I_DEPTH_ASK`` the sums over them.
    Positions beyond ``depth``'s and unknown instruments are ignored."""
    ilim = st.ilim
    depth = st.depth
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
        st.inst[inst, col] += q - depth[inst, s, lvl]
        depth[inst, s, lvl] = q
        st.counters[C_BOOK_LEVELS] += 1


@hot
def apply_fills(st, execs, out_orders, seq, now_ns):
    """Apply execution reports; returns the CANCEL_ALLs written to ``out_orders``.

    A report for an order in the open-order table sets its open quantity to ``leaves_qty``
    (0 once the status is FILLED, CANCELLED, REJECTED or EXPIRED, which also closes it);
    ``last_qty > 0`` is a fill at ``last_price`` on the report's side, with ``fee``; for
    ``EXEC_BROKEN`` (a trade bust) the fill it names is reversed: the opposite side at the
    same price, the fee given back.
    Reports for orders not in the table (sent before a restart) still move the position.
    """
    maybe_reset(st, now_ns)
    feed = st.alim[A_BREAKER_FROM_EXECS] != 0
    ilim = st.ilim
    orders = st.orders
    for k in range(execs.shape[0]):
        r = execs[k]
        inst = np.int64(r.instrument)
        side = np.int64(r.side)
        slot = map_find(orders, r.client_order_id)
        if slot >= 0:
            inst = orders[slot, O_INST]
            side = orders[slot, O_SIDE]
            status = r.status
            closed = status in (OS_FILLED, OS_CANCELLED, OS_REJECTED, OS_EXPIRED)
            left = np.int64(0) if closed else max(r.leaves_qty, 0)
            delta = left - orders[slot, O_OPEN]
            if side > 0:
                st.inst[inst, I_OPEN_BUY] += delta
            else:
                st.inst[inst, I_OPEN_SELL] += delta
            orders[slot, O_OPEN] = left
            et = r.exec_type
            if orders[slot, O_ANSWERED] == 0 and (
                et in (EXEC_ACK, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REJECTED)
            ):
                orders[slot, O_ANSWERED] = 1
                b = ilim[inst, L_BREAKER]
                if feed and b >= 0:
                    breaker_record(st.brk, b, et != EXEC_REJECTED, now_ns)
            if closed:
                map_delete(orders, slot)
                st.inst[inst, I_OPEN_ORDERS] -= 1
                st.acct[X_OPEN_ORDERS] -= 1
        else:
            if inst <= 0 or inst >= ilim.shape[0] or ilim[inst, L_KNOWN] == 0 or side == 0:
                st.counters[C_EXEC_BAD] += 1
                continue
            st.counters[C_EXEC_UNKNOWN_ORDER] += 1
        if r.last_qty > 0:
            if r.exec_type == EXEC_BROKEN:
                # a trade bust: the opposite fill at the broken fill's price, its fee given
                # back. Position exact; realised + unrealised exact (average cost): only
                # their split is a closing trade's
                _apply_fill(st, inst, -side, r.last_qty, r.last_price, -r.fee)
                st.counters[C_BROKEN_FILLS] += 1
            else:
                _apply_fill(st, inst, side, r.last_qty, r.last_price, r.fee)
                st.counters[C_FILLS] += 1
        remark(st, inst)
    return after_batch(st, out_orders, seq, now_ns)


@hot
def apply_market_data(st, md, out_orders, seq, now_ns):
    """Update reference prices and marks; returns the CANCEL_ALLs written to ``out_orders``.

    Quotes set the bid or ask (qty 0 empties the side); trades (trade prints, crosses,
    book executions) set the last trade. The reference is the mid when both sides are
    known and not crossed, else the last trade. Every record of a known instrument, of any
    kind, stamps its arrival (and ends a stale-data halt: see bot4.risk.checks); a record
    flagged ``MDF_BOOK_STALE`` instead starts one and sets no price.

    Per batch, the arrival is stamped at an instrument's first record (the batch has one
    ``now_ns``: the later stamps would change nothing), and its reference, reference stamp
    and marks are computed once, from its last record that sets a price (nothing reads
    them in between, and the sums of the marks telescope): the same state as record by
    record. ``st.scratch``: int64 ``[2 * instruments + 1]``, the first ``instruments``
    words -1 (left so).
    """
    maybe_reset(st, now_ns)
    ilim = st.ilim
    inst_st = st.inst
    scratch = st.scratch
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
            if t > st.acct[X_LAST_MD_NS]:
                st.acct[X_LAST_MD_NS] = t
            if inst_st[inst, I_STALE] == 0:
                inst_st[inst, I_STALE] = stale_halt(st.trading, inst)
                st.counters[C_BOOK_STALE] += 1
            if scratch[inst] != -1:
                scratch[inst] = -2  # an earlier record's price in this batch is not used
            continue
        if scratch[inst] == -1:  # the instrument's first record in this batch
            md_arrived(st, inst, now_ns)
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
        st.counters[C_MD] += 1
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
        remark(st, inst)
    return after_batch(st, out_orders, seq, now_ns)
