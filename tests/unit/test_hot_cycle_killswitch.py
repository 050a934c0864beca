"""The kill switch and stale market data reach a compiled hot group at once, not at its
next Python round (issue 15's tail): ``hot_cycle`` runs risk's stale-data check every
``stale_every`` and polls the trading-state words after every round, and returns
``R_PENDING`` when risk has CANCEL_ALLs queued, so the group's Python round sends them
now. The deadline here is 0.5 s away and the strategy never idles, so without them the
call would come back with ``R_DEADLINE`` (and the CANCEL_ALL would wait for that round)."""

from __future__ import annotations

import logging
import time

import numpy as np

from bot4.risk.layout import I_MD_NS, L_KNOWN, L_STALE_NS
from bot4.shm.trading_state import HALTED, SRC_OPERATOR, raise_state
from bot4.stages import hotpath as P
from bot4.stages.hotloop import R_IDLE, R_PENDING, T_STALE_EVERY

_RINGS = {}  # HotPath id -> its bench rings


def _hot():
    members, rings = P._bench_members(256)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    _RINGS[id(hp)] = rings
    return members, hp


def test_an_operator_halt_returns_the_compiled_cycle_with_cancel_alls_pending():
    members, hp = _hot()
    risk = members[1].stage
    assert risk.pending(time.monotonic_ns()) == 0
    # nothing halted: a cycle without a spin phase comes back idle, nothing queued
    reason, n = hp.run(0, False, time.monotonic_ns())
    assert (reason, n) == (R_IDLE, 0)
    words = risk.book.st.trading
    raise_state(words, 0, HALTED, 1, SRC_OPERATOR)  # the operator's global kill switch
    reason, n = hp.run(1 << 62, False, time.monotonic_ns())  # busy-spin, 0.5 s deadline
    assert (reason, n) == (R_PENDING, 0)
    assert risk.pending(time.monotonic_ns()) == 1  # one CANCEL_ALL for the group's hook


def test_stale_market_data_found_by_the_compiled_cycle_is_acted_on_and_logged(caplog):
    members, hp = _hot()
    risk = members[1].stage
    assert risk.pending(time.monotonic_ns()) == 0
    st = risk.book.st
    known = np.nonzero((st.ilim[:, L_KNOWN] != 0) & (st.ilim[:, L_STALE_NS] > 0))[0]
    inst = int(known[0])
    # its last market data 10 s ago, well past stale_after_ms
    st.inst[inst, I_MD_NS] = time.monotonic_ns() - 10_000_000_000
    assert hp.timers[T_STALE_EVERY] > 0  # the cycle runs the check
    reason, n = hp.run(1 << 62, False, time.monotonic_ns())
    assert (reason, n) == (R_PENDING, 0)
    with caplog.at_level(logging.WARNING, logger="bot4.stage"):
        assert risk.pending(time.monotonic_ns()) == 1  # its CANCEL_ALL
    stale = [r.getMessage() for r in caplog.records if "market data stale" in r.getMessage()]
    assert len(stale) == 1 and "(1 new)" in stale[0], stale


def test_the_compiled_cycle_keeps_heartbeats_and_record_counters_live():
    """With the Python round seconds apart, the cycle itself beats every member's heartbeat
    (the supervisor's liveness) and counts batches and records into the control block
    (bot4 stats), the totals the Python round writes again later."""
    from bot4.shm import control as C
    from tests.unit.test_hot_cycle import _push, _quotes

    members, hp = _hot()
    members[1].stage.pending(time.monotonic_ns())
    t0 = time.monotonic_ns()
    quotes = _quotes(40, 1)
    _push(_RINGS[id(hp)], "ticks", quotes)
    reason, n = hp.run(0, False, t0)  # spin 0: back once the ticks are done
    assert reason == R_IDLE and n == 40
    sig = members[0]
    assert int(sig.blk[C.S_HEARTBEAT_NS]) >= t0
    assert int(sig.blk[C.S_RECORDS_IN]) == 40
    assert int(sig.blk[C.S_BATCHES]) >= 1
    hp.to_python()
    assert sig.records_in == 40  # the Python mirror agrees once it catches up
