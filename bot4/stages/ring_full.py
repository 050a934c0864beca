"""Ring-full episodes in the log, seen by the producer at housekeeping.

A stage's output ring that is full costs the producer a *full wait* (``block`` rings) or
drops the batch's records as *rejections* (``reject`` rings); both are counters the producer
owns in the ring header (``W_PRODUCER_FULL_WAITS``, ``W_PRODUCER_REJECTIONS``). The loop's
housekeeping (every 64 batches, and at most every 200 µs when idle — which a producer
blocked on a full ring is) hands them to :meth:`RingFullLog.poll`; nothing here runs per
record or inside a kernel.

An episode starts when either counter moves and ends once neither moved for ``QUIET_NS``.
Logged: the start (WARNING, event ``ring_full``) and the end (INFO, ``ring_full_end``, with
its duration and the waits and rejections it cost). Rate limit: at most one start line per
ring per ``REPEAT_NS``; the episodes in between are not logged one by one, and the next
start line counts them (``episodes_unlogged``), so a ring that flaps every second yields a
line every 10 s, not one a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot4.logs import log_event
from bot4.shm.ring_layout import W_PRODUCER_FULL_WAITS, W_PRODUCER_REJECTIONS

log = logging.getLogger("bot4.stage")
QUIET_NS = 1_000_000_000  # an episode ends after 1 s without a new full wait or rejection
REPEAT_NS = 10_000_000_000  # at most one start line per ring per 10 s


@dataclass
class _Ring:
    name: str
    hdr: object  # the ring header as u64 words (the producer's own counters are read)
    waits: int = 0
    rejections: int = 0
    in_episode: bool = False
    logged: bool = False  # this episode's start was logged (so its end is too)
    started_ns: int = 0
    last_move_ns: int = 0
    waits_at_start: int = 0
    rejections_at_start: int = 0
    last_logged_ns: int | None = None
    unlogged: int = 0  # episodes since the last start line that were not logged


class RingFullLog:
    """Episodes of the output rings of one stage (``rings``: ``(name, header words)``)."""

    def __init__(self, stage: str, rings: list[tuple[str, object]]) -> None:
        self.stage = stage
        self.rings = [_Ring(name, hdr) for name, hdr in rings]
        for r in self.rings:  # counts from before this process (a restart) are not news
            r.waits = int(r.hdr[W_PRODUCER_FULL_WAITS])
            r.rejections = int(r.hdr[W_PRODUCER_REJECTIONS])

    def poll(self, now_ns: int) -> None:
        for r in self.rings:
            waits = int(r.hdr[W_PRODUCER_FULL_WAITS])
            rejections = int(r.hdr[W_PRODUCER_REJECTIONS])
            moved = waits != r.waits or rejections != r.rejections
            if moved and not r.in_episode:
                self._start(r, now_ns)
            if moved:
                r.last_move_ns = now_ns
            elif r.in_episode and now_ns - r.last_move_ns >= QUIET_NS:
                self._end(r, waits, rejections, now_ns)
            r.waits, r.rejections = waits, rejections

    def _start(self, r: _Ring, now_ns: int) -> None:
        r.in_episode = True
        r.started_ns = now_ns
        r.waits_at_start, r.rejections_at_start = r.waits, r.rejections
        if r.last_logged_ns is not None and now_ns - r.last_logged_ns < REPEAT_NS:
            r.logged = False
            r.unlogged += 1
            return
        r.logged = True
        r.last_logged_ns = now_ns
        log_event(
            log,
            logging.WARNING,
            "ring_full",
            "stage %s: output ring '%s' full%s",
            self.stage,
            r.name,
            f" ({r.unlogged} more episodes since the last report)" if r.unlogged else "",
            stage=self.stage,
            ring=r.name,
            episodes_unlogged=r.unlogged,
        )
        r.unlogged = 0

    def _end(self, r: _Ring, waits: int, rejections: int, now_ns: int) -> None:
        r.in_episode = False
        if not r.logged:
            return
        dur = (r.last_move_ns - r.started_ns) / 1e9
        log_event(
            log,
            logging.INFO,
            "ring_full_end",
            "stage %s: output ring '%s' has room again after %.1f s",
            self.stage,
            r.name,
            dur,
            stage=self.stage,
            ring=r.name,
            duration_s=round(dur, 3),
            full_waits=waits - r.waits_at_start,
            rejections=rejections - r.rejections_at_start,
        )
