"""Create and destroy every segment of a topology: its rings and its control block.

Used by the launcher (``bot4 run``) and by ``bot4 shm create|destroy|ls`` (the oneshot
``bot4-shm.service`` under systemd). Creation is all-or-nothing: on any error the
segments created so far are unlinked again.

Creation claims the instance first: the control block is created before anything else
(``O_CREAT|O_EXCL``: of two creators, exactly one gets it), with its creator's pid and
start time. When the control block already exists, the instance's recorded owners decide
(:func:`running_owners`: the creator, the supervisor, every stage process, each a pid *and*
a start time, :mod:`bot4.shm.owners`):

* an owner is alive: the instance runs, and creation is refused with
  :class:`InstanceRunningError`, which names the live processes and says how to stop them
  (never to destroy the segments: that would pull the rings from under a running pipeline);
* no owner is alive (a supervisor SIGKILLed, a host whose stages all crashed): the dead
  instance's control block is retired (renamed away atomically, then unlinked, so two
  creators racing for the same dead instance cannot both win), the new one is created, and
  every other segment of the instance left by the dead run is unlinked before its
  replacement is created — one line says so;
* a name belongs to another user: refused (:class:`~bot4.shm.segment.ForeignSegmentError`),
  never used, never removed.

Stages of a supervised run die with their supervisor (``PR_SET_PDEATHSIG``), a few
milliseconds after it: when the supervisor is dead and only such stages are still alive,
creation waits up to ``STAGE_EXIT_WAIT_S`` for them to go before it calls the instance
running.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import numpy as np

from bot4.paths import next_session
from bot4.records import RECORD_TYPE_IDS, RECORD_TYPES
from bot4.records.errors import Bot4Error, Code
from bot4.shm import Segment, create_ring, segment_name
from bot4.shm import control as C
from bot4.shm.control import CONTROL_SEGMENT, create_control
from bot4.shm.metrics import create_metrics
from bot4.shm.owners import Owner
from bot4.shm.segment import (
    SHM_DIR,
    ForeignSegmentError,
    SegmentExistsError,
    SegmentMissingError,
    instance_segments,
    segment_owner,
)

STAGE_EXIT_WAIT_S = 5.0  # stages of a dead supervisor exit by PDEATHSIG within this
INCOMPLETE_WAIT_S = 1.0  # a control block without magic yet: its creator is mid-creation


class InstanceRunningError(Bot4Error):
    """Segments of the instance exist and a process that owns them is alive."""

    code = Code.OWNER_ALIVE


def _say(msg: str) -> None:
    print(f"bot4: {msg}", file=sys.stderr, flush=True)


def _read_owners(instance: str, stage_names: list[str] | None) -> tuple[list[Owner], int] | None:
    """``(owners, supervisor pid)`` recorded in ``instance``'s control block, None when it
    has none. Raises Bot4Error for a control block that is not bot4's."""
    name = segment_name(instance, CONTROL_SEGMENT)
    deadline = time.monotonic() + INCOMPLETE_WAIT_S
    while True:
        try:
            seg = Segment.attach(name, readonly=True, min_size=C.HEADER_BYTES)
        except SegmentMissingError:
            return None
        try:
            w = np.frombuffer(seg.buf, np.uint64)
            magic = int(w[C.W_MAGIC])
            result = (C.owners(w, stage_names), int(w[C.W_SUPERVISOR_PID]))
            del w
        finally:
            seg.close()
        if magic == C.MAGIC:
            return result
        if magic != 0:
            raise Bot4Error(
                f"segment {name}: not a bot4 control block; remove {SHM_DIR}{name} by hand "
                "once you know what made it",
                Code.BAD_MAGIC,
            )
        # no magic yet: a creator between O_EXCL and its last store, or one that died there
        creator = next((o for o in result[0] if o.role == "creator"), None)
        if creator is None or not creator.alive or time.monotonic() > deadline:
            return result
        time.sleep(0.01)


def running_owners(instance: str, stage_names: list[str] | None = None) -> list[Owner]:
    """The live processes recorded as owners of ``instance``'s segments; [] when it has no
    control block or every owner is dead (after waiting up to ``STAGE_EXIT_WAIT_S`` for the
    stages of a dead supervisor). Raises :class:`ForeignSegmentError` if the control block
    belongs to another user."""
    name = segment_name(instance, CONTROL_SEGMENT)
    uid = segment_owner(name)
    if uid is None:
        return []
    if uid != os.geteuid():
        raise ForeignSegmentError(name, uid)
    deadline = time.monotonic() + STAGE_EXIT_WAIT_S
    while True:
        got = _read_owners(instance, stage_names)
        if got is None:
            return []
        owners, supervisor_pid = got
        live = [o for o in owners if o.alive]
        heads = [o for o in live if not o.role.startswith("stage")]
        if heads or not live or not supervisor_pid or time.monotonic() > deadline:
            return live
        time.sleep(0.02)  # only stages of a dead supervisor: they are on their way out


def _running_message(instance: str, live: list[Owner]) -> str:
    heads = [o for o in live if not o.role.startswith("stage")]
    stages = len(live) - len(heads)
    who = ", ".join(str(o) for o in heads or live)
    if heads and stages:
        who += f", {stages} stage process{'es' if stages > 1 else ''}"
    return (
        f"instance {instance} is running ({who}): stop it first (SIGINT or SIGTERM to its "
        "supervisor; under systemd `systemctl stop bot4.target`), or give this one another "
        "--instance"
    )


def check_not_running(instance: str, stage_names: list[str] | None = None) -> None:
    """Raise :class:`InstanceRunningError` if ``instance`` has a live owner."""
    live = running_owners(instance, stage_names)
    if live:
        raise InstanceRunningError(_running_message(instance, live))


def _retire_control(instance: str) -> bool:
    """Move a dead instance's control block out of the way: rename it (atomic: of two
    creators retiring the same block one succeeds), then unlink it. False if it was gone."""
    name = segment_name(instance, CONTROL_SEGMENT)
    retired = f"{name}.dead{os.getpid()}"
    try:
        os.rename(SHM_DIR + name, SHM_DIR + retired)
    except FileNotFoundError:
        return False
    Segment.unlink(retired)
    return True


def _claim(topology, stage_names: list[str]) -> tuple[str, str | None]:
    """Create the control block of ``topology``'s instance, retiring a dead one first:
    ``(name, the dead run's owners or None)``."""
    inst = topology.instance
    dead = None
    for _ in range(8):
        live = running_owners(inst, stage_names)
        if live:
            raise InstanceRunningError(_running_message(inst, live))
        got = _read_owners(inst, stage_names)
        if got is not None:
            heads = [o for o in got[0] if not o.role.startswith("stage")] or got[0][:3]
            if _retire_control(inst):
                dead = ", ".join(str(o) for o in heads) or "no owner recorded"
        try:
            create_control(inst, len(topology.stages), time.monotonic_ns(), next_session(inst))
        except SegmentExistsError:
            continue  # another creator got there first: judge it on the next pass
        return segment_name(inst, CONTROL_SEGMENT), dead
    raise InstanceRunningError(f"instance {inst}: its control block keeps being recreated")


def _sweep(instance: str, keep: str) -> int:
    """Unlink the instance's segments other than ``keep`` that are ours (left by a dead
    run: the live owner of an instance holds its control block, and that is us now).
    Another user's are left alone; creating one of their names is refused later."""
    gone = 0
    for name in instance_segments(instance):
        if name != keep and segment_owner(name) == os.geteuid() and Segment.unlink(name):
            gone += 1
    return gone


def create_segments(topology, say: Callable[[str], None] | None = None) -> list[str]:
    """Create every segment of ``topology`` (control block first, see the module doc);
    ``say`` gets the one-line notice when a dead instance's segments are replaced (default:
    stderr). Returns the names. InstanceRunningError if the instance runs."""
    say = say or _say
    names = [s.name for s in topology.stages]
    control, dead = _claim(topology, names)
    made: list[str] = [control]
    try:
        stale = _sweep(topology.instance, control) + (dead is not None)
        if stale:
            say(
                f"instance {topology.instance}: {stale} segments left by a dead run "
                f"({dead or 'no control block'}, gone) are replaced"
            )
        for r in topology.rings:
            name = segment_name(topology.instance, r.name)
            create_ring(
                name,
                RECORD_TYPES[r.type],
                r.capacity,
                wait=r.wait,
                backpressure=r.backpressure,
                record_type=RECORD_TYPE_IDS[r.type],
            )
            made.append(name)
        made += _risk_segments(topology)
        made.append(
            create_metrics(
                topology.instance, metrics_recorder(topology), names, risk_panel_writer(topology)
            )
        )
    except BaseException:
        for name in made:
            Segment.unlink(name)
        raise
    return made


def metrics_recorder(topology) -> int | None:
    """Index of the stage that records the metrics segment (``bot4.shm.metrics``): the
    first whose kind records metrics and that reads orders, executions or decisions."""
    from bot4.stages import KINDS

    flow = {"ORDER", "EXEC_REPORT", "RISK_DECISION"}
    for s in topology.stages:
        if getattr(KINDS.get(s.kind), "records_metrics", False) and any(
            r.type in flow for r in topology.inputs_of(s.name)
        ):
            return s.index
    return None


def risk_panel_writer(topology) -> int | None:
    """Index of the stage that publishes the metrics segment's risk panel: the first whose
    kind says it does with its params (a shared risk stage)."""
    from bot4.stages import KINDS

    for s in topology.stages:
        if KINDS[s.kind].publishes_risk_panel(s.params):
            return s.index
    return None


def _risk_segments(topology) -> list[str]:
    """The instance-wide segments beyond the rings (breakers, trading states and the
    operator log when a shared risk stage runs): made by the first stage whose kind makes
    any (``Stage.create_shared_segments``)."""
    from bot4.stages import KINDS

    for s in topology.stages:
        made = KINDS[s.kind].create_shared_segments(s.params, topology.instance)
        if made:
            return made
    return []


def destroy_segments(instance: str) -> list[str]:
    """Unlink every segment of ``instance``; returns the names removed. The caller decides
    whether the instance may go (``bot4 shm destroy`` checks :func:`running_owners`)."""
    gone = []
    for name in instance_segments(instance):
        if Segment.unlink(name):
            gone.append(name)
    return gone
