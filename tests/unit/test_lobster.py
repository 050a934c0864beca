"""LOBSTER reader and books, against the real NASDAQ sample data (AAPL, AMZN, GOOG on
2012-06-21) in ``../shared/data/lobster-2012-06-21`` beside the repository, and against
small files with one defect each.

The data README (in that folder) says what the reference orderbook can check: re-seeded
one-step checks, exact on levels 1..LEVELS-1 of the deep files and on every level-1 row
whose message does not empty the best level. Tests needing the data skip without it,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4.marketdata import (
    DUMMY_ASK_PRICE,
    DUMMY_BID_PRICE,
    LobsterError,
    find_pairs,
    local_to_utc_ns,
    read_messages,
    read_orderbook,
    read_pair,
    warm,
)
from bot4.marketdata.book import (  # the tests' reference book
    ORD_UNKNOWN,
    ST_OVERFLOW,
    LevelBook,
    OrderTable,
    one_step_check,
)
from bot4.marketdata.report import UnsortedInputError
from bot4.records import (
    DEFAULT_INSTRUMENTS,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_CANCEL,
    MD_BOOK_DELETE,
    MD_BOOK_EXEC,
    MD_BOOK_HIDDEN_EXEC,
    MD_TRADING_HALT,
    MDF_HALT,
    MDF_LAST_IN_BATCH,
    MDF_QUOTING,
    MDF_REPLAY,
    MDF_RESUME,
    SIDE_BUY,
    SIDE_SELL,
    Code,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lobster-2012-06-21"
DAY = date(2012, 6, 21)
MIDNIGHT_EDT_NS = int(datetime(2012, 6, 21, 4, tzinfo=UTC).timestamp()) * 10**9  # 00:00 EDT

# The data README's tables: rows, first / last time, counts of types 1..5, orders
# referenced without a type-1 row, and (level 1) the one-step top-of-book match rate.
README = {
    "AAPL-1": (118_497, "34200.004241176", "57599.913117637", (54818, 252, 28437, 23658, 11332)),
    "AMZN-1": (57_515, "34200.017459617", "57599.95935965", (27845, 16, 18235, 8974, 2445)),
    "AMZN-1-csv": (57_515, "34200.017459617", "57599.95935965", (27845, 16, 18235, 8974, 2445)),
    "AMZN-5": (155_935, "34200.017459617", "57599.95935965", (77381, 450, 66685, 8974, 2445)),
    "GOOG-1": (49_482, "34200.015105074", "57599.320718269", (24368, 7, 13429, 7765, 3913)),
    "GOOG-5": (112_673, "34200.015105074", "57599.871751084", (54907, 16, 46072, 7765, 3913)),
    "GOOG-10": (147_916, "34200.015105074", "57599.871751084", (71258, 19, 64961, 7765, 3913)),
    "AAPL-10-999": (999, "34200.004241176", "34249.086375027", None),
}
UNKNOWN_REFERENCES = {
    "AAPL-1": 14_980,
    "AMZN-1": 7_467,
    "AMZN-1-csv": 7_467,
    "AMZN-5": 8_491,
    "GOOG-1": 4_476,
    "GOOG-5": 4_951,
    "GOOG-10": 3_363,
    "AAPL-10-999": 9,
}
LEVEL1_MATCH_PCT = {"AAPL-1": 74.6, "AMZN-1": 75.7, "AMZN-1-csv": 75.7, "GOOG-1": 77.4}
DEEP = ["AMZN-5", "GOOG-5", "GOOG-10", "AAPL-10-999"]
ALL = list(README)


def local_ns(text: str) -> int:
    return int(Decimal(text) * 10**9)


# --- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.is_dir():
        why = (
            f"LOBSTER sample data not found at {DATA}: it is expected in "
            "../shared/data/lobster-2012-06-21 beside the repository"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return DATA


def _key(pair) -> str:
    key = f"{pair.ticker}-{pair.levels}"
    if pair.message.member is None:
        key += "-999" if pair.levels == 10 else "-csv"
    return key


@pytest.fixture(scope="module")
def samples(data_dir):
    """key -> (pair, records, orderbook, report) for every sample pair, read once."""
    return {_key(p): (p, *read_pair(p)) for p in find_pairs(data_dir, recursive=True)}


def test_find_pairs_discovers_every_sample(data_dir, samples):
    assert sorted(samples) == sorted(ALL)
    for z in sorted((data_dir / "zips").glob("*.zip")):
        (pair,) = find_pairs(z)
        assert pair.message.path == z and pair.orderbook.path == z
    fixture = data_dir / "aapl_level10_first999"
    (by_dir,) = find_pairs(fixture)
    (by_message,) = find_pairs(by_dir.message.path)
    (by_book,) = find_pairs(by_dir.orderbook.path)
    assert by_dir == by_message == by_book
    assert (by_dir.ticker, by_dir.day, by_dir.levels) == ("AAPL", DAY, 10)
    assert by_dir.info.start_ms == 34_200_000 and by_dir.info.end_ms == 57_600_000


@pytest.mark.parametrize("key", ALL)
def test_rows_and_event_types_match_readme(samples, key):
    _, records, book, report = samples[key]
    rows, first, last, types = README[key]
    assert report.clean and report.rows == rows == len(records) == len(book)
    assert book.shape[1] == 4 * samples[key][0].levels
    assert records["seq"][0] == 1 and (np.diff(records["seq"]) == 1).all()
    ts = records["ts_event_ns"]
    assert ts[0] == MIDNIGHT_EDT_NS + local_ns(first)
    assert ts[-1] == MIDNIGHT_EDT_NS + local_ns(last)
    counts = np.bincount(records["kind"], minlength=8)
    if types is not None:
        assert tuple(counts[1:6]) == types
    assert counts[0] == counts[6] == counts[7] == 0
    symbol = key.split("-")[0]
    assert (records["instrument"] == DEFAULT_INSTRUMENTS.id_of(symbol)).all()
    assert (records["ts_recv_ns"] == 0).all() and (records["parent_seq"] == 0).all()


@pytest.mark.parametrize("key", DEEP)
def test_one_step_check_deep_books_match_every_row(samples, key):
    _, records, book, _ = samples[key]
    match, _ = one_step_check(records, book)
    assert match[1:].all(), f"first mismatch at line {records['seq'][1:][~match[1:]][:1]}"


def _empties_best_level(records, book) -> np.ndarray:
    """Rows k >= 1 whose message is a delete / execution of at least the whole best level
    of its side in orderbook row k - 1 (computed from the files alone, not the book)."""
    prev = book[:-1]
    r = records[1:]
    ask = r["side"] == SIDE_SELL
    best_px = np.where(ask, prev[:, 0], prev[:, 2])
    best_sz = np.where(ask, prev[:, 1], prev[:, 3])
    deletes = np.isin(r["kind"], (MD_BOOK_DELETE, MD_BOOK_EXEC))
    return deletes & (r["price"] == best_px) & (r["qty"] >= best_sz)


@pytest.mark.parametrize("key", list(LEVEL1_MATCH_PCT))
def test_one_step_check_level1_matches_every_determined_row(samples, key):
    _, records, book, _ = samples[key]
    match, emptied = one_step_check(records, book)
    excluded = _empties_best_level(records, book)
    assert (emptied[1:] == excluded).all()
    assert (match[1:] == ~excluded).all(), "a mismatch outside the rows the README excludes"
    pct = 100.0 * match[1:].sum() / (len(records) - 1)
    assert abs(pct - LEVEL1_MATCH_PCT[key]) <= 0.5, pct


def test_executions_carry_the_resting_side(samples):
    """Direction on a visible execution is the resting order's side: it trades at that
    side's best price of the previous reference row."""
    _, records, book, _ = samples["GOOG-10"]
    ex = np.flatnonzero(records["kind"][1:] == MD_BOOK_EXEC) + 1
    sell = records["side"][ex] == SIDE_SELL
    best = np.where(sell, book[ex - 1, 0], book[ex - 1, 2])
    assert sell.any() and (~sell).any()
    assert (records["price"][ex] == best).all()


@pytest.mark.parametrize("key", ALL)
def test_order_table_counts_orders_never_added(samples, key):
    _, records, _, _ = samples[key]
    orders = OrderTable(capacity=1024)
    orders.apply_batch(records)
    c = orders.counters()
    assert c["unknown"] == UNKNOWN_REFERENCES[key]
    assert c["duplicate"] == c["overfill"] == 0
    assert c["added"] - c["removed"] == len(orders)
    assert c["ignored"] == np.count_nonzero(records["kind"] == MD_BOOK_HIDDEN_EXEC)


def test_twelve_digit_fraction_is_truncated_to_ns(samples):
    _, records, _, _ = samples["AMZN-5"]
    (r,) = records[records["seq"] == 67_823]
    assert r["ts_event_ns"] == MIDNIGHT_EDT_NS + 43_002_632_812_672
    assert (r["kind"], r["order_id"], r["qty"], r["price"], r["side"]) == (
        MD_BOOK_DELETE, 134172772, 100, 2238700, SIDE_SELL,
    )  # fmt: skip


@pytest.mark.parametrize("key", ALL)
def test_timestamps_non_decreasing_and_batches_flagged(samples, key):
    _, records, _, _ = samples[key]
    ts = records["ts_event_ns"]
    assert (np.diff(ts) >= 0).all()
    assert (records["flags"] & MDF_REPLAY).all()
    last = (records["flags"] & MDF_LAST_IN_BATCH) != 0
    assert last[-1] and (last[:-1] == (ts[1:] != ts[:-1])).all()
    assert last.sum() == np.unique(ts).size < len(records)  # equal timestamps do occur


@pytest.mark.parametrize("key", ALL)
def test_hidden_executions_carry_order_id_zero(samples, key):
    _, records, _, _ = samples[key]
    hidden = records["kind"] == MD_BOOK_HIDDEN_EXEC
    assert hidden.any() and (records["order_id"][hidden] == 0).all()
    assert (records["order_id"][~hidden] > 0).all()


def test_fixture_without_final_newline_reads_all_999_rows(data_dir, samples):
    pair, records, book, report = samples["AAPL-10-999"]
    for f in (pair.message, pair.orderbook):
        assert not f.read_bytes().endswith(b"\n")
    assert report.rows == report.kept == len(records) == 999 and book.shape == (999, 40)
    last = records[-1]
    assert last["ts_event_ns"] == MIDNIGHT_EDT_NS + local_ns("34249.086375027")
    assert (last["kind"], last["order_id"], last["qty"], last["price"], last["side"]) == (
        MD_BOOK_ADD, 18259338, 18, 5853500, SIDE_BUY,
    )  # fmt: skip
    first = records[0]
    assert first["ts_event_ns"] == MIDNIGHT_EDT_NS + local_ns("34200.004241176")
    assert (first["kind"], first["order_id"], first["qty"], first["price"]) == (
        MD_BOOK_ADD, 16113575, 18, 5853300,
    )  # fmt: skip
    assert first["instrument"] == DEFAULT_INSTRUMENTS.id_of("AAPL")


# --- bad input (synthetic files) ------------------------------------------------------------

NAME = "AMZN_2012-06-21_34200000_57600000_message_1.csv"
GOOD = [
    "34200.017459617,1,11885113,21,2238100,1",
    "34200.189608,1,3911376,20,2239600,-1",
    "34200.189608,1,11534792,100,2237500,1",
    "34200.2,3,3911376,20,2239600,-1",
    "34200.2,1,11534793,10,2239000,-1",
    "34201.0001,2,11534792,50,2237500,1",
    "34201.0001,4,11885113,21,2238100,1",
    "34201.5,5,0,30,2238500,-1",
    "34202.123456789,1,11534800,7,2238200,1",
    "34202.123456789,4,11534793,10,2239000,-1",
]


def _write(tmp_path: Path, lines: list[str], *, final_newline: bool = True) -> Path:
    path = tmp_path / NAME
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""))
    return path


def _fields(records: np.ndarray) -> list[tuple]:
    names = ["ts_event_ns", "kind", "order_id", "qty", "price", "side", "instrument"]
    return records[names].tolist()


@pytest.fixture
def clean(tmp_path):
    records, report = read_messages(_write(tmp_path, GOOD))
    assert report.clean and len(records) == len(GOOD)
    return records


DEFECTS = {
    "too few columns": ("34200.3,1,5,100,2238000", Code.MALFORMED_ROW),
    "too many columns": ("34200.3,1,5,100,2238000,1,7", Code.MALFORMED_ROW),
    "non-numeric id": ("34200.3,1,abc,100,2238000,1", Code.MALFORMED_ROW),
    "non-numeric time": ("34200.3x,1,5,100,2238000,1", Code.MALFORMED_ROW),
    "empty field": ("34200.3,1,5,,2238000,1", Code.MALFORMED_ROW),
    "direction 0": ("34200.3,1,5,100,2238000,0", Code.MALFORMED_ROW),
    "unknown type": ("34200.3,9,5,100,2238000,1", Code.UNKNOWN_KIND),
    "negative price": ("34200.3,1,5,100,-2238000,1", Code.NEGATIVE_PRICE),
    "negative size": ("34200.3,1,5,-100,2238000,1", Code.INVALID_QTY),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_bad_row_is_counted_and_excluded(tmp_path, clean, defect):
    row, code = DEFECTS[defect]
    lines = [*GOOD[:4], row, *GOOD[4:]]  # line 5, after a row at 34200.2
    records, report = read_messages(_write(tmp_path, lines))
    assert report.counts == {code: 1} and report.first_lines == {code: (5,)}
    assert (report.rows, report.kept, report.excluded) == (11, 10, 1)
    assert _fields(records) == _fields(clean)
    assert records["seq"].tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert code.name in str(report)


def test_truncated_last_line_is_counted_and_excluded(tmp_path, clean):
    lines = [*GOOD, GOOD[-1][:25]]
    records, report = read_messages(_write(tmp_path, lines, final_newline=False))
    assert report.counts == {Code.TRUNCATED_FILE: 1}
    assert report.first_lines == {Code.TRUNCATED_FILE: (11,)}
    assert _fields(records) == _fields(clean)
    # the same cut row, but terminated: a malformed row, not a truncated file
    records, report = read_messages(_write(tmp_path, lines, final_newline=True))
    assert report.counts == {Code.MALFORMED_ROW: 1}


def test_unterminated_complete_last_row_is_kept(tmp_path, clean):
    records, report = read_messages(_write(tmp_path, GOOD, final_newline=False))
    assert report.clean and _fields(records) == _fields(clean)


def test_crlf_line_endings_parse_like_lf(tmp_path, clean):
    path = tmp_path / NAME
    path.write_bytes(("\r\n".join(GOOD) + "\r\n").encode())
    records, report = read_messages(path)
    assert report.clean and _fields(records) == _fields(clean)


def test_every_defect_in_one_file(tmp_path, clean):
    lines = list(GOOD[:2])
    expect: dict[Code, list[int]] = {}
    for row, code in DEFECTS.values():
        lines.append(row.replace("34200.3", "34200.19").replace("34200.1,", "34200.0,"))
        expect.setdefault(code, []).append(len(lines))
    lines.extend(GOOD[2:])
    lines.append(GOOD[-1][:30])
    expect[Code.TRUNCATED_FILE] = [len(lines)]
    records, report = read_messages(_write(tmp_path, lines, final_newline=False), keep_lines=3)
    assert report.counts == {c: len(v) for c, v in expect.items()}
    assert report.first_lines == {c: tuple(v[:3]) for c, v in expect.items()}
    assert report.kept == len(GOOD) and _fields(records) == _fields(clean)


def test_a_row_earlier_than_one_before_it_refuses_the_file(tmp_path):
    lines = [
        "34200.5,1,1,1,100,1",
        "34200.9,1,2,1,100,1",
        "34200.6,1,3,1,100,1",
        "34200.7,1,4,1,100,1",
    ]
    with pytest.raises(UnsortedInputError) as e:
        read_messages(_write(tmp_path, lines))
    assert (e.value.line, e.value.prev, e.value.count) == (3, 2, 2)
    assert e.value.code == Code.TIME_BACKWARDS
    assert "line 3 is earlier than line 2" in str(e.value)
    # a malformed row's time does not count: it never reaches the order check
    lines[2:] = ["34200.1,1,3,1,100", "34200.9,1,4,1,100,1"]
    records, report = read_messages(_write(tmp_path, lines))
    assert report.counts == {Code.MALFORMED_ROW: 1} and records["order_id"].tolist() == [1, 2, 4]


def test_fraction_digits_and_truncation(tmp_path):
    lines = [
        "34200,1,1,1,100,1",
        "34200.1,1,2,1,100,1",
        "34200.123,1,3,1,100,1",
        "34200.123456789,1,4,1,100,1",
        "34200.123456789999,1,5,1,100,1",
        "57059.4011,1,6,1,100,1",
    ]
    records, report = read_messages(_write(tmp_path, lines))
    assert report.clean
    got = (records["ts_event_ns"] - MIDNIGHT_EDT_NS).tolist()
    assert got == [
        34_200_000_000_000, 34_200_100_000_000, 34_200_123_000_000,
        34_200_123_456_789, 34_200_123_456_789, 57_059_401_100_000,
    ]  # fmt: skip


def test_halt_rows_set_halt_flags(tmp_path):
    lines = ["36023,7,0,0,-1,-1", "36323,7,0,0,0,-1", "36723,7,0,0,1,-1", "36724,7,0,0,5,-1"]
    records, report = read_messages(_write(tmp_path, lines))
    assert report.counts == {Code.MALFORMED_ROW: 1}
    assert report.first_lines == {Code.MALFORMED_ROW: (4,)}
    assert (records["kind"] == MD_TRADING_HALT).all()
    assert (records["flags"] & (MDF_HALT | MDF_QUOTING | MDF_RESUME)).tolist() == [
        MDF_HALT, MDF_QUOTING, MDF_RESUME,
    ]  # fmt: skip
    assert (records["price"] == 0).all() and (records["side"] == 0).all()


def test_missing_empty_and_unknown_inputs_raise_before_parsing(tmp_path):
    missing = tmp_path / NAME
    with pytest.raises(LobsterError, match=NAME) as e:
        read_messages(missing)
    assert e.value.code == Code.INPUT_MISSING
    for content in ("", "\n\n"):
        missing.write_text(content)
        with pytest.raises(LobsterError, match=f"{NAME}.*(empty|no rows)") as e:
            read_messages(missing)
        assert e.value.code == Code.TRUNCATED_FILE
    other = tmp_path / "ZZZZ_2012-06-21_34200000_57600000_message_1.csv"
    other.write_text(GOOD[0] + "\n")
    with pytest.raises(LobsterError, match="ZZZZ") as e:
        read_messages(other)
    assert e.value.code == Code.UNKNOWN_INSTRUMENT
    records, _ = read_messages(other, instruments={"ZZZZ": 77})
    assert records["instrument"].tolist() == [77]
    anon = tmp_path / "ticks.csv"
    anon.write_text(GOOD[0] + "\n")
    with pytest.raises(LobsterError, match="symbol= and day="):
        read_messages(anon)
    records, _ = read_messages(anon, symbol="GOOG", day=DAY)
    assert records["instrument"].tolist() == [DEFAULT_INSTRUMENTS.id_of("GOOG")]
    with pytest.raises(LobsterError, match="does not exist"):
        find_pairs(tmp_path / "nowhere")


def test_pairs_in_a_zip_are_read_in_place(tmp_path):
    book_name = NAME.replace("message", "orderbook")
    book_rows = "2239600,20,2238100,21\n" * len(GOOD)
    archive = tmp_path / "sample.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"inner/{NAME}", "\n".join(GOOD) + "\n")
        zf.writestr(f"inner/{book_name}", book_rows)
        zf.writestr("ReadMe.txt", "not data")
    (pair,) = find_pairs(archive)
    assert pair.message.member == f"inner/{NAME}" and str(pair).endswith(NAME)
    records, book, report = read_pair(archive)
    assert report.clean and len(records) == len(GOOD) and book.shape == (len(GOOD), 4)
    assert list(tmp_path.iterdir()) == [archive]  # nothing extracted


def test_orderbook_row_that_does_not_parse_is_an_error(tmp_path):
    path = tmp_path / NAME.replace("message", "orderbook")
    path.write_text("1,2,3,4\n5,6,x,8\n")
    with pytest.raises(LobsterError, match="line 2") as e:
        read_orderbook(path)
    assert e.value.code == Code.MALFORMED_ROW
    path.write_text("1,2,3,4\n5,6,7")
    with pytest.raises(LobsterError, match="line 2") as e:
        read_orderbook(path)
    assert e.value.code == Code.TRUNCATED_FILE
    path.write_text("1,2,3,4\n5,6,7,8")
    assert read_orderbook(path).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_local_midnight_converts_through_dst_changes():
    hour = 3600 * 10**9
    spring = local_to_utc_ns(date(2012, 3, 11), np.array([1 * hour, 3 * hour]))
    assert (spring - int(datetime(2012, 3, 11, tzinfo=UTC).timestamp()) * 10**9).tolist() == [
        6 * hour, 7 * hour,
    ]  # fmt: skip
    winter = local_to_utc_ns(date(2012, 12, 21), np.array([0]))
    assert winter[0] == int(datetime(2012, 12, 21, 5, tzinfo=UTC).timestamp()) * 10**9


# --- books against models -------------------------------------------------------------------

KINDS = [MD_BOOK_ADD, MD_BOOK_ADD, MD_BOOK_CANCEL, MD_BOOK_DELETE, MD_BOOK_EXEC]
PRICES = st.sampled_from([995, 996, 998, 1000, 1001, 1003, 1007])
EVENTS = st.lists(
    st.tuples(
        st.sampled_from([*KINDS, MD_BOOK_HIDDEN_EXEC]),
        st.sampled_from([SIDE_BUY, SIDE_SELL]),
        PRICES,
        st.integers(1, 300),
        st.integers(1, 12),
    ),
    max_size=80,
)


def _records(events) -> np.ndarray:
    out = np.zeros(len(events), MARKET_DATA)
    for i, (kind, side, price, qty, oid) in enumerate(events):
        out[i] = (i + 1, 0, i, 0, price, qty, oid, 1, kind, side, MDF_REPLAY)
    return out


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_level_book_matches_a_dict_model(events):
    records = _records(events)
    book, batch = LevelBook(capacity=16), LevelBook(capacity=16)
    model = {SIDE_BUY: {}, SIDE_SELL: {}}
    for r, (kind, side, price, qty, _) in zip(records, events, strict=True):
        book.apply(r)
        levels = model[side]
        if kind == MD_BOOK_ADD:
            levels[price] = levels.get(price, 0) + qty
        elif kind != MD_BOOK_HIDDEN_EXEC and price in levels:
            levels[price] -= qty
            if levels[price] <= 0:
                del levels[price]
    batch.apply_batch(records)
    for side, reverse in ((SIDE_BUY, True), (SIDE_SELL, False)):
        want = sorted(model[side].items(), reverse=reverse)
        for b in (book, batch):
            px, sz = b.levels(side)
            assert list(zip(px.tolist(), sz.tolist(), strict=True)) == want
    top = book.top(2)
    bids = sorted(model[SIDE_BUY].items(), reverse=True) + [(DUMMY_BID_PRICE, 0)] * 2
    asks = sorted(model[SIDE_SELL].items()) + [(DUMMY_ASK_PRICE, 0)] * 2
    assert top.tolist() == [*asks[0], *bids[0], *asks[1], *bids[1]]
    assert (book.stats == batch.stats).all()


def test_level_book_full_side_drops_its_worst_level():
    book = LevelBook(capacity=3)
    events = [(MD_BOOK_ADD, SIDE_SELL, p, 10, 1) for p in (1003, 1001, 1005, 1000, 1009)]
    book.apply_batch(_records(events))
    assert book.levels(SIDE_SELL)[0].tolist() == [1000, 1001, 1003]
    assert book.stats[ST_OVERFLOW] == 2
    book.seed(np.array([1001, 5, 999, 7, 1002, 6, 998, 8], np.int64))
    assert book.top(3).tolist() == [1001, 5, 999, 7, 1002, 6, 998, 8, DUMMY_ASK_PRICE, 0,
                                    DUMMY_BID_PRICE, 0]  # fmt: skip
    with pytest.raises(ValueError, match="ordered"):
        book.seed(np.array([1002, 5, 999, 7, 1001, 6, 998, 8], np.int64))


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_order_table_matches_a_dict_model(events):
    records = _records(events)
    table = OrderTable(capacity=8)  # grows, and collides, on most examples
    model: dict[int, int] = {}
    unknown = 0
    for kind, _side, _price, qty, oid in events:
        if kind == MD_BOOK_ADD:
            model[oid] = qty
        elif kind != MD_BOOK_HIDDEN_EXEC:
            if oid not in model:
                unknown += 1
            elif kind == MD_BOOK_DELETE or model[oid] <= qty:
                del model[oid]
            else:
                model[oid] -= qty
    for r in records[: len(records) // 2]:
        table.apply(r)
    table.apply_batch(records[len(records) // 2 :])
    assert {oid: table.remaining(oid) for oid in range(1, 13) if oid in table} == model
    assert len(table) == len(model) and table.stats[ORD_UNKNOWN] == unknown
    for oid in model:
        qty, _price, _side, seq = table.get(oid)
        assert qty == model[oid] and records[seq - 1]["order_id"] == oid


def test_warm_compiles_every_kernel():
    from bot4.marketdata import csv_fast, lobster_parsers
    from bot4.marketdata.builder import build_kernel

    assert warm() == 7
    for k in (csv_fast._read_lines, lobster_parsers._parse_messages, build_kernel):
        assert k.signatures, k
