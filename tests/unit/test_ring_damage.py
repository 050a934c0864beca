"""A damaged position word (more than ``capacity`` from the other side's) is never acted on:
a claim finds no room (nothing unread is overwritten) and a peek finds no records (no
phantom record is read), from numba and from the Python fast path alike."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.shm import ring_ops as ops
from bot4.shm.ring_layout import W_CONSUMER_POSITION, W_PRODUCER_POSITION
from bot4.shm.segment import instance_segments

CAP = 8
M64 = (1 << 64) - 1
FAR = 11_500_000_000  # as a stray write might leave it


@pytest.fixture
def ring():
    name = segment_name("dmg", "r")
    Segment.unlink(name)
    create_ring(name, MARKET_DATA, CAP, wait=1)
    p, c = Producer(name, MARKET_DATA), Consumer(name, MARKET_DATA)
    yield p, c
    p.close()
    c.close()
    Segment.unlink(name)
    assert not instance_segments("dmg")


def _fill(p: Producer, n: int) -> None:
    rec = np.zeros((), MARKET_DATA)
    for seq in range(1, n + 1):
        rec["seq"] = seq
        assert p.try_push(rec)


def test_a_damaged_consumer_position_gives_the_producer_no_room(ring):
    p, c = ring
    _fill(p, CAP)  # full: the next claim must reload the consumer's position
    c.hdr[W_CONSUMER_POSITION] = (int(c.hdr[W_CONSUMER_POSITION]) - FAR) & M64
    assert int(ops.producer_claim(p.hdr, 4)[1]) == 0
    assert int(ops.producer_room(p.hdr, 4)[1]) == 0
    assert not p.try_push(np.zeros((), MARKET_DATA))
    # and the consumer, whose own word is damaged, reads nothing
    assert int(ops.consumer_peek(c.hdr, 4)[1]) == 0
    assert c.try_pop() is None


def test_a_damaged_producer_position_gives_the_consumer_no_phantom_records(ring):
    p, c = ring
    _fill(p, 3)
    p.hdr[W_PRODUCER_POSITION] = (int(p.hdr[W_PRODUCER_POSITION]) + FAR) & M64
    assert int(ops.consumer_peek(c.hdr, 4)[1]) == 0
    assert c.try_pop() is None
    # the producer's next commit republishes its own position: the three records read back
    _fill(p, 1)
    assert [int(c.try_pop()["seq"]) for _ in range(4)] == [1, 2, 3, 1]
    assert c.try_pop() is None
