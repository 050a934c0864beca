"""The warm jobs' recipes, run in worker processes (:mod:`bot4.pipeline.warm.runner`): each
builds one part of bot4 on small inputs and calls its kernels, so numba compiles them (or
loads them from the cache); each returns how many entry points it ran. A
:class:`~bot4.pipeline.warm.catalogue.Job` names its recipe by ``fn``; the replay engine's
recipes are the tools' (``bot4.warm.recipes``).
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from bot4.pipeline.warm.catalogue import RING_TYPES
from bot4.records import RECORD_TYPES


def _job_stage(kind: str, ins: tuple, outs: tuple, only: tuple | None, params: tuple = ()) -> int:
    """Set up stage ``kind`` (with ``params``) on process-local rings of these types, hand
    it a two-record batch on each input (``only``: on these inputs; ``()``: setup alone),
    then what the stage loop calls besides: ``pending``/``emit``, and again after
    ``on_drain``. The stage is given what it has live after ``setup`` (``warm_live``: the
    venue watches the orders stage's heartbeat, so its market data and release kernels
    are the live ones, not the replay's); a kind that cannot be set up alone runs its
    kernels by itself (``warm_alone``)."""
    from bot4.pipeline.topology import RingSpec, StageSpec
    from bot4.stages import KINDS

    cls = KINDS[kind]
    n = cls.warm_alone()
    if n:
        return n
    p = dict(params)
    spec = StageSpec(name="warm", kind=kind, core=0, index=0, params=p)
    rin = [RingSpec(f"i{k}", "a", "warm", t, 8, 2, 0, False) for k, t in enumerate(ins)]
    rout = [RingSpec(f"o{k}", "warm", "b", t, 8, 2, 0, False) for k, t in enumerate(outs)]
    st = cls(spec, rin, rout, "warm")
    st.setup()
    st.warm_live()
    views = [np.zeros(8, RECORD_TYPES[t]) for t in outs]
    counts = np.zeros(max(1, len(outs)), np.int64)
    if only == ():
        return 1
    if st.source:
        st.generate(0, 2, views, counts, 1)
        if getattr(st, "stamp_on_publish", False) and all(t == "MARKET_DATA" for t in outs):
            from bot4.stages.publish import warm as warm_publish  # md's live publish call

            warm_publish(len(outs))
    else:
        for k, t in enumerate(ins):
            if only is not None and k not in only:
                continue
            batch = np.zeros(2, RECORD_TYPES[t])
            batch["seq"] = [1, 2]
            st.process(k, batch, views, counts, 1)
    for seq in (3, 5):
        st.pending(0)
        st.emit(views, counts, seq)
        st.on_drain()
    st.summary()  # what the stage logs as it stops (risk: daily_loss, compiled there before)
    return 1


def _job_rings(*types: str) -> int:
    """Every ring operation, on a real 8-slot ring of each type: what a stage loop calls
    (:func:`_job_ring_loop`) and the Python API's single-record ``try_push`` /
    ``push_wait`` / ``try_pop``, compiled once per record type (tests and tools use them;
    no stage of a topology does: ``bot4 warm --all`` only)."""
    return _rings(types, single=True)


def _job_ring_loop() -> int:
    """The ring operations a topology's stage processes call (``bot4.stages.loop``'s
    ``_prime``, ``Producer`` / ``Consumer``, the beats, the multi-input park): all on the
    header words, one signature whatever the record type, so on one ring. A default
    ``bot4 run`` loads these and no record-typed one (checked with strace on its
    cache files, docs/compile.md)."""
    return _rings(("MARKET_DATA",), single=False)


def _rings(types, single: bool) -> int:
    from bot4.shm import Consumer, Producer, Segment, create_ring, segment_name
    from bot4.shm import ring_ops as ops
    from bot4.shm.multipark import announce_park, end_park
    from bot4.shm.ring_layout import WAIT_SPIN_PARK

    n = 0
    inst = f"warm{os.getpid()}"
    for rtype in types:
        dt = RING_TYPES[rtype]
        name = segment_name(inst, rtype.lower().replace("_", "-"))
        Segment.unlink(name)
        create_ring(name, dt, 8, wait=WAIT_SPIN_PARK)
        try:
            with Producer(name, dt) as p, Consumer(name, dt) as c:
                if single:
                    rec = np.zeros((), dt)[()]
                    ops.try_push(p.hdr, p.slots, rec)
                    ops.push_wait(p.hdr, p.slots, rec, 1000)
                    out = np.zeros(1, dt)
                    ops.try_pop(c.hdr, c.slots, out, 0)
                    n += 3
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
                announce_park(c.hdr, np.uint64(0))  # a stage parking on several inputs
                end_park(c.hdr)
                n += 11
        finally:
            Segment.unlink(name)
    return n


def _job_hot_path(signals_depth: bool = False, risk_depth: bool = False) -> int:
    """The compiled duty cycle of a signals -> risk -> orders group
    (``bot4.stages.hotloop``), for the topology's wiring (the default, or signals and / or
    risk reading the md stage's depth: one specialisation each); after those stages' own
    jobs, so their kernels load from the cache."""
    from bot4.stages import hotpath

    return hotpath.warm(signals_depth, risk_depth)


def _job_operator_log() -> int:
    """What persistence runs on the instance's operator log (``bot4.shm.operator_log``):
    read, release, and the newest record (``bot4 stats``), on a temporary log."""
    from bot4.records import OPERATOR_ACTION
    from bot4.shm import Segment
    from bot4.shm.operator_log import OperatorLog, create_operator_log

    inst = f"warm{os.getpid()}"
    name = create_operator_log(inst, 8)
    try:
        log = OperatorLog(inst)
        try:
            log.read(np.zeros(4, OPERATOR_ACTION))
            log.release()
            log.last()
        finally:
            log.close()
    finally:
        Segment.unlink(name)
    return 3


def _job_db_breaker() -> int:
    """What persistence's database loader runs through the instance's ``db`` breaker
    (``bot4.shm.breakers.guard``: enter, and exit as a success and as a failure), on a
    process-local breaker: a first ``bot4 run`` compiled ``breaker_exit`` in the loader
    thread at its first batch."""
    from bot4.shm.breakers import BreakerConfig, BreakerHandle, guard, local_breakers

    handle = BreakerHandle(local_breakers([BreakerConfig(name="db")], time.monotonic_ns()), 0)
    with guard(handle):
        pass
    with contextlib.suppress(RuntimeError), guard(handle):
        raise RuntimeError("warm: a failed call")
    return 2


def _job_marketdata() -> int:
    import bot4.marketdata

    return bot4.marketdata.warm()


def _job_depth() -> int:
    """The depth kernels only a topology with book_level rings calls (issue 18)."""
    from bot4.records import BOOK_LEVEL
    from bot4.signals.features import NSTATE, depth_kernel
    from bot4.stages.marketdata import _emit_levels

    lv = np.zeros(2, BOOK_LEVEL)
    lv["instrument"], lv["side"] = 1, 1
    _emit_levels(lv, lv.copy(), 0, 1, 1, 0, 1, 0)
    depth_kernel(lv, np.zeros((2, 2, 2)), np.zeros((2, NSTATE)))
    return 2


def _job_histogram() -> int:
    """The latency histogram's kernels the replay report and perf call (the metrics
    recorder's are warmed with the count-sink stage)."""
    from bot4.shm import histogram as H

    h = H.new()
    H.record_many(h, np.array([1, 1_000], np.int64))
    H.record_many_latency(h, np.array([5, 0], np.int64), np.array([1, 1], np.int64))
    return 2
