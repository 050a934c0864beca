"""The kill switch reaches a compiled hot group at once, not at its next Python round
(issue 15's tail): ``hot_cycle`` polls the trading-state words after every round and
returns ``R_PENDING`` when risk has CANCEL_ALLs queued, so the group's Python round
sends them now. The deadline here is 50 ms away and the strategy never idles, so without
the poll the call would come back with ``R_DEADLINE`` (and the kill switch's CANCEL_ALL
would wait for that round)."""

from __future__ import annotations

import time

from bot4.shm.trading_state import HALTED, SRC_OPERATOR, raise_state
from bot4.stages import hotpath as P
from bot4.stages.hotloop import R_IDLE, R_PENDING


def _hot():
    members, _rings = P._bench_members(256)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    return members, hp


def test_an_operator_halt_returns_the_compiled_cycle_with_cancel_alls_pending():
    members, hp = _hot()
    risk = members[1].stage
    assert risk.pending(time.monotonic_ns()) == 0  # its stale check ran: next in 50 ms
    # nothing halted: a cycle without a spin phase comes back idle, nothing queued
    reason, n = hp.run(0, False, time.monotonic_ns())
    assert (reason, n) == (R_IDLE, 0)
    words = risk.book.st.trading
    raise_state(words, 0, HALTED, 1, SRC_OPERATOR)  # the operator's global kill switch
    reason, n = hp.run(1 << 62, False, time.monotonic_ns())  # busy-spin, 50 ms deadline
    assert (reason, n) == (R_PENDING, 0)
    assert risk.pending(time.monotonic_ns()) == 1  # one CANCEL_ALL for the group's hook
