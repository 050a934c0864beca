"""Stage kinds declare what the layers above ask of them (issue 13): the supervisor, the
segment launcher, the CLI and the topology ask the kind, never its name."""

from __future__ import annotations

from pathlib import Path

from bot4.paths import data_dir
from bot4.pipeline.topology import load_topology
from bot4.stages import KINDS


def test_every_kind_with_no_input_ring_is_a_source():
    # the supervisor's live line counts a source's records out; md was once left out
    for kind, cls in KINDS.items():
        assert cls.source == (cls.arity[1] == 0), kind
    assert KINDS["md"].source and KINDS["synthetic-md"].source


def test_the_risk_fills_are_journalled_by_persistence_through_exec_events():
    t = load_topology(None)
    twin = t.journalled_twin("fills")
    assert twin is not None
    ring, journal = twin
    assert ring.name == "exec_events" and ring.producer == "orders"
    assert journal == data_dir() / "journal" / t.instance
    assert t.journalled_twin("ticks") is None  # md writes ticks nowhere else
    assert t.journalled_twin("no-such-ring") is None


def test_journal_and_database_capabilities():
    p = KINDS["persistence"]
    assert p.journal_dir({"dir": "/x/j"}, "inst") == Path("/x/j")
    assert p.journal_dir({}, "inst") == data_dir() / "journal" / "inst"
    assert p.uses_database({}) and not p.uses_database({"database": False})
    for kind in ("md", "risk", "orders", "venue", "signals"):
        assert KINDS[kind].journal_dir({}, "inst") is None and not KINDS[kind].uses_database({})


def test_only_a_shared_risk_stage_makes_instance_segments():
    assert KINDS["risk"].create_shared_segments({"shared": False}, "never-created") == []
    assert KINDS["persistence"].create_shared_segments({}, "never-created") == []
