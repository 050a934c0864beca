"""OUCH 4.2 of the ``order_gateway`` stage (:mod:`bot4.stages.order_gateway`, whose module
doc gives the mapping): ORDER records encoded as Enter / Replace / Cancel Order messages
(what was sent stays in flight until the exchange answers), and the exchange's sequenced
messages decoded into EXEC_REPORT records on the gateway's queue (Broken Trades matched
against the session's executions), with :class:`_Order`, the gateway's view of one order.
:class:`OuchCodec` is a mixin of :class:`~bot4.stages.order_gateway.OrderGatewayStage`,
whose ``setup`` sets the state it uses.
"""

from __future__ import annotations

import logging
import time

from bot4.gateways import ouch, soup
from bot4.records import (
    BROKEN_EXEC_ID_BIT,
    EXEC_ACK,
    EXEC_BROKEN,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
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


class OuchCodec:
    """OUCH out (ORDER -> Enter / Replace / Cancel) and in (messages -> EXEC_REPORT)."""

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
