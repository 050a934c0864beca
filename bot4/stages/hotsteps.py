"""The hot group's member steps (``bot4.stages.hotloop`` runs them in its compiled cycle):
one batch of one input of the signals, risk or orders member, exactly as
``StageRunner._step`` does it — peek the input; claim ``k * max_out_per_in`` contiguous
slots on every output; call the stage's kernel with the stage's state; write the member's
cursor buffer in its control-block slot (generation last, release store); commit the
outputs; release the input — so a group killed anywhere resumes every member exactly.
Commits and releases never fence here: a consumer or producer outside the group is woken
by the cycle (``hotloop._wake_peers``) from the bits a step sets in its loop-state words.

Member tuple ``m`` (built by ``bot4.stages.hotpath.HotPath``): ``(ls, blk, wake_in,
wake_out, rings, state)`` — the loop-state words (u64, ``LS_WORDS``, owned by the group
process), the member's control-block slot, per input / output whether its peer is outside
the group, the rings' ``(header, slots)`` pairs (inputs then outputs), the stage's state.
A step returns the records read, 0 when its input is empty, -1 to bail (an output without
room: the Python step waits for it, or counts a full reject ring's records). Near an
output's wrap point, where fewer than ``max_out_per_in`` contiguous slots remain though the
ring has room, risk and orders write to their scratch (the member tuple's last element, one
array per output) and copy the records across the wrap before they commit (:func:`_claim`,
:func:`_place`): that used to be a bail too, and while an output stayed short of its wrap
(the OMS's ``venue_orders`` takes seconds to move 9 slots) every input batch bailed to a
cold Python round, 47 of them in a 30 s default run.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.nbkit.inner import inner
from bot4.oms.from_risk import orders_kernel
from bot4.oms.from_venue import execs_kernel
from bot4.risk.checks import check_intents
from bot4.risk.positions import apply_book_levels, apply_fills, apply_market_data
from bot4.shm.atomics import monotonic_ns, store_release
from bot4.shm.control import (
    C_CURSOR,
    C_GEN,
    C_NEXT_SEQ,
    C_VALID_AT,
    S_BATCHES,
    S_CURSOR_A,
    S_CURSOR_B,
    S_RECORDS_IN,
    S_RECORDS_OUT,
)
from bot4.shm.ring_layout import W_CAPACITY, W_PRODUCER_OWN_POSITION
from bot4.shm.ring_ops import (
    consumer_peek,
    consumer_release_nowake,
    producer_claim,
    producer_commit_nowake,
    producer_room,
)
from bot4.signals.features import depth_kernel, signals_kernel

# loop-state words of one member (u64)
L_GEN, L_NEXT_BUF, L_NEXT_SEQ, L_BATCHES, L_REC_IN, L_REC_OUT = range(6)
L_CUR = 8  # input cursors, one word per input
L_WAKE_OUT = 12  # bit j: output j (consumer outside the group) committed, not yet woken
L_WAKE_IN = 13  # bit i: input i (producer outside the group) released, not yet woken
LS_WORDS = 16

_ONE = np.uint64(1)
_ONE_I = np.int64(1)  # signals' max_out_per_in
_TWO = np.int64(2)  # risk's max_out_per_in (an order and a decision per input)
# Input indices and flags handed to the step kernels are numpy scalars, not bare constants:
# numba compiles a callee once per distinct literal argument, and each of orders_step,
# risk_step and (through orders_step) the OMS's execs_kernel tree was compiled twice,
# ~7 s of the cold warm's critical path (docs/compile.md). One branch on ``i`` per batch
# is what the shared copy costs at run time.
_IN0 = np.int64(0)
_IN1 = np.int64(1)
_KEEP_EVENTS = np.bool_(True)  # the orders stage's type for keep_events (a Python bool)


# The risk member carries the risk book's state (``RiskBook.st``, one named tuple of
# arrays: bot4.risk) and the step calls its kernels with it.
def _risk_state(book):
    return book.st


@njit(nogil=True, cache=True, inline="always")
def _index(hdr, pos):
    return np.int64(pos & (hdr[W_CAPACITY] - _ONE))


@njit(nogil=True, cache=True, inline="always")
def _claim(oh, osl, want, mo, sc):
    """Room for up to ``want`` records, ``mo`` per input, on an output (header ``oh``,
    slots ``osl``, scratch ``sc``): ``(position, count, view, wrapped)``. The ring's own
    contiguous slots, unless the wrap point cuts them short of the ring's free room: then
    the scratch, as many as the ring has room for across the wrap (``wrapped``:
    :func:`_place` copies them; a batch is not cut to the slots before the wrap point,
    where signals read one tick per round until an intent crossed it); count 0 when the
    ring has less than ``mo`` free (the caller bails)."""
    c, g = producer_claim(oh, want)
    if g < want:  # short of the wrap point, or of free slots
        _c, room = producer_room(oh, want)
        if room > g and room >= mo:  # more room across the wrap
            room = min(room, np.int64(sc.shape[0]))
            return c, room, sc[:room], True
    if g < mo:
        return c, np.int64(0), sc[:0], False
    x = _index(oh, c)
    return c, g, osl[x : x + g], False


@njit(nogil=True, cache=True, inline="always")
def _place(oh, osl, c, view, n, wrapped):
    """Copy ``n`` records a kernel wrote to the scratch ``view`` into the ring from
    position ``c``, across the wrap point (before the cursor buffer and the commit)."""
    if wrapped:
        x = _index(oh, c)
        first = min(n, np.int64(osl.shape[0]) - x)
        for r in range(first):
            osl[x + r] = view[r]
        for r in range(first, n):
            osl[r - first] = view[r]


@njit(nogil=True, cache=True, inline="always")
def _buffer(ls):
    """Offset of the cursor buffer this batch writes (the one not written last time)."""
    return S_CURSOR_A if ls[L_NEXT_BUF] == 0 else S_CURSOR_B


@njit(nogil=True, cache=True, inline="always")
def _seal(blk, base, ls, next_seq):
    """Finish the cursor buffer at ``base``: next sequence number, then the generation
    with a release store (the buffer counts only once its generation is written)."""
    blk[base + C_NEXT_SEQ] = np.uint64(next_seq)
    gen = ls[L_GEN] + _ONE
    ls[L_GEN] = gen
    store_release(blk, base + C_GEN, gen)
    ls[L_NEXT_BUF] ^= _ONE
    ls[L_NEXT_SEQ] = np.uint64(next_seq)


@njit(nogil=True, cache=True, inline="always")
def _commit(ls, j, hdr, n, wake):
    """Publish ``n`` records on output ``j``. A consumer outside the group is woken later,
    once per ring, by :func:`_wake_peers` (one fence per round, not per commit, and none
    on the tick's path between two in-group steps)."""
    if n > 0:
        producer_commit_nowake(hdr, n)
        if wake:
            ls[L_WAKE_OUT] |= _ONE << np.uint64(j)


@njit(nogil=True, cache=True, inline="always")
def _release(ls, i, hdr, k, wake):
    consumer_release_nowake(hdr, k)
    if wake:
        ls[L_WAKE_IN] |= _ONE << np.uint64(i)


@njit(nogil=True, cache=True, inline="always")
def _done(ls, blk, k, n_out):
    """Count a batch: the loop-state deltas the members' Python mirrors take in
    (``HotPath.to_python``), and the control block's totals ``bot4 stats`` reads, kept
    live between the (rare) Python rounds, which write the same totals again."""
    ls[L_BATCHES] += _ONE
    ls[L_REC_IN] += np.uint64(k)
    ls[L_REC_OUT] += np.uint64(n_out)
    blk[S_BATCHES] += _ONE
    blk[S_RECORDS_IN] += np.uint64(k)
    blk[S_RECORDS_OUT] += np.uint64(n_out)


# --- signals: input 0 ticks -> output 0 intents; optional input 1 depth ---------------------
@inner(_nrt=False)
def signals_step(m, batch, dep):
    """One batch of the signals member's ticks; records read, 0 when empty, -1 to bail.
    ``dep``: the depth input (:func:`signals_depth_step`), None where it is not wired
    (the branch is compiled out)."""
    ls, blk, wake_in, wake_out, rings, state, sc = m
    ih, isl, oh, osl = rings
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    c0, g0, out, w0 = _claim(oh, osl, k, _ONE_I, sc[0])
    if g0 < 1:
        return -1
    k = min(k, g0)
    ix = _index(ih, p)
    seq = np.int64(ls[L_NEXT_SEQ])
    n = signals_kernel(isl[ix : ix + k], out, seq, state, monotonic_ns())
    _place(oh, osl, c0, out, n, w0)
    ls[L_CUR] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    if dep is not None:  # every input's cursor: the buffer is the whole truth
        blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = c0 + np.uint64(n)
    _seal(blk, base, ls, seq + n)
    _commit(ls, 0, oh, n, wake_out[0])
    _release(ls, 0, ih, k, wake_in[0])
    _done(ls, blk, k, n)
    return k


@inner(_nrt=False)
def signals_depth_step(m, dep, batch):
    """One batch of the signals member's depth input (1, BOOK_LEVEL; ``SignalsStage.process``
    for input 1): the depth state only, no output, so no claim and never a bail. Its
    cursor buffer still says everything ``StageRunner.recover`` reads: every input's
    cursor, the output's unchanged ``valid_at`` (its producer position), ``next_seq``.
    ``dep``: (ring header, slots, ``dq``, depth feature on, records applied (counter),
    park address)."""
    ls, blk, wake_in, _wake_out, rings, state, _sc = m
    _ih, _isl, oh, _osl = rings
    dh, dsl, dq, on, applied, _addr = dep
    p, k = consumer_peek(dh, batch)
    if k == 0:
        return 0
    ix = _index(dh, p)
    if on:
        applied[0] += depth_kernel(dsl[ix : ix + k], dq, state[0])
    ls[L_CUR + 1] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = oh[W_PRODUCER_OWN_POSITION]
    _seal(blk, base, ls, ls[L_NEXT_SEQ])
    _release(ls, 1, dh, k, wake_in[1])
    _done(ls, blk, k, 0)
    return k


# --- risk: inputs 0 intents, 1 fills, 2 market data, optional 3 depth -> outputs 0 orders,
# 1 decisions
@inner(_nrt=False)
def risk_step(m, i, batch, dep):
    """One batch of the risk member's input ``i`` (0-2); records read, 0 when empty, -1 to
    bail. ``dep``: the depth input (:func:`risk_depth_step`), None where it is not wired."""
    ls, blk, wake_in, wake_out, rings, rs, sc = m
    h0, s0, h1, s1, h2, s2, oh0, os0, oh1, os1 = rings
    ih = h0 if i == 0 else (h1 if i == 1 else h2)
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    # max_out_per_in 2: an order and a decision
    c0, g0, out_o, w0 = _claim(oh0, os0, k * 2, _TWO, sc[0])
    c1, g1, out_d, w1 = _claim(oh1, os1, k * 2, _TWO, sc[1])
    if g0 < 2 or g1 < 2:
        return -1
    k = min(k, g0 // 2, g1 // 2)
    ix = _index(ih, p)
    seq = np.int64(ls[L_NEXT_SEQ])
    now = monotonic_ns()
    n_d = 0
    if i == 0:
        n_o, n_d = check_intents(rs, s0[ix : ix + k], out_o, out_d, seq, now)
    elif i == 1:
        n_o = apply_fills(rs, s1[ix : ix + k], out_o, seq, now)
    else:
        n_o = apply_market_data(rs, s2[ix : ix + k], out_o, seq, now)
    _place(oh0, os0, c0, out_o, n_o, w0)
    _place(oh1, os1, c1, out_d, n_d, w1)
    ls[L_CUR + i] = p + np.uint64(k)
    base = _buffer(ls)
    for j in range(3):
        blk[base + C_CURSOR + j] = ls[L_CUR + j]
    if dep is not None:
        blk[base + C_CURSOR + 3] = ls[L_CUR + 3]
    blk[base + C_VALID_AT] = c0 + np.uint64(n_o)
    blk[base + C_VALID_AT + 1] = c1 + np.uint64(n_d)
    _seal(blk, base, ls, seq + n_o + n_d)
    _commit(ls, 0, oh0, n_o, wake_out[0])
    _commit(ls, 1, oh1, n_d, wake_out[1])
    _release(ls, i, ih, k, wake_in[i])
    _done(ls, blk, k, n_o + n_d)
    return k


@inner(_nrt=False)
def risk_depth_step(m, dep, batch):
    """One batch of the risk member's depth input (3, BOOK_LEVEL: the liquidity check's
    book, ``RiskBook.book_levels``): no output, no claim, never a bail; the cursor buffer
    as :func:`signals_depth_step` writes it. ``dep``: (ring header, slots, park address)."""
    ls, blk, wake_in, _wake_out, rings, rs, _sc = m
    _h0, _s0, _h1, _s1, _h2, _s2, oh0, _os0, oh1, _os1 = rings
    dh, dsl, _addr = dep
    p, k = consumer_peek(dh, batch)
    if k == 0:
        return 0
    ix = _index(dh, p)
    apply_book_levels(rs, dsl[ix : ix + k])
    ls[L_CUR + 3] = p + np.uint64(k)
    base = _buffer(ls)
    for j in range(4):
        blk[base + C_CURSOR + j] = ls[L_CUR + j]
    blk[base + C_VALID_AT] = oh0[W_PRODUCER_OWN_POSITION]
    blk[base + C_VALID_AT + 1] = oh1[W_PRODUCER_OWN_POSITION]
    _seal(blk, base, ls, ls[L_NEXT_SEQ])
    _release(ls, 3, dh, k, wake_in[3])
    _done(ls, blk, k, 0)
    return k


# --- orders: inputs 0 orders, 1 venue reports -> venue, fills, order and exec events --------
@inner(_nrt=False)
def orders_step(m, i, batch, mo):
    """One batch of the orders member's input ``i`` (``mo`` = its ``max_out_per_in``);
    records read, 0 when empty, -1 to bail."""
    ls, blk, wake_in, wake_out, rings, oms, sc = m
    h0, s0, h1, s1, oh0, os0, oh1, os1, oh2, os2, oh3, os3 = rings
    ih = h0 if i == 0 else h1
    p, k = consumer_peek(ih, batch)
    if k == 0:
        return 0
    want = k * mo
    c0, g0, venue, w0 = _claim(oh0, os0, want, mo, sc[0])
    c1, g1, fills, w1 = _claim(oh1, os1, want, mo, sc[1])
    c2, g2, copies, w2 = _claim(oh2, os2, want, mo, sc[2])
    c3, g3, events, w3 = _claim(oh3, os3, want, mo, sc[3])
    if g0 < mo or g1 < mo or g2 < mo or g3 < mo:
        return -1
    k = min(k, g0 // mo, g1 // mo, g2 // mo, g3 // mo)
    ix = _index(ih, p)
    seq = np.int64(ls[L_NEXT_SEQ])
    n0 = 0
    n2 = 0
    if i == 0:
        nv, nf, nseq = orders_kernel(s0[ix : ix + k], venue, fills, seq, oms, monotonic_ns())
        for r in range(nv):
            copies[r] = venue[r]
        for r in range(nf):
            events[r] = fills[r]
        n0 = nv
        n2 = nv
        n3 = nf
    else:
        nf, n3, nseq = execs_kernel(s1[ix : ix + k], fills, events, _KEEP_EVENTS, seq, oms)
    _place(oh0, os0, c0, venue, n0, w0)
    _place(oh1, os1, c1, fills, nf, w1)
    _place(oh2, os2, c2, copies, n2, w2)
    _place(oh3, os3, c3, events, n3, w3)
    ls[L_CUR + i] = p + np.uint64(k)
    base = _buffer(ls)
    blk[base + C_CURSOR] = ls[L_CUR]
    blk[base + C_CURSOR + 1] = ls[L_CUR + 1]
    blk[base + C_VALID_AT] = c0 + np.uint64(n0)
    blk[base + C_VALID_AT + 1] = c1 + np.uint64(nf)
    blk[base + C_VALID_AT + 2] = c2 + np.uint64(n2)
    blk[base + C_VALID_AT + 3] = c3 + np.uint64(n3)
    _seal(blk, base, ls, nseq)
    _commit(ls, 0, oh0, n0, wake_out[0])
    _commit(ls, 1, oh1, nf, wake_out[1])
    _commit(ls, 2, oh2, n2, wake_out[2])
    _commit(ls, 3, oh3, n3, wake_out[3])
    _release(ls, i, ih, k, wake_in[i])
    _done(ls, blk, k, n0 + nf + n2 + n3)
    return k
