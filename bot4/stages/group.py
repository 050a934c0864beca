"""The shared mode of the stage loop: several stages in one process on one core (Aeron's
shared agent), each member a :class:`~bot4.stages.loop.StageRunner`; where the members are
the hot path's (signals, risk, orders) their rounds run in the compiled duty cycle
(``bot4.stages.hotloop``, bound to the members by ``bot4.stages.hotpath``)."""

from __future__ import annotations

import logging
import time

from bot4.shm import control as C
from bot4.stages.hotkeeper import Keeper, keeper_cores
from bot4.stages.loop import StageRunner
from bot4.stages.process import quiet_gc

log = logging.getLogger("bot4.stage")
GROUP_PARK_NS = 1_000_000  # longest park of a group (its heartbeat and control-block reads)
SOURCE_PARK_NS = 200_000  # ... of a group with a source, which is driven by the clock
# a compiled group's spin before backoff parks: md's batches come ~250 us apart at 20 k
# ticks/s, so a longer spin rarely catches one and was a third of the group's CPU
BACKOFF_SPIN_NS = 10_000
#: idle strategy -> (ns the compiled cycle spins without work, spinning with sched_yield,
#: then parking inside the compiled cycle on every external input until data or its 1 ms
#: deadline). The compiled cycle idles by itself: a producer's wake-up reaches the
#: kernels without the interpreter. Spin and yield phases are short on purpose: on a core
#: shared with other processes a group that stays runnable after each burst is treated by
#: the scheduler as a CPU hog and waits milliseconds for the core, where one that parks
#: is woken by the producer's futex and runs at once.
HOT_IDLE = {
    "busy-spin": (1 << 62, False, False),  # never idle: back to Python at the deadline
    "yield": (1 << 62, True, False),
    "backoff": (BACKOFF_SPIN_NS, False, True),
    "park": (0, False, True),
}


class GroupRunner:
    """The shared mode: several stages in one process on one core (Aeron's shared agent).

    Members run their duty cycles round-robin in topology order (upstream first, so a
    record can cross every in-group hop within one round); each keeps its own cursors,
    outputs, heartbeat and counters in its own control-block slot, so a killed group
    resumes every member exactly as a killed dedicated stage resumes. The group idles only
    when no member did any work, with the group's idle strategy (``bot4.stages.idle``),
    parking on every ring the group reads from outside itself. A member that raises takes
    the whole group down (the supervisor restarts the group) with its name in the log.
    """

    def __init__(self, topology, group) -> None:
        self.topology = topology
        self.group = group
        order = topology.order()
        members = sorted(group.members, key=order.index)
        self.members = [StageRunner(topology, name) for name in members]
        self.notifier = self.members[0].notifier
        self.local_stop = False

    def idle_strategy(self) -> str:
        """The group's idle strategy, except that ``busy-spin`` and ``yield`` become
        ``backoff`` where another process of the pipeline is pinned to the group's core:
        a spinner would take the core from it for whole scheduler ticks."""
        g = self.group
        if g.idle not in ("busy-spin", "yield"):
            return g.idle
        for name, _members in self.topology.units():
            if name != g.name and self.topology.unit_core(name) == g.core:
                log.info("group %s: core %d shared with %s: idle backoff, not %s",
                         g.name, g.core, name, g.idle)  # fmt: skip
                return "backoff"
        return g.idle

    def run(self) -> int:
        from bot4.stages.hotloop import HOUSEKEEP_NS, R_BAIL, R_IDLE, R_PENDING, R_STATE
        from bot4.stages.hotpath import HotPath
        from bot4.stages.idle import Idler

        g = self.group
        started = []
        keeper = None
        try:
            for m in self.members:
                m.start(running=False)
                started.append(m)
            # the compiled duty cycle (bot4.stages.hotloop) where the members qualify,
            # loaded (compiled, the first time: tens of seconds) before they report running
            hot = HotPath.of(self.members, set(g.members))
            if hot is not None:
                hot.prime()
                log.info("group %s: compiled duty cycle (%s)", g.name, hot.describe())
                # what only reads runs beside the cycle, off the group's core
                keeper = hot.keeper = Keeper(
                    self.members,
                    self.notifier,
                    hot.poke,
                    lambda: setattr(self, "local_stop", True),
                    keeper_cores(self.topology, g.core),
                )
            quiet_gc()
            for m in self.members:
                m._housekeep()
                m.blk[C.S_STATE] = C.STAGE_RUNNING
            self.notifier.send(
                "READY=1", f"STATUS=group {g.name} ({', '.join(g.members)}) on core {g.core}"
            )
            external = [
                (m, i)
                for m in self.members
                for i, r in enumerate(m.in_specs)
                if r.producer not in g.members
            ]
            strategy = self.idle_strategy()
            idler = Idler(
                strategy,
                [m.ins[i].hdr for m, i in external],
                lambda: [m.ins[i].consumer_position for m, i in external],
                max_park_ns=SOURCE_PARK_NS
                if any(m.stage.source for m in self.members)
                else GROUP_PARK_NS,
            )
            # the compiled cycle spins inside numba (the strategy's spin phase); Python
            # idles after it
            spin_ns, yield_idle, park = HOT_IDLE[strategy]
            active = list(self.members)
            if keeper is not None:
                keeper.start()
            # members that stopped but still read feedback from running members (trail)
            trailing = []
            idle_iter = 0
            last_py = 0
            while active or trailing:
                work = 0
                steps = True
                reason = None
                compiled = (
                    hot is not None
                    and not self.local_stop
                    and len(active) == len(self.members)
                    and hot.ready()
                )
                if compiled:
                    try:
                        reason, work = hot.run(spin_ns, yield_idle, time.monotonic_ns(), park)
                    except Exception as exc:
                        log.error(
                            "group %s: compiled duty cycle of %s failed: %s: %s",
                            g.name,
                            ", ".join(m.spec.name for m in self.members),
                            type(exc).__name__,
                            exc,
                        )
                        raise
                    now = time.monotonic_ns()
                    # a housekeeping round (deadline, idle) leaves the inputs to the next
                    # compiled call; a bail, a state change or risk's queued CANCEL_ALLs
                    # run the members' steps
                    steps = reason in (R_BAIL, R_STATE, R_PENDING)
                    if reason in (R_BAIL, R_PENDING):
                        work += 1  # a member wants its Python step now, not after idling
                    elif reason == R_IDLE and now - last_py < HOUSEKEEP_NS:
                        # the members' Python round (housekeeping, pending records, drain)
                        # runs at the compiled cycle's deadline (hotloop.HOUSEKEEP_NS, the
                        # tail it puts on tick-to-order is explained there), not per idle
                        continue
                    last_py = now
                if hot is not None:
                    hot.to_python()
                for m in tuple(active):
                    m.local_stop = self.local_stop
                    try:
                        n = m.cycle(steps)
                        if n < 0:
                            m.finish()
                            active.remove(m)
                            if not self.local_stop and m.feeds_back_from(
                                {a.spec.name for a in active}
                            ):
                                trailing.append(m)
                            else:
                                m.stopped()
                        else:
                            work += n
                    except BaseException as exc:
                        if not isinstance(exc, KeyboardInterrupt | SystemExit):
                            log.error(
                                "group %s: member %s failed: %s: %s",
                                g.name,
                                m.spec.name,
                                type(exc).__name__,
                                exc,
                            )
                        raise
                for m in tuple(trailing):
                    try:
                        n = m.trail({a.spec.name for a in active})
                    except Exception as exc:
                        log.error("group %s: member %s failed: %s: %s",
                                  g.name, m.spec.name, type(exc).__name__, exc)  # fmt: skip
                        raise
                    if n < 0:
                        trailing.remove(m)
                        m.stopped()
                    else:
                        work += n
                # the compiled cycle idles by itself (HOT_IDLE), except when it came back
                # for the pipeline state: while STARTING (seconds, as other stages load
                # their kernels) it returns after every round, and without this idle the
                # group spun through Python rounds on its core (3294 returns in a second)
                if work or (compiled and reason != R_STATE):
                    idle_iter = 0
                    continue
                idler.idle(idle_iter)
                idle_iter += 1
            if hot is not None:
                log.info(
                    "group %s: compiled duty cycle read %d records in %d calls (returns: "
                    "%d deadline, %d state, %d idle, %d bail, %d pending)",
                    g.name, hot.records, hot.calls, *hot.reasons,
                )  # fmt: skip
            self.notifier.send("STOPPING=1")
            return 0
        except BaseException:
            for m in self.members:
                if int(m.blk[C.S_STATE]) != C.STAGE_STOPPED:
                    m.fail()
            raise
        finally:
            if keeper is not None:
                keeper.stop()
            for m in started:
                m.close()
