"""Each LOBSTER sample day (AAPL, AMZN, GOOG, 2012-06-21, level 1) replayed through the
default chain with the venue applying self-trade prevention in each mode (issue 14).

The strategy takes liquidity (signals ``cross = true``: buy at the ask, sell at the bid), so
its orders meet its own resting orders at the venue. For each day and mode: the report's
positions equal the net of the journal's fills and the risk stage's positions; the venue's
STP counts equal the STP reports in the journal and the OMS's; our orders never trade with
each other unless the mode is none (and then they do). For each mode, on one of the days
(each day in turn: every mode and every day is covered), a second run writes
byte-identical journals and the same report."""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from importlib import resources

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.pipeline.topology import parse_topology
from bot4.records import EXEC_STP_DECREMENTED, EXEC_STP_EXPIRED, RT_EXEC_REPORT
from bot4.replay.runner import replay
from tests.data_paths import lobster_dir
from tests.system.test_replay_lobster_days import journal_net

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

MODES = [  # (venue stp_profile, orders stp_mode)
    ("binance", "cancel_new"),  # EXPIRE_TAKER
    ("binance", "cancel_resting"),  # EXPIRE_MAKER
    ("binance", "cancel_both"),  # EXPIRE_BOTH
    ("coinbase", "venue_default"),  # dc: decrement and cancel
    ("cme", "venue_default"),  # no tag 8000: cancel resting
    ("none", "venue_default"),  # no prevention: our orders trade with each other
]


def topology(profile: str, mode: str):
    data = tomllib.loads(resources.files("bot4.config").joinpath("default.toml").read_text())
    for st in data["stage"]:
        p = st.setdefault("params", {})
        if st["kind"] == "orders":
            p.update(stp="venue", stp_mode=mode)
        elif st["kind"] == "venue":
            p.update(stp_profile=profile)
        elif st["kind"] == "signals":
            p.update(cross=True)
    return parse_topology(data, f"default.toml + stp {profile}/{mode}")


def journal_stp(journal) -> tuple[int, int, int]:
    """(EXEC_STP_EXPIRED, EXEC_STP_DECREMENTED, prevented shares) in the journal, each
    venue execution once."""
    seen: set[int] = set()
    expired = decremented = prevented = 0
    for _pos, rtype, recs in JournalReader(journal):
        if rtype != RT_EXEC_REPORT:
            continue
        stp = recs[np.isin(recs["exec_type"], (EXEC_STP_EXPIRED, EXEC_STP_DECREMENTED))]
        for r in stp:
            if int(r["exec_id"]) in seen:
                continue
            seen.add(int(r["exec_id"]))
            expired += int(r["exec_type"] == EXEC_STP_EXPIRED)
            decremented += int(r["exec_type"] == EXEC_STP_DECREMENTED)
            prevented += int(r["prevented_qty"])
    return expired, decremented, prevented


def digests(out_dir) -> dict[str, str]:
    files = sorted((out_dir / "journal").iterdir())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


TICKERS = ["AAPL", "AMZN", "GOOG"]


def repeats(ticker: str, profile: str, mode: str) -> bool:
    """Whether this day and mode also checks run-to-run identity: one day per mode, the
    days in turn (AAPL for modes 0 and 3, AMZN for 1 and 4, GOOG for 2 and 5). What could
    make a run differ from the next is in the code a mode runs (the venue's STP actions,
    the OMS's booking of them), which every mode still shows; a second replay of every
    day in every mode doubled this module's time (18 more full days) for no other path."""
    return MODES.index((profile, mode)) % len(TICKERS) == TICKERS.index(ticker)


@pytest.mark.parametrize(("profile", "mode"), MODES, ids=[f"{p}-{m}" for p, m in MODES])
@pytest.mark.parametrize("ticker", TICKERS)
def test_lobster_day_with_venue_stp_positions_are_the_fills_and_runs_repeat(
    ticker, profile, mode, tmp_path
):
    z = lobster_dir() / "zips" / f"LOBSTER_SampleFile_{ticker}_2012-06-21_1.zip"
    a = replay(z, tmp_path / "a", topology=topology(profile, mode), progress=None)
    doc = a.report.doc
    s, stages = doc["summary"], doc["run"]["stages"]
    venue, orders, risk = stages["venue"], stages["orders"], stages["risk"]["positions"]
    assert s["orders"] > 100 and s["fills"] > 100, s
    # positions are the net of the fills: an STP report moves none
    net = journal_net(a.out_dir / "journal")
    pos = {p["instrument"]: p["position"] for p in doc["positions"].values()}
    assert pos == net
    for sym, p in doc["positions"].items():
        assert p["position"] == risk[sym]["position"]
        assert Decimal(p["realised"]) == Decimal(risk[sym]["realised"]) / 10_000
    assert venue["fills"] == s["fills"]
    # every STP event of the venue is in the journal and was booked by the OMS
    expired, decremented, prevented = journal_stp(a.out_dir / "journal")
    assert (s["stp_expired"], s["stp_decremented"], s["stp_prevented_qty"]) == (
        expired, decremented, prevented)  # fmt: skip
    assert (venue["stp_expired"], venue["stp_decremented"]) == (expired, decremented)
    assert venue["stp_prevented_qty"] == prevented
    c = orders["counters"]
    assert (c["venue_stp_expired"], c["venue_stp_decremented"]) == (expired, decremented)
    assert orders["illegal"] == {}
    if profile == "none":
        assert venue["stp_matches"] == 0 and expired == 0
        assert venue["own_traded_qty"] > 0  # the strategy does meet its own orders
    else:
        assert venue["own_traded_qty"] == 0  # never a self-trade
        assert venue["stp_matches"] > 0 and expired > 0
    if profile == "coinbase":
        assert decremented > 0
    assert venue["live_orders"] == 0
    if not repeats(ticker, profile, mode):
        return
    # run to run: the same bytes
    b = replay(z, tmp_path / "b", topology=topology(profile, mode), progress=None)
    assert digests(a.out_dir) == digests(b.out_dir)
    assert a.json_path.read_bytes() == b.json_path.read_bytes()
