"""The stage loop's shutdown half (``StageRunner``'s mixin, ``bot4.stages.loop``): the
drain policy a stage runs once its inputs are drained, ``finish`` in a group, the trail of
feedback inputs a drained member keeps reading while the members that feed it still run,
and the ``on_stopped`` hook. The order of a drain is the loop module's docstring's."""

from __future__ import annotations

import logging
import time

from bot4.shm import control as C

log = logging.getLogger("bot4.stage")
DRAIN_REPLY_S = 5.0  # longest wait for the answers to a stage's shutdown records


class Shutdown:
    """How a :class:`~bot4.stages.loop.StageRunner` leaves: it provides ``stage``,
    ``spec``, ``blk``, ``cb``, ``topology``, ``in_specs``, ``ins``, ``_step``,
    ``_emit_pending`` and ``_housekeep``; these methods own ``_drain_deadline`` and
    ``_trail_deadline`` (None until the drain, the trail, starts)."""

    _drain_deadline: float | None = None
    _trail_deadline: float | None = None

    def _drain_policy(self) -> int:
        """Inputs drained while the pipeline drains: run the shutdown policy once, then
        keep cycling (0) until its records left and their answers came back on the
        feedback inputs (``awaiting_replies``), or ``DRAIN_REPLY_S`` passed (-1: leave).
        Cycling rather than waiting here lets a group's other members (the venue that
        answers) run."""
        now = time.monotonic()
        if self._drain_deadline is None:
            self.blk[C.S_STATE] = C.STAGE_DRAINING
            self.stage.on_drain()
            self._drain_deadline = now + DRAIN_REPLY_S
            return 0
        stage = self.stage
        if stage.pending(stage.clock()) > 0 or stage.awaiting_replies():
            if now < self._drain_deadline:
                return 0
            log.warning(
                "%s: no answer to its shutdown records within %.0f s; stopping without them",
                self.spec.name,
                DRAIN_REPLY_S,
            )
        return -1

    def finish(self) -> None:
        """The stage's shutdown policy (``on_drain`` and its records, unless the drain ran
        it already), then stopped."""
        self.blk[C.S_STATE] = C.STAGE_DRAINING
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic()
            self.stage.on_drain()
        deadline = time.monotonic() + 5.0
        while self.stage.pending(self.stage.clock()) > 0 and time.monotonic() < deadline:
            self._emit_pending()  # the shutdown policy's records leave before we do
        self._housekeep()
        self.blk[C.S_STATE] = C.STAGE_STOPPED

    def trail(self, producers: set[str]) -> int:
        """After :meth:`finish`, in a group: read the feedback inputs fed by the still
        running members ``producers`` (risk's ``fills`` from orders: the CANCELLED reports
        of the orders stage's shutdown CANCEL_ALL arrive after risk drained). Returns the
        records read, -1 once every such producer has stopped and its ring is empty (or
        ``DRAIN_REPLY_S`` passed). The state read before the depth: records committed
        before a producer said stopped are all seen."""
        if self._trail_deadline is None:  # the producer's own drain may take DRAIN_REPLY_S
            self._trail_deadline = time.monotonic() + 2 * DRAIN_REPLY_S
        n = 0
        open_ = False
        for i, r in enumerate(self.in_specs):
            if not r.feedback or r.producer not in producers:
                continue
            prod = int(self.cb.stage(self.topology.stage(r.producer).index)[C.S_STATE])
            done = prod in (C.STAGE_STOPPED, C.STAGE_FAILED)
            got = self._step(i)
            n += max(got, 0)
            if not done or got > 0 or self.ins[i].depth:
                open_ = True
        if open_ and time.monotonic() < self._trail_deadline:
            return n
        if open_:
            log.warning("%s: feedback inputs not drained within %.0f s", self.spec.name,
                        2 * DRAIN_REPLY_S)  # fmt: skip
        self._housekeep()
        return -1

    def stopped(self) -> None:
        """The member read its last record (after :meth:`finish`, and after :meth:`trail`
        where it trails): the stage's ``on_stopped`` hook, if it has one (risk logs its
        summary there, so its positions include the fills that reached it while it
        trailed)."""
        hook = getattr(self.stage, "on_stopped", None)
        if hook is not None:
            hook()

    def feeds_back_from(self, names: set[str]) -> set[str]:
        """The members of ``names`` that produce a feedback input of this stage."""
        return {r.producer for r in self.in_specs if r.feedback and r.producer in names}
