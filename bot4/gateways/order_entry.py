"""The exchange simulator's order entry (``bot4 exchange serve``): OUCH 4.2 Enter, Replace
and Cancel messages of an account turned into ORDER records for the venue
(:class:`bot4.venue.matching.Venue`), and the venue's execution reports turned back into
OUCH messages on the account's sequenced log (Accepted, Replaced, Canceled, Executed, AIQ
Canceled, Rejected, Cancel Reject; a Broken Trade after an Executed when a bust fault picks
it). Tokens are day-unique per account. A mixin of :class:`~bot4.gateways.exchange.Exchange`,
whose ``__init__`` sets the state it uses (``cfg``, ``venue``, ``ids``, ``accounts``,
``orders``, ``next_internal``, ``order_seq``, ``match``, ``rep``, ``rec``, ``stats``,
``net``, ``enter_log``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from bot4.gateways import ouch
from bot4.gateways.ouch_server import _Account
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
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)

log = logging.getLogger("bot4.exchange")


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


class OrderEntry:
    """OUCH order entry against the venue, and the venue's reports as OUCH (module doc)."""

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
