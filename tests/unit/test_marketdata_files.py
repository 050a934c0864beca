"""CSV / Parquet tick files: documented columns, exact prices, bad rows counted and kept out."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.marketdata.files import MarketDataFileError, read_table
from bot4.marketdata.report import UnsortedInputError
from bot4.records import MD_QUOTE, MD_TRADE, SIDE_BUY, SIDE_SELL, Code

HEADER = "ts_event_ns,symbol,kind,side,price,qty\n"
GOOD = [
    "1000,AAPL,quote,bid,585.33,100",
    "1001,AAPL,quote,ask,585.35,200",
    "1002,AAPL,trade,buy,585.35,50",
    "1003,AMZN,quote,bid,220.0001,300",
    "1004,AMZN,quote,ask,220.02,300",
]


def write(tmp_path, lines, name="t.csv", newline=True):
    p = tmp_path / name
    p.write_text(HEADER + "\n".join(lines) + ("\n" if newline else ""))
    return p


def test_good_rows_become_exact_fixed_point_records(tmp_path):
    recs, rep = read_table(write(tmp_path, GOOD))
    assert rep.total == 0 and rep.kept == 5
    assert recs["price"].tolist() == [5853300, 5853500, 5853500, 2200001, 2200200]
    assert recs["kind"].tolist() == [MD_QUOTE, MD_QUOTE, MD_TRADE, MD_QUOTE, MD_QUOTE]
    assert recs["side"].tolist() == [SIDE_BUY, SIDE_SELL, SIDE_BUY, SIDE_BUY, SIDE_SELL]
    assert recs["instrument"].tolist() == [1, 1, 1, 2, 2]
    assert recs["ts_event_ns"].tolist() == [1000, 1001, 1002, 1003, 1004]


@pytest.mark.parametrize(
    "bad, code",
    [
        ("1002,AAPL,quote,bid,585.3x,100", Code.MALFORMED_ROW),
        ("1002,AAPL,quote,bid,585.33", Code.MALFORMED_ROW),  # a field missing
        ("1002,AAPL,quote,sideways,585.33,100", Code.MALFORMED_ROW),
        ("1002,AAPL,quote,bid,585.333333,100", Code.MALFORMED_ROW),  # finer than the scale
        ("1002,ZZZZ,quote,bid,585.33,100", Code.UNKNOWN_INSTRUMENT),
        ("1002,AAPL,quote,bid,-585.33,100", Code.NEGATIVE_PRICE),
        ("1002,AAPL,quote,bid,585.33,-5", Code.INVALID_QTY),
        ("1002,AAPL,quote,bid,585.33,99999999999999999999", Code.MALFORMED_ROW),  # > int64
        ("1002,AAPL,quote,bid,585.33,1000000000001", Code.INVALID_QTY),  # > MAX_QTY
        ("-1002,AAPL,quote,bid,585.33,100", Code.MALFORMED_ROW),  # before the epoch
        ("1002,AAPL,quote,bid,٥٨٥.33,100", Code.MALFORMED_ROW),  # digits are ASCII only
        ("1_002,AAPL,quote,bid,585.33,100", Code.MALFORMED_ROW),
        ("1002,AAPL,quote,bid,585.40,100", Code.CROSSED_QUOTE),  # bid above the 585.35 ask
    ],
)
def test_each_bad_row_is_counted_by_reason_and_kept_out(tmp_path, bad, code):
    lines = GOOD[:2] + [bad] + GOOD[2:]
    recs, rep = read_table(write(tmp_path, lines))
    assert rep.counts == {code: 1}
    assert rep.first_lines[code] == (4,)  # header is line 1
    assert len(recs) == 5  # every good row survives
    assert recs["price"].tolist() == [5853300, 5853500, 5853500, 2200001, 2200200]


def test_a_row_earlier_than_one_before_it_refuses_the_whole_file(tmp_path):
    lines = [*GOOD[:2], "0999,AAPL,quote,bid,585.33,100", *GOOD[2:]]
    with pytest.raises(UnsortedInputError) as e:
        read_table(write(tmp_path, lines))
    assert (e.value.line, e.value.prev, e.value.code) == (4, 3, Code.TIME_BACKWARDS)
    assert "line 4 is earlier than line 3" in str(e.value)


def test_damaged_bytes_are_counted_rows_and_a_damaged_header_refuses(tmp_path):
    p = tmp_path / "b.csv"
    rows = [r.encode() for r in GOOD]
    rows[1] = b"1001,AA\xffPL,quote,ask,585.35,200"  # not UTF-8
    rows[3] = b"1003,AMZN,quote,bid,220.0\x001,300"  # a NUL
    p.write_bytes(HEADER.encode() + b"\n".join(rows) + b"\n")
    recs, rep = read_table(p)
    assert rep.counts == {Code.MALFORMED_ROW: 2} and rep.first_lines[Code.MALFORMED_ROW] == (3, 5)
    assert len(recs) == 3
    p.write_bytes(b"ts_event_ns,sym\xfe\n1,2\n")
    with pytest.raises(MarketDataFileError, match="header row is not UTF-8"):
        read_table(p)
    p.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\n".join(rows[:1]) + b"\n")
    assert len(read_table(p)[0]) == 1  # a spreadsheet's byte-order mark is not a column


def test_truncated_last_line_is_counted_as_truncation(tmp_path):
    p = write(tmp_path, [*GOOD, "1005,AMZN,qu"], newline=False)
    recs, rep = read_table(p)
    assert rep.counts == {Code.TRUNCATED_FILE: 1} and len(recs) == 5


def test_whole_file_problems_raise_before_any_work(tmp_path):
    with pytest.raises(MarketDataFileError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(MarketDataFileError, match="file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("time,sym,px\n1,AAPL,1.0\n")
    with pytest.raises(MarketDataFileError, match=r"missing columns \['ts_event_ns', 'symbol'"):
        read_table(tmp_path / "cols.csv")
    (tmp_path / "hdr.csv").write_text(HEADER)
    with pytest.raises(MarketDataFileError, match="no data rows"):
        read_table(tmp_path / "hdr.csv")


def test_parquet_reads_the_same_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r.split(",") for r in GOOD] + [["1005", "AAPL", "quote", "bid", "585.40", "1"]]
    cols = list(zip(*rows, strict=True))
    t = pa.table(
        {
            "ts_event_ns": pa.array([int(x) for x in cols[0]], pa.int64()),
            "symbol": cols[1],
            "kind": cols[2],
            "side": cols[3],
            "price": cols[4],
            "qty": pa.array([int(x) for x in cols[5]], pa.int64()),
        }
    )
    pq.write_table(t, tmp_path / "t.parquet")
    recs, rep = read_table(tmp_path / "t.parquet")
    assert rep.counts == {Code.CROSSED_QUOTE: 1}
    assert recs["price"].tolist() == [5853300, 5853500, 5853500, 2200001, 2200200]
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(MarketDataFileError, match="not a readable Parquet file"):
        read_table(tmp_path / "bad.parquet")
    assert np.all(recs["flags"] == 4)  # MDF_REPLAY


@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_csv_read_a_batch_at_a_time_equals_the_file_read_at_once(tmp_path, size):
    # iter_csv carries the checks' state across batches (the touch for crossed quotes, the
    # last time for order, line numbers): any batch size gives the records and the report
    # of one pass; bad rows at batch edges included
    from bot4.marketdata.files import iter_csv

    rng = np.random.default_rng(11)
    print("seed 11")
    lines, t = [], 1000
    for _ in range(120):
        t += int(rng.integers(0, 3))
        bid = 585.00 + float(rng.integers(0, 20)) / 100
        r = rng.random()
        if r < 0.1:
            lines.append(f"{t},AAPL,quote,bid,58x.33,100")  # malformed
        elif r < 0.2:
            lines.append(f"{t},AAPL,quote,bid,{bid + 0.5:.2f},100")  # may cross the ask
        elif r < 0.25:
            lines.append(f'{t},"AAPL","quote","ask",{bid + 0.3:.2f},"100"')  # quoted fields
        else:
            lines.append(f"{t},AAPL,quote,{'bid' if r < 0.6 else 'ask'},{bid:.2f},{int(r * 900)}")
    p = write(tmp_path, lines + ["99999,AAPL,quote,bid,585.0"], newline=False)  # cut last line
    whole, rep = read_table(p)
    from bot4.marketdata.report import BadInputReport

    got_rep = BadInputReport(str(p))
    parts = list(iter_csv(p, got_rep, size=size))
    assert all(len(c) <= size for c in parts) and len(parts) >= 121 // size
    got = np.concatenate(parts)
    assert got.tobytes() == whole.tobytes() and len(whole) > 40
    assert got_rep.counts == rep.counts and rep.counts[Code.TRUNCATED_FILE] == 1
    assert got_rep.first_lines == rep.first_lines and got_rep.rows == rep.rows == 121


def test_csv_order_is_checked_across_batches(tmp_path):
    from bot4.marketdata.files import iter_csv

    lines = [f"{1000 + k},AAPL,trade,buy,585.00,10" for k in range(10)]
    lines[6] = "1000,AAPL,trade,buy,585.00,10"  # earlier than line 7's 1005
    p = write(tmp_path, lines)
    with pytest.raises(UnsortedInputError, match="line 8"):
        list(iter_csv(p, size=3))  # lines 7 and 8 sit in different batches
