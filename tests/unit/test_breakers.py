"""Circuit breakers: hysteresis thresholds exactly, tickets, operator trip/reset, the guard,
and two processes recording into one shared breaker.

Single-process tests lay a breaker segment out in a process-local array and drive the clock
by hand (``now_ns`` is an argument of every op). Configuration used throughout: opens at
50% failures with at least M = 10 calls in a window of 4 buckets of 100 ns; cool-down
1000 ns; at most K = 2 probes in flight; decides after N = 10 probe results and closes at
most 35% failed (3 of 10).
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from bot4.records.errors import Code
from bot4.shm import breakers as B
from bot4.shm.segment import Segment, segment_name

CFG = B.BreakerConfig(
    name="venue",
    min_calls=10,
    open_failure_pct=50,
    close_failure_pct=35,
    cooldown_ns=1_000,
    max_probes=2,
    probe_window=10,
    bucket_ns=100,
    buckets=4,
    probe_timeout_ns=5_000,
)
T0 = 1_000_000  # a clock reading well away from 0
STATE = {"C": B.CLOSED, "O": B.OPEN, "H": B.HALF_OPEN}


def breakers(*configs: B.BreakerConfig) -> np.ndarray:
    return B.local_breakers(configs or (CFG,), 0)


def states_after_each(words, outcomes: str, now: int = T0, i: int = 0) -> str:
    """Record 'S'uccess / 'F'ailure outcomes; the state letter after each."""
    letters = {v: k for k, v in STATE.items()}
    out = []
    for c in outcomes:
        B.breaker_record(words, i, c == "S", now)
        out.append(letters[int(B.breaker_state(words, i))])
    return "".join(out)


def open_at(words, now: int = T0) -> None:
    assert states_after_each(words, "F" * 10, now)[-1] == "O"


def probes(words, outcomes: str, now: int) -> str:
    """Admit and report one probe per outcome; the state letter after each."""
    letters = {v: k for k, v in STATE.items()}
    out = []
    for c in outcomes:
        assert B.breaker_allow(words, 0, now), f"probe refused after {out}"
        B.breaker_record(words, 0, c == "S", now)
        out.append(letters[int(B.breaker_state(words, 0))])
    return "".join(out)


# --- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "states"),
    [
        ("F" * 9, "C" * 9),  # 100% failures but fewer than M calls
        ("F" * 10, "C" * 9 + "O"),  # M calls, 100%
        ("FS" * 5, "C" * 9 + "O"),  # exactly 50% at the M-th call
        ("F" * 9 + "S", "C" * 9 + "O"),  # a success brings the count to M at 90%
        ("SSF" * 4, "C" * 12),  # 4 of 12: 33%
        ("S" * 6 + "F" * 4, "C" * 10),  # 40% at M calls
        ("S" * 6 + "F" * 5, "C" * 11),  # 5 of 11: 45%
        ("S" * 6 + "F" * 6, "C" * 11 + "O"),  # 6 of 12: 50%
        ("S" * 51 + "F" * 50, "C" * 101),  # 50 of 101: 49.5%
        ("S" * 51 + "F" * 51, "C" * 101 + "O"),  # 51 of 102: 50%
    ],
)
def test_opens_at_half_failures_only_with_min_calls(outcomes: str, states: str) -> None:
    w = breakers()
    assert states_after_each(w, outcomes) == states
    snap = B.snapshot(w, T0)[0]
    assert snap["trips"] == states.count("O")


@pytest.mark.parametrize(("later", "state", "in_window"), [(399, "O", 10), (400, "C", 1)])
def test_failures_older_than_the_window_do_not_count(later: int, state: str, in_window: int):
    w = breakers()
    assert states_after_each(w, "F" * 9, T0) == "C" * 9
    # window = the current 100 ns bucket and the 3 before: at T0 + 400 T0's bucket is out
    assert states_after_each(w, "F", T0 + later) == state
    assert B.snapshot(w, T0 + later)[0]["window_calls"] == in_window


# --- cool-down and half-open -----------------------------------------------------------------


def test_stays_open_through_cooldown_then_half_opens_on_allow() -> None:
    w = breakers()
    open_at(w)
    for now in (T0, T0 + 1, T0 + 999):
        assert not B.breaker_allow(w, 0, now)
        assert B.breaker_state(w, 0) == B.OPEN
    B.breaker_record(w, 0, True, T0 + 999)  # results while OPEN are ignored
    assert B.breaker_state(w, 0) == B.OPEN
    assert B.breaker_allow(w, 0, T0 + 1_000)
    assert B.breaker_state(w, 0) == B.HALF_OPEN
    snap = B.snapshot(w, T0 + 1_000)[0]
    assert (snap["denied"], snap["probes_in_flight"], snap["half_open_at_ns"]) == (
        3,
        1,
        T0 + 1_000,
    )


def test_half_open_admits_at_most_k_probes_in_flight_and_n_per_episode() -> None:
    w = breakers()
    open_at(w)
    t = T0 + 1_000
    assert [bool(B.breaker_allow(w, 0, t)) for _ in range(3)] == [True, True, False]
    B.breaker_record(w, 0, True, t)
    assert [bool(B.breaker_allow(w, 0, t)) for _ in range(2)] == [True, False]
    for _ in range(7):  # answer one, admit one: 10 admitted in all
        B.breaker_record(w, 0, True, t)
        assert B.breaker_allow(w, 0, t)
    snap = B.snapshot(w, t)[0]
    assert (snap["state"], snap["probes_in_flight"], snap["probe_results"]) == (
        "half-open",
        2,
        "." * 8,
    )
    B.breaker_record(w, 0, True, t)
    assert not B.breaker_allow(w, 0, t)  # 9 results + 1 in flight = N: no more probes
    assert B.breaker_state(w, 0) == B.HALF_OPEN
    B.breaker_record(w, 0, True, t)
    assert B.breaker_state(w, 0) == B.CLOSED


@pytest.mark.parametrize(
    ("outcomes", "states"),
    [
        ("S" * 10, "H" * 9 + "C"),
        ("FFF" + "S" * 7, "H" * 9 + "C"),  # 3 of 10 = 30%
        ("S" * 7 + "FFF", "H" * 9 + "C"),
        ("SFSFSFSSSS", "H" * 9 + "C"),
        ("FFFF", "HHHO"),  # a 4th failure decides: > 35% whatever follows
        ("S" * 6 + "FFFF", "H" * 9 + "O"),  # 4 of 10 = 40%
        ("SSFSFSFSSF", "H" * 9 + "O"),
    ],
)
def test_closes_only_at_most_35_percent_of_last_n_probes_else_reopens(
    outcomes: str, states: str
) -> None:
    w = breakers()
    open_at(w)
    t = T0 + 1_000
    assert probes(w, outcomes, t) == states
    snap = B.snapshot(w, t)[0]
    if states[-1] == "O":
        assert snap["trips"] == 2 and snap["opened_at_ns"] == t
        assert not B.breaker_allow(w, 0, t + 999)  # a full cool-down again
        assert B.breaker_allow(w, 0, t + 1_000)
    else:
        assert snap["trips"] == 1 and snap["window_calls"] == 0  # window cleared on close
        assert states_after_each(w, "F" * 9, t) == "C" * 9  # the old failures are gone


@pytest.mark.parametrize(("failures", "state"), [(7, "C"), (8, "O")])
def test_close_threshold_is_inclusive_at_exactly_35_percent(failures: int, state: str) -> None:
    cfg = B.BreakerConfig(name="x", min_calls=1, cooldown_ns=10, probe_window=20, max_probes=1)
    w = breakers(cfg)
    assert states_after_each(w, "F") == "O"
    t = T0 + 10
    letters = ""
    for c in "F" * failures + "S" * (20 - failures):
        if not B.breaker_allow(w, 0, t):
            break
        B.breaker_record(w, 0, c == "S", t)
        letters = "COH"[B.breaker_state(w, 0)]
    assert letters == state


def test_probe_whose_caller_died_reopens_after_probe_timeout() -> None:
    w = breakers()
    open_at(w)
    t = T0 + 1_000
    assert B.breaker_allow(w, 0, t) and B.breaker_allow(w, 0, t + 10)  # never answered
    assert not B.breaker_allow(w, 0, t + 10 + 4_999)
    assert B.breaker_state(w, 0) == B.HALF_OPEN
    assert not B.breaker_allow(w, 0, t + 10 + 5_000)
    assert B.breaker_state(w, 0) == B.OPEN
    assert B.snapshot(w, t)[0]["opened_at_ns"] == t + 5_010


# --- tickets ---------------------------------------------------------------------------------


def test_tickets_keep_late_results_out_of_the_probe_count() -> None:
    w = breakers()
    early = B.breaker_enter(w, 0, T0)
    assert early & 3 == B.T_CLOSED
    open_at(w)
    t = T0 + 1_000
    probe = B.breaker_enter(w, 0, t)
    assert probe & 3 == B.T_PROBE
    B.breaker_exit(w, 0, early, False, t)  # admitted while CLOSED: not a probe
    snap = B.snapshot(w, t)[0]
    assert (snap["probes_in_flight"], snap["probe_results"]) == (1, "")
    B.breaker_exit(w, 0, probe, False, t)
    assert B.snapshot(w, t)[0]["probe_results"] == "F"
    # a probe of this episode, answered after the breaker reopened and half-opened again
    stale = B.breaker_enter(w, 0, t)
    for _ in range(3):
        assert B.breaker_allow(w, 0, t)
        B.breaker_record(w, 0, False, t)
    assert B.breaker_state(w, 0) == B.OPEN
    assert B.breaker_allow(w, 0, t + 1_000)
    B.breaker_exit(w, 0, stale, True, t + 1_000)
    snap = B.snapshot(w, t + 1_000)[0]
    assert (snap["probes_in_flight"], snap["probe_results"]) == (1, "")


def test_release_gives_back_an_unused_probe() -> None:
    w = breakers()
    open_at(w)
    t = T0 + 1_000
    a, b = B.breaker_enter(w, 0, t), B.breaker_enter(w, 0, t)
    assert a and b and not B.breaker_enter(w, 0, t)
    B.breaker_release(w, 0, a)
    assert B.breaker_enter(w, 0, t)
    B.breaker_release(w, 0, 0)  # refused tickets and CLOSED tickets release nothing
    assert B.snapshot(w, t)[0]["probes_in_flight"] == 2


# --- operator --------------------------------------------------------------------------------


def test_operator_trip_holds_open_past_cooldown_until_reset() -> None:
    w = breakers()
    assert B.breaker_trip(w, 0, T0) == B.CLOSED
    assert B.breaker_trip(w, 0, T0) == B.OPEN  # again: no change
    assert not B.breaker_allow(w, 0, T0 + 10**9)
    snap = B.snapshot(w, T0)[0]
    assert (snap["state"], snap["forced"], snap["trips"]) == ("open", True, 1)
    assert B.breaker_reset(w, 0, T0) == B.OPEN
    assert B.breaker_allow(w, 0, T0)
    snap = B.snapshot(w, T0)[0]
    assert (snap["state"], snap["forced"], snap["window_calls"]) == ("closed", False, 0)


def test_reset_clears_the_window_and_a_trip_from_half_open_counts_as_a_trip() -> None:
    w = breakers()
    states_after_each(w, "F" * 9)
    assert B.breaker_reset(w, 0, T0) == B.CLOSED
    assert states_after_each(w, "F" * 9) == "C" * 9
    assert states_after_each(w, "F") == "O"
    assert B.breaker_allow(w, 0, T0 + 1_000)
    assert B.breaker_trip(w, 0, T0 + 1_000) == B.HALF_OPEN
    assert B.snapshot(w, T0)[0]["trips"] == 2


def test_config_is_validated() -> None:
    with pytest.raises(Exception, match="hysteresis") as err:
        B.BreakerConfig(open_failure_pct=50, close_failure_pct=50)
    assert err.value.code == Code.CONFIG_INVALID
    with pytest.raises(Exception, match="probe_window"):
        B.BreakerConfig(probe_window=65)
    with pytest.raises(Exception, match="max_probes"):
        B.BreakerConfig(max_probes=11, probe_window=10)


# --- the Python guard ------------------------------------------------------------------------


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_guard_records_success_and_failure_even_when_an_exception_escapes() -> None:
    w = breakers()
    h = B.BreakerHandle(w, 0)
    clock = Clock(T0)
    with B.guard(h, clock) as ticket:
        assert ticket & 3 == B.T_CLOSED
    with pytest.raises(ValueError, match="boom"), B.guard(h, clock):
        raise ValueError("boom")
    snap = B.snapshot(w, T0)[0]
    assert (snap["window_calls"], snap["window_failures"]) == (2, 1)
    for _ in range(8):
        with pytest.raises(KeyError), B.guard(h, clock):
            raise KeyError("x")
    assert B.breaker_state(w, 0) == B.OPEN
    ran = []
    with pytest.raises(B.BreakerOpenError) as err, B.guard(h, clock):
        ran.append(1)
    assert not ran and err.value.code == Code.BREAKER_OPEN
    clock.t = T0 + 1_000
    with B.guard(h, clock) as ticket:  # the first probe
        assert ticket & 3 == B.T_PROBE
    assert B.snapshot(w, clock.t)[0]["probe_results"] == "."


# --- shared memory, two processes ------------------------------------------------------------

CTX = mp.get_context("spawn")
N_EACH = 20_000


def _record_worker(instance: str, index: int, n: int, fail_every: int, start) -> None:
    brk = B.Breakers(instance)
    start.wait(30)
    for k in range(n):
        B.breaker_record(brk.words, index, k % fail_every != 0, 5)


def test_segment_create_attach_and_operator_calls(instance) -> None:
    name = B.create_breakers(instance, [CFG, B.BreakerConfig(name="gateway")])
    try:
        with B.Breakers(instance) as brk:
            assert brk.count == 2 and brk.configs[0] == CFG
            assert brk.index_of("gateway") == 1 and brk.index_of("0") == 0
            with pytest.raises(B.UnknownBreakerError, match="0=venue, 1=gateway") as err:
                brk.index_of("nope")
            assert isinstance(err.value, LookupError)
            assert brk.trip("gateway") == B.CLOSED
        with B.Breakers(instance, readonly=True) as ro:
            assert [s["state"] for s in ro.snapshot()] == ["closed", "open"]
        with pytest.raises(Exception) as err:
            B.create_breakers(instance, [CFG])
        assert err.value.code == Code.SEGMENT_EXISTS
    finally:
        Segment.unlink(name)


@pytest.mark.timeout(120)
def test_two_processes_record_into_one_breaker_and_every_outcome_counts(instance, procs) -> None:
    never = B.BreakerConfig(name="count", min_calls=(1 << 20) - 1, bucket_ns=10**15)
    trips = B.BreakerConfig(name="trip", min_calls=1_000, bucket_ns=10**15)
    name = B.create_breakers(instance, [never, trips])
    try:
        w = breakers(never)
        B.breaker_record(w, 0, True, 5)  # compile here once; the children load the cache
        for index, fail_every in ((0, 3), (1, 1)):
            start = CTX.Event()
            kids = [
                procs.add(
                    CTX.Process(
                        target=_record_worker,
                        args=(instance, index, N_EACH, fail_every, start),
                        daemon=True,
                    )
                )
                for _ in range(2)
            ]
            for p in kids:
                p.start()
            start.set()
            for p in kids:
                p.join(90)
                assert p.exitcode == 0
        with B.Breakers(instance, readonly=True) as brk:
            count, trip = brk.snapshot(now_ns=5)
        # nothing lost, nothing counted twice: 2 x 20000 calls, every third one failed
        fails_each = len(range(0, N_EACH, 3))
        assert (count["state"], count["window_calls"], count["window_failures"]) == (
            "closed",
            2 * N_EACH,
            2 * fails_each,
        )
        # both processes drive the second breaker open at once: exactly one transition
        assert (trip["state"], trip["trips"], trip["epoch"]) == ("open", 1, 1)
        assert 1_000 <= trip["window_calls"] == trip["window_failures"] <= 2 * N_EACH
    finally:
        Segment.unlink(name)
    assert name == segment_name(instance, "breakers")
