"""Stage kinds: one module per stage, numba kernels plus a thin :class:`Stage` class.

``KINDS`` maps the ``kind`` of a topology stage to its class. The stand-ins serve the
default topology until the market data, signals, risk, orders and persistence issues land.
"""

from bot4.stages.base import Stage
from bot4.stages.marketdata import MarketDataStage
from bot4.stages.md_gateway import MdGatewayStage
from bot4.stages.order_gateway import OrderGatewayStage
from bot4.stages.orders import OrdersStage
from bot4.stages.persistence import PersistenceStage
from bot4.stages.risk import RiskStage
from bot4.stages.signals import SignalsStage
from bot4.stages.standins import (
    CountSink,
    OrdersStandin,
    RiskStandin,
    SignalsStandin,
    SyntheticMarketData,
)
from bot4.stages.testing import Relay, TestSink, TestSource
from bot4.stages.venue import VenueStage

KINDS: dict[str, type[Stage]] = {
    cls.kind: cls
    for cls in (
        SyntheticMarketData,
        MarketDataStage,
        OrdersStage,
        PersistenceStage,
        RiskStage,
        VenueStage,
        MdGatewayStage,
        OrderGatewayStage,
        SignalsStandin,
        SignalsStage,
        RiskStandin,
        OrdersStandin,
        CountSink,
        TestSource,
        Relay,
        TestSink,
    )
}

__all__ = ["KINDS", "Stage"]
