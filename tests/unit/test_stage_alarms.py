"""Stage alarms: raised from the stage's process into its control-block words, counted across
a restart of the stage within the session, shown (read-only) by ``bot4 stats``."""

from __future__ import annotations

from bot4.ops_stats import snapshot
from bot4.ops_stats_view import render
from bot4.records.errors import Code
from bot4.shm import control as C
from bot4.shm.segment import Segment, segment_name
from bot4.stages.alarms import StageAlarms


def test_alarms_count_per_stage_survive_a_restart_and_show_in_stats(instance) -> None:
    C.create_control(instance, 3, created_ns=1, session=1)
    try:
        a = StageAlarms(instance, 1)
        assert a.raise_alarm(Code.EXEC_ID_CONFLICT, 2) == 2
        a.close()
        again = StageAlarms(instance, 1)  # the stage restarted: the count goes on
        assert again.raise_alarm(Code.DB_RECONCILE_DIFFERENCE) == 3
        again.close()
        snap = snapshot(instance)
        rows = snap["stages"]
        assert [s["alarms"] for s in rows] == [0, 3, 0]
        assert rows[1]["alarm"] == "DB_RECONCILE_DIFFERENCE" and rows[0]["alarm"] == "-"
        flagged = [ln for ln in render(snap).splitlines() if "ALARM" in ln]
        assert len(flagged) == 1 and "3 ALARM DB_RECONCILE_DIFFERENCE" in flagged[0]
    finally:
        Segment.unlink(segment_name(instance, C.CONTROL_SEGMENT))


def test_without_a_control_block_alarms_are_counted_in_process(instance) -> None:
    a = StageAlarms(instance, 0)  # no segments: a stage driven by a test or a replay
    assert a.raise_alarm(Code.EXEC_ID_CONFLICT) == 1 and a.count == 1
    a.close()
    assert StageAlarms(instance, None).raise_alarm(Code.EXEC_ID_CONFLICT, 4) == 4
