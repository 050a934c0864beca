"""Operator actions are audited under the kernel's identity, before they are applied.

Scenarios and the outcomes they allow:

* `bot4 halt` / `bot4 breaker trip` with ``$USER``, ``$LOGNAME`` and ``$SUDO_USER`` set to
  someone else: the record names the process's real uid's user, and it is complete in the
  operator log at the moment the state change is applied (observed from inside the change);
  `bot4 stats` then shows that user, the action and the states as the last change.
* a process running as another uid (``nobody``, forked, ``setuid``) that owns the segments:
  its action is recorded as ``nobody`` whatever its environment says.
* a process whose user does not own the segments (``nobody`` against root's 0640 segments):
  refused with a one-line error naming the owner; no record, no change.
* no operator log: ``halt`` is still applied (a kill switch never waits for bookkeeping) with
  a warning; ``resume`` is refused and the state stays.
"""

from __future__ import annotations

import os
import pwd

import pytest

from bot4 import cli
from bot4.ops_stats import snapshot
from bot4.ops_stats_view import render
from bot4.risk import create_risk_segments
from bot4.shm.breakers import BreakerConfig, Breakers
from bot4.shm.operator_log import OPERATOR_SEGMENT, OperatorLog, create_operator_log
from bot4.shm.segment import SHM_DIR, Segment, instance_segments, segment_name
from bot4.shm.trading_state import ACTIVE, HALTED, REDUCING, TradingState

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def segments(instance):
    """An instance's breakers, trading states and operator log (no pipeline running)."""
    create_risk_segments(instance, 1, 3, [BreakerConfig(name="db")])
    create_operator_log(instance)
    yield instance
    for name in instance_segments(instance):
        Segment.unlink(name)


@pytest.fixture
def spoofed_env(monkeypatch):
    for var in ("USER", "LOGNAME", "SUDO_USER"):
        monkeypatch.setenv(var, "mallory")


def records(instance) -> list:
    with OperatorLog(instance, readonly=True) as log:
        return [r.copy() for r in log.records[: int(log.words[16])]]


def who(r) -> str:
    return bytes(r["who"]).rstrip(b"\0").decode()


def test_halt_is_recorded_under_the_real_uid_before_it_is_applied(
    segments, spoofed_env, monkeypatch, capsys
):
    seen = []
    real_set = TradingState.set

    def observing_set(self, target, state, *a, **kw):
        with OperatorLog(segments, readonly=True) as log:
            seen.append(log.last())  # what the log holds when the change is applied
        return real_set(self, target, state, *a, **kw)

    monkeypatch.setattr(TradingState, "set", observing_set)
    assert cli.main(["halt", "--instance", segments, "--note", "n1"]) == 0
    assert len(seen) == 1 and seen[0] is not None
    r = seen[0]
    assert who(r) == ME and "mallory" not in who(r)
    assert (int(r["old_state"]), int(r["new_state"])) == (ACTIVE, HALTED)
    assert bytes(r["note"]).rstrip(b"\0") == b"n1"
    with TradingState(segments, readonly=True) as ts:
        assert ts.get(0) == HALTED

    last = snapshot(segments)["last_operator_action"]
    assert last["who"] == ME and last["action"] == "halt" and last["target"] == "global"
    assert (last["old_state"], last["new_state"]) == ("active", "halted")
    assert f"last operator action: {ME} halt global active -> halted" in render(snapshot(segments))


def test_breaker_trip_is_recorded_before_it_is_applied(segments, spoofed_env, monkeypatch):
    seen = []
    real_trip = Breakers.trip

    def observing_trip(self, i, *a, **kw):
        with OperatorLog(segments, readonly=True) as log:
            seen.append(log.last())
        return real_trip(self, i, *a, **kw)

    monkeypatch.setattr(Breakers, "trip", observing_trip)
    assert cli.main(["breaker", "trip", "db", "--instance", segments]) == 0
    assert seen and seen[0] is not None and who(seen[0]) == ME
    assert (int(seen[0]["old_state"]), int(seen[0]["new_state"])) == (0, 1)  # closed -> open
    last = snapshot(segments)["last_operator_action"]
    assert (last["action"], last["target"], last["new_state"]) == (
        "breaker trip",
        "breaker 0",
        "open",
    )


def _as_nobody(argv: list[str]) -> int:
    """Run ``bot4 ARGV`` in a forked child as ``nobody`` (environment claiming root);
    its exit status. Everything it imports is imported here first: after setuid the child
    cannot read what sits under /root."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.environ.update(USER="root", LOGNAME="root", SUDO_USER="root")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = cli.main(argv)
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_action_by_another_uid_is_recorded_as_that_user(segments):
    # warm every kernel and import the child needs, as the segments' owner
    assert cli.main(["reduce", "--instance", segments]) == 0
    nobody = pwd.getpwnam("nobody")
    for name in instance_segments(segments):  # nobody as the pipeline's user
        os.chown(SHM_DIR + name, nobody.pw_uid, nobody.pw_gid)
    assert _as_nobody(["halt", "--instance", segments, "--note", "by nobody"]) == 0
    recs = records(segments)
    assert [who(r) for r in recs] == [ME, "nobody"]
    assert int(recs[1]["old_state"]) == REDUCING and int(recs[1]["new_state"]) == HALTED
    with TradingState(segments, readonly=True) as ts:
        assert ts.get(0) == HALTED


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_user_who_does_not_own_the_segments_is_refused(segments, capfd):
    assert cli.main(["reduce", "--instance", segments]) == 0  # warm, as the owner
    capfd.readouterr()
    assert _as_nobody(["halt", "--instance", segments]) == 1  # runtime failure
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("bot4: error: segment ") and f"belongs to {ME}" in err
    assert "nobody" in err and "may not write it" in err
    assert len(records(segments)) == 1  # only the owner's reduce
    with TradingState(segments, readonly=True) as ts:
        assert ts.get(0) == REDUCING


def test_without_an_operator_log_halt_still_applies_and_resume_is_refused(segments, capsys):
    Segment.unlink(segment_name(segments, OPERATOR_SEGMENT))
    assert cli.main(["halt", "--instance", segments]) == 0
    assert "applied without an audit record" in capsys.readouterr().err
    assert cli.main(["resume", "--instance", segments]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bot4: error: not applied: its audit record could not be written")
    with TradingState(segments, readonly=True) as ts:
        assert ts.get(0) == HALTED
