"""Checks of what a topology's stages point at (data files, parameter files), made before
any segment exists: :func:`validate_topology` and its :class:`ValidationNotes`."""

from __future__ import annotations

from bot4.pipeline.topology import Topology
from bot4.pipeline.topology_tables import TopologyError, unusable


class ValidationNotes(list):
    """:func:`validate_topology`'s notes (strings, to print), and ``bad_input``: stage name
    -> the counts by reason of its recorded input (``BadInputReport.as_dict()``, as
    ``bot4 replay``'s report has them), for each input that loaded with rows kept out."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_input: dict[str, dict] = {}


def validate_topology(t: Topology) -> ValidationNotes:
    """Check what every stage's params point at (data files, parameter files) before any
    segment exists; the first problem is a :class:`TopologyError`
    ``FILE: stage NAME: params.KEY: REASON``. Called by the commands that start stages.
    Returns the notes the stages' checks made (``stage NAME: bad input: ...`` when a
    recorded input loads with rows kept out), for the command to print once."""
    from bot4.stages import KINDS
    from bot4.stages.base import ParamError

    notes = ValidationNotes()
    for s in t.stages:
        try:
            note = KINDS[s.kind].validate(s.params)
        except ParamError as exc:
            raise TopologyError(t.source, f"stage {s.name}: params.{exc.key}", exc.reason) from None
        except Exception as exc:  # a file or value the kind's checks did not expect
            raise TopologyError(t.source, f"stage {s.name}: params", unusable(exc)) from None
        if isinstance(note, str):
            notes.append(f"stage {s.name}: {note}")
            report = getattr(note, "report", None)
            if report is not None:
                notes.bad_input[s.name] = report.as_dict()
    return notes
