"""Shared fixtures: a unique pipeline instance per test, and the /dev/shm leak check.

Every test that creates segments takes ``instance``: a name no other test or run uses.
After the test, whatever happened, the fixture kills any process the test registered in
``procs`` (by pid), unlinks the instance's segments, and then fails the test if any had
been left behind. PostgreSQL's own segments (``PostgreSQL.*``) are never ours to check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import pytest

from bot4.shm.segment import Segment, instance_segments


class ProcessRegistry:
    """Processes a test started; each is ended by pid at teardown."""

    def __init__(self) -> None:
        self._procs: list = []

    def add(self, proc):
        self._procs.append(proc)
        return proc

    def end_all(self) -> None:
        for proc in self._procs:
            pid = getattr(proc, "pid", None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if getattr(proc, "group", False):  # a `bot4 run`: its stages share its group
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.join(5) if hasattr(proc, "join") else proc.wait(5)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    """Journals and other data of pipelines a test starts go under its own tmp dir."""
    monkeypatch.setenv("BOT4_DATA_DIR", str(tmp_path / "bot4-data"))


@pytest.fixture
def procs():
    reg = ProcessRegistry()
    yield reg
    reg.end_all()


@pytest.fixture
def instance(procs):
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    procs.end_all()
    leaked = instance_segments(name)
    for seg in leaked:
        Segment.unlink(seg)
    assert not leaked, f"test left shared-memory segments behind: {leaked}"
