"""A late reconciliation disagreement halts the instrument when the orders stage runs in
the hot group's compiled duty cycle, as it does in a dedicated orders stage (issue 12,
issue 15).

A restarted OMS reconciles (Python path: the compiled cycle steps aside while it does),
then a venue STATUS saying an order we hold cancelled still works arrives through the
``venue_execs`` ring and is read by ``hot_cycle``: the instrument is HALTED with reason
RECONCILE_MISMATCH from the OMS (``OrdersStage.after_reports``, which ``HotPath.run``
calls after a call that read records), the other instrument stays active.
"""

from __future__ import annotations

from bot4.records import ACTION_CANCEL, OS_NEW, OS_PARTIALLY_FILLED
from bot4.stages import hotpath as P
from tests.unit.test_hot_cycle import _push
from tests.unit.test_oms import Driver, FakeVenue, _session_with_open_orders, cid, order
from tests.unit.test_oms_reconcile import _halted, _status, _trading


def test_a_late_disagreement_read_by_the_compiled_cycle_halts_its_instrument():
    v = FakeVenue()
    snap, next_id, (a, b) = _session_with_open_orders(v)
    v.answer_queries = False
    members, rings = P._bench_members(1024)
    st = members[2].stage
    words = _trading(st)
    d = Driver(st, v)
    st.restore_open_orders(snap, next_id)
    d.run()
    d.q[1].append(_status(a, OS_PARTIALLY_FILLED, 40, 60, exec_id=9001))
    d.q[1].append(_status(b, OS_NEW, 0, 50, inst=2, exec_id=9002))
    d.run()
    assert not st.reconciling
    d.send(order(cid(1, 9), action=ACTION_CANCEL, orig=b))
    d.run()
    assert not _halted(words, 2)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()
    assert hp.ready()  # reconciled: the compiled cycle runs the orders stage
    # the venue says b still works: we hold it cancelled
    _push(rings, "venue_execs", _status(b, OS_NEW, 0, 50, inst=2, exec_id=9003))
    _reason, n = hp.run(0, False, 0)
    hp.to_python()
    assert n == 1
    assert st.summary()["needs_operator"] == {2: 1}
    assert _halted(words, 2) and not _halted(words, 1)
