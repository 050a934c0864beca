"""A loader process SIGKILLed at random points, again and again, while the journal keeps
growing (and now and then journals a batch twice, as persistence does after a crash):
every event ends up in the database exactly once, positions count every fill once, and
every fill has balanced ledger rows."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bot4.db.loader import HOOK_POINTS, Loader
from bot4.journal import JournalReader, JournalWriter
from bot4.records import RT_EXEC_REPORT, RT_ORDER, RT_RISK_DECISION
from tests.db.conftest import flow_frames, ledger_check, load_counts, make_flow, query, scalar
from tests.db.test_loader import assert_positions_match

pytestmark = pytest.mark.timeout(120)

KILLS = 24
CRASH_POINTS = [p for p in HOOK_POINTS if p != "committed-ledger"]


def journal_truth(jdir) -> dict[int, list[np.ndarray]]:
    """Records of the journal by type, in journal order."""
    out: dict[int, list[np.ndarray]] = {}
    for _i, rtype, recs in JournalReader(jdir):
        out.setdefault(rtype, []).append(recs)
    return out


def first_seen(records: np.ndarray, key) -> np.ndarray:
    _, first = np.unique(key(records), axis=0, return_index=True)
    return records[np.sort(first)]


def test_loader_sigkilled_at_random_points_loads_every_event_exactly_once(tmp_path, dbs, procs):
    ev, lg = dbs
    jdir = tmp_path / "journal"
    rng = random.Random(2024)
    journaled = []
    writer = JournalWriter(jdir, fsync="batch")
    for frame in flow_frames(make_flow(2500, seed=1), 8):  # a backlog to be killed inside
        writer.append(frame)
        journaled.append(frame)
    writer.flush()
    with Loader(jdir, ev, lg, journal_id="crash") as loader:
        loader.load_available(max_batches=0)  # schema in place: positions are readable
    cmd = [
        sys.executable, "-m", "bot4.db.cli", "load", str(jdir), "--dsn", ev, "--ledger-dsn", lg,
        "--journal-id", "crash", "--batch-records", "24", "--follow", "--interval", "0.05",
    ]  # fmt: skip
    killed_with_backlog = 0
    hook_kills = 0
    positions = []
    for i in range(KILLS):
        # persistence keeps journaling while the loader comes and goes
        for frame in flow_frames(make_flow(40, start=10_000 + 40 * i, seed=i), 8):
            writer.append(frame)
            journaled.append(frame)
        if rng.random() < 0.3:  # a batch journaled twice (crash before the ring release)
            again = journaled[rng.randrange(len(journaled))]
            writer.append(again)
            journaled.append(again)
        writer.flush()
        env = dict(os.environ)
        env.pop("BOT4_DB_CRASH_AT", None)
        path = ["--small-batch", "128" if i % 2 else "0"]  # pipelined / COPY path in turn
        at_hook = i % 3 == 2
        if at_hook:  # inside the transaction, at a named point of the commit protocol
            env["BOT4_DB_CRASH_AT"] = f"{rng.choice(CRASH_POINTS)}:{rng.randint(1, 4)}"
        proc = procs.add(
            subprocess.Popen(cmd + path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
        if at_hook:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            hook_kills += proc.returncode == -signal.SIGKILL
        else:
            time.sleep(rng.uniform(0.3, 0.7))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        proc.stderr.close()
        position = scalar(ev, "SELECT coalesce(max(next_frame), 0) FROM load_positions")
        positions.append(position)
        killed_with_backlog += position < writer.next_frame
    writer.close()
    assert hook_kills >= KILLS // 3 - 1
    assert killed_with_backlog >= KILLS // 2  # most kills landed while there was work
    assert positions == sorted(positions) and positions[-1] > positions[0]

    with Loader(jdir, ev, lg, journal_id="crash", batch_records=512) as loader:
        loader.load_available()
        assert loader.position() == len(journaled)
    assert query(ev, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)]

    truth = journal_truth(jdir)
    orders = first_seen(
        np.concatenate(truth[RT_ORDER]),
        lambda r: np.stack([r["client_order_id"], r["order_id"]], 1),
    )
    decisions = first_seen(
        np.concatenate(truth[RT_RISK_DECISION]),
        lambda r: np.stack([r["intent_producer"].astype(np.uint64), r["intent_seq"]], 1),
    )
    execs = first_seen(np.concatenate(truth[RT_EXEC_REPORT]), lambda r: r["exec_id"])
    counts = load_counts(ev)
    assert counts["orders"] == len(orders)
    assert counts["risk_decisions"] == len(decisions)
    assert counts["exec_reports"] == len(execs)
    assert counts["rejected_rows"] == 0
    fills = execs[execs["last_qty"] > 0]  # in the order the journal first had them
    loaded = sorted(
        int(r[0]) for r in query(ev, "SELECT exec_id FROM exec_reports WHERE last_qty > 0")
    )
    assert loaded == sorted(map(int, fills["exec_id"]))
    assert ledger_check(lg) == {"fills": len(fills), "unbalanced": 0}
    assert_positions_match(ev, fills)
