"""Liveness from ring cursors: is a stage making progress, waiting for work, or stuck?

A heartbeat says a process runs its loop; it does not say the loop gets anything done (a
stage can beat forever while every batch returns 0). This module judges progress from
what the rings show, never from a stage's own idea of being blocked:

* an input ring *has data* when its producer position is ahead of its consumer position;
* an output ring *has room* when it has at least ``max_out_per_in`` free slots (what one
  input record may need), or it rejects instead of blocking (``backpressure = "reject"``);
* a stage is **blocked** when a blocking output it needs has no room: it waits for its
  consumer, which is backpressure, never a stall;
* a stage is **stuck on input i** when input i has data, every output has room, and the
  input held records at the last observation too and its consumer position has not moved
  since. The time it has been so (``since``) starts at the first observation that saw it
  (so it is never over-counted) and restarts whenever the position moves or the
  condition breaks, so time spent blocked never counts;
* the **pipeline** is stuck when no ring position moved since the last observation while
  some ring holds records, every unfinished stage being alive and running.

The supervisor observes every 100 ms or so (:meth:`ProgressWatch.observe`), decides what
to do with a stage stuck longer than its ``stall_timeout`` and publishes the verdicts in
the control block for ``bot4 stats`` (words in ``bot4.shm.control``). Readers only: the
rings are mapped ``PROT_READ``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from bot4.shm import ring_layout as L
from bot4.shm.control import LIVE_BLOCKED, LIVE_IDLE, LIVE_MOVING, LIVE_STUCK
from bot4.shm.segment import Segment, SegmentMissingError, segment_name

_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Cursor:
    """One ring's positions at one instant (``producer - consumer`` in [0, capacity])."""

    producer: int
    consumer: int
    capacity: int
    reject: bool

    @property
    def depth(self) -> int:
        return (self.producer - self.consumer) & _M64

    @property
    def free(self) -> int:
        return self.capacity - self.depth


class CursorReader:
    """Read-only attachments to a topology's rings; :meth:`read` loads every position."""

    def __init__(self, instance: str, ring_names: Iterable[str]) -> None:
        self._hdrs: dict[str, np.ndarray] = {}
        self._segs: list[Segment] = []
        for name in ring_names:
            try:
                seg = Segment.attach(
                    segment_name(instance, name), readonly=True, min_size=L.HEADER_BYTES
                )
            except SegmentMissingError:
                continue
            self._segs.append(seg)
            self._hdrs[name] = np.frombuffer(seg.buf, np.uint64, L.HEADER_WORDS)

    def read(self) -> dict[str, Cursor]:
        """Positions of every ring: consumer, producer, consumer again until the two
        consumer loads agree, so ``0 <= depth <= capacity`` (as ``bot4.shm.stats``)."""
        out = {}
        for name, hdr in self._hdrs.items():
            for _ in range(1000):
                c1 = int(hdr[L.W_CONSUMER_POSITION])
                p = int(hdr[L.W_PRODUCER_POSITION])
                if int(hdr[L.W_CONSUMER_POSITION]) == c1:
                    break
            out[name] = Cursor(
                p, c1, int(hdr[L.W_CAPACITY]), int(hdr[L.W_BACKPRESSURE]) == L.BP_REJECT
            )
        return out

    def close(self) -> None:
        self._hdrs.clear()
        for seg in self._segs:
            with contextlib.suppress(BufferError):
                seg.close()
        self._segs.clear()


@dataclass(frozen=True)
class Verdict:
    """What the rings say about one stage. ``state`` is a ``LIVE_*`` of
    ``bot4.shm.control``; ``ring`` the input it is stuck on (or has data on), or the full
    output it is blocked on; ``records`` that ring's depth; ``since`` (monotonic s) when a
    stuck stage was first seen stuck on ``ring``, else None."""

    state: int
    ring: str = ""
    records: int = 0
    since: float | None = None

    def stuck_for(self, now: float) -> float:
        return 0.0 if self.since is None else now - self.since


class ProgressWatch:
    """Per-stage and pipeline-wide progress clocks over successive observations.

    ``inputs``/``outputs``: ring names per stage (topology order); ``out_per_in``: the
    free slots one input record needs on each output of the stage (its
    ``max_out_per_in``); ``reject``: output rings that reject instead of blocking."""

    def __init__(
        self,
        inputs: Mapping[str, list[str]],
        outputs: Mapping[str, list[str]],
        out_per_in: Mapping[str, int],
    ) -> None:
        self.inputs = {k: list(v) for k, v in inputs.items()}
        self.outputs = {k: list(v) for k, v in outputs.items()}
        self.out_per_in = dict(out_per_in)
        self._last: dict[str, Cursor] = {}
        self._stuck: dict[str, dict[str, float]] = {s: {} for s in self.inputs}
        self._pipe_since: float | None = None

    @classmethod
    def for_topology(cls, topology) -> ProgressWatch:
        from bot4.stages import KINDS

        return cls(
            {s.name: [r.name for r in topology.inputs_of(s.name)] for s in topology.stages},
            {s.name: [r.name for r in topology.outputs_of(s.name)] for s in topology.stages},
            {s.name: KINDS[s.kind].out_per_in(s.params) for s in topology.stages},
        )

    def reset(self, stage: str) -> None:
        """A new process of ``stage`` (restart): its clocks start again."""
        self._stuck[stage] = {}

    def observe(
        self,
        cursors: Mapping[str, Cursor],
        now: float,
        ready: bool = True,
        watched: Iterable[str] | None = None,
    ) -> tuple[dict[str, Verdict], float | None, list[tuple[str, int]]]:
        """Observe ``cursors`` taken at ``now`` (monotonic s).

        Returns the verdict of every stage, and for the pipeline: since when no ring has
        moved while some hold records (None when rings move, are empty, or not
        ``ready``), with those rings and their depths. ``ready``: every unfinished stage
        is alive and running with a fresh heartbeat (otherwise the heartbeat check, a
        restart or the start explains a standstill, and the pipeline clock restarts).
        ``watched``: the rings the pipeline clock looks at (default all; a ring whose
        consumer has finished may keep records for good, e.g. a feedback ring at drain)."""
        last, self._last = self._last, dict(cursors)
        verdicts = {s: self._stage(s, last, cursors, now) for s in self.inputs}
        pipe = {r: cursors[r] for r in (cursors if watched is None else watched) if r in cursors}
        held = [(r, c.depth) for r, c in pipe.items() if c.depth > 0]
        moved = any(last.get(r) != c for r, c in pipe.items())
        if not ready or not held or moved or not last:
            self._pipe_since = None
        elif self._pipe_since is None:
            self._pipe_since = now
        return verdicts, self._pipe_since, held

    def _stage(self, stage, last, cursors, now) -> Verdict:
        ins, outs = self.inputs[stage], self.outputs[stage]
        mo = self.out_per_in.get(stage, 1)
        full = [r for r in outs if r in cursors and not cursors[r].reject and cursors[r].free < mo]
        with_data = [r for r in ins if r in cursors and cursors[r].depth > 0]
        clocks = self._stuck[stage]
        if full:
            clocks.clear()
            return Verdict(LIVE_BLOCKED, full[0], cursors[full[0]].depth)
        if not with_data:
            clocks.clear()
            moved = any(r in last and last[r] != cursors.get(r) for r in (*ins, *outs))
            return Verdict(LIVE_MOVING if moved else LIVE_IDLE)
        for r in list(clocks):
            if r not in with_data:
                del clocks[r]
        for r in with_data:
            prev = last.get(r)
            if prev is None or prev.depth == 0 or prev.consumer != cursors[r].consumer:
                clocks.pop(r, None)  # moved, or the records are new since the last look
            else:
                clocks.setdefault(r, now)
        if clocks:
            r = min(clocks, key=clocks.__getitem__)
            return Verdict(LIVE_STUCK, r, cursors[r].depth, clocks[r])
        return Verdict(LIVE_MOVING, with_data[0], cursors[with_data[0]].depth)
