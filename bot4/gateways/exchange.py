"""The exchange simulator behind ``bot4 exchange serve``: bot4's matching engine
(:class:`bot4.venue.matching.Venue`) served over NASDAQ's wire protocols on uvloop.

* **Market data**: a LOBSTER day converted to ITCH 5.0 (:func:`lobster_to_itch`) published
  in MoldUDP64 packets over UDP (unicast to each ``md_to`` address) at ``rate`` messages/s,
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
send it after the next), ``delay_ms`` (send every packet that much later),
``disconnect_after`` (end an OUCH connection after it has been sent that many sequenced
messages), ``refuse_login`` (reject every login, reason 'A').

One process, one asyncio loop (uvloop): every state change happens on the loop, so the
venue, the logs and the feed need no locks.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from bot4.gateways import itch, mold, ouch, soup
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
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_CROSS_TRADE,
    MD_TRADING_HALT,
    MDF_HALT,
    MDF_QUOTING,
    ORDER,
    OT_LIMIT,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    TIF_IOC,
)

log = logging.getLogger("bot4.exchange")

SNAPSHOT_REF_BASE = 1 << 48  # order references of the synthesised opening orders
LOCATE_BASE = 1  # stock locate codes from 1, in instrument order


# --- LOBSTER -> ITCH ------------------------------------------------------------------------


@dataclass
class Feed:
    """A day as the exchange publishes it: ITCH message ``i`` is ``buf[offsets[i]:offsets
    [i+1]]`` with MoldUDP64 sequence number ``i + 1``; ``venue_md[i]`` is the same message
    as a MARKET_DATA record for the venue (kind 0: nothing for the venue). ``lobster_row[i]``
    is the LOBSTER orderbook row the book equals after message ``i`` (-1: not at a row
    boundary): the ground truth the tests compare a gateway's book with."""

    buf: np.ndarray
    offsets: np.ndarray
    venue_md: np.ndarray
    lobster_row: np.ndarray
    symbols: dict[str, int]
    day: date
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return len(self.offsets) - 1


class _Shadow:
    """The book the feed has described so far (per side: price -> refs in time order),
    with the ITCH rows that change it. Refs >= SNAPSHOT_REF_BASE are synthetic."""

    def __init__(self, inst: int, loc: int, sym: bytes, rows: list, md: list, counts: dict):
        self.inst, self.loc, self.sym = inst, loc, sym
        self.rows, self.md, self.counts = rows, md, counts
        self.orders: dict[int, list] = {}  # ref -> [side, price, qty]
        self.levels = {SIDE_BUY: {}, SIDE_SELL: {}}  # side -> price -> [refs]
        self.prices = {SIDE_BUY: [], SIDE_SELL: []}  # ascending
        self.next_syn = SNAPSHOT_REF_BASE + (inst << 32)

    def _emit(self, ts, t, ref, side, qty, price, match=0, code=b" ", kind=0):
        self.rows.append((t, self.loc, ts, ref, 0, _side(side) if side else b" ", qty, price,
                          match, self.sym, code))  # fmt: skip
        self.md.append((kind, side, price, qty, ref, ts))

    def add(self, ts, ref, side, qty, price):
        self._emit(ts, b"A", ref, side, qty, price, kind=MD_BOOK_ADD)
        self.orders[ref] = [side, price, qty]
        lv = self.levels[side]
        if price not in lv:
            lv[price] = []
            bisect.insort(self.prices[side], price)
        lv[price].append(ref)

    def _gone(self, ref):
        side, price, _ = self.orders.pop(ref)
        lv = self.levels[side]
        lv[price].remove(ref)
        if not lv[price]:
            del lv[price]
            self.prices[side].remove(price)

    def reduce(self, ts, ref, qty, t=b"X", match=0):
        """Cancel (X), execute (E) or delete (D, qty ignored) ``qty`` of ``ref``."""
        o = self.orders[ref]
        side, price = o[0], o[1]
        if t == b"D" or (t == b"X" and qty >= o[2]):
            self._emit(ts, b"D", ref, side, o[2], price, kind=MD_BOOK_DELETE)
            self._gone(ref)
            return
        q = min(qty, o[2])
        kind = MD_BOOK_EXEC if t == b"E" else MD_BOOK_CANCEL
        self._emit(ts, t, ref, side, q, price, match, kind=kind)
        o[2] -= q
        if o[2] <= 0:
            self._gone(ref)

    def level_size(self, side, price) -> int:
        return sum(self.orders[r][2] for r in self.levels[side].get(price, ()))

    def synthetic(self, ts, side, qty, price):
        self.next_syn += 1
        self.add(ts, self.next_syn, side, qty, price)
        self.counts["synthetic_adds"] += 1

    def take(self, ts, side, price, qty):
        """Take ``qty`` out of level (side, price), synthetic orders first, then oldest."""
        refs = sorted(self.levels[side].get(price, ()), key=lambda r: (r < SNAPSHOT_REF_BASE,))
        for r in refs:
            if qty <= 0:
                break
            have = self.orders[r][2]
            self.reduce(ts, r, qty)
            qty -= have

    def align(self, ts, row, levels):
        """Corrections so the visible levels equal LOBSTER's orderbook ``row``."""
        for side, c in ((SIDE_SELL, 0), (SIDE_BUY, 2)):
            truth = {}
            order = []
            for i in range(levels):
                px, sz = int(row[4 * i + c]), int(row[4 * i + c + 1])
                if sz > 0 and 0 < px < 9_999_999_999:
                    truth[px] = sz
                    order.append(px)
            if not order:
                continue
            worst = order[-1]
            prices = self.prices[side]
            if side == SIDE_BUY:
                window = prices[bisect.bisect_left(prices, worst) :]
            else:
                window = prices[: bisect.bisect_right(prices, worst)]
            for px in window:
                have = self.level_size(side, px)
                want = truth.get(px, 0)
                if have > want:
                    self.counts["corrections"] += 1
                    self.take(ts, side, px, have - want)
            for px, want in truth.items():
                have = self.level_size(side, px)
                if have < want:
                    self.counts["corrections"] += 1
                    self.synthetic(ts, side, want - have, px)


def lobster_to_itch(paths: list[str]) -> Feed:
    """Convert LOBSTER pairs (one symbol each, one day) into one ITCH 5.0 message stream.

    The day opens with System Event 'O', a Stock Directory (R) and a Trading Action 'T' per
    symbol. Orders resting before the file starts have no add: the first orderbook row (with
    message 1 taken back out) becomes one synthetic Add per visible level (reference
    ``SNAPSHOT_REF_BASE`` + n). LOBSTER messages become A (1), X (2; D when it takes the
    whole order), D (3), E (4, a match number each), P (5, hidden), Q (6), H (7) with the
    real order references. A cancel, delete or execution of an order never added in the
    file is preceded by the size taken out of the synthetic orders at its price and an A
    of the real reference (ITCH's E / X / D carry only the reference). A level-N message
    file holds only the events that touched the N visible levels, so the messages alone
    drift from LOBSTER's book (docs: lobster README, check 2); after each message the
    simulator re-aligns the visible levels with that message's orderbook row through
    synthetic orders (X / D of stale orders, A of missing size), so the feed describes
    LOBSTER's book at every row and a receiver that applies every message exactly once
    holds it (``lobster_row``). Symbols are merged in time order; the day ends with 'C'."""
    from bot4.marketdata.lobster import find_pairs, local_to_utc_ns, read_pair
    from bot4.records import DEFAULT_INSTRUMENTS
    from bot4.stages.marketdata import lobster_snapshot

    per = []
    day = None
    symbols: dict[str, int] = {}
    for path in paths:
        msgs, book, _rep = read_pair(path)
        if len(msgs) == 0:
            continue
        snap = lobster_snapshot(path)
        inst = int(msgs[0]["instrument"])
        symbols[DEFAULT_INSTRUMENTS.symbol_of(inst)] = inst
        d = find_pairs(path)[0].day
        if day is not None and d != day:
            raise ValueError(f"{path}: day {d} differs from {day}")
        day = d
        per.append((inst, snap, msgs, book))
    if day is None:
        raise ValueError("no LOBSTER messages in " + ", ".join(map(str, paths)))
    midnight = int(local_to_utc_ns(day, np.zeros(1, np.int64))[0])
    t_open = min(int(m[0]["ts_event_ns"]) for _, _, m, _ in per) - midnight
    counts = {"synthetic_adds": 0, "corrections": 0, "carved": 0}
    head: list = [((b"S", 0, t_open, 0, 0, b" ", 0, 0, 0, b"", b"O"), (0, 0, 0, 0, 0, t_open), -1)]
    streams = []
    match = 0
    for k, (inst, snap, msgs, book) in enumerate(per):
        loc = LOCATE_BASE + k
        sym = DEFAULT_INSTRUMENTS.symbol_of(inst).encode().ljust(8)
        for t, code in ((b"R", b" "), (b"H", b"T")):
            head.append(
                ((t, loc, t_open, 0, 0, b" ", 0, 0, 0, sym, code), (0, 0, 0, 0, 0, t_open), -1)
            )
        rows: list = []
        md: list = []
        marks: list = []  # (index in rows after the message, lobster row)
        sh = _Shadow(inst, loc, sym, rows, md, counts)
        for r in snap:
            sh.synthetic(t_open, int(r["side"]), int(r["qty"]), int(r["price"]))
        levels = book.shape[1] // 4
        for r in msgs:
            ts = int(r["ts_event_ns"]) - midnight
            kind, oid, q, px, side = (int(r["kind"]), int(r["order_id"]), int(r["qty"]),
                                      int(r["price"]), int(r["side"]))  # fmt: skip
            if kind in (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC) and oid not in sh.orders:
                counts["carved"] += 1
                sh.take(ts, side, px, q)
                sh.add(ts, oid, side, q, px)
            if kind == MD_BOOK_ADD:
                sh.add(ts, oid, side, q, px)
            elif kind == MD_BOOK_CANCEL:
                sh.reduce(ts, oid, q, b"X")
            elif kind == MD_BOOK_DELETE:
                sh.reduce(ts, oid, q, b"D")
            elif kind == MD_BOOK_EXEC:
                match += 1
                sh.reduce(ts, oid, q, b"E", match)
            elif kind == MD_BOOK_HIDDEN_EXEC:
                match += 1
                sh._emit(ts, b"P", 0, side, q, px, match, kind=MD_BOOK_HIDDEN_EXEC)
            elif kind == MD_CROSS_TRADE:
                match += 1
                sh._emit(ts, b"Q", 0, 0, q, px, match, b"O")
            elif kind == MD_TRADING_HALT:
                fl = int(r["flags"])
                st = b"H" if fl & MDF_HALT else b"Q" if fl & MDF_QUOTING else b"T"
                sh._emit(ts, b"H", 0, 0, 0, 0, 0, st)
            row = int(r["seq"]) - 1
            sh.align(ts, book[row], levels)
            marks.append((len(rows), row))
        lob = np.full(len(rows), -1, np.int64)
        for end, row in marks:
            if end:
                lob[end - 1] = row
        streams.append((rows, md, lob, inst))
    # merge the symbols' streams in time order (each keeps its own order)
    merged = []
    for rows, md, lob, inst in streams:
        for i in range(len(rows)):
            merged.append((rows[i][2], len(merged), rows[i], md[i], int(lob[i]), inst))
    merged.sort(key=lambda x: (x[0], x[1]))
    gens = [h[0] for h in head] + [m[2] for m in merged]
    t_close = gens[-1][2]
    gens.append((b"S", 0, t_close, 0, 0, b" ", 0, 0, 0, b"", b"C"))
    gen = np.array(gens, itch.GENERIC)
    buf, offsets = itch.encode(gen)
    vmd = np.zeros(len(gen), MARKET_DATA)
    lobster_row = np.full(len(gen), -1, np.int64)
    h = len(head)
    if merged:
        mm = np.array([m[3] for m in merged], np.int64)
        sl = slice(h, h + len(merged))
        vmd["kind"][sl] = mm[:, 0]
        vmd["side"][sl] = mm[:, 1]
        vmd["price"][sl] = mm[:, 2]
        vmd["qty"][sl] = mm[:, 3]
        vmd["order_id"][sl] = mm[:, 4].astype(np.uint64)
        vmd["ts_event_ns"][sl] = mm[:, 5] + midnight
        vmd["instrument"][sl] = [m[5] for m in merged]
        lobster_row[sl] = [m[4] for m in merged]
    vmd["seq"] = np.arange(1, len(gen) + 1)
    counts["messages"] = len(gen)
    return Feed(buf, offsets, vmd, lobster_row, symbols, day, counts)


def _side(side: int) -> bytes:
    return b"B" if side == SIDE_BUY else b"S"


# --- the exchange -----------------------------------------------------------------------------


@dataclass
class Faults:
    drop_every: int = 0
    duplicate_every: int = 0
    reorder_every: int = 0
    delay_ms: float = 0.0
    disconnect_after: int = 0
    refuse_login: bool = False


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
        }
        self._held: bytes | None = None
        self.net: dict[str, int] = {}  # "account:symbol" -> signed filled shares
        self.md_sock = None
        self.t0 = time.monotonic()

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
        for _seq, pkt in mold.packets(self.session, 1, self.feed.buf, self.feed.offsets, lo, hi):
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
        for _seq, pkt in mold.packets(self.session, 1, self.feed.buf, self.feed.offsets, lo, hi):
            self.rerequest_sock.sendto(pkt, addr)
        self.stats["resent"] += hi - lo

    async def feed_task(self) -> None:
        last_sent = time.monotonic()
        while True:
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
        lt = time.localtime()
        return ((lt.tm_hour * 60 + lt.tm_min) * 60 + lt.tm_sec) * 1_000_000_000 + (
            time.time_ns() % 1_000_000_000
        )

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

    def on_enter(self, acct: _Account, m) -> None:
        token = bytes(m["token"])
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

        self.md_sock, _ = await loop.create_datagram_endpoint(_Md, local_addr=(self.cfg.host, 0))
        rt, _ = await loop.create_datagram_endpoint(
            _Rereq, local_addr=(self.cfg.host, self.cfg.rerequest_port)
        )
        self.rerequest_sock = rt
        server = await loop.create_server(
            lambda: OuchConnection(ex), self.cfg.host, self.cfg.ouch_port
        )
        self.rerequest_port = rt.get_extra_info("sockname")[1]
        self.ouch_port = server.sockets[0].getsockname()[1]
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
        await self.feed_task()


class OuchConnection(asyncio.Protocol):
    """One SoupBinTCP connection of the exchange (the server side)."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.framer = soup.Framer()
        self.acct: _Account | None = None
        self.sent_seq = 0
        self.last_sent = self.last_recv = time.monotonic()
        self.closed = False

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
        n = self.ex.cfg.faults.disconnect_after
        if n and self.sent_seq >= n and not self.closed:
            log.info("exchange: fault: disconnecting %s after %d messages", self._name(), n)
            self.transport.close()
            self.closed = True

    def data_received(self, data: bytes) -> None:
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
            self.ex.on_enter(self.acct, m)
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

    feed = lobster_to_itch(cfg.lobster)
    ex = Exchange(cfg, feed)
    try:
        uvloop.run(ex.serve(ready))
    finally:
        log.info("exchange summary %s", ex.summary())
