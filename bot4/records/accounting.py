"""Average-cost position accounting in fixed point: one rule for every place that keeps a
position (the risk kernels, the trading report, the database loader's positions table), so
they agree to the unit. It lives here, beside the fixed-point conversions, so that every
layer can use it (``bot4.risk.accounting`` re-exports it for the risk package).

Units: quantities in shares (signed: + long), prices in the instrument's price units,
cost and realised PnL in price units times shares (currency = value / price scale).

A fill in the position's direction (or from flat) adds ``px * qty`` to the cost basis. A
reducing fill closes ``closed = min(qty, |pos|)`` shares, releases ``cost * closed / |pos|``
of the basis (truncated toward zero, computed without forming ``cost * closed``) and
realises the difference to the fill's value; the rest of a fill that crosses zero opens
the other side at the fill price. The basis is exactly 0 whenever the position is, and
``cost - realised`` always equals the signed notional traded. Fees are not part of it:
each caller books them its own way.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True, _nrt=False)  # bot4.nbkit.hot (records sit below the kit)
def pro_rata(cost, q, n):
    """``cost * q / n`` truncated toward zero, without forming ``cost * q`` (q <= n)."""
    a = abs(cost)
    part = (a // n) * q + (a % n) * q // n
    return part if cost >= 0 else -part


@njit(nogil=True, cache=True, _nrt=False)  # bot4.nbkit.hot (records sit below the kit)
def average_cost_fill(pos, cost, signed_qty, px):
    """One fill of ``signed_qty`` shares (+ buy, - sell) at ``px`` on a position of
    ``pos`` shares with basis ``cost``: ``(pos, cost, realised, closed)`` after it, where
    ``realised`` is the PnL this fill realised and ``closed`` the shares it closed."""
    if pos == 0 or (pos > 0) == (signed_qty > 0):
        return pos + signed_qty, cost + signed_qty * px, 0, 0
    closed = min(abs(signed_qty), abs(pos))
    closing = closed if signed_qty > 0 else -closed
    released = pro_rata(cost, closed, abs(pos))
    realised = -(closing * px) - released
    cost -= released
    pos += closing
    rest = signed_qty - closing
    if rest != 0:
        pos += rest
        cost += rest * px
    return pos, cost, realised, closed
