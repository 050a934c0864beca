"""The md stage publishes a recorded input from a cursor over one chunk at a time
(bot4.marketdata.streamed): the records it publishes, position by position, equal the
input read whole, whether the checking pass held it or it is read again, and a restarted
stage resumes at any position with the same records."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

import bot4.marketdata.streamed as streamed
from bot4.records import MARKET_DATA
from bot4.replay.sources import SyntheticSource, write_parquet
from bot4.stages.marketdata import MarketDataStage, load_recorded
from tests.data_paths import lobster_dir
from tests.unit.tickfiles import csv_of_parquet

FIELDS = ["ts_event_ns", "price", "qty", "order_id", "instrument", "kind", "side", "flags"]


def _stage(params: dict, depth: bool = False) -> MarketDataStage:
    outs = [SimpleNamespace(type="MARKET_DATA")]
    if depth:
        outs.append(SimpleNamespace(type="BOOK_LEVEL"))
    st = MarketDataStage(SimpleNamespace(name="md", params=params), [], outs, "test")
    st.setup()
    return st


def _publish(st: MarketDataStage, start: int, rng: random.Random) -> np.ndarray:
    """Everything from ``start`` on, asked for in random amounts as the loop asks."""
    out, pos, seq = [], start, 1
    buf = np.zeros(5000, MARKET_DATA)
    while not st.source_done(pos):
        ready = st.source_ready(pos, 0)
        assert ready > 0
        k, seq = st.generate(
            pos, min(ready, rng.randint(1, 5000)), [buf], np.zeros(1, np.int64), seq
        )
        assert k > 0
        out.append(buf[:k].copy())
        pos += k
    return np.concatenate(out)


def _inputs(tmp_path) -> dict[str, dict]:
    chunks = list(SyntheticSource(30_000, instruments=3).chunks(4096))
    pq = tmp_path / "t.parquet"
    write_parquet(pq, chunks, row_group=3000)
    csv = csv_of_parquet(pq, tmp_path / "t.csv")
    amzn = f"{lobster_dir()}/amzn_level1"
    from bot4.journal import JournalWriter

    with JournalWriter(tmp_path / "j", fsync="none") as w:
        for c in chunks:
            w.append(c[: len(c) // 2])  # frames of different lengths
            w.append(c[len(c) // 2 :])
    return {
        "journal": {"source": "journal", "path": str(tmp_path / "j")},
        "csv": {"source": "file", "path": str(csv)},
        "parquet": {"source": "file", "path": str(pq)},
        "lobster": {"source": "lobster", "path": amzn},
        "lobster-snapshot-nocheck": {
            "source": "lobster",
            "path": amzn,
            "snapshot": True,
            "book_check": False,
        },  # fmt: skip
    }


@pytest.mark.parametrize("hold", [streamed.HOLD_RECORDS, 1000])
def test_published_records_equal_the_input_read_whole(tmp_path, monkeypatch, hold):
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    monkeypatch.setattr(streamed, "HOLD_RECORDS", hold)
    monkeypatch.setattr(streamed, "CHUNK", 777)  # many chunks, cut anywhere
    monkeypatch.setattr(streamed.RecordCursor.__init__, "__defaults__", (777,))
    for name, params in _inputs(tmp_path).items():
        if params["source"] == "lobster":
            from bot4.stages.marketdata import load_lobster

            want = load_lobster(params["path"], snapshot=bool(params.get("snapshot")),
                                check=params.get("book_check", True)).stream  # fmt: skip
        else:
            want, _ = load_recorded(params["source"], params["path"])
        st = _stage(params)
        assert st.total == len(want) and st.cursor is not None
        got = _publish(st, 0, rng)
        assert (got[FIELDS] == want[FIELDS]).all(), (seed, name)
        assert got["seq"].tolist() == list(range(1, len(got) + 1))
        at = rng.randrange(len(want))  # a restarted stage resumes at a position
        again = _publish(_stage(params), at, rng)
        assert (again[FIELDS] == want[at:][FIELDS]).all(), (seed, name, at)


def test_paced_publishing_releases_records_as_their_time_comes(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed.RecordCursor.__init__, "__defaults__", (500,))
    params = {**_inputs(tmp_path)["csv"], "speed": 1.0}
    st = _stage(params)
    want, _ = load_recorded("file", params["path"])
    ts = want["ts_event_ns"].astype(np.int64)
    now = 10**18
    assert st.source_ready(0, now) == int((ts <= ts[0]).sum())  # only the first instant
    later = now + int(ts[1200] - ts[0])  # 1200 records' worth of event time later
    due = int((ts <= ts[1200]).sum())
    got = st.source_ready(0, later)
    assert got == min(due, 500), (got, due)  # never past the cursor's chunk


@pytest.mark.parametrize("hold", [streamed.HOLD_RECORDS, 1000])
def test_book_levels_ride_with_their_records(monkeypatch, hold):
    # a LOBSTER pair with a book_level output: each position's level updates are published
    # with it, numbered and parented as from the pair read whole, across the pair's blocks
    import bot4.marketdata.lobster_stream as ls
    from bot4.records import BOOK_LEVEL
    from bot4.stages.marketdata import load_lobster

    seed = random.SystemRandom().randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    monkeypatch.setattr(streamed, "HOLD_RECORDS", hold)
    blocks = {**ls.iter_lobster_depth.__kwdefaults__, "lines": 300}  # blocks of 300 lines
    monkeypatch.setattr(ls.iter_lobster_depth, "__kwdefaults__", blocks)
    params = {"source": "lobster", "path": f"{lobster_dir()}/aapl_level10_first999",
              "snapshot": True, "depth": 4}  # fmt: skip
    whole = load_lobster(params["path"], snapshot=True, depth=4)
    st = _stage(params, depth=True)
    assert st.total == len(whole.stream)
    pos, seq, got, lv = 0, 1, [], []
    buf, lbuf = np.zeros(64, MARKET_DATA), np.zeros(64, BOOK_LEVEL)
    while not st.source_done(pos):
        counts = np.zeros(2, np.int64)
        k, nseq = st.generate(pos, rng.randint(1, 64), [buf, lbuf], counts, seq)
        assert k > 0 and counts[0] == k
        got.append(buf[:k].copy())
        lv.append(lbuf[: counts[1]].copy())
        for r in lbuf[: counts[1]]:  # parent: the seq this stage gave the level's event
            assert seq <= r["parent_seq"] < nseq
        pos, seq = pos + k, nseq
    got, lv = np.concatenate(got), np.concatenate(lv)
    assert (got[FIELDS] == whole.stream[FIELDS]).all()
    cols = ["ts_event_ns", "price", "qty", "instrument", "orders", "side", "level", "flags"]
    assert len(lv) == len(whole.levels) and (lv[cols] == whole.levels[cols]).all()
    assert (lv["parent_seq"] - 1 == whole.levels["parent_seq"]).all()  # stream index + seq 1
    assert (np.diff(lv["seq"].astype(np.int64)) == 1).all()
    assert st.cursor.lv_base > 0, "the pair was one block: the test did not cross a seam"
