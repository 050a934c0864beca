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
