"""The exchange simulator's OUCH session server (``bot4 exchange serve``): OUCH 4.2 over
SoupBinTCP 4.0, one :class:`OuchConnection` per TCP connection (login, heartbeats, the
account's sequenced messages replayed from the requested sequence number, cancel on
disconnect, the connection faults of :class:`~bot4.gateways.faults.Faults`), and
:class:`_Account`, one message log per account (username).
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot4.gateways import ouch, soup

log = logging.getLogger("bot4.exchange")


class _Account:
    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[bytes] = []  # sequenced OUCH messages; sequence number = index + 1
        self.tokens: dict[bytes, int] = {}  # every token used today -> internal order id
        self.conn: OuchConnection | None = None


class OuchConnection(asyncio.Protocol):
    """One SoupBinTCP connection of the exchange (the server side); ``ex`` is the
    :class:`~bot4.gateways.exchange.Exchange` it serves."""

    def __init__(self, ex) -> None:
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
