"""Stage kinds for tests and benchmarks: a deterministic source, a relay, a logging sink.

The source's records are a pure function of their position ``p`` (0-based):
``order_id = p + 1``, ``price = order_id * 3 + 1``, ``qty = order_id ^ 0x5A5A``, and
``ts_recv_ns`` = the clock when emitted (for end-to-end latency). Relays keep
``order_id``, ``price``, ``qty`` and ``ts_recv_ns``, renumber ``seq`` and set ``parent_seq``.
The sink logs every ``order_id`` it receives (and its latency) into segments of the
pipeline instance, so a test can check every record arrived exactly once and in order.
"""

from __future__ import annotations

import os
import time

import numpy as np
from numba import njit

from bot4.records import MARKET_DATA
from bot4.shm import Segment, segment_name
from bot4.shm import control as C
from bot4.shm.atomics import load_acquire, monotonic_ns, store_release
from bot4.stages.base import Stage, check_number, check_type


@njit(nogil=True, cache=True)
def _source_kernel(out, position, k, seq, now):
    for i in range(k):
        oid = np.uint64(position + i + 1)
        r = out[i]
        r.seq = seq + i
        r.parent_seq = 0
        r.order_id = oid
        r.price = np.int64(oid) * 3 + 1
        r.qty = np.int64(oid ^ np.uint64(0x5A5A))
        r.ts_event_ns = now
        r.ts_recv_ns = now
        r.instrument = 1
        r.kind = 9
    return seq + k


@njit(nogil=True, cache=True)
def _relay_kernel(inp, out, seq, spin_ns):
    for i in range(inp.shape[0]):
        out[i] = inp[i]
        out[i].seq = seq + i
        out[i].parent_seq = inp[i].seq
    if spin_ns > 0:  # a deliberately slow stage, to widen kill windows in tests
        t = monotonic_ns() + spin_ns
        while monotonic_ns() < t:
            pass
    return seq + inp.shape[0]


_M64 = (1 << 64) - 1


@njit(nogil=True, cache=True)
def _sink_kernel(inp, log, lat):
    now = monotonic_ns()
    n = load_acquire(log, 0)
    for i in range(inp.shape[0]):
        k = n + np.uint64(i + 1)
        if k < log.shape[0] - 1:  # the last word of ``lat`` is the sink's (setup)
            log[k] = inp[i].order_id
            lat[k] = np.uint64(now - inp[i].ts_recv_ns)
    store_release(log, 0, n + np.uint64(inp.shape[0]))


def hook_restarts(blk) -> int:
    """The restart count the test hooks below are keyed by, read once the supervisor has
    written this process's pid into its block (``blk``, the stage's control-block words):
    it writes the count and the pid after the start, and a forked process attaches within
    milliseconds, so reading at once gave the previous process's count. 0 at once when no
    hook is set; after 10 s without a supervisor's word, what is there."""
    if not (os.environ.get("BOT4_TEST_STALL_STAGE") or os.environ.get("BOT4_TEST_HANG_START")):
        return 0
    deadline = time.monotonic() + 10.0
    while int(blk[C.S_PID]) != os.getpid() and time.monotonic() < deadline:
        time.sleep(0.001)
    return int(blk[C.S_RESTARTS])


def stall_requested(name: str, restarts: int) -> bool:
    """Test hook: ``BOT4_TEST_STALL_STAGE=NAME`` (or ``NAME:N``) makes stage NAME's loop do
    nothing with its input while it keeps beating (every process of it, or only while it
    has been restarted fewer than N times): a stage alive and stuck, for the supervisor's
    liveness check (``bot4.pipeline.liveness``) to find. Read once, when a stage attaches."""
    want = os.environ.get("BOT4_TEST_STALL_STAGE", "")
    stage, _, n = want.partition(":")
    return bool(stage) and stage == name and (not n or restarts < int(n))


def hang_requested(name: str, restarts: int) -> bool:
    """Test hook: ``BOT4_TEST_HANG_START=NAME:K`` makes the process of stage NAME started
    after its K-th restart hang while attaching (alive, never running, no heartbeat): a
    restart stuck in "starting", for the supervisor's ``start_timeout`` to end."""
    stage, _, k = os.environ.get("BOT4_TEST_HANG_START", "").partition(":")
    return bool(stage) and stage == name and restarts == int(k or 0)


class TestSource(Stage):
    """params: ``count`` records in all (0 = unbounded), ``rate`` records/s (0 = flat out)."""

    kind = "test-source"
    source = True
    replay_feed = True
    arity = (0, 0, 1, 1)
    output_types = ("MARKET_DATA",)
    params_keys = frozenset({"count", "rate"})

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_number(params, "count", integer=True, lo=0)
        check_number(params, "rate", lo=0)

    def setup(self) -> None:
        self.count = int(self.params.get("count", 0))
        self.rate = float(self.params.get("rate", 0))
        self.t0 = time.monotonic_ns()
        self.p0: int | None = None

    def source_done(self, position: int) -> bool:
        return self.count > 0 and position >= self.count

    def source_ready(self, position: int, now_ns: int) -> int:
        left = self.count - position if self.count else 1 << 30
        if self.rate <= 0:
            return left
        if self.p0 is None:  # the clock starts at the first emission, not at set-up
            self.p0 = position
            self.t0 = now_ns
        due = int((now_ns - self.t0) * self.rate / 1e9) + 1 - (position - self.p0)
        return min(left, due)

    def generate(self, position, n, outs, counts, seq):
        nxt = _source_kernel(outs[0], position, n, seq, time.monotonic_ns())
        counts[0] = n
        return n, nxt


class Relay(Stage):
    """Copies every record through, renumbered. params: ``spin_us`` per batch (tests)."""

    kind = "relay"
    input_types = ("*",)
    output_types = ("*",)
    params_keys = frozenset({"spin_us"})

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_number(params, "spin_us", lo=0)

    @classmethod
    def check_arity(cls, n_in, n_out, in_types, out_types):
        problem = super().check_arity(n_in, n_out, in_types, out_types)
        if problem is None and in_types != out_types:
            return f"kind 'relay' passes records through: input carries {in_types[0].lower()}, output {out_types[0].lower()}"
        return problem

    @classmethod
    def warm_shapes(cls, ring_types):
        return [((t,), (t,)) for t in ring_types]  # a specialisation per record type

    def setup(self) -> None:
        self.spin_ns = int(float(self.params.get("spin_us", 0)) * 1000)

    def process(self, i, batch, outs, counts, seq):
        counts[0] = batch.shape[0]
        return _relay_kernel(batch, outs[0], seq, self.spin_ns)


class TestSink(Stage):
    """Logs each record's ``order_id`` and latency (ns) into segments ``<log>`` and
    ``<log>-lat`` of instance ``log_instance`` (default: the pipeline's own) as u64 words;
    word 0 of the log counts records. Whoever reads them (a test, a benchmark) creates
    them, in a namespace of its own so they outlive the pipeline's segments."""

    kind = "test-sink"
    arity = (1, 1, 0, 0)
    input_types = ("MARKET_DATA",)
    restart_state = (
        "none; it logs each record once across restarts (a stage group kill takes the sink "
        "with it): words 0 and -1 of ``<log>-lat`` say where the log ends in its input "
        "ring's positions, so a restarted sink skips what it logged but had not released"
    )
    params_keys = frozenset({"log", "log_instance"})

    @classmethod
    def warm_alone(cls) -> int:
        """Its setup attaches the reader's segments: the kernel alone."""
        md = np.zeros(2, MARKET_DATA)
        _sink_kernel(md, np.zeros(8, np.uint64), np.zeros(8, np.uint64))
        return 1

    @classmethod
    def check_params(cls, params):
        super().check_params(params)
        check_type(params, "log", str, "a segment name")
        check_type(params, "log_instance", str, "an instance name")

    def setup(self) -> None:
        base = self.params.get("log", "sinklog")
        inst = self.params.get("log_instance", self.instance)
        self.log_seg = Segment.attach(segment_name(inst, base))
        self.lat_seg = Segment.attach(segment_name(inst, base + "-lat"))
        self.log = np.frombuffer(self.log_seg.buf, np.uint64)
        self.lat = np.frombuffer(self.lat_seg.buf, np.uint64)
        # Exactly once across restarts: the log's count commits each batch, the input is
        # released after it, so a SIGKILL in between leaves records logged but unreleased;
        # the loop resumes at the released position and they would be logged again.
        # lat[0] + count is where the log ends in the input ring's positions (consumed
        # records), lat[-1] which creation of the instance's segments lat[0] belongs to
        # (the control block's creation ns; a log can outlive segments and go on in a new
        # run): everything between the released position and the log's end is skipped.
        from bot4.shm.stats import RingReader

        cb = C.ControlBlock(self.instance, readonly=True)
        created = int(cb.words[C.W_CREATED_NS])
        cb.close()
        reader = RingReader(segment_name(self.instance, self.inputs[0].name))
        try:
            consumed = int(reader.snapshot().consumed)
        finally:
            reader.close()
        count = int(self.log[0])
        if int(self.lat[-1]) != created:  # nothing of these segments' ring logged yet
            self.lat[0] = (consumed - count) & _M64
            self.lat[-1] = created
        ahead = (int(self.lat[0]) + count - consumed) & _M64
        self.skip = ahead if ahead < 1 << 63 else 0

    def process(self, i, batch, outs, counts, seq):
        if self.skip:
            k = min(self.skip, batch.shape[0])
            self.skip -= k
            batch = batch[k:]
        _sink_kernel(batch, self.log, self.lat)
        return seq
