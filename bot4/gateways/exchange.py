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
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from bot4.gateways import mold, ouch, soup
from bot4.gateways.feed import Feed, lobster_to_itch
from bot4.records import (
    ACTION_CANCEL,
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    ORDER,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)

log = logging.getLogger("bot4.exchange")

# --- the exchange -----------------------------------------------------------------------------


@dataclass
class Faults:
    drop_every: int = 0
    duplicate_every: int = 0
    reorder_every: int = 0
    delay_ms: float = 0.0
    rerequest_delay_ms: float = 0.0  # answer each re-request this much later
    disconnect_after: int = 0
    disconnect_random: int = 0  # cut each connection after 1..N sequenced messages (seeded)
    seed: int = 0
    refuse_login: bool = False
    restart_after: float = 0.0  # s after serving starts: go down and come back (0: never)
    restart_pause: float = 1.0  # s down
    bust_every: int = 0  # break every k-th execution (Broken Trade after its Executed)
    bust_fills: tuple = ()  # break the n-th executions of the day (1-based)
    bust_matches: tuple = ()  # break the executions with these match numbers

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def cut_after(self) -> int:
        """Sequenced messages a new OUCH connection gets before it is cut (0: never)."""
        if self.disconnect_random > 0:
            return int(self._rng.integers(1, self.disconnect_random + 1))
        return self.disconnect_after


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


@dataclass
class _Order:
    token: bytes
    account: str
    stock: bytes
    side: bytes
    price: int
    shares: int  # open shares
    cum: int
    tif: int
    entry_seq: int  # seq of the ORDER record that entered / replaced it (liquidity flag)
    order_ref: int = 0
    prev_token: bytes = b""
    live: bool = True


class _Account:
    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[bytes] = []  # sequenced OUCH messages; sequence number = index + 1
        self.tokens: dict[bytes, int] = {}  # every token used today -> internal order id
        self.conn: OuchConnection | None = None


class Exchange:
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

    # -- market data ------------------------------------------------------------------------
    def _send_md(self, pkt: bytes, *, faults: bool = True) -> None:
        f = self.cfg.faults
        self.stats["packets"] += 1
        n = self.stats["packets"]
        if faults and f.drop_every and n % f.drop_every == 0:
            self.stats["dropped"] += 1
            return
        if faults and f.reorder_every and n % f.reorder_every == 0 and self._held is None:
            self._held = pkt
            self.stats["reordered"] += 1
            return
        copies = 2 if faults and f.duplicate_every and n % f.duplicate_every == 0 else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            self._sendto_all(pkt)
        if self._held is not None:
            held, self._held = self._held, None
            self._sendto_all(held)

    def _sendto_all(self, pkt: bytes) -> None:
        delay = self.cfg.faults.delay_ms
        for addr in self.cfg.md_to:
            if delay > 0:
                asyncio.get_running_loop().call_later(delay / 1e3, self.md_sock.sendto, pkt, addr)
            else:
                self.md_sock.sendto(pkt, addr)

    def publish_due(self, now: float) -> int:
        """Publish the messages due by ``now`` (at most 4096 per call), apply them to the
        venue, and route the venue's reports. Returns messages published."""
        total = self.feed.messages
        due = total if self.cfg.rate <= 0 else min(total, int((now - self.t0) * self.cfg.rate))
        hi = min(due, self.published + 4096)
        lo = self.published
        if hi <= lo:
            return 0
        for seq, pkt in mold.packets(self.session, 1, self.feed.buf, self.feed.offsets, lo, hi):
            self.sent_ns[seq - 1 : seq - 1 + int.from_bytes(pkt[18:20], "big")] = (
                time.monotonic_ns()
            )
            self._send_md(pkt)
        md = self.feed.venue_md[lo:hi]
        md = md[md["kind"] != 0]
        if md.size:
            self.venue.on_market_data(md, time.monotonic_ns())
            self._route()
        self.published = hi
        return hi - lo

    def answer_rerequest(self, data: bytes, addr) -> None:
        try:
            session, seq, count = mold.parse_header(data)
        except ValueError:
            self.stats["bad_frames"] += 1
            return
        if session != self.session or seq < 1:
            self.stats["bad_frames"] += 1
            return
        self.stats["rerequests"] += 1
        lo = seq - 1
        hi = min(self.published, lo + min(count, self.cfg.max_rerequest))
        if hi <= lo:
            return
        delay = self.cfg.faults.rerequest_delay_ms
        if delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay / 1e3, self._resend, lo, hi, addr)
        else:
            self._resend(lo, hi, addr)

    def _resend(self, lo: int, hi: int, addr) -> None:
        for _seq, pkt in mold.packets(self.session, 1, self.feed.buf, self.feed.offsets, lo, hi):
            self.rerequest_sock.sendto(pkt, addr)
        self.stats["resent"] += hi - lo

    async def feed_task(self) -> None:
        last_sent = time.monotonic()
        if self.cfg.start_on_login:
            log.info("exchange: the feed starts at the first OUCH login")
            while not self.stats["logins"]:
                if time.monotonic() - last_sent >= self.cfg.heartbeat_s:
                    self._sendto_all(mold.header(self.session, 1, 0))
                    last_sent = time.monotonic()
                await asyncio.sleep(0.01)
            log.info("exchange: first login: the feed starts")
            self.t0 = time.monotonic()
        while True:
            if self.down:  # restart fault
                await asyncio.sleep(0.01)
                continue
            now = time.monotonic()
            if self.publish_due(now):
                last_sent = now
            elif now - last_sent >= self.cfg.heartbeat_s:
                self._sendto_all(mold.header(self.session, self.published + 1, 0))
                last_sent = now
            await asyncio.sleep(0.001 if self.published < self.feed.messages else 0.05)

    # -- order entry --------------------------------------------------------------------------
    def account(self, name: str) -> _Account:
        a = self.accounts.get(name)
        if a is None:
            a = self.accounts[name] = _Account(name)
        return a

    def sequenced(self, acct: _Account, msg: bytes) -> None:
        acct.log.append(msg)
        if acct.conn is not None:
            acct.conn.send_sequenced(msg)

    def _ts(self) -> int:
        """OUCH timestamp: ns since midnight US/Eastern (the exchange's clock), now."""
        from datetime import datetime
        from zoneinfo import ZoneInfo

        from bot4.marketdata.lobster import EXCHANGE_TZ

        t = time.time_ns()
        lt = datetime.fromtimestamp(t // 1_000_000_000, ZoneInfo(EXCHANGE_TZ))
        return ((lt.hour * 60 + lt.minute) * 60 + lt.second) * 1_000_000_000 + t % 1_000_000_000

    def _order_record(self, action, coid, orig, inst, side, qty, price, tif) -> np.ndarray:
        self.order_seq += 1
        r = self.rec
        r[:] = 0
        r0 = r[0]
        r0["seq"] = self.order_seq
        r0["action"] = action
        r0["client_order_id"] = coid
        r0["orig_client_order_id"] = orig
        r0["instrument"] = inst
        r0["side"] = side
        r0["qty"] = qty
        r0["limit_price"] = price
        r0["order_type"] = OT_LIMIT
        r0["tif"] = tif
        r0["ts_order_ns"] = time.monotonic_ns()
        return r

    def on_enter(self, acct: _Account, m, arrived_ns: int = 0) -> None:
        token = bytes(m["token"])
        if self.cfg.latency_log:
            self.enter_log.append((token, arrived_ns))
        if token in acct.tokens:
            self.stats["duplicate_tokens"] += 1  # OUCH: a repeated token is ignored
            return
        iid = self.next_internal
        self.next_internal += 1
        acct.tokens[token] = iid
        self.stats["enters"] += 1
        stock = bytes(m["stock"])
        side_b = bytes(m["side"])
        o = _Order(token, acct.name, stock, side_b, int(m["price"]), int(m["shares"]), 0,
                   int(m["tif"]), self.order_seq + 1)  # fmt: skip
        self.orders[iid] = o
        inst = self.ids.get(stock)
        reason = None
        if inst is None:
            reason = ouch.REJECT_INVALID_STOCK
        elif o.shares <= 0:
            reason = ouch.REJECT_INVALID_SHARES
        elif o.price <= 0:
            reason = ouch.REJECT_INVALID_PRICE
        if reason is not None:
            o.live = False
            self.sequenced(acct, ouch.message(ouch.REJECTED, type=b"J", ts=self._ts(),
                                              token=token, reason=reason))  # fmt: skip
            return
        side = SIDE_BUY if side_b == b"B" else SIDE_SELL
        tif = TIF_IOC if o.tif == ouch.TIF_IOC else TIF_DAY
        rec = self._order_record(ACTION_NEW, iid, 0, inst, side, o.shares, o.price, tif)
        self.venue.on_orders(rec, time.monotonic_ns())
        self._route()

    def on_replace(self, acct: _Account, m) -> None:
        token, new = bytes(m["token"]), bytes(m["new_token"])
        iid = acct.tokens.get(token)
        if new in acct.tokens:
            self.stats["duplicate_tokens"] += 1
            return
        if iid is None or not self.orders[iid].live:
            return  # OUCH: a replace of an order that is not live is ignored
        o = self.orders[iid]
        nid = self.next_internal
        self.next_internal += 1
        acct.tokens[new] = nid
        n = _Order(new, acct.name, o.stock, o.side, int(m["price"]), int(m["shares"]), o.cum,
                   int(m["tif"]), self.order_seq + 1, o.order_ref, token)  # fmt: skip
        self.orders[nid] = n
        inst = self.ids[o.stock]
        side = SIDE_BUY if o.side == b"B" else SIDE_SELL
        rec = self._order_record(
            ACTION_REPLACE, nid, iid, inst, side, o.cum + n.shares, n.price, TIF_DAY
        )
        self.venue.on_orders(rec, time.monotonic_ns())
        self._route()

    def on_cancel(self, acct: _Account, m, reason: bytes = ouch.CANCEL_USER) -> None:
        iid = acct.tokens.get(bytes(m["token"]))
        if iid is None or not self.orders[iid].live:
            return  # OUCH: a cancel of an order that is not live is ignored
        o = self.orders[iid]
        inst = self.ids[o.stock]
        side = SIDE_BUY if o.side == b"B" else SIDE_SELL
        want = int(m["shares"])
        if want > 0 and want < o.shares:  # reduce to `want` open shares: keeps priority
            rec = self._order_record(ACTION_REPLACE, 0, iid, inst, side, o.cum + want, 0, TIF_DAY)
        else:
            rec = self._order_record(ACTION_CANCEL, 0, iid, inst, side, 0, 0, TIF_DAY)
        o.cancel_reason = reason
        self.venue.on_orders(rec, time.monotonic_ns())
        self._route()

    def cancel_on_disconnect(self, acct: _Account) -> None:
        live = [iid for iid, o in self.orders.items() if o.live and o.account == acct.name]
        for iid in live:
            self.on_cancel(acct, {"token": self.orders[iid].token, "shares": 0}, ouch.CANCEL_SYSTEM)
        self.stats["disconnect_cancels"] += len(live)

    def _route(self) -> None:
        """Turn the venue's released reports into OUCH messages on their accounts' logs."""
        while True:
            n = self.venue.release(self.rep, time.monotonic_ns(), self.match + 1)
            if n == 0:
                return
            self.match += n
            for e in self.rep[:n]:
                self._report(e)

    def _report(self, e) -> None:
        iid = int(e["client_order_id"])
        o = self.orders.get(iid)
        if o is None:
            return
        acct = self.accounts[o.account]
        et = int(e["exec_type"])
        ts = self._ts()
        tok = o.token
        if et == EXEC_ACK:
            o.order_ref = int(e["order_id"])
            msg = ouch.message(
                ouch.ACCEPTED, type=b"A", ts=ts, token=tok, side=o.side, shares=o.shares,
                stock=o.stock, price=o.price, tif=o.tif, firm=b"BOT4", display=b"Y",
                order_ref=o.order_ref, capacity=b"A", iso=b"N", min_qty=0, cross_type=b"N",
                order_state=b"L",
            )  # fmt: skip
        elif et == EXEC_REPLACED:
            leaves = int(e["leaves_qty"])
            if o.prev_token:  # a Replace: the new token takes over
                prev = self.orders[acct.tokens[o.prev_token]]
                prev.live = False
                o.shares = leaves
                msg = ouch.message(
                    ouch.REPLACED, type=b"U", ts=ts, token=tok, side=o.side, shares=leaves,
                    stock=o.stock, price=o.price, tif=o.tif, firm=b"BOT4", display=b"Y",
                    order_ref=o.order_ref, capacity=b"A", iso=b"N", min_qty=0,
                    cross_type=b"N", order_state=b"L", prev_token=o.prev_token,
                )  # fmt: skip
                o.prev_token = b""
            else:  # a Cancel to fewer shares
                dec = o.shares - leaves
                o.shares = leaves
                msg = ouch.message(ouch.CANCELED, type=b"C", ts=ts, token=tok, decrement=dec,
                                   reason=getattr(o, "cancel_reason", ouch.CANCEL_USER))  # fmt: skip
        elif et in (EXEC_PARTIAL_FILL, EXEC_FILL):
            q = int(e["last_qty"])
            o.shares -= q
            o.cum += q
            if o.shares <= 0:
                o.live = False
            self.stats["fills"] += 1
            self.stats["filled_qty"] += q
            key = f"{acct.name}:{o.stock.decode().strip()}"
            self.net[key] = self.net.get(key, 0) + (q if o.side == b"B" else -q)
            liq = b"R" if int(e["parent_seq"]) == o.entry_seq else b"A"
            msg = ouch.message(ouch.EXECUTED, type=b"E", ts=ts, token=tok, shares=q,
                               price=int(e["last_price"]), liquidity=liq,
                               match=int(e["exec_id"]))  # fmt: skip
            f = self.cfg.faults
            n = self.stats["fills"]
            if (
                (f.bust_every and n % f.bust_every == 0)
                or n in f.bust_fills
                or int(e["exec_id"]) in f.bust_matches
            ):  # fault: this execution is broken
                self.sequenced(acct, msg)
                self.stats["busts"] += 1
                self.net[key] -= q if o.side == b"B" else -q
                log.info("exchange: fault: breaking execution %d (fill %d, %s, %d shares)",
                         int(e["exec_id"]), n, tok.decode(), q)  # fmt: skip
                msg = ouch.message(ouch.BROKEN_TRADE, type=b"B", ts=self._ts(), token=tok,
                                   match=int(e["exec_id"]), reason=ouch.BROKEN_ERRONEOUS)  # fmt: skip
        elif et in (EXEC_CANCELLED, EXEC_EXPIRED):
            if o.prev_token:  # a Replace refused because the order was gone
                o.live = False
                return
            dec = o.shares
            o.shares = 0
            o.live = False
            reason = getattr(o, "cancel_reason", None)
            if reason is None:
                reason = (
                    ouch.CANCEL_IOC if int(e["parent_seq"]) == o.entry_seq else ouch.CANCEL_USER
                )
            msg = ouch.message(ouch.CANCELED, type=b"C", ts=ts, token=tok, decrement=dec,
                               reason=reason)  # fmt: skip
        elif et in (EXEC_STP_EXPIRED, EXEC_STP_DECREMENTED):
            prevented = int(e["prevented_qty"])
            leaves = int(e["leaves_qty"])
            dec = o.shares - leaves
            o.shares = leaves
            if et == EXEC_STP_EXPIRED or leaves == 0:
                o.live = False
            msg = ouch.message(ouch.AIQ_CANCELED, type=b"D", ts=ts, token=tok, decrement=dec,
                               reason=ouch.CANCEL_SELF_MATCH, prevented=prevented, price=0,
                               liquidity=b" ")  # fmt: skip
        elif et == EXEC_REJECTED:
            o.live = False
            if o.prev_token:
                return  # a refused Replace: the original order stands, nothing to say
            msg = ouch.message(ouch.REJECTED, type=b"J", ts=ts, token=tok,
                               reason=ouch.REJECT_OTHER)  # fmt: skip
        elif et == EXEC_CANCEL_REJECTED:
            msg = ouch.message(ouch.CANCEL_REJECT, type=b"I", ts=ts, token=tok)
        else:
            return
        self.sequenced(acct, msg)

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


class OuchConnection(asyncio.Protocol):
    """One SoupBinTCP connection of the exchange (the server side)."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.framer = soup.Framer()
        self.acct: _Account | None = None
        self.sent_seq = 0
        self.last_sent = self.last_recv = time.monotonic()
        self.closed = False
        self.cut_after = ex.cfg.faults.cut_after()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.hb = asyncio.get_running_loop().create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        while not self.closed:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if now - self.last_recv > soup.TIMEOUT_S:
                log.warning("exchange: session %s silent for 15 s: closed", self._name())
                self.transport.close()
                return
            if self.acct is not None and now - self.last_sent >= soup.HEARTBEAT_S:
                self._write(soup.packet(soup.SERVER_HEARTBEAT))

    def _name(self) -> str:
        return self.acct.name if self.acct else "(not logged in)"

    def _write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)
            self.last_sent = time.monotonic()

    def send_sequenced(self, msg: bytes) -> None:
        self._write(soup.packet(soup.SEQUENCED, msg))
        self.sent_seq += 1
        n = self.cut_after
        if n and self.sent_seq >= n and not self.closed:
            log.info("exchange: fault: disconnecting %s after %d messages", self._name(), n)
            self.transport.close()
            self.closed = True

    def data_received(self, data: bytes) -> None:
        self.arrived_ns = time.monotonic_ns()
        self.last_recv = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except soup.FrameError as exc:
            self._drop(f"bad frame: {exc}")
            return
        for ptype, payload in frames:
            if self.closed:
                return
            if self.acct is None:
                if ptype != soup.LOGIN_REQUEST:
                    self._drop(f"packet {chr(ptype)!r} before login")
                    return
                self._login(payload)
                continue
            if ptype == soup.UNSEQUENCED:
                try:
                    self._unsequenced(payload)
                except Exception:  # a bug must not end every session
                    self.ex.stats["errors"] += 1
                    log.exception("exchange: message from %s not handled", self._name())
            elif ptype == soup.LOGOUT_REQUEST:
                self.transport.close()
                self.closed = True
            elif ptype in (soup.CLIENT_HEARTBEAT, soup.DEBUG):
                pass
            else:
                self._drop(f"unexpected packet {chr(ptype)!r}")
                return

    def _drop(self, why: str) -> None:
        self.ex.stats["bad_frames"] += 1
        log.warning("exchange: session %s ended: %s", self._name(), why)
        self.transport.close()
        self.closed = True

    def _login(self, payload: bytes) -> None:
        ex = self.ex
        try:
            user, password, session, seq = soup.parse_login_request(payload)
        except ValueError as exc:
            self._drop(str(exc))
            return
        users = ex.cfg.users
        if ex.cfg.faults.refuse_login or (users and users.get(user) != password):
            ex.stats["refused"] += 1
            self._write(soup.packet(soup.LOGIN_REJECTED, soup.REJECT_NOT_AUTHORIZED))
            self.transport.close()
            self.closed = True
            return
        if session and session != ex.cfg.session:
            ex.stats["refused"] += 1
            self._write(soup.packet(soup.LOGIN_REJECTED, soup.REJECT_SESSION_UNAVAILABLE))
            self.transport.close()
            self.closed = True
            return
        acct = ex.account(user)
        if acct.conn is not None and not acct.conn.closed:
            acct.conn._drop("replaced by a new login")
        nxt = len(acct.log) + 1
        start = nxt if seq == 0 else min(max(seq, 1), nxt)
        self.acct = acct
        acct.conn = self
        ex.stats["logins"] += 1
        self._write(soup.login_accepted(ex.cfg.session, start))
        for msg in acct.log[start - 1 :]:
            if self.closed:
                break
            self.send_sequenced(msg)
        log.info("exchange: %s logged in at %d (%d replayed)", user, start, nxt - start)

    def _unsequenced(self, payload: bytes) -> None:
        try:
            m = ouch.decode(b"in", payload)
        except ValueError as exc:
            self._drop(str(exc))
            return
        t = bytes(m["type"])
        if t == b"O":
            self.ex.on_enter(self.acct, m, self.arrived_ns)
        elif t == b"U":
            self.ex.on_replace(self.acct, m)
        else:
            self.ex.on_cancel(self.acct, m)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.hb.cancel()
        acct = self.acct
        if acct is not None:
            log.info("exchange: %s disconnected (%s)", acct.name, exc or "closed")
        if acct is not None and acct.conn is self:
            acct.conn = None
            if self.ex.cfg.cancel_on_disconnect:
                self.ex.cancel_on_disconnect(acct)


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
