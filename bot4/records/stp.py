"""Self-trade prevention modes by name, and the venue profiles that choose their default.

The modes themselves are ``STP_*`` in :mod:`bot4.records.dtypes` (``ORDER.stp_mode``); this
module is the one table of their configuration names (topology params of the orders and
venue stages) and of the venue profiles. ``docs/stp.md`` maps each mode to Binance,
Coinbase Exchange and CME Globex.

``ORDER.stp_mode`` 0 (``STP_NONE``) means *not set*: the venue applies its default mode,
which is "no prevention" only on a venue whose profile says so (``none``). An order cannot
ask for "no prevention" on a venue whose default is another mode (records v2 has no code
for an explicit NONE).
"""

from __future__ import annotations

from bot4.records.dtypes import (
    STP_CANCEL_BOTH,
    STP_CANCEL_NEW,
    STP_CANCEL_RESTING,
    STP_DECREMENT,
    STP_NONE,
)

__all__ = [
    "STP_MODE_NAMES",
    "STP_PROFILES",
    "mode_bits",
    "parse_stp_mode",
]

#: configuration name -> STP_* (what an order carries; "venue_default" sends 0)
STP_MODE_NAMES = {
    "venue_default": STP_NONE,
    "cancel_new": STP_CANCEL_NEW,
    "cancel_resting": STP_CANCEL_RESTING,
    "cancel_both": STP_CANCEL_BOTH,
    "decrement": STP_DECREMENT,
}

_ALL = (STP_CANCEL_NEW, STP_CANCEL_RESTING, STP_CANCEL_BOTH, STP_DECREMENT)

#: venue profile -> (default mode for an order with stp_mode 0, modes an order may carry).
#: binance: the symbol's defaultSelfTradePreventionMode, EXPIRE_MAKER on the common spot
#: configuration; coinbase: dc (decrement and cancel) is Coinbase Exchange's default; cme:
#: without tag 8000 Globex cancels the resting order, and it has no decrement or
#: cancel-both; none: a venue whose default is no prevention (orders may still ask for a
#: mode).
STP_PROFILES: dict[str, tuple[int, tuple[int, ...]]] = {
    "binance": (STP_CANCEL_RESTING, _ALL),
    "coinbase": (STP_DECREMENT, _ALL),
    "cme": (STP_CANCEL_RESTING, (STP_CANCEL_NEW, STP_CANCEL_RESTING)),
    "none": (STP_NONE, _ALL),
}


def parse_stp_mode(name: str | int) -> int:
    """``STP_*`` from a configuration name (``cancel_new``, ``cancel-resting``, ``Decrement``,
    ``venue_default``) or an id 0..4; ValueError otherwise."""
    if isinstance(name, int) and not isinstance(name, bool):
        if name in STP_MODE_NAMES.values():
            return name
    else:
        key = str(name).strip().lower().replace("-", "_")
        if key in STP_MODE_NAMES:
            return STP_MODE_NAMES[key]
    raise ValueError(f"unknown self-trade prevention mode {name!r}; one of {list(STP_MODE_NAMES)}")


def mode_bits(modes) -> int:
    """The ``V_STP_ALLOWED`` word of the venue: bit ``1 << m`` per mode ``m``."""
    bits = 0
    for m in modes:
        bits |= 1 << int(m)
    return bits
