"""A LOBSTER pair streamed a block of lines at a time (bot4.marketdata.lobster_stream) gives
the records and the bad-input report of the pair read whole, whatever the block size, and
holds one block, not the day."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bot4.marketdata.lobster import LobsterError, find_pairs
from bot4.marketdata.lobster_stream import iter_lobster_stream, one_pair, tile_pair
from bot4.marketdata.report import BadInputReport, UnsortedInputError
from bot4.records import MD_BOOK_ADD, MDF_LAST_IN_BATCH
from bot4.records.errors import Code
from bot4.stages.marketdata import load_recorded
from tests.data_paths import lobster_dir

NAME = "AMZN_2012-06-21_34200000_57600000_{}_1.csv"


@pytest.fixture(scope="module")
def pairs():
    return {f"{p.ticker}-{p.levels}-{p.message.member is None}": p
            for p in find_pairs(lobster_dir(), recursive=True)}  # fmt: skip


def streamed(path, lines: int, **kw) -> tuple[np.ndarray, BadInputReport]:
    report = BadInputReport("")
    chunks = list(iter_lobster_stream(path, report, lines=lines, **kw))
    return np.concatenate(chunks) if chunks else np.zeros(0), report


def whole(path) -> tuple[np.ndarray, BadInputReport]:
    return load_recorded("lobster", str(path), snapshot=True)


@pytest.mark.parametrize("lines", [997, 1 << 16])
def test_every_sample_pair_streams_the_records_read_whole(pairs, lines):
    for key, pair in pairs.items():
        want, want_report = whole(pair.message.path)
        got, report = streamed(pair, lines)
        assert got.dtype == want.dtype and len(got) == len(want), key
        assert got.tobytes() == want.tobytes(), key
        assert report.as_dict() == want_report.as_dict(), key


def _write_pair(d: Path, msgs: list[str], book: list[str], *, newline: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    end = "\n" if newline else ""
    (d / NAME.format("message")).write_text("\n".join(msgs) + end)
    (d / NAME.format("orderbook")).write_text("\n".join(book) + ("\n" if book else ""))
    return d / NAME.format("message")


def _random_pair(rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    """A level-1 pair of ``n`` lines: runs of equal times, adds, cancels, executions and
    deletes of live orders, bad rows anywhere, orderbook rows that sometimes disagree."""
    msgs, book, live = [], [], {}
    t, oid = 34_200_000_000, 1
    for _ in range(n):
        if rng.random() < 0.6:  # else the same time as the row before: a run
            t += rng.randint(1, 2_000_000)
        ts = f"{t // 10**6}.{t % 10**6:06d}"
        r = rng.random()
        if r < 0.06:
            msgs.append(rng.choice([f"{ts},1,5,100", f"{ts},9,5,100,2238000,1", "garbage",
                                    f"{ts},1,5,-100,2238000,1", ""]))  # fmt: skip
        elif r < 0.5 or not live:
            side = rng.choice((1, -1))
            px = 2_238_000 + (-1 if side == 1 else 1) * 100 * rng.randint(0, 5)
            live[oid] = (side, px, rng.randint(1, 300))
            msgs.append(f"{ts},1,{oid},{live[oid][2]},{px},{side}")
            oid += 1
        else:
            o = rng.choice(list(live))
            side, px, q = live[o]
            kind = rng.choice((2, 3, 4))
            take = q if kind == 3 else rng.randint(1, q)
            msgs.append(f"{ts},{kind},{o},{take},{px},{side}")
            if take == q:
                del live[o]
            else:
                live[o] = (side, px, q - take)
        bids = [p for s, p, _ in live.values() if s == 1]
        asks = [p for s, p, _ in live.values() if s == -1]
        ask = min(asks) if asks and rng.random() > 0.05 else 9_999_999_999
        bid = max(bids) if bids else -9_999_999_999
        book.append(f"{ask},{100 if ask < 9_999_999_999 else 0},{bid},{100 if bids else 0}")
    return msgs, book


def test_random_pairs_stream_as_read_whole_at_every_block_size(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for case in range(6):
        msgs, book = _random_pair(rng, rng.randint(1, 400))
        path = _write_pair(tmp_path / str(case), msgs, book, newline=rng.random() < 0.7)
        try:
            want, want_report = whole(path)
        except (UnsortedInputError, LobsterError) as e:
            # a bad row's time read as a time; a blank last line without its newline (the
            # files then differ in length): refused the same way
            for lines in (1, 3, 1 << 16):
                with pytest.raises(type(e)) as got:
                    streamed(path, lines)
                if isinstance(e, LobsterError):
                    assert str(got.value) == str(e), (seed, case, lines)
            continue
        for lines in (1, 2, 3, 7, 64, 1 << 16):
            got, report = streamed(path, lines)
            assert got.tobytes() == want.tobytes(), (seed, case, lines)
            assert report.as_dict() == want_report.as_dict(), (seed, case, lines)


def test_a_run_of_equal_times_across_blocks_ends_once(tmp_path):
    msgs = [f"34200.5,1,{i},10,2238000,1" for i in range(1, 6)] + ["34201.0,1,9,10,2238100,1"]
    book = ["9999999999,0,2238000,10"] * 6
    path = _write_pair(tmp_path, msgs, book)
    want, _ = whole(path)
    for lines in (1, 2, 4):
        got, _ = streamed(path, lines, snapshot=False)
        assert got.tobytes() == want[len(want) - len(got) :].tobytes()
        ends = np.flatnonzero(got["flags"] & MDF_LAST_IN_BATCH).tolist()
        adds = np.flatnonzero(got["kind"] == MD_BOOK_ADD).tolist()
        assert len(ends) == 2 and adds[4] <= ends[0] < adds[5] and ends[1] == len(got) - 1


@pytest.mark.parametrize("book_rows", [5, 7])
def test_files_of_different_lengths_are_refused_as_read_pair_refuses_them(tmp_path, book_rows):
    msgs = [f"34200.{i},1,{i},10,2238000,1" for i in range(1, 7)]
    path = _write_pair(tmp_path, msgs, ["9999999999,0,2238000,10"] * book_rows)
    with pytest.raises(LobsterError) as want:
        whole(path)
    for lines in (1, 4, 100):
        with pytest.raises(LobsterError) as got:
            streamed(path, lines)
        assert str(got.value) == str(want.value)
        assert f"has {book_rows} rows but its message file" in str(got.value)


def test_an_earlier_row_in_a_later_block_names_its_line(tmp_path):
    msgs = ["34200.5,1,1,1,100,1", "34200.9,1,2,1,100,1", "34200.6,1,3,1,100,1"]
    path = _write_pair(tmp_path, msgs, ["9999999999,0,100,1"] * 3)
    with pytest.raises(UnsortedInputError) as e:
        streamed(path, 2)
    assert (e.value.line, e.value.prev) == (3, 2)


def test_an_orderbook_line_that_does_not_parse_is_named_in_the_file(tmp_path):
    msgs = [f"34200.{i},1,{i},10,2238000,1" for i in range(1, 7)]
    book = ["9999999999,0,2238000,10"] * 6
    book[4] = "9999999999,0,x,10"
    path = _write_pair(tmp_path, msgs, book)
    with pytest.raises(LobsterError) as e:
        streamed(path, 2)
    assert "line 5 does not parse" in str(e.value) and e.value.code == Code.MALFORMED_ROW


@pytest.mark.parametrize("text", ["", " \n\n  \n"])
def test_empty_files_are_the_errors_read_whole_gives(tmp_path, text):
    path = _write_pair(tmp_path, [], [])
    path.write_text(text)
    with pytest.raises(LobsterError) as want:
        whole(path)
    with pytest.raises(LobsterError) as got:
        streamed(path, 2)
    assert str(got.value) == str(want.value) and got.value.code == Code.TRUNCATED_FILE


def test_a_day_four_times_as_long_holds_no_more(pairs, tmp_path, monkeypatch):
    # what the stream holds at once is a read block, a block of lines and what the builder
    # made of them, not the day: the peak traced allocation of a 4x longer day is about
    # the same (reads of 64 KiB here, so that both days are many blocks long)
    import bot4.marketdata.lobster_stream as ls

    monkeypatch.setattr(ls, "_BLOCK", 1 << 16)
    base = pairs["AMZN-1-True"]
    peaks = []
    for copies in (1, 4):
        pair = tile_pair(base, tmp_path / str(copies), copies)
        tracemalloc.start()
        n = sum(len(c) for c in iter_lobster_stream(pair, lines=4096))
        peaks.append((tracemalloc.get_traced_memory()[1], n))
        tracemalloc.stop()
    (small, n1), (big, n4) = peaks
    assert n4 > 3.9 * n1
    assert big < 1.1 * small, peaks


def test_one_pair_names_the_count(tmp_path):
    msgs, book = ["34200.1,1,1,10,2238000,1"], ["9999999999,0,2238000,10"]
    _write_pair(tmp_path, msgs, book)
    other = NAME.replace("AMZN", "GOOG")
    (tmp_path / other.format("message")).write_text(msgs[0] + "\n")
    (tmp_path / other.format("orderbook")).write_text(book[0] + "\n")
    with pytest.raises(LobsterError, match="holds 2 pairs"):
        one_pair(tmp_path)
