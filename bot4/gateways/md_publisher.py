"""The exchange simulator's market data side (``bot4 exchange serve``): the ITCH messages of
its feed published in MoldUDP64 packets over UDP at the configured rate (with the packet
faults of :class:`~bot4.gateways.faults.Faults` and heartbeats when idle), and the answers to
MoldUDP64 re-requests (any message published so far). A mixin of
:class:`~bot4.gateways.exchange.Exchange`, whose ``__init__`` sets the state it uses
(``cfg``, ``feed``, ``session``, ``venue``, ``published``, ``stats``, ``sent_ns``, the
sockets) and whose ``_route`` (:class:`~bot4.gateways.order_entry.OrderEntry`) turns the
venue's reports into OUCH messages.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot4.gateways import mold

log = logging.getLogger("bot4.exchange")


class MdPublisher:
    """The ITCH / MoldUDP64 publisher and re-request server of the exchange (module doc)."""

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
