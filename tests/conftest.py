"""Shared fixtures: a unique pipeline instance per test, the /dev/shm leak check, and one
PostgreSQL per test session with fresh databases per test.

Every test that creates segments takes ``instance``: a name no other test or run uses.
After the test, whatever happened, the fixture kills any process the test registered in
``procs`` (by pid), unlinks the instance's segments, and then fails the test if any had
been left behind. PostgreSQL's own segments (``PostgreSQL.*``) are never ours to check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot4.db.server import EmbeddedPostgres
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
                if getattr(proc, "group", False):  # a `bot4 run` and its zygote; each
                    # stage leads a session of its own and dies with its parent
                    # (PR_SET_PDEATHSIG: bot4.pipeline.zygote)
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.join(5) if hasattr(proc, "join") else proc.wait(5)


LOG_TAIL = 6000  # characters of each log a failure report shows


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the tail of every ``*.log`` in its tmp_path (the pipelines and
    servers it started write there: ``LoggedPopen``), so a CI failure explains itself."""
    outcome = yield
    rep = outcome.get_result()
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if not rep.failed or tmp is None:
        return
    for log in sorted(Path(tmp).glob("*.log")):
        with contextlib.suppress(OSError):
            text = log.read_text(errors="replace")
            rep.sections.append((f"{log.name} (last {LOG_TAIL} characters)", text[-LOG_TAIL:]))


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


# --- PostgreSQL: one server per session, fresh databases per test ----------------------


# The session's server trades durability against a power loss for speed (CREATE DATABASE
# in ~20 ms instead of ~250): no test here pulls the plug on the server, they kill clients
# and stop the server cleanly, which every setting below survives.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def make_test_server(path: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(path, settings=TEST_SETTINGS, initdb_options=("--no-sync",))


@contextlib.contextmanager
def private_server(prefix: str) -> Iterator[EmbeddedPostgres]:
    """A started test server in a directory of its own under /tmp (mode 0711), removed
    afterwards.

    Not under pytest's basetemp: pytest deletes all but the newest few basetemps when a
    session starts, so a concurrent session (another checkout, another terminal) would
    delete a running server's data directory."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    # mkdtemp makes it 0700; as root the server runs as another user, which must be able to
    # traverse it (bot4 never widens a parent of the data directory itself)
    root.chmod(0o711)
    server = make_test_server(root / "data")
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A directory to put an embedded server's data directory in: under /tmp, mode 0711 so
    the server's user reaches it when the tests run as root (pytest's ``tmp_path`` sits
    under a 0700 directory it cannot traverse), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="bot4-test-pgdir-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """An embedded server for this session (started on first use, removed at the end)."""
    with private_server("bot4-test-pg-") as server:
        yield server


@pytest.fixture(scope="session")
def admin_dsns(request) -> tuple[str, str]:
    """Superuser DSNs (events server, ledger server) to create test databases on."""
    dsn = os.environ.get("BOT4_TEST_DSN")
    if dsn:
        return dsn, os.environ.get("BOT4_TEST_LEDGER_DSN") or dsn
    server = request.getfixturevalue("embedded_pg")
    return server.dsn("postgres"), server.dsn("postgres")


@pytest.fixture
def outage_server(request) -> Iterator[EmbeddedPostgres]:
    """A server the test may stop and start: the session's embedded one, or (when the
    session runs on external servers) a private embedded one."""
    if not os.environ.get("BOT4_TEST_DSN"):
        server = request.getfixturevalue("embedded_pg")
        yield server
        if not server.running:
            server.start()
        return
    with private_server("bot4-test-pg-outage-") as server:
        yield server


def dsn_for(admin_dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dsn_for(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    target = dsn_for(admin_dsn, name)
    with contextlib.suppress(psycopg.Error), psycopg.connect(target, autocommit=True) as c:
        for (gid,) in c.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        ).fetchall():
            c.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_db(admin_dsns) -> Iterator[Callable[..., str]]:
    """``new_db(ledger=False)``: the DSN of a new empty database (dropped at teardown)."""
    made: list[tuple[str, str]] = []

    def make(ledger: bool = False) -> str:
        admin = admin_dsns[1] if ledger else admin_dsns[0]
        name = f"t_{uuid.uuid4().hex[:12]}{'_l' if ledger else ''}"
        made.append((admin, name))
        return create_database(admin, name)

    yield make
    for admin, name in made:
        drop_database(admin, name)


@pytest.fixture
def dbs(new_db) -> tuple[str, str]:
    """(events DSN, ledger DSN) of two new databases."""
    return new_db(), new_db(ledger=True)


def query(dsn: str, text: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()


def scalar(dsn: str, text: str, params=None):
    return query(dsn, text, params)[0][0]
