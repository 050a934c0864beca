"""Who waits for whom: the wait-for graph of a PostgreSQL server, and its cycles.

:func:`wait_graph` reads, in one snapshot per query, ``pg_stat_activity`` (sessions),
``pg_blocking_pids()`` (for each waiting session, the sessions it waits for) and ``pg_locks``
(the lock each waiter has requested and not been granted), cluster-wide. A blocker that is
a prepared transaction has no session: ``pg_blocking_pids`` reports it as pid 0, shown as
``prepared`` with the gids of the prepared transactions holding locks the waiter wants.

Edges go from waiter to blocker. A cycle is a deadlock in the making: PostgreSQL breaks it
by cancelling one member after ``deadlock_timeout`` (1 s by default), so an operator who
catches one sees which statements deadlock. Cycles are found with Tarjan's strongly
connected components (every component of two or more sessions, or a session waiting for
itself, holds a cycle; one cycle through it is reported).

Read-only: it only queries system views. Used by ``bot4 db locks``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

__all__ = ["Session", "WaitEdge", "WaitGraph", "find_cycles", "render", "wait_graph"]

PREPARED = 0  # pid pg_blocking_pids reports for a prepared transaction

_SESSIONS_SQL = """
SELECT a.pid, coalesce(a.usename, ''), coalesce(a.datname, ''), coalesce(a.application_name, ''),
       coalesce(a.state, ''), coalesce(a.wait_event_type, ''), coalesce(a.wait_event, ''),
       extract(epoch FROM now() - a.xact_start)::float8,
       extract(epoch FROM now() - a.state_change)::float8,
       coalesce(left(regexp_replace(a.query, '\\s+', ' ', 'g'), 200), ''),
       pg_blocking_pids(a.pid)
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""

_WAITING_LOCKS_SQL = """
SELECT l.pid, l.locktype, l.mode,
       coalesce(c.relname, l.relation::text, ''),
       coalesce(l.transactionid::text, l.virtualxid, ''),
       coalesce(l.classid::text || ':' || l.objid::text, '')
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation AND l.database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
WHERE NOT l.granted AND l.pid IS NOT NULL
"""

_PREPARED_SQL = "SELECT gid, database FROM pg_prepared_xacts ORDER BY prepared"


@dataclass(frozen=True, slots=True)
class Session:
    """One client backend: who, where, doing what (seconds: transaction and state age)."""

    pid: int
    user: str
    database: str
    application: str
    state: str
    wait_event_type: str
    wait_event: str
    xact_age_s: float | None
    state_age_s: float | None
    query: str


@dataclass(frozen=True, slots=True)
class WaitEdge:
    """``waiter`` waits for ``blocker`` (pid, or 0 = a prepared transaction) to release
    ``lock`` (lock type, mode and object of the lock the waiter requested)."""

    waiter: int
    blocker: int
    lock: str


@dataclass
class WaitGraph:
    """Sessions, wait edges (waiter -> blocker), cycles (pid lists, each closing back on
    its first) and the prepared transactions of the cluster (gid, database)."""

    sessions: dict[int, Session] = field(default_factory=dict)
    edges: list[WaitEdge] = field(default_factory=list)
    cycles: list[list[int]] = field(default_factory=list)
    prepared: list[tuple[str, str]] = field(default_factory=list)

    @property
    def waiting(self) -> set[int]:
        return {e.waiter for e in self.edges}

    def to_dict(self) -> dict:
        return {
            "sessions": [asdict(s) for s in self.sessions.values()],
            "edges": [asdict(e) for e in self.edges],
            "cycles": self.cycles,
            "prepared": [{"gid": g, "database": d} for g, d in self.prepared],
        }


def wait_graph(conn: psycopg.Connection) -> WaitGraph:
    """The wait-for graph of the server ``conn`` is connected to (every database)."""
    graph = WaitGraph()
    blockers: dict[int, list[int]] = {}
    for row in conn.execute(_SESSIONS_SQL).fetchall():
        *fields, blocked_by = row
        s = Session(*fields)
        graph.sessions[s.pid] = s
        if blocked_by:
            blockers[s.pid] = sorted(set(blocked_by))
    wanted: dict[int, str] = {}
    for pid, locktype, mode, relation, xid, obj in conn.execute(_WAITING_LOCKS_SQL).fetchall():
        target = relation or xid or obj
        wanted[pid] = f"{locktype} {mode}" + (f" on {target}" if target else "")
    graph.prepared = [(g, d) for g, d in conn.execute(_PREPARED_SQL).fetchall()]
    for waiter, pids in sorted(blockers.items()):
        for blocker in pids:
            graph.edges.append(WaitEdge(waiter, blocker, wanted.get(waiter, "")))
    graph.cycles = find_cycles([(e.waiter, e.blocker) for e in graph.edges])
    return graph


def find_cycles(edges: list[tuple[int, int]]) -> list[list[int]]:
    """One cycle per strongly connected component that has one, as the pids along it
    (``[a, b]`` means a waits for b waits for a). Deterministic: components and cycles
    start at their smallest pid."""
    succ: dict[int, list[int]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    for nexts in succ.values():
        nexts.sort()
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, 0)]
        while work:  # iterative Tarjan: (node, next successor to look at)
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                components.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles = []
    for comp in sorted(components):
        members = set(comp)
        if len(comp) == 1 and comp[0] not in succ[comp[0]]:
            continue
        cycles.append(_cycle_in(comp[0], members, succ))
    return cycles


def _cycle_in(start: int, members: set[int], succ: dict[int, list[int]]) -> list[int]:
    """A simple cycle through ``start`` inside one strongly connected component (DFS)."""
    path = [start]
    seen = {start}
    iters = [iter([n for n in succ[start] if n in members])]
    while iters:
        for nxt in iters[-1]:
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                iters.append(iter([n for n in succ[nxt] if n in members]))
                break
        else:
            iters.pop()
            path.pop()
    return [start]  # unreachable for a strongly connected component


def _who(graph: WaitGraph, pid: int) -> str:
    if pid == PREPARED:
        gids = ", ".join(g for g, _ in graph.prepared) or "?"
        return f"prepared transaction ({gids})"
    s = graph.sessions.get(pid)
    if s is None:
        return f"pid {pid} (gone)"
    age = f" xact {s.xact_age_s:.1f}s" if s.xact_age_s is not None else ""
    return f"pid {pid} {s.user}@{s.database} [{s.application or '-'}] {s.state}{age}: {s.query}"


def render(graph: WaitGraph, show_all: bool = False) -> str:
    """Human-readable report: the waits (blocking chains), then cycles, then (``show_all``)
    every session."""
    lines = []
    if not graph.edges:
        lines.append(f"no session waits for a lock ({len(graph.sessions)} sessions)")
    else:
        lines.append(f"{len(graph.waiting)} session(s) waiting:")
        for e in graph.edges:
            lines.append(f"  {e.waiter} waits for {e.blocker or 'prepared'}  ({e.lock})")
            lines.append(f"      waiter:  {_who(graph, e.waiter)}")
            lines.append(f"      blocker: {_who(graph, e.blocker)}")
    for cycle in graph.cycles:
        chain = " -> ".join(str(p) for p in [*cycle, cycle[0]])
        lines.append(f"CYCLE (deadlock in the making): {chain}")
    if graph.prepared:
        lines.append("prepared transactions: " + ", ".join(f"{g} ({d})" for g, d in graph.prepared))
    if show_all:
        lines.append("sessions:")
        lines.extend(f"  {_who(graph, pid)}" for pid in sorted(graph.sessions))
    return "\n".join(lines)
