"""Where `bot4 run` starts its embedded PostgreSQL and runs its supervisor (``bot4.cli_pipeline.service_cores``):
off the cores of the tick-to-order path, whose group it used to share on 2 cores (the
default run's tick-to-order p99 7.7 ms with the database unpinned, 0.28 ms pinned)."""

from __future__ import annotations

import os

import pytest

from bot4.cli_pipeline import service_cores
from bot4.pipeline.topology import load_topology


@pytest.fixture
def cpus(monkeypatch):
    def set_cpus(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))

    return set_cpus


def test_default_topology_on_two_cores_puts_the_database_beside_md_not_the_hot_group(cpus):
    cpus(2)
    t = load_topology(None)
    assert t.group("hot").core == 1
    assert service_cores(t) == {0}


def test_free_cores_are_preferred_to_any_stage_core(cpus):
    cpus(4)  # md, venue, persistence on 0, the hot group on 1: 2 and 3 run no stage
    assert service_cores(load_topology(None)) == {2, 3}


def test_only_hot_path_cores_allowed_leaves_the_database_unpinned(cpus, monkeypatch):
    cpus(2)
    t = load_topology(None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})  # the hot group's core
    assert service_cores(t) is None
