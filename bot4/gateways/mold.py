"""MoldUDP64 1.0: sequenced message packets over UDP, and the re-request (retransmission)
request.

A downstream packet (exchange -> subscribers), big-endian::

    offset  length  field
    0       10      session (ASCII, space padded)
    10      8       sequence number of the first message in the packet (u64)
    18      2       message count (u16): 0 = heartbeat (sequence = the next one to come),
                    0xFFFF = end of session (no more messages in this session)
    20      ...     message blocks: 2-byte length (u16), then that many bytes

A request packet (subscriber -> re-request server) is the 20-byte header alone: session,
first sequence number wanted, and how many messages. The server answers with ordinary
downstream packets carrying those messages, to the requester's address.

The gateway stores the messages of every packet it receives by sequence number in a
fixed-slot store (:func:`mold_ingest_kernel`): slot = sequence & (capacity - 1), 64 bytes
per slot (the longest ITCH 5.0 message is 50), so a gap costs nothing but the slots the
missing messages will fill when the retransmission comes. Messages already consumed or
already stored are dropped (counted as duplicates); messages too far ahead of the consumer
(the store would wrap) are dropped and counted (they are requested again later).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.nbkit import unowned

HEADER = np.dtype([("session", "S10"), ("seq", ">u8"), ("count", ">u2")])
HEADER_BYTES = 20
HEARTBEAT_COUNT = 0
END_OF_SESSION = 0xFFFF
SLOT = 64  # bytes per stored message
MAX_PAYLOAD = 1400  # downstream packets stay under a 1500-byte Ethernet MTU with IP/UDP

if HEADER.itemsize != HEADER_BYTES:
    raise AssertionError("MoldUDP64 header must be 20 bytes")


def session_bytes(session: str) -> bytes:
    """A 10-byte session field: ASCII, space padded on the right."""
    raw = session.encode("ascii")
    if len(raw) > 10:
        raise ValueError(f"MoldUDP64 session {session!r} longer than 10 characters")
    return raw.ljust(10)


def header(session: bytes, seq: int, count: int) -> bytes:
    h = np.zeros(1, HEADER)
    h["session"], h["seq"], h["count"] = session, seq, count
    return h.tobytes()


def request(session: bytes, seq: int, count: int) -> bytes:
    """A re-request: ``count`` messages from ``seq``."""
    return header(session, seq, count)


def parse_header(pkt: bytes) -> tuple[bytes, int, int]:
    """(session, sequence, count) of a packet; ValueError if shorter than the header."""
    if len(pkt) < HEADER_BYTES:
        raise ValueError(f"MoldUDP64 packet of {len(pkt)} bytes, shorter than its header")
    h = np.frombuffer(pkt, HEADER, 1)[0]
    return bytes(h["session"]), int(h["seq"]), int(h["count"])


def packets(
    session: bytes, first_seq: int, buf: np.ndarray, offsets: np.ndarray, lo: int, hi: int,
    max_payload: int = MAX_PAYLOAD,
) -> list[tuple[int, bytes]]:  # fmt: skip
    """Messages ``lo .. hi - 1`` (``buf[offsets[i]:offsets[i+1]]``, sequence number
    ``first_seq + i``) packed into as few packets as fit ``max_payload`` bytes each:
    ``[(sequence of the packet's first message, packet bytes)]``."""
    out = []
    i = lo
    while i < hi:
        j = i
        size = 0
        while j < hi and size + 2 + int(offsets[j + 1] - offsets[j]) <= max_payload:
            size += 2 + int(offsets[j + 1] - offsets[j])
            j += 1
        if j == i:
            raise ValueError(f"message {i} does not fit a packet")
        body = bytearray()
        for k in range(j - i):
            a, b = int(offsets[i + k]), int(offsets[i + k + 1])
            body += (b - a).to_bytes(2, "big")
            body += buf[a:b].tobytes()
        out.append((first_seq + i, header(session, first_seq + i, j - i) + bytes(body)))
        i = j
    return out


# ingest result slots
IN_STORED = 0  # messages stored
IN_DUPLICATE = 1  # already consumed or already stored
IN_AHEAD = 2  # beyond the store's window: dropped, requested again later
IN_TRUNCATED = 3  # the packet ended inside a message block (rest of the packet dropped)
IN_TOO_LONG = 4  # a message longer than a slot (dropped)
IN_HIGH = 5  # highest sequence number stored + 1 (unchanged if nothing stored)
INGEST_WORDS = 6


class MoldStore(NamedTuple):
    """The fixed-slot message store (module doc) and its ingest counters, one slot per
    sequence number modulo the capacity (a power of two). Owned by the gateway's process
    (``bot4.stages.md_gateway``), which builds it once at setup; the ITCH decoder reads the
    slots, :func:`mold_release_kernel` frees them.

    :func:`mold_ingest_kernel` takes it or ``tuple()`` of it (per packet, the gateway
    passes the plain tuple: numba's dispatcher takes about 1 us longer to type a named
    tuple argument, see ``bot4.signals.routing.RoutedState``)."""

    msgs: np.ndarray  # uint8[cap, SLOT]: message bytes
    lens: np.ndarray  # int64[cap]: message length, bytes
    seqs: np.ndarray  # int64[cap]: the sequence number in the slot
    recvs: np.ndarray  # int64[cap]: receive time of its packet, ns
    have: np.ndarray  # bool[cap]: the slot holds a message not yet consumed
    res: np.ndarray  # int64[INGEST_WORDS]: ingest outcome counters (IN_*)


def new_store(cap: int) -> MoldStore:
    """An empty store of ``cap`` slots (a power of two)."""
    if cap <= 0 or cap & (cap - 1):
        raise ValueError(f"MoldUDP64 store capacity {cap} is not a power of two")
    z = np.zeros
    return MoldStore(z((cap, SLOT), np.uint8), z(cap, np.int64), z(cap, np.int64),
                     z(cap, np.int64), z(cap, np.bool_), z(INGEST_WORDS, np.int64))  # fmt: skip


@njit(nogil=True, cache=True)
def mold_ingest_kernel(pkt, seq0, count, store, consumed, recv_ns):
    """Store the ``count`` message blocks of ``pkt`` (the bytes after the 20-byte header),
    first sequence ``seq0``, received at ``recv_ns`` (ns), into ``store`` (a
    :class:`MoldStore` or ``tuple()`` of it; see the module doc). ``consumed``: the next
    sequence the consumer will read (everything below is done). ``store.res``
    accumulates the outcome. Never reads past ``pkt``."""
    st = unowned(MoldStore(*store))
    msgs, lens, seqs, recvs, have, res = st.msgs, st.lens, st.seqs, st.recvs, st.have, st.res
    cap = msgs.shape[0]
    mask = cap - 1
    off = 0
    size = pkt.size
    for k in range(count):
        if off + 2 > size:
            res[IN_TRUNCATED] += 1
            return
        ln = (np.int64(pkt[off]) << 8) | np.int64(pkt[off + 1])
        off += 2
        if off + ln > size:
            res[IN_TRUNCATED] += 1
            return
        s = seq0 + k
        if ln > msgs.shape[1]:
            res[IN_TOO_LONG] += 1
        elif s < consumed:
            res[IN_DUPLICATE] += 1
        elif s >= consumed + cap:
            res[IN_AHEAD] += 1
        else:
            slot = s & mask
            if have[slot] and seqs[slot] == s:
                res[IN_DUPLICATE] += 1
            else:
                for j in range(ln):
                    msgs[slot, j] = pkt[off + j]
                lens[slot] = ln
                seqs[slot] = s
                recvs[slot] = recv_ns
                have[slot] = True
                res[IN_STORED] += 1
                if s + 1 > res[IN_HIGH]:
                    res[IN_HIGH] = s + 1
        off += ln


@njit(nogil=True, cache=True)
def mold_contiguous_kernel(have, seqs, start, limit):
    """How many messages from sequence ``start`` on are stored without a hole (at most
    ``limit``)."""
    mask = have.size - 1
    k = 0
    while k < limit:
        slot = (start + k) & mask
        if not have[slot] or seqs[slot] != start + k:
            break
        k += 1
    return k


@njit(nogil=True, cache=True)
def mold_release_kernel(have, start, count):
    """Free the slots of sequences ``start .. start + count - 1`` (consumed)."""
    mask = have.size - 1
    for k in range(count):
        have[(start + k) & mask] = False


@njit(nogil=True, cache=True)
def mold_hole_kernel(have, seqs, start, limit):
    """How many messages from sequence ``start`` on are missing before the next stored one
    (at most ``limit``): the hole a re-request asks for, never what is already here."""
    mask = have.size - 1
    k = 0
    while k < limit:
        slot = (start + k) & mask
        if have[slot] and seqs[slot] == start + k:
            break
        k += 1
    return k
