"""SoupBinTCP 4.0: the session layer OUCH runs on (TCP, one session per connection).

Every packet is a 2-byte big-endian length (of what follows it: the type byte and the
payload), a 1-byte packet type, then the payload::

    type  dir   name                 payload
    '+'   both  debug                free text
    'A'   s->c  login accepted       session (10, alpha, space padded on the right),
                                     sequence number (20, numeric ASCII, space padded on
                                     the left): the next sequenced message to be sent
    'J'   s->c  login rejected       reject reason (1): 'A' not authorized, 'S' session
                                     not available
    'S'   s->c  sequenced data       one message of the higher-level protocol (OUCH)
    'H'   s->c  server heartbeat     -
    'Z'   s->c  end of session       -
    'L'   c->s  login request        username (6), password (10), requested session (10,
                                     blank = the current one), requested sequence number
                                     (20, numeric; 0 = the next one to be sent, 1 = all)
    'U'   c->s  unsequenced data     one message (OUCH Enter / Replace / Cancel)
    'R'   c->s  client heartbeat     -
    'O'   c->s  logout request       -

Sequenced messages are numbered from 1 per session, implicitly: the login's sequence
number is that of the first 'S' packet that follows, and each next 'S' is one more. Either
side sends a heartbeat after 1 s without sending anything; either side ends the connection
after 15 s without receiving anything. Client-to-server messages are unsequenced: what was
in flight when a connection broke is resolved above this layer (OUCH order tokens).

:class:`Framer` cuts a byte stream into packets, refusing lengths outside
[1, ``max_packet``] (the session is then ended by its owner, with a counted reason).
"""

from __future__ import annotations

import struct

DEBUG = ord("+")
LOGIN_ACCEPTED = ord("A")
LOGIN_REJECTED = ord("J")
SEQUENCED = ord("S")
SERVER_HEARTBEAT = ord("H")
END_OF_SESSION = ord("Z")
LOGIN_REQUEST = ord("L")
UNSEQUENCED = ord("U")
CLIENT_HEARTBEAT = ord("R")
LOGOUT_REQUEST = ord("O")

LOGIN_REQUEST_PAYLOAD = 46  # 6 + 10 + 10 + 20
LOGIN_ACCEPTED_PAYLOAD = 30  # 10 + 20
REJECT_NOT_AUTHORIZED = b"A"
REJECT_SESSION_UNAVAILABLE = b"S"
HEARTBEAT_S = 1.0  # send a heartbeat after this long without sending
TIMEOUT_S = 15.0  # give up on the peer after this long without receiving
MAX_PACKET = 1024  # longest packet accepted (OUCH 4.2 messages are <= 80 bytes)

_LEN = struct.Struct(">H")


class FrameError(ValueError):
    """The stream cannot be cut into packets (the connection must end)."""


def packet(ptype: int, payload: bytes = b"") -> bytes:
    """One packet: length, type, payload."""
    return _LEN.pack(len(payload) + 1) + bytes((ptype,)) + payload


def alpha(value: str | bytes, width: int) -> bytes:
    """Alpha field: ASCII, left-justified, space padded on the right."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if len(raw) > width:
        raise ValueError(f"{raw!r} longer than {width}")
    return raw.ljust(width)


def numeric(value: int, width: int) -> bytes:
    """Numeric field: ASCII digits, right-justified, space padded on the left."""
    raw = str(int(value)).encode("ascii")
    if len(raw) > width or value < 0:
        raise ValueError(f"{value} does not fit {width} digits")
    return raw.rjust(width)


def login_request(username: str, password: str, session: str, seq: int) -> bytes:
    return packet(
        LOGIN_REQUEST,
        alpha(username, 6) + alpha(password, 10) + alpha(session, 10) + numeric(seq, 20),
    )


def parse_login_request(payload: bytes) -> tuple[str, str, str, int]:
    """(username, password, session, sequence); ValueError if malformed."""
    if len(payload) != LOGIN_REQUEST_PAYLOAD:
        raise ValueError(f"login request of {len(payload)} bytes, expected 46")
    text = payload.decode("ascii")
    seq_text = text[26:46].strip()
    return text[0:6].strip(), text[6:16].strip(), text[16:26].strip(), int(seq_text or "0")


def login_accepted(session: str, seq: int) -> bytes:
    return packet(LOGIN_ACCEPTED, alpha(session, 10) + numeric(seq, 20))


def parse_login_accepted(payload: bytes) -> tuple[str, int]:
    if len(payload) != LOGIN_ACCEPTED_PAYLOAD:
        raise ValueError(f"login accepted of {len(payload)} bytes, expected 30")
    text = payload.decode("ascii")
    return text[0:10].strip(), int(text[10:30].strip())


class Framer:
    """Cuts a TCP byte stream into SoupBinTCP packets: ``feed(data)`` returns the complete
    ``(type, payload)`` packets so far; the rest waits for more bytes. FrameError on a
    length of 0 or beyond ``max_packet``."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.buf = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        buf = self.buf
        i = 0
        n = len(buf)
        while n - i >= 2:
            ln = (buf[i] << 8) | buf[i + 1]
            if ln == 0 or ln > self.max_packet:
                raise FrameError(f"packet length {ln} outside 1..{self.max_packet}")
            if n - i - 2 < ln:
                break
            out.append((buf[i + 2], bytes(buf[i + 3 : i + 2 + ln])))
            i += 2 + ln
        if i:
            del buf[:i]
        return out
