"""Deterministic replay: a topology's stages in one process, on a simulated clock.

The stages are the live classes (``bot4.stages.KINDS``) built with the topology's params
— risk on process-local breaker and trading-state words (``shared = false``), the venue on
the exchange's clock (``md_time = "event"``; ``quote_fill = "trade_through"`` unless the
topology says otherwise) and without the heartbeat watch, persistence writing the journal
under ``out/journal`` (``fsync = "none"``). The md source stage is replaced by the
harness's feed: the data's records, numbered ``seq = position + 1`` and stamped
``ts_recv_ns = ts_event_ns + feed latency`` (never decreasing: a feed keeps its order).
Rings are in-process arrays.

**The simulated clock** is the data's own time axis (ns since the Unix epoch): every stage's
``clock`` and ``wall_clock`` read it, so every stamp a stage writes is simulated and the
daily-loss reset falls at the data's local 17:00.

**Event-exact time** (``step_ns = 0``, the default). Every record reaches a stage at its
own modelled time and the stage reacts then (plus the constant ``compute`` latency of each
hop before it): market data at ``ts_recv_ns`` (the venue: at ``ts_event_ns``), an intent
at its market data's receive time, an order at the venue at ``ts_order_ns + order
latency``, a report at ``ts_venue_ns + latency_ns + report latency``, a record on a
feedback ring 1 ns after it was written. The result is by definition that of a run
stepping every nanosecond (``step_ns = 1``), where each step holds the records of one
instant; ``tests/unit/test_replay_exact_time.py`` holds the two equal, journal byte for
byte. It is computed without visiting every instant: between two *events* (a record due
in a delay line, a venue report's release, the risk stage's next staleness check or daily
reset, a feed record flagged ``MDF_BOOK_STALE``) market data reaches its stages a window at
a time, each in one call, where that provably changes nothing:

* the signals stage (without a model router) reads the whole feed ahead: its only use of
  the clock is the ``ts_signal_ns`` stamp, set to each intent's own ``ts_recv_ns`` +
  compute; its intents wait in a delay line until their own time (they are events);
* the risk stage applies the window in one call at its last record's clock, then its
  arrival stamps are set per instrument to the last record's own time
  (:func:`_restamp_arrivals`); prices, references (stamped from the records) and marks
  telescope. While an instrument is in a stale episode every record is an event;
* the venue applies the window on the exchange's clock, record by record in one kernel
  call that stops at a record filling one of ours: that report's release time then ends
  the window (nothing else can reach the venue or the OMS before it);
* any other stage reading the feed makes every feed record an event.

At each event's time a *step* runs every stage in topology order exactly as a stepped run
does, so the window is only an optimisation: the next event time bounds it. The steps where
only the risk stage has work (an intent it denies, a staleness check) run many per call in
one kernel (``bot4.replay.quiet``); the code of this mode is in ``bot4.replay.exact``.

**Stepped time** (``step_ns > 0``: ``--step 1ms``). Time advances on a grid of
``step_ns`` (empty windows are skipped; a window with more than ``max_batch`` feed records
ends early, at the ``max_batch``-th record's receive time). At each step, in topology order
(feedback rings ignored):

1. the feed delivers to each consumer the records received by ``T`` (``ts_recv_ns <= T``);
   the venue gets records by exchange time instead (``ts_event_ns <= T``);
2. each stage reads its inputs — first those whose records wait in a delay line (feedback
   and latency rings: records due by ``T``), then market data, then the rest in ring order
   — one ``process`` call per non-empty input, with its clock at ``T`` plus the sampled
   ``compute`` latency of each hop before it; then ``pending`` / ``emit`` (kill switch,
   cancel-alls);
3. the venue merges its two inputs in time order: market data at each record's event time,
   each order at its arrival time ``ts_order_ns + order latency`` (orders arriving after
   ``T`` wait for a later step), so an order meets exactly the liquidity that was there
   when it arrived; then it releases the reports due by ``T`` (in both modes a report's
   release time is itself a step). Its reports travel back due at ``ts_venue_ns +
   latency_ns + report latency``.

Stages react on the grid: orders, cancels and fills land up to a step late.
Records written to a feedback ring reach its consumer at the next step. A sink stage
(no outputs: persistence) is called once ``SINK_BATCH`` records wait for it, and at the
end, so the journal gets few large frames. Latencies are drawn
from seeded generators (``bot4.replay.latency``), one stream per use, in an order fixed by
the data: the same data, topology, latency models, step and seed give the same records,
the same journal bytes (segment file headers stamped by the simulated clock, not the
wall clock) and the same report, run after run and at any SIMD width.

Ownership: the harness owns every array it hands the stages; a stage's output buffer is
valid until its next call.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot4.pipeline.topology import Topology, load_topology
from bot4.records import MARKET_DATA
from bot4.records.errors import Bot4Error, Code
from bot4.replay.channels import SimClock
from bot4.replay.exact import WINDOW, ExactMixin
from bot4.replay.feed import FeedMixin
from bot4.replay.latency import Constant, LatencyConfig
from bot4.replay.progress import Progress
from bot4.replay.sources import DataSource
from bot4.replay.wiring import WiringMixin, _Node
from bot4.venue.matching import next_release_ns

__all__ = ["WINDOW", "DeterministicReplay", "ReplayResult", "SimClock"]

SINK_BATCH = 4096  # records a sink stage (persistence) waits for before it is called
QUIET_STEPS = True  # event-exact: quiet steps in one kernel call (bot4.replay.quiet)


@dataclass
class ReplayResult:
    """What a deterministic run leaves: ``out_dir`` with ``journal/`` (orders, reports,
    decisions), the stage ``summaries``, final ``marks`` (last mid per instrument, price
    units), the sampled mid series ``mark_series`` for the equity curve, and counts."""

    out_dir: Path
    journal_dir: Path
    events: int
    steps: int
    first_ns: int
    last_ns: int
    wall_s: float
    source_s: float
    summaries: dict
    marks: dict[int, int]
    mark_series: tuple[np.ndarray, dict[int, np.ndarray]]
    config: dict
    models: dict | None = None  # the automatic rollout (bot4.replay.models), if any


class DeterministicReplay(WiringMixin, FeedMixin, ExactMixin):
    """One deterministic run of ``topology`` over ``source`` (see the module docstring).

    ``step_ns``: the step grid (the reaction granularity of our stages, ns);
    ``max_batch``: feed records per step at most; ``interval_ns``: the mark sampling
    interval of the equity curve; ``progress``: a stream for the progress line (None: off).
    """

    def __init__(
        self,
        source: DataSource,
        out_dir: str | os.PathLike,
        *,
        topology: Topology | None = None,
        latency: LatencyConfig | None = None,
        seed: int = 1,
        step_ns: int = 0,
        max_batch: int = 4096,
        interval_ns: int = 60_000_000_000,
        progress=None,
    ) -> None:
        if step_ns < 0 or max_batch <= 0 or interval_ns <= 0:
            raise Bot4Error(
                "replay: step_ns must be >= 0 (0: event-exact), max_batch and interval_ns > 0",
                Code.CONFIG_INVALID,
            )
        self.source = source
        self.out_dir = Path(out_dir)
        self.topology = topology or load_topology(None)
        self.latency = latency or LatencyConfig()
        self.seed = int(seed)
        self.step_ns = int(step_ns)
        self.exact = self.step_ns == 0
        if self.exact and not isinstance(self.latency.compute, Constant):
            raise Bot4Error(
                "replay: event-exact time takes a constant compute latency (--latency "
                f"compute=const:..., got {self.latency.compute.describe()}); give --step for "
                "a stepped run",
                Code.CONFIG_INVALID,
            )
        self.max_batch = int(max_batch)
        self.sink_batch = SINK_BATCH
        self.quiet_steps = QUIET_STEPS
        self.interval_ns = int(interval_ns)
        self.progress = Progress(source.total, progress) if progress is not None else None
        self.clock = SimClock(source.first_ns)
        self.journal_dir = self.out_dir / "journal"
        seqs = np.random.SeedSequence(self.seed).spawn(4)
        self.rng_feed, self.rng_order, self.rng_report, self.rng_compute = (
            np.random.Generator(np.random.PCG64(s)) for s in seqs
        )
        self._build()

    # -- stage calls --------------------------------------------------------------------------
    def _call(self, node: _Node, i: int, batch: np.ndarray, restamp: int | None = None) -> None:
        """``process`` one batch, outputs committed at the clock. ``restamp``: the
        outputs' ``ts_signal_ns`` set to their own ``ts_recv_ns`` + ``restamp`` (a stage
        read ahead of time whose only use of the clock is that stamp: each record's
        output as if it had been processed at its own delivery time)."""
        st = node.stage
        mo = st.max_out_per_in
        need = len(batch) * mo + 16
        views = [ch.room(need) for ch in node.outputs]
        counts = node.counts
        counts.fill(0)
        node.seq = st.process(i, batch, views, counts, node.seq)
        node.calls += 1
        node.records_in += len(batch)
        t = self.clock.t
        for ch, view, k in zip(node.outputs, views, counts.tolist(), strict=False):
            if k:
                if restamp is not None:
                    out = view[:k]
                    out["ts_signal_ns"] = out["ts_recv_ns"] + restamp
                ch.commit(k, t)
                node.records_out += k

    def _emit(self, node: _Node, want: int | None = None) -> None:
        """The stage's records of its own (``pending`` / ``emit``); ``want``: what its
        ``pending`` returned, already called (the quiet steps' kernel)."""
        if not node.has_pending or node.ahead:  # read ahead: no router, nothing pending
            return
        st = node.stage
        if want is None:
            want = st.pending(self.clock.t)
        guard = 0
        while want > 0 and node.outputs and guard < 64:
            views = [ch.room(want) for ch in node.outputs]
            counts = node.counts
            counts[:] = 0
            node.seq = st.emit(views, counts, node.seq)
            t = self.clock.t
            moved = 0
            for j, ch in enumerate(node.outputs):
                k = int(counts[j])
                if k:
                    ch.commit(k, t)
                    node.records_out += k
                    moved += k
            if not moved:
                break
            want = st.pending(t)
            guard += 1

    def _run_node(self, node: _Node, T: int, hop_ns, feed: np.ndarray, vfeed: np.ndarray) -> None:
        if node is self.venue:
            self._run_venue(node, T, vfeed)
            return
        if (
            node.sink
            and not self.flush_sinks
            and sum(len(c) for _i, code, c in node.plan if code == 2) < SINK_BATCH
        ):
            return  # a sink (journal) reads in large batches: fewer, larger frames
        t = T if hop_ns is None else T + int(hop_ns[: node.hop].sum())
        if t > node.now:
            node.now = t
        self.clock.t = node.now
        for i, code, ch in node.plan:
            if code == 0:
                if node.ahead:
                    continue  # read ahead of time (event-exact)
                batch = feed
            elif code == 1:
                batch = vfeed
            elif len(ch):
                batch = ch.take(T)
            else:
                continue
            if len(batch):
                self._call(node, i, batch)
        self._emit(node)

    def _run_venue(self, node: _Node, T: int, md: np.ndarray) -> None:
        """Market data at event time and orders at arrival time, merged (module doc)."""
        oi, mi = node.venue_inputs
        pos = 0
        ev = md["ts_event_ns"] if len(md) else None
        if oi is not None and len(node.inputs[oi]):
            due, orders = node.inputs[oi].take_with_due(T)
            k = 0
            while k < len(orders):
                a = int(due[k])
                k2 = int(np.searchsorted(due, a, side="right"))
                if ev is not None and mi is not None:
                    e = int(np.searchsorted(ev, a, side="right"))
                    if e > pos:
                        self.clock.t = max(node.now, int(ev[e - 1]))
                        node.now = self.clock.t
                        self._call(node, mi, md[pos:e])
                        pos = e
                self.clock.t = max(node.now, a)
                node.now = self.clock.t
                self._call(node, oi, orders[k:k2])
                k = k2
        if mi is not None and pos < len(md):
            self.clock.t = max(node.now, int(ev[-1]))
            node.now = self.clock.t
            self._call(node, mi, md[pos:])
        self.clock.t = max(node.now, T)
        node.now = self.clock.t
        self._release(node)

    def _release(self, node: _Node) -> None:
        """The venue's reports due by the clock, released now: each at the step of its
        release time (a candidate of every step choice), not at the live loop's polling
        interval (``VenueStage.pending``)."""
        st = node.stage
        want = st.venue.pending
        if not want or next_release_ns(st.state) > self.clock.t:
            return
        views = [ch.room(want) for ch in node.outputs]
        counts = node.counts
        counts.fill(0)
        node.seq = st.poll(self.clock.t, views, counts, node.seq)
        t = self.clock.t
        for ch, k in zip(node.outputs, counts.tolist(), strict=False):
            if k:
                ch.commit(k, t)
                node.records_out += k

    # -- the run ------------------------------------------------------------------------------
    def _run_step(self, order: list, t: int, hop, feeds: tuple, steps: int) -> int:
        """Step ``steps + 1`` at time ``t``: the rollout's clock, then every node in
        ``order`` on ``feeds`` (:meth:`_step_feeds`) with hop latencies ``hop``; returns
        the steps run."""
        feed, vfeed = feeds
        if self.rollout is not None:
            self.clock.t = t
            self.rollout.step(t)
        for node in order:
            self._run_node(node, t, hop, feed, vfeed)
        steps += 1
        self.delivered += len(feed)
        if self.progress is not None and steps & 63 == 0:
            self.progress.update(self.base + self.cs)
        return steps

    def _next_time(self, T: int) -> int | None:
        if self.exact:
            return self._next_exact(T)
        cands = []
        r, v = self._next_feed_times()
        if r is not None:
            cands.append(r)
        if v is not None and self.venue is not None:
            cands.append(v)
        for ch in self.delays:
            d = ch.next_due()
            if d is not None:
                cands.append(d)
        if self.venue is not None:
            d = next_release_ns(self.venue.stage.state)
            if d >= 0:
                cands.append(d)
        if not cands:
            return None
        t = min(cands)
        w = self.step_ns
        t = -(-t // w) * w
        if t <= T:
            t = (T // w + 1) * w
        return t

    def run(self) -> ReplayResult:
        """Replay everything, drain, close the journal; the stages' log lines (halts,
        summaries) go to ``out/replay.log``, not the terminal."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out_dir / "replay.log", mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log = logging.getLogger("bot4.stage")
        saved = (log.handlers[:], log.propagate, log.level)
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
        try:
            return self._run()
        finally:
            log.handlers[:], log.propagate, _ = saved
            log.setLevel(saved[2])
            handler.close()

    def _run(self) -> ReplayResult:
        wall0 = time.perf_counter()
        self._feed_init()
        self.clock.t = self.source.first_ns
        for node in self.nodes.values():
            node.now = self.clock.t
            node.stage.setup()
        self.mark_insts: list[int] = []
        self.mark_t: list[int] = []
        self.mark_v: dict[int, list[int]] = {}
        self.next_mark = (self.source.first_ns // self.interval_ns + 1) * self.interval_ns
        order = list(self.nodes.values())
        persist = [n for n in order if type(n.stage).drains_last]
        self.delivered = 0
        try:
            if self.exact:
                T, steps = self._run_exact(order)
            else:
                T, steps = self._run_stepped(order)
            self._sample_marks(T)
            self._drain(order, persist, T)
        finally:
            for node in persist:
                w = getattr(node.stage, "writer", None)
                if w is not None:
                    w.close()
        delivered = self.delivered
        if self.progress is not None:
            self.progress.done(self.base + self.cs)
        marks = {i: self._final_mark(i) for i in self.mark_insts}
        series = (
            np.asarray(self.mark_t, np.int64),
            {i: np.asarray(v, np.int64) for i, v in self.mark_v.items()},
        )
        summaries = {n.name: _jsonable(n.stage.summary()) for n in order}
        models = _jsonable(self.rollout.summary()) if self.rollout is not None else None
        return ReplayResult(
            self.out_dir,
            self.journal_dir,
            delivered,
            steps,
            self.source.first_ns,
            self.source.last_ns,
            time.perf_counter() - wall0,
            self.source_s,
            summaries,
            marks,
            series,
            self.describe(),
            models,
        )

    def _run_stepped(self, order: list[_Node]) -> tuple[int, int]:
        """Steps on the grid of ``step_ns`` (module doc); returns the last step's time and
        the number of steps."""
        compute = self.latency.compute
        use_compute = not (hasattr(compute, "ns") and compute.ns == 0)
        n_hops = len(self.nodes) + 1
        T = -(1 << 62)
        steps = 0
        while True:
            self._pinned = -1  # the last step's views are dead
            Tn = self._next_time(T)
            if Tn is None:
                break
            s0, e0 = self._feed_upto(Tn, "cs")
            if e0 - s0 > self.max_batch:
                e0 = s0 + self.max_batch
                Tn = max(int(self.recv[e0 - 1]), T + 1)
            T = Tn
            feeds = self._step_feeds(s0, e0, T)
            hop_ns = compute.sample(self.rng_compute, n_hops) if use_compute else None
            steps = self._run_step(order, T, hop_ns, feeds, steps)
        return T, steps

    def _final_mark(self, inst: int) -> int:
        b, a = int(self.last_bid[inst]), int(self.last_ask[inst])
        return (b + a) // 2 if b > 0 and a > b else 0

    def _drain(self, order: list[_Node], persist: list[_Node], T: int) -> None:
        """The live shutdown: each stage in topology order runs its ``on_drain`` policy
        (the OMS cancels what rests), and steps go on until every delay line is empty;
        persistence drains last (it closes the journal)."""
        empty = np.zeros(0, MARKET_DATA)
        self.flush_sinks = True
        for node in order:
            if type(node.stage).drains_last:
                continue
            self.clock.t = max(node.now, T)
            node.stage.on_drain()
            for _ in range(100_000):
                for n in order:
                    self._run_node(n, T, None, empty, empty)
                Tn = self._next_time(T)
                if Tn is None:
                    break
                T = Tn
            else:  # pragma: no cover - a stage that never stops emitting
                raise Bot4Error("replay: the pipeline did not drain", Code.INTERNAL_ERROR)
        for node in persist:
            self.clock.t = max(node.now, T)
            node.stage.on_drain()

    def describe(self) -> dict:
        return {
            "mode": "deterministic",
            "topology": self.topology.source,
            "seed": self.seed,
            "step_ns": self.step_ns,
            "max_batch": self.max_batch,
            "interval_ns": self.interval_ns,
            "latency": self.latency.describe(),
            "source": self.source.describe(),
        }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def warm() -> int:
    """Compile (or load from numba's cache) the kernels a replay adds to the stages' own:
    a 2000-event synthetic replay through the default topology into a temporary
    directory. Returns the number of entry points run (for ``bot4 warm``)."""
    import tempfile

    from bot4.replay.sources import SyntheticSource

    with tempfile.TemporaryDirectory() as d:
        DeterministicReplay(SyntheticSource(2000), d).run()  # event-exact: the quiet kernel too
    return 3
