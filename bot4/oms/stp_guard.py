"""The client-side self-trade prevention guard: a conservative *pre-trade* plan, made in
the OMS before an order is sent, against *our own open orders only*.

It is not the exchanges' self-trade prevention. Binance, Coinbase and CME apply their
modes at match time to the own order actually met, after the liquidity of others ahead of
it has traded (``docs/stp.md``; bot4's simulated venue does the same, ``bot4.venue``). The
guard cannot see the book, so it acts on every own order the incoming one *could* meet,
as if nothing else stood in between: it gives up fills and queue position the exchanges
would keep (an own order behind others' liquidity is cancelled, a decrement is computed
up front). Use it for a venue without self-trade prevention; choose it per venue with the
orders stage's ``stp = "client"`` (the default is ``"venue"``: the order carries its mode).

The incoming order's strategy policy decides:

    policy                 incoming (taker)                  crossed resting orders (makers)
    GUARD_CANCEL_NEW       expired, never sent               untouched
    GUARD_CANCEL_RESTING   sent in full                      each cancelled
    GUARD_CANCEL_BOTH      expired, never sent               each cancelled
    GUARD_DECREMENT_BOTH   reduced by what it would trade;   in matching priority, each reduced
                           expired if that leaves nothing    by min(its leaves, what the taker
                                                             has left); cancelled at zero,
                                                             replaced down otherwise

The venue handles our messages in order, so a cancel or replace sent before the incoming
order takes effect before it arrives: no self trade happens under any policy.

"Crossed" means: same instrument, opposite side, able to rest (``book_rests``), priced at
or through the incoming limit (every one for a market order), taken in the venue's
matching priority (``bot4.oms.book``). Makers with a cancel in flight are skipped: the
venue removes them first. The guard's limit: when the policy cannot be applied as written
— more crossed makers than ``max_makers`` (the bound on messages per incoming order,
hence on the stage's ``max_out_per_in``), or a maker whose state refuses the request the
policy needs (a replace of an order not yet acknowledged, any request on an order with a
replace in flight) — the plan falls back to CancelNew: the incoming order is expired and
no maker is touched. Stop orders are not checked (not active until triggered).

:func:`guard_plan` only plans (reads the book); the orders stage carries the plan out
(state transitions, venue messages, SELF_TRADE reports).
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.hot import hot
from bot4.oms.book import book_rests
from bot4.oms.states import (
    EV_CANCEL_REQUEST,
    EV_REPLACE_REQUEST,
    ST_CANCEL_PENDING,
    ST_CANCEL_PENDING_PARTIAL,
    transition,
)
from bot4.records import OT_MARKET, SIDE_BUY, SIDE_SELL

__all__ = [
    "A_CANCEL",
    "A_DECREMENT",
    "GUARD_CANCEL_BOTH",
    "GUARD_CANCEL_NEW",
    "GUARD_CANCEL_RESTING",
    "GUARD_DECREMENT_BOTH",
    "GUARD_POLICY_NAMES",
    "OUT_APPLIED",
    "OUT_FALLBACK",
    "OUT_NONE",
    "guard_plan",
    "parse_guard_policy",
]

# guard policies (not the ORDER.stp_mode codes STP_*: those go to the venue)
GUARD_CANCEL_NEW = 0  # the default
GUARD_CANCEL_RESTING = 1
GUARD_CANCEL_BOTH = 2
GUARD_DECREMENT_BOTH = 3

#: policy names, as the stp_mode names of bot4.records.stp (decrement = decrement both)
GUARD_POLICY_NAMES = ("cancel_new", "cancel_resting", "cancel_both", "decrement")

A_CANCEL = 1  # cancel the maker
A_DECREMENT = 2  # replace the maker down by amounts[k]

OUT_NONE = 0  # nothing crossed: send the incoming order as it is
OUT_APPLIED = 1  # the policy applied: carry out the actions, send qty_after if > 0
OUT_FALLBACK = 2  # could not apply the policy: incoming expired, makers untouched


def parse_guard_policy(name) -> int:
    """Policy id from a name: ``cancel_new`` / ``CancelNew`` / ``cancel-new`` /
    ``decrement`` (or ``decrement_both``) / an id."""
    if isinstance(name, int) and 0 <= name < len(GUARD_POLICY_NAMES):
        return name
    key = "".join(c for c in str(name).lower() if c.isalpha())
    if key == "decrementboth":
        return GUARD_DECREMENT_BOTH
    for i, n in enumerate(GUARD_POLICY_NAMES):
        if n.replace("_", "") == key:
            return i
    raise ValueError(f"unknown self-trade prevention policy {name!r}; one of {GUARD_POLICY_NAMES}")


@hot
def guard_plan(book, table, r, policy, plan):
    """Plan self-trade prevention under guard ``policy`` for the incoming ORDER ``r``
    (its ``qty`` on ``instrument`` / ``side`` at ``limit_price``; a market order, or a
    limit price of 0, crosses every price) against our ``book``, with the order state
    ``table``.

    ``plan`` is the OMS's (makers, actions, amounts) (``Oms.plan_*``): writes up to
    ``len(makers)`` actions: ``makers[k]`` a book slot, ``actions[k]`` ``A_CANCEL`` or
    ``A_DECREMENT``, ``amounts[k]`` the quantity taken off the maker's leaves (all of
    them for a cancel). Returns ``(n_actions, qty_after, outcome)``: ``qty_after`` is
    what to send of the incoming order (0 = expire it).
    """
    makers, actions, amounts = plan
    instrument = np.int64(r.instrument)
    side = r.side
    limit_price = r.limit_price
    qty = r.qty
    is_market = r.order_type == OT_MARKET or limit_price == 0
    max_makers = makers.shape[0]
    if instrument <= 0 or instrument >= book.head.shape[0]:
        return 0, qty, OUT_NONE
    col = 1 if side == SIDE_BUY else 0  # the opposite side's list
    s = book.head[instrument, col]
    n = 0
    overflow = False
    while s >= 0:
        m = book.slots[s]
        p = m.price
        crosses = (
            is_market
            or (side == SIDE_BUY and p <= limit_price)
            or (side == SIDE_SELL and p >= limit_price)
        )
        if not crosses:
            break
        st = m.state
        if (
            st != ST_CANCEL_PENDING
            and st != ST_CANCEL_PENDING_PARTIAL
            and m.leaves_qty > 0
            and book_rests(m.order_type, m.tif)
        ):
            if n == max_makers:
                overflow = True
                break
            makers[n] = s
            n += 1
        s = book.nxt[s]
    if n == 0:
        return 0, qty, OUT_NONE
    if policy in (GUARD_CANCEL_RESTING, GUARD_CANCEL_BOTH):
        if overflow:
            return 0, 0, OUT_FALLBACK
        for k in range(n):
            if transition(table, book.slots[makers[k]].state, np.int8(EV_CANCEL_REQUEST)) < 0:
                return 0, 0, OUT_FALLBACK
            actions[k] = A_CANCEL
            amounts[k] = book.slots[makers[k]].leaves_qty
        return n, (qty if policy == GUARD_CANCEL_RESTING else 0), OUT_APPLIED
    if policy == GUARD_DECREMENT_BOTH:
        rem = qty
        k = 0
        while k < n and rem > 0:
            m = book.slots[makers[k]]
            d = min(m.leaves_qty, rem)
            a = A_CANCEL if d == m.leaves_qty else A_DECREMENT
            ev = np.int8(EV_CANCEL_REQUEST if a == A_CANCEL else EV_REPLACE_REQUEST)
            if transition(table, m.state, ev) < 0:
                return 0, 0, OUT_FALLBACK
            actions[k] = a
            amounts[k] = d
            rem -= d
            k += 1
        if rem > 0 and overflow:
            return 0, 0, OUT_FALLBACK
        return k, rem, OUT_APPLIED
    return 0, 0, OUT_APPLIED  # GUARD_CANCEL_NEW (and any unknown id: the safe choice)
