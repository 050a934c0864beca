"""A source's batch published in one compiled call (``bot4.stages.publish``, issue 15).

On process-local rings: every published record of every output carries the stamp the call
returns (taken at publish, not at generation; everything else as generated); the cursor
buffer holds what ``StageRunner.recover`` reads (the source position, each output's
position after the commit, the next sequence number, the generation last); each output's
producer position moved by its count; an output with nothing to publish is left alone.
"""

from __future__ import annotations

import time

import numpy as np

from bot4.records import MARKET_DATA
from bot4.shm import control as C
from bot4.shm import ring_ops as ops
from bot4.shm.ring_layout import HEADER_WORDS, W_CAPACITY, W_PRODUCER_POSITION
from bot4.stages.publish import publish_stamped


def _ring(capacity: int, start: int):
    hdr = np.zeros(HEADER_WORDS, np.uint64)
    hdr[W_CAPACITY] = capacity
    slots = np.zeros(capacity, MARKET_DATA)
    if start:  # positions anywhere: advance both sides
        pos, got = ops.producer_claim(hdr, start)
        ops.producer_commit(hdr, got)
        ops.consumer_peek(hdr, start)
        ops.consumer_release(hdr, got)
    return hdr, slots


def test_batch_is_stamped_at_publish_and_cursor_buffer_sealed():
    seed = 20261206
    rng = np.random.default_rng(seed)
    print("seed", seed)
    rings = [_ring(64, int(rng.integers(0, 40))) for _ in range(3)]
    k = 5
    views, claims = [], np.zeros(3, np.uint64)
    gen_ns = time.monotonic_ns()
    for j, (hdr, slots) in enumerate(rings):
        pos, got = ops.producer_claim(hdr, k)
        assert got == k
        ix = int(pos) & 63
        v = slots[ix : ix + got]
        v["seq"] = np.arange(100, 100 + k)
        v["price"] = rng.integers(1, 10**6, k)
        v["ts_recv_ns"] = gen_ns
        v["ts_event_ns"] = gen_ns
        views.append(v)
        claims[j] = pos
    before = [v.copy() for v in views]
    counts = np.array([k, k, 0], np.int64)  # output 2 publishes nothing this batch
    buf = np.zeros(C.CURSOR_WORDS, np.uint64)
    stamp = publish_stamped(
        buf, np.uint64(777), tuple(h for h, _ in rings), tuple(views), claims, counts, 105, 9
    )
    assert stamp >= gen_ns
    for j in range(2):
        assert (views[j]["ts_recv_ns"] == stamp).all()
        rest = [f for f in MARKET_DATA.names if f != "ts_recv_ns"]
        assert (views[j][rest] == before[j][rest]).all()
        assert int(rings[j][0][W_PRODUCER_POSITION]) == int(claims[j]) + k
        assert int(buf[C.C_VALID_AT + j]) == int(claims[j]) + k
    assert (views[2]["ts_recv_ns"] == gen_ns).all()
    assert int(rings[2][0][W_PRODUCER_POSITION]) == int(claims[2])
    assert int(buf[C.C_VALID_AT + 2]) == int(claims[2])
    assert int(buf[C.C_CURSOR]) == 777
    assert int(buf[C.C_NEXT_SEQ]) == 105
    assert int(buf[C.C_GEN]) == 9
