"""The compiled duty cycle of the hot path group (``bot4.stages.hotloop``, issue 15).

On process-local rings (``hotpath._bench_members``), the default synthetic quote stream:

* the compiled cycle emits exactly the records the stages' own ``process`` calls emit for
  the same batches in the same order (every field but the stage clocks' stamps, which the
  two paths read at different instants);
* after it, every member's effective cursor buffer (the highest generation) says what
  ``StageRunner.recover`` needs: each input's cursor at its consumer position, each
  output's ``valid_at`` at its producer position, ``next_seq`` after the last record;
* near an output's wrap point (fewer than ``max_out_per_in`` contiguous slots, room
  across it) the records are the same, copied across the wrap inside the cycle;
* an output without ``max_out_per_in`` free slots hands the batch back to Python
  (``R_BAIL``) with nothing read, written or committed.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.records import MARKET_DATA
from bot4.risk.layout import I_DEPTH_ASK, I_DEPTH_BID
from bot4.shm import control as C
from bot4.shm import ring_ops as ops
from bot4.shm.ring_layout import W_CONSUMER_POSITION, W_PRODUCER_POSITION
from bot4.stages import hotloop as H
from bot4.stages import hotpath as P
from bot4.stages.standins import SyntheticMarketData

STAMPS = ("ts_signal_ns", "ts_risk_ns", "ts_order_ns")


def _quotes(n: int, seed: int) -> np.ndarray:
    from bot4.pipeline.topology import StageSpec

    spec = StageSpec(name="md", kind="synthetic-md", core=0, index=0, params={"seed": seed})
    md = SyntheticMarketData(spec, [], [], "t")
    md.setup()
    out = np.zeros(n, MARKET_DATA)
    md.generate(0, n, [out], np.zeros(1, np.int64), 1)
    return out


def _push(rings, name, recs) -> None:
    hdr, slots = rings[name]
    pos, got = ops.producer_claim(hdr, len(recs))
    assert got == len(recs)
    ix = int(pos) & (len(slots) - 1)
    slots[ix : ix + got] = recs
    ops.producer_commit(hdr, got)


def _drain(rings, name) -> np.ndarray:
    """Everything in ring ``name``, across its wrap point."""
    hdr, slots = rings[name]
    parts = []
    while True:
        pos, k = ops.consumer_peek(hdr, len(slots))
        if not k:
            return np.concatenate(parts) if parts else slots[:0].copy()
        ix = int(pos) & (len(slots) - 1)
        parts.append(slots[ix : ix + int(k)].copy())
        ops.consumer_release(hdr, int(k))


def _run(hp) -> None:
    """Rounds until one reads nothing (a signals batch one slot short of its output's
    wrap reads one tick)."""
    for _ in range(64):
        reason, n = hp.run(0, False, 0)  # deadline in the past: one round per call
        assert reason in (H.R_DEADLINE, H.R_IDLE)
        if n == 0:
            break
    hp.to_python()


def _strip(recs: np.ndarray) -> np.ndarray:
    recs = recs.copy()
    for f in STAMPS:
        if f in recs.dtype.names:
            recs[f] = 0
    return recs


def _fresh_stream(wiring) -> np.ndarray:
    """The default stream, made after this wiring's cycle is compiled (or loaded):
    risk refuses intents whose tick is too old."""
    P.warm(*wiring)
    return _quotes(200, 1)


@pytest.fixture
def stream():
    """The default topology's synthetic stream (seed 1): quotes that make orders, stamped
    now (risk refuses intents whose tick is too old: make it after compiling)."""
    members, _rings = P._bench_members(64)
    P.HotPath(members, {"signals", "risk", "orders"}).prime()
    return _quotes(200, 1)


@pytest.mark.parametrize("near_wrap", [False, True], ids=["mid-ring", "at-the-wrap"])
def test_compiled_cycle_emits_what_the_stages_process_calls_emit(stream, near_wrap):
    """Also with every output of the members one slot short of its wrap point: risk and
    orders write to their scratch and copy across the wrap in the cycle, no bail (``_run``
    asserts every return)."""
    members, rings = P._bench_members(1024)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
    if near_wrap:
        for m in members:
            for r in m.outs:
                _pos, got = ops.producer_claim(r.hdr, len(r.slots) - 1)
                ops.producer_commit(r.hdr, int(got))  # positions only: then read
                _pos, k = ops.consumer_peek(r.hdr, len(r.slots))
                ops.consumer_release(r.hdr, int(k))
    _push(rings, "risk_md", stream)  # reference prices first, then the ticks
    _run(hp)
    _push(rings, "ticks", stream)
    _run(hp)
    got = {n: _drain(rings, n) for n in ("decisions", "venue_orders", "order_events")}

    ref, _ = P._bench_members(1024)
    sig, risk, oms = (m.stage for m in ref)
    seqs = [m.next_seq for m in ref]

    def call(k, stage, i, batch, outs):
        counts = np.zeros(len(outs), np.int64)
        seqs[k] = stage.process(i, batch, outs, counts, seqs[k])
        return [o[: int(c)].copy() for o, c in zip(outs, counts, strict=True)]

    def outs_of(m, n):
        return [np.zeros(n * m.stage.max_out_per_in, r.slots.dtype) for r in m.outs]

    call(1, risk, 2, stream, outs_of(ref[1], len(stream)))
    (intents,) = call(0, sig, 0, stream, outs_of(ref[0], len(stream)))
    orders, decisions = call(1, risk, 0, intents, outs_of(ref[1], len(intents)))
    venue, _fills, events, _execs = call(2, oms, 0, orders, outs_of(ref[2], len(orders)))
    assert len(intents) > 0 and len(orders) > 0, "the stream made no orders: a weak test"
    assert np.array_equal(_strip(got["decisions"]), _strip(decisions))
    assert np.array_equal(_strip(got["venue_orders"]), _strip(venue))
    assert np.array_equal(_strip(got["order_events"]), _strip(events))
    # the in-group stamps are the stage clocks, in order along the path
    v = got["venue_orders"]
    assert np.all(v["ts_signal_ns"] <= v["ts_risk_ns"]) and np.all(
        v["ts_risk_ns"] <= v["ts_order_ns"]
    )


def test_cursor_buffers_after_the_cycle_are_what_recover_reads(stream):
    members, rings = P._bench_members(1024)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
    _push(rings, "risk_md", stream)
    _run(hp)
    _push(rings, "ticks", stream)
    _run(hp)
    for m in members:
        bufs = [m.blk[C.S_CURSOR_A :][: C.CURSOR_WORDS], m.blk[C.S_CURSOR_B :][: C.CURSOR_WORDS]]
        top = max(bufs, key=lambda b: int(b[C.C_GEN]))
        assert int(top[C.C_GEN]) == m.gen > 0
        assert int(top[C.C_NEXT_SEQ]) == m.next_seq
        for i, ring in enumerate(m.ins):
            assert int(top[C.C_CURSOR + i]) == int(ring.hdr[W_CONSUMER_POSITION]) == m.cur[i]
        for j, ring in enumerate(m.outs):
            assert int(top[C.C_VALID_AT + j]) == int(ring.hdr[W_PRODUCER_POSITION])
    assert members[0].records_in == len(stream) and members[1].records_in >= len(stream)


# --- the depth wirings (issue 18): signals and / or risk read the md stage's book_level ---
WIRINGS = [(False, False), (True, False), (False, True), (True, True)]
WIRING_IDS = ["default", "signals-depth", "risk-depth", "both-depth"]


def _levels(n: int, seed: int) -> np.ndarray:
    """Random BOOK_LEVEL updates over the synthetic stream's instruments (1-3), 5 levels a
    side, an unknown instrument and a level past the window now and then (ignored)."""
    from bot4.records import BOOK_LEVEL

    rng = np.random.default_rng(seed)
    out = np.zeros(n, BOOK_LEVEL)
    out["instrument"] = rng.integers(1, 5, n)  # 4: not in the table
    out["side"] = rng.choice(np.array([1, -1], np.int8), n)
    out["level"] = rng.integers(0, 7, n)  # 5, 6: beyond imbalance_levels = 5
    out["qty"] = rng.integers(0, 5000, n)
    out["price"] = 1
    out["seq"] = np.arange(1, n + 1)
    return out


def _reference_rounds(ref, steps, wiring) -> dict:
    """The stages' own ``process`` calls in the compiled cycle's round order (ticks,
    intents, orders, fills, market data, venue reports, then signals' and risk's depth),
    one batch per input per round, until nothing is left, for each step's records in turn
    (as :func:`_compiled` pushes them): the records each output got."""
    sig_d, risk_d = wiring
    seqs = [m.next_seq for m in ref]
    q = {n: [] for n in ("ticks", "intents", "fills", "risk_md", "orders", "venue_execs",
                         "depth", "risk_depth")}  # fmt: skip
    got = {n: [] for n in ("decisions", "venue_orders", "order_events", "exec_events")}

    def take(name, batch):
        if not q[name]:
            return None
        recs = np.concatenate(q[name])
        q[name] = [recs[batch:]] if len(recs) > batch else []
        return recs[:batch]

    def call(k, i, name, outs_to):
        m = ref[k]
        batch = take(name, m.spec.batch)
        if batch is None:
            return 0
        outs = [np.zeros(len(batch) * m.stage.max_out_per_in, r.slots.dtype) for r in m.outs]
        counts = np.zeros(len(outs), np.int64)
        seqs[k] = m.stage.process(i, batch, outs, counts, seqs[k])
        if outs_to is None:  # a depth input: no output at all
            assert not counts.any()
            return len(batch)
        for o, c, dest in zip(outs, counts, outs_to, strict=True):
            (q if dest in q else got)[dest].append(o[: int(c)].copy())
        return len(batch)

    risk_outs = ["orders", "decisions"]
    oms_outs = ["venue_orders", "fills", "order_events", "exec_events"]
    for step in steps:
        for name, recs in step:
            q[name].append(recs)
        work = 1
        while work:
            work = call(0, 0, "ticks", ["intents"])
            work += call(1, 0, "intents", risk_outs)
            work += call(2, 0, "orders", oms_outs)
            work += call(1, 1, "fills", risk_outs)
            work += call(1, 2, "risk_md", risk_outs)
            work += call(2, 1, "venue_execs", oms_outs)
            if sig_d:
                work += call(0, 1, "depth", None)
            if risk_d:
                work += call(1, 3, "risk_depth", None)
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in got.items()}


def _depth_feeds(stream, levels, wiring) -> list:
    """Market data first, then alternately depth (into whichever member reads it) and a
    chunk of ticks: depth mixed into the tick stream."""
    sig_d, risk_d = wiring
    feeds = [[("risk_md", stream)]]
    for c in range(4):
        step = []
        lv = levels[c * 30 : (c + 1) * 30]
        if sig_d:
            step.append(("depth", lv))
        if risk_d:
            step.append(("risk_depth", lv))
        feeds.append(step)
        feeds.append([("ticks", stream[c * 50 : (c + 1) * 50])])
    return feeds


def _compiled(wiring, feeds):
    members, rings = P._bench_members(1024, *wiring)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
    for step in feeds:
        for name, recs in step:
            _push(rings, name, recs)
        _run(hp)
    return members, rings, hp


@pytest.mark.parametrize("wiring", WIRINGS, ids=WIRING_IDS)
def test_compiled_cycle_with_depth_emits_what_the_stages_process_calls_emit(wiring):
    stream = _fresh_stream(wiring)
    levels = _levels(120, 7)
    feeds = _depth_feeds(stream, levels, wiring)
    members, rings, _hp = _compiled(wiring, feeds)
    got = {n: _drain(rings, n) for n in ("decisions", "venue_orders", "order_events")}
    ref, _ = P._bench_members(1024, *wiring)
    want = _reference_rounds(ref, feeds, wiring)
    assert len(want["venue_orders"]) > 0, "the stream made no orders: a weak test"
    for n in ("decisions", "venue_orders", "order_events"):
        assert np.array_equal(_strip(got[n]), _strip(want[n])), n
    # the depth state each member keeps is the reference's
    sig, risk = members[0].stage, members[1].stage
    rsig, rrisk = ref[0].stage, ref[1].stage
    assert np.array_equal(sig.st, rsig.st) and np.array_equal(sig.dq, rsig.dq)
    assert sig.depth_updates == rsig.depth_updates
    assert np.array_equal(risk.book.st.depth, rrisk.book.st.depth)
    cols = [I_DEPTH_BID, I_DEPTH_ASK]  # the others hold clock-stamped arrival times
    assert np.array_equal(risk.book.st.inst[:, cols], rrisk.book.st.inst[:, cols])
    if wiring[0]:
        assert sig.depth_updates > 0 and sig.dq.any()
        # the depth made a difference to what signals decided (else the test is weak)
        plain, _ = P._bench_members(1024, False, wiring[1])
        nodepth = [[f for f in step if f[0] != "depth"] for step in feeds]
        other = _reference_rounds(plain, nodepth, (False, wiring[1]))
        assert not np.array_equal(_strip(other["decisions"]), _strip(want["decisions"]))
    if wiring[1]:
        assert risk.book.st.depth.any()


@pytest.mark.parametrize("wiring", WIRINGS, ids=WIRING_IDS)
def test_cursor_buffers_with_depth_are_what_recover_reads(wiring):
    stream = _fresh_stream(wiring)
    levels = _levels(120, 11)
    feeds = _depth_feeds(stream, levels, wiring)
    # a depth batch last: its buffer (no output) must carry every cursor and valid_at
    feeds.append(
        [(n, levels[:20]) for n, on in zip(("depth", "risk_depth"), wiring, strict=True) if on]
    )
    members, _rings, _hp = _compiled(wiring, feeds)
    for m in members:
        bufs = [m.blk[C.S_CURSOR_A :][: C.CURSOR_WORDS], m.blk[C.S_CURSOR_B :][: C.CURSOR_WORDS]]
        top = max(bufs, key=lambda b: int(b[C.C_GEN]))
        assert int(top[C.C_GEN]) == m.gen > 0
        assert int(top[C.C_NEXT_SEQ]) == m.next_seq
        for i, ring in enumerate(m.ins):
            assert int(top[C.C_CURSOR + i]) == int(ring.hdr[W_CONSUMER_POSITION]) == m.cur[i]
        for j, ring in enumerate(m.outs):
            assert int(top[C.C_VALID_AT + j]) == int(ring.hdr[W_PRODUCER_POSITION])
    for on, m, n in zip(wiring, members, (2, 4), strict=False):
        assert len(m.ins) == (n if on else n - 1)
        if on:
            assert m.cur[-1] == 140  # every depth record read


@pytest.mark.parametrize("wiring", WIRINGS, ids=WIRING_IDS)
def test_an_output_without_room_hands_the_batch_back_to_python(wiring):
    """A full ``decisions`` (persistence's: risk cannot claim its 2 slots) stops the round
    at risk's market data with nothing of that batch read, written or committed; the depth
    inputs, when wired, come after it and are not read either."""
    stream = _fresh_stream(wiring)
    members, rings = P._bench_members(64, *wiring)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
    _push(rings, "decisions", np.zeros(63, rings["decisions"][1].dtype))
    _push(rings, "risk_md", stream[:10])
    for name, on in zip(("depth", "risk_depth"), wiring, strict=True):
        if on:
            _push(rings, name, _levels(10, 3))
    before = [int(r.hdr[W_PRODUCER_POSITION]) for r in members[1].outs]
    reason, n = hp.run(0, False, 0)
    hp.to_python()
    assert reason == H.R_BAIL and n == 0
    for name in ("risk_md", "depth", "risk_depth"):  # nothing read
        assert int(rings[name][0][W_CONSUMER_POSITION]) == 0, name
    assert [int(r.hdr[W_PRODUCER_POSITION]) for r in members[1].outs] == before
    assert members[1].gen == 0 and not members[1].blk.any()


def test_of_takes_the_depth_wirings_and_nothing_else():
    for wiring in WIRINGS:
        members, _ = P._bench_members(64, *wiring)
        hp = P.HotPath.of(members, {"signals", "risk", "orders"})
        assert hp is not None and hp.depth == wiring
        assert (hp.sdep is None) != wiring[0] and (hp.rdep is None) != wiring[1]
    members, _ = P._bench_members(64)
    members[1].ins = members[1].ins[:2]  # risk without market data: not taken
    members[1].in_specs = members[1].in_specs[:2]
    assert P.HotPath.of(members, {"signals", "risk", "orders"}) is None
