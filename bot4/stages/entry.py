"""Which loop runs a stage's process: the stage loop's dedicated or group mode
(:func:`bot4.stages.loop.stage_main`), or the kind's own (``Stage.process_main``: the
gateways' uvloop driver, :mod:`bot4.gateways.runner`)."""

from __future__ import annotations

import sys


def stage_main(topology, name: str) -> int:
    """Process body of stage or group ``name`` (the supervisor's child, ``bot4 stage``)."""
    from bot4 import logs
    from bot4.stages import KINDS
    from bot4.stages.loop import stage_main as loop_main

    logs.configure_process(topology, name)  # one configuration, whichever loop runs
    _say_when_cold(name)
    group = topology.group(name)
    if group is None:
        main = getattr(KINDS[topology.stage(name).kind], "process_main", None)
        if main is not None:
            return main(topology, name)
    else:
        own = [m for m in group.members if hasattr(KINDS[topology.stage(m).kind], "process_main")]
        if own:
            print(f"bot4: error: group {name}: stage {own[0]} runs its own event loop "
                  "and cannot share a process", file=sys.stderr)  # fmt: skip
            return 2
    return loop_main(topology, name)


def _say_when_cold(name: str) -> None:
    """One warning line at the process's first numba compile (a kernel not in the cache:
    seconds to minutes before the stage runs), naming what it compiles."""
    import logging

    from bot4 import nbcache
    from bot4.logs import log_event

    log = logging.getLogger("bot4.stage")
    nbcache.notice_cold(lambda msg: log_event(log, logging.WARNING, "numba_cold", f"{name}: {msg}"))
