"""Which loop runs a stage's process: the stage loop's dedicated or group mode
(:func:`loop_main`: ``bot4.stages.loop``, ``bot4.stages.group``), or the kind's own
(a kind with ``Stage.event_loop``: the gateways' uvloop driver, :mod:`bot4.stages.loop_async`)."""

from __future__ import annotations

import logging
import signal
import sys

from bot4 import logs
from bot4.shm.segment import ShmError
from bot4.stages.group import GroupRunner
from bot4.stages.loop import StageRunner
from bot4.stages.loop_async import gateway_main
from bot4.stages.process import apply_process_settings

log = logging.getLogger("bot4.stage")


def stage_main(topology, name: str) -> int:
    """Process body of stage or group ``name`` (the supervisor's child, ``bot4 stage``)."""
    from bot4.stages import KINDS

    logs.configure_process(topology, name)  # one configuration, whichever loop runs
    _say_when_cold(name)
    group = topology.group(name)
    if group is None:
        if KINDS[topology.stage(name).kind].event_loop:
            return gateway_main(topology, name)
    else:
        own = [m for m in group.members if KINDS[topology.stage(m).kind].event_loop]
        if own:
            print(f"bot4: error: group {name}: stage {own[0]} runs its own event loop "
                  "and cannot share a process", file=sys.stderr)  # fmt: skip
            return 2
    return loop_main(topology, name)


def loop_main(topology, name: str) -> int:
    """Process body of one stage or one group of stages (spawned by the supervisor or run
    by ``bot4 stage NAME``, NAME a stage or a group)."""
    logs.configure_process(topology, name)  # $BOT4_LOG_*, then the topology's [log]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to coordinate
    group = topology.group(name)
    if group is not None:
        runner = GroupRunner(topology, group)
        spec = group
    else:
        runner = StageRunner(topology, name)
        spec = runner.spec
    signal.signal(signal.SIGTERM, lambda *_: setattr(runner, "local_stop", True))
    for w in apply_process_settings(spec):
        log.warning(w)
    try:
        return runner.run()
    except ShmError as exc:  # a damaged or foreign segment: one line, no traceback
        logs.log_event(log, logging.ERROR, "stage_failed", "%s: %s", name, exc, stage=name)
        return 4
    except ModuleNotFoundError as exc:
        from bot4.extras import missing_extra

        line = missing_extra(exc)
        if line is None:
            log.exception(
                "%s failed", name, extra={"event": "stage_failed", "fields": {"stage": name}}
            )
            return 1
        logs.log_event(log, logging.ERROR, "stage_failed", "%s: %s", name, line, stage=name)
        return 1
    except Exception:
        # anything else: one ERROR record that carries the traceback (one JSON line, one
        # journal entry at priority 3), exit 1 as an uncaught exception would; the
        # supervisor's restart policy takes it from there
        log.exception("%s failed", name, extra={"event": "stage_failed", "fields": {"stage": name}})
        return 1


def _say_when_cold(name: str) -> None:
    """One warning line at the process's first numba compile (a kernel not in the cache:
    seconds to minutes before the stage runs), naming what it compiles."""
    import logging

    from bot4 import nbcache
    from bot4.logs import log_event

    log = logging.getLogger("bot4.stage")
    nbcache.notice_cold(lambda msg: log_event(log, logging.WARNING, "numba_cold", f"{name}: {msg}"))
