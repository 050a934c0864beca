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

from bot4.marketdata.builder import GAP_STATS
from bot4.marketdata.crosscheck import (
    compare_with_orderbook,
    journal_topology,
    journalled,
    md_summary,
    published_depth,
    published_top,
)
from bot4.marketdata.lobster import read_pair
from bot4.records import MDF_BOOK_STALE
from bot4.shm.segment import instance_segments
from tests.data_paths import lobster_dir
from tests.system.pipeline_util import BOT4

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

SIGNALS = """
[[stage]]
name = "signals"
kind = "signals"
core = 1
params = { imbalance_levels = 5, warmup = 5, threshold = 0.5 }

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
    topo.write_text(journal_topology(instance, src, 10, journal) + SIGNALS)
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

    md, lv = journalled(journal)
    assert (np.diff(md["seq"].astype(np.int64)) == 1).all(), "market data once, in order"
    assert (np.diff(lv["seq"].astype(np.int64)) == 1).all(), "depth once, in order"
    n = len(records)
    assert stages["md"]["records_out"] == 2 * len(md) + 2 * len(lv)

    # top of book, from the quotes, equals the orderbook file after every message
    rows = book[records["seq"].astype(np.int64) - 1]
    assert (published_top(md, n) == rows[:, :4]).all()

    # every level, from the BOOK_LEVEL records: every cell the messages determine (levels
    # 1..9, and level 10 except where a level slid in) equals the file; the slid-in cells
    # too, and they are exactly the counted slide-ins, one per level-emptying message
    pos = np.searchsorted(md["seq"], lv["parent_seq"])
    assert (md["seq"][pos] == lv["parent_seq"]).all(), "each update names its event"
    got = published_depth(md, lv, pos, n, 10)
    cmp = compare_with_orderbook(records, book, got)
    assert cmp.ok, cmp.line()
    assert (got == rows).all()
    counters = md_summary(out.stderr)["book"]
    assert counters["slide_in"] == cmp.emptying_messages and cmp.slid_in_equal == cmp.slid_in
    assert counters["seeded"] == 20 and counters["resync"] == 0
    assert not any(counters[k] for k in GAP_STATS), counters
    assert not (md["flags"] & MDF_BOOK_STALE).any()
    assert stages["signals"]["records_in"] == len(md) + len(lv)


def test_deterministic_replay_refuses_a_depth_ring_in_one_line(instance, tmp_path):
    """The deterministic harness feeds market data only: a book_level ring from md is
    refused up front, naming the ring and the way out (``--mode full``)."""
    src = lobster_dir() / "aapl_level10_first999"
    topo = tmp_path / "t.toml"
    topo.write_text(journal_topology(instance, src, 10, tmp_path / "j") + SIGNALS)
    out = subprocess.run(
        [*BOT4, "replay", str(src), "--topology", str(topo), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert (
        "bot4: error:" in out.stderr
        and "'depth_journal'" in out.stderr
        and "--mode full" in out.stderr
    )
    assert not instance_segments(instance)
