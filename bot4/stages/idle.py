"""Idle strategies of a process with nothing to do (Agrona's ``IdleStrategy`` family).

A stage group calls ``Idler.idle(iteration)`` after a round in which no member did any
work, with ``iteration`` counting such rounds since the last one that did; any work resets
it. Strategies (topology key ``idle`` of a ``[[group]]``):

* ``busy-spin`` — return at once: lowest latency, burns the core. Only where the group
  has a core to itself and nothing else needs it.
* ``yield`` — ``sched_yield`` every idle round: gives a shared core away at once.
* ``park`` — yield ``YIELD_ROUNDS`` rounds, then sleep on every external input ring at
  once (``bot4.shm.multipark``) until a producer publishes or ``max_park_ns`` passes.
* ``backoff`` (default) — spin ``SPIN_ROUNDS`` rounds, yield ``YIELD_ROUNDS``, then park
  with a timeout that starts at ``MIN_PARK_NS`` and doubles up to ``max_park_ns``
  (Agrona's ``BackoffIdleStrategy``). Parking is woken by producers, so the growing
  timeout only bounds how long clock-driven work (a paced source, heartbeats) waits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from bot4.shm.multipark import MultiPark

IDLE_NAMES = ("busy-spin", "yield", "park", "backoff")
SPIN_ROUNDS = 64
YIELD_ROUNDS = 16
MIN_PARK_NS = 20_000


class Idler:
    def __init__(
        self,
        strategy: str,
        hdrs: list[np.ndarray],
        positions: Callable[[], list[int]],
        *,
        max_park_ns: int = 1_000_000,
    ) -> None:
        if strategy not in IDLE_NAMES:
            raise ValueError(f"idle strategy {strategy!r} is not one of {', '.join(IDLE_NAMES)}")
        self.strategy = strategy
        self.positions = positions
        self.max_park_ns = max_park_ns
        self.park = MultiPark(hdrs) if hdrs else None
        self.spins = SPIN_ROUNDS if strategy == "backoff" else 0

    def idle(self, iteration: int) -> None:
        s = self.strategy
        if s == "busy-spin" or iteration < self.spins:
            return
        if s == "yield" or iteration < self.spins + YIELD_ROUNDS:
            os.sched_yield()
            return
        if s == "park":
            timeout = self.max_park_ns
        else:
            k = min(iteration - self.spins - YIELD_ROUNDS, 16)
            timeout = min(self.max_park_ns, MIN_PARK_NS << k)
        if self.park is None:  # nothing to wake us: a group of sources
            time.sleep(timeout / 1e9)
            return
        self.park.park(self.positions(), timeout)
