"""The SoupBinTCP 4.0 session of the ``order_gateway`` stage (:mod:`bot4.stages.order_gateway`,
whose module doc says what the session does): connect with backoff, log in (sequence 1 on
a process's first login, the next expected number on a reconnect), heartbeats and the
15 s silence timeout, the end of the replay (a server heartbeat or ``replay_quiet_ms``),
an exchange that lost its day, and what was in flight at a break resent by token.
:class:`SoupSession` is a mixin of :class:`~bot4.stages.order_gateway.OrderGatewayStage`,
whose ``setup`` sets the state it uses; the sequenced messages go to
:class:`~bot4.stages.order_gateway_ouch.OuchCodec`'s ``_sequenced``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from bot4.gateways import ouch, soup
from bot4.records import (
    EXEC_STATUS,
)

log = logging.getLogger("bot4.stage")


class _Soup(asyncio.Protocol):
    """The stage's TCP connection; ``gw`` is the
    :class:`~bot4.stages.order_gateway.OrderGatewayStage` it reports to."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self.framer = soup.Framer()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.gw.on_connected(self)

    def data_received(self, data: bytes) -> None:
        self.gw.on_data(self, data)

    def connection_lost(self, exc) -> None:
        self.gw.on_lost(self, exc)


class SoupSession:
    """The stage's SoupBinTCP client session and its socket (module doc)."""

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
