"""bot4.pipeline.corecheck: which movable tasks ran on a core one bot4 process has to
itself, and the supervisor's one-line warning about them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tomllib

import pytest

from bot4.pipeline import corecheck
from bot4.pipeline.corecheck import Task, exclusive_cores, sharers
from bot4.pipeline.topology import load_topology, parse_topology
from tests.system.pipeline_util import chain_topology


def _t(pid, ns, cpu, aff=(0, 1), comm="x"):
    return Task(pid, comm, ns, cpu, frozenset(aff))


def test_sharers_are_movable_tasks_that_used_cpu_on_the_core():
    before = {1: _t(1, 0, 1), 2: _t(2, 0, 1), 3: _t(3, 0, 1, aff=(1,)), 4: _t(4, 0, 0),
              5: _t(5, 0, 1), 6: _t(6, 0, 1)}  # fmt: skip
    after = {
        1: _t(1, 5_000_000, 1, comm="daemon"),  # ran on core 1, may run anywhere: named
        2: _t(2, 0, 1),  # used nothing
        3: _t(3, 9_000_000, 1, aff=(1,)),  # a per-CPU kernel thread: not the operator's
        4: _t(4, 9_000_000, 0),  # ran on core 0 only
        5: _t(5, 7_000_000, 1),  # bot4's own
        6: _t(6, 2_000_000, 0, comm="moved"),  # last on core 0 now, on core 1 before
        7: _t(7, 9_000_000, 1),  # not in the first sample
    }
    assert sharers(before, after, 1, own={5}) == [("daemon", 1, 5_000_000), ("moved", 6, 2_000_000)]


def test_exclusive_cores_are_those_one_process_is_pinned_to():
    # the default: md, venue and persistence share core 0; the hot group has core 1
    assert exclusive_cores(load_topology(None)) == {1: "group hot"}
    # the test chain: src and b on core 0, a on a_core, sink on core 1
    chain = tomllib.loads(chain_topology("x", a_core=3))
    got = exclusive_cores(parse_topology(chain, "t.toml", cpu_count=4))
    assert got == {1: "stage sink", 3: "stage a"}, got
    chain = tomllib.loads(chain_topology("x", a_core=1))  # a and sink share core 1
    assert exclusive_cores(parse_topology(chain, "t.toml", cpu_count=4)) == {}


def test_report_is_one_line_per_shared_exclusive_core_above_a_millisecond():
    topo = load_topology(None)  # core 1: the hot group's alone
    before = {10: _t(10, 0, 1), 11: _t(11, 0, 1)}
    after = {10: _t(10, 5_000_000, 1, comm="daemon"), 11: _t(11, 500_000, 1, comm="rcu")}
    lines = corecheck.report(topo, before, after, own_root=2**22 + 1)  # no such process
    assert len(lines) == 1 and lines[0].startswith(
        "core 1 (group hot) is shared: daemon (pid 10, 5.0 ms) ran there"
    ), lines
    assert corecheck.report(topo, before, before, own_root=2**22 + 1) == []


def _two_cores() -> tuple[int, int]:
    """(the core a task runs on, another one) of this process's; skips on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("this process may use one core only: no task here could be movable")
    return cores[-1], cores[0]


@contextlib.contextmanager
def _samples_around(code: str):
    """Run ``code`` (prints 'ready', waits for a line on stdin, works, prints 'ok'): the
    child and corecheck's samples before the line is sent and after 'ok'. The child is in
    the first sample because it is up and waiting (a fixed sleep lost that race under
    load); it is killed and reaped at the end."""
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline() == "ready\n"
        before = corecheck.sample()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == "ok\n"
        yield p, before, corecheck.sample()
    finally:
        p.kill()
        p.wait(10)


@pytest.mark.timeout(60)
def test_a_task_that_ran_on_the_core_is_reported_and_bot4s_own_are_not():
    core, other = _two_cores()
    # a task that exists at both samples: it waits for the first pinned to `core` (so its
    # last CPU there is `core`, whatever runs beside it), spins 50 ms on `core`, then may
    # run on either and sleeps (under load it may end on the other core: the first
    # sample's CPU is what makes it a sharer deterministically)
    code = (
        "import os, sys, time\n"
        f"os.sched_setaffinity(0, {{{core}}}); print('ready', flush=True)\n"
        "sys.stdin.readline(); t = time.monotonic()\n"
        "while time.monotonic() - t < 0.05: pass\n"
        f"os.sched_setaffinity(0, {{{other}, {core}}}); print('ok', flush=True)\n"
        "time.sleep(30)\n"
    )
    with _samples_around(code) as (p, before, after):
        named = sharers(before, after, core, own=set())
        assert p.pid in [pid for _c, pid, _ns in named], named
        # a child of the supervisor (here: of this process) is bot4's own, never named
        own = corecheck.own_processes(os.getpid())
        assert p.pid in own
        assert p.pid not in [pid for _c, pid, _ns in sharers(before, after, core, own)]


@pytest.mark.timeout(60)
def test_a_thread_that_ran_on_the_core_names_its_process_though_the_main_thread_did_not():
    # a daemon's worker threads run where its idle main thread never does (the VM agent's
    # tokio workers on the hot core while its main thread was pinned elsewhere)
    core, other = _two_cores()
    code = (
        "import os, sys, threading, time\n"
        f"os.sched_setaffinity(0, {{{other}}})  # the main thread only: never on `core`\n"
        "go, parked = threading.Event(), threading.Event()\n"
        "def work():\n"
        # waits pinned to `core`: its last CPU at the first sample is `core` (a thread
        # that waited movable could be migrated under load, and its second sample's CPU
        # may be either core once it is movable again)
        f"    os.sched_setaffinity(0, {{{core}}}); parked.set(); go.wait()\n"
        "    t = time.thread_time()\n"
        "    while time.thread_time() - t < 0.05: pass  # 50 ms of this thread's CPU\n"
        f"    os.sched_setaffinity(0, {{{other}, {core}}}); print('ok', flush=True)\n"
        "    time.sleep(30)\n"
        "th = threading.Thread(target=work, daemon=True); th.start()  # in the first sample\n"
        "parked.wait(); print('ready', flush=True)\n"
        "sys.stdin.readline(); go.set(); th.join()\n"
    )
    with _samples_around(code) as (p, before, after):
        assert after[p.pid].affinity == frozenset({other})  # the main thread
        named = {pid: (comm, ns) for comm, pid, ns in sharers(before, after, core, own=set())}
        assert p.pid in named, named
        assert named[p.pid][0] == after[p.pid].comm  # named as the process
        assert named[p.pid][1] >= 50_000_000, named[p.pid]  # the thread's 50 ms of spinning
