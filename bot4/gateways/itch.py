"""NASDAQ TotalView-ITCH 5.0: message layouts, the simulator's encoder, the gateway's decoder.

Every ITCH 5.0 message starts with the same 11 bytes, big-endian, no padding::

    offset  length  field
    0       1       message type (ASCII letter)
    1       2       stock locate (u16; 0 for market-wide messages)
    3       2       tracking number (u16)
    5       6       timestamp (u48, ns since midnight, exchange local time: US/Eastern)

Prices are ``Price(4)``: u32 with 4 implied decimals ($ x 10_000, bot4's default price
scale, so no conversion); shares are u32; order reference and match numbers u64; stock
symbols 8 ASCII bytes, left-justified, space padded. ``MESSAGE_LENGTHS`` gives the length of
every 5.0 message type (the specification's table, checked by golden fixtures in
tests/unit/test_gateway_codecs.py); the dtypes below describe the ones bot4 encodes or
decodes.

Decoding (:func:`itch_decode_kernel`, numba) turns the messages of a MoldUDP64 stream into
``MARKET_DATA`` records and keeps, per configured instrument, the price levels and the
order map of a :class:`bot4.marketdata.builder.BookBuilder`, each book event applied by
the md stage's own step (:func:`bot4.marketdata.book_step.apply_event`: one book
implementation in the product): E / C / X / D / U carry only the order reference, so the
order map gives their price and side. Per message it emits (``MAX_RECORDS_PER_MESSAGE`` at
most):

* A / F: ``MD_BOOK_ADD``; X: ``MD_BOOK_CANCEL``; D: ``MD_BOOK_DELETE`` (qty = what was left);
  U: ``MD_BOOK_DELETE`` of the old reference then ``MD_BOOK_ADD`` of the new one (same side,
  new price and shares, at the back of the queue);
* E: ``MD_BOOK_EXEC`` at the order's price and an ``MD_TRADE``; C: ``MD_BOOK_EXEC`` and, when
  printable, an ``MD_TRADE`` at the execution price; P: ``MD_BOOK_HIDDEN_EXEC`` and an
  ``MD_TRADE``; Q: ``MD_CROSS_TRADE``; H: ``MD_TRADING_HALT`` with ``MDF_HALT`` (halted or
  paused), ``MDF_QUOTING`` (quotation only) or ``MDF_RESUME`` (trading);
* after a book change, an ``MD_QUOTE`` for each side whose best price or size changed
  (price 0 / qty 0 when the side emptied);
* with a depth, a ``BOOK_LEVEL`` per position 0..depth-1 of each side whose (price, size,
  orders) changed since last published (``parent_seq`` the seq of the message's first
  record; the message's last update flagged ``MDF_LAST_IN_BATCH``), as the md stage
  publishes a LOBSTER pair's depth;
* R (stock directory) binds its locate code to the instrument of its symbol; S (system
  event) and every other type produce nothing; messages of instruments not configured are
  skipped (counted).

The trade's ``side`` is the aggressor's (the opposite of the resting order's), as in
:mod:`bot4.marketdata.replay`. ``parent_seq`` of every record is the MoldUDP64 sequence
number of its message, ``MDF_LAST_IN_BATCH`` marks a message's last record (the book is
consistent after every message).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.gateways.mold import MoldStore
from bot4.marketdata.book_step import ASK, BID, O_PX, O_QTY, BookArrays, apply_event, order_side
from bot4.nbkit import map_find, unowned
from bot4.records import (
    BOOK_LEVEL,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_CROSS_TRADE,
    MD_QUOTE,
    MD_TRADE,
    MD_TRADING_HALT,
    MDF_HALT,
    MDF_LAST_IN_BATCH,
    MDF_QUOTING,
    MDF_RESUME,
    SIDE_BUY,
    SIDE_SELL,
)

#: every ITCH 5.0 message type and its length in bytes (the specification's table)
MESSAGE_LENGTHS: dict[bytes, int] = {
    b"S": 12,  # system event
    b"R": 39,  # stock directory
    b"H": 25,  # stock trading action
    b"Y": 20,  # Reg SHO restriction
    b"L": 26,  # market participant position
    b"V": 35,  # MWCB decline level
    b"W": 12,  # MWCB status
    b"K": 28,  # IPO quoting period update
    b"J": 35,  # LULD auction collar
    b"h": 21,  # operational halt
    b"A": 36,  # add order, no MPID attribution
    b"F": 40,  # add order with MPID attribution
    b"E": 31,  # order executed
    b"C": 36,  # order executed with price
    b"X": 23,  # order cancel
    b"D": 19,  # order delete
    b"U": 35,  # order replace
    b"P": 44,  # trade (non-cross)
    b"Q": 40,  # cross trade
    b"B": 19,  # broken trade
    b"I": 50,  # NOII
    b"N": 20,  # retail price improvement indicator
}
MAX_MESSAGE = 50  # the longest 5.0 message (I)

_HEADER = [
    ("type", "S1"),
    ("locate", ">u2"),
    ("tracking", ">u2"),
    ("ts_hi", ">u2"),  # timestamp, high 16 of 48 bits
    ("ts_lo", ">u4"),  # timestamp, low 32 bits
]


def _msg(fields: list) -> np.dtype:
    return np.dtype(_HEADER + fields)  # packed: numpy never pads an unaligned dtype


SYSTEM_EVENT = _msg([("event", "S1")])
STOCK_DIRECTORY = _msg(
    [
        ("stock", "S8"),
        ("market_category", "S1"),
        ("financial_status", "S1"),
        ("round_lot_size", ">u4"),
        ("round_lots_only", "S1"),
        ("issue_classification", "S1"),
        ("issue_subtype", "S2"),
        ("authenticity", "S1"),
        ("short_sale_threshold", "S1"),
        ("ipo_flag", "S1"),
        ("luld_tier", "S1"),
        ("etp_flag", "S1"),
        ("etp_leverage", ">u4"),
        ("inverse", "S1"),
    ]
)
TRADING_ACTION = _msg([("stock", "S8"), ("state", "S1"), ("reserved", "S1"), ("reason", "S4")])
ADD_ORDER = _msg(
    [("ref", ">u8"), ("side", "S1"), ("shares", ">u4"), ("stock", "S8"), ("price", ">u4")]
)
ADD_ORDER_MPID = _msg(
    [
        ("ref", ">u8"),
        ("side", "S1"),
        ("shares", ">u4"),
        ("stock", "S8"),
        ("price", ">u4"),
        ("attribution", "S4"),
    ]
)
ORDER_EXECUTED = _msg([("ref", ">u8"), ("shares", ">u4"), ("match", ">u8")])
ORDER_EXECUTED_PRICE = _msg(
    [("ref", ">u8"), ("shares", ">u4"), ("match", ">u8"), ("printable", "S1"), ("price", ">u4")]
)
ORDER_CANCEL = _msg([("ref", ">u8"), ("shares", ">u4")])
ORDER_DELETE = _msg([("ref", ">u8")])
ORDER_REPLACE = _msg([("ref", ">u8"), ("new_ref", ">u8"), ("shares", ">u4"), ("price", ">u4")])
TRADE = _msg(
    [
        ("ref", ">u8"),
        ("side", "S1"),
        ("shares", ">u4"),
        ("stock", "S8"),
        ("price", ">u4"),
        ("match", ">u8"),
    ]
)
CROSS_TRADE = _msg(
    [("shares", ">u8"), ("stock", "S8"), ("price", ">u4"), ("match", ">u8"), ("cross_type", "S1")]
)
DTYPES: dict[bytes, np.dtype] = {
    b"S": SYSTEM_EVENT,
    b"R": STOCK_DIRECTORY,
    b"H": TRADING_ACTION,
    b"A": ADD_ORDER,
    b"F": ADD_ORDER_MPID,
    b"E": ORDER_EXECUTED,
    b"C": ORDER_EXECUTED_PRICE,
    b"X": ORDER_CANCEL,
    b"D": ORDER_DELETE,
    b"U": ORDER_REPLACE,
    b"P": TRADE,
    b"Q": CROSS_TRADE,
}
for _t, _dt in DTYPES.items():
    if _dt.itemsize != MESSAGE_LENGTHS[_t]:
        raise AssertionError(f"ITCH {_t!r}: dtype {_dt.itemsize} B, spec {MESSAGE_LENGTHS[_t]} B")

#: the simulator's intermediate form of a message (one row per message, any type)
GENERIC = np.dtype(
    [
        ("type", "S1"),
        ("locate", np.uint16),
        ("ts", np.int64),  # ns since midnight, exchange local time
        ("ref", np.uint64),
        ("new_ref", np.uint64),
        ("side", "S1"),  # b"B" / b"S"
        ("shares", np.uint64),
        ("price", np.uint32),
        ("match", np.uint64),
        ("stock", "S8"),
        ("code", "S1"),  # S: event code; H: trading state; C: printable; Q: cross type
    ]
)


def encode(gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode GENERIC rows into ITCH 5.0 bytes: ``(buf, offsets)``, message ``i`` being
    ``buf[offsets[i]:offsets[i + 1]]``. Vectorised per message type (numpy structured
    dtypes), so a LOBSTER day encodes in well under a second."""
    types = gen["type"]
    lengths = np.zeros(len(gen), np.int64)
    for t, dt in DTYPES.items():
        lengths[types == t] = dt.itemsize
    if (lengths == 0).any():
        bad = sorted(set(types[lengths == 0].tolist()))
        raise ValueError(f"cannot encode ITCH message types {bad}")
    offsets = np.zeros(len(gen) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = np.zeros(int(offsets[-1]), np.uint8)
    for t, dt in DTYPES.items():
        idx = np.flatnonzero(types == t)
        if idx.size == 0:
            continue
        g = gen[idx]
        m = np.zeros(idx.size, dt)
        m["type"] = t
        m["locate"] = g["locate"]
        ts = g["ts"].astype(np.uint64)
        m["ts_hi"] = (ts >> np.uint64(32)).astype(np.uint16)
        m["ts_lo"] = (ts & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        names = dt.names
        for field, src in (
            ("ref", "ref"),
            ("new_ref", "new_ref"),
            ("side", "side"),
            ("shares", "shares"),
            ("stock", "stock"),
            ("price", "price"),
            ("match", "match"),
        ):
            if field in names:
                m[field] = g[src]
        if t == b"S":
            m["event"] = g["code"]
        elif t == b"H":
            m["state"] = g["code"]
            m["reserved"] = b" "
            m["reason"] = b"    "
        elif t == b"C":
            m["printable"] = g["code"]
        elif t == b"Q":
            m["cross_type"] = g["code"]
        elif t == b"R":
            m["market_category"] = b"Q"
            m["financial_status"] = b"N"
            m["round_lot_size"] = 100
            m["round_lots_only"] = b"N"
            m["issue_classification"] = b"C"
            m["issue_subtype"] = b"Z "
            m["authenticity"] = b"P"
            m["short_sale_threshold"] = b"N"
            m["ipo_flag"] = b"N"
            m["luld_tier"] = b"1"
            m["etp_flag"] = b"N"
            m["inverse"] = b"N"
        rows = m.view(np.uint8).reshape(idx.size, dt.itemsize)
        buf[offsets[idx][:, None] + np.arange(dt.itemsize)] = rows
    return buf, offsets


def stock_key(symbol: str) -> np.uint64:
    """An 8-byte ITCH stock field (space padded) as a big-endian u64, the kernel's key."""
    raw = symbol.encode("ascii").ljust(8)[:8]
    return np.uint64(int.from_bytes(raw, "big"))


# --- decoding (numba) -------------------------------------------------------------------------

MAX_RECORDS_PER_MESSAGE = 4  # U: delete + add + two quotes

# stats slots of the decoder (int64 counters, owned by the decoding stage)
DS_MESSAGES = 0  # messages decoded
DS_RECORDS = 1  # records emitted
DS_UNKNOWN_TYPE = 2  # message types outside MESSAGE_LENGTHS
DS_BAD_LENGTH = 3  # length differs from the type's (message dropped)
DS_OTHER_INSTRUMENT = 4  # messages of instruments not configured
DS_UNKNOWN_REF = 5  # E / C / X / D / U of a reference not in the order map
DS_TABLE_FULL = 6  # adds dropped: the order map is 3/4 full
DS_IGNORED = 7  # known types that make no record (S, Y, L, V, W, K, J, h, B, I, N)
DECODER_STATS = (
    "messages",
    "records",
    "unknown_type",
    "bad_length",
    "other_instrument",
    "unknown_ref",
    "table_full",
    "ignored",
)


@njit(nogil=True, cache=True, inline="always")
def _u16(b, o):
    return (np.uint64(b[o]) << np.uint64(8)) | np.uint64(b[o + 1])


@njit(nogil=True, cache=True, inline="always")
def _u32(b, o):
    return (_u16(b, o) << np.uint64(16)) | _u16(b, o + 2)


@njit(nogil=True, cache=True, inline="always")
def _u48(b, o):
    return (_u16(b, o) << np.uint64(32)) | _u32(b, o + 2)


@njit(nogil=True, cache=True, inline="always")
def _u64(b, o):
    return (_u32(b, o) << np.uint64(32)) | _u32(b, o + 4)


#: message length by type byte (0 = unknown type): a constant array numba folds in
LENGTH_BY_TYPE = np.zeros(256, np.int64)
for _t, _n in MESSAGE_LENGTHS.items():
    LENGTH_BY_TYPE[_t[0]] = _n

# type and flag bytes as integers: the kernel compares bytes, never strings
_A, _F, _E, _C, _X, _D, _U, _P, _Q, _H, _R = (ord(x) for x in "AFECXDUPQHR")
_B, _Y, _S_HALT, _Q_QUOTE = ord("B"), ord("Y"), ord("H"), ord("Q")
_PAUSED = ord("P")


class ItchDecoder(NamedTuple):
    """:func:`itch_decode_kernel`'s state besides the message store: the instruments it
    decodes, their books and its counters. Owned by md_gateway's process; its caller passes
    ``tuple()`` of it (the book a plain tuple too: see :class:`bot4.gateways.mold.MoldStore`
    on named tuples from Python) and builds it again after the order map grew."""

    locate_map: np.ndarray  # int64[65536]: instrument of a locate code (0 = not configured)
    sym_keys: np.ndarray  # uint64[k]: stock_key of each configured symbol
    sym_ids: np.ndarray  # int64[k]: its instrument id
    last_q: np.ndarray  # int64[books, 2, 2]: last quoted (price, size) per side
    dstats: np.ndarray  # int64[len(DECODER_STATS)]: the DS_* counters
    book: BookArrays  # the books (a BookBuilder's arrays), indexed by instrument id
    pub: np.ndarray  # int64[books, 2, depth, 3]: last BOOK_LEVEL published per position
    lv: np.ndarray  # BOOK_LEVEL: where this call writes its level updates
    lvc: np.ndarray  # int64[2]: level updates written to lv, the next one's seq


def decoder_state(locate_map, sym_keys, sym_ids, last_q, dstats, builder, pub=None, lv=None,
                  lvc=None) -> tuple:  # fmt: skip
    """``tuple()`` of an :class:`ItchDecoder` over ``builder``'s arrays as they are now (the
    book a plain tuple too): what :func:`itch_decode_kernel` takes from Python. Without
    ``pub`` (:func:`new_published`) no BOOK_LEVEL update is written."""
    if pub is None:
        pub = new_published(last_q.shape[0], 0)
    if lv is None:
        lv = np.zeros(0, BOOK_LEVEL)
    if lvc is None:
        lvc = np.zeros(2, np.int64)
    return (locate_map, sym_keys, sym_ids, last_q, dstats, tuple(builder.arrays()), pub, lv,
            lvc)  # fmt: skip


def new_published(books: int, depth: int) -> np.ndarray:
    """The decoder's last published levels: int64[books, 2, depth, 3] (price, size,
    orders per position, row BID / ASK), -1 at first so an instrument's first book change
    publishes every position, empty ones included."""
    return np.full((books, 2, depth, 3), -1, np.int64)


class _Msg(NamedTuple):
    """One message's record context inside the kernel: the output, the first record's
    ``seq``, the message's sequence number, its event and receive stamps, its instrument."""

    out: np.ndarray
    seq0: int
    mseq: int
    ts: int
    recv: int
    inst: int


@njit(nogil=True, cache=True)
def _emit(e, n, kind, side, price, qty, oid, flags):
    """Write record ``n`` of message ``e`` (:class:`_Msg`); returns ``n + 1``."""
    inst = e.inst
    r = e.out[n]
    r.seq = e.seq0 + n
    r.parent_seq = e.mseq
    r.ts_event_ns = e.ts
    r.ts_recv_ns = e.recv
    r.price = price
    r.qty = qty
    r.order_id = oid
    r.instrument = inst
    r.kind = kind
    r.side = side
    r.flags = flags
    return n + 1


@njit(nogil=True, cache=True)
def _quotes(e, n, px, qty, nlev, last_q):
    """MD_QUOTE per side of message ``e``'s instrument whose best (price, size) in its
    book's levels (``px``, ``qty``, ``nlev``: a :class:`BookArrays`' ``px``, ``qty``, ``n``)
    moved since the last quote published. Called per message and not inlined: it takes the
    three arrays it reads, not the whole book."""
    inst = e.inst
    for s in (ASK, BID):
        p = np.int64(0)
        sz = np.int64(0)
        top = nlev[inst, s] - 1  # the best level's index: sides are stored worst first
        if top >= 0:
            p = px[inst, s, top]
            sz = qty[inst, s, top]
        if p == last_q[inst, s, 0] and sz == last_q[inst, s, 1]:
            continue
        last_q[inst, s, 0] = p
        last_q[inst, s, 1] = sz
        side = SIDE_SELL if s == ASK else SIDE_BUY
        n = _emit(e, n, MD_QUOTE, side, p, sz, 0, 0)
    return n


@njit(nogil=True, cache=True)
def _levels(e, parent, bk, pub, lv, lvc, write):
    """BOOK_LEVEL per position 0..depth-1 of each side of message ``e``'s instrument whose
    (price, size, orders) in book ``bk`` differs from what was last published (``pub``),
    into ``lv`` from ``lvc[0]``, numbered from ``lvc[1]``; ``parent`` the seq of the
    message's first record. The message's last update is flagged ``MDF_LAST_IN_BATCH``.
    ``write`` False (a restart's rebuild) only advances ``pub`` and the numbering, so what
    follows is what the gateway would have published had it never stopped."""
    inst = e.inst
    px, qty, cnt, nlev = bk.px, bk.qty, bk.cnt, bk.n
    w0 = lvc[0]
    w = w0
    for s in (ASK, BID):
        top = nlev[inst, s] - 1  # the best level's index: sides are stored worst first
        for k in range(pub.shape[2]):
            have = k <= top
            p = px[inst, s, top - k] if have else 0
            q = qty[inst, s, top - k] if have else 0
            c = cnt[inst, s, top - k] if have else 0
            if p == pub[inst, s, k, 0] and q == pub[inst, s, k, 1] and c == pub[inst, s, k, 2]:
                continue
            pub[inst, s, k, 0] = p
            pub[inst, s, k, 1] = q
            pub[inst, s, k, 2] = c
            lvc[1] += 1
            if not write:
                continue
            o = lv[w]
            o.seq = lvc[1] - 1
            o.parent_seq = parent
            o.ts_event_ns = e.ts
            o.ts_recv_ns = e.recv
            o.price = p
            o.qty = q
            o.instrument = inst
            o.orders = np.uint32(min(c, 0xFFFFFFFF))
            o.side = SIDE_SELL if s == ASK else SIDE_BUY
            o.level = k
            o.flags = 0
            w += 1
    if w > w0:
        lv[w - 1].flags = MDF_LAST_IN_BATCH
    lvc[0] = w


@njit(nogil=True, cache=True, inline="always")
def _book_event(out, n, inst, b, dstats):
    """Apply the record just written at ``out[n - 1]`` to its instrument's book in ``b``
    (the md stage's step, :func:`bot4.marketdata.book_step.apply_event`). False when an add
    did not fit (the order map 3/4 full: the stage grows it between calls, so this is a
    guard)."""
    if out[n - 1].kind == MD_BOOK_ADD and b.live[0] + 1 > b.otab.shape[0] * 3 // 4:
        dstats[DS_TABLE_FULL] += 1
        return False
    apply_event(b, b.px.shape[2], inst, out[n - 1])
    return True


@njit(nogil=True, cache=True)
def itch_decode_kernel(store, start, count, day_ns, out, seq0, dec, emit):
    """Decode messages ``start .. start + count - 1`` of the message store (a
    :class:`~bot4.gateways.mold.MoldStore` or ``tuple()`` of it: ``msgs`` uint8[cap, 64],
    ``lens`` their lengths, ``seqs`` their MoldUDP64 sequence numbers, ``recvs`` receive
    stamps, ns; slot = index & (cap - 1)) into ``out`` (MARKET_DATA, room for
    ``MAX_RECORDS_PER_MESSAGE * count``), numbered from ``seq0``; returns the records
    written. ``emit`` False applies the messages to the books and writes nothing (a
    restarted gateway rebuilding its books from sequence 1). ``day_ns``: UTC epoch ns of
    midnight exchange time. ``dec``: an :class:`ItchDecoder` or :func:`decoder_state`'s
    tuple; its ``locate_map`` is filled from R messages whose stock matches ``sym_keys``
    (:func:`stock_key`) -> ``sym_ids``; its books are a
    :class:`~bot4.marketdata.builder.BookBuilder`'s arrays, indexed by instrument id. With
    a depth (``pub``'s third axis) > 0 and ``emit``, each message that changed a book also
    writes its BOOK_LEVEL updates to ``lv`` (room for ``2 x depth`` a message), counted in
    ``lvc[0]``; without ``emit`` it keeps ``pub`` and their numbering as if it had."""
    # borrowed views (bot4.nbkit.borrow): no atomic reference counting per helper call
    st = unowned(MoldStore(*store))
    d = unowned(ItchDecoder(*dec))
    bk = BookArrays(*d.book)
    msgs, lens, seqs, recvs = st.msgs, st.lens, st.seqs, st.recvs
    out, otab = unowned(out), bk.otab
    locate_map, sym_keys, sym_ids, last_q, dstats = (d.locate_map, d.sym_keys, d.sym_ids,
                                                     d.last_q, d.dstats)  # fmt: skip
    pub, lv, lvc = d.pub, unowned(d.lv), d.lvc
    depth = pub.shape[2]
    mask = msgs.shape[0] - 1
    n = 0
    for k in range(count):
        slot = (start + k) & mask
        b = msgs[slot]
        ln = lens[slot]
        mseq = seqs[slot]
        recv = recvs[slot]
        t = b[0]
        want = LENGTH_BY_TYPE[t]
        if want == 0:
            dstats[DS_UNKNOWN_TYPE] += 1
            continue
        if ln != want:
            dstats[DS_BAD_LENGTH] += 1
            continue
        dstats[DS_MESSAGES] += 1
        loc = np.int64(_u16(b, 1))
        ts = day_ns + np.int64(_u48(b, 5))
        if t == _R:
            key = _u64(b, 11)
            for j in range(sym_keys.size):
                if sym_keys[j] == key:
                    locate_map[loc] = sym_ids[j]
            dstats[DS_IGNORED] += 1
            continue
        if t not in (_A, _F, _E, _C, _X, _D, _U, _P, _Q, _H):  # fmt: skip
            dstats[DS_IGNORED] += 1
            continue
        inst = locate_map[loc]
        if inst == 0:
            dstats[DS_OTHER_INSTRUMENT] += 1
            continue
        o = out
        n0 = n
        w = n if emit else 0  # without emit every message is written at out[0] and dropped
        e = _Msg(o, seq0, mseq, ts, recv, inst)
        if t in (_A, _F):
            side = SIDE_BUY if b[19] == _B else SIDE_SELL
            w = _emit(e, w, MD_BOOK_ADD, side,
                      np.int64(_u32(b, 32)), np.int64(_u32(b, 20)), _u64(b, 11), 0)  # fmt: skip
            if not _book_event(o, w, inst, bk, dstats):
                w -= 1
                continue
            w = _quotes(e, w, bk.px, bk.qty, bk.n, last_q)
            if depth > 0:
                _levels(e, seq0 + n0, bk, pub, lv, lvc, emit)
        elif t in (_E, _C, _X, _D, _U):
            ref = _u64(b, 11)
            j = map_find(otab, ref)
            if j < 0:
                dstats[DS_UNKNOWN_REF] += 1
                continue
            opx = otab[j, O_PX]
            sd = order_side(otab, j)
            left = otab[j, O_QTY]
            if t in (_E, _C):
                q = np.int64(_u32(b, 19))
                w = _emit(e, w, MD_BOOK_EXEC, sd, opx, q, ref, 0)
                _book_event(o, w, inst, bk, dstats)
                tpx = opx
                printable = True
                if t == _C:
                    tpx = np.int64(_u32(b, 32))
                    printable = b[31] == _Y
                if printable:
                    w = _emit(e, w, MD_TRADE, -sd, tpx, q, 0, 0)
            elif t == _X:
                q = np.int64(_u32(b, 19))
                w = _emit(e, w, MD_BOOK_CANCEL, sd, opx, q, ref, 0)
                _book_event(o, w, inst, bk, dstats)
            elif t == _D:
                w = _emit(e, w, MD_BOOK_DELETE, sd, opx, left, ref, 0)
                _book_event(o, w, inst, bk, dstats)
            else:  # U: the old order leaves the book, the new one joins at the back
                w = _emit(e, w, MD_BOOK_DELETE, sd, opx, left, ref, 0)
                _book_event(o, w, inst, bk, dstats)
                w = _emit(e, w, MD_BOOK_ADD, sd,
                          np.int64(_u32(b, 31)), np.int64(_u32(b, 27)), _u64(b, 19), 0)  # fmt: skip
                if not _book_event(o, w, inst, bk, dstats):
                    w -= 1
            w = _quotes(e, w, bk.px, bk.qty, bk.n, last_q)
            if depth > 0:
                _levels(e, seq0 + n0, bk, pub, lv, lvc, emit)
        elif t == _P:
            sd = SIDE_BUY if b[19] == _B else SIDE_SELL
            tpx = np.int64(_u32(b, 32))
            q = np.int64(_u32(b, 20))
            w = _emit(e, w, MD_BOOK_HIDDEN_EXEC, sd, tpx, q, 0, 0)
            w = _emit(e, w, MD_TRADE, -sd, tpx, q, 0, 0)
        elif t == _Q:
            q = np.int64(_u64(b, 11))
            tpx = np.int64(_u32(b, 27))
            w = _emit(e, w, MD_CROSS_TRADE, 0, tpx, q, 0, 0)
        else:  # H
            st = b[19]
            fl = MDF_RESUME
            if st in (_S_HALT, _PAUSED):
                fl = MDF_HALT
            elif st == _Q_QUOTE:
                fl = MDF_QUOTING
            w = _emit(e, w, MD_TRADING_HALT, 0, 0, 0, 0, fl)
        if emit:
            if w > n0:
                out[w - 1].flags |= MDF_LAST_IN_BATCH
            n = w
    dstats[DS_RECORDS] += n
    return n


def new_books(instruments: int, levels: int = 1024, orders: int = 4096) -> tuple:
    """The books of instrument ids 0 .. instruments: ``(builder, last_q)``, a
    :class:`~bot4.marketdata.builder.BookBuilder` of ``levels`` levels per side built from
    the messages alone (no reference rows, no depth records: the decoder publishes its own
    quotes) with an order map of ``orders`` rows to start with (grow it with
    ``builder.reserve`` between kernel calls), and ``last_q`` int64[books, 2, 2]."""
    from bot4.marketdata.builder import BookBuilder

    books = instruments + 1
    builder = BookBuilder(books, levels, 0, check=False, reference=False, orders=orders)
    return builder, np.zeros((books, 2, 2), np.int64)


def decode_scratch(count: int) -> np.ndarray:
    return np.zeros(max(1, count) * MAX_RECORDS_PER_MESSAGE, MARKET_DATA)
