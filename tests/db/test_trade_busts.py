"""Trade busts in the database (events migration 0010): an EXEC_BROKEN report is a row of its
own (exec_id = 2^62 | the broken execution's), inserted once however often the journal
holds it; positions, the ledger and the reconciliation read it as the reversal of the fill
it names, so the table's positions equal the fills that stand."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from bot4.db.loader import Loader
from bot4.db.reconcile import reconcile
from bot4.journal import JournalWriter
from bot4.records import BROKEN_EXEC_ID_BIT, DEFAULT_INSTRUMENTS, EXEC_BROKEN, SIDE_BUY
from tests.db.conftest import make_flow, query, scalar, write_flow

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("small_batch", "two_phase"),
    [(10_000, False), (0, False), (10_000, True), (0, True)],
    ids=["pipeline", "copy", "pipeline-2pc", "copy-2pc"],
)
def test_a_bust_is_loaded_once_and_positions_equal_the_fills_that_stand(
    tmp_path, new_db, small_batch, two_phase
):
    ev = new_db()
    lg = new_db(ledger=True) if two_phase else None
    flow = make_flow(30, seed=11)
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=16)
    broken = flow.fills[::4]  # every 4th fill broken, fees and rebates included
    busts = broken.copy()
    busts["exec_type"] = EXEC_BROKEN
    busts["exec_id"] |= np.uint64(BROKEN_EXEC_ID_BIT)
    busts["seq"] = int(flow.execs["seq"].max()) + 1 + np.arange(len(busts))
    with JournalWriter(jdir, fsync="none") as w:
        w.append(busts[:3])
        w.append(busts)  # journalled again (a persistence restart): loaded once
    with Loader(jdir, ev, lg, journal_id="b", small_batch=small_batch) as loader:
        loader.load_available()
        stats = loader.stats
    assert stats.conflicts == 0 and stats.rejected == 0 and stats.ledger_conflicts == 0
    assert scalar(ev, "SELECT count(*) FROM exec_reports WHERE exec_type = 12") == len(busts)
    assert scalar(ev, "SELECT count(*) FROM broken_fills") == len(busts)
    got = {int(x) for (x,) in query(ev, "SELECT exec_id FROM broken_fills")}
    assert got == {int(x) for x in broken["exec_id"]}

    standing = flow.fills[~np.isin(flow.fills["exec_id"], broken["exec_id"])]
    want_qty: dict[tuple[int, int], int] = {}
    want_fees: dict[tuple[int, int], Decimal] = {}
    for r in standing:
        key = (int(r["strategy"]), int(r["instrument"]))
        q = int(r["last_qty"])
        want_qty[key] = want_qty.get(key, 0) + (q if int(r["side"]) == SIDE_BUY else -q)
        scale = DEFAULT_INSTRUMENTS.price_scale(key[1])
        want_fees[key] = want_fees.get(key, Decimal(0)) + Decimal(int(r["fee"])) / scale
    rows = query(ev, "SELECT strategy, instrument, qty, fees, fills FROM positions")
    assert {(s, i): q for s, i, q, _f, _n in rows if q} == {k: v for k, v in want_qty.items() if v}
    assert {(s, i): f for s, i, _q, f, _n in rows} == want_fees
    assert sum(n for *_, n in rows) == len(flow.fills) + len(busts)

    led = lg or ev
    unbalanced = scalar(
        led,
        "SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY venue, exec_session, "
        "exec_id HAVING sum(debit) <> sum(credit)) u",
    )
    assert unbalanced == 0
    # a bust's legs are its fill's with debit and credit swapped: they cancel out
    net = dict(
        query(
            led,
            "SELECT exec_id - 4611686018427387904, sum(debit) - sum(credit) FROM ledger_entries "
            "WHERE exec_id >= 4611686018427387904 AND account LIKE 'position:%' "
            "GROUP BY exec_id",
        )
    )
    fill = dict(
        query(
            led,
            "SELECT exec_id, sum(debit) - sum(credit) FROM ledger_entries "
            "WHERE exec_id < 4611686018427387904 AND account LIKE 'position:%' GROUP BY exec_id",
        )
    )
    assert len(net) == len(busts)
    assert all(net[k] == -fill[k] for k in net)
    rec = reconcile(jdir, ev, lg, journal_id="b")
    assert rec.ok, rec.summary()
