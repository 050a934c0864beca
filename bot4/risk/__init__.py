"""Pre-trade risk, and the shared segments the risk stage attaches.

* :mod:`~bot4.risk.layout` — every column of the risk arrays and ``RiskState``, the one
  state object the kernels take;
* :mod:`~bot4.risk.limits` — the configuration (frozen dataclasses) and the limit arrays;
* :mod:`~bot4.risk.checks` — the intent checks (``check_intents``);
* :mod:`~bot4.risk.positions` — fills, market data, book levels: positions and marks;
* :mod:`~bot4.risk.killswitch` — trading states: kill switch, stale data, daily loss;
* :mod:`~bot4.risk.accounting` — average-cost PnL arithmetic (shared with the reports);
* :mod:`~bot4.risk.book` — ``RiskBook``: allocates the state, calls the kernels, summarises.

The breaker and trading-state segments belong to the instance, not to the risk stage: the
launcher creates them with :func:`create_risk_segments` before any stage starts, operator
tools change them, and the risk stage only attaches.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot4.shm.breakers import BREAKERS_SEGMENT, BreakerConfig, create_breakers
from bot4.shm.segment import Segment, segment_name
from bot4.shm.trading_state import TRADING_SEGMENT, create_trading_state

__all__ = ["create_risk_segments", "risk_segment_names"]


def risk_segment_names(instance: str) -> list[str]:
    return [segment_name(instance, BREAKERS_SEGMENT), segment_name(instance, TRADING_SEGMENT)]


def create_risk_segments(
    instance: str,
    n_breakers: int,
    n_instruments: int,
    configs: Sequence[BreakerConfig] | None = None,
) -> list[str]:
    """Create the breaker segment (``n_breakers`` rows: ``configs``, or defaults named
    ``breaker0``, ``breaker1``, ...) and the trading-state segment (instrument ids
    1..``n_instruments``), all ACTIVE and CLOSED. All or nothing; returns the names."""
    if configs is None:
        configs = [BreakerConfig(name=f"breaker{i}") for i in range(n_breakers)]
    if len(configs) != n_breakers:
        raise ValueError(f"{len(configs)} breaker configs for {n_breakers} breakers")
    made: list[str] = []
    try:
        made.append(create_breakers(instance, configs))
        made.append(create_trading_state(instance, n_instruments))
    except BaseException:
        for name in made:
            Segment.unlink(name)
        raise
    return made
