"""Exchange gateways: bot4's venue port spoken over NASDAQ's wire protocols.

``md_gateway`` (:mod:`bot4.stages.md_gateway`) receives TotalView-ITCH 5.0
(:mod:`~bot4.gateways.itch`) in MoldUDP64 packets (:mod:`~bot4.gateways.mold`) and publishes
MARKET_DATA; ``order_gateway`` (:mod:`bot4.stages.order_gateway`) speaks OUCH 4.2
(:mod:`~bot4.gateways.ouch`) over SoupBinTCP 4.0 (:mod:`~bot4.gateways.soup`) in place of the
in-process venue stage. Both run their sockets on uvloop (:mod:`~bot4.stages.loop_async`, the event-loop counterpart of the stage loop).
:mod:`~bot4.gateways.exchange` is the simulator behind ``bot4 exchange serve``, serving the
day :mod:`~bot4.gateways.feed` converts from LOBSTER (its parts: :mod:`~bot4.gateways.faults`,
:mod:`~bot4.gateways.md_publisher`, :mod:`~bot4.gateways.order_entry`,
:mod:`~bot4.gateways.ouch_server`). See
docs/gateways.md.
"""
