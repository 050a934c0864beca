"""``bot4 stats`` runs beside its instance's supervisor: ``bot4 run`` moves itself off the
tick-to-order path's cores (``bot4.cli_pipeline.service_cores``), and a stats refresh
(a few ms of Python once a second) on the hot group's core holds up every tick that
arrives meanwhile. With no live supervisor (systemd units, a dead run) it stays put."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bot4.shm import Segment, segment_name
from bot4.shm import control as C
from bot4.shm.owners import process_start

CORES = sorted(os.sched_getaffinity(0))
PROBE = (
    "import json, os, sys; from bot4.cli_ops import _beside_supervisor; "
    "_beside_supervisor(sys.argv[1]); print(json.dumps(sorted(os.sched_getaffinity(0))))"
)


def _affinity_after(instance: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, instance], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores this process may use")
def test_stats_moves_to_the_supervisors_cores_and_only_while_it_lives():
    inst = f"statsaff{os.getpid()}"
    name = segment_name(inst, "control")
    Segment.unlink(name)
    C.create_control(inst, 1, time.monotonic_ns())
    sup = subprocess.Popen(["sleep", "60"])
    try:
        os.sched_setaffinity(sup.pid, {CORES[0]})  # a supervisor on its service core
        cb = C.ControlBlock(inst)
        cb.words[C.W_SUPERVISOR_PID] = sup.pid
        cb.words[C.W_SUPERVISOR_START] = process_start(sup.pid)
        assert _affinity_after(inst) == [CORES[0]]
        sup.kill()
        sup.wait(timeout=10)
        assert _affinity_after(inst) == CORES  # dead supervisor: left where it started
        cb.close()
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(timeout=10)
        Segment.unlink(name)
