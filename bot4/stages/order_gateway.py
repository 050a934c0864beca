"""``order_gateway``: ORDER records -> OUCH 4.2 over SoupBinTCP 4.0; OUCH -> EXEC_REPORT.

Rings: input 0 ``venue_orders`` (ORDER, from the orders stage), output 0 ``venue_execs``
(EXEC_REPORT, to the orders stage): the same port as the in-process venue stage, so a
topology switches between them without a code change.

**Orders out.** NEW -> Enter Order (token = :func:`bot4.gateways.ouch.token_of` of the
client order id; limit price; TIF 0 for IOC / FOK / market, else 99999; FOK sets the
minimum quantity to the shares; a market order becomes an IOC at the extreme price);
REPLACE -> Replace Order (existing token = ``orig_client_order_id``'s, replacement token =
the REPLACE's new ``client_order_id``'s, shares = the new open quantity, i.e. the new total
minus what has filled); CANCEL -> Cancel Order (shares 0); CANCEL_ALL -> one Cancel per live
order of the instrument (0 = all); QUERY -> answered by the gateway itself with STATUS from
its view of the order (OUCH has no status query; the view is the exchange's, rebuilt by
replay). Every ORDER is appended to the gateway's write-ahead file before it is sent
(``$BOT4_DATA_DIR/gateway/<instance>/<stage>.s<session>.orders``: raw ORDER records), which
gives a restarted gateway the bot4 fields OUCH does not carry (order id, strategy, stamps).

**Reports in.** Accepted -> ACK; Executed -> PARTIAL_FILL / FILL (``exec_id`` = the
exchange's match number); Canceled -> CANCELLED; AIQ Canceled -> STP_EXPIRED /
STP_DECREMENTED (``prevented_qty``); Replaced -> REPLACED (under the new client order id);
Rejected -> REJECTED; Cancel Reject -> CANCEL_REJECTED. A report that is no execution has
``exec_id`` = 2^63 | its SoupBinTCP sequence number, so ids never collide with match
numbers and are unique per (venue, day). ``venue`` = the ``venue_id`` param, ``parent_seq``
= the message's SoupBinTCP sequence number, ``ts_venue_ns`` = the host receive stamp
(monotonic, so latencies can be read off it). Broken Trade -> BROKEN (a trade bust) for
the execution of its match number, as this gateway saw it executed: ``exec_id`` =
``BROKEN_EXEC_ID_BIT`` | the match number, ``last_qty`` / ``last_price`` / ``side`` / order
fields those of the broken fill, ``cum_qty`` / ``leaves_qty`` / ``status`` the order's as
they are (a busted order is not reopened), logged at WARNING with the reason (E clearly
erroneous, C consent, S supervisory, X external). A bust of a match number this gateway
never saw executed (or saw busted already) is counted (``unknown_busts`` /
``repeated_busts``) and logged at ERROR, and publishes nothing. The executions are known
from the session's replay from sequence 1 like everything else, so a restarted gateway
matches a bust as the first process did, and publishes it once (``parent_seq`` resume
below). Messages about tokens this session did not send (another session of the same
account) are counted and not published.

**Session.** Login with requested sequence number 1 on the first connection of a process
(so the whole day's messages rebuild the token set and the orders), the next expected
number on a reconnect. Messages up to the last one already published (the ``parent_seq``
of the last record on ``venue_execs``, read back at start) are applied without being
published again: a SIGKILL loses and duplicates nothing. Orders wait in their ring
(``input_ready`` False) until the replay is over (a server heartbeat, or
``replay_quiet_ms`` without a sequenced message). Then what was in flight at the break is
resolved by token: an Enter / Replace whose token the exchange never acknowledged, or a
Cancel of an order still live, is sent again; the exchange ignores a repeated token, so an
order can never be entered twice. Heartbeats: one after 1 s without sending; the
connection is dropped after 15 s without receiving, and re-established with backoff
(0.1 s doubling to 2 s). Throttle: at most ``throttle`` orders/s per session (token bucket,
burst = one batch).

params: ``connect`` (``"127.0.0.1:31002"``), ``username`` (``"bot4"``), ``password``
(``""``), ``session`` (``""`` = the current one), ``symbols`` (every instrument of the
table: instrument id -> OUCH stock), ``venue_id`` (1), ``throttle`` (1000 orders/s, 0 =
off), ``replay_quiet_ms`` (20), ``firm`` (``"BOT4"``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import numpy as np

from bot4.gateways import ouch, soup
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    BROKEN_EXEC_ID_BIT,
    EXEC_ACK,
    EXEC_BROKEN,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_REPORT,
    EXEC_STATUS,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    ORDER,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OS_REJECTED,
    OT_MARKET,
    SIDE_BUY,
    TIF_FOK,
    TIF_IOC,
)
from bot4.records.errors import Code
from bot4.stages.base import ParamError, Stage, check_number, check_type
from bot4.stages.md_gateway import parse_addr

log = logging.getLogger("bot4.stage")

NON_EXEC_ID_BIT = 1 << 63
_OUTQ = 1 << 14


class _Order:
    """The gateway's view of one order (one token)."""

    __slots__ = ("coid", "order_id", "instrument", "strategy", "side", "qty", "cum", "leaves",
                 "price", "ts_event", "ts_recv", "ts_order", "live", "acked", "status")  # fmt: skip

    def __init__(self, r) -> None:
        self.coid = int(r["client_order_id"])
        self.order_id = int(r["order_id"])
        self.instrument = int(r["instrument"])
        self.strategy = int(r["strategy"])
        self.side = int(r["side"])
        self.qty = int(r["qty"])
        self.cum = 0
        self.leaves = int(r["qty"])
        self.price = int(r["limit_price"])
        self.ts_event = int(r["ts_event_ns"])
        self.ts_recv = int(r["ts_recv_ns"])
        self.ts_order = int(r["ts_order_ns"])
        self.live = False
        self.acked = False  # the exchange answered the Enter / Replace (any way)
        self.status = OS_NONE


class _Soup(asyncio.Protocol):
    def __init__(self, gw: OrderGatewayStage) -> None:
        self.gw = gw
        self.framer = soup.Framer()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.gw.on_connected(self)

    def data_received(self, data: bytes) -> None:
        self.gw.on_data(self, data)

    def connection_lost(self, exc) -> None:
        self.gw.on_lost(self, exc)


class OrderGatewayStage(Stage):
    kind = "order_gateway"
    arity = (1, 1, 1, 1)
    input_types = ("ORDER",)
    output_types = ("EXEC_REPORT",)
    max_out_per_in = 1
    restart_state = (
        "nothing: orders come back from the write-ahead file, their state and the tokens "
        "the exchange has from SoupBinTCP replay from sequence 1"
    )
    #: live in ``bot4 stats`` (docs/gateways.md): OUCH messages sent and resent after a
    #: reconnect, reports received, TCP connects, SoupBinTCP logins and refused logins,
    #: disconnects, malformed frames, orders held back by the throttle, exchange session
    #: resets, socket errors, ORDER records refused
    counter_names = ("sent", "resent", "reports", "connects", "logins", "login_rejects",
                     "disconnects", "bad_frames", "throttled", "session_resets", "errors",
                     "bad_actions")  # fmt: skip
    params_keys = frozenset(
        {
            "connect",
            "username",
            "password",
            "session",
            "symbols",
            "venue_id",
            "throttle",
            "replay_quiet_ms",
            "firm",
        }  # fmt: skip
    )

    @staticmethod
    def process_main(topology, name: str) -> int:
        from bot4.gateways.runner import gateway_main

        return gateway_main(topology, name)

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        if "connect" in params:
            parse_addr(params["connect"], "connect")
        for key, width in (("username", 6), ("password", 10), ("session", 10), ("firm", 4)):
            check_type(params, key, str, "a string")
            if key in params and len(params[key]) > width:
                raise ParamError(key, f"at most {width} characters")
        check_type(params, "symbols", list, "a list of symbols")
        check_number(params, "venue_id", integer=True, lo=1, hi=255)
        check_number(params, "throttle", lo=0)
        check_number(params, "replay_quiet_ms", lo=1)

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        from bot4.paths import data_dir
        from bot4.records import DEFAULT_INSTRUMENTS

        p = self.params
        self.addr = parse_addr(p.get("connect", "127.0.0.1:31002"), "connect")
        self.username = p.get("username", "bot4")
        self.password = p.get("password", "")
        self.req_session = p.get("session", "")
        self.venue_id = int(p.get("venue_id", 1))
        self.throttle = float(p.get("throttle", 1000))
        self.quiet_ns = int(float(p.get("replay_quiet_ms", 20)) * 1e6)
        self.firm = p.get("firm", "BOT4").encode().ljust(4)
        symbols = p.get("symbols") or list(DEFAULT_INSTRUMENTS.symbols)
        self.stock = {DEFAULT_INSTRUMENTS.id_of(s): s.encode().ljust(8) for s in symbols}
        self.orders: dict[int, _Order] = {}  # client order id -> order
        self.inflight: dict[bytes, tuple[str, bytes]] = {}  # token -> (kind, OUCH message)
        # match number -> (order, shares, price) of every execution of the session, and the
        # match numbers busted: what a Broken Trade is matched against
        self.executions: dict[int, tuple[_Order, int, int]] = {}
        self.busted: set[int] = set()
        self.outq = np.zeros(_OUTQ, EXEC_REPORT)
        self.out_n = 0
        self.published_seq = 0  # SoupBinTCP sequence of the last report on venue_execs
        self.next_expected = 1
        self.proto = None
        self.logged_in = False
        self.caught_up = False
        self.first_login = True
        self.last_msg_ns = 0
        self.last_sent = self.last_recv = time.monotonic()
        self.bucket = self.throttle if self.throttle > 0 else 0.0
        self.bucket_t = time.monotonic()
        self.waker = None
        self.stopping = False
        self.c = {k: 0 for k in ("sent", "resent", "skipped_resend", "reports", "replayed",
                                  "foreign", "broken_trades", "unknown_busts",
                                  "repeated_busts", "connects", "logins",
                                  "login_rejects", "disconnects", "bad_frames", "queries",
                                  "throttled", "outq_full", "errors", "bad_actions",
                                  "session_resets")}  # fmt: skip
        d = data_dir() / "gateway" / self.instance
        self.wal_path = d / f"{self.spec.name}.s{self.session}.orders"
        self.wal_seqs: set[int] = set()
        if self.wal_path.exists():
            raw = self.wal_path.read_bytes()
            n = len(raw) // ORDER.itemsize  # a torn last record (killed mid-write) is ignored
            for r in np.frombuffer(raw[: n * ORDER.itemsize], ORDER):
                self._remember(r)
            log.info("order_gateway: %d orders from the write-ahead file", n)
        self.wal = -1  # opened at the first order (bot4 warm runs setup and creates nothing)

    def _remember(self, r) -> None:
        self.wal_seqs.add(int(r["seq"]))
        a = int(r["action"])
        if a == ACTION_NEW:
            self.orders[int(r["client_order_id"])] = _Order(r)
        elif a == ACTION_REPLACE:
            old = self.orders.get(int(r["orig_client_order_id"]))
            if old is not None:
                n = _Order(r)
                n.order_id, n.instrument, n.strategy, n.side = (
                    old.order_id, old.instrument, old.strategy, old.side)  # fmt: skip
                if n.price == 0:
                    n.price = old.price
                self.orders[n.coid] = n

    # -- network ------------------------------------------------------------------------------
    def bind(self, runner, waker) -> None:
        self.runner = runner
        self.waker = waker
        out = runner.outs[0]
        pos = out.producer_position
        # the last report published from a SoupBinTCP message (STATUS answers to QUERY
        # carry the ORDER's seq instead): everything up to it is on the ring already
        for back in range(1, min(pos, out.capacity) + 1):
            last = out.slots[(pos - back) & out.mask]
            if int(last["venue"]) != self.venue_id:
                break
            if int(last["exec_type"]) != EXEC_STATUS:
                self.published_seq = int(last["parent_seq"])
                break
        if self.published_seq:
            log.info("order_gateway: resuming after SoupBinTCP message %d", self.published_seq)

    async def open(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._session())

    async def shut(self) -> None:
        self.stopping = True
        if self.proto is not None and self.logged_in:
            self.proto.transport.write(soup.packet(soup.LOGOUT_REQUEST))
        self.task.cancel()
        if self.proto is not None:
            self.proto.transport.close()
        if self.wal >= 0:
            os.close(self.wal)
            self.wal = -1

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while not self.stopping:
            try:
                await loop.create_connection(lambda: _Soup(self), *self.addr)
            except OSError as exc:
                log.warning("order_gateway: connect %s:%d: %s", *self.addr, exc)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            backoff = 0.1
            while self.proto is not None and not self.stopping:
                await asyncio.sleep(0.1)
                now = time.monotonic()
                if now - self.last_recv > soup.TIMEOUT_S:
                    log.warning("order_gateway: exchange silent for 15 s: reconnecting")
                    self.proto.transport.close()
                elif self.logged_in and now - self.last_sent >= soup.HEARTBEAT_S:
                    self._write(soup.packet(soup.CLIENT_HEARTBEAT))
                self._check_quiet(time.monotonic_ns())
            await asyncio.sleep(backoff)

    def _write(self, data: bytes) -> None:
        if self.proto is not None:
            self.proto.transport.write(data)
            self.last_sent = time.monotonic()

    def on_connected(self, proto) -> None:
        self.proto = proto
        self.c["connects"] += 1
        self.logged_in = self.caught_up = False
        self.last_recv = time.monotonic()
        seq = 1 if self.first_login else self.next_expected
        self._write(soup.login_request(self.username, self.password, self.req_session, seq))

    def on_lost(self, proto, exc=None) -> None:
        if proto is self.proto:
            self.proto = None
            self.c["disconnects"] += 1
            if self.logged_in and not self.stopping:
                log.warning(
                    "order_gateway: connection lost at sequence %d (%s)",
                    self.next_expected,
                    exc or "closed by the exchange",
                )
            self.logged_in = self.caught_up = False

    def on_data(self, proto, data: bytes) -> None:
        self.last_recv = time.monotonic()
        try:
            frames = proto.framer.feed(data)
        except soup.FrameError as exc:
            self._bad(proto, str(exc))
            return
        for ptype, payload in frames:
            if ptype == soup.SEQUENCED:
                if not self.logged_in:
                    self._bad(proto, "sequenced data before login")
                    return
                try:
                    self._sequenced(payload)
                except Exception:  # a bug must not end the session nor lose the next ones
                    self.c["errors"] += 1
                    log.exception("order_gateway: message %d not handled", self.next_expected - 1)
            elif ptype == soup.SERVER_HEARTBEAT:
                if self.logged_in and not self.caught_up:
                    self._caught_up()
            elif ptype == soup.LOGIN_ACCEPTED:
                try:
                    session, seq = soup.parse_login_accepted(payload)
                except ValueError as exc:
                    self._bad(proto, str(exc))
                    return
                self.logged_in = True
                if not self.first_login and seq < self.next_expected:
                    self._session_reset(seq)
                self.first_login = False
                self.next_expected = seq
                self.last_msg_ns = time.monotonic_ns()
                self.c["logins"] += 1
                log.info("order_gateway: logged in to session %s at %d", session, seq)
            elif ptype == soup.LOGIN_REJECTED:
                self.c["login_rejects"] += 1
                log.error("order_gateway: login rejected (%r)", payload)
            elif ptype == soup.END_OF_SESSION:
                log.warning("order_gateway: end of session")
            elif ptype == soup.DEBUG:
                pass
            else:
                self._bad(proto, f"unknown packet type {ptype!r}")
                return
        if self.waker is not None and self.out_n:
            self.waker.wake()

    def _bad(self, proto, why: str) -> None:
        self.c["bad_frames"] += 1
        log.error("order_gateway: session ended: %s", why)
        proto.transport.close()

    def _session_reset(self, seq: int) -> None:
        """The exchange's session is shorter than what this gateway has seen: it lost its
        day (a new exchange process under the same session name). Nothing can be replayed
        from it; the orders it does not know are the operator's (and the OMS's
        reconciliation's) to settle. Counted once per reset, logged at ERROR."""
        self.c["session_resets"] += 1
        log.error("order_gateway: the exchange's session restarts at message %d, this gateway "
                  "had %d: the exchange lost its day; orders sent before are unknown there",
                  seq, max(self.next_expected, self.published_seq + 1))  # fmt: skip

    def _caught_up(self) -> None:
        self.caught_up = True
        if self.next_expected <= self.published_seq and not self.c["session_resets"]:
            self._session_reset(self.next_expected)  # a restarted gateway found a shorter day
        resend = list(self.inflight.items())
        for token, (kind, msg) in resend:
            o = self.orders.get(ouch.coid_of(token))
            if kind == "cancel" and (o is None or not o.live):
                del self.inflight[token]
                continue
            if kind != "cancel" and o is not None and o.acked:
                del self.inflight[token]
                continue
            self._write(soup.packet(soup.UNSEQUENCED, msg))
            self.c["resent"] += 1
        if self.waker is not None:
            self.waker.wake()

    # -- OUCH in ------------------------------------------------------------------------------
    def _sequenced(self, payload: bytes) -> None:
        seq = self.next_expected
        self.next_expected += 1
        self.last_msg_ns = time.monotonic_ns()
        publish = seq > self.published_seq
        if not publish:
            self.c["replayed"] += 1
        try:
            m = ouch.decode(b"out", payload)
        except ValueError as exc:
            self.c["bad_frames"] += 1
            log.error("order_gateway: message %d dropped: %s", seq, exc)
            return
        t = bytes(m["type"])
        if t == b"S":
            log.info("order_gateway: system event %r", bytes(m["event"]))
            return
        try:
            coid = ouch.coid_of(bytes(m["token"]))
        except ValueError:
            coid = 0
        o = self.orders.get(coid)
        if o is None:
            self.c["foreign"] += 1
            return
        now = time.monotonic_ns()
        if t == b"A":
            o.acked = o.live = True
            o.status = OS_NEW
            o.leaves = int(m["shares"])
            self._out(publish, seq, o, EXEC_ACK, OS_NEW, 0, 0, 0, 0, now)
        elif t == b"E":
            q, px = int(m["shares"]), int(m["price"])
            o.cum += q
            o.leaves = max(0, o.leaves - q)
            done = o.leaves == 0
            o.live = not done
            o.status = OS_FILLED if done else OS_PARTIALLY_FILLED
            et = EXEC_FILL if done else EXEC_PARTIAL_FILL
            match = int(m["match"])
            self.executions[match] = (o, q, px)
            self._out(publish, seq, o, et, o.status, 0, q, px, 0, now, exec_id=match)
        elif t == b"C":
            dec = int(m["decrement"])
            o.leaves = max(0, o.leaves - dec)
            if o.leaves == 0:
                o.live = False
                o.status = OS_CANCELLED
                self._out(publish, seq, o, EXEC_CANCELLED, OS_CANCELLED, 0, 0, 0, 0, now)
            else:
                o.qty = o.cum + o.leaves
                self._out(publish, seq, o, EXEC_REPLACED, o.status, 0, 0, 0, 0, now)
        elif t == b"D":
            dec, prevented = int(m["decrement"]), int(m["prevented"])
            o.leaves = max(0, o.leaves - dec)
            if o.leaves == 0:
                o.live = False
                o.status = OS_EXPIRED
                et = EXEC_STP_EXPIRED
            else:
                o.qty = o.cum + o.leaves
                et = EXEC_STP_DECREMENTED
            self._out(publish, seq, o, et, o.status, int(Code.SELF_TRADE), 0, 0, prevented, now)
        elif t == b"U":
            try:
                old = self.orders.get(ouch.coid_of(bytes(m["prev_token"])))
            except ValueError:
                old = None
            if old is not None:
                old.live = False
                o.cum = old.cum
            o.acked = o.live = True
            o.leaves = int(m["shares"])
            o.qty = o.cum + o.leaves
            o.price = int(m["price"])
            o.status = OS_PARTIALLY_FILLED if o.cum else OS_NEW
            self._out(publish, seq, o, EXEC_REPLACED, o.status, 0, 0, 0, 0, now)
        elif t == b"J":
            o.acked = True
            o.live = False
            o.status = OS_REJECTED
            self._out(publish, seq, o, EXEC_REJECTED, OS_REJECTED, int(Code.VENUE_REJECTED),
                      0, 0, 0, now)  # fmt: skip
        elif t == b"I":
            self._out(publish, seq, o, EXEC_CANCEL_REJECTED, o.status,
                      int(Code.TOO_LATE_TO_CANCEL), 0, 0, 0, now)  # fmt: skip
        elif t == b"B":
            self._broken(publish, seq, int(m["match"]), bytes(m["reason"]), coid, now)
        if t in (b"A", b"J", b"U", b"C", b"E", b"D", b"I"):
            self.inflight.pop(bytes(m["token"]), None)

    def _broken(self, publish, seq, match, reason, coid, now) -> None:
        """A Broken Trade: BROKEN for the execution ``match`` names (module doc)."""
        fill = self.executions.get(match)
        if fill is None or match >= BROKEN_EXEC_ID_BIT or match in self.busted:
            key = "repeated_busts" if match in self.busted else "unknown_busts"
            self.c[key] += 1
            if publish:
                log.error("order_gateway: broken trade %d (message %d, order %d): %s; nothing "
                          "published, reconcile by hand", match, seq, coid,
                          "busted already" if key == "repeated_busts"
                          else "no execution of this session has that match number")  # fmt: skip
            return
        self.busted.add(match)
        self.c["broken_trades"] += 1
        o, q, px = fill
        if publish:
            log.warning("order_gateway: broken trade %d (reason %r): order %d's fill of %d at "
                        "%d reversed", match, reason, o.coid, q, px)  # fmt: skip
        self._out(publish, seq, o, EXEC_BROKEN, o.status, 0, q, px, 0, now,
                  exec_id=BROKEN_EXEC_ID_BIT | match)  # fmt: skip

    def _out(self, publish, seq, o, et, status, reason, q, px, prevented, now, exec_id=0):
        if not publish:
            return
        if self.out_n >= _OUTQ:
            self.c["outq_full"] += 1  # never: the duty cycle drains the queue every cycle
            log.error("order_gateway: report queue full, message %d not published", seq)
            return
        e = self.outq[self.out_n]
        e["parent_seq"] = seq
        e["exec_id"] = exec_id if exec_id else NON_EXEC_ID_BIT | seq
        e["venue"] = self.venue_id
        e["client_order_id"] = o.coid
        e["order_id"] = o.order_id
        e["instrument"] = o.instrument
        e["strategy"] = o.strategy
        e["side"] = o.side
        e["exec_type"] = et
        e["status"] = status
        e["reason"] = reason
        e["last_qty"] = q
        e["last_price"] = px
        e["cum_qty"] = o.cum
        e["leaves_qty"] = o.leaves if o.live else 0
        e["fee"] = 0
        e["prevented_qty"] = prevented
        e["ts_event_ns"] = o.ts_event
        e["ts_recv_ns"] = o.ts_recv
        e["ts_order_ns"] = o.ts_order
        e["ts_venue_ns"] = now
        self.out_n += 1
        self.c["reports"] += 1

    # -- duty cycle -----------------------------------------------------------------------------
    def _check_quiet(self, now_ns: int) -> None:
        """The replay is over when no sequenced message came for ``replay_quiet_ms``."""
        quiet = self.last_msg_ns and now_ns - self.last_msg_ns > self.quiet_ns
        if self.logged_in and not self.caught_up and quiet:
            self._caught_up()

    def input_ready(self, i: int, now_ns: int) -> bool:
        if not self.caught_up:
            self._check_quiet(time.monotonic_ns())
        if not (self.logged_in and self.caught_up):
            return False
        if self.throttle > 0:
            t = time.monotonic()
            self.bucket = min(self.throttle, self.bucket + (t - self.bucket_t) * self.throttle)
            self.bucket_t = t
            if self.bucket < 1:
                self.c["throttled"] += 1
                return False
        return True

    def process(self, i, batch, outs, counts, seq):
        n = 0
        out = outs[0]
        for r in batch:
            a = int(r["action"])
            if a == ACTION_QUERY:
                n = self._query(r, out, n, seq)
                continue
            if a not in (ACTION_NEW, ACTION_REPLACE, ACTION_CANCEL, ACTION_CANCEL_ALL):
                self.c["bad_actions"] += 1
                continue
            fresh = int(r["seq"]) not in self.wal_seqs
            if fresh:
                self._journal(r)  # before it leaves: a restart knows it
                self._remember(r)
            if a == ACTION_NEW:
                self._send_new(r, fresh)
            elif a == ACTION_REPLACE:
                self._send_replace(r, fresh)
            elif a == ACTION_CANCEL:
                self._send_cancel(int(r["orig_client_order_id"]))
            elif a == ACTION_CANCEL_ALL:
                inst = int(r["instrument"])
                for o in list(self.orders.values()):
                    if o.live and (inst == 0 or o.instrument == inst):
                        self._send_cancel(o.coid)
            if self.throttle > 0:
                self.bucket -= 1
        counts[0] = n
        return seq + n

    def _journal(self, r) -> None:
        if self.wal < 0:
            self.wal_path.parent.mkdir(parents=True, exist_ok=True)
            self.wal = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self.wal, r.tobytes())

    def _query(self, r, out, n, seq):
        self.c["queries"] += 1
        coid = int(r["client_order_id"]) or int(r["orig_client_order_id"])
        o = self.orders.get(coid)
        out[n : n + 1] = 0
        e = out[n]
        e["seq"] = seq + n
        e["parent_seq"] = int(r["seq"])
        e["venue"] = self.venue_id
        e["exec_type"] = EXEC_STATUS
        e["client_order_id"] = coid
        e["order_id"] = int(r["order_id"])
        e["instrument"] = int(r["instrument"])
        e["side"] = int(r["side"])
        e["ts_order_ns"] = int(r["ts_order_ns"])
        e["ts_venue_ns"] = time.monotonic_ns()
        if o is None or not o.acked:
            e["status"] = OS_NONE
            e["reason"] = int(Code.UNKNOWN_ORDER)
        else:
            e["status"] = o.status
            e["cum_qty"] = o.cum
            e["leaves_qty"] = o.leaves if o.live else 0
            e["order_id"] = o.order_id
            e["strategy"] = o.strategy
        return n + 1

    def _send(self, token: bytes, kind: str, msg: bytes) -> None:
        self.inflight[token] = (kind, msg)
        self._write(soup.packet(soup.UNSEQUENCED, msg))
        self.c["sent"] += 1

    def _send_new(self, r, fresh: bool) -> None:
        coid = int(r["client_order_id"])
        token = ouch.token_of(coid)
        o = self.orders[coid]
        if o.acked or (not fresh and token in self.inflight):
            self.c["skipped_resend"] += 1  # the exchange has it (or it is being resent)
            return
        side = int(r["side"])
        price = int(r["limit_price"])
        tif = ouch.TIF_SYSTEM_HOURS
        min_qty = 0
        if int(r["tif"]) in (TIF_IOC, TIF_FOK) or int(r["order_type"]) == OT_MARKET:
            tif = ouch.TIF_IOC
        if int(r["tif"]) == TIF_FOK:
            min_qty = int(r["qty"])
        if int(r["order_type"]) == OT_MARKET or price <= 0:
            price = ouch.MARKET_BUY_PRICE if side == SIDE_BUY else ouch.MARKET_SELL_PRICE
        stock = self.stock.get(int(r["instrument"]), b"?       ")
        msg = ouch.message(
            ouch.ENTER, type=b"O", token=token, side=b"B" if side == SIDE_BUY else b"S",
            shares=int(r["qty"]), stock=stock, price=price, tif=tif, firm=self.firm,
            display=b"Y", capacity=b"A", iso=b"N", min_qty=min_qty, cross_type=b"N",
            customer_type=b"N",
        )  # fmt: skip
        self._send(token, "enter", msg)

    def _send_replace(self, r, fresh: bool) -> None:
        old = self.orders.get(int(r["orig_client_order_id"]))
        new_coid = int(r["client_order_id"])
        n = self.orders.get(new_coid)
        if old is None or n is None or new_coid == old.coid:
            return  # a replace keeping the id cannot be said in OUCH: the OMS always renames
        token = ouch.token_of(new_coid)
        if n.acked or (not fresh and token in self.inflight):
            self.c["skipped_resend"] += 1
            return
        shares = max(0, int(r["qty"]) - old.cum) if int(r["qty"]) > 0 else old.leaves
        price = int(r["limit_price"]) or old.price
        msg = ouch.message(
            ouch.REPLACE, type=b"U", token=ouch.token_of(old.coid), new_token=token,
            shares=shares, price=price, tif=ouch.TIF_SYSTEM_HOURS, display=b"Y", iso=b"N",
            min_qty=0,
        )  # fmt: skip
        self._send(token, "replace", msg)

    def _send_cancel(self, coid: int) -> None:
        o = self.orders.get(coid)
        if o is None:
            return
        token = ouch.token_of(coid)
        self._send(token, "cancel", ouch.message(ouch.CANCEL, type=b"X", token=token, shares=0))

    def pending(self, now_ns: int) -> int:
        return self.out_n

    def emit(self, outs, counts, seq):
        k = min(self.out_n, len(outs[0]))
        out = outs[0]
        out[:k] = self.outq[:k]
        out["seq"][:k] = np.arange(seq, seq + k, dtype=np.uint64)
        if k < self.out_n:
            self.outq[: self.out_n - k] = self.outq[k : self.out_n]
        self.out_n -= k
        counts[0] = k
        return seq + k

    def counter_values(self) -> list[int]:
        return [self.c[k] for k in self.counter_names]

    def summary(self) -> dict:
        live = sum(1 for o in self.orders.values() if o.live)
        return {**self.c, "orders": len(self.orders), "live": live,
                "next_expected": self.next_expected}  # fmt: skip

    def on_drain(self) -> None:
        log.info("order_gateway summary %s", self.summary())
