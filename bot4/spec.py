"""What a topology declares and a stage is given: ``StageSpec``, ``RingSpec``, ``GroupSpec``.

Plain frozen dataclasses, below both :mod:`bot4.pipeline` (which parses topology files into
them, :mod:`bot4.pipeline.topology`) and :mod:`bot4.stages` (whose classes receive them),
so neither layer imports the other to name them. The topology file's keys, defaults and
checks are documented in :mod:`bot4.pipeline.topology`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot4.shm.ring_layout import WAIT_NAMES

__all__ = ["GroupSpec", "RingSpec", "StageSpec"]


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str
    core: int
    index: int
    wait: int = WAIT_NAMES["park"]
    heartbeat_timeout: float = 5.0
    realtime: bool = False
    priority: int = 50
    mlock: bool = False
    batch: int = 256
    params: dict = field(default_factory=dict)
    #: s an input may hold records, with room on every output, without its position
    #: moving, before the supervisor calls the stage stalled (``bot4.pipeline.liveness``)
    stall_timeout: float = 5.0
    start_timeout: float = 120.0  # s a (re)started process has to report running


@dataclass(frozen=True)
class RingSpec:
    name: str
    producer: str
    consumer: str
    type: str
    capacity: int
    wait: int
    backpressure: int
    feedback: bool


@dataclass(frozen=True)
class GroupSpec:
    """Stages that share one process and one core (see ``bot4.stages.group.GroupRunner``)."""

    name: str
    members: tuple[str, ...]
    core: int
    idle: str = "backoff"
    heartbeat_timeout: float = 5.0
    realtime: bool = False
    priority: int = 50
    mlock: bool = False
