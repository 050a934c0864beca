"""Compile every numba kernel once, in one process, into numba's on-disk cache.

Stage processes start with the spawn method and would otherwise all compile the same
kernels at the same moment (seconds each, on every core). ``bot4 warm`` (and CI, before
the tests) runs each kernel once on small inputs of every record type it handles.
"""

from __future__ import annotations

import os

import numpy as np

from bot4.records import RECORD_TYPES

#: record types that travel on rings (TXN_DECISION lives only in the 2PC decision log)
RING_TYPES = {k: v for k, v in RECORD_TYPES.items() if k != "TXN_DECISION"}


def _warm_ring_ops() -> int:
    from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
    from bot4.shm import ring_ops as ops
    from bot4.shm.ring_layout import WAIT_SPIN_PARK

    n = 0
    inst = f"warm{os.getpid()}"
    for rtype, dt in RING_TYPES.items():
        name = segment_name(inst, rtype.lower().replace("_", "-"))
        Segment.unlink(name)
        create_ring(name, dt, 8, wait=WAIT_SPIN_PARK)
        try:
            with Producer(name, dt) as p, Consumer(name, dt) as c:
                rec = np.zeros((), dt)[()]
                ops.try_push(p.hdr, p.slots, rec)
                ops.push_wait(p.hdr, p.slots, rec, 1000)
                out = np.zeros(1, dt)
                ops.try_pop(c.hdr, c.slots, out, 0)
                ops.wait_peek(c.hdr, 1, 1000)
                ops.wait_claim(p.hdr, 1, 1000)
                ops.producer_room(p.hdr, 2)
                v = p.claim(2)
                p.commit(len(v))
                v = c.peek(8)
                c.release(len(v))
                ops.wait_peek(c.hdr, 1, 1000)  # empty: exercises the idle path
                ops.count_rejection(p.hdr, 0)
                p.beat()
                c.beat()
                n += 12
        finally:
            Segment.unlink(name)
    return n


def _warm_stages() -> int:
    from bot4.pipeline.topology import RingSpec, StageSpec
    from bot4.stages import KINDS

    n = 0
    for kind, cls in KINDS.items():
        if kind == "persistence":
            continue  # count-sink's kernels (warmed below) plus a journal file: nothing to compile
        if kind == "risk":  # its setup attaches shared segments: warm its kernels directly
            from bot4.stages.risk import warm_kernels

            n += warm_kernels()
            continue
        if kind == "test-sink":
            from bot4.stages.testing import _sink_kernel

            md = np.zeros(2, RECORD_TYPES["MARKET_DATA"])
            _sink_kernel(md, np.zeros(8, np.uint64), np.zeros(8, np.uint64))
            n += 1
            continue
        in_types = list(cls.input_types or ())
        out_types = list(cls.output_types or ())
        if kind == "relay":
            pairs = [([t], [t]) for t in RING_TYPES]
        elif kind == "count-sink":
            pairs = [(list(RING_TYPES), [])]
        else:
            lo_i, hi_i, lo_o, hi_o = cls.arity
            pairs = [
                (
                    in_types[: max(hi_i, 0)] if hi_i else [],
                    (out_types * max(lo_o, 1))[: max(lo_o, 1)] if hi_o else [],
                )
            ]
        for ins, outs in pairs:
            spec = StageSpec(name="warm", kind=kind, core=0, index=0, params={})
            rin = [RingSpec(f"i{k}", "a", "warm", t, 8, 2, 0, False) for k, t in enumerate(ins)]
            rout = [RingSpec(f"o{k}", "warm", "b", t, 8, 2, 0, False) for k, t in enumerate(outs)]
            st = cls(spec, rin, rout, "warm")
            st.setup()
            views = [np.zeros(8, RECORD_TYPES[t]) for t in outs]
            counts = np.zeros(max(1, len(outs)), np.int64)
            if st.source:
                st.generate(0, 2, views, counts, 1)
            else:
                for k, t in enumerate(ins):
                    batch = np.zeros(2, RECORD_TYPES[t])
                    batch["seq"] = [1, 2]
                    st.process(k, batch, views, counts, 1)
            n += 1
    return n


def _warm_depth() -> int:
    """The depth kernels only a topology with book_level rings calls (issue 18)."""
    from bot4.records import BOOK_LEVEL
    from bot4.stages.marketdata import _emit_levels
    from bot4.stages.signals import NSTATE, depth_kernel

    lv = np.zeros(2, BOOK_LEVEL)
    lv["instrument"], lv["side"] = 1, 1
    _emit_levels(lv, lv.copy(), 0, 1, 1, 0, 1, 0)
    depth_kernel(lv, np.zeros((2, 2, 2)), np.zeros((2, NSTATE)))
    return 2


def _warm_histogram() -> int:
    """The latency histogram's kernels the replay report and perf call (the metrics
    recorder's are warmed with the count-sink stage)."""
    from bot4.shm import histogram as H

    h = H.new()
    H.record_many(h, np.array([1, 1_000], np.int64))
    H.record_many_latency(h, np.array([5, 0], np.int64), np.array([1, 1], np.int64))
    return 2


def warm() -> int:
    """Compile (or load from cache) every kernel; returns how many entry points ran."""
    import bot4.marketdata

    bot4.marketdata.warm()
    n = _warm_ring_ops() + _warm_stages() + _warm_depth() + _warm_histogram() + 1
    from bot4.replay.engine import warm as warm_replay

    return n + warm_replay()
