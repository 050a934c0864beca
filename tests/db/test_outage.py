"""The database stops mid-load: the loader raises DatabaseUnavailable (counted on the "db"
circuit breaker, which opens), the journal keeps growing, and once the server is back the
breaker closes and the backlog lands exactly once — including a batch whose two-phase
commit the outage interrupted."""

from __future__ import annotations

import functools
import time
import uuid

import pytest

from bot4.db.loader import DatabaseUnavailable, Loader
from bot4.journal import JournalWriter
from bot4.shm.breakers import (
    CLOSED,
    OPEN,
    BreakerConfig,
    BreakerHandle,
    BreakerOpenError,
    breaker_state,
    guard,
    local_breakers,
)
from tests.db.conftest import (
    concat_flows,
    create_database,
    drop_database,
    exec_ids,
    flow_frames,
    ledger_check,
    ledger_exec_ids,
    load_counts,
    make_flow,
    query,
)
from tests.db.test_loader import assert_positions_match

pytestmark = pytest.mark.timeout(90)


def db_breaker() -> BreakerHandle:
    """A process-local "db" breaker (the stage attaches the instance's shared one)."""
    config = BreakerConfig(
        name="db", min_calls=2, open_failure_pct=50, close_failure_pct=0, cooldown_ns=300_000_000,
        max_probes=1, probe_window=1,
    )  # fmt: skip
    return BreakerHandle(local_breakers([config], time.monotonic_ns()), 0)


@pytest.fixture
def outage_dbs(outage_server):
    admin = outage_server.dsn("postgres")
    names = [f"o_{uuid.uuid4().hex[:10]}", f"o_{uuid.uuid4().hex[:10]}_l"]
    dsns = [create_database(admin, n) for n in names]
    yield dsns
    if not outage_server.running:
        outage_server.start()
    for n in names:
        drop_database(admin, n)


@pytest.mark.parametrize(
    ("point", "small_batch"),
    [("before-commit", 128), ("decided", 0)],
    ids=["pipelined-before-commit", "copy-decided"],
)
def test_server_stopped_mid_load_then_backlog_lands_exactly_once(
    point, small_batch, tmp_path, outage_server, outage_dbs
):
    ev, lg = outage_dbs
    jdir = tmp_path / "j"
    flows = [make_flow(200, seed=31)]
    writer = JournalWriter(jdir, fsync="batch")
    for frame in flow_frames(flows[0], 8):
        writer.append(frame)
    writer.flush()
    reached = {"n": 0}

    def hook(p: str) -> None:
        if p == point:
            reached["n"] += 1
            if reached["n"] == 3:  # the third batch, mid-transaction (or mid-commit)
                outage_server.stop()

    breaker = db_breaker()
    loader = Loader(
        jdir, ev, lg, journal_id="out", batch_records=64, hook=hook, pool_timeout=0.5,
        guard=functools.partial(guard, breaker), small_batch=small_batch,
    )  # fmt: skip
    try:
        with pytest.raises(DatabaseUnavailable):
            loader.load_available()
        assert not outage_server.running
        # the pipeline keeps trading: persistence journals on, the loader fails fast
        for k in range(1, 4):
            flows.append(make_flow(50, start=1000 * k, seed=31 + k))
            for frame in flow_frames(flows[-1], 8):
                writer.append(frame)
            writer.flush()
            t0 = time.monotonic()
            with pytest.raises((DatabaseUnavailable, BreakerOpenError)):
                loader.load_available()
            assert time.monotonic() - t0 < 5
        assert breaker_state(breaker.words, 0) == OPEN
        assert loader.stats.unavailable >= 2
        outage_server.start()
        deadline = time.monotonic() + 30
        while True:  # the stage's retry loop: breaker cool-down, pool reconnect
            try:
                loader.load_available()
                break
            except (DatabaseUnavailable, BreakerOpenError):
                assert time.monotonic() < deadline, "backlog did not land after the restart"
                time.sleep(0.2)
        while loader.load_available():
            pass
        assert breaker_state(breaker.words, 0) == CLOSED
        assert loader.position() == writer.next_frame
        if point == "decided":  # the outage hit between the decision and COMMIT PREPARED
            assert loader.stats.recovered_commits >= 1
    finally:
        loader.close()
        writer.close()
    everything = concat_flows(flows)
    assert query(ev, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)]
    counts = load_counts(ev)
    assert counts["orders"] == counts["risk_decisions"] == len(everything.orders)
    assert counts["exec_reports"] == len(everything.execs)
    assert sorted(exec_ids(ev)) == sorted(ledger_exec_ids(lg))
    assert ledger_check(lg) == {"fills": len(everything.fills), "unbalanced": 0}
    assert_positions_match(ev, everything.fills)
