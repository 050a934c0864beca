"""The exchange simulator behind ``bot4 exchange serve``: bot4's matching engine
(:class:`bot4.venue.matching.Venue`) served over NASDAQ's wire protocols on uvloop.

* **Market data**: a LOBSTER day converted to ITCH 5.0 (:func:`lobster_to_itch`), or bot4's
  synthetic source as ITCH (:func:`~bot4.gateways.feed.synthetic_to_itch`), published
  in MoldUDP64 packets over UDP (to each ``md_to`` address, unicast or a multicast group,
  leaving through ``host``'s interface) at ``rate`` messages/s,
  with MoldUDP64 heartbeats when idle, and a re-request server (UDP) answering requests for
  any message published so far (the whole day is retained).
* **The book** the feed describes is the venue's: every LOBSTER message published is also
  applied to the venue (order mode, the snapshot seeding the initial book), so an order
  entered over OUCH meets exactly the liquidity the feed shows, with the venue's price-time
  matching, fees and self-trade prevention (``stp_profile``; OUCH 4.2 carries no STP field:
  the port's setting applies, as NASDAQ's AIQ does).
* **Order entry**: OUCH 4.2 over SoupBinTCP 4.0 (TCP). One message log per account
  (username): sequenced messages numbered from 1, kept for the day, replayed from any
  requested sequence number on login. Tokens are day-unique per account: an Enter or a
  Replace with a token already used is ignored (counted), as OUCH specifies, so a client
  that re-sends after a reconnect cannot create a second order. Cancel on disconnect
  (default on): when a logged-in connection ends, the account's live orders are cancelled
  (Canceled, reason 'Z').

Fault injection (all off by default): ``drop_every`` (drop every k-th downstream packet;
re-requests are never dropped), ``duplicate_every``, ``reorder_every`` (hold a packet and
send it after the next), ``delay_ms`` (send every packet that much later), ``rerequest_delay_ms`` (answer every
re-request that much later: a gap that stays open),
``disconnect_after`` (end an OUCH connection after it has been sent that many sequenced
messages), ``disconnect_random`` (after a number drawn from 1..N for each connection, from
``seed``), ``refuse_login`` (reject every login, reason 'A'), ``restart_after`` (go down
for ``restart_pause`` s and come back with the day intact, see ``_restart``),
``bust_every`` (break every k-th execution: a Broken Trade, reason 'E', right after its
Executed message; the order is not reopened, the account's net fills are reversed, counted
``busts``), ``bust_fills`` (break the executions numbered so in the day's order, 1-based:
one chosen fill) and ``bust_matches`` (break the executions with these match numbers).

One process, one asyncio loop (uvloop): every state change happens on the loop, so the
venue, the logs and the feed need no locks.

The parts: this module holds the configuration, the state (:class:`Exchange`), serving and
the restart fault; :class:`~bot4.gateways.faults.Faults` is the fault injection's settings,
:class:`~bot4.gateways.md_publisher.MdPublisher` the ITCH / MoldUDP64 publisher and
re-request server, :class:`~bot4.gateways.order_entry.OrderEntry` the OUCH order entry
against the venue and :class:`~bot4.gateways.ouch_server.OuchConnection` the OUCH
(SoupBinTCP) session server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from bot4.gateways import mold
from bot4.gateways.faults import Faults
from bot4.gateways.feed import Feed, lobster_to_itch
from bot4.gateways.md_publisher import MdPublisher
from bot4.gateways.order_entry import OrderEntry, _Order
from bot4.gateways.ouch_server import OuchConnection, _Account
from bot4.records import EXEC_REPORT, ORDER

log = logging.getLogger("bot4.exchange")


# --- the exchange -----------------------------------------------------------------------------


@dataclass
class ExchangeConfig:
    lobster: list[str]
    host: str = "127.0.0.1"
    md_to: list[tuple[str, int]] = field(default_factory=list)
    rerequest_port: int = 0
    ouch_port: int = 0
    rate: float = 20000.0  # ITCH messages / s (0: as fast as the loop sends)
    session: str = "BOT4SIM"
    heartbeat_s: float = 1.0  # MoldUDP64 heartbeat period when idle
    users: dict[str, str] = field(default_factory=dict)  # empty: any username / password
    cancel_on_disconnect: bool = True
    stp_profile: str = "binance"
    faults: Faults = field(default_factory=Faults)
    max_rerequest: int = 2000  # messages answered per re-request
    start_on_login: bool = False  # hold the feed (heartbeats only) until a first OUCH login
    synthetic: int = 0  # > 0: serve this many synthetic events instead of LOBSTER days
    synthetic_instruments: int = 3
    synthetic_seed: int = 1
    latency_log: str = ""  # .npz written at exit: feed send and OUCH Enter arrival stamps


class Exchange(MdPublisher, OrderEntry):
    """The simulator's state (see the module doc); ``serve()`` runs it on the current loop."""

    def __init__(self, cfg: ExchangeConfig, feed: Feed) -> None:
        from bot4.records.stp import STP_PROFILES
        from bot4.venue.matching import Venue

        self.cfg = cfg
        self.feed = feed
        self.session = mold.session_bytes(cfg.session)
        default, allowed = STP_PROFILES[cfg.stp_profile]
        n_inst = max(feed.symbols.values(), default=1)
        self.venue = Venue(instruments=max(16, n_inst), stp_default=default, stp_allowed=allowed)
        self.ids = {sym.encode().ljust(8): inst for sym, inst in feed.symbols.items()}
        self.published = 0  # ITCH messages published: sequence numbers 1 .. published
        self.accounts: dict[str, _Account] = {}
        self.orders: dict[int, _Order] = {}
        self.next_internal = 1
        self.order_seq = 0
        self.match = 10_000_000  # match numbers of our executions (feed's are below)
        self.rep = np.zeros(256, EXEC_REPORT)
        self.rec = np.zeros(1, ORDER)
        self.stats = {
            "packets": 0,
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "rerequests": 0,
            "resent": 0,
            "logins": 0,
            "refused": 0,
            "duplicate_tokens": 0,
            "enters": 0,
            "fills": 0,
            "filled_qty": 0,
            "disconnect_cancels": 0,
            "bad_frames": 0,
            "errors": 0,
            "restarts": 0,
            "busts": 0,
        }
        self._held: bytes | None = None
        self.down = False  # the restart fault's down time
        self.net: dict[str, int] = {}  # "account:symbol" -> signed filled shares
        self.md_sock = None
        self.t0 = time.monotonic()
        # latency stamps (CLOCK_MONOTONIC ns): when the feed first sent each message, when
        # each OUCH Enter's bytes were handed to the exchange (perf/wirebench.py)
        self.sent_ns = np.zeros(feed.messages, np.int64)
        self.enter_log: list[tuple[bytes, int]] = []

    def write_latency_log(self, path: str) -> None:
        """The stamps as ``.npz``: ``sent_ns`` and ``itch_ts`` (ns since midnight) per
        message (sequence number - 1), ``day_ns`` (the feed's midnight, UTC ns),
        ``enter_token`` and ``enter_ns`` per OUCH Enter received."""
        import os

        from bot4.marketdata.lobster import local_to_utc_ns

        at = self.feed.offsets[:-1].astype(np.int64) + 5  # type, locate, tracking, then u48
        ts = np.zeros(len(at), np.int64)
        for k in range(6):
            ts = (ts << 8) | self.feed.buf[at + k].astype(np.int64)

        day_ns = int(local_to_utc_ns(self.feed.day, np.zeros(1, np.int64))[0])
        tok = np.array([t for t, _ in self.enter_log], "S14")
        arr = np.array([a for _, a in self.enter_log], np.int64)
        with open(path + ".tmp", "wb") as f:
            np.savez(f, sent_ns=self.sent_ns, itch_ts=ts, day_ns=day_ns, enter_token=tok,
                     enter_ns=arr)  # fmt: skip
        os.replace(path + ".tmp", path)

    def summary(self) -> dict:
        """Counters, the ITCH messages published and each account's net fills per symbol."""
        live = sum(1 for o in self.orders.values() if o.live)
        return {**self.stats, "published": self.published, "live_orders": live,
                "net": dict(self.net)}  # fmt: skip

    # -- serving ----------------------------------------------------------------------------
    async def serve(self, ready=None) -> None:
        loop = asyncio.get_running_loop()
        ex = self

        class _Md(asyncio.DatagramProtocol):  # the feed's sending socket: receives nothing
            pass

        class _Rereq(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                ex.answer_rerequest(data, addr)

        async def bind(rr_port: int, ouch_port: int) -> None:
            rt, _ = await loop.create_datagram_endpoint(_Rereq, local_addr=(self.cfg.host, rr_port))
            self.rerequest_sock = rt
            self.server = await loop.create_server(
                lambda: OuchConnection(ex), self.cfg.host, ouch_port
            )
            self.rerequest_port = rt.get_extra_info("sockname")[1]
            self.ouch_port = self.server.sockets[0].getsockname()[1]

        md = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        md.bind((self.cfg.host, 0))
        # a multicast md_to leaves through the servers' interface and loops back to this host
        md.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_MULTICAST_IF,
            socket.inet_aton(socket.gethostbyname(self.cfg.host)),
        )
        md.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        md.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.md_sock, _ = await loop.create_datagram_endpoint(_Md, sock=md)
        await bind(self.cfg.rerequest_port, self.cfg.ouch_port)
        log.info(
            "exchange: %d ITCH messages (%s) for %s; OUCH on %s:%d, re-request on %s:%d",
            self.feed.messages,
            self.feed.day,
            ", ".join(self.feed.symbols),
            self.cfg.host,
            self.ouch_port,
            self.cfg.host,
            self.rerequest_port,
        )
        if ready is not None:
            ready(self)
        self.t0 = time.monotonic()
        if self.cfg.faults.restart_after > 0:
            self._restarter = loop.create_task(self._restart(bind))
        await self.feed_task()

    async def _restart(self, bind) -> None:
        """Fault: after ``restart_after`` s the exchange goes down for ``restart_pause`` s —
        every OUCH connection closed (cancel on disconnect applies), the OUCH and re-request
        servers closed, no feed, no heartbeat — and comes back on the same ports with its
        day intact (message logs, sequence numbers, books), as an exchange restarted from its
        own logs; the feed resumes where it stopped."""
        f = self.cfg.faults
        await asyncio.sleep(f.restart_after)
        log.warning("exchange: fault: restarting (down %.2f s)", f.restart_pause)
        self.stats["restarts"] += 1
        self.down = True
        t = time.monotonic()
        self.server.close()
        self.rerequest_sock.close()
        for a in self.accounts.values():
            if a.conn is not None and not a.conn.closed:
                a.conn.transport.close()
        await asyncio.sleep(f.restart_pause)
        await bind(self.rerequest_port, self.ouch_port)
        self.t0 += time.monotonic() - t
        self.down = False
        log.warning("exchange: fault: back after the restart")


def serve(cfg: ExchangeConfig, ready=None) -> None:
    """Build the feed and run the exchange until interrupted (uvloop)."""
    import uvloop

    if cfg.synthetic:
        from bot4.gateways.feed import synthetic_to_itch

        feed = synthetic_to_itch(cfg.synthetic, cfg.synthetic_instruments, cfg.synthetic_seed)
    else:
        feed = lobster_to_itch(cfg.lobster)
    ex = Exchange(cfg, feed)
    try:
        uvloop.run(ex.serve(ready))
    finally:
        log.info("exchange summary %s", ex.summary())
        if cfg.latency_log:
            ex.write_latency_log(cfg.latency_log)
