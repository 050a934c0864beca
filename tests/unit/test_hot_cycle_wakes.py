"""The compiled duty cycle wakes the processes outside the group once per ring
(``bot4.stages.hotloop._wake_peers``, issue 15).

Commits and releases inside the cycle never fence; a ring with a parked peer outside the
group is woken after the round's order path and at the round's end, so:

* a parked consumer of a ring the group committed to is woken (its data signal bumped),
  on every parking ring the round wrote to, including a round that ends in a bail;
* a parked producer of a ring the group released is woken;
* rings whose peer is in the group, or that do not park, are never signalled;
* no wake is left pending in the members' loop-state words after a call.
"""

from __future__ import annotations

import numpy as np

from bot4.shm.ring_layout import (
    W_CONSUMER_PARKED,
    W_DATA_SIGNAL,
    W_PRODUCER_PARKED,
    W_SPACE_SIGNAL,
    W_WAIT,
    WAIT_SPIN_PARK,
)
from bot4.stages import hotloop as H
from bot4.stages import hotpath as P
from tests.unit.test_hot_cycle import _push, _quotes

EXTERNAL_OUT = ("venue_orders", "decisions", "order_events", "exec_events")


def _parked(rings, names, word):
    for n in names:
        hdr = rings[n][0]
        hdr[W_WAIT] = WAIT_SPIN_PARK
        hdr[word] = 1


def test_parked_peers_outside_the_group_are_woken_once_per_round():
    stream = _quotes(200, 1)
    members, rings = P._bench_members(1024)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    _push(rings, "risk_md", stream)  # reference prices first (no wakes asked for yet)
    hp.run(0, False, 0)  # deadline in the past: one round
    _parked(rings, EXTERNAL_OUT, W_CONSUMER_PARKED)
    _parked(rings, ("ticks", "risk_md"), W_PRODUCER_PARKED)  # md waits for room
    _parked(rings, ("intents", "orders"), W_CONSUMER_PARKED)  # in-group: never signalled
    _push(rings, "risk_md", stream[:1])
    _push(rings, "ticks", stream)
    hp.run(0, False, 0)
    hp.to_python()
    assert int(rings["venue_orders"][0][W_DATA_SIGNAL]) == 1, "the venue was not woken"
    for n in ("decisions", "order_events"):
        assert int(rings[n][0][W_DATA_SIGNAL]) == 1, n
    assert int(rings["exec_events"][0][W_DATA_SIGNAL]) == 0  # nothing committed there
    for n in ("ticks", "risk_md"):
        assert int(rings[n][0][W_SPACE_SIGNAL]) == 1, n
    for n in ("intents", "orders"):
        assert int(rings[n][0][W_DATA_SIGNAL]) == 0, n
    for ls in hp.ls:
        assert ls[H.L_WAKE_OUT] == 0 and ls[H.L_WAKE_IN] == 0


def test_a_round_that_bails_wakes_what_it_committed():
    stream = _quotes(200, 1)
    members, rings = P._bench_members(64)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    _parked(rings, ("intents",), W_CONSUMER_PARKED)
    _parked(rings, ("ticks",), W_PRODUCER_PARKED)
    # risk cannot claim (decisions full): signals' batch is read and committed, then the
    # round bails at risk's first input with records
    _push(rings, "decisions", np.zeros(63, rings["decisions"][1].dtype))
    _push(rings, "ticks", stream[:40])
    _push(rings, "risk_md", stream[:10])
    reason, _n = hp.run(0, False, 0)
    hp.to_python()
    assert reason == H.R_BAIL
    assert int(rings["ticks"][0][W_SPACE_SIGNAL]) == 1  # md, outside, told of the room
    assert int(rings["intents"][0][W_DATA_SIGNAL]) == 0  # in-group ring: no signal
    for ls in hp.ls:
        assert ls[H.L_WAKE_OUT] == 0 and ls[H.L_WAKE_IN] == 0
