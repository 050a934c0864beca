"""The embedded server's socket directory, authentication, parent directories and orphans.

Scenarios and the outcomes they allow:

* a data directory whose path is too long for a socket name puts its socket in
  ``/tmp/bot4-pg-<hash>``; if that name already exists as another user's directory, as a
  0777 directory, or as a symlink, start is refused with a one-line error naming it, before
  anything runs — and a symlink's target keeps its owner and mode;
* a server started there (as root: run by the system user) works through a 0700 socket
  directory of the server's user; every connection needs the password (no ``trust`` rule,
  a DSN without the passfile is refused); the passfile is 0600; the data directory's
  parents keep exactly the modes they had;
* as root, a parent the server's user cannot traverse: refused naming that parent, whose
  mode stays;
* a data directory initialised with trust by an older bot4 gets a password on start;
* a server whose owner died (SIGKILLed run) is adopted by the next start, which becomes its
  owner and stops it.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import psycopg
import pytest

from bot4.db.cluster import HBA_TEXT, PASS_FILE, SUPERUSER, ServerStartError, _bin
from bot4.db.server import EmbeddedPostgres
from tests.conftest import TEST_SETTINGS
from tests.db.conftest import scalar

pytestmark = pytest.mark.timeout(180)
ROOT = os.geteuid() == 0


def long_server(base) -> EmbeddedPostgres:
    """A test server whose data directory path is too long for a socket name."""
    d = base / ("d" * 40) / ("e" * 40) / "pg"
    s = EmbeddedPostgres(d, settings=TEST_SETTINGS, initdb_options=("--no-sync",))
    assert s.socket_dir != s.data_dir and str(s.socket_dir).startswith("/tmp/bot4-pg-")
    return s


def server_uid(s: EmbeddedPostgres) -> int:
    return s._ids()[0]


@pytest.fixture
def planted(request):
    """Remove whatever a test planted at a socket-directory name."""
    paths = []
    yield paths
    for p in paths:
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            p.rmdir()


def refused(s: EmbeddedPostgres) -> str:
    with pytest.raises(ServerStartError) as err:
        s.start()
    msg = str(err.value)
    assert len(msg.splitlines()) == 1, msg
    assert not s.running and not (s.data_dir / "PG_VERSION").exists()
    return msg


@pytest.mark.skipif(not ROOT, reason="needs root to create a directory as another user")
def test_socket_dir_precreated_by_another_user_is_refused(pg_tmp, planted):
    s = long_server(pg_tmp)
    planted.append(s.socket_dir)
    subprocess.run(["mkdir", "-m", "0700", str(s.socket_dir)], user="nobody", check=True)
    msg = refused(s)
    assert f"socket directory {s.socket_dir} exists with owner uid" in msg and "refusing" in msg
    assert s.socket_dir.stat().st_uid == 65534  # left as it was


def test_socket_dir_precreated_world_writable_is_refused(pg_tmp, planted):
    s = long_server(pg_tmp)
    planted.append(s.socket_dir)
    os.mkdir(s.socket_dir)
    os.chmod(s.socket_dir, 0o777)
    os.chown(s.socket_dir, server_uid(s), -1)  # even the right owner: the mode is wrong
    msg = refused(s)
    assert "mode 0777" in msg and "refusing" in msg
    assert stat.S_IMODE(s.socket_dir.stat().st_mode) == 0o777


def test_socket_dir_precreated_as_a_symlink_is_refused(pg_tmp, planted):
    s = long_server(pg_tmp)
    target = pg_tmp / "target"
    target.mkdir(mode=0o755)
    before = target.stat()
    planted.append(s.socket_dir)
    os.symlink(target, s.socket_dir)
    msg = refused(s)
    assert f"socket directory {s.socket_dir} exists and is a symlink" in msg
    after = target.stat()  # nobody chowned or chmodded through the link
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )


def test_long_path_server_uses_a_private_socket_dir_and_passwords_and_leaves_parents(pg_tmp):
    s = long_server(pg_tmp)
    s.data_dir.parent.parent.mkdir(mode=0o751)
    s.data_dir.parent.mkdir(mode=0o711)
    parents = [p for p in s.data_dir.parents]
    modes = {p: (p.stat().st_mode, p.stat().st_uid) for p in parents}
    try:
        s.start()
        assert {p: (p.stat().st_mode, p.stat().st_uid) for p in parents} == modes
        sock = os.lstat(s.socket_dir)
        assert stat.S_ISDIR(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o700
        assert sock.st_uid == server_uid(s)
        pw = os.stat(s.data_dir / PASS_FILE)
        assert stat.S_IMODE(pw.st_mode) == 0o600 and pw.st_uid == server_uid(s)
        dsn = s.dsn("postgres")
        assert "passfile=" in dsn and "password" not in dsn.replace("passfile", "")
        assert (
            scalar(dsn, "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'") == 0
        )
        assert (s.data_dir / "pg_hba.conf").read_text() == HBA_TEXT
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                f"host={s.socket_dir} port=5432 user={SUPERUSER} dbname=postgres "
                "passfile=/dev/null connect_timeout=5"
            ).close()
        s.stop()
        s.start()  # its own socket directory from before is accepted
        assert s.running
    finally:
        s.stop(mode="immediate")
        if s.socket_dir.is_dir():
            os.rmdir(s.socket_dir)


@pytest.mark.skipif(not ROOT, reason="as root only: the server runs as another user")
def test_parent_the_server_user_cannot_traverse_is_refused_and_left_alone(pg_tmp):
    locked = pg_tmp / "locked"
    locked.mkdir(mode=0o700)
    s = EmbeddedPostgres(locked / "pg")
    msg = refused(s)
    assert f"{locked} is mode 0700" in msg and "does not widen parent directories" in msg
    assert stat.S_IMODE(locked.stat().st_mode) == 0o700


def test_trust_cluster_from_an_older_bot4_gets_a_password_on_start(pg_tmp):
    s = EmbeddedPostgres(pg_tmp / "pg", settings=TEST_SETTINGS, initdb_options=("--no-sync",))
    s._prepare_dirs()
    out = s._run(
        [str(_bin("initdb")), "-D", str(s.data_dir), "--auth=trust", "-U", SUPERUSER, "--no-sync"],
        timeout=120,
    )
    assert out.returncode == 0, out.stdout
    assert not (s.data_dir / PASS_FILE).exists()
    try:
        s.start()
        assert (s.data_dir / PASS_FILE).exists()
        dsn = s.dsn("postgres")
        assert (
            scalar(dsn, "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'") == 0
        )
        assert scalar(
            dsn,
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'",
        )
    finally:
        s.stop(mode="immediate")


def test_server_of_a_killed_run_is_adopted_and_stopped_by_the_next_one(pg_tmp):
    data = pg_tmp / "pg"
    code = (
        "import os, signal, sys\n"
        "from bot4.db.server import EmbeddedPostgres\n"
        "from tests.conftest import TEST_SETTINGS\n"
        f"s = EmbeddedPostgres({str(data)!r}, settings=TEST_SETTINGS, initdb_options=('--no-sync',))\n"
        "s.start()\n"
        "print(s.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=150)
    assert run.returncode == -signal.SIGKILL, run.stderr
    orphan = int(run.stdout.split()[0])
    s = EmbeddedPostgres(data, settings=TEST_SETTINGS)
    try:
        assert s.pid == orphan  # left running by the dead run
        s.start()
        assert s.pid == orphan and s.started  # adopted, not restarted, and now ours
        assert s.adopted_from is not None and f"pid {orphan}" in s.adopted_from
        other = EmbeddedPostgres(data, settings=TEST_SETTINGS).start()
        assert not other.started and other.adopted_from is None  # its owner (us) is alive
    finally:
        s.stop()
    assert not s.running and not (data / "bot4.owner").exists()
