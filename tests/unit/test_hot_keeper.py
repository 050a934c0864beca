"""The compiled group's housekeeping thread (``bot4.stages.hotkeeper``): while the main
thread stays inside ``hot_cycle`` (busy-spinning, its deadline a minute away), the keeper
keeps the members' counters, risk's reporting and systemd's watchdog going, and a SIGTERM
reaches the group through it: the cycle comes back with ``R_PENDING`` at its next round,
the group's stop flag set. Run in a child process: the keeper blocks SIGTERM in the
threads of the process it runs in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from bot4.stages.hotkeeper import keeper_cores

_CHILD = textwrap.dedent(
    """
    import json, os, signal, threading, time, types
    import numpy as np
    from bot4.shm import control as C
    from bot4.stages import hotpath as P
    from bot4.stages.hotkeeper import Keeper
    from bot4.stages.loop import StageRunner
    from bot4.shm.ring_layout import W_CONSUMER_POSITION
    from bot4.stages.hotloop import R_PENDING, T_STALE_EVERY

    members, rings = P._bench_members(256)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    seen = {"observe": 0, "checks": 0, "term": 0, "watchdog": 0}
    for m in members:  # the runner's own report over the bench members, checks counted
        m._full_log = None
        def check(seen=seen):
            seen["checks"] += 1
        m._check_positions = check
        m.report = types.MethodType(StageRunner.report, m)
    risk = members[1].stage
    observe = risk.observe
    def counted(now, observe=observe):
        seen["observe"] += 1
        observe(now)
    risk.observe = counted
    class Notifier:
        def watchdog(self, now):
            seen["watchdog"] += 1
    stop = []
    def on_term():
        seen["term"] += 1
        stop.append("keeper")
    signal.signal(signal.SIGTERM, lambda *_: stop.append("handler"))  # as stages.entry
    keeper = hp.keeper = Keeper(members, Notifier(), hp.poke, on_term, None)
    keeper.start()
    from tests.unit.test_hot_cycle import _push, _quotes
    hp.timers[T_STALE_EVERY] = 0  # no stale-data halt while the test waits
    quotes = _quotes(200, 1)  # stamped now, after compiling: risk takes them as fresh
    _push(rings, "risk_md", quotes)  # reference prices first (one round), then the ticks
    hp.run(0, False, 0)
    _push(rings, "ticks", quotes)
    ticks = rings["ticks"][0]
    def kill_after_passes():
        # the cycle read the ticks; then two keeper passes, one begun after that round
        while int(ticks[W_CONSUMER_POSITION]) < 200:
            time.sleep(0.01)
        p = keeper.passes
        while keeper.passes < p + 2:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=kill_after_passes, daemon=True).start()
    t0 = time.monotonic_ns()
    reason, n = hp.run(1 << 62, False, t0)  # busy-spin, deadline HOUSEKEEP_NS away
    passes = keeper.passes
    keeper.stop()
    print(json.dumps({"reason": int(reason), "pending": int(R_PENDING), "passes": passes,
                      "poke": int(hp.poke[0]), "stop": stop, **seen,
                      "values": [int(v) for v in members[2].stage.counter_values()],
                      "in_block": [int(v) for v in members[2].blk[
                          C.S_COUNTER_VALUES : C.S_COUNTER_VALUES
                          + len(members[2].stage.counter_names)].view(np.int64)]}))
    """
)


@pytest.mark.timeout(300)
def test_keeper_keeps_house_beside_the_cycle_and_brings_sigterm_to_it():
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["reason"] == got["pending"]  # back for the SIGTERM, not at the deadline
    assert got["term"] == 1 and got["stop"][0] == "keeper"  # the keeper saw it first
    assert got["poke"] == 0  # HotPath.run cleared the poke
    # the keeper's passes ran while the main thread was inside the compiled cycle
    assert got["passes"] >= 2
    assert got["observe"] >= 2 and got["checks"] >= 3 * 2
    # the cycle beat the heartbeats meanwhile, so the keeper pinged the watchdog
    assert got["watchdog"] >= 2
    # the orders member's own counters (bot4 stats) reached its control-block slot from
    # the keeper, with the cycle still running: the Python round never came
    assert any(got["values"]), "the ticks made no orders: a weak test"
    assert got["in_block"] == got["values"]


class _Topo:
    def __init__(self, cores):
        self.cores = cores

    def units(self):
        return [(f"u{c}", []) for c in self.cores]

    def unit_core(self, name):
        return int(name[1:])

    def pinned_cores(self):
        return set(self.cores)


def test_keeper_runs_off_the_groups_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert keeper_cores(_Topo([1, 2]), 1) == {0, 3}  # cores no unit is pinned to
    assert keeper_cores(_Topo([0, 1, 2, 3]), 1) == {0, 2, 3}  # else all but the group's
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert keeper_cores(_Topo([0]), 0) is None  # one core: it stays there
