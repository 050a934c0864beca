"""The test sink logs each record once across restarts: a sink killed after its log counted
a batch but before the loop released the input resumes at the released position and skips
what it had logged (stage-group kill tests take the sink with the group)."""

from __future__ import annotations

import numpy as np

from bot4.records import MARKET_DATA
from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
from bot4.spec import RingSpec, StageSpec
from bot4.stages.testing import TestSink as Sink


def test_a_restarted_sink_skips_what_it_logged_but_had_not_released():
    inst = "sinkresume"
    ring = segment_name(inst, "in")
    logs = [segment_name(inst, "log"), segment_name(inst, "log-lat")]
    for n in (ring, *logs):
        Segment.unlink(n)
    create_ring(ring, MARKET_DATA, 64, initial_position=(1 << 64) - 20)  # positions near the wrap
    for n in logs:
        Segment.create(n, 64 * 8).close()
    spec = StageSpec("sink", "test-sink", 0, 0, params={"log": "log"})
    rs = RingSpec("in", "src", "sink", "MARKET_DATA", 64, 0, 0, False)
    try:
        with Producer(ring, MARKET_DATA) as prod, Consumer(ring, MARKET_DATA) as cons:
            v = prod.claim(10)
            v["order_id"] = np.arange(1, 11)
            prod.commit(10)

            def sink_process():
                s = Sink(spec, [rs], [], instance=inst)
                s.setup()
                return s

            s = sink_process()
            s.process(0, cons.peek(6), [], np.zeros(0, np.int64), 1)
            cons.release(4)  # killed after logging 6, with only 4 released
            del s
            s = sink_process()  # the restart resumes at the released position 4
            s.process(0, cons.peek(6), [], np.zeros(0, np.int64), 1)
            cons.release(6)
            log = np.frombuffer(Segment.attach(logs[0], readonly=True).buf, np.uint64)
            assert int(log[0]) == 10
            assert list(log[1:11]) == list(range(1, 11))  # each once, in order
    finally:
        for n in (ring, *logs):
            Segment.unlink(n)
