"""A stage's named counters in its control block (``bot4.shm.control``): declared once,
values at housekeeping, read back by ``bot4 stats`` and the exporter."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.ops_stats_view import _render_counters
from bot4.shm import control as C
from bot4.stages.md_gateway import MdGatewayStage
from bot4.stages.order_gateway import OrderGatewayStage
from bot4.stages.orders import OrdersStage


def block() -> np.ndarray:
    return np.zeros(C.STAGE_WORDS, np.uint64)


def test_counters_round_trip_in_declared_order():
    b = block()
    assert C.read_counters(b) == {}
    C.write_counter_names(b, ("packets", "session_resets", "gaps"))
    assert C.read_counters(b) == {"packets": 0, "session_resets": 0, "gaps": 0}
    C.write_counter_values(b, [7, 2**40, 3])
    assert C.read_counters(b) == {"packets": 7, "session_resets": 2**40, "gaps": 3}
    assert list(C.read_counters(b)) == ["packets", "session_resets", "gaps"]


def test_counters_stay_clear_of_the_cursor_buffers_and_the_block():
    assert C.S_CURSOR_B + C.CURSOR_WORDS <= C.S_COUNTERS_N
    assert C.S_COUNTER_NAMES + 2 * C.MAX_COUNTERS <= C.S_COUNTER_VALUES
    assert C.S_COUNTER_VALUES + C.MAX_COUNTERS <= C.STAGE_WORDS


def test_too_many_or_too_long_names_are_refused():
    with pytest.raises(ValueError, match="at most"):
        C.write_counter_names(block(), [f"c{i}" for i in range(C.MAX_COUNTERS + 1)])
    with pytest.raises(ValueError, match="longer than 16"):
        C.write_counter_names(block(), ["a_name_of_17_byte"])


@pytest.mark.parametrize("kind", [MdGatewayStage, OrderGatewayStage, OrdersStage])
def test_gateways_declare_counters_that_fit(kind):
    names = kind.counter_names
    assert 0 < len(names) <= C.MAX_COUNTERS and len(set(names)) == len(names)
    C.write_counter_names(block(), names)


def test_counters_render_under_the_stage_within_the_table_width():
    lines = _render_counters({f"counter_{i:02d}": 10**i for i in range(12)})
    assert len(lines) > 1 and all(len(ln) <= 100 for ln in lines)
    assert all(ln.startswith(" " * 13) for ln in lines)
    assert "counter_03 1,000" in " ".join(lines)


def test_counters_reach_stats_json_table_and_exporter(instance):
    """A stage block's counters, written as the stage's loop writes them, are read
    (PROT_READ) by bot4 stats' snapshot, its table and the exporter."""
    from prometheus_client.parser import text_string_to_metric_families

    from bot4.ops_metrics import Exporter
    from bot4.ops_stats import snapshot
    from bot4.ops_stats_view import render
    from bot4.shm import metrics as M
    from bot4.shm.segment import Segment, instance_segments

    C.create_control(instance, 2, created_ns=1, session=1)
    M.create_metrics(instance, None, ["md_gateway", "sink"])
    try:
        cb = C.ControlBlock(instance)
        C.write_counter_names(cb.stage(0), ("gaps", "requests"))
        C.write_counter_values(cb.stage(0), [3, 5])
        cb.close()
        snap = snapshot(instance)
        by_name = {s["name"]: s["counters"] for s in snap["stages"]}
        assert by_name == {"md_gateway": {"gaps": 3, "requests": 5}, "sink": {}}
        assert "gaps 3  requests 5" in render(snap)
        body, _ = Exporter(instance).metrics(None)
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        got = {(s.labels["stage"], s.labels["counter"]): s.value
               for s in fams["bot4_stage_counter"].samples}  # fmt: skip
        assert got == {("md_gateway", "gaps"): 3, ("md_gateway", "requests"): 5}
    finally:
        for n in instance_segments(instance):
            Segment.unlink(n)
