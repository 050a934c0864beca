"""The database's execution identity is (venue, session, exec_id) (events migration 0006).

An exchange's match numbers are unique per venue and trading day, not for ever: the same
number received in another session is another execution, loaded as one, while the same
number twice within a session with other content is still an identity conflict, kept in
``exec_conflicts`` (``tests/db/test_exec_conflicts.py`` covers every load path for that).
"""

from __future__ import annotations

import numpy as np
import pytest

from bot4.db.loader import Loader
from bot4.journal import JournalWriter
from tests.db.conftest import make_flow, query, scalar, write_flow

pytestmark = pytest.mark.timeout(120)

SESSION = np.uint64(1 << 32)  # the next session's first OMS sequence number


@pytest.mark.parametrize("small_batch", [10_000, 0], ids=["pipeline", "staging"])
def test_an_exec_id_of_another_session_is_another_execution(tmp_path, new_db, small_batch):
    ev = new_db()
    flow = make_flow(40, seed=3)
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=16)
    # the next session's executions reuse the first one's ids (a venue numbering per day),
    # for other orders, quantities and prices
    later = flow.fills[:10].copy()
    later["seq"] += SESSION
    later["client_order_id"] += np.uint64(1_000_000)
    later["order_id"] += np.uint64(1_000_000)
    later["last_qty"] += 5
    later["last_price"] += 200
    # ... and one of them again within that session with other content: a conflict
    twin = later[:1].copy()
    twin["seq"] += 1
    twin["last_qty"] += 1
    with JournalWriter(jdir, fsync="none") as w:
        w.append(later)
        w.append(twin)
    with Loader(jdir, ev, None, journal_id="k", small_batch=small_batch) as loader:
        loader.load_available()
        stats = loader.stats
    ids = len(np.unique(flow.execs["exec_id"]))
    assert stats.conflicts == 1 and stats.rejected == 0
    assert stats.ledger_conflicts == 0  # the later session's fills are fills of their own
    assert scalar(ev, "SELECT count(*) FROM exec_reports WHERE exec_id <> 0") == ids + len(later)
    sessions = dict(
        query(ev, "SELECT exec_session, count(*) FROM exec_reports GROUP BY exec_session")
    )
    assert sessions[1] == len(later)
    ((sess, venue, exec_id),) = query(ev, "SELECT exec_session, venue, exec_id FROM exec_conflicts")
    assert (sess, venue, int(exec_id)) == (1, 0, int(twin["exec_id"][0]))


@pytest.mark.parametrize(
    ("small_batch", "two_phase"),
    [(10_000, False), (0, False), (10_000, True), (0, True)],
    ids=["pipeline", "copy", "pipeline-2pc", "copy-2pc"],
)
def test_venue_is_stored_and_the_ledger_keys_legs_by_execution_identity(
    tmp_path, new_db, small_batch, two_phase
):
    """The loader stores each execution's own venue; the ledger's identity is (venue,
    session, exec_id, leg), so the same exec id from another venue or session is another
    fill with legs of its own, while the same execution journalled again enters nothing."""
    ev = new_db()
    lg = new_db(ledger=True) if two_phase else None
    flow = make_flow(30, seed=5)
    flow.execs["venue"] = 3
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=16)
    other_venue = flow.fills[:6].copy()  # same ids, venue 7, other content
    other_venue["venue"] = 7
    other_venue["last_price"] += 100
    later = flow.fills[6:12].copy()  # same ids and venue, the next session
    later["seq"] += SESSION
    later["last_qty"] += 10
    with JournalWriter(jdir, fsync="none") as w:
        w.append(other_venue)
        w.append(later)
        w.append(flow.fills[:4])  # a frame journalled again: no-op
    with Loader(jdir, ev, lg, journal_id="v", small_batch=small_batch) as loader:
        loader.load_available()
        stats = loader.stats
    n_fills = len(flow.fills) + len(other_venue) + len(later)
    assert stats.conflicts == 0 and stats.ledger_conflicts == 0 and stats.rejected == 0
    assert stats.fills == n_fills
    venues = dict(query(ev, "SELECT venue, count(*) FROM exec_reports GROUP BY venue"))
    assert venues == {3: len(flow.execs) + len(later), 7: len(other_venue)}
    led = lg or ev
    got = dict(
        query(
            led,
            "SELECT venue * 100 + exec_session, count(DISTINCT exec_id) FROM ledger_entries "
            "GROUP BY venue, exec_session",
        )
    )
    assert got == {300: len(flow.fills), 700: len(other_venue), 301: len(later)}
    assert scalar(led, "SELECT count(*) FROM ledger_conflicts") == 0
    unbalanced = scalar(
        led,
        "SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY venue, exec_session, "
        "exec_id HAVING sum(debit) <> sum(credit)) u",
    )
    assert unbalanced == 0
    from bot4.db.reconcile import reconcile

    rec = reconcile(jdir, ev, lg, journal_id="v")
    assert rec.ok, rec.summary()


def test_a_ledger_leg_under_a_taken_identity_with_other_amounts_is_a_conflict(tmp_path, new_db):
    """The ledger's own idempotency: legs arriving under an identity (venue, session,
    exec_id, leg) that holds other amounts are kept in ledger_conflicts, counted and
    alarmed, never entered or dropped as duplicates."""
    ev, lg = new_db(), new_db(ledger=True)
    flow = make_flow(10, seed=9)
    flow.execs["venue"] = 2
    write_flow(tmp_path / "a", flow)
    with Loader(tmp_path / "a", new_db(), lg, journal_id="a") as first:
        first.load_available()  # another events database filled the ledger first
    changed = make_flow(10, seed=9)
    changed.execs["venue"] = 2
    changed.execs["last_price"] += 300
    write_flow(tmp_path / "b", changed)
    alarms = []
    with Loader(
        tmp_path / "b", ev, lg, journal_id="b", alarm=lambda c, n: alarms.append(n)
    ) as loader:
        loader.load_available()
        stats = loader.stats
    kept = scalar(lg, "SELECT count(*) FROM ledger_conflicts")
    assert stats.ledger_conflicts == kept > 0
    assert sum(alarms) == kept
    assert set(query(lg, "SELECT DISTINCT venue FROM ledger_conflicts")) == {(2,)}
