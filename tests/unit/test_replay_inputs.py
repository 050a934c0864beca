"""Replay input problems are clear errors before any work starts: each names its problem
(``ReplayInputError.problem``), carries a bot4 code and says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.journal import JournalWriter
from bot4.records import EXEC_REPORT, MARKET_DATA, MD_QUOTE
from bot4.records.errors import Code
from bot4.replay.sources import ReplayInputError, SyntheticSource, open_source, write_parquet
from tests.unit.tickfiles import csv_of_parquet

HEADER = "ts_event_ns,symbol,kind,side,price,qty\n"


def err(path):
    with pytest.raises(ReplayInputError) as e:
        open_source(path)
    return e.value


def test_missing_file(tmp_path):
    e = err(tmp_path / "nope.csv")
    assert (e.problem, e.code) == ("missing", Code.INPUT_MISSING)
    assert "no such file or directory" in str(e)


def test_unknown_format(tmp_path):
    p = tmp_path / "ticks.xlsx"
    p.write_bytes(b"x")
    e = err(p)
    assert e.problem == "missing" and "unknown format '.xlsx'" in str(e)


def test_unsupported_columns_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time,sym,px\n1,AAPL,1.0\n")
    e = err(p)
    assert (e.problem, e.code) == ("columns", Code.INPUT_MISSING)
    assert "missing columns" in str(e) and "ts_event_ns" in str(e)


def test_unsorted_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(HEADER + "2000,AAPL,quote,bid,100.00,100\n1000,AAPL,quote,ask,100.01,100\n")
    e = err(p)
    assert (e.problem, e.code) == ("unsorted", Code.TIME_BACKWARDS)
    assert "timestamps not sorted: line 3 is earlier than line 2" in str(e)


def test_empty_csv_and_empty_file(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(HEADER)
    e = err(p)
    assert e.problem == "empty" and "no data rows" in str(e)
    q = tmp_path / "u.csv"
    q.write_text("")
    assert err(q).problem == "empty"


def test_parquet_unsorted_and_columns(tmp_path):
    src = list(SyntheticSource(1000).chunks(500))
    src[1]["ts_event_ns"] -= 10**9  # the second half goes back in time
    p = tmp_path / "t.parquet"
    write_parquet(p, src)
    e = err(p)
    assert e.problem == "unsorted" and "row 501 is earlier than row 500" in str(e)
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = tmp_path / "c.parquet"
    pq.write_table(pa.table({"ts": [1, 2], "px": [1.0, 2.0]}), q)
    e = err(q)
    assert e.problem == "columns" and "unsupported columns" in str(e)


def _not_crossed(recs: np.ndarray) -> np.ndarray:
    """Reference for the crossed-quote check: a quote whose side would meet or pass the
    other side's latest kept quote is dropped (plain Python, one row at a time)."""
    touch: dict = {}
    keep = []
    for r in recs:
        if r["kind"] == MD_QUOTE:
            bid, ask = touch.get((r["instrument"], 1), 0), touch.get((r["instrument"], -1), 0)
            b = r["price"] if r["side"] > 0 else bid
            a = r["price"] if r["side"] < 0 else ask
            if b > 0 and a > 0 and b >= a:
                keep.append(False)
                continue
            touch[(r["instrument"], int(r["side"]))] = r["price"]
        keep.append(True)
    return recs[np.asarray(keep)]


def test_parquet_streams_what_it_was_given_through_the_stages_checks(tmp_path):
    chunks = list(SyntheticSource(3000, instruments=2).chunks(1000))
    p = tmp_path / "t.parquet"
    assert write_parquet(p, chunks, row_group=700) == 3000
    s = open_source(p)
    want = _not_crossed(np.concatenate(chunks))  # the synthetic walk locks stale sides
    assert (s.kind, s.total) == ("parquet", len(want)) and 0 < len(want) < 3000
    assert s.report.counts == {Code.CROSSED_QUOTE: 3000 - len(want)}
    got = np.concatenate(list(s.chunks(1024)))
    assert all(len(c) <= 1024 for c in s.chunks(1024))
    for f in ("ts_event_ns", "instrument", "kind", "side", "price", "qty"):
        assert (got[f] == want[f]).all(), f


def test_parquet_is_read_a_batch_at_a_time_not_the_whole_file_ahead(tmp_path):
    # pyarrow's default pre_buffer reads every column chunk of the file ahead: the replay's
    # peak RSS grew with the file (343 MB at 1 M events, 435 MB at 10 M). What pyarrow holds
    # while the file is read must stay near one row group, whatever the file's length.
    import pyarrow as pa

    from bot4.marketdata.files import iter_parquet

    p = tmp_path / "long.parquet"
    assert write_parquet(p, SyntheticSource(600_000, instruments=2).chunks(4096), row_group=4096)
    held = []
    for _recs in iter_parquet(p, size=4096):
        held.append(pa.total_allocated_bytes())
    file_bytes = p.stat().st_size
    assert len(held) >= 140 and file_bytes > 4_000_000, (len(held), file_bytes)
    assert max(held) < file_bytes / 4, (max(held), file_bytes)


def test_parquet_price_units_rows_are_checked_as_the_stage_checks_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "u.parquet"
    pq.write_table(
        pa.table(
            {
                "ts_event_ns": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
                "symbol": ["AAPL", "AAPL", "NOPE", "AAPL", "AAPL", "AAPL"],
                "kind": ["quote", "quote", "quote", "trade", "quote", "quote"],
                "side": ["bid", "ask", "bid", "buy", "bid", "sideways"],
                "price_units": pa.array([100, 200, 150, -5, None, 150], pa.int64()),
                "qty": pa.array([1, 1, 1, 1, 1, 1], pa.int64()),
            }
        ),
        p,
    )
    s = open_source(p)
    assert s.total == 2 and s.report.counts == {
        Code.UNKNOWN_INSTRUMENT: 1,
        Code.NEGATIVE_PRICE: 1,
        Code.MALFORMED_ROW: 2,
    }
    assert np.concatenate(list(s.chunks()))["price"].tolist() == [100, 200]


def test_journal_without_market_data_is_empty(tmp_path):
    with JournalWriter(tmp_path / "j", fsync="none") as w:
        w.append(np.zeros(3, EXEC_REPORT))
    e = err(tmp_path / "j")
    assert e.problem == "empty" and "no market data" in str(e)


def test_journal_unsorted(tmp_path):
    recs = np.zeros(4, MARKET_DATA)
    recs["kind"], recs["instrument"], recs["ts_event_ns"] = MD_QUOTE, 1, [1, 2, 3, 4]
    with JournalWriter(tmp_path / "j", fsync="none") as w:
        w.append(recs)
        w.append(recs[:2])  # 1, 2 after 4
    e = err(tmp_path / "j")
    assert e.problem == "unsorted" and "record 5 is earlier than record 4" in str(e)


def test_lobster_not_a_pair(tmp_path):
    p = tmp_path / "AAPL_2012-06-21_34200000_57600000_message_1.csv"
    p.write_text("34200.1,1,1,100,5850000,1\n")
    e = err(p)
    assert e.problem == "missing" and "partner file" in str(e)
    (tmp_path / "AAPL_2012-06-21_34200000_57600000_orderbook_1.csv").write_text("")
    e = err(p)
    assert e.problem == "empty" and "empty" in str(e)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_tick_file_longer_than_what_is_held_is_read_again_a_batch_at_a_time(
    tmp_path, monkeypatch, fmt
):
    # what a replay reads is the same whether the check's pass kept the records (a short
    # file) or the replay reads the file again batch by batch (a long one: flat memory)
    import bot4.replay.sources as sources

    chunks = list(SyntheticSource(5000, instruments=2).chunks(1000))
    p = tmp_path / f"t.{fmt}"
    write_parquet(tmp_path / "t.parquet", chunks, row_group=600)
    if fmt == "csv":
        csv_of_parquet(tmp_path / "t.parquet", p)
    held = open_source(p)
    monkeypatch.setattr(sources, "HOLD_RECORDS", 999)
    streamed = open_source(p)
    assert held._streamed.held and not streamed._streamed.held
    assert (held.kind, held.total, held.report.counts) == (
        streamed.kind, streamed.total, streamed.report.counts
    )  # fmt: skip
    a, b = list(held.chunks(700)), list(streamed.chunks(700))
    assert all(len(c) <= 700 for c in a + b)
    assert np.concatenate(a).tobytes() == np.concatenate(b).tobytes()
    want = _not_crossed(np.concatenate(chunks))
    assert held.total == len(want) and (np.concatenate(a)["price"] == want["price"]).all()


def test_a_lobster_day_longer_than_what_is_held_is_read_again_a_block_at_a_time(
    tmp_path, monkeypatch
):
    # a LOBSTER pair is streamed like a tick file (bot4.marketdata.lobster_stream): the
    # same records as the md stage's whole-file read, whether held or read twice
    import bot4.replay.sources as sources
    from bot4.stages.marketdata import load_recorded

    msgs = [f"34200.{i:03d},1,{i},{10 + i},{2238000 - 100 * (i % 7)},1" for i in range(1, 400)]
    msgs[57] = "34200.058,9,58,10,2238000,1"  # an unknown type: counted, not replayed
    book = [f"9999999999,0,2238000,{10 * i}" for i in range(1, 400)]
    for name, rows in (("message", msgs), ("orderbook", book)):
        p = tmp_path / f"AMZN_2012-06-21_34200000_57600000_{name}_1.csv"
        p.write_text("\n".join(rows) + "\n")
    p = tmp_path / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    want, report = load_recorded("lobster", str(p), snapshot=True)
    held = open_source(p)
    monkeypatch.setattr(sources, "HOLD_RECORDS", 100)
    streamed = open_source(p)
    assert held._streamed.held and not streamed._streamed.held
    for s in (held, streamed):
        assert (s.kind, s.total, s.report.as_dict()) == ("lobster", len(want), report.as_dict())
        assert s.md_params == {"source": "lobster", "path": str(p), "snapshot": True}
        assert (s.first_ns, s.last_ns) == (
            int(want["ts_event_ns"][0]),
            int(want["ts_event_ns"][-1]),
        )
        got = list(s.chunks(70))
        assert all(len(c) <= 70 for c in got)
        assert np.concatenate(got).tobytes() == want.tobytes()
    assert report.counts == {Code.UNKNOWN_KIND: 1}
