"""Create and destroy every segment of a topology: its rings and its control block.

Used by the launcher (``bot4 run``) and by ``bot4 shm create|destroy|ls`` (the oneshot
``bot4-shm.service`` under systemd). Creation is all-or-nothing: on any error the
segments created so far are unlinked again.
"""

from __future__ import annotations

import time

from bot4.paths import next_session
from bot4.records import RECORD_TYPE_IDS, RECORD_TYPES
from bot4.shm import Segment, create_ring, segment_name
from bot4.shm.control import CONTROL_SEGMENT, create_control
from bot4.shm.segment import instance_segments


def create_segments(topology) -> list[str]:
    made: list[str] = []
    try:
        for r in topology.rings:
            name = segment_name(topology.instance, r.name)
            create_ring(
                name,
                RECORD_TYPES[r.type],
                r.capacity,
                wait=r.wait,
                backpressure=r.backpressure,
                record_type=RECORD_TYPE_IDS[r.type],
            )
            made.append(name)
        create_control(
            topology.instance,
            len(topology.stages),
            time.monotonic_ns(),
            next_session(topology.instance),
        )
        made.append(segment_name(topology.instance, CONTROL_SEGMENT))
        made += _risk_segments(topology)
    except BaseException:
        for name in made:
            Segment.unlink(name)
        raise
    return made


def _risk_segments(topology) -> list[str]:
    """Breakers, trading states and the operator log, when a shared risk stage runs."""
    for s in topology.stages:
        if s.kind == "risk" and s.params.get("shared", True):
            from bot4.risk import create_risk_segments
            from bot4.risk.limits import RiskLimits
            from bot4.shm.operator_log import create_operator_log
            from bot4.stages.risk import limits_params

            lim = RiskLimits.from_params(limits_params(s.params))
            made = create_risk_segments(
                topology.instance, len(lim.breakers), max(lim.instrument_table().ids), lim.breakers
            )
            made.append(create_operator_log(topology.instance))
            return made
    return []


def destroy_segments(instance: str) -> list[str]:
    """Unlink every segment of ``instance``; returns the names removed."""
    gone = []
    for name in instance_segments(instance):
        if Segment.unlink(name):
            gone.append(name)
    return gone
