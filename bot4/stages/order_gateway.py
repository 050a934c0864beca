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

Parts: this module holds the stage (params, setup, the write-ahead file, the duty cycle,
QUERY answers); :mod:`bot4.stages.order_gateway_session` the SoupBinTCP session
(:class:`~bot4.stages.order_gateway_session.SoupSession`) and
:mod:`bot4.stages.order_gateway_ouch` the OUCH encoding of orders and decoding of reports
(:class:`~bot4.stages.order_gateway_ouch.OuchCodec`), both mixins of the stage class.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    ACTION_QUERY,
    ACTION_REPLACE,
    EXEC_REPORT,
    EXEC_STATUS,
    ORDER,
    OS_NONE,
)
from bot4.records.errors import Code
from bot4.stages.base import ParamError, Stage, check_number, check_type
from bot4.stages.md_gateway import parse_addr
from bot4.stages.order_gateway_ouch import _OUTQ, OuchCodec, _Order
from bot4.stages.order_gateway_session import SoupSession

log = logging.getLogger("bot4.stage")


class OrderGatewayStage(SoupSession, OuchCodec, Stage):
    kind = "order_gateway"
    event_loop = True  # its process runs bot4.stages.loop_async
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
