"""``bot4 db locks``: the wait-for graph of real sessions — a blocking chain, and a cycle
(a deadlock in the making, held open by a long deadlock_timeout) — and cycle detection on
its own against the outcomes it must give."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from bot4.db import cli
from bot4.db.locks import find_cycles, wait_graph

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("edges", "cycles"),
    [
        ([], []),
        ([(1, 2), (2, 3)], []),  # a chain: no cycle
        ([(1, 2), (2, 1)], [[1, 2]]),
        ([(3, 3)], [[3]]),  # waits for itself
        ([(1, 2), (2, 3), (3, 1), (4, 1)], [[1, 2, 3]]),  # 4 waits on the cycle, not in it
        ([(5, 6), (6, 5), (7, 8), (8, 9), (9, 7), (9, 10)], [[5, 6], [7, 8, 9]]),
        ([(1, 2), (2, 3), (3, 2), (3, 4), (4, 1)], [[1, 2, 3, 4]]),
    ],
)
def test_find_cycles(edges, cycles):
    assert find_cycles(edges) == cycles


class Session:
    """A connection running one statement at a time in a thread (so it can block)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self, *statements: str) -> None:
        for s in statements:
            self.conn.execute(s)

    def start(self, statement: str) -> None:
        def go() -> None:
            try:
                self.conn.execute(statement)
            except psycopg.Error as exc:
                self.error = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(10)
        self.conn.close()


def wait_for_waiters(dsn: str, pids: set[int], timeout: float = 10.0):
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            graph = wait_graph(conn)
            if pids <= graph.waiting:
                return graph
            assert time.monotonic() < deadline, f"sessions {pids} never waited"
            time.sleep(0.05)


@pytest.fixture
def table(new_db):
    dsn = new_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        conn.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 3) g")
    return dsn


def test_locks_shows_a_blocking_chain(table, capsys):
    a, b, c = Session(table), Session(table), Session(table)
    try:
        a.run("BEGIN", "UPDATE accounts SET balance = 1 WHERE id = 1")
        b.run("BEGIN", "UPDATE accounts SET balance = 2 WHERE id = 2")
        b.start("UPDATE accounts SET balance = 2 WHERE id = 1")  # b waits for a
        c.run("BEGIN")
        c.start("UPDATE accounts SET balance = 3 WHERE id = 2")  # c waits for b
        graph = wait_for_waiters(table, {b.pid, c.pid})
        assert {(e.waiter, e.blocker) for e in graph.edges} == {(b.pid, a.pid), (c.pid, b.pid)}
        assert graph.cycles == []
        assert all("transactionid ShareLock" in e.lock for e in graph.edges)
        assert cli.main(["locks", "--dsn", table]) == 0
        out = capsys.readouterr().out
        assert f"{b.pid} waits for {a.pid}" in out and f"{c.pid} waits for {b.pid}" in out
        assert "CYCLE" not in out
    finally:
        a.run("ROLLBACK")
        b.thread.join(10)
        b.run("ROLLBACK")
        c.thread.join(10)
        c.run("ROLLBACK")
        for s in (a, b, c):
            s.close()


def test_locks_flags_a_deadlock_in_the_making(table, capsys):
    a, b = Session(table), Session(table)
    try:
        for s, row in ((a, 1), (b, 2)):  # the detector would break it after 1 s: hold it
            s.run(
                "SET deadlock_timeout = '60s'",
                "BEGIN",
                f"UPDATE accounts SET balance = 9 WHERE id = {row}",
            )
        a.start("UPDATE accounts SET balance = 9 WHERE id = 2")
        b.start("UPDATE accounts SET balance = 9 WHERE id = 1")
        graph = wait_for_waiters(table, {a.pid, b.pid})
        assert graph.cycles == [sorted([a.pid, b.pid])]
        assert cli.main(["locks", "--dsn", table]) == 1  # a cycle: non-zero exit
        out = capsys.readouterr().out
        assert "CYCLE (deadlock in the making)" in out
        assert cli.main(["locks", "--dsn", table, "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["events"]["cycles"] == [sorted([a.pid, b.pid])]
        with psycopg.connect(table, autocommit=True) as conn:  # break it by hand
            conn.execute("SELECT pg_cancel_backend(%s)", (a.pid,))
        a.thread.join(10)
        b.thread.join(10)
        assert isinstance(a.error, psycopg.errors.QueryCanceled) and b.error is None
    finally:
        for s in (a, b):
            s.run("ROLLBACK")
            s.close()
