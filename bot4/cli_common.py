"""What the ``bot4`` command's handler modules share (:mod:`bot4.cli`,
:mod:`bot4.cli_pipeline`, :mod:`bot4.cli_ops`): the one-line usage error, loading the
topology a command names and saying its notes, the instance an operator command acts on.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from bot4.cli_support import EXIT_USAGE


def _usage(message: str) -> NoReturn:
    """A bad combination of arguments argparse cannot express: one line, exit 2."""
    print(f"bot4: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _load(path, instance, *, validate: bool = False):
    """The topology; ``validate``: also check the files its stages' params name (the
    commands that start stages do, before any segment exists)."""
    from bot4.pipeline.topology import load_topology
    from bot4.pipeline.validate import validate_topology

    t = load_topology(path, instance=instance)
    if validate:
        _say_notes(validate_topology(t))
    return t


def _say_notes(notes: list[str]) -> None:
    """What the topology's checks noted (an input loaded with bad rows kept out: the same
    ``bad input:`` line ``bot4 replay`` prints), once, before anything starts."""
    for note in notes:
        print(f"bot4: warning: {note}", file=sys.stderr, flush=True)


def _instance_of(args) -> str:
    return args.instance or _load(args.topology, None).instance
