"""Identity conflicts at the loader and the ledger: a repeated exec_id with the same content
is a no-op; with different content it is kept in exec_conflicts (ledger_conflicts for
ledger legs), counted, logged at ERROR and alarmed — never dropped as a duplicate — on
every load path (pipelined, COPY falling back to staging, staging, isolating)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bot4.db.loader import Loader
from bot4.journal import JournalWriter
from bot4.records import Code
from tests.db.conftest import (
    expected_positions,
    flow_frames,
    ledger_check,
    make_flow,
    query,
    scalar,
    write_flow,
)

pytestmark = pytest.mark.timeout(120)

SEED = 12
MODES = {  # Loader keyword arguments per path
    "pipeline": dict(small_batch=10_000),
    "fast_then_dedupe": dict(small_batch=0, fast_path=True),
    "dedupe": dict(small_batch=0, fast_path=False),
}


def _positions(dsn: str) -> dict[tuple[int, int], int]:
    return {
        (r[0], r[1]): r[2] for r in query(dsn, "SELECT strategy, instrument, qty FROM positions")
    }


def _restarted_venue_frame(flow, rng):
    """What a journal holds after a venue reused ids: for eight fills of ``flow``, a
    *different* execution under the same exec_id (another order's fill, other quantity and
    price); for six others the same execution again with only seq and stamps changed (a
    repeat); and two new executions sharing one new id within the frame."""
    fills = flow.fills
    pick = rng.choice(len(fills), 14, replace=False)
    reused = fills[pick[:8]].copy()
    reused["client_order_id"] += np.uint64(1_000_000)
    reused["order_id"] += np.uint64(1_000_000)
    reused["last_qty"] += 7
    reused["last_price"] += 300
    reused["seq"] += 5_000_000
    repeats = fills[pick[8:]].copy()
    repeats["seq"] += 6_000_000
    repeats["parent_seq"] += 1
    repeats["ts_venue_ns"] += 999
    twins = fills[pick[:2]].copy()
    twins["exec_id"] = 9_999_999
    twins["seq"] += 7_000_000
    return np.concatenate([reused, repeats, twins]), reused, repeats, twins


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("two_phase", [False, True], ids=["one_db", "two_phase"])
def test_same_exec_id_same_content_is_a_noop_other_content_is_kept_as_a_conflict(
    tmp_path, new_db, caplog, mode, two_phase
):
    print("seed", SEED)
    rng = np.random.default_rng(SEED)
    ev = new_db()
    lg = new_db(ledger=True) if two_phase else None
    flow = make_flow(60, seed=SEED)
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=16)
    extra, reused, repeats, twins = _restarted_venue_frame(flow, rng)
    with JournalWriter(jdir, fsync="none") as w:
        w.append(extra)
    alarms: list[tuple[Code, int]] = []
    caplog.set_level(logging.ERROR, logger="bot4.db.loader")
    with Loader(jdir, ev, lg, journal_id="c", alarm=lambda c, n: alarms.append((c, n)),
                **MODES[mode]) as loader:  # fmt: skip
        loader.load_available()
        stats = loader.stats
    n_conflicts = len(reused) + 1  # the eight reused ids and the second twin
    assert stats.conflicts == n_conflicts and stats.rejected == 0
    assert stats.duplicates == len(repeats)
    assert sum(n for _c, n in alarms) == n_conflicts
    assert {c for c, _n in alarms} == {Code.EXEC_ID_CONFLICT}
    assert sum("kept in exec_conflicts" in r.getMessage() for r in caplog.records) >= 9

    ids = np.unique(flow.execs["exec_id"])
    assert scalar(ev, "SELECT count(*) FROM exec_reports") == len(ids) + 1  # + the first twin
    kept = query(
        ev,
        "SELECT exec_id, last_qty, differs, kept_journal, kept_frame, src_frame "
        "FROM exec_conflicts ORDER BY exec_id, src_index",
    )
    assert len(kept) == n_conflicts
    by_id = {int(r[0]): r for r in kept}
    for r in reused:
        row = by_id[int(r["exec_id"])]
        assert row[1] == int(r["last_qty"])  # the conflicting execution is kept whole
        assert set(row[2]) == {"client_order_id", "order_id", "last_qty", "last_price"}
        assert row[3] == "c" and row[4] < row[5]  # the row holding the id came first
    assert set(by_id[9_999_999][2]) >= {"client_order_id", "last_qty"}

    # positions and ledger moved by the first execution under each id only
    loaded = np.concatenate([flow.fills, twins[:1]])
    want = {k: v["qty"] for k, v in expected_positions(loaded).items()}
    assert _positions(ev) == want
    led = ledger_check(lg or ev)
    assert led == {"fills": len(loaded), "unbalanced": 0}
    assert scalar(lg or ev, "SELECT count(*) FROM ledger_conflicts") == 0

    # the same frames journalled again (persistence restarted) and a reload: nothing new
    with JournalWriter(jdir, fsync="none") as w:
        w.append(extra)
        w.append(flow_frames(flow, 16)[2])
    with Loader(jdir, ev, lg, journal_id="c", alarm=lambda c, n: alarms.append((c, n)),
                **MODES[mode]) as loader:  # fmt: skip
        loader.load_available()
        assert loader.stats.conflicts == 0 and loader.stats.inserted == 0
    assert scalar(ev, "SELECT count(*) FROM exec_conflicts") == n_conflicts
    assert _positions(ev) == want


def test_conflicts_found_while_isolating_refused_rows_are_kept_too(tmp_path, new_db):
    ev = new_db()
    flow = make_flow(30, seed=SEED + 1)
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=64)
    reused = flow.fills[:3].copy()
    reused["last_qty"] += 1
    bad = flow.fills[3:4].copy()
    bad["exec_id"] = 0  # a fill without a venue exec id: CHECK fails, the batch isolates
    with JournalWriter(jdir, fsync="none") as w:
        w.append(np.concatenate([reused, bad]))
    with Loader(jdir, ev, journal_id="iso", small_batch=0) as loader:
        loader.load_available()
        assert loader.stats.isolations >= 1
        assert loader.stats.rejected == 1 and loader.stats.conflicts == 3
    assert scalar(ev, "SELECT count(*) FROM exec_conflicts") == 3
    assert scalar(ev, "SELECT count(*) FROM rejected_rows") == 1


def test_ledger_legs_unlike_the_ones_under_their_key_are_kept_as_ledger_conflicts(tmp_path, new_db):
    """The events database lost its executions (restored from an older backup) while the
    ledger kept its legs: a journal whose fills reuse those ids with other amounts meets
    the old legs; the same fills again are a no-op."""
    lg = new_db(ledger=True)
    flow = make_flow(20, seed=SEED + 2)
    a = tmp_path / "a"
    write_flow(a, flow)
    with Loader(a, new_db(), lg, journal_id="a") as loader:
        loader.load_available()
    legs = scalar(lg, "SELECT count(*) FROM ledger_entries")
    # the same fills into a fresh events database: their legs are there already, identical
    with Loader(a, new_db(), lg, journal_id="a2") as loader:
        loader.load_available()
        assert loader.stats.ledger_rows == 0 and loader.stats.ledger_conflicts == 0
    other = make_flow(20, seed=SEED + 3)  # same ids, other economics
    b = tmp_path / "b"
    write_flow(b, other)
    alarms: list[tuple[Code, int]] = []
    with Loader(b, new_db(), lg, journal_id="b", alarm=lambda c, n: alarms.append((c, n))) as ld:
        ld.load_available()
        kept = ld.stats.ledger_conflicts
    assert kept > 0 and sum(n for _c, n in alarms) == kept
    assert scalar(lg, "SELECT count(*) FROM ledger_conflicts") == kept
    assert scalar(lg, "SELECT count(*) FROM ledger_entries") >= legs
    assert ledger_check(lg)["unbalanced"] == 0


def test_the_pipelined_conflict_check_is_short_enough_for_psycopgs_parse_cache():
    # psycopg caches its parse of a statement's placeholders only for texts up to 4096
    # bytes; the check runs in every batch with executions, parsed again each time if longer
    from psycopg import _queries

    from bot4.db.conflicts import exec_conflicts_sql
    from bot4.db.rows import LAYOUTS, TABLES
    from bot4.records import RT_EXEC_REPORT

    layout = LAYOUTS[RT_EXEC_REPORT]
    (table,) = [t for t in TABLES[RT_EXEC_REPORT] if t.rtype == RT_EXEC_REPORT]
    text = exec_conflicts_sql(table.columns, layout.array_source()).encode()
    assert len(text) <= _queries.MAX_CACHED_STATEMENT_LENGTH, len(text)
