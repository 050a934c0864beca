"""The systemd deployment: the unit files in systemd/ and the stage's sd_notify protocol.

* ``systemd-analyze verify`` accepts bot4.target, bot4-shm.service and the stage template
  (as the template and as an instance, ``bot4-stage@md.service``) without a word about
  them, nor about the example drop-ins of systemd/examples/ (CPUAffinity=, the strict
  drain order) on one instance per stage of the default topology; a deliberately broken
  copy shows that such words would be caught.
* A stage run the way ``bot4-stage@.service`` runs it (``bot4 stage NAME --topology T``
  against segments made by ``bot4 shm create``, with NOTIFY_SOCKET and WATCHDOG_USEC in
  its environment) sends READY=1, then WATCHDOG=1 at least every WATCHDOG_USEC/2, and on
  SIGTERM STOPPING=1 and exits 0; ``bot4 shm destroy`` then leaves nothing in /dev/shm.
  Each stage gets a notify socket of its own, and SO_PASSCRED checks that every message
  comes from the stage's own pid (the units say NotifyAccess=main: systemd drops
  notifications from any other process of the unit).
* Records flow between stages started by ``bot4 stage`` alone (no ``bot4 run``):
  ``bot4 shm create`` sets the pipeline running, as there is no supervisor to do it.

systemd does not need to run (no PID 1 here): ``systemd-analyze verify`` works offline and
the notify protocol is a unix datagram socket the test binds itself.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from bot4.shm import control as C
from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import LoggedPopen

pytestmark = [pytest.mark.system]

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
UNITS = ["bot4.target", "bot4-shm.service", "bot4-stage@.service"]
DEFAULT_TOPOLOGY = ROOT / "bot4" / "config" / "default.toml"
INSTALLED_BOT4 = "/opt/bot4/venv/bin/bot4"  # the path the unit files use
# the venv's console script, the same entry point ExecStart= runs (its shebang execs
# python directly, so the process we start *is* the stage: the unit's main PID)
BOT4 = str(Path(sys.executable).with_name("bot4"))
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None
)
WATCHDOG_USEC = 200_000
START_TIMEOUT = 120  # a cold numba cache compiles kernels at stage start


# -- systemd-analyze verify ---------------------------------------------------------------


def _unit_copy(dest: Path, *, examples: bool = False) -> Path:
    """The unit files copied to ``dest`` with ExecStart=/ExecStop= pointing at this venv
    (and with ``examples``, the example drop-ins of systemd/examples/ beside them, as they
    would sit in /etc/systemd/system/).

    ``systemd-analyze verify`` fails a unit whose command binary does not exist
    ("Command /opt/bot4/venv/bin/bot4 is not executable"), and this machine has no
    /opt/bot4: every occurrence of that path is replaced by the real path of the venv's
    ``bot4``. Nothing else is changed: User=/Group=bot4 (a user that need not exist here)
    is not resolved by verify (systemd 252 says nothing about it), and the units carry no
    Documentation=man: references, so ``--man=no`` is not needed either.
    """
    assert os.access(BOT4, os.X_OK), f"no bot4 console script at {BOT4}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        text = (UNIT_DIR / name).read_text()
        assert INSTALLED_BOT4 in text or name.endswith(".target"), f"{name} does not run bot4"
        (dest / name).write_text(text.replace(INSTALLED_BOT4, BOT4))
    if examples:
        shutil.copytree(UNIT_DIR / "examples", dest, dirs_exist_ok=True)
    return dest


def _verify(unit_dir: Path, *names: str) -> subprocess.CompletedProcess:
    # verify adds the directories of the unit files named on its command line to the unit
    # search path, so bot4-stage@md.service is instantiated from bot4-stage@.service there
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *(f"./{n}" for n in names)],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""),
    )


def _about_our_units(output: str, unit_dir: Path) -> list[str]:
    """Lines of verify's output that concern our units (the host's own are not ours)."""
    return [ln for ln in output.splitlines() if "bot4" in ln or str(unit_dir) in ln]


needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


@needs_analyze
@pytest.mark.timeout(120)
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    d = _unit_copy(tmp_path)
    for names in (UNITS, ["bot4.target", "bot4-shm.service", "bot4-stage@md.service"]):
        r = _verify(d, *names)
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"verify {names} exited {r.returncode}:\n{out}"
        assert not _about_our_units(out, d), f"verify {names} complained:\n{out}"


@needs_analyze
@pytest.mark.timeout(120)
def test_systemd_analyze_verify_accepts_the_example_drop_ins_for_the_default_topology(tmp_path):
    """systemd/examples/: a CPUAffinity= drop-in and the strict drain-order chain, with one
    instance per stage of the packaged default topology (verify also finds ordering cycles)."""
    stages = [s["name"] for s in tomllib.loads(DEFAULT_TOPOLOGY.read_text())["stage"]]
    dropins = sorted(p.parent.name for p in (UNIT_DIR / "examples").glob("*.service.d/*.conf"))
    # the examples name stages the default topology has (bot4-stage@.service.d: every stage)
    for unit in (d for d in dropins if d != "bot4-stage@.service.d"):
        assert unit.removeprefix("bot4-stage@").removesuffix(".service.d") in stages, unit
    d = _unit_copy(tmp_path, examples=True)
    names = ["bot4.target", "bot4-shm.service", *(f"bot4-stage@{s}.service" for s in stages)]
    r = _verify(d, *names)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"verify exited {r.returncode}:\n{out}"
    assert not _about_our_units(out, d), f"verify complained:\n{out}"


@needs_analyze
@pytest.mark.timeout(120)
def test_systemd_analyze_verify_reports_what_the_check_above_looks_for(tmp_path):
    """The check above is not vacuous: verify reports a bad setting (and still exits 0,
    hence the check on its output), and without the path substitution it rejects
    ExecStart= (hence the substitution)."""
    d = _unit_copy(tmp_path)
    p = d / "bot4-stage@.service"
    p.write_text(p.read_text().replace("WatchdogSec=5s", "WatchdogSec=five"))
    r = _verify(d, "bot4-stage@md.service")
    assert any("five" in ln for ln in _about_our_units(r.stdout + r.stderr, d)), r.stdout + r.stderr

    if not os.access(INSTALLED_BOT4, os.X_OK):
        raw = tmp_path / "raw"
        raw.mkdir()
        for name in UNITS:
            shutil.copy(UNIT_DIR / name, raw / name)
        r = _verify(raw, "bot4-shm.service")
        assert r.returncode != 0 and INSTALLED_BOT4 in r.stderr, r.stdout + r.stderr


# -- the notify protocol ------------------------------------------------------------------


def _topology(instance: str) -> str:
    """A paced unbounded source feeding a count-sink through one ring."""
    return f"""
instance = "{instance}"

[[stage]]
name = "src"
kind = "test-source"
core = 0
params = {{ count = 0, rate = 2000 }}

[[stage]]
name = "sink"
kind = "count-sink"
core = 0

[[ring]]
name = "r1"
from = "src"
to = "sink"
type = "market_data"
capacity = 1024
"""


class NotifySocket:
    """What systemd listens on: a unix datagram socket; records (time, sender pid, lines)."""

    _UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.messages: list[tuple[float, int, list[str]]] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> None:
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(self._UCRED.size))
        pid = -1
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = self._UCRED.unpack(cdata[: self._UCRED.size])[0]
        self.messages.append((time.monotonic(), pid, data.decode().split("\n")))

    def times(self, line: str) -> list[float]:
        return [t for t, _, lines in self.messages if line in lines]

    def close(self) -> None:
        self.sock.close()


def _pump(socks: dict[str, NotifySocket], until, timeout: float, procs_by_name=None) -> None:
    """Receive notifications until ``until()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            got = {n: [m[2] for m in s.messages[-5:]] for n, s in socks.items()}
            raise AssertionError(f"notifications not received within {timeout} s; last: {got}")
        for name, p in (procs_by_name or {}).items():
            if p.poll() is not None and not until():
                out = p.log_text() if isinstance(p, LoggedPopen) else ""
                raise AssertionError(f"stage {name} exited {p.returncode} early:\n{out}")
        ready, _, _ = select.select(list(socks.values()), [], [], min(left, 0.05))
        for s in ready:
            s.receive()


def _stage_env(notify_path: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS")
    }
    env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(WATCHDOG_USEC), PYTHONUNBUFFERED="1")
    return env


def _bot4(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BOT4, *args], capture_output=True, text=True, timeout=START_TIMEOUT, check=False
    )


@pytest.mark.timeout(300)
def test_stages_speak_sd_notify_ready_watchdog_stopping(instance, procs, tmp_path):
    topo = tmp_path / "topology.toml"
    topo.write_text(_topology(instance))
    r = _bot4("shm", "create", "--topology", str(topo))
    assert r.returncode == 0, r.stderr
    assert len(instance_segments(instance)) == 3  # ring r1, the control block, the metrics

    # sun_path holds 108 bytes and pytest's tmp_path can be longer: a short directory
    sockdir = tempfile.mkdtemp(prefix="b4n", dir="/tmp")
    socks: dict[str, NotifySocket] = {}
    stages: dict[str, subprocess.Popen] = {}
    try:
        for name in ("src", "sink"):
            socks[name] = NotifySocket(os.path.join(sockdir, f"{name}.sock"))
            stages[name] = procs.add(
                LoggedPopen(
                    [BOT4, "stage", name, "--topology", str(topo)],
                    tmp_path / f"{name}.log",
                    env=_stage_env(socks[name].path),
                )
            )

        # READY=1 from each stage, with a STATUS= line for `systemctl status`
        _pump(socks, lambda: all(s.times("READY=1") for s in socks.values()), START_TIMEOUT, stages)
        for name, s in socks.items():
            ready = next(lines for _, _, lines in s.messages if "READY=1" in lines)
            assert any(ln.startswith("STATUS=") and name in ln for ln in ready), ready

        # WATCHDOG=1 repeatedly: at least 2 within a second (expected every 0.1 s)
        t0 = time.monotonic()
        _pump(socks, lambda: time.monotonic() - t0 >= 1.0, 5, stages)
        for name, s in socks.items():
            pings = [t for t in s.times("WATCHDOG=1") if t >= t0]
            assert len(pings) >= 2, f"{name}: {len(pings)} WATCHDOG=1 in 1 s"
            gaps = [b - a for a, b in zip([t0, *pings], pings, strict=False)]
            assert max(gaps) < 1.0, f"{name}: watchdog gap {max(gaps):.3f} s"

        # SIGTERM: STOPPING=1, then exit 0
        for p in stages.values():
            p.send_signal(signal.SIGTERM)
        _pump(socks, lambda: all(s.times("STOPPING=1") for s in socks.values()), 60)
        for name, p in stages.items():
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0, f"stage {name} exited {p.returncode}:\n{out}"

        # every message came from the stage process itself (NotifyAccess=main)
        for name, s in socks.items():
            pids = {pid for _, pid, _ in s.messages}
            assert pids == {stages[name].pid}, (
                f"{name}: senders {pids}, stage pid {stages[name].pid}"
            )
    finally:
        for s in socks.values():
            s.close()
        shutil.rmtree(sockdir, ignore_errors=True)

    r = _bot4("shm", "destroy", "--topology", str(topo))
    assert r.returncode == 0, r.stderr
    assert not instance_segments(instance)
    assert not [e for e in os.listdir("/dev/shm") if e.startswith(f"bot4.{instance}.")]


@pytest.mark.timeout(300)
def test_records_flow_between_stages_started_without_a_supervisor(instance, procs, tmp_path):
    topo = tmp_path / "topology.toml"
    topo.write_text(_topology(instance))
    assert _bot4("shm", "create", "--topology", str(topo)).returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    stages = [
        procs.add(
            subprocess.Popen(
                [BOT4, "stage", name, "--topology", str(topo)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for name in ("src", "sink")
    ]
    try:
        cb = C.ControlBlock(instance, readonly=True)
        try:

            def states():
                return [C.STAGE_NAMES[int(cb.stage(i)[C.S_STATE])] for i in range(2)]

            deadline = time.monotonic() + START_TIMEOUT
            while states() != ["running", "running"]:
                assert time.monotonic() < deadline, f"stages not running: {states()}"
                time.sleep(0.05)
            deadline = time.monotonic() + 10
            while int(cb.stage(1)[C.S_RECORDS_IN]) == 0:
                assert time.monotonic() < deadline, (
                    f"the sink received nothing in 10 s; pipeline state "
                    f"{C.PIPE_NAMES[cb.pipeline_state]}, stages {states()}"
                )
                time.sleep(0.05)
        finally:
            cb.close()
    finally:
        for p in stages:
            p.send_signal(signal.SIGTERM)
        for p in stages:
            p.wait(60)
        _bot4("shm", "destroy", "--topology", str(topo))
