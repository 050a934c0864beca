"""Who else runs on a core that one bot4 process has to itself.

A core the topology gives to a single process (the hot group, or a dedicated stage) is only
as quiet as the host keeps it. A task that may run anywhere and wakes there takes the core
for its whole run time: the group idles with ``sched_yield`` (or parks), so the waking task
gets the core at once and a tick waits behind it. On the 2-core VM, DAMON's ``kdamond.0``
and the host's agent process put 2-4 ms on the tick-to-order p99.9 this way; moved off
the group's core, 0.2 ms (docs/hotpath.md, docs/systemd.md).

:func:`sample` reads every task's (thread's) last CPU, affinity and run time from
``/proc/<pid>/task/<tid>``;
:func:`sharers` compares two samples: the processes whose threads used CPU in between,
last ran on the core, and could have run elsewhere (more than one core in their affinity:
per-CPU kernel threads, bound to that core, are not the operator's to move), bot4's own
processes excluded. The supervisor samples at ``running`` and a few seconds later and logs one
warning per shared core (``core_shared``); nothing is moved.

:func:`pin_process` moves every thread of a process (the supervisor and the zygote to the
service cores): ``sched_setaffinity`` moves one thread only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Task:
    """One task (thread ``tid``) of process ``pid``: ``comm``, CPU time used (ns), the CPU
    it last ran on, its affinity. ``tid`` 0: the process's main thread (``tid == pid``)."""

    pid: int
    comm: str
    cpu_ns: int
    cpu: int
    affinity: frozenset[int]
    tid: int = 0


def _task(pid: int, tid: int) -> Task | None:
    """Thread ``tid`` of ``pid`` from ``/proc`` (``stat``: comm and the CPU it last ran on;
    ``schedstat``: run time in ns, where psutil's 10 ms ticks would count a kernel thread's
    2 ms wake-up as 0); None if it is gone or not ours to read."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read()
        with open(f"{base}/schedstat", "rb") as f:
            ns = int(f.read().split()[0])
        affinity = frozenset(os.sched_getaffinity(tid))
    except (OSError, ValueError, IndexError):
        return None
    comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
    fields = stat[stat.rindex(b")") + 2 :].split()
    try:
        cpu = int(fields[36])  # field 39, "processor"; fields[0] is field 3, "state"
    except (IndexError, ValueError):
        return None
    return Task(pid, comm, ns, cpu, affinity, tid)


def sample() -> dict[int, Task]:
    """Every task (thread) of the host we may read, by thread id (a few ms for a few
    hundred). Threads, not processes: a daemon's worker threads run where its idle main
    thread never does (the VM agent's ``tokio-rt-worker`` threads, 38 CPU-s in a run,
    while its main thread was pinned elsewhere)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for t in tids:
            task = _task(pid, int(t))
            if task is not None:
                out[task.tid] = task
    return out


def pin_process(pid: int, cores: set[int]) -> None:
    """Set the affinity of every thread of process ``pid`` (0: this one) to ``cores``.
    ``sched_setaffinity`` moves one thread: the process's other threads keep the mask they
    had, so a thread started before the move stays free to run on the hot core. A thread
    that ends meanwhile is skipped; an error on the main thread is raised."""
    pid = pid or os.getpid()
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]  # no /proc: the main thread only
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:
            if tid == pid:
                raise


def own_processes(root: int) -> set[int]:
    """``root`` and every process below it (bot4's supervisor: its zygote, its stages)."""
    try:
        return {root} | {c.pid for c in psutil.Process(root).children(recursive=True)}
    except psutil.Error:
        return {root}


def sharers(
    before: dict[int, Task], after: dict[int, Task], core: int, own: set[int]
) -> list[tuple[str, int, int]]:
    """``(comm, pid, CPU ns used)`` per process whose movable tasks used CPU between the
    two samples and last ran on ``core`` in either (its threads summed; the process's
    comm, else its busiest thread's), most CPU first; ``own`` pids excluded."""
    used: dict[int, int] = {}
    busiest: dict[int, tuple[int, str]] = {}
    for key, t in after.items():
        b = before.get(key)
        if b is None or t.pid in own or core not in t.affinity or len(t.affinity) < 2:
            continue
        ns = t.cpu_ns - b.cpu_ns
        if ns > 0 and core in (t.cpu, b.cpu):
            used[t.pid] = used.get(t.pid, 0) + ns
            if ns > busiest.get(t.pid, (0, ""))[0]:
                busiest[t.pid] = (ns, t.comm)
    out = []
    for pid, ns in used.items():
        main = after.get(pid)
        comm = main.comm if main is not None and main.tid in (0, pid) else busiest[pid][1]
        out.append((comm, pid, ns))
    return sorted(out, key=lambda x: -x[2])


#: CPU a task must have used on the core within the window to be named (less is noise:
#: RCU, a kworker's few µs)
MIN_NS = 1_000_000
#: how long after ``running`` the supervisor looks (start-up noise over)
WINDOW_S = 5.0


def report(topology, before: dict[int, Task], after: dict[int, Task], own_root: int) -> list[str]:
    """One line per exclusive core of ``topology`` that movable tasks shared between the
    samples (at most five named, most CPU first)."""
    own = own_processes(own_root)
    lines = []
    for core, what in sorted(exclusive_cores(topology).items()):
        found = [x for x in sharers(before, after, core, own) if x[2] >= MIN_NS]
        if found:
            names = ", ".join(f"{c} (pid {p}, {ns / 1e6:.1f} ms)" for c, p, ns in found[:5])
            lines.append(
                f"core {core} ({what}) is shared: {names} ran there; each run puts its "
                "length on the tick-to-order tail: move them off the core (docs/systemd.md)"
            )
    return lines


def exclusive_cores(topology) -> dict[int, str]:
    """The cores exactly one process of ``topology`` (a stage or a group) is pinned to,
    with what it is (``group hot``, ``stage md``)."""
    by_core: dict[int, list[str]] = {}
    for name, _members in topology.units():
        core = topology.unit_core(name)
        if core is None or core < 0:
            continue  # not pinned: nothing to keep quiet
        what = f"group {name}" if topology.group(name) is not None else f"stage {name}"
        by_core.setdefault(core, []).append(what)
    return {c: names[0] for c, names in by_core.items() if len(names) == 1}
