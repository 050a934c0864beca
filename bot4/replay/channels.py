"""The deterministic replay's rings (``bot4.replay.engine``): the simulated clock, same-step
rings and delay lines. In-process arrays; the harness owns every array it hands out."""

from __future__ import annotations

from collections import deque

import numpy as np

from bot4.replay.latency import LatencyModel

__all__ = ["SimClock"]


class SimClock:
    """The simulated clock every stage reads (ns since the Unix epoch, the data's axis).
    Written only by the harness."""

    __slots__ = ("t",)

    def __init__(self, t: int = 0) -> None:
        self.t = int(t)

    def __call__(self) -> int:
        return self.t


class _Direct:
    """A same-step ring: the producer writes into the buffer, the consumer (later in the
    same step) reads everything and empties it."""

    __slots__ = ("buf", "n", "tap")
    delayed = False

    def __init__(self, dtype, cap: int = 1024) -> None:
        self.buf = np.zeros(cap, dtype)
        self.n = 0
        self.tap = None  # callable(records): sees what is written (bot4.replay.models)

    def room(self, need: int) -> np.ndarray:
        if self.n + need > len(self.buf):
            nb = np.zeros(max(2 * len(self.buf), self.n + need), self.buf.dtype)
            nb[: self.n] = self.buf[: self.n]
            self.buf = nb
        return self.buf[self.n : self.n + need]

    def commit(self, k: int, _t: int) -> None:
        if self.tap is not None and k:
            self.tap(self.buf[self.n : self.n + k])
        self.n += k

    def take(self, _t: int) -> np.ndarray:
        k, self.n = self.n, 0
        return self.buf[:k]

    def next_due(self) -> int | None:
        return None

    def __len__(self) -> int:
        return self.n


class _Delay:
    """A ring with a delay line: records reach the consumer at their due time (ns), in
    the order they were written (due times never decrease). ``model`` None: due at the
    time written (a feedback ring: the consumer reads it at the next step)."""

    delayed = True

    def __init__(self, dtype, model: LatencyModel | None, rng, stamp: str | None, base) -> None:
        self.scratch = np.zeros(1024, dtype)
        self.model = model
        self.rng = rng
        self.stamp = stamp  # field the latency starts from (None: the write time)
        self.base = base  # extra ns per record (the venue's own report latency) or 0
        self.parts: deque = deque()
        self.last_due = -(1 << 62)
        self.count = 0
        self.load_of = None  # callable(times) -> load array, for load-driven models
        self.tap = None  # callable(records): sees what is written (bot4.replay.models)

    def room(self, need: int) -> np.ndarray:
        if need > len(self.scratch):
            self.scratch = np.zeros(max(need, 2 * len(self.scratch)), self.scratch.dtype)
        return self.scratch[:need]

    def commit(self, k: int, t: int) -> None:
        if k == 0:
            return
        recs = self.scratch[:k].copy()
        if self.tap is not None:
            self.tap(recs)
        start = recs[self.stamp].astype(np.int64) if self.stamp else np.full(k, t, np.int64)
        if self.model is not None:
            load = self.load_of(start) if (self.model.needs_load and self.load_of) else None
            start = start + self.base + self.model.sample(self.rng, k, load)
        due = np.maximum.accumulate(np.maximum(start, self.last_due))
        self.last_due = int(due[-1])
        self.parts.append([due, recs, 0])
        self.count += k

    def take(self, t: int) -> np.ndarray:
        return self.take_with_due(t)[1]

    def take_with_due(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        dues, recs = [], []
        while self.parts:
            part = self.parts[0]
            due, r, i = part
            j = int(np.searchsorted(due, t, side="right"))
            if j <= i:
                break
            dues.append(due[i:j])
            recs.append(r[i:j])
            self.count -= j - i
            if j == len(due):
                self.parts.popleft()
            else:
                part[2] = j
                break
        if not recs:
            return np.zeros(0, np.int64), self.scratch[:0]
        if len(recs) == 1:
            return dues[0], recs[0]
        return np.concatenate(dues), np.concatenate(recs)

    def next_due(self) -> int | None:
        if not self.parts:
            return None
        due, _r, i = self.parts[0]
        return int(due[i])

    def __len__(self) -> int:
        return self.count
