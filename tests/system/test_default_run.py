"""`bot4 run` on its built-in defaults: synthetic ticks become intents, orders and fills, the
positions risk keeps equal the net of the fills persistence receives, per instrument, and no
order is left resting at the venue when it stops."""

from __future__ import annotations

import json
import subprocess

import pytest

from bot4.journal import JournalReader
from bot4.oms.recovery import rebuild_from_journal
from bot4.records import DEFAULT_INSTRUMENTS
from bot4.shm.segment import instance_segments
from tests.system.db_check import assert_exactly_once
from tests.system.pipeline_util import BOT4
from tests.system.test_trading_e2e import summary

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_default_run_turns_synthetic_ticks_into_intents_orders_and_fills(
    instance, tmp_path, _pipeline_databases
):
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            *BOT4,
            "run",
            "--duration",
            "4",
            "--instance",
            instance,
            "--quiet",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    st = json.loads(report.read_text())["stages"]
    ticks = st["signals"]["records_in"]
    assert ticks > 20_000  # ~20k ticks/s for 4 s
    assert st["md"]["records_out"] == 3 * ticks  # fan-out to signals, risk and venue, drained
    assert 0 < st["signals"]["records_out"] < ticks  # intents, selectively
    assert (
        st["risk"]["records_out"] > st["signals"]["records_out"]
    )  # a decision per intent, plus orders
    assert (
        st["orders"]["records_out"] > 0 and st["venue"]["records_out"] > 0
    )  # orders out, reports back
    assert (
        st["persistence"]["records_in"] > st["signals"]["records_out"]
    )  # decisions, orders, executions
    assert all(s["state"] == "stopped" and s["restarts"] == 0 for s in st.values())
    log = out.stdout + out.stderr
    # nothing left resting (the venue's stage_summary event, its fields as JSON)
    assert "sending CANCEL_ALL" in log and '"live_orders":0' in log
    # the positions risk keeps are the net of the fills persistence received, per
    # instrument, and the venue filled what they add up to
    risk = summary(log, "risk", "risk summary")
    sink = summary(log, "persistence", "summary")
    venue = summary(log, "venue", "venue summary")
    net = {DEFAULT_INSTRUMENTS.symbol_of(k): v for k, v in sink["net_filled"].items()}
    positions = {sym: p["position"] for sym, p in risk["positions"].items() if p["position"]}
    assert venue["fills"] > 0, "the default pipeline traded nothing"
    # (its fills may net to zero on every instrument by the end: then both maps are empty,
    # as they were in one run of the suite beside a busy loop, 402 fills)
    assert positions == net
    assert venue["live_orders"] == 0
    # every event persistence read is in its journal, once, intact
    journal = tmp_path / "bot4-data" / "journal" / instance
    rep = JournalReader(journal).verify()
    assert rep.ok and rep.torn_tail is None
    assert sum(rep.records.values()) == st["persistence"]["records_in"]
    seqs: dict[int, list[int]] = {}
    for _pos, rtype, recs in JournalReader(journal):
        seqs.setdefault(rtype, []).extend(int(x) for x in recs["seq"])
    # the venue's answers to the drain's CANCEL_ALL were read and journalled: by the journal
    # alone, nothing of ours is left open
    left = rebuild_from_journal(journal, 1)
    assert left.orders > 0 and len(left.open_orders) == 0, left.open_orders
    # and the fills the journal holds net to what persistence counted
    assert left.net_filled == {int(k): v for k, v in sink["net_filled"].items()}
    for rtype, ss in seqs.items():
        assert ss == sorted(set(ss)), f"record type {rtype}: journal out of order or duplicated"
        # the first session of this data dir numbers from 1 << 32 (unique across sessions)
        assert ss[0] >= 1 << 32 and ss[-1] < 2 << 32, f"record type {rtype}: {ss[0]:#x}"
    assert (tmp_path / "bot4-data" / "session" / "counter").read_text() == "1\n"
    verify = subprocess.run(
        [*BOT4, "journal", "verify", str(journal)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and "frames" in verify.stdout
    # ... and in PostgreSQL exactly once, every fill with its ledger legs (2PC)
    got = assert_exactly_once(journal, *_pipeline_databases)
    assert got["orders"] > 0 and got["fills"] > 0 and got["risk_decisions"] > 0
    assert "trading report:" in out.stdout
    assert not instance_segments(instance)
