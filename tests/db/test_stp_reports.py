"""Self-trade prevention reports in the events database (migration 0003): the venue's
EXEC_STP_EXPIRED / EXEC_STP_DECREMENTED load with their prevented quantity on every load
path, are never fills (no ledger leg, no position), and the journal reconciles."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.db.loader import Loader
from bot4.db.reconcile import reconcile
from bot4.records import (
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    OS_EXPIRED,
    OS_NEW,
)
from tests.db.conftest import ledger_check, load_counts, make_flow, query, write_flow
from tests.db.test_loader import assert_positions_match, table_dump

pytestmark = pytest.mark.timeout(120)


def stp_flow():
    """A flow where 3 orders' single fill is instead an STP expiry of the whole order, and
    3 split orders' partial fill is instead an STP decrement (the rest still fills)."""
    flow = make_flow(40, seed=14)
    e = flow.execs
    single, split = [], []
    for k in range(1, len(e)):
        if e[k]["client_order_id"] != e[k - 1]["client_order_id"]:
            continue
        if e[k]["exec_type"] == EXEC_PARTIAL_FILL:
            split.append(k)
        elif e[k]["exec_type"] == EXEC_FILL and e[k - 1]["last_qty"] == 0:
            single.append(k)
    for k in single[:3]:
        q = int(e[k]["last_qty"])
        e[k]["exec_type"], e[k]["status"], e[k]["prevented_qty"] = EXEC_STP_EXPIRED, OS_EXPIRED, q
        e[k]["last_qty"] = e[k]["last_price"] = e[k]["fee"] = e[k]["cum_qty"] = 0
        e[k]["leaves_qty"] = 0
    for k in split[:3]:
        q = int(e[k]["last_qty"])
        e[k]["exec_type"], e[k]["status"], e[k]["prevented_qty"] = EXEC_STP_DECREMENTED, OS_NEW, q
        e[k]["last_qty"] = e[k]["last_price"] = e[k]["fee"] = e[k]["cum_qty"] = 0
        e[k + 1]["cum_qty"] = e[k + 1]["last_qty"]
    assert len(single) >= 3 and len(split) >= 3
    return flow, [int(e[k]["exec_id"]) for k in single[:3] + split[:3]]


def test_stp_reports_load_on_every_path_and_are_not_fills(tmp_path, new_db):
    flow, stp_ids = stp_flow()
    write_flow(tmp_path / "j", flow, frame_size=8)
    want = {i: int(flow.execs["prevented_qty"][flow.execs["exec_id"] == i][0]) for i in stp_ids}
    dumps = []
    for fast, small in ((True, 0), (False, 0), (True, 10**6)):  # COPY, staging, pipelined
        ev, lg = new_db(), new_db(ledger=True)
        with Loader(
            tmp_path / "j", ev, lg, journal_id="stp", fast_path=fast, small_batch=small
        ) as loader:
            assert loader.load_available() == len(flow)
        counts = load_counts(ev)
        assert counts["rejected_rows"] == 0 and counts["exec_reports"] == len(flow.execs)
        got = dict(
            (int(i), int(p))
            for i, p in query(
                ev, "SELECT exec_id, prevented_qty FROM exec_reports WHERE exec_type IN (10, 11)"
            )  # fmt: skip
        )
        assert got == want
        assert ledger_check(lg) == {"fills": len(flow.fills), "unbalanced": 0}
        assert_positions_match(ev, flow.fills)
        rec = reconcile(tmp_path / "j", ev, lg, journal_id="stp")
        assert rec.ok, rec.differences
        dumps.append(table_dump(ev, "exec_reports", "exec_id, seq"))
    assert dumps[0] == dumps[1] == dumps[2]
    assert np.count_nonzero(flow.execs["prevented_qty"]) == 6
