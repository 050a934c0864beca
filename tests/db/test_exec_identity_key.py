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
    assert scalar(ev, "SELECT count(*) FROM exec_reports WHERE exec_id <> 0") == ids + len(later)
    sessions = dict(
        query(ev, "SELECT exec_session, count(*) FROM exec_reports GROUP BY exec_session")
    )
    assert sessions[1] == len(later)
    ((sess, venue, exec_id),) = query(ev, "SELECT exec_session, venue, exec_id FROM exec_conflicts")
    assert (sess, venue, int(exec_id)) == (1, 0, int(twin["exec_id"][0]))
