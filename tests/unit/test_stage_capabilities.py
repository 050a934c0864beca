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


def _with(attr: str) -> set[str]:
    return {kind for kind, cls in KINDS.items() if getattr(cls, attr)}


def test_what_the_replay_harness_and_the_gateway_process_ask():
    # the replay's feed stands in for recorded-data sources, never for a network gateway
    assert _with("replay_feed") == {"md", "synthetic-md", "test-source"}
    assert _with("replay_feed") <= _with("source")
    assert _with("reads_recorded") == {"md"} and _with("reads_recorded") <= _with("replay_feed")
    assert _with("exchange") == {"venue"}
    assert _with("drains_last") == {"persistence"}
    assert _with("event_loop") == {"md_gateway", "order_gateway"}
    assert KINDS["signals"].routes_models({"model_slot": "s"})
    assert not KINDS["signals"].routes_models({})


def test_the_params_a_kind_runs_with_in_a_backtest():
    def rp(kind, params, deterministic):
        return KINDS[kind].replay_params(dict(params), "/out/journal", deterministic)

    assert rp("persistence", {"fsync": "batch"}, True) == {
        "fsync": "none", "dir": "/out/journal", "database": False,
    }  # fmt: skip
    assert rp("persistence", {"fsync": "batch"}, False) == {
        "fsync": "batch", "dir": "/out/journal", "database": False,
    }  # fmt: skip
    assert rp("venue", {"quote_fill": "touch"}, True) == {
        "quote_fill": "touch", "md_time": "event", "orders_stage_index": -1,
    }  # fmt: skip
    assert rp("venue", {}, False) == {"quote_fill": "trade_through"}
    assert rp("risk", {}, True) == {"shared": False} and rp("risk", {}, False) == {}
    assert rp("orders", {"x": 1}, True) == {"x": 1}


def test_warm_capabilities_name_kinds_and_parts_that_exist():
    from bot4.pipeline.warm.catalogue import PARTS, RING_TYPES

    for kind, cls in KINDS.items():
        if cls.warm_as:
            assert cls.warm_as in KINDS and not KINDS[cls.warm_as].warm_as, kind
        assert set(cls.warm_parts({"source": "lobster"})) <= PARTS.keys(), kind
        for ins, outs in cls.warm_shapes(tuple(RING_TYPES)):
            assert cls.check_arity(len(ins), len(outs), list(ins), list(outs)) is None, kind
    assert KINDS["persistence"].warm_as == "count-sink"
    assert KINDS["md"].warm_parts({}) == () and KINDS["persistence"].warm_parts({})
    assert _with("warm_split_inputs") == {"venue"}
