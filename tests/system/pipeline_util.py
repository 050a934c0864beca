"""Helpers for pipeline system tests: topologies, the sink log, the bot4 process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bot4.shm import Segment, segment_name
from bot4.shm import control as C

BOT4 = [sys.executable, "-m", "bot4"]


class LoggedPopen(subprocess.Popen):
    """A process whose stdout and stderr go to a file (``log_path``, under the test's
    tmp_path), never to a pipe: a pipe nobody reads until the end holds 64 KiB, and past
    that every stage's next log line blocks in ``write`` — the gateway that logs each
    broken trade stopped heartbeating and was killed, a flow stopped for good. The file
    also outlives a failed test: the conftest hook prints the tail of every ``*.log`` in
    tmp_path with the failure. ``communicate`` waits and returns ``(output, None)``."""

    def __init__(self, args, log_path: Path, **kw) -> None:
        for key in ("stdout", "stderr", "text"):
            kw.pop(key, None)
        path = Path(log_path)
        n = 1
        while path.exists():  # a second run in one test keeps the first one's log
            n += 1
            path = Path(log_path).with_name(f"{Path(log_path).stem}-{n}.log")
        self.log_path = path
        with open(path, "wb") as out:  # the child keeps its own descriptor
            super().__init__(args, stdout=out, stderr=subprocess.STDOUT, **kw)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def communicate(self, input=None, timeout=None):  # noqa: A002 - Popen's own signature
        self.wait(timeout)
        return self.log_text(), None


def chain_topology(
    instance, *, count=0, rate=0, hb=5.0, spin_us=0, wait="park", capacity=4096, batch=256, a_core=1
):
    """source -> a -> b -> sink, the sink logging into instance ``<instance>x``."""
    return f"""
instance = "{instance}"

[[stage]]
name = "src"
kind = "test-source"
core = 0
batch = {batch}
params = {{ count = {count}, rate = {rate} }}

[[stage]]
name = "a"
kind = "relay"
core = {a_core}
heartbeat_timeout = {hb}
batch = {batch}
params = {{ spin_us = {spin_us} }}

[[stage]]
name = "b"
kind = "relay"
core = 0
batch = {batch}

[[stage]]
name = "sink"
kind = "test-sink"
core = 1
batch = {batch}
params = {{ log = "sink", log_instance = "{instance}x" }}

[[ring]]
name = "r1"
from = "src"
to = "a"
type = "market_data"
capacity = {capacity}
wait = "{wait}"

[[ring]]
name = "r2"
from = "a"
to = "b"
type = "market_data"
capacity = {capacity}
wait = "{wait}"

[[ring]]
name = "r3"
from = "b"
to = "sink"
type = "market_data"
capacity = {capacity}
wait = "{wait}"
"""


class SinkLog:
    """The sink's log segments, in instance ``<instance>x`` (outlives the pipeline's)."""

    def __init__(self, instance: str, words: int) -> None:
        self.names = [
            segment_name(instance + "x", "sink"),
            segment_name(instance + "x", "sink-lat"),
        ]
        for n in self.names:
            Segment.unlink(n)
            Segment.create(n, words * 8).close()
        self.seg = Segment.attach(self.names[0], readonly=True)
        self.words = np.frombuffer(self.seg.buf, np.uint64)

    @property
    def count(self) -> int:
        return int(self.words[0])

    def ids(self) -> np.ndarray:
        n = self.count
        return self.words[1 : 1 + n].copy()

    def latencies(self) -> np.ndarray:
        seg = Segment.attach(self.names[1], readonly=True)
        arr = np.frombuffer(seg.buf, np.uint64)[1 : 1 + self.count].copy()
        seg.close()
        return arr

    def wait_for(self, n: int, timeout: float, proc=None) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"pipeline exited with {proc.returncode} after {self.count} records"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"sink saw {self.count} of {n} records within {timeout} s")
            time.sleep(0.02)

    def close(self) -> None:
        self.words = None
        self.seg.close()
        for n in self.names:
            Segment.unlink(n)


def start_pipeline(tmp_path: Path, text: str, procs, *extra: str) -> subprocess.Popen:
    topo = tmp_path / "topology.toml"
    topo.write_text(text)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = LoggedPopen(
        [*BOT4, "run", str(topo), "--quiet", "--report", str(tmp_path / "report.json"), *extra],
        tmp_path / "pipeline.log",
        env=env,
        start_new_session=True,
    )
    p.group = True
    procs.add(p)
    return p


def stage_block(instance: str, index: int) -> dict:
    cb = C.ControlBlock(instance, readonly=True)
    b = cb.stage(index)
    out = {
        "pid": int(b[C.S_PID]),
        "state": int(b[C.S_STATE]),
        "restarts": int(b[C.S_RESTARTS]),
        "heartbeat_ns": int(b[C.S_HEARTBEAT_NS]),
        "records_out": int(b[C.S_RECORDS_OUT]),
    }
    del b
    cb.close()
    return out


def wait_running(instance: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cb = C.ControlBlock(instance, readonly=True)
        except Exception:
            time.sleep(0.05)
            continue
        st = cb.pipeline_state
        cb.close()
        if st == C.PIPE_RUNNING:
            return
        time.sleep(0.05)
    raise AssertionError(f"pipeline {instance} not running within {timeout} s")
