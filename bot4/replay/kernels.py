"""The deterministic replay's own kernels (``bot4.replay.engine``): the feed's stamping, the
marks' quote tracking, the risk stage's arrival restamp after a window, and the event-exact
loop's quiet steps (:func:`quiet_steps`), which run many events per interpreter trip by
calling the stages' own kernels in the order the Python scheduler calls them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.nbkit import unowned
from bot4.records import MD_QUOTE
from bot4.venue.matching import V_LATENCY, V_Q_HEAD, V_Q_TAIL, venue_md_until_report_kernel

try:  # the risk state's layout (its own module since issue 13)
    from bot4.risk.layout import I_MD_NS, I_STALE, L_KNOWN, X_FEED_GONE, X_LAST_MD_NS
except ImportError:  # pragma: no cover - before the split
    from bot4.risk.checks import I_MD_NS, I_STALE, X_FEED_GONE, X_LAST_MD_NS
    from bot4.risk.limits import L_KNOWN
from bot4.risk.checks import check_intents
from bot4.risk.killswitch import check_staleness, poll_states
from bot4.risk.positions import apply_fills, apply_market_data

__all__ = [
    "WINDOW",
    "Q_BOUND",
    "Q_ORDERS",
    "Q_POLL",
    "Q_ROOM",
    "Q_SINK",
    "Q_STARTED",
    "Q_VENUE",
    "QuietState",
    "quiet_steps",
]

_FAR = 1 << 62
WINDOW = 16384  # market data records per stage call in an event-exact window

# quiet_steps' io words
IO_CS, IO_CV, IO_INT, IO_ORD_N, IO_DEC_N, IO_SEQ, IO_NOW_R, IO_VNOW = 0, 1, 2, 3, 4, 5, 6, 7
IO_STALE_DUE, IO_T, IO_STEPS, IO_CALLS, IO_IN, IO_OUT, IO_WANT, IO_NEED_O, IO_NEED_D = (
    8, 9, 10, 11, 12, 13, 14, 15, 16,
)  # fmt: skip
IO_STEP_S, IO_FILLS = 17, 18
# ... and its inputs that are not arrays, set by the caller before each call
IO_OFF, IO_STALE_EVERY, IO_WINDOW, IO_NEXT_PART, IO_INT_FIRST, IO_MO = 19, 20, 21, 22, 23, 24
IO_SINK_BASE, IO_SINK_BATCH, IO_BOUND, IO_WORDS = 25, 26, 27, 28


class QuietState(NamedTuple):
    """What :func:`quiet_steps` reads and writes besides the delay lines and the output
    buffers, in one object (numba's dispatcher pays per state object passed, not per
    array in it): built by ``bot4.replay.quiet.QuietPath`` at setup and again when the
    feed refills. ``io`` is the path's own; the rest belong to the engine (the feed) and
    to the stages (risk, venue), borrowed for the call."""

    io: np.ndarray  # int64[IO_WORDS]: cursors, clocks, counts (in and out) and the scalars
    rst: tuple  # the risk stage's RiskState (bot4.risk.layout)
    ilim: np.ndarray  # the risk stage's per-instrument limits (L_* columns)
    vst: tuple  # the venue's state (bot4.venue.matching)
    buf: np.ndarray  # the buffered feed (bot4.replay.feed): MARKET_DATA records
    recv: np.ndarray  # int64 ns: each feed record's receive time
    event: np.ndarray  # int64 ns: each feed record's event time


# why quiet_steps returned: before any work for the next event ...
Q_BOUND = 0  # the next event is not a quiet one (or there is none): the scheduler's
Q_ROOM = 1  # an output buffer needs room (IO_NEED_O / IO_NEED_D records)
Q_VENUE = 2  # the venue queued a report due by the next event: the scheduler's
# ... or in the middle of the step at IO_T, the risk stage's part done:
Q_ORDERS = 3  # the risk stage wrote orders: the rest of the step is the scheduler's
Q_POLL = 4  # CANCEL_ALLs queued (IO_WANT): the risk stage's emit and the rest
Q_STARTED = 5  # a stale episode started (IO_WANT: how many): log, poll, emit and the rest
Q_SINK = 6  # the sink's batch is full: the rest of the step is the scheduler's


@njit(nogil=True, cache=True)
def _track_quotes(feed, last_bid, last_ask, quoted):
    """Latest bid / ask per instrument from the quotes in ``feed``; True when an
    instrument was quoted for the first time."""
    new = False
    for k in range(feed.shape[0]):
        r = feed[k]
        i = np.int64(r.instrument)
        if r.kind != MD_QUOTE or r.qty <= 0 or r.price <= 0 or i <= 0 or i >= last_bid.shape[0]:
            continue
        if r.side > 0:
            last_bid[i] = r.price
        elif r.side < 0:
            last_ask[i] = r.price
        if not quoted[i]:
            quoted[i] = True
            new = True
    return new


@njit(nogil=True, cache=True)
def _stamp_chunk(dst, chunk, lat, seq0, last_recv, recv, event):
    """Copy a source chunk into the feed buffer: ``seq`` numbered from ``seq0``,
    ``parent_seq`` 0, ``ts_recv_ns`` = event time + latency, never below the one before
    (from ``last_recv``: a feed keeps its order); the receive and event times also into
    ``recv`` / ``event``. Returns the last receive time."""
    for k in range(chunk.shape[0]):
        dst[k] = chunk[k]
        r = dst[k]
        e = np.int64(r.ts_event_ns)
        t = e + lat[k]
        if t < last_recv:
            t = last_recv
        last_recv = t
        r.seq = seq0 + k
        r.parent_seq = 0
        r.ts_recv_ns = t
        recv[k] = t
        event[k] = e
    return last_recv


@njit(nogil=True, cache=True)
def _restamp_arrivals(md, off, inst_st, acct, ilim, last_before):
    """After the risk stage applied a window of market data in one call at the window's
    last clock: each known instrument's arrival stamp (``I_MD_NS``) set to its last
    record's own delivery time (``ts_recv_ns + off``, at least 1) and the newest arrival
    (``X_LAST_MD_NS``) to the latest of them (``last_before``: its value before the call),
    as record-by-record delivery leaves them. Prices, references (stamped from the
    records' ``ts_recv_ns``) and marks are the same either way."""
    n_inst = ilim.shape[0]
    last = last_before
    for k in range(md.shape[0]):
        r = md[k]
        inst = np.int64(r.instrument)
        if inst <= 0 or inst >= n_inst or ilim[inst, L_KNOWN] == 0:
            continue
        t = max(np.int64(r.ts_recv_ns) + off, np.int64(1))
        inst_st[inst, I_MD_NS] = t
        if t > last:
            last = t
    acct[X_LAST_MD_NS] = last


@njit(nogil=True, cache=True)
def _next_release(vst):
    """``bot4.venue.matching.next_release_ns`` in a kernel."""
    v = vst.v
    head, tail = v[V_Q_HEAD], v[V_Q_TAIL]
    if head >= tail:
        return np.int64(-1)
    q = vst.queue
    return np.int64(q[head & (q.shape[0] - 1)].ts_venue_ns) + v[V_LATENCY]


@njit(nogil=True)
def _first_at(times, lo, n, t):
    """The first of ``times[lo:n]`` at or after ``t`` (``_FAR``: none)."""
    j = lo + np.searchsorted(times[lo:n], t)
    return times[j] if j < n else np.int64(_FAR)


@njit(nogil=True, cache=True)
def quiet_steps(qs, due, recs, fdue, frecs, ord_buf, dec_buf):
    """Event-exact steps where only the risk stage has work, in one call: the events of a
    default chain (intents at their market data's receive time, the risk stage's
    staleness checks), in time order, before the bound (``IO_BOUND``: the next time
    anything else can happen: a record due in another delay line, a flagged record, the
    daily reset, the end of the buffered feed). Each does what the scheduler does
    (``bot4.replay.engine``): the venue's market data window up to the event (stopping
    where a report is queued), the risk stage's market data window before it (arrival
    stamps restamped), then at the event's time the risk stage's intents due, its market
    data received at that instant and its ``pending`` (staleness at ``stale_due``, the
    kill switch's poll). The other stages are idle at such a step (their clocks are moved
    by the caller). Stops, with the reason, at the first step that is not quiet (module's
    ``Q_*``); the cursors, clocks, counts and times are in ``io`` (``IO_*``).

    ``qs`` is the :class:`QuietState`; its ``io`` also holds the call's scalars:
    ``IO_OFF`` the risk stage's offset from the feed's receive time, ns;
    ``IO_STALE_EVERY`` its staleness period, ns, 0 none; ``IO_WINDOW`` market data records
    per stage call; ``IO_NEXT_PART`` when the intents' next part is due, ns;
    ``IO_INT_FIRST`` 1 when the risk stage reads its intents before its market data;
    ``IO_MO`` its most output records per input; ``IO_SINK_BASE`` / ``IO_SINK_BATCH``
    the sink's records not in ``dec_buf`` / its batch; ``IO_BOUND`` the bound, ns.
    ``due`` / ``recs`` and ``fdue`` / ``frecs``: the intents' and the fills' delay line
    head parts (due times in ns, records); ``ord_buf`` / ``dec_buf`` the risk stage's two
    output channels' buffers, written from ``IO_ORD_N`` / ``IO_DEC_N``. All arrays are the
    caller's, borrowed for the call."""
    qs = unowned(qs)  # helpers bind views: no reference counting per call (issue 13)
    due, recs, fdue, frecs = unowned(due), unowned(recs), unowned(fdue), unowned(frecs)
    ord_buf, dec_buf = unowned(ord_buf), unowned(dec_buf)
    io, rst, ilim, vst = qs.io, qs.rst, qs.ilim, qs.vst
    buf, recv, event = qs.buf, qs.recv, qs.event
    off = io[IO_OFF]
    stale_every = io[IO_STALE_EVERY]
    window = io[IO_WINDOW]
    next_part = io[IO_NEXT_PART]
    int_first = io[IO_INT_FIRST] != 0
    mo = io[IO_MO]
    sink_base = io[IO_SINK_BASE]
    sink_batch = io[IO_SINK_BATCH]
    bound = io[IO_BOUND]
    n = buf.shape[0]
    cs = io[IO_CS]
    cv = io[IO_CV]
    ii = io[IO_INT]
    fi = io[IO_FILLS]
    n_fills = fdue.shape[0]
    ord_n = io[IO_ORD_N]
    dec_n = io[IO_DEC_N]
    seq = io[IO_SEQ]
    now_r = io[IO_NOW_R]
    vnow = io[IO_VNOW]
    stale_due = io[IO_STALE_DUE]
    t_prev = io[IO_T]
    steps = io[IO_STEPS]
    calls = io[IO_CALLS]
    r_in = io[IO_IN]
    r_out = io[IO_OUT]
    n_int = due.shape[0]
    acct = rst.acct
    inst = rst.inst
    status = Q_BOUND
    while True:
        # the next event: an intent due, or the first record at or after the next
        # staleness check (less the compute latency of the hops before the risk stage)
        tt = due[ii] if ii < n_int else np.int64(_FAR)
        if stale_every > 0:
            tgt = stale_due - off
            x = _first_at(recv, cs, n, tgt)
            y = _first_at(event, cv, n, tgt)
            if y < x:
                x = y
            if x < tt:
                tt = x
        # while an instrument is in a stale episode (or the feed is gone), every record
        # is an event: the next one ends it at its own time
        every = acct[X_FEED_GONE] != 0
        if not every:
            for i in range(inst.shape[0]):
                if inst[i, I_STALE] != 0:
                    every = True
                    break
        if every and cs < n and recv[cs] < tt:
            tt = recv[cs]
        if fi < n_fills:  # fills written at a step reach the risk stage 1 ns after it
            f = max(fdue[fi], t_prev + 1)
            if f < tt:
                tt = f
        r = _next_release(vst)  # a report queued by an earlier step's window
        if 0 <= r < bound:
            bound = r
        if tt >= bound or tt >= _FAR or tt <= t_prev:
            status = Q_BOUND
            break
        j_int = ii + np.searchsorted(due[ii:], tt, side="right")
        j_f = fi + np.searchsorted(fdue[fi:], tt, side="right")
        if j_int == n_int and next_part <= tt:
            status = Q_BOUND  # the step's intents continue in the next part
            break
        e_max = cs + np.searchsorted(recv[cs:n], tt, side="right")
        need_o = (
            ord_n + (e_max - cs + j_int - ii + j_f - fi) * mo + 16 * (4 + (e_max - cs) // window)
        )
        need_d = dec_n + (j_int - ii + j_f - fi) * mo + 16 * (4 + (e_max - cs) // window)
        if need_o > ord_buf.shape[0] or need_d > dec_buf.shape[0]:
            io[IO_NEED_O] = need_o
            io[IO_NEED_D] = need_d
            status = Q_ROOM
            break
        # the venue's window: its market data up to tt on the exchange's clock
        ww = tt
        while cv < n:
            e = cv + np.searchsorted(event[cv:n], ww, side="right")
            if e <= cv:
                break
            if e > cv + window:
                e = cv + window
            k = venue_md_until_report_kernel(vst, buf[cv:e], vnow)
            t = event[cv + k - 1]
            if t > vnow:
                vnow = t
            cv += k
            r = _next_release(vst)
            if 0 <= r < ww:
                ww = r
        r = _next_release(vst)
        if 0 <= r <= tt:
            status = Q_VENUE
            break
        # the risk stage's window: market data received before tt (at tt too when no
        # intent is due then: a step reads its delay lines before its market data)
        at_w = (j_int == ii or not int_first) and j_f == fi
        if at_w:
            e = cs + np.searchsorted(recv[cs:n], tt, side="right")
        else:
            e = cs + np.searchsorted(recv[cs:n], tt, side="left")
        n_ord = 0
        a = cs
        while a < e:
            b = min(e, a + window)
            last = acct[X_LAST_MD_NS]
            t = recv[b - 1] + off
            if t > now_r:
                now_r = t
            need = (b - a) * mo + 16
            k = apply_market_data(rst, buf[a:b], ord_buf[ord_n : ord_n + need], seq, now_r)
            seq += k
            ord_n += k
            n_ord += k
            r_out += k
            r_in += b - a
            calls += 1
            _restamp_arrivals(buf[a:b], off, inst, acct, ilim, last)
            a = b
        cs = e
        io[IO_STEP_S] = cs
        # the step at tt
        t = tt + off
        if t > now_r:
            now_r = t
        if j_f > fi:  # the fills due (read first: a feedback ring, a delay line)
            m = j_f - fi
            need = m * mo + 16
            k = apply_fills(rst, frecs[fi:j_f], ord_buf[ord_n : ord_n + need], seq, now_r)
            seq += k
            ord_n += k
            n_ord += k
            r_out += k
            r_in += m
            calls += 1
            fi = j_f
        for part in range(2):  # the risk stage's inputs in its reading order
            if (part == 0) == int_first:
                if j_int > ii:  # the intents due
                    m = j_int - ii
                    need = m * mo + 16
                    n_o, n_d = check_intents(
                        rst, recs[ii:j_int], ord_buf[ord_n : ord_n + need],
                        dec_buf[dec_n : dec_n + need], seq, now_r,
                    )  # fmt: skip
                    seq += n_o + n_d
                    ord_n += n_o
                    dec_n += n_d
                    n_ord += n_o
                    r_out += n_o + n_d
                    r_in += m
                    calls += 1
                    ii = j_int
            else:  # the market data received at tt (not in the window)
                e = cs + np.searchsorted(recv[cs:n], tt, side="right")
                if e > cs:
                    need = (e - cs) * mo + 16
                    k = apply_market_data(rst, buf[cs:e], ord_buf[ord_n : ord_n + need], seq, now_r)
                    seq += k
                    ord_n += k
                    n_ord += k
                    r_out += k
                    r_in += e - cs
                    calls += 1
                    cs = e
        t_prev = tt
        steps += 1
        # the risk stage's pending: staleness, then the kill switch's poll
        if stale_every > 0 and now_r >= stale_due:
            stale_due = now_r + stale_every
            started = check_staleness(rst, now_r)
            if started > 0:
                io[IO_WANT] = started
                status = Q_STARTED
                break
        want = poll_states(rst)
        if want > 0:
            io[IO_WANT] = want
            status = Q_POLL
            break
        if n_ord > 0:
            status = Q_ORDERS
            break
        if sink_base + dec_n >= sink_batch:
            status = Q_SINK
            break
        if tt > vnow:
            vnow = tt
    io[IO_CS] = cs
    io[IO_CV] = cv
    io[IO_INT] = ii
    io[IO_FILLS] = fi
    io[IO_ORD_N] = ord_n
    io[IO_DEC_N] = dec_n
    io[IO_SEQ] = seq
    io[IO_NOW_R] = now_r
    io[IO_VNOW] = vnow
    io[IO_STALE_DUE] = stale_due
    io[IO_T] = t_prev
    io[IO_STEPS] = steps
    io[IO_CALLS] = calls
    io[IO_IN] = r_in
    io[IO_OUT] = r_out
    return status
