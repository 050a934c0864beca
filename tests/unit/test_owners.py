"""Owners of an instance's segments: a process is its pid *and* its start time.

Outcomes allowed: a live process with its recorded start is alive; the same pid with
another start (a reused pid) is dead; a zombie is dead; a gone pid is dead. A control block
whose recorded owners are all dead has no running owners; one whose creator is alive has.
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np

from bot4.pipeline.segments import running_owners
from bot4.shm import control as C
from bot4.shm.owners import Owner, alive, process_start, self_start
from bot4.shm.segment import Segment, segment_name


def test_a_process_is_its_pid_and_its_start():
    me = os.getpid()
    assert process_start(me) == self_start() > 0
    assert alive(me, self_start())
    assert not alive(me, self_start() + 1)  # same pid, another process: pid reused
    assert Owner("x", me, self_start()).alive and not Owner("x", 0, 0).alive


def test_zombie_and_gone_processes_are_dead():
    p = subprocess.Popen(["true"])
    start = process_start(p.pid)
    deadline = time.monotonic() + 10
    while process_start(p.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not reaped: a zombie
    assert start is None or not alive(p.pid, start)
    p.wait()
    assert process_start(p.pid) is None


def test_control_block_owners_decide_whether_the_instance_runs(instance):
    C.create_control(instance, 2, time.monotonic_ns())
    seg = Segment.attach(segment_name(instance, C.CONTROL_SEGMENT))
    w = np.frombuffer(seg.buf, np.uint64)
    blk = None
    try:
        assert int(w[C.W_CREATOR_PID]) == os.getpid()
        live = running_owners(instance)
        assert [o.role for o in live] == ["creator"]
        w[C.W_CREATOR_START] = self_start() + 1  # the recorded creator is another process
        assert running_owners(instance) == []
        blk = w[(C.HEADER_BYTES + C.STAGE_BYTES) // 8 :]
        blk[C.S_PID_SEEN_START] = self_start()
        blk[C.S_PID_SEEN] = os.getpid()  # under systemd: a stage alive, no supervisor
        assert [o.role for o in running_owners(instance, ["a", "b"])] == ["stage b"]
    finally:
        del w, blk
        seg.close()
        Segment.unlink(segment_name(instance, C.CONTROL_SEGMENT))
