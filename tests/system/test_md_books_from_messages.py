"""The md stage builds its books from LOBSTER's order messages in a real pipeline: what it
publishes (quotes on market_data rings, depth on book_level rings, journalled by
persistence) equals LOBSTER's own orderbook file on every row, and the signals stage takes
the depth as a second input (issue 18). One short run on the 999-row AAPL level-10 sample.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.marketdata.lobster import read_pair
from bot4.records import RT_BOOK_LEVEL, RT_MARKET_DATA, SIDE_BUY, SIDE_SELL
from bot4.shm.segment import instance_segments
from tests.data_paths import lobster_dir
from tests.system.pipeline_util import BOT4
from tests.unit.test_book_builder import _latest, _message_of, _published_top

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

TOPO = """
instance = "{instance}"

[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "lobster", path = "{path}", depth = 10 }}

[[stage]]
name = "signals"
kind = "signals"
core = 1
params = {{ imbalance_levels = 5, warmup = 5, threshold = 0.5 }}

[[stage]]
name = "persistence"
kind = "persistence"
core = 1
params = {{ dir = "{journal}", fsync = "none" }}

[[ring]]
name = "ticks"
from = "md"
to = "signals"
type = "market_data"
capacity = 4096

[[ring]]
name = "depth"
from = "md"
to = "signals"
type = "book_level"
capacity = 4096

[[ring]]
name = "md_journal"
from = "md"
to = "persistence"
type = "market_data"
capacity = 4096

[[ring]]
name = "depth_journal"
from = "md"
to = "persistence"
type = "book_level"
capacity = 4096

[[ring]]
name = "intents"
from = "signals"
to = "persistence"
type = "order_intent"
capacity = 4096
"""


def test_published_books_equal_lobster_orderbook_rows(instance, tmp_path):
    src = lobster_dir() / "aapl_level10_first999"
    records, book, _ = read_pair(src)
    journal = tmp_path / "journal"
    topo = tmp_path / "t.toml"
    topo.write_text(TOPO.format(instance=instance, path=src, journal=journal))
    report = tmp_path / "report.json"
    out = subprocess.run(
        [*BOT4, "run", str(topo), "--no-db", "--duration", "60", "--quiet"]
        + ["--report", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert not instance_segments(instance)
    stages = json.loads(report.read_text())["stages"]

    md_parts, lv_parts = [], []
    for _pos, rtype, recs in JournalReader(journal):
        if rtype == RT_MARKET_DATA:
            md_parts.append(recs.copy())
        elif rtype == RT_BOOK_LEVEL:
            lv_parts.append(recs.copy())
    md = np.concatenate(md_parts)
    lv = np.concatenate(lv_parts)
    assert (np.diff(md["seq"].astype(np.int64)) == 1).all(), "market data once, in order"
    assert (np.diff(lv["seq"].astype(np.int64)) == 1).all(), "depth once, in order"
    n = len(records)
    assert stages["md"]["records_out"] == 2 * len(md) + 2 * len(lv)

    # top of book, from the quotes, equals the orderbook file after every message
    rows = book[records["seq"].astype(np.int64) - 1]
    assert (_published_top(md, n) == rows[:, :4]).all()

    # every level, from the BOOK_LEVEL records: levels 1..9 are determined by the
    # messages; level 10 also equals the file (levels sliding in come from it, counted)
    pos = np.searchsorted(md["seq"], lv["parent_seq"])
    assert (md["seq"][pos] == lv["parent_seq"]).all(), "each update names its event"
    msg = _message_of(md)[pos]
    got = np.zeros((n, 40), np.int64)
    for k in range(10):
        for col, side in ((0, SIDE_SELL), (2, SIDE_BUY)):
            sel = (lv["side"] == side) & (lv["level"] == k)
            idx = _latest(n, msg[sel])
            assert (idx >= 0).all()
            got[:, 4 * k + col] = lv["price"][sel][idx]
            got[:, 4 * k + col + 1] = lv["qty"][sel][idx]
    assert (got[:, :36] == rows[:, :36]).all()
    assert (got == rows).all()
    assert stages["signals"]["records_in"] == len(md) + len(lv)


def test_deterministic_replay_refuses_a_depth_ring_in_one_line(instance, tmp_path):
    """The deterministic harness feeds market data only: a book_level ring from md is
    refused up front, naming the ring and the way out (``--mode full``)."""
    src = lobster_dir() / "aapl_level10_first999"
    topo = tmp_path / "t.toml"
    topo.write_text(TOPO.format(instance=instance, path=src, journal=tmp_path / "j"))
    out = subprocess.run(
        [*BOT4, "replay", str(src), "--topology", str(topo), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "bot4: error:" in out.stderr and "'depth'" in out.stderr and "--mode full" in out.stderr
    assert not instance_segments(instance)
