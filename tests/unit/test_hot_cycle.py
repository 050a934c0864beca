"""The compiled duty cycle of the hot path group (``bot4.stages.hotloop``, issue 15).

On process-local rings (``hotpath._bench_members``), the default synthetic quote stream:

* the compiled cycle emits exactly the records the stages' own ``process`` calls emit for
  the same batches in the same order (every field but the stage clocks' stamps, which the
  two paths read at different instants);
* after it, every member's effective cursor buffer (the highest generation) says what
  ``StageRunner.recover`` needs: each input's cursor at its consumer position, each
  output's ``valid_at`` at its producer position, ``next_seq`` after the last record;
* an output without ``max_out_per_in`` contiguous slots hands the batch back to Python
  (``R_BAIL``) with nothing read, written or committed.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.records import MARKET_DATA
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
    hdr, slots = rings[name]
    pos, k = ops.consumer_peek(hdr, len(slots))
    ix = int(pos) & (len(slots) - 1)
    out = slots[ix : ix + int(k)].copy()
    ops.consumer_release(hdr, int(k))
    return out


def _run(hp) -> None:
    for _ in range(4):
        reason, _n = hp.run(0, False, 0)  # deadline in the past: one round per call
        assert reason in (H.R_DEADLINE, H.R_IDLE)
    hp.to_python()


def _strip(recs: np.ndarray) -> np.ndarray:
    recs = recs.copy()
    for f in STAMPS:
        if f in recs.dtype.names:
            recs[f] = 0
    return recs


@pytest.fixture
def stream():
    """The default topology's synthetic stream (seed 1): quotes that make orders, stamped
    now (risk refuses intents whose tick is too old: make it after compiling)."""
    members, _rings = P._bench_members(64)
    P.HotPath(members, {"signals", "risk", "orders"}).prime()
    return _quotes(200, 1)


def test_compiled_cycle_emits_what_the_stages_process_calls_emit(stream):
    members, rings = P._bench_members(1024)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
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


def test_an_output_without_room_hands_the_batch_back_to_python(stream):
    members, rings = P._bench_members(64)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()  # compiled (or loaded) before any record is timed by a stage clock
    hdr, _slots = rings["decisions"]  # persistence's: fill it so risk cannot claim 2 slots
    _push(rings, "decisions", np.zeros(63, rings["decisions"][1].dtype))
    _push(rings, "risk_md", stream[:10])
    before = [int(r.hdr[W_PRODUCER_POSITION]) for r in members[1].outs]
    reason, n = hp.run(0, False, 0)
    hp.to_python()
    assert reason == H.R_BAIL and n == 0
    assert int(rings["risk_md"][0][W_CONSUMER_POSITION]) == 0  # nothing read
    assert [int(r.hdr[W_PRODUCER_POSITION]) for r in members[1].outs] == before
    assert members[1].gen == 0 and not members[1].blk.any()
