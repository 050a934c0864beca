"""The stage loop's output claims against a model, across wraps (issue 11).

A stage that emits up to ``max_out_per_in`` records per input must get room for a whole
group even when fewer slots than that remain before the ring's wrap point. The harness
below drives ``StageRunner._step`` itself (claim, kernel, cursor buffer, commit) with a
source stage that emits a variable number of records per input, over a real ring that
starts at arbitrary u64 positions, while a consumer drains arbitrary amounts. Allowed
outcomes: the consumer sees exactly the model's records in order, every group whole; a
``block`` ring never returns 0 while it has room for a group; a ``reject`` ring rejects
only when it has no room for one group, and everything not received was counted.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.shm import control as C
from bot4.shm.ring_layout import BP_BLOCK, BP_REJECT, WAIT_SPIN_YIELD
from bot4.stages import loop as L

STARTS = st.one_of(
    st.integers(0, 64),
    st.integers((1 << 63) - 40, (1 << 63) + 40),
    st.integers((1 << 64) - 40, (1 << 64) - 1),
)


class GroupSource:
    """Input ``p`` yields ``sizes[p % len(sizes)]`` records (0..mo), each tagged (p, i)."""

    source = True

    def __init__(self, mo: int, sizes: list[int]) -> None:
        self.max_out_per_in = mo
        self.sizes = sizes

    def size(self, p: int) -> int:
        return self.sizes[p % len(self.sizes)]

    def clock(self) -> int:
        return 0

    def source_done(self, pos: int) -> bool:
        return False

    def source_ready(self, pos: int, now: int) -> int:
        return 1 << 20

    def generate(self, pos, k, views, counts, seq):
        out = views[0]
        n = 0
        for p in range(pos, pos + k):
            for i in range(self.size(p)):
                assert n < len(out), "kernel handed a view smaller than k * max_out_per_in"
                out[n]["order_id"] = p
                out[n]["qty"] = i
                n += 1
        counts[0] = n
        return k, seq + n


def _runner(stage, producer, batch: int):
    """A StageRunner with its attach step done by hand: one output, no inputs."""
    r = L.StageRunner.__new__(L.StageRunner)
    r.stage = stage
    r.spec = SimpleNamespace(batch=batch, name="t")
    r.cb = SimpleNamespace(words=np.full(32, C.PIPE_RUNNING, np.uint64))
    r.ins = []
    r.outs = [producer]
    r.scratch = [np.zeros(batch * stage.max_out_per_in, MARKET_DATA)]
    r.counts = np.zeros(1, np.int64)
    r.bufs = [np.zeros(C.CURSOR_WORDS, np.uint64) for _ in range(2)]
    r.gen = 0
    r._stamped = False  # the per-batch path under test, not md's compiled stamped publish
    r.next_buf = 0
    r.cur = [0]
    r.mute_until = [[None]]
    r.test_stall = False
    r.next_seq = 1
    r.records_in = r.records_out = r.muted_records = 0
    return r


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=STARTS,
    cap_log2=st.integers(3, 6),
    mo=st.integers(1, 9),
    batch=st.integers(1, 12),
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=7),
    drains=st.lists(st.integers(0, 40), min_size=20, max_size=80),
    reject=st.booleans(),
)
def test_multi_output_claims_cross_the_wrap_without_loss(
    start, cap_log2, mo, batch, sizes, drains, reject
):
    cap = 1 << cap_log2
    mo = min(mo, cap)
    sizes = [min(s, mo) for s in sizes]
    name = segment_name("claimprop", f"r{cap}_{mo}_{batch}")
    Segment.unlink(name)
    create_ring(
        name,
        MARKET_DATA,
        cap,
        wait=WAIT_SPIN_YIELD,
        backpressure=BP_REJECT if reject else BP_BLOCK,
        initial_position=start,
    )
    L.IDLE_WAIT_NS, saved = 1, L.IDLE_WAIT_NS  # a full block ring gives up at once
    try:
        with Producer(name, MARKET_DATA) as prod, Consumer(name, MARKET_DATA) as cons:
            stage = GroupSource(mo, sizes)
            r = _runner(stage, prod, batch)
            model: deque[tuple[int, int]] = deque()
            received: list[tuple[int, int]] = []
            rejected_model = 0
            for d in drains:
                free = cap - cons.depth
                rej0 = int(prod.hdr[L.ops.W_PRODUCER_REJECTIONS])
                pos = r.cur[0]
                k = r._step(0)
                rej = int(prod.hdr[L.ops.W_PRODUCER_REJECTIONS]) - rej0
                if free >= mo:
                    assert k > 0, f"step made no progress with {free} free slots (mo {mo})"
                    assert rej == 0, f"rejected {rej} records with {free} free slots"
                emitted = [(p, i) for p in range(pos, pos + k) for i in range(stage.size(p))]
                if rej:
                    assert rej == len(emitted)
                    rejected_model += rej
                else:
                    model.extend(emitted)
                view = cons.peek(d)
                got = [(int(x["order_id"]), int(x["qty"])) for x in view]
                cons.release(len(view))
                if len(got) < d:  # the rest sits past the wrap point
                    view = cons.peek(d - len(got))
                    got += [(int(x["order_id"]), int(x["qty"])) for x in view]
                    cons.release(len(view))
                for g in got:
                    assert g == model.popleft()
                received += got
            assert cons.depth == len(model)
            total = sum(stage.size(p) for p in range(r.cur[0]))
            assert len(received) + len(model) + rejected_model == total
            assert int(prod.hdr[L.ops.W_PRODUCER_REJECTIONS]) == rejected_model
            assert r.next_seq == 1 + total
    finally:
        L.IDLE_WAIT_NS = saved
        Segment.unlink(name)


def test_producer_room_and_write_wrapped_cross_the_wrap():
    name = segment_name("claimprop", "ww")
    Segment.unlink(name)
    create_ring(name, MARKET_DATA, 8, initial_position=(1 << 64) - 3)
    try:
        with Producer(name, MARKET_DATA) as p, Consumer(name, MARKET_DATA) as c:
            assert len(p.claim(8)) == 3  # contiguous: only up to the wrap point
            recs = np.zeros(6, MARKET_DATA)
            recs["order_id"] = np.arange(10, 16)
            assert p.push_many(recs) == 6
            assert p.room(8) == 2
            assert p.push_many(recs) == 2
            assert p.room(8) == 0
            out = [int(x["order_id"]) for x in c.peek(8)]
            c.release(len(out))
            out += [int(x["order_id"]) for x in c.peek(8)]
            assert out == [10, 11, 12, 13, 14, 15, 10, 11]
    finally:
        Segment.unlink(name)
