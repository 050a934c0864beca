"""The journal loader: exact round trip, exactly once under reloads and duplicated frames,
positions from inserted fills only, refused rows isolated, serialization failures retried,
and the journal read incrementally from any frame."""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest

from bot4.db.encoding import Field, copy_stream, numeric_payload, split_sign
from bot4.db.loader import JournalBehindDatabase, Loader, LoadRetriesExhausted
from bot4.db.positions import Position, apply_fill
from bot4.journal import JournalReader, JournalTail, JournalWriter
from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_REPLACE,
    DECISION_NONE,
    INT64_MAX,
    INT64_MIN,
    MARKET_DATA,
    RT_EXEC_REPORT,
    RT_ORDER,
    RT_RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
    Code,
    from_fixed,
    load_instruments,
)
from tests.db.conftest import (
    SCALE,
    concat_flows,
    expected_positions,
    flow_frames,
    ledger_check,
    load_counts,
    make_flow,
    money,
    query,
    scalar,
    unique_fills,
    write_flow,
)

pytestmark = pytest.mark.timeout(90)


def positions(dsn: str) -> dict[tuple[int, int], tuple]:
    rows = query(
        dsn,
        "SELECT strategy, instrument, qty, cost, realised_pnl, fees, bought_qty, sold_qty, fills "
        "FROM positions",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def assert_positions_match(dsn: str, fills: np.ndarray, ordered: bool = True) -> None:
    """Exact sums; cost - realised equal to the signed notional (exact, whatever the
    rounding); with ``ordered`` (the fills applied in this order) cost and realised within
    a unit per fill of the exact Fraction model (average cost depends on the order)."""
    want = expected_positions(fills)
    got = positions(dsn)
    assert set(got) == set(want)
    unit = Decimal(1) / SCALE
    for key, p in want.items():
        qty, cost, pnl, fees, bought, sold, n = got[key]
        assert (qty, bought, sold, n) == (p["qty"], p["bought"], p["sold"], p["fills"]), key
        assert fees == money(p["fees"])
        assert cost - pnl == money(p["notional"])
        if not ordered:
            continue
        assert abs(cost - Decimal(p["cost"].numerator) / p["cost"].denominator / SCALE) <= n * unit
        assert abs(pnl - Decimal(p["pnl"].numerator) / p["pnl"].denominator / SCALE) <= n * unit
        if qty == 0:
            assert cost == 0


def special_flow():
    """A flow plus the corner cases: market order (no limit), a replace, a cancel, a
    CANCEL_ALL for every instrument, an OMS replace id above 2**63, a rebate, operator
    actions."""
    flow = make_flow(40, operator_actions=3)
    o = flow.orders
    o[0]["limit_price"] = 0  # market
    o[1]["action"] = ACTION_REPLACE
    o[1]["client_order_id"] = (0xFFFF << 48) | 7  # OMS replace id: above 2**63
    o[1]["orig_client_order_id"] = o[2]["client_order_id"]
    extra = o[3:5].copy()
    extra[0]["action"] = ACTION_CANCEL
    extra[0]["seq"] = 9001
    extra[1]["action"] = ACTION_CANCEL_ALL
    extra[1]["instrument"] = 0
    extra[1]["seq"] = 9002
    flow.orders = np.concatenate([o, extra])
    fills = np.nonzero(flow.execs["last_qty"] > 0)[0]
    flow.execs[fills[0]]["fee"] = -123  # rebate
    flow.execs[fills[1]]["last_price"] = 1_234_567  # 123.4567: every decimal place
    return flow


def test_round_trip_rows_and_values_are_exact(tmp_path, dbs):
    ev, lg = dbs
    flow = special_flow()
    write_flow(tmp_path / "j", flow, frame_size=8)
    with Loader(tmp_path / "j", ev, lg, journal_id="rt") as loader:
        assert loader.load_available() == len(flow)
        assert loader.position() == len(flow_frames(flow, 8))
        assert loader.stats.fast_batches >= 1 and loader.stats.duplicates == 0
    counts = load_counts(ev)
    assert counts == {
        "orders": 40, "order_actions": 2, "exec_reports": len(flow.execs),
        "risk_decisions": 40, "operator_actions": 3, "rejected_rows": 0,
    }  # fmt: skip
    rows = {
        (int(c), int(o)): (lim, stop, orig, src)
        for c, o, lim, stop, orig, src in query(
            ev, "SELECT client_order_id, order_id, limit_price, stop_price, "
            "orig_client_order_id, src_journal FROM orders"
        )
    }  # fmt: skip
    for rec in flow.orders[:40]:
        lim, stop, orig, src = rows[(int(rec["client_order_id"]), int(rec["order_id"]))]
        want = None if rec["limit_price"] == 0 else from_fixed(int(rec["limit_price"]), SCALE)
        assert lim == want and (lim is None or str(lim) == str(want))  # value and scale
        assert stop is None and src == "rt"
        want_orig = int(rec["orig_client_order_id"]) or None
        assert (orig if orig is None else int(orig)) == want_orig
    assert (0xFFFF << 48 | 7, int(flow.orders[1]["order_id"])) in rows
    got = {
        int(e): (str(p), str(f), q)
        for e, p, f, q in query(ev, "SELECT exec_id, last_price, fee, last_qty FROM exec_reports")
    }
    for rec in flow.execs:
        price = from_fixed(int(rec["last_price"]), SCALE)
        fee = from_fixed(int(rec["fee"]), SCALE)
        assert got[int(rec["exec_id"])] == (str(price), str(fee), int(rec["last_qty"]))
    fills_at = np.nonzero(flow.execs["last_qty"] > 0)[0]
    assert got[int(flow.execs[fills_at[0]]["exec_id"])][1] == "-0.0123"  # the rebate
    assert got[int(flow.execs[fills_at[1]]["exec_id"])][0] == "123.4567"
    cancel_all = query(ev, "SELECT instrument, limit_price FROM order_actions WHERE action = 5")
    assert cancel_all[0][0] == 0
    ops = query(ev, "SELECT who, note, action FROM operator_actions ORDER BY seq")
    assert ops == [("alice", "halt for test", 3)] * 3
    # the ledger: every fill, balanced, cash and position legs worth the fills
    fills = flow.fills
    assert ledger_check(lg) == {"fills": len(fills), "unbalanced": 0}
    notional = sum(int(r["last_price"]) * int(r["last_qty"]) * int(r["side"]) for r in fills)
    fees = sum(int(r["fee"]) for r in fills)
    balances = dict(query(lg, "SELECT account, balance FROM ledger_balances"))
    assert balances["cash"] == money(-notional - fees)
    assert balances["fees"] == money(fees)
    assert sum(v for k, v in balances.items() if k.startswith("position:")) == money(notional)
    assert_positions_match(ev, fills)


def table_dump(dsn: str, table: str, order: str) -> list[tuple]:
    cols = [
        r[0]
        for r in query(
            dsn,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND column_name NOT IN ('loaded_at', 'created_at', 'updated_at') ORDER BY ordinal_position",
            (table,),
        )
    ]
    return query(
        dsn, f"SELECT {', '.join(c + '::text' for c in cols)} FROM {table} ORDER BY {order}"
    )


def test_copy_staging_and_pipelined_paths_write_identical_rows(tmp_path, new_db):
    flow = special_flow()
    write_flow(tmp_path / "j", flow, frame_size=8)
    dumps = []
    for fast, small in ((True, 0), (False, 0), (True, 10**6)):  # COPY, staging, pipelined
        ev, lg = new_db(), new_db(ledger=True)
        with Loader(
            tmp_path / "j", ev, lg, journal_id="same", fast_path=fast, small_batch=small
        ) as loader:
            loader.load_available()
            assert (loader.stats.fast_batches > 0) == (fast and not small)
        dumps.append(
            [
                table_dump(ev, "orders", "client_order_id, order_id"),
                table_dump(ev, "order_actions", "client_order_id, order_id, action, seq"),
                table_dump(ev, "exec_reports", "exec_id, seq"),
                table_dump(ev, "risk_decisions", "intent_producer, intent_seq"),
                table_dump(ev, "operator_actions", "who, seq, ts_ns"),
                table_dump(ev, "positions", "strategy, instrument"),
                table_dump(lg, "ledger_entries", "exec_id, leg"),
            ]
        )
    assert dumps[0] == dumps[1] == dumps[2]
    assert all(dumps[0])


def test_numeric_encoding_is_exact_at_the_extremes(new_db):
    dsn = new_db()
    units = np.array([0, 1, -1, 9_999, -10_001, INT64_MAX, INT64_MIN, 123_456_789], dtype=np.int64)
    scales = (1, 100, 256, 10_000, 10**6, 2**10 * 5**3, 10**16)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE n (v numeric, u numeric(20,0))")
        for scale in scales:
            d = -from_fixed(1, scale).as_tuple().exponent
            g = -(-d // 4)
            mag, neg = split_sign(units)
            u64 = np.array([0, 1, 2**63, 2**64 - 1, 10**19, 7, 8, 9], dtype=np.uint64)
            fields = [
                Field(numeric_payload(mag, neg, scale, d, g)),
                Field(numeric_payload(u64, None, 1, 0, 0)),
            ]
            conn.execute("TRUNCATE n")
            with conn.cursor().copy("COPY n FROM STDIN (FORMAT BINARY)") as cp:
                for chunk in copy_stream(fields, len(units)):
                    cp.write(chunk)
            got = conn.execute("SELECT v::text, u FROM n").fetchall()
            values = [Decimal(text) for text, _ in got]
            assert values == [from_fixed(int(x), scale) for x in units], scale
            assert {v.as_tuple().exponent for v in values} == {-d}  # the scale's places
            assert [int(u) for _, u in got] == [int(x) for x in u64]


def test_reloading_and_duplicated_frames_land_each_event_once(tmp_path, dbs):
    ev, lg = dbs
    jdir = tmp_path / "j"
    first = make_flow(300, seed=1)
    write_flow(jdir, first, frame_size=16)
    with Loader(jdir, ev, lg, journal_id="dup", batch_records=256) as loader:
        loader.load_available()
    # a second loader (a restart) finds nothing new
    with Loader(jdir, ev, lg, journal_id="dup") as loader:
        assert loader.load_available() == 0
    # persistence crashed after journaling but before releasing its rings: the same
    # batches are journaled again, mixed with new ones, and two overlapping flows
    second = make_flow(200, start=250, seed=1)  # intents 251..450: 251..300 already loaded
    frames = flow_frames(first, 16)
    with JournalWriter(jdir, fsync="none") as w:
        for f in frames[-9:]:
            w.append(f)
        for f in flow_frames(second, 16):
            w.append(f)
        for f in frames[:3]:
            w.append(f)
    with Loader(jdir, ev, lg, journal_id="dup", batch_records=256) as loader:
        loader.load_available()
        assert loader.stats.duplicates > 0 and loader.stats.dedupe_batches > 0
        assert loader.stats.fast_batches > 0  # the clean batches still take the fast path
    everything = concat_flows([first, second])
    fills = unique_fills(everything)
    counts = load_counts(ev)
    assert counts["orders"] == counts["risk_decisions"] == 450
    assert counts["exec_reports"] == len(np.unique(everything.execs["exec_id"]))
    assert sorted(map(int, fills["exec_id"])) == sorted(
        int(r[0]) for r in query(ev, "SELECT exec_id FROM exec_reports WHERE last_qty > 0")
    )
    assert ledger_check(lg) == {"fills": len(fills), "unbalanced": 0}
    assert_positions_match(ev, fills)  # positions moved once per fill


def test_refused_rows_are_isolated_and_recorded_the_rest_commits(tmp_path, dbs):
    ev, lg = dbs
    flow = make_flow(50, seed=3)
    bad_exec = int(np.nonzero(flow.execs["last_qty"] > 0)[0][5])
    flow.execs[bad_exec]["exec_id"] = 0  # a fill without a venue exec id: CHECK fails
    flow.orders[7]["qty"] = 0  # CHECK (qty > 0)
    flow.decisions[9]["decision"] = DECISION_NONE  # CHECK (decision IN (1, 2))
    flow.decisions[11]["instrument"] = 77  # not in the instrument table
    jdir = tmp_path / "j"
    write_flow(jdir, flow, frame_size=64)
    with Loader(jdir, ev, lg, journal_id="rej") as loader:
        assert loader.load_available() == len(flow)
        assert loader.stats.rejected == 4 and loader.stats.isolations == 1
    with Loader(jdir, ev, lg, journal_id="rej") as loader:  # reload: nothing new, no new rejects
        assert loader.load_available() == 0
    rejected = query(
        ev, "SELECT record_type, code, sqlstate, reason, payload FROM rejected_rows ORDER BY 1, 2"
    )
    assert [(r[0], r[1], r[2]) for r in rejected] == [
        (RT_ORDER, Code.CONSTRAINT_VIOLATION, "23514"),
        (RT_EXEC_REPORT, Code.CONSTRAINT_VIOLATION, "23514"),
        (RT_RISK_DECISION, Code.UNKNOWN_INSTRUMENT, None),
        (RT_RISK_DECISION, Code.CONSTRAINT_VIOLATION, "23514"),
    ]
    payloads = {bytes(r[4]) for r in rejected}
    assert flow.orders[7:8].tobytes() in payloads
    assert flow.execs[bad_exec : bad_exec + 1].tobytes() in payloads
    assert "orders_qty_check" in rejected[0][3]
    counts = load_counts(ev)
    assert counts["orders"] == 49 and counts["risk_decisions"] == 48
    assert counts["exec_reports"] == len(flow.execs) - 1
    good_fills = np.delete(flow.execs, bad_exec)
    good_fills = good_fills[good_fills["last_qty"] > 0]
    assert ledger_check(lg) == {"fills": len(good_fills), "unbalanced": 0}
    assert_positions_match(ev, good_fills)


def test_concurrent_writers_forced_into_serialization_failures_commit_once(tmp_path, dbs):
    """Two loaders (two journals) move the same positions at the same moment: both read
    them, then both write. Allowed outcome: one commits, the other fails with 40001 and is
    retried; in the end both journals are loaded once and positions count every fill."""
    ev, lg = dbs
    flows = [make_flow(60, start=0, seed=5, instruments=(1,), strategies=(1,)),
             make_flow(60, start=1000, seed=6, instruments=(1,), strategies=(1,))]  # fmt: skip
    for k, flow in enumerate(flows):
        write_flow(tmp_path / f"j{k}", flow, frame_size=8)
    barrier = threading.Barrier(2, timeout=120)  # generous: a loaded CI machine
    first_time: set[str] = set()

    def hook(point: str) -> None:
        name = threading.current_thread().name
        if point == "positions-read" and name not in first_time:
            first_time.add(name)
            barrier.wait()  # both transactions have read the same position row

    loaders = [
        Loader(tmp_path / f"j{k}", ev, lg, journal_id=f"w{k}", batch_records=64, hook=hook)
        for k in range(2)
    ]
    for loader in loaders:  # migrate and register before the race
        loader.load_available(max_batches=0)
    errors: list[BaseException] = []
    exhausted: list[str] = []

    def run(loader: Loader) -> None:
        # as follow() does: a batch that lost MAX_RETRIES + 1 races in a row (the other
        # loader keeps moving the same row meanwhile; more likely the more loaded the
        # machine) raises LoadRetriesExhausted, "retry later": call again
        try:
            while True:
                try:
                    if not loader.load_available():
                        return
                except LoadRetriesExhausted as exc:
                    exhausted.append(str(exc))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(ld,), name=f"w{k}") for k, ld in enumerate(loaders)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    retries = sum(ld.stats.retries for ld in loaders)
    failures = sum(ld.stats.serialization_failures + ld.stats.deadlocks for ld in loaders)
    assert retries >= 1 and failures == retries + len(exhausted), exhausted
    for loader in loaders:
        loader.close()
    everything = concat_flows(flows)
    assert load_counts(ev)["exec_reports"] == len(everything.execs)
    assert ledger_check(lg) == {"fills": len(everything.fills), "unbalanced": 0}
    assert_positions_match(ev, everything.fills, ordered=False)  # commit order decides


def test_journal_tail_reads_from_any_frame_across_segments(tmp_path):
    jdir = tmp_path / "j"
    rng = np.random.default_rng(0)
    with JournalWriter(jdir, fsync="none", max_bytes=4096) as w:  # many small segments
        for i in range(60):
            recs = np.zeros(int(rng.integers(1, 20)), MARKET_DATA)
            recs["seq"] = i
            w.append(recs)
    everything = list(JournalReader(jdir))
    assert len({p.name for p in jdir.glob("journal-*.bj4")}) > 5
    for start in (0, 1, 17, 33, 59, 60):
        tail = JournalTail(jdir, start)
        got = []
        while frames := tail.read(max_records=25):
            assert len(frames) == 1 or sum(len(r) for _, _, r in frames) <= 25
            got += frames
        assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in everything[start:]]
        assert all((a[2] == b[2]).all() for a, b in zip(got, everything[start:], strict=True))
        tail.close()
    with pytest.raises(JournalBehindDatabase):
        JournalTail(jdir, 61)


def test_journal_tail_waits_at_a_torn_tail_and_reads_what_replaces_it(tmp_path):
    jdir = tmp_path / "j"
    with JournalWriter(jdir, fsync="none") as w:
        w.append(np.zeros(3, MARKET_DATA))
    last = sorted(jdir.glob("journal-*.bj4"))[-1]
    with open(last, "ab") as f:
        f.write(b"BJ4F" + b"\x00" * 20)  # a frame torn by a crash mid-write
    tail = JournalTail(jdir, 0)
    assert len(tail.read(100)) == 1
    assert tail.read(100) == [] and tail.read(100) == []  # waits, no error
    with JournalWriter(jdir, fsync="none") as w:  # the restarted writer truncates, appends
        assert w.truncated_bytes == 24
        w.append(np.ones(2, MARKET_DATA))
    frames = tail.read(100)
    assert [(i, len(r)) for i, _, r in frames] == [(1, 2)]


def test_loader_follows_a_journal_being_written(tmp_path, dbs):
    ev, lg = dbs
    jdir = tmp_path / "j"
    flows = [make_flow(30, start=30 * k, seed=k) for k in range(5)]
    with (
        JournalWriter(jdir, fsync="batch", max_bytes=16 << 10) as writer,
        Loader(jdir, ev, lg, journal_id="live", batch_records=50) as loader,
    ):
        assert loader.load_available() == 0  # nothing journaled yet
        for flow in flows:
            for frame in flow_frames(flow, 8):
                writer.append(frame)
            writer.flush()
            assert loader.load_available() == len(flow)
        assert loader.position() == writer.next_frame
    everything = concat_flows(flows)
    assert load_counts(ev)["exec_reports"] == len(everything.execs)
    assert_positions_match(ev, everything.fills)


def test_a_replaced_journal_under_the_same_id_is_refused(tmp_path, dbs):
    ev, lg = dbs
    jdir = tmp_path / "j"
    write_flow(jdir, make_flow(20), frame_size=4)
    with Loader(jdir, ev, lg, journal_id="same") as loader:
        loader.load_available()
    for p in jdir.glob("journal-*.bj4"):
        p.unlink()
    os.utime(jdir)
    write_flow(jdir, make_flow(5, start=500), frame_size=4)  # fewer frames, new identity
    with Loader(jdir, ev, lg, journal_id="same") as loader, pytest.raises(JournalBehindDatabase):
        loader.load_available()


def test_ledger_in_the_events_database_needs_no_two_phase_commit(tmp_path, new_db):
    ev = new_db()
    flow = make_flow(80, seed=9)
    write_flow(tmp_path / "j", flow, frame_size=16)
    with Loader(tmp_path / "j", ev, None, journal_id="one", batch_records=100) as loader:
        loader.load_available()
        assert loader.stats.twophase == 0 and loader.stats.batches > 1
    assert not (tmp_path / "j" / "coordinator" / "journal-0000000000000000.bj4").stat().st_size > 32
    assert ledger_check(ev) == {"fills": len(flow.fills), "unbalanced": 0}
    assert_positions_match(ev, flow.fills)


def test_instruments_with_other_scales_convert_exactly(tmp_path, dbs):
    ev, lg = dbs
    table = load_instruments(
        {"instrument": [
            {"id": 1, "symbol": "BTC", "price_scale": 100_000_000, "tick_size": "0.01"},
            {"id": 2, "symbol": "X256", "price_scale": 256, "tick_size": "0.00390625"},
        ]}
    )  # fmt: skip
    flow = make_flow(30, instruments=(1, 2), seed=11)
    write_flow(tmp_path / "j", flow, frame_size=8)
    with Loader(tmp_path / "j", ev, lg, journal_id="sc", instruments=table) as loader:
        loader.load_available()
        assert loader.stats.fast_batches > 0
    got = dict(query(ev, "SELECT exec_id, last_price FROM exec_reports"))
    for rec in flow.execs:
        scale = table.price_scale(int(rec["instrument"]))
        price = got[Decimal(int(rec["exec_id"]))]
        assert price == from_fixed(int(rec["last_price"]), scale)
        assert price.as_tuple().exponent == -8  # both scales need 8 places
    assert ledger_check(lg)["unbalanced"] == 0


@pytest.mark.parametrize(
    ("fills", "qty", "cost", "realised"),
    [
        ([(SIDE_BUY, 10, 100), (SIDE_SELL, 4, 120)], 6, 600, 80),
        ([(SIDE_SELL, 10, 100), (SIDE_BUY, 4, 90)], -6, -600, 40),
        ([(SIDE_BUY, 10, 100), (SIDE_SELL, 15, 110)], -5, -550, 100),  # crosses zero
        ([(SIDE_BUY, 3, 1), (SIDE_SELL, 2, 5)], 1, 1, 8),  # release 3*2/3 = 2
        # release 3*1/2 = 1.5 truncates to 1, as the risk stage does (bot4.risk.accounting)
        ([(SIDE_BUY, 1, 1), (SIDE_BUY, 1, 2), (SIDE_SELL, 1, 5)], 1, 2, 4),
        ([(SIDE_BUY, 3, 10), (SIDE_BUY, 3, 11), (SIDE_SELL, 6, 12)], 0, 0, 9),
    ],
)
def test_average_cost_positions(fills, qty, cost, realised):
    p = Position()
    for k, (side, q, px) in enumerate(fills):
        apply_fill(p, side, q, px, 1, k + 1, 0)
    assert (p.qty, p.cost, p.realised, p.fees, p.fills) == (
        qty,
        cost,
        realised,
        len(fills),
        len(fills),
    )
    signed = sum(q * px * (1 if side == SIDE_BUY else -1) for side, q, px in fills)
    assert p.cost - p.realised == signed  # cost basis and P&L account for every unit


def test_loader_constructor_needs_no_database(tmp_path):
    loader = Loader(tmp_path / "j", "host=/nonexistent dbname=x", journal_id="x", pool_timeout=0.5)
    loader.close()
    loader.close()
    assert Path(tmp_path / "j" / "coordinator").is_dir()


def test_one_loader_per_journal(tmp_path, new_db):
    dsn = new_db()
    with (
        Loader(tmp_path / "j", dsn, journal_id="a"),
        pytest.raises(Exception, match="another writer"),
    ):
        Loader(tmp_path / "j", dsn, journal_id="a")


def test_position_row_counts_every_record(tmp_path, new_db):
    dsn = new_db()
    flow = make_flow(20)
    frames = write_flow(tmp_path / "j", flow, frame_size=5)
    with JournalWriter(tmp_path / "j", fsync="none") as w:
        w.append(np.zeros(7, MARKET_DATA))  # journaled but not loaded: still passed over
    with Loader(tmp_path / "j", dsn, journal_id="pos") as loader:
        loader.load_available()
        assert loader.stats.skipped == 7
    assert query(dsn, "SELECT next_frame, records FROM load_positions") == [
        (frames + 1, len(flow) + 7)
    ]
    assert scalar(dsn, "SELECT count(*) FROM pg_prepared_xacts") == 0


def test_follow_in_a_background_thread_keeps_up_and_waits_out_a_missing_database(
    tmp_path, admin_dsns
):
    """The persistence stage's loader thread: follow() loads what the journal writer appends,
    and keeps trying (backing off) while the database is not there yet."""
    import uuid

    from tests.db.conftest import create_database, drop_database, dsn_for

    names = [f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}_l"]
    ev, lg = dsn_for(admin_dsns[0], names[0]), dsn_for(admin_dsns[1], names[1])
    jdir = tmp_path / "j"
    flows = [make_flow(40, start=100 * k, seed=k) for k in range(6)]
    writer = JournalWriter(jdir, fsync="batch")
    loader = Loader(jdir, ev, lg, journal_id="bg", batch_records=64, pool_timeout=0.3)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loader.follow(stop, poll_s=0.02, max_backoff_s=0.2)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    thread = threading.Thread(target=run, name="bot4-loader")
    thread.start()
    try:
        for k, flow in enumerate(flows):
            for frame in flow_frames(flow, 8):
                writer.append(frame)
            writer.flush()
            if k == 2:  # the database shows up while the stage is running
                deadline = time.monotonic() + 10
                while loader.stats.backoffs < 2:  # it has been trying meanwhile
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                assert loader.stats.batches == 0
                create_database(admin_dsns[0], names[0])
                create_database(admin_dsns[1], names[1])
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while loader.stats.frames < writer.next_frame:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        loader.close()
        writer.close()
    assert not thread.is_alive() and not errors
    everything = concat_flows(flows)
    assert load_counts(ev)["exec_reports"] == len(everything.execs)
    assert ledger_check(lg) == {"fills": len(everything.fills), "unbalanced": 0}
    for admin, name in zip(admin_dsns, names, strict=True):
        drop_database(admin, name)


def _record_commit_settings(dsn: str) -> None:
    """Migrate ``dsn``, make ``synchronous_commit`` on its default (the test server runs
    with it off) and record the setting every COMMIT that moves a load position uses."""
    from psycopg import sql

    from bot4.db.migrate import migrate

    migrate(dsn, ("events",))
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(name))
        )
        c.execute(_RECORD_COMMIT_SETTING)


_RECORD_COMMIT_SETTING = """
CREATE TABLE commit_settings (setting text NOT NULL);
CREATE FUNCTION record_commit_setting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO commit_settings VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
-- deferred: runs at COMMIT, so it sees the setting the commit itself uses
CREATE CONSTRAINT TRIGGER record_commit_setting AFTER INSERT OR UPDATE ON load_positions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION record_commit_setting();
"""


@pytest.mark.parametrize(
    "kwargs",
    [dict(small_batch=10_000), dict(small_batch=0, fast_path=True), dict(small_batch=0)],
    ids=["pipeline", "fast", "staging"],
)
@pytest.mark.parametrize("sync", [False, True], ids=["default", "synchronous_commit"])
def test_one_database_batches_commit_without_waiting_for_the_wal_flush_unless_asked(
    tmp_path, new_db, kwargs, sync
):
    # the journal holds every batch durably, so a one-phase COMMIT need not wait for its WAL
    # flush (Loader(synchronous_commit=False), the default); what the COMMIT used is read at
    # the COMMIT itself by a deferred trigger on the load position every batch advances
    ev = new_db()
    _record_commit_settings(ev)
    flow = make_flow(40, seed=5)
    write_flow(tmp_path / "j", flow, frame_size=16)
    with Loader(
        tmp_path / "j", ev, None, journal_id="s", batch_records=40, synchronous_commit=sync,
        **kwargs,
    ) as loader:  # fmt: skip
        loader.load_available()
        batches = loader.stats.batches
    got = [r[0] for r in query(ev, "SELECT setting FROM commit_settings")]
    assert batches > 1 and len(got) == batches, (batches, got)
    assert set(got) == {"on" if sync else "off"}, got


def test_two_phase_batches_commit_their_events_branch_synchronously(tmp_path, dbs):
    # the events COMMIT is the two-phase commit point: it waits for its WAL flush; a batch
    # without a fill touches the events database only and commits as a one-phase batch
    ev, lg = dbs
    _record_commit_settings(ev)
    flow = make_flow(40, seed=6)
    write_flow(tmp_path / "j", flow, frame_size=4)
    with Loader(tmp_path / "j", ev, lg, journal_id="t", batch_records=4) as loader:
        loader.load_available()
        st = loader.stats
        assert st.twophase > 0 and st.batches > st.twophase, st
        twophase, batches = st.twophase, st.batches
    got = [r[0] for r in query(ev, "SELECT setting FROM commit_settings")]
    assert got.count("on") == twophase and got.count("off") == batches - twophase, got
