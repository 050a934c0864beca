"""Who else runs on a core that one bot4 process has to itself.

A core the topology gives to a single process (the hot group, or a dedicated stage) is only
as quiet as the host keeps it. A task that may run anywhere and wakes there takes the core
for its whole run time: the group idles with ``sched_yield`` (or parks), so the waking task
gets the core at once and a tick waits behind it. On the 2-core VM, DAMON's ``kdamond.0``
and the host's agent process put 2-4 ms on the tick-to-order p99.9 this way; moved off
the group's core, 0.2 ms (docs/hotpath.md, docs/systemd.md).

:func:`sample` reads every task's last CPU and affinity (psutil) and run time
(``/proc/<pid>/schedstat``);
:func:`sharers` compares two samples: the tasks that used CPU in between, last ran on the
core, and could have run elsewhere (more than one core in their affinity: per-CPU kernel
threads, bound to that core, are not the operator's to move), bot4's own processes
excluded. The supervisor samples at ``running`` and a few seconds later and logs one
warning per shared core (``core_shared``); nothing is moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Task:
    """One process (``pid``): ``comm``, CPU time used (ns, its main thread's), the CPU it
    last ran on, its affinity."""

    pid: int
    comm: str
    cpu_ns: int
    cpu: int
    affinity: frozenset[int]


def _cpu_ns(pid: int, fallback_s: float) -> int:
    """``/proc/<pid>/schedstat``'s run time (ns): psutil's CPU times count 10 ms ticks,
    in which a kernel thread's 2 ms wake-up is 0."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return int(fallback_s * 1e9)


def sample() -> dict[int, Task]:
    """Every process of the host we may read, by pid (a few ms for a few hundred)."""
    out = {}
    for p in psutil.process_iter(["name", "cpu_num", "cpu_affinity", "cpu_times"]):
        i = p.info
        if i["cpu_num"] is None or not i["cpu_affinity"]:
            continue  # gone meanwhile, or not ours to read
        t = i["cpu_times"]
        ns = _cpu_ns(p.pid, t.user + t.system if t is not None else 0.0)
        out[p.pid] = Task(p.pid, i["name"], ns, i["cpu_num"], frozenset(i["cpu_affinity"]))
    return out


def own_processes(root: int) -> set[int]:
    """``root`` and every process below it (bot4's supervisor: its zygote, its stages)."""
    try:
        return {root} | {c.pid for c in psutil.Process(root).children(recursive=True)}
    except psutil.Error:
        return {root}


def sharers(
    before: dict[int, Task], after: dict[int, Task], core: int, own: set[int]
) -> list[tuple[str, int, int]]:
    """``(comm, pid, CPU ns used)`` of the movable tasks that used CPU between the two
    samples and last ran on ``core`` in either, most CPU first; ``own`` pids excluded."""
    out = []
    for pid, t in after.items():
        b = before.get(pid)
        if b is None or pid in own or core not in t.affinity or len(t.affinity) < 2:
            continue
        used = t.cpu_ns - b.cpu_ns
        if used > 0 and core in (t.cpu, b.cpu):
            out.append((t.comm, pid, used))
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
