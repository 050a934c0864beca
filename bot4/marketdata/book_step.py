"""The one book step: an order-level event applied to one instrument's levels and orders.

:func:`apply_event` applies a book event (a MARKET_DATA record, ``MD_BOOK_ADD`` /
``CANCEL`` / ``DELETE`` / ``EXEC``) to instrument ``i``'s price levels (per side up to
``window`` levels, each with its aggregate visible size and order count) and to the
order map (:mod:`bot4.nbkit`'s u64 map, one 32-byte row per order: remaining
size, price, side, add seq), counting what it met in the ``BUILD_STATS`` slots. It is
the product's one book implementation: the md stage's
:func:`bot4.marketdata.builder.build_kernel` (LOBSTER) and md_gateway's ITCH decoder
(:func:`bot4.gateways.itch.itch_decode_kernel`) both call it, on the arrays of a
:class:`bot4.marketdata.builder.BookBuilder`. The level helpers here (find, insert,
remove) are the builder's too.

**Storage order**: each side's levels are stored *worst first*, the best at index
``n - 1``: level ``k`` (0 = best) is at index ``n - 1 - k``. Nearly every add, cancel and
execution lands at or next to the best, so a level created or emptied there moves
nothing, where best-first storage moved every level behind it (md_gateway's sides hold
hundreds of levels). Outside the kernels, read the levels best first through
:func:`bot4.marketdata.builder.top_kernel` (``BookBuilder.top``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from bot4.nbkit import (
    map_delete,
    map_find,
    map_put,
)
from bot4.records import (
    MD_BOOK_ADD,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    SIDE_BUY,
    SIDE_SELL,
)

BID = 0  # side row of the book arrays
ASK = 1

# stats slots (counts of messages, except the *level* counts)
B_EVENTS = 0  # book events applied (kinds 1-4 with a valid side)
B_IGNORED = 1  # other kinds (hidden executions, crosses, halts): no visible change
B_SEEDED = 2  # levels seeded from the first reference row (orders resting before the data)
B_SLIDE_IN = 3  # levels taken from the reference when they entered a depth-limited window
B_RESYNC = 4  # books re-seeded from a reference row after a gap
B_UNKNOWN_ORDER = 5  # cancel / delete / exec of an id the map does not know (applied by price)
B_DUPLICATE = 6  # add of an id already live (the new add replaces it in the map)
B_DELETE_MISMATCH = 7  # delete whose size differs from the order's remaining size
B_OVERFILL = 8  # cancel / exec larger than the order's remaining size
B_ORDER_MISMATCH = 9  # message price / side differ from the known order's
B_DROPPED = 10  # levels pushed out of the window by a better one
B_BAD_SIDE = 11  # book event whose side is neither buy nor sell (ignored)
B_MISSING_LEVEL = 12  # gap: reduction at a price with no level
B_NEGATIVE_LEVEL = 13  # gap: reduction larger than the level
B_UNKNOWN_GAP = 14  # gap: reduction of an unknown order without a price
B_CHECK_MISMATCH = 15  # gap: the window differs from the reference row
B_CROSSED = 16  # crossed or locked book (episodes)
B_STALE_MESSAGES = 17  # messages published flagged MDF_BOOK_STALE
B_CHECKED = 18  # messages whose window was compared with a reference row
B_BEYOND = 19  # reductions of known orders resting beyond a full window (no gap)
BUILD_STATS = (
    "events",
    "ignored",
    "seeded",
    "slide_in",
    "resync",
    "unknown_order",
    "duplicate_order",
    "delete_mismatch",
    "overfill",
    "order_mismatch",
    "dropped_level",
    "bad_side",
    "missing_level",
    "negative_level",
    "unknown_order_gap",
    "check_mismatch",
    "crossed",
    "stale_messages",
    "checked",
    "beyond_window",
)
#: the reasons that make a book inconsistent (stale)
GAP_STATS = ("missing_level", "negative_level", "unknown_order_gap", "check_mismatch", "crossed")


class BookArrays(NamedTuple):
    """What the book step reads and writes: a :class:`bot4.marketdata.builder.BookBuilder`'s
    levels, counters and order map (``BookBuilder.arrays()``), one state object for
    :func:`apply_event` and the level helpers. Owned by the one process that feeds the
    builder. Rebuilt after the order map grows (``otab`` is a new array then)."""

    px: np.ndarray  # int64[books, 2, window]: level prices, worst first (best at n - 1)
    qty: np.ndarray  # int64[books, 2, window]: aggregate visible size per level, lots
    cnt: np.ndarray  # int64[books, 2, window]: orders per level
    n: np.ndarray  # int64[books, 2]: levels in use per side
    stats: np.ndarray  # int64[len(BUILD_STATS)]: the B_* counters
    otab: np.ndarray  # the order map (nbkit u64 map, O_* columns)
    live: np.ndarray  # int64[1]: live orders in the map


# --- levels ---------------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _better(s, a, b):
    """Price ``a`` is better than ``b`` on side row ``s``."""
    return a > b if s == BID else a < b


NEAR = 8  # levels _find scans one by one from the best before it bisects the rest


@njit(nogil=True, cache=True, inline="always")
def _find(px, n, i, s, p):
    """Storage index of price ``p`` on side ``s`` of instrument ``i``, or -(insertion
    index) - 1: the index the new level takes, the better levels from it on moving up one.
    Scans from the best (index ``n - 1``) down, where nearly every message lands; past the
    ``NEAR`` best levels it bisects the rest, so a cancel deep in a side of a thousand
    levels costs ~10 steps, not a thousand."""
    j = n[i, s] - 1
    far = j - NEAR
    while j >= 0 and _better(s, px[i, s, j], p):
        if j == far:
            # levels far..n-1 are better than p; the last index not better is below far
            lo = 0
            hi = j
            while lo < hi:
                mid = (lo + hi) >> 1
                if _better(s, px[i, s, mid], p):
                    hi = mid
                else:
                    lo = mid + 1
            j = lo - 1
            break
        j -= 1
    if j >= 0 and px[i, s, j] == p:
        return j
    return -(j + 1) - 1


@intrinsic
def _move(typingctx, arr, i, s, dst, src, count):
    """``arr[i, s, dst:dst + count] = arr[i, s, src:src + count]`` for a C-contiguous array
    of 3 or more dimensions, overlapping or not: one ``llvm.memmove`` (libc's vectorised
    memmove), where an element loop pays the negative-index fix-up per element and is not
    vectorised. Nothing is checked: the caller keeps both runs inside ``arr[i, s]``."""
    if not (isinstance(arr, types.Array) and arr.ndim >= 3 and arr.layout == "C"):
        raise TypeError("_move takes a C-contiguous array of 3 or more dimensions")

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        i64 = ir.IntType(64)
        ii, ss, d, c, n = (context.cast(builder, a, t, types.int64)
                           for a, t in zip(args[1:], sig.args[1:], strict=True))  # fmt: skip
        st0 = builder.extract_value(ary.strides, 0)
        st1 = builder.extract_value(ary.strides, 1)
        item = builder.extract_value(ary.strides, 2)  # bytes per level
        row = builder.add(builder.mul(ii, st0), builder.mul(ss, st1))
        base = builder.bitcast(ary.data, cgutils.voidptr_t)
        to = builder.gep(base, [builder.add(row, builder.mul(d, item))])
        fr = builder.gep(base, [builder.add(row, builder.mul(c, item))])
        with builder.if_then(builder.icmp_signed(">", n, i64(0))):
            cgutils.raw_memmove(builder, to, fr, n, item)
        return context.get_dummy_value()

    return types.void(arr, i, s, dst, src, count), codegen


SHORT = 8  # level shifts longer than this use _move (a call), shorter ones a loop


@njit(nogil=True, cache=True, inline="always")
def _shift(px, qty, cnt, i, s, dst, src, count):
    """Move ``count`` levels of instrument ``i``'s side ``s`` from ``src`` to ``dst``."""
    if count > SHORT:
        _move(px, i, s, dst, src, count)
        _move(qty, i, s, dst, src, count)
        _move(cnt, i, s, dst, src, count)
    elif dst > src:
        for k in range(count - 1, -1, -1):
            px[i, s, dst + k] = px[i, s, src + k]
            qty[i, s, dst + k] = qty[i, s, src + k]
            cnt[i, s, dst + k] = cnt[i, s, src + k]
    else:
        for k in range(count):
            px[i, s, dst + k] = px[i, s, src + k]
            qty[i, s, dst + k] = qty[i, s, src + k]
            cnt[i, s, dst + k] = cnt[i, s, src + k]


@njit(nogil=True, cache=True, inline="always")
def _insert_level(b, window, i, s, j, p, q, c):
    """Insert a level at storage index ``j`` of book ``b`` (:class:`BookArrays`; ``j``
    as :func:`_find` gives it), moving the better ones up; the worst (index 0) falls out
    of a full window. Returns False when the new level would itself be the one beyond the
    window (nothing inserted)."""
    px, qty, cnt, n = b.px, b.qty, b.cnt, b.n
    m = n[i, s]
    if m >= window:
        if j == 0:
            return False
        b.stats[B_DROPPED] += 1
        _shift(px, qty, cnt, i, s, 0, 1, j - 1)  # the worst leaves, the rest move down
        j -= 1
    else:
        _shift(px, qty, cnt, i, s, j + 1, j, m - j)
        n[i, s] = m + 1
    px[i, s, j] = p
    qty[i, s, j] = q
    cnt[i, s, j] = c
    return True


@njit(nogil=True, cache=True, inline="always")
def _remove_level(px, qty, cnt, n, i, s, j):
    """Remove the level at storage index ``j`` (the best, ``n - 1``, moves nothing)."""
    m = n[i, s]
    _shift(px, qty, cnt, i, s, j, j + 1, m - 1 - j)
    n[i, s] = m - 1


# --- the order map: bot4.nbkit's u64 map, one 32-byte row per order ---------------------------
# otab[slot] = (id, remaining qty, price, seq * 4 + side + 1); id 0 = empty row. One row per
# order keeps a hit to one cache line (a table of five parallel arrays touches five).
O_ID, O_QTY, O_PX, O_SQ = range(4)
NO = 4


@njit(nogil=True, cache=True, inline="always")
def _oset(otab, k, q, p, side, seq):
    otab[k, O_QTY] = q
    otab[k, O_PX] = p
    otab[k, O_SQ] = np.int64(seq) * 4 + side + 1


@njit(nogil=True, cache=True, inline="always")
def order_side(otab, k):
    """Side (SIDE_BUY / SIDE_SELL) of the order in map row ``k``."""
    return (otab[k, O_SQ] & 3) - 1


# --- one message ----------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def apply_event(b, window, i, r):
    """Apply one book event (a MARKET_DATA record ``r``) to instrument ``i``'s levels and
    the order map of book ``b`` (:class:`BookArrays`, ``window`` levels per side kept);
    returns True when it opened a gap. The one book step of the product:
    :func:`build_kernel` (the md stage, LOBSTER) and the ITCH decoder
    (:func:`bot4.gateways.itch.itch_decode_kernel`, md_gateway) both call it. An add
    needs a free map row: callers keep ``live[0]`` below 3/4 of ``otab``'s rows."""
    px, qty, cnt, n, stats, otab, live = b.px, b.qty, b.cnt, b.n, b.stats, b.otab, b.live
    kind = r.kind
    if kind < MD_BOOK_ADD or kind > MD_BOOK_EXEC:
        stats[B_IGNORED] += 1
        return False
    side = r.side
    p = r.price
    q = r.qty
    oid = r.order_id
    if kind == MD_BOOK_ADD:
        if side != SIDE_BUY and side != SIDE_SELL:
            stats[B_BAD_SIDE] += 1
            return False
        if oid != 0:
            k = map_find(otab, oid)
            if k >= 0:
                stats[B_DUPLICATE] += 1
            else:
                k = map_put(otab, oid)  # never -1: the kernel stops at 3/4 full
                live[0] += 1
            if k >= 0:
                _oset(otab, k, q, p, side, r.seq)
        s = BID if side == SIDE_BUY else ASK
        j = _find(px, n, i, s, p)
        if j >= 0:
            qty[i, s, j] += q
            cnt[i, s, j] += 1
        else:
            _insert_level(b, window, i, s, -j - 1, p, q, 1)
        stats[B_EVENTS] += 1
        return False
    # cancel, delete, execution: by order id, the message's price and side when it has them
    gone = kind == MD_BOOK_DELETE
    k = map_find(otab, oid)  # id 0 is never found
    if k >= 0:
        o_side = order_side(otab, k)
        if p == 0:
            p = otab[k, O_PX]
            side = o_side
        elif otab[k, O_PX] != p or o_side != side:
            stats[B_ORDER_MISMATCH] += 1
        left = otab[k, O_QTY] - q
        if kind == MD_BOOK_DELETE:
            if left != 0:
                stats[B_DELETE_MISMATCH] += 1
            left = 0
        if left < 0:
            stats[B_OVERFILL] += 1
        if left > 0:
            otab[k, O_QTY] = left
        else:
            map_delete(otab, k)
            live[0] -= 1
            gone = True
    else:
        stats[B_UNKNOWN_ORDER] += 1
        if p == 0:
            stats[B_UNKNOWN_GAP] += 1
            return True
    if side != SIDE_BUY and side != SIDE_SELL:
        stats[B_BAD_SIDE] += 1
        return False
    s = BID if side == SIDE_BUY else ASK
    j = _find(px, n, i, s, p)
    stats[B_EVENTS] += 1
    if j < 0:
        if k >= 0 and n[i, s] >= window and _better(s, px[i, s, 0], p):
            # a known order whose level lies beyond a full window (added there, or pushed
            # out by better levels): the book never held it, nothing is inconsistent
            stats[B_BEYOND] += 1
            return False
        stats[B_MISSING_LEVEL] += 1
        return True
    left = qty[i, s, j] - q
    if left > 0:
        qty[i, s, j] = left
        if gone and cnt[i, s, j] > 1:
            cnt[i, s, j] -= 1
        return False
    _remove_level(px, qty, cnt, n, i, s, j)
    if left < 0:
        stats[B_NEGATIVE_LEVEL] += 1
        return True
    return False
