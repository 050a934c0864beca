"""Every way an attach can be wrong raises a specific error naming the segment and the difference."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from bot4.records import MARKET_DATA, ORDER, Code
from bot4.shm import (
    Consumer,
    OwnerAliveError,
    Producer,
    RingLayoutError,
    Segment,
    SegmentExistsError,
    SegmentMissingError,
    SegmentTooSmallError,
    ShmFullError,
    create_ring,
    segment_name,
)
from bot4.shm.ring_layout import HEADER_BYTES, W_VERSION


def test_missing_segment_names_it(instance):
    name = segment_name(instance, "nope")
    with pytest.raises(SegmentMissingError, match=f"{name}: does not exist") as ei:
        Producer(name, MARKET_DATA)
    assert ei.value.code == Code.SEGMENT_MISSING


def test_capacity_not_power_of_two(instance):
    name = segment_name(instance, "r")
    with pytest.raises(RingLayoutError, match="capacity 100 is not a power of two") as ei:
        create_ring(name, MARKET_DATA, 100)
    assert ei.value.code == Code.CAPACITY_NOT_POWER_OF_TWO


def test_wrong_dtype_names_both_fingerprints(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        with pytest.raises(RingLayoutError, match=r"record dtype differs.*64 B.*128 B") as ei:
            Consumer(name, ORDER)
        assert ei.value.code == Code.DTYPE_MISMATCH
        assert ei.value.segment == name
    finally:
        Segment.unlink(name)


def test_wrong_capacity(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        with pytest.raises(RingLayoutError, match="capacity 16, caller expects 32") as ei:
            Producer(name, MARKET_DATA, 32)
        assert ei.value.code == Code.CAPACITY_MISMATCH
    finally:
        Segment.unlink(name)


def test_wrong_layout_version(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        seg = Segment.attach(name)
        np.frombuffer(seg.buf, np.uint64, 2)[W_VERSION] = 99
        seg.close()
        with pytest.raises(RingLayoutError, match="layout version 99, this build reads 1") as ei:
            Producer(name, MARKET_DATA)
        assert ei.value.code == Code.LAYOUT_VERSION_MISMATCH
    finally:
        Segment.unlink(name)


def test_not_a_ring(instance):
    name = segment_name(instance, "r")
    Segment.create(name, 4096).close()
    try:
        with pytest.raises(RingLayoutError, match="bad magic") as ei:
            Producer(name, MARKET_DATA)
        assert ei.value.code == Code.BAD_MAGIC
    finally:
        Segment.unlink(name)


def test_segment_smaller_than_its_header_says(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 1024)
    try:
        # a creator that died mid-way, or a foreign tool, left a truncated segment
        import os

        import posix_ipc

        shm = posix_ipc.SharedMemory(name)
        os.ftruncate(shm.fd, HEADER_BYTES + 64 * 10)
        shm.close_fd()
        with pytest.raises(SegmentTooSmallError, match=r"is 1664 bytes, layout needs 66560") as ei:
            Consumer(name, MARKET_DATA)
        assert ei.value.code == Code.SEGMENT_TOO_SMALL
    finally:
        Segment.unlink(name)


def test_second_live_producer_is_refused_until_the_first_leaves(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        p = Producer(name, MARKET_DATA)
        with pytest.raises(OwnerAliveError, match="producer side is owned by live pid") as ei:
            Producer(name, MARKET_DATA)
        assert ei.value.code == Code.OWNER_ALIVE
        c = Consumer(name, MARKET_DATA)  # the other side is free
        p.close()
        Producer(name, MARKET_DATA).close()
        c.close()
    finally:
        Segment.unlink(name)


def test_create_twice_is_refused(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        with pytest.raises(SegmentExistsError, match="already exists"):
            create_ring(name, MARKET_DATA, 16)
    finally:
        Segment.unlink(name)


def test_full_dev_shm_is_a_clear_error_at_creation(instance):
    name = segment_name(instance, "huge")
    with pytest.raises(ShmFullError, match="cannot reserve .* /dev/shm is full") as ei:
        Segment.create(name, 1 << 44)  # 16 TiB: more than any /dev/shm here
    assert ei.value.code == Code.SHM_FULL
    assert not Segment.unlink(name)  # nothing half-created is left


def test_read_only_attach_cannot_write(instance):
    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 16)
    try:
        seg = Segment.attach(name, readonly=True)
        with pytest.raises(TypeError):
            seg.buf[0:1] = b"x"
        hdr = np.frombuffer(seg.buf, np.uint64, 4)
        assert not hdr.flags.writeable
        del hdr
        seg.close()
    finally:
        Segment.unlink(name)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="instance name"):
        segment_name("a/b", "r")
    with pytest.raises(ValueError, match="segment name"):
        segment_name("a", "")


def test_created_segment_is_fully_reserved(instance):
    name = segment_name(instance, "r")
    seg = Segment.create(name, 1 << 20)
    try:
        import os

        st = os.stat("/dev/shm/" + name[1:])
        assert st.st_blocks * 512 >= 1 << 20  # fallocate reserved every page up front
        assert seg.buf.size() == 1 << 20
        assert seg.size >= mmap.PAGESIZE
    finally:
        seg.close()
        Segment.unlink(name)


@pytest.mark.parametrize("park", [False, True])
def test_python_calls_and_numba_kernels_drive_one_side_in_turn(instance, park):
    from bot4.shm import ring_ops as ops

    name = segment_name(instance, "r")
    create_ring(name, MARKET_DATA, 8, wait=2 if park else 1)
    try:
        with Producer(name, MARKET_DATA) as p, Consumer(name, MARKET_DATA) as c:
            rec = np.zeros((), MARKET_DATA)
            out = np.zeros(1, MARKET_DATA)
            got = []
            for round_ in range(5):  # across several wraps of 8 slots
                for k in range(3):
                    rec["seq"] = round_ * 6 + k + 1
                    assert ops.try_push(p.hdr, p.slots, rec[()])
                for k in range(3, 6):
                    rec["seq"] = round_ * 6 + k + 1
                    assert p.try_push(rec)
                for _ in range(3):
                    assert ops.try_pop(c.hdr, c.slots, out, 0)
                    got.append(int(out[0]["seq"]))
                got.extend(int(c.try_pop()["seq"]) for _ in range(3))
                assert c.try_pop() is None
            assert got == list(range(1, 31))
            # records counted once each: positions moved by exactly 30 from the start
            assert p.producer_position - int(p.hdr[8]) == c.consumer_position - int(c.hdr[8]) == 30
    finally:
        Segment.unlink(name)
