"""Who else runs on a core that one bot4 process has to itself.

A core the topology gives to a single process (the hot group, or a dedicated stage) is only
as quiet as the host keeps it. A task that may run anywhere and wakes there takes the core
for its whole run time: the group idles with ``sched_yield`` (or parks), so the waking task
gets the core at once and a tick waits behind it. On the 2-core VM, DAMON's ``kdamond.0``
and the host's agent process put 2-4 ms on the tick-to-order p99.9 this way; moved off
the group's core, 0.2 ms (docs/hotpath.md, docs/systemd.md).

:func:`sample` reads every task's CPU time, last CPU and affinity from ``/proc``;
:func:`sharers` compares two samples: the tasks that used CPU in between, last ran on the
core, and could have run elsewhere (more than one core in their affinity: per-CPU kernel
threads, bound to that core, are not the operator's to move), bot4's own processes
excluded. The supervisor samples at ``running`` and a few seconds later and logs one
warning per shared core (``core_shared``); nothing is moved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One process (``pid``) as ``/proc`` shows it: ``comm``, CPU time used (ns, all its
    threads), the CPU it last ran on, its parent, its affinity."""

    pid: int
    comm: str
    ticks: int
    cpu: int
    ppid: int
    affinity: frozenset[int]


def _read(pid: int) -> Task | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
        aff = frozenset(os.sched_getaffinity(pid))
        try:  # CPU time in ns (stat's utime + stime count 10 ms ticks: a 2 ms wake is 0)
            with open(f"/proc/{pid}/schedstat", "rb") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            ns = -1
    except OSError:  # gone meanwhile, or not ours to read
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    # after comm: state ppid ...; utime, stime are stat's 14th and 15th fields (rest[11],
    # rest[12]), processor its 39th (rest[36])
    if ns < 0:
        ns = (int(rest[11]) + int(rest[12])) * 10_000_000
    return Task(pid, comm, ns, int(rest[36]), int(rest[1]), aff)


def sample() -> dict[int, Task]:
    """Every process of the host, by pid (a few ms for a few hundred)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (t := _read(int(name))) is not None:
            out[t.pid] = t
    return out


def descendants(tasks: dict[int, Task], root: int) -> set[int]:
    """``root`` and every process below it (bot4's supervisor: its zygote, its stages)."""
    children: dict[int, list[int]] = {}
    for t in tasks.values():
        children.setdefault(t.ppid, []).append(t.pid)
    seen, stack = set(), [root]
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(children.get(p, ()))
    return seen


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
        used = t.ticks - b.ticks
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
    own = descendants(after, own_root)
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
