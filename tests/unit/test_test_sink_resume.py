"""The test sink logs each record once across restarts: a sink killed after its log counted
a batch but before the loop released the input resumes at the released position and skips
what it had logged (stage-group kill tests take the sink with the group). A log that
outlives its run goes on in the next run's new segments with nothing skipped."""

from __future__ import annotations

import numpy as np

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.shm.control import create_control
from bot4.spec import RingSpec, StageSpec
from bot4.stages.testing import TestSink as Sink


def _segments(inst: str, created_ns: int) -> str:
    """A new creation of the instance's segments: control block and input ring."""
    ring = segment_name(inst, "in")
    for n in (ring, segment_name(inst, "control")):
        Segment.unlink(n)
    create_control(inst, 1, created_ns)
    create_ring(ring, MARKET_DATA, 64, initial_position=(1 << 64) - 20)  # near the wrap
    return ring


def test_a_restarted_sink_skips_what_it_logged_but_had_not_released():
    inst = "sinkresume"
    logs = [segment_name(inst, "log"), segment_name(inst, "log-lat")]
    for n in logs:
        Segment.unlink(n)
        Segment.create(n, 64 * 8).close()
    spec = StageSpec("sink", "test-sink", 0, 0, params={"log": "log"})
    rs = RingSpec("in", "src", "sink", "MARKET_DATA", 64, 0, 0, False)

    def sink_process():
        s = Sink(spec, [rs], [], instance=inst)
        s.setup()
        return s

    log = None
    try:
        for run, created in enumerate((111, 222)):  # a second run: new segments, same log
            ring = _segments(inst, created)
            with Producer(ring, MARKET_DATA) as prod, Consumer(ring, MARKET_DATA) as cons:
                v = prod.claim(10)
                v["order_id"] = np.arange(1, 11) + 100 * run
                prod.commit(10)
                s = sink_process()
                s.process(0, cons.peek(6), [], np.zeros(0, np.int64), 1)
                cons.release(4)  # killed after logging 6, with only 4 released
                del s
                s = sink_process()  # the restart resumes at the released position 4
                s.process(0, cons.peek(6), [], np.zeros(0, np.int64), 1)
                cons.release(6)
                del s
        log = Segment.attach(logs[0], readonly=True)
        words = np.frombuffer(log.buf, np.uint64)
        assert int(words[0]) == 20
        expect = list(range(1, 11)) + list(range(101, 111))  # each once, in order
        assert list(words[1:21]) == expect
        del words
    finally:
        if log is not None:
            log.close()
        for n in (*logs, segment_name(inst, "in"), segment_name(inst, "control")):
            Segment.unlink(n)
