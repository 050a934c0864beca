"""Liveness verdicts from ring cursors (bot4.pipeline.liveness), observation by observation.

Outcomes allowed: a stage whose input holds records while its outputs have room and the
input does not move is *stuck*, timed from the first observation that saw it so; a stage
whose blocking output lacks ``max_out_per_in`` free slots is *blocked* (never stuck, and
time spent blocked never counts towards a stall); an input that moves is *moving*; empty
inputs are *idle*. The pipeline is stuck only when nothing moved, something is held and
every stage is ready.
"""

from __future__ import annotations

from bot4.pipeline.liveness import Cursor, ProgressWatch
from bot4.shm.control import LIVE_BLOCKED, LIVE_IDLE, LIVE_MOVING, LIVE_STUCK

CAP = 64


def watch(mo: int = 1) -> ProgressWatch:
    # src -> a (ring "in") ; a -> b (ring "out") ; a -> c (ring "rej", reject mode)
    return ProgressWatch(
        {"src": [], "a": ["in"], "b": ["out"], "c": ["rej"]},
        {"src": ["in"], "a": ["out", "rej"], "b": [], "c": []},
        {"src": 1, "a": mo, "b": 1, "c": 1},
    )


def cur(prod: int, cons: int, reject: bool = False) -> Cursor:
    return Cursor(prod, cons, CAP, reject)


def rings(inp=(0, 0), out=(0, 0), rej=(0, 0)) -> dict[str, Cursor]:
    return {"in": cur(*inp), "out": cur(*out), "rej": cur(*rej, reject=True)}


def test_input_with_records_that_does_not_move_is_stuck_from_the_first_look_that_saw_it():
    w = watch()
    v, _, _ = w.observe(rings(inp=(10, 0)), 0.0)
    assert v["a"].state == LIVE_MOVING  # first look: nothing to compare with
    v, _, _ = w.observe(rings(inp=(10, 0)), 1.0)
    assert (v["a"].state, v["a"].ring, v["a"].records, v["a"].since) == (LIVE_STUCK, "in", 10, 1.0)
    v, _, _ = w.observe(rings(inp=(12, 0)), 4.0)  # more records, still unread
    assert v["a"].state == LIVE_STUCK and v["a"].stuck_for(4.0) == 3.0 and v["a"].records == 12
    v, _, _ = w.observe(rings(inp=(12, 5)), 5.0)  # it read some: the clock starts again
    assert v["a"].state == LIVE_MOVING and v["a"].since is None
    v, _, _ = w.observe(rings(inp=(12, 5)), 6.0)
    assert v["a"].since == 6.0


def test_blocked_on_a_full_output_is_never_stuck_and_blocked_time_never_counts():
    w = watch()
    w.observe(rings(inp=(10, 0), out=(CAP, 0)), 0.0)
    for t in (1.0, 30.0, 60.0):
        v, _, _ = w.observe(rings(inp=(10, 0), out=(CAP, 0)), t)
        assert (v["a"].state, v["a"].ring, v["a"].records) == (LIVE_BLOCKED, "out", CAP)
    # room again, input still unread: stuck counts from now, not from when it last moved
    v, _, _ = w.observe(rings(inp=(10, 0), out=(CAP, 1)), 61.0)
    assert v["a"].state == LIVE_STUCK and v["a"].since == 61.0 and v["a"].stuck_for(62.5) == 1.5


def test_room_means_max_out_per_in_free_slots_and_a_reject_ring_never_blocks():
    w = watch(mo=8)
    w.observe(rings(inp=(10, 0), out=(CAP - 7, 0)), 0.0)
    v, _, _ = w.observe(rings(inp=(10, 0), out=(CAP - 7, 0)), 1.0)
    assert v["a"].state == LIVE_BLOCKED  # 7 free < 8 needed
    w.observe(rings(inp=(10, 0), out=(CAP - 8, 0), rej=(CAP, 0)), 2.0)
    v, _, _ = w.observe(rings(inp=(10, 0), out=(CAP - 8, 0), rej=(CAP, 0)), 3.0)
    assert v["a"].state == LIVE_STUCK  # 8 free is room; the full reject ring is not a block


def test_empty_inputs_are_idle_and_a_restart_resets_the_clock():
    w = watch()
    w.observe(rings(), 0.0)
    v, _, _ = w.observe(rings(), 1.0)
    assert v["a"].state == LIVE_IDLE and v["b"].state == LIVE_IDLE
    w.observe(rings(inp=(3, 0)), 2.0)
    v, _, _ = w.observe(rings(inp=(3, 0)), 3.0)
    assert v["a"].since == 3.0
    w.reset("a")
    v, _, _ = w.observe(rings(inp=(3, 0)), 4.0)
    assert v["a"].since == 4.0


def test_pipeline_is_stuck_only_when_nothing_moves_something_is_held_and_all_are_ready():
    w = watch()
    _, since, _ = w.observe(rings(inp=(5, 0)), 0.0)
    assert since is None  # no previous look
    _, since, held = w.observe(rings(inp=(5, 0)), 1.0)
    assert since == 1.0 and held == [("in", 5)]
    _, since, _ = w.observe(rings(inp=(5, 0)), 2.0, ready=False)  # a stage restarting
    assert since is None
    _, since, _ = w.observe(rings(inp=(5, 0)), 3.0)
    assert since == 3.0
    _, since, _ = w.observe(rings(inp=(5, 1)), 4.0)  # a ring moved
    assert since is None
    _, since, _ = w.observe(rings(inp=(5, 1)), 5.0, watched=["out", "rej"])  # empty rings
    assert since is None
    _, since, _ = w.observe(rings(), 6.0)
    _, since, held = w.observe(rings(), 7.0)
    assert since is None and held == []  # idle, not stuck


def test_stats_table_shows_the_verdicts():
    from bot4.ops_stats_view import render

    base = {
        "index": 0, "pid": 1, "core": 0, "state": "running", "heartbeat_age_ns": 1_000_000,
        "restarts": 0, "records_in": 0, "records_out": 0, "alarms": 0, "alarm": "-",
    }  # fmt: skip
    stages = [
        {**base, "liveness": "moving", "liveness_ring": "r1", "stuck_for_ns": None},
        {**base, "liveness": "blocked", "liveness_ring": "r2", "stuck_for_ns": None},
        {**base, "liveness": "stuck", "liveness_ring": "orders", "stuck_for_ns": 3_200_000_000},
        {**base, "liveness": "-", "liveness_ring": None, "stuck_for_ns": None},
    ]
    snap = {
        "instance": "t", "taken_ns": 0, "pipeline": "running", "stages": stages, "rings": [],
        "breakers": [], "trading": None, "pipeline_stuck_for_ns": 6_000_000_000,
    }  # fmt: skip
    text = render(snap, None, ["md", "risk", "orders", "venue"])
    lines = text.splitlines()
    assert "STUCK: no ring moved for 6.0 s" in lines[0]
    assert "moving" in lines[2] and "blocked>r2" in lines[3]
    assert "STUCK 3.2s<orders" in lines[4] and lines[5].split()[-1] == "-"
