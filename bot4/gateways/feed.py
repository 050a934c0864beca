"""A LOBSTER day as the exchange simulator publishes it: ITCH 5.0 messages (encoded with
:mod:`bot4.gateways.itch`), the same messages as MARKET_DATA records for the simulator's
venue, and the LOBSTER orderbook row the book equals after each message (the tests' ground
truth). See :func:`lobster_to_itch`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from bot4.gateways import itch
from bot4.records import (
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
    SIDE_BUY,
    SIDE_SELL,
)

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

    def take(self, ts, side, price, qty, keep=-1):
        """Take ``qty`` out of level (side, price), synthetic orders first, then oldest
        (never the order ``keep``)."""
        refs = sorted(self.levels[side].get(price, ()), key=lambda r: (r < SNAPSHOT_REF_BASE,))
        for r in refs:
            if r == keep:
                continue
            if qty <= 0:
                break
            have = self.orders[r][2]
            self.reduce(ts, r, qty)
            qty -= have

    def align(self, ts, row, levels, determinable=0):
        """Corrections so the visible levels equal LOBSTER's orderbook ``row``.

        Levels ``1..determinable`` of the row are what the message alone determines from
        the previous row (the data README's one-step check: levels 1..N-1 of a level-N
        file, the top of a level-1 file unless the message emptied it). Returns whether a
        side's book differed there before the corrections: the messages alone would not
        have rebuilt a row that they determine."""
        differs = False
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
            if determinable and self._differs(side, truth, order[:determinable]):
                differs = True
            self._align_side(ts, side, truth, order)
        return differs

    def _differs(self, side, truth, det) -> bool:
        """Whether the side's levels at or better than ``det[-1]`` differ from ``truth``."""
        prices = self.prices[side]
        if side == SIDE_BUY:
            inside = prices[bisect.bisect_left(prices, det[-1]) :]
        else:
            inside = prices[: bisect.bisect_right(prices, det[-1])]
        if len(inside) != len(det):
            return True
        return any(self.level_size(side, px) != truth[px] for px in det)

    def _align_side(self, ts, side, truth, order):
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
    counts = {"synthetic_adds": 0, "corrections": 0, "carved": 0, "short": 0, "long": 0,
              "determinable_rows": 0,
              "determinable_mismatches": 0}  # fmt: skip
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
            if kind in (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC):
                if oid not in sh.orders:
                    counts["carved"] += 1
                    sh.take(ts, side, px, q)
                    sh.add(ts, oid, side, q, px)
                elif q > sh.orders[oid][2]:
                    # the order is smaller here than LOBSTER says: an earlier carve took
                    # from it; the difference comes out of the level's other orders
                    counts["short"] += 1
                    sh.take(ts, side, px, q - sh.orders[oid][2], keep=oid)
                elif kind == MD_BOOK_DELETE and q < sh.orders[oid][2]:
                    # larger here than the size LOBSTER deletes (it lost shares while out
                    # of the file's levels): the difference stays on the level, as its own
                    # synthetic order
                    counts["long"] += 1
                    extra = sh.orders[oid][2] - q
                    sh.reduce(ts, oid, extra, b"X")
                    sh.synthetic(ts, side, extra, px)
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
            det = _determinable(levels, kind, q, px, side, book[row - 1] if row else None)
            if det:
                counts["determinable_rows"] += 1
                counts["determinable_mismatches"] += sh.align(ts, book[row], levels, det)
            else:
                sh.align(ts, book[row], levels)
            marks.append((len(rows), row))
        lob = np.full(len(rows), -1, np.int64)
        for end, row in marks:
            if end:
                lob[end - 1] = row
        streams.append((rows, md, lob, inst))
    return _assemble(head, streams, symbols, day, midnight, counts)


def _assemble(head, streams, symbols, day, midnight, counts) -> Feed:
    """The day's Feed: ``head`` rows first, then the symbols' streams merged in time order
    (each keeps its own order), then System Event 'C'."""
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


def synthetic_to_itch(
    messages: int = 100_000,
    instruments: int = 3,
    seed: int = 1,
    day: date | None = None,
    spacing_ns: int = 50_000,
) -> Feed:
    """A day from bot4's synthetic source (the default topology's GARCH mid-price walk,
    ``bot4.stages.standins``) as ITCH 5.0: ``messages`` synthetic events from 09:30, one
    every ``spacing_ns``. Each instrument keeps one displayed order per side: a quote
    replaces that side's order (D of the old reference, A of a new one, with the quote's
    price and size; an order of the other side it would cross is deleted first), a trade
    print becomes a non-displayable trade (P). The instruments are the first
    ``instruments`` of the instrument table, so ``md_gateway`` with its default symbols
    takes them all. ``lobster_row`` is -1 throughout (no reference book)."""
    from bot4.marketdata.lobster import local_to_utc_ns
    from bot4.records import DEFAULT_INSTRUMENTS, MD_QUOTE, MD_TRADE
    from bot4.stages.standins import MdWalk, _md_kernel

    day = day or date.today()
    n = int(instruments)
    recs = np.zeros(int(messages), MARKET_DATA)
    mids = np.array([100.0 * 10_000 * (1 + 0.5 * i) for i in range(n)])
    walk = MdWalk(mids, np.full(n, 1e-8), np.full(n, 100, np.int64), np.uint64(seed))
    _md_kernel(recs, 0, len(recs), 1, 0, tuple(walk))
    midnight = int(local_to_utc_ns(day, np.zeros(1, np.int64))[0])
    t_open = 34_200 * 1_000_000_000
    counts = {"quotes": 0, "trades": 0, "crossed": 0}
    head: list = [((b"S", 0, t_open, 0, 0, b" ", 0, 0, 0, b"", b"O"), (0, 0, 0, 0, 0, t_open), -1)]
    symbols: dict[str, int] = {}
    shadows, streams, resting = [], [], []
    for k in range(n):
        inst = k + 1
        sym = DEFAULT_INSTRUMENTS.symbol_of(inst)
        symbols[sym] = inst
        key = sym.encode().ljust(8)
        for t, code in ((b"R", b" "), (b"H", b"T")):
            head.append(
                ((t, LOCATE_BASE + k, t_open, 0, 0, b" ", 0, 0, 0, key, code), (0, 0, 0, 0, 0, t_open), -1)
            )  # fmt: skip
        rows: list = []
        md: list = []
        shadows.append(_Shadow(inst, LOCATE_BASE + k, key, rows, md, counts))
        streams.append((rows, md, None, inst))
        resting.append({SIDE_BUY: 0, SIDE_SELL: 0})
    ref, match = 0, 0
    for p, r in enumerate(recs):
        k = int(r["instrument"]) - 1
        sh, rest = shadows[k], resting[k]
        ts = t_open + p * int(spacing_ns)
        side, px, q = int(r["side"]), int(r["price"]), int(r["qty"])
        if int(r["kind"]) == MD_TRADE:
            match += 1
            counts["trades"] += 1
            sh._emit(ts, b"P", 0, side, q, px, match, kind=MD_BOOK_HIDDEN_EXEC)
            continue
        if int(r["kind"]) != MD_QUOTE:
            continue
        counts["quotes"] += 1
        other = rest[-side]
        if other and ((side == SIDE_BUY and px >= sh.orders[other][1]) or
                      (side == SIDE_SELL and px <= sh.orders[other][1])):  # fmt: skip
            counts["crossed"] += 1
            sh.reduce(ts, other, 0, b"D")
            rest[-side] = 0
        if rest[side]:
            sh.reduce(ts, rest[side], 0, b"D")
        ref += 1
        sh.add(ts, ref, side, q, px)
        rest[side] = ref
    streams = [(rows, md, np.full(len(rows), -1, np.int64), inst) for rows, md, _, inst in streams]
    return _assemble(head, streams, symbols, day, midnight, counts)


def _determinable(levels, kind, qty, price, side, prev) -> int:
    """How many levels of the orderbook row after this message the message determines from
    the row before (``prev``): levels 1..N-1 of a level-N file (the N-th can slide in from
    outside the window); the top of a level-1 file unless the message takes the whole best
    level of its side (the next best was never shown); 0 without a previous row."""
    if prev is None:
        return 0
    if levels > 1:
        return levels - 1
    c = 0 if side == SIDE_SELL else 2
    reduces = kind in (MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC)
    if reduces and int(prev[c]) == price and qty >= int(prev[c + 1]):
        return 0
    return 1


def _side(side: int) -> bytes:
    return b"B" if side == SIDE_BUY else b"S"
