"""``md_gateway``: NASDAQ TotalView-ITCH 5.0 over MoldUDP64 (UDP) in, MARKET_DATA (and
BOOK_LEVEL depth) out.

A source stage whose position is the MoldUDP64 message sequence number minus one: the
records of message ``s`` are produced when the source reaches position ``s - 1``, in
sequence order, whatever order the datagrams came in. Datagrams are received on the
gateway's event loop (uvloop, :mod:`bot4.stages.loop_async`) into a fixed-slot message store
(:mod:`bot4.gateways.mold`); the duty cycle decodes the contiguous run from its position
(:func:`bot4.gateways.itch.itch_decode_kernel`) and publishes every record to each output
ring (ticks, risk_md, ...), ``ts_recv_ns`` = the datagram's receive stamp, ``parent_seq`` =
the message's sequence number. Outputs of type ``book_level`` receive, for each message
that changed a book, a BOOK_LEVEL per position 0..``depth``-1 of each side that differs
from what was last published (as the md stage publishes a LOBSTER pair's depth, so the
signals' depth features and risk's liquidity check work over the wire too). A gateway
starts with nothing published, so an instrument's first change publishes every position
(empty ones as zeros); a restart's rebuild re-derives what was published along with the
books, so the updates after it are those an uninterrupted gateway would have sent, numbered
the same.

**Gaps.** A message beyond the contiguous run (a later packet, or a heartbeat announcing a
higher next sequence) reveals a gap: the gateway asks the re-request server for the hole
only, up to the next message it holds (at most ``max_request`` messages per request; again
after ``rerequest_ms`` without progress — doubling, up to 64 x, while the same hole is
asked for again —, or as soon as the previous request was satisfied). Until the range
arrives nothing after the gap is published, so no message is skipped and none is applied
twice (a message already stored or consumed is dropped, counted as a duplicate).

**Gaps flag the instruments to risk.** While a hole is outstanding nothing after it is
published, and any of the gateway's instruments may have a message in it: a hole that has
made no progress for ``gap_flag_ms`` (50) sets every instrument of the gateway HALTED in
the trading-state segment (reason ``FEED_GAP``, source ``md_gateway``; ``raise_state``: an
instrument already halted — by the operator, a breaker, the stale-feed rule — is left as
it is and not touched when the gap clears). Risk halts on it at once (its next poll of the
trading state: CANCEL_ALL of the resting orders, intents denied ``STATE_HALTED``) instead
of waiting for its per-instrument stale timers. The flag is cleared (``relax_state``: only
if the word is still exactly this flag, back to the state it raised from) once every
message known to exist when it was set has arrived and no hole is older than
``gap_flag_ms``; a restarted gateway adopts the flags it finds. Logged at WARNING (set) and
INFO (cleared) with the gap's sequence range; counted ``gap_flags``. No flag record goes
to the ring: a source's records belong to sequence numbers (exact resume).

**Backpressure.** UDP cannot be slowed down: while the output rings are full the duty
cycle stops consuming, datagrams keep filling the store; a message too far ahead of the
position to fit the store (``store`` messages) is dropped, counted (``ahead``) and
re-requested once the store drains. The event loop never blocks.

**Restart.** A restarted gateway resumes at its cursor position ``p`` (the loop's exact
recovery: nothing published twice, nothing skipped) and first rebuilds its books by
re-requesting messages 1 .. p and applying them without publishing (the server retains the
whole day). A fresh gateway joining mid-day starts at sequence 1 the same way, so its books
are complete.

params (all optional): ``listen`` (``"127.0.0.1:31000"``, the UDP address the feed is sent
to; a multicast group address joins that group on ``interface``, ``"127.0.0.1"``), ``rerequest`` (``"127.0.0.1:31001"``, the re-request server), ``session``
(``"BOT4SIM"``), ``symbols`` (every instrument of the instrument table), ``date`` (the
feed's trading day, ``YYYY-MM-DD``: ITCH timestamps are ns since midnight US/Eastern;
default today), ``store`` (65536 messages, a power of two), ``levels`` (1024 per side),
``orders`` (4096: initial order table capacity; it doubles before it could fill), ``rerequest_ms`` (20), ``max_request`` (2000), ``gap_flag_ms`` (50; 0: never flag),
``depth`` (5: BOOK_LEVEL positions a side, with a ``book_level`` output; <= ``levels``;
every output ring then needs room for ``2 x depth`` records a message).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from datetime import date

import numpy as np

from bot4.gateways import itch, mold
from bot4.records import BOOK_LEVEL
from bot4.stages.base import DepthSource, ParamError, Stage, check_number, check_type

log = logging.getLogger("bot4.stage")


def parse_addr(text: str, key: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParamError(key, f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class _Feed(asyncio.DatagramProtocol):
    def __init__(self, stage: MdGatewayStage) -> None:
        self.stage = stage

    def datagram_received(self, data: bytes, addr) -> None:
        self.stage.on_packet(data)


class MdGatewayStage(DepthSource, Stage):
    kind = "md_gateway"
    source = True
    event_loop = True  # its process runs bot4.stages.loop_async
    warm_seconds = 8.0
    arity = (0, 0, 1, 4)
    output_types = ("MARKET_DATA", "*")  # then market_data or book_level (depth)
    max_out_per_in = itch.MAX_RECORDS_PER_MESSAGE
    restart_state = (
        "the books and order table: rebuilt at start from sequence 1 through the "
        "re-request server (the day's messages are retained there)"
    )
    #: live in ``bot4 stats`` (docs/gateways.md): MoldUDP64 packets received and refused,
    #: gaps seen, re-requests sent and the messages they asked for, messages received twice
    #: or too far ahead of the store, ITCH messages refused (unknown type or bad length),
    #: messages applied in a restart's rebuild, the next sequence to publish, gap episodes
    #: that flagged the instruments to risk
    counter_names = ("packets", "bad_packets", "gaps", "requests", "requested", "duplicates",
                     "ahead_dropped", "bad_messages", "rebuilt", "next_seq", "gap_flags")  # fmt: skip
    params_keys = frozenset(
        {
            "listen",
            "interface",
            "rerequest",
            "session",
            "symbols",
            "date",
            "store",
            "levels",
            "orders",
            "rerequest_ms",
            "max_request",
            "gap_flag_ms",
            "depth",
        }
    )

    @classmethod
    def out_per_in(cls, params) -> int:
        """A message writes at most 4 market data records and, with a book_level output,
        one update per position of each side (2 x depth); every output gets that room."""
        depth = int(params.get("depth", cls.DEFAULT_DEPTH))
        return max(itch.MAX_RECORDS_PER_MESSAGE, 2 * depth)

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        for key in ("listen", "rerequest"):
            if key in params:
                host, _port = parse_addr(params[key], key)
                try:
                    ipaddress.IPv4Address(host)
                except ValueError:
                    raise ParamError(key, f"expected an IPv4 address, got {host!r}") from None
        if "interface" in params:
            try:
                ipaddress.IPv4Address(params["interface"])
            except ValueError:
                raise ParamError("interface", f"expected an IPv4 address, got "
                                 f"{params['interface']!r}") from None  # fmt: skip
        check_type(params, "session", str, "a string")
        check_type(params, "symbols", list, "a list of symbols")
        check_type(params, "date", str, "a date YYYY-MM-DD")
        if "date" in params:
            try:
                date.fromisoformat(params["date"])
            except ValueError:
                raise ParamError("date", f"expected YYYY-MM-DD, got {params['date']!r}") from None
        check_number(params, "store", integer=True, lo=1024)
        if "store" in params and params["store"] & (params["store"] - 1):
            raise ParamError("store", "must be a power of two")
        check_number(params, "levels", integer=True, lo=4)
        check_number(params, "orders", integer=True, lo=1024)
        check_number(params, "rerequest_ms", lo=1)
        check_number(params, "max_request", integer=True, lo=1, hi=65534)
        check_number(params, "gap_flag_ms", lo=0, hi=3_600_000)
        check_number(params, "depth", integer=True, lo=1, hi=255)
        if int(params.get("depth", cls.DEFAULT_DEPTH)) > int(params.get("levels", 1024)):
            raise ParamError("depth", "cannot exceed levels (the levels a book keeps a side)")

    def setup(self) -> None:
        from bot4.marketdata.lobster import local_to_utc_ns
        from bot4.records import DEFAULT_INSTRUMENTS

        p = self.params
        self.listen = parse_addr(p.get("listen", "127.0.0.1:31000"), "listen")
        self.interface = p.get("interface", "127.0.0.1")
        self.rerequest_addr = parse_addr(p.get("rerequest", "127.0.0.1:31001"), "rerequest")
        self.session_b = mold.session_bytes(p.get("session", "BOT4SIM"))
        day = date.fromisoformat(p["date"]) if "date" in p else date.today()
        self.day_ns = int(local_to_utc_ns(day, np.zeros(1, np.int64))[0])
        symbols = p.get("symbols") or list(DEFAULT_INSTRUMENTS.symbols)
        ids = [DEFAULT_INSTRUMENTS.id_of(s) for s in symbols]
        self.sym_keys = np.array([itch.stock_key(s) for s in symbols], np.uint64)
        self.sym_ids = np.array(ids, np.int64)
        cap = int(p.get("store", 1 << 16))
        # the message store (bot4.gateways.mold.MoldStore), once; its arrays by name for
        # the store's slot kernels, the plain tuple for the ingest kernel and the decoder
        self.store = mold.new_store(cap)
        self.store_t = tuple(self.store)
        self.seqs, self.have = self.store.seqs, self.store.have
        self.cap = cap
        # the md stage's book implementation (bot4.marketdata.builder); the order map starts
        # small enough to stay in cache (its lookups are the decoder's main cost) and is
        # grown between duty cycles before it can fill (see _decode)
        self.book, self.last_q = itch.new_books(max(ids), int(p.get("levels", 1024)),
                                                int(p.get("orders", 4096)))  # fmt: skip
        # BOOK_LEVEL updates (book_level outputs): the last published per position (-1 at
        # first: an instrument's first change publishes every position, empty ones
        # included; a restart's rebuild advances it as the books), written / next seq
        depth = int(p.get("depth", self.DEFAULT_DEPTH)) if self.level_outs else 0
        self.pub = itch.new_published(self.last_q.shape[0], depth)
        self.lvc = np.zeros(2, np.int64)
        self.no_levels = np.zeros(0, BOOK_LEVEL)
        self.locate_map = np.zeros(1 << 16, np.int64)
        self.dstats = np.zeros(len(itch.DECODER_STATS), np.int64)
        self.ingest = self.store.res
        self.scratch = itch.decode_scratch(4096)
        self.dec = self.dec_otab = None  # the decoder's state (itch.ItchDecoder, a plain tuple)
        self.rerequest_ns = int(float(p.get("rerequest_ms", 20)) * 1e6)
        self.max_request = int(p.get("max_request", 2000))
        self.next_seq_in = 1  # the next sequence the duty cycle consumes (store window base)
        self.known_end = 1  # one past the highest sequence known to exist
        self.warm_to = None  # restart: rebuild the books up to this sequence first
        self.req_end = 0  # end of the outstanding re-request
        self.req_at = 0
        self.req_first = 0  # its first sequence number
        self.req_wait = self.rerequest_ns  # before asking again: doubles while no progress
        self.counters = {"packets": 0, "bad_packets": 0, "heartbeats": 0, "end_of_session": 0,
                         "gaps": 0, "requests": 0, "requested": 0, "rebuilt": 0,
                         "gap_flags": 0}  # fmt: skip
        self.gap_flag_ns = int(float(p.get("gap_flag_ms", 50)) * 1e6)
        self.hole_first = 0  # first missing sequence of the hole seen last (0: none)
        self.hole_since = 0  # when that hole was first seen (monotonic ns)
        self.trading = None  # the trading-state segment (bind: when the instance has one)
        self.flag_on = False  # a gap is flagged (whether or not it changed any word)
        self.flagged: dict[int, int] = {}  # instrument id -> its state before the flag
        self.flag_ids: list[int] = []  # the instruments a gap flags (those with a state word)
        self.flag_first = self.flag_end = self.flag_at = 0  # the flagged gap: [first, end)
        self.transport = None
        self.waker = None
        self._warm_kernels()

    def _warm_kernels(self) -> None:
        m = mold
        m.mold_ingest_kernel(np.zeros(0, np.uint8), 1, 0, self.store_t, 1, 0)
        m.mold_contiguous_kernel(self.have, self.seqs, 1, 0)
        m.mold_release_kernel(self.have, 1, 0)
        m.mold_hole_kernel(self.have, self.seqs, 1, 0)
        self._decode(1, 0, self.scratch, 1, False)

    #: messages per decoder call: the order map is grown to fit this many more adds before
    #: each call, so a long backlog (a restart's rebuild, a burst) does not size it for the
    #: whole backlog at once (a map many times the live orders misses the cache per lookup)
    DECODE_SLICE = 4096

    def _decode(self, start: int, count: int, out: np.ndarray, seq0: int, emit: bool,
                lv: np.ndarray | None = None) -> int:  # fmt: skip
        """Decode ``count`` messages from ``start`` into ``out`` (numbered from ``seq0``)
        and, with ``lv``, their BOOK_LEVEL updates into ``lv`` (``self.lvc[0]`` of them,
        numbered on from ``self.lvc[1]``); returns the market data records written."""
        b = self.book
        w = 0
        self.lvc[0] = 0
        levels = self.no_levels if lv is None else lv
        for a in range(0, count, self.DECODE_SLICE):
            k = min(self.DECODE_SLICE, count - a)
            b.reserve(k)  # at most one add per message
            if self.dec is None or self.dec_otab is not b.otab:  # again once the map grew
                self.dec_otab = b.otab
                self.dec = itch.decoder_state(self.locate_map, self.sym_keys, self.sym_ids,
                                              self.last_q, self.dstats, b, self.pub,
                                              self.no_levels, self.lvc)  # fmt: skip
            dec = self.dec
            if lv is not None and emit:
                dec = dec[:7] + (levels, self.lvc)  # this call's level view
            dst = out[w:] if emit else out
            w += int(itch.itch_decode_kernel(self.store_t, start + a, k, self.day_ns, dst,
                                             seq0 + w, dec, emit))  # fmt: skip
        return w

    # -- network (event loop) ---------------------------------------------------------------
    def bind(self, runner, waker) -> None:
        self.runner = runner
        self.waker = waker
        self._attach_trading()

    # -- gaps flagged to risk (trading-state segment) ----------------------------------------
    def _attach_trading(self) -> None:
        from bot4.records.errors import Bot4Error
        from bot4.shm import trading_state as T

        if not self.gap_flag_ns:
            return
        try:
            ts = T.TradingState(self.instance)
        except (Bot4Error, ValueError):
            log.info("md_gateway: no trading-state segment: gaps are not flagged to risk")
            return
        self.trading = ts
        self.flag_ids = [i for i in self.sym_ids.tolist() if 0 < i <= ts.n_instruments]
        for i in self.flag_ids:  # a restart: adopt the flags the last process set
            w = int(T.state_word(ts.words, i))
            if (T.word_state(w), T.word_reason(w), T.word_source(w)) == self._flag_word():
                self.flagged[i] = T.ACTIVE
        if self.flagged:
            self.flag_on = True
            # cleared once the rebuild and what was known then are through (source_ready)
            self.flag_first, self.flag_end, self.flag_at = 1, 1, time.monotonic_ns()
            log.warning("md_gateway: adopted the FEED_GAP flags of %s", self._symbols())

    @staticmethod
    def _flag_word() -> tuple[int, int, int]:
        from bot4.records.errors import Code
        from bot4.shm import trading_state as T

        return T.HALTED, int(Code.FEED_GAP), T.SRC_MD_GATEWAY

    def _symbols(self) -> list[str]:
        from bot4.records import DEFAULT_INSTRUMENTS

        return [DEFAULT_INSTRUMENTS.symbol_of(i) for i in self.flagged]

    def _watch_gap(self, now: int, first_missing: int) -> None:
        """Flag the instruments when a hole stalls ``gap_flag_ns``; clear once filled."""
        hole = self.known_end > first_missing
        if not hole:
            self.hole_first = 0
        elif first_missing != self.hole_first:  # a new hole, or the old one moved on
            self.hole_first, self.hole_since = first_missing, now
        stalled = hole and now - self.hole_since >= self.gap_flag_ns
        if self.flag_on:
            self.flag_end = max(self.flag_end, self.known_end) if stalled else self.flag_end
            if first_missing >= self.flag_end and not stalled:
                self._clear_flags(now)
        elif stalled and self.trading is not None:
            self._raise_flags(now, first_missing)

    def _raise_flags(self, now: int, first_missing: int) -> None:
        from bot4.shm import trading_state as T

        state, reason, source = self._flag_word()
        for i in self.flag_ids:
            prev = int(T.raise_state(self.trading.words, i, state, reason, source))
            if prev < state:
                self.flagged[i] = prev
        self.flag_on = True
        self.flag_first, self.flag_end, self.flag_at = first_missing, self.known_end, now
        self.counters["gap_flags"] += 1
        log.warning(
            "md_gateway: gap at sequences %d..%d outstanding %.0f ms: instruments %s HALTED "
            "for risk (FEED_GAP)",
            first_missing, self.known_end - 1, (now - self.hole_since) / 1e6, self._symbols(),
        )  # fmt: skip

    def _clear_flags(self, now: int) -> None:
        from bot4.shm import trading_state as T

        state, reason, source = self._flag_word()
        cleared = [i for i, prev in self.flagged.items()
                   if T.relax_state(self.trading.words, i, state, reason, source, prev)]  # fmt: skip
        log.info(
            "md_gateway: gap at sequences %d..%d recovered after %.0f ms: FEED_GAP flag "
            "cleared on %s",
            self.flag_first, self.flag_end - 1, (now - self.flag_at) / 1e6,
            [s for i, s in zip(self.flagged, self._symbols(), strict=True) if i in cleared],
        )  # fmt: skip
        self.flagged = {}
        self.flag_on = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        if ipaddress.ip_address(self.listen[0]).is_multicast:
            # the group on `interface`; bound to any address so that the re-request
            # server's unicast answers (to this socket's port) arrive here too
            sock.bind(("0.0.0.0", self.listen[1]))
            mreq = socket.inet_aton(self.listen[0]) + socket.inet_aton(self.interface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock.bind(self.listen)
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Feed(self), sock=sock)
        log.info("md_gateway: listening on %s:%d", *self.listen)

    async def shut(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.trading is not None:
            self.trading.close()
            self.trading = None

    def on_packet(self, pkt: bytes) -> None:
        now = time.monotonic_ns()
        c = self.counters
        c["packets"] += 1
        if len(pkt) < mold.HEADER_BYTES or pkt[:10] != self.session_b:
            c["bad_packets"] += 1
            return
        seq0 = int.from_bytes(pkt[10:18], "big")
        count = int.from_bytes(pkt[18:20], "big")
        if count == mold.HEARTBEAT_COUNT:
            c["heartbeats"] += 1
            self.known_end = max(self.known_end, seq0)
        elif count == mold.END_OF_SESSION:
            c["end_of_session"] += 1
            self.known_end = max(self.known_end, seq0)
        else:
            body = np.frombuffer(pkt, np.uint8, offset=mold.HEADER_BYTES)
            res = self.ingest
            res[mold.IN_HIGH] = 0
            before = int(res[mold.IN_TRUNCATED])
            mold.mold_ingest_kernel(body, seq0, count, self.store_t, self.next_seq_in, now)
            if int(res[mold.IN_TRUNCATED]) != before:
                c["bad_packets"] += 1
            self.known_end = max(self.known_end, seq0 + count)
        if self.waker is not None:
            self.waker.wake()

    def _gap_check(self, now: int, first_missing: int) -> None:
        if self.gap_flag_ns:
            self._watch_gap(now, first_missing)
        if self.known_end <= first_missing or self.transport is None:
            return
        if first_missing < self.req_end and now - self.req_at < self.req_wait:
            return  # the previous request is still being answered
        if first_missing >= self.req_end:
            self.counters["gaps"] += 1
        # the same hole again: its answer may sit unread behind a busy duty cycle, so wait
        # twice as long each time (up to 64 x) rather than have it all resent again
        if first_missing == self.req_first:
            self.req_wait = min(2 * self.req_wait, 64 * self.rerequest_ns)
        else:
            self.req_wait = self.rerequest_ns
        self.req_first = first_missing
        limit = min(self.known_end - first_missing, self.max_request, self.cap)
        n = int(mold.mold_hole_kernel(self.have, self.seqs, first_missing, limit))
        self.transport.sendto(mold.request(self.session_b, first_missing, n), self.rerequest_addr)
        self.counters["requests"] += 1
        self.counters["requested"] += n
        self.req_end = first_missing + n
        self.req_at = now

    # -- duty cycle ---------------------------------------------------------------------------
    def source_ready(self, position: int, now_ns: int) -> int:
        if self.warm_to is None:  # first call: where the loop resumes
            self.warm_to = position + 1
            if self.flag_on:  # adopted flags: held until the books are rebuilt at least
                self.flag_end = max(self.flag_end, self.warm_to, self.known_end)
            if position > 0:
                log.info("md_gateway: rebuilding the books from sequence 1 to %d", position)
        while self.next_seq_in < self.warm_to:  # restart: books first, nothing published
            k = int(mold.mold_contiguous_kernel(self.have, self.seqs, self.next_seq_in,
                                                min(4096, self.warm_to - self.next_seq_in)))  # fmt: skip
            if k == 0:
                self._gap_check(now_ns, self.next_seq_in)
                self.known_end = max(self.known_end, self.warm_to)
                return 0
            self._decode(self.next_seq_in, k, self.scratch, 0, False)
            mold.mold_release_kernel(self.have, self.next_seq_in, k)
            self.next_seq_in += k
            self.counters["rebuilt"] += k
        k = int(mold.mold_contiguous_kernel(self.have, self.seqs, position + 1, 1 << 20))
        self._gap_check(now_ns, position + 1 + k)
        return k

    def generate(self, position, n, outs, counts, seq):
        if n <= 0 or not outs:
            return 0, seq
        start = position + 1
        first = self.md_outs[0]
        lv = outs[self.level_outs[0]] if self.level_outs else None
        w = self._decode(start, n, outs[first], seq, True, lv)
        for j in self.md_outs[1:]:
            outs[j][:w] = outs[first][:w]
        counts[self.md_outs] = w
        if self.level_outs:
            nl = int(self.lvc[0])
            for j in self.level_outs[1:]:
                outs[j][:nl] = lv[:nl]
            counts[self.level_outs] = nl
        mold.mold_release_kernel(self.have, start, n)
        self.next_seq_in = start + n
        return n, seq + w

    def counter_values(self) -> list[int]:
        c, d, i = self.counters, self.dstats, self.ingest
        return [c["packets"], c["bad_packets"], c["gaps"], c["requests"], c["requested"],
                int(i[mold.IN_DUPLICATE]), int(i[mold.IN_AHEAD]),
                int(d[itch.DS_UNKNOWN_TYPE] + d[itch.DS_BAD_LENGTH]), c["rebuilt"],
                self.next_seq_in, c["gap_flags"]]  # fmt: skip

    def summary(self) -> dict:
        s = dict(self.counters)
        s.update(zip(itch.DECODER_STATS, self.dstats.tolist(), strict=True))
        s["duplicates"] = int(self.ingest[mold.IN_DUPLICATE])
        s["ahead_dropped"] = int(self.ingest[mold.IN_AHEAD])
        s["next_seq"] = self.next_seq_in
        s["book"] = self.book.counters()
        s["orders_live"] = len(self.book)
        return s

    def on_drain(self) -> None:
        log.info("md_gateway summary %s", self.summary())
