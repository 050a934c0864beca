"""A ring whose positions were damaged in shared memory (issue 12, finding 4).

A consumer position corrupted by a stray write once had a stage read 11.5 billion phantom
records and ignore SIGTERM. Allowed outcome: the stage reading the damaged ring stops with
one line naming the segment and the positions, the supervisor's restart policy applies
(the damage persists, so the pipeline halts: exit 3), no traceback, nothing left in
/dev/shm.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.shm import Segment, segment_name
from bot4.shm.ring_layout import HEADER_WORDS, W_CONSUMER_POSITION
from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import SinkLog, chain_topology, start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_corrupted_consumer_position_stops_the_reader_with_a_named_error(instance, procs, tmp_path):
    log = SinkLog(instance, 4_000_000)
    try:
        p = start_pipeline(
            tmp_path,
            chain_topology(instance, rate=50_000, capacity=1024),
            procs,
            "--max-restarts",
            "1",
        )
        wait_running(instance)
        seg = Segment.attach(segment_name(instance, "r2"))
        hdr = np.frombuffer(seg.buf, np.uint64, HEADER_WORDS)
        hdr[W_CONSUMER_POSITION] = (int(hdr[W_CONSUMER_POSITION]) - 11_500_000_000) & (2**64 - 1)
        del hdr
        seg.close()
        out, _ = p.communicate(timeout=180)
    finally:
        log.close()
    assert p.returncode == 3, out  # halted by the restart policy
    assert "more than the capacity 1024: the segment is damaged" in out, out
    assert f"/bot4.{instance}.r2" in out
    assert "Traceback" not in out, out
    assert not instance_segments(instance)
