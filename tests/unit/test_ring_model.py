"""The ring against a deque, one process: random push/pop/batch sequences across many wraps."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.shm.segment import instance_segments
from bot4.shm.stats import snapshot_header

CAPACITY = 8
# start positions: zero, just below 2^63 and just below 2^64 (wrapping u64 arithmetic)
STARTS = [0, (1 << 63) - 5, (1 << 64) - 5]


class RingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: deque[int] = deque()
        self.next_seq = 1
        self.commits = 0  # batches the producer published (non-empty commits)
        self.releases = 0
        self.name = None

    @initialize(start=st.sampled_from(STARTS), park=st.booleans())
    def setup(self, start, park):
        self.name = segment_name("hyp", f"r{id(self)}")
        Segment.unlink(self.name)
        create_ring(self.name, MARKET_DATA, CAPACITY, wait=2 if park else 1, initial_position=start)
        self.p = Producer(self.name, MARKET_DATA, CAPACITY)
        self.c = Consumer(self.name, MARKET_DATA, CAPACITY)
        self.rec = np.zeros((), MARKET_DATA)

    def teardown(self):
        if self.name:
            self.p.close()
            self.c.close()
            Segment.unlink(self.name)

    @rule()
    def push(self):
        self.rec["seq"] = self.next_seq
        self.rec["price"] = self.next_seq * 7
        ok = self.p.try_push(self.rec)
        assert ok == (len(self.model) < CAPACITY)
        if ok:
            self.model.append(self.next_seq)
            self.next_seq += 1
            self.commits += 1

    @rule()
    def pop(self):
        rec = self.c.try_pop()
        if not self.model:
            assert rec is None
        else:
            want = self.model.popleft()
            self.releases += 1
            assert rec is not None and int(rec["seq"]) == want and int(rec["price"]) == want * 7

    @rule(n=st.integers(1, 2 * CAPACITY), commit_frac=st.floats(0, 1))
    def claim_commit(self, n, commit_frac):
        view = self.p.claim(n)
        free = CAPACITY - len(self.model)
        assert len(view) <= min(n, free)
        if free and n:
            assert len(view) >= 1  # a claim only comes back short at the wrap or when full
        k = int(len(view) * commit_frac)
        for i in range(len(view)):
            view[i]["seq"] = self.next_seq + i
            view[i]["price"] = (self.next_seq + i) * 7
        self.p.commit(k)
        self.commits += k > 0
        for i in range(k):
            self.model.append(self.next_seq + i)
        self.next_seq += k

    @rule(n=st.integers(1, 2 * CAPACITY), release_frac=st.floats(0, 1))
    def peek_release(self, n, release_frac):
        view = self.c.peek(n)
        assert len(view) <= min(n, len(self.model))
        if self.model:
            assert len(view) >= 1
        got = [int(s) for s in view["seq"]]
        assert got == list(self.model)[: len(got)]
        assert all(int(r["price"]) == int(r["seq"]) * 7 for r in view)
        k = int(len(view) * release_frac)
        self.c.release(k)
        self.releases += k > 0
        for _ in range(k):
            self.model.popleft()

    @invariant()
    def depth_matches(self):
        if self.name:
            assert self.c.depth == len(self.model)
            assert (self.p.producer_position - self.p.consumer_position) % (1 << 64) == len(
                self.model
            )

    @precondition(lambda self: self.name is not None)
    @rule()
    def counters_match(self):
        # what operators read: records derived from the positions, batches counted per commit
        snap = snapshot_header(self.name, self.p.hdr)
        assert snap.produced - snap.consumed == len(self.model) == snap.depth
        assert snap.produced == self.next_seq - 1
        assert snap.producer_batches == self.commits and snap.consumer_batches == self.releases


TestRingModel = RingModel.TestCase
TestRingModel.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(autouse=True)
def _no_leak():
    yield
    assert not instance_segments("hyp")
