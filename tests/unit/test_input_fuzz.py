"""Fuzzed inputs, read by the parsers themselves (fast): every damaged CSV, Parquet,
LOBSTER pair, journal and topology either loads — with its bad rows counted by reason and
only clean, time-ordered records returned — or is refused with a one-line bot4 error.
Never another exception (a traceback for the user, a crash loop for the md stage).

The damaged files come from ``tests.damage`` with the printed seed
(``BOT4_TEST_SEED=<seed>`` replays a run)."""

from __future__ import annotations

import copy
import math
import shutil
import tomllib
from importlib import resources

import numpy as np
import pytest

from bot4.records import MARKET_DATA
from bot4.records.errors import Bot4Error
from tests.damage import CLEAN_CSV, damaged
from tests.seeds import seeded_rng


def outcome(read, derived: bool = False) -> str:
    """Run ``read`` (-> (records, report)); 'loaded' or 'refused', else the test fails.
    ``derived``: the records are not the rows themselves (a LOBSTER stream adds trades,
    quotes and the opening book to its messages)."""
    try:
        recs, rep = read()
    except Bot4Error as exc:
        text = str(exc)
        assert text and "\n" not in text, repr(text)
        return "refused"
    assert recs.dtype == MARKET_DATA
    assert rep.rows == rep.kept + rep.excluded, rep
    assert derived or rep.kept == len(recs), rep
    for code, n in rep.counts.items():
        assert n > 0 and 0 < len(rep.first_lines.get(code, ())) <= n, rep
    ts = recs["ts_event_ns"]
    assert (ts >= 0).all() and (np.diff(ts) >= 0).all()  # unsorted input never loads
    q = recs["kind"] <= 2  # quotes and trades (LOBSTER's order events carry ids)
    assert (recs["price"][q] >= 0).all() and (recs["qty"] >= 0).all()
    assert (recs["instrument"] > 0).all()
    return "loaded"


def test_damaged_csv_loads_counted_or_is_refused_in_one_line(tmp_path):
    from bot4.marketdata.files import read_table
    from bot4.replay.sources import open_source

    rng, _seed = seeded_rng("damaged csv")
    seen = {"loaded": 0, "refused": 0}
    for k in range(80):
        data, names = damaged(CLEAN_CSV, rng, 1 + k % 3)
        p = tmp_path / f"{k}.csv"
        p.write_bytes(data)
        got = outcome(lambda p=p: read_table(p))
        seen[got] += 1
        try:  # replay reads it through the same reader, refusals its own way
            src = open_source(p)
        except Bot4Error as exc:
            # refused by both, or loaded with every row bad: nothing to replay
            nothing = got == "loaded" and len(read_table(p)[0]) == 0
            assert got == "refused" or nothing, (names, str(exc))
            assert "\n" not in str(exc)
        else:
            assert got == "loaded", names
            assert src.total == sum(len(c) for c in src.chunks())
    assert seen["loaded"] and seen["refused"], seen  # the corpus exercises both outcomes


def _clean_parquet_table():
    import pyarrow as pa

    rows = [r.split(",") for r in CLEAN_CSV.decode().splitlines()[1:]]
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "ts_event_ns": pa.array([int(x) for x in cols[0]], pa.int64()),
            "symbol": pa.array(cols[1]).dictionary_encode(),
            "kind": pa.array(cols[2]),
            "side": pa.array(cols[3]),
            "price_units": pa.array([int(x.replace(".", "")) * 100 for x in cols[4]], pa.int64()),
            "qty": pa.array([int(x) for x in cols[5]], pa.int64()),
        }
    )


def _poisoned(table, rng):
    """One column replaced by values of another type or with poison in them."""
    import pyarrow as pa

    n = table.num_rows
    name = table.column_names[int(rng.integers(0, table.num_columns))]
    choice = int(rng.integers(0, 7))
    col = table.column(name).to_pylist()
    idx = rng.choice(n, max(1, n // 8), replace=False)
    if choice == 0:  # nulls
        new = pa.array([None if i in idx else v for i, v in enumerate(col)])
    elif choice == 1:  # floats with NaN / inf / fractions
        bad = [math.nan, math.inf, -math.inf, 1.5, 2.0**60]
        vals = [float(v) if isinstance(v, int) else 1.0 for v in col]
        new = pa.array([bad[i % 5] if i in idx else v for i, v in enumerate(vals)], pa.float64())
    elif choice == 2:  # text, some of it garbage
        new = pa.array([("x\x00y" if i in idx else str(v)) for i, v in enumerate(col)])
    elif choice == 3:  # unsigned beyond int64
        vals = [v if isinstance(v, int) else 1 for v in col]
        new = pa.array([2**64 - 1 if i in idx else abs(v) for i, v in enumerate(vals)], pa.uint64())
    elif choice == 4:  # a type that cannot hold any field
        new = pa.array([[1, 2]] * n)
    elif choice == 5:  # timestamps, some far out
        vals = [v if isinstance(v, int) else 1 for v in col]
        new = pa.array(
            [2**62 if i in idx else abs(v) for i, v in enumerate(vals)],
            pa.timestamp("ms"),  # Parquet keeps ms; 2^62 ms overflows ns
        )
    else:  # rows out of order
        order = np.arange(n)
        order[idx] = order[idx[::-1]]
        return table.take(pa.array(order))
    return table.set_column(table.column_names.index(name), name, new)


def test_poisoned_parquet_through_both_price_paths_loads_counted_or_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bot4.marketdata.files import read_table
    from bot4.replay.sources import open_source

    rng, _seed = seeded_rng("poisoned parquet")
    clean = _clean_parquet_table()
    seen = {"loaded": 0, "refused": 0}
    for k in range(40):
        t = _poisoned(clean, rng)
        if k % 2:  # the decimal-text price column instead of price_units
            col = t.column("price_units")
            ints = pa.types.is_integer(col.type)
            prices = col.to_pylist() if ints else [None] * t.num_rows
            text = [f"{v / 10_000:.4f}" if type(v) is int else None for v in prices]
            t = t.drop(["price_units"]).append_column("price", pa.array(text, pa.string()))
        p = tmp_path / f"{k}.parquet"
        pq.write_table(t, p, row_group_size=7)
        if k % 5 == 4:  # and some files damaged as bytes
            p.write_bytes(damaged(p.read_bytes(), rng)[0])
        got = outcome(lambda p=p: read_table(p))
        seen[got] += 1
        try:
            src = open_source(p)
            streamed = sum(len(c) for c in src.chunks(5))
        except Bot4Error as exc:
            assert "\n" not in str(exc)
            continue
        assert got == "loaded" and streamed == src.total == len(read_table(p)[0])
    assert seen["loaded"] and seen["refused"], seen


@pytest.fixture(scope="module")
def lobster_pair():
    from tests.data_paths import lobster_dir

    src = lobster_dir() / "aapl_level10_first999"
    msg = next(src.glob("*_message_*.csv"))
    book = next(src.glob("*_orderbook_*.csv"))
    keep = 150  # a small clean pair: the first rows of both files
    cut = lambda f: b"".join(f.read_bytes().splitlines(keepends=True)[:keep])  # noqa: E731
    return msg.name, cut(msg), book.name, cut(book)


def test_damaged_lobster_pairs_load_counted_or_are_refused_in_one_line(tmp_path, lobster_pair):
    from bot4.stages.marketdata import load_recorded

    rng, _seed = seeded_rng("damaged lobster")
    msg_name, msg, book_name, book = lobster_pair
    seen = {"loaded": 0, "refused": 0}
    for k in range(30):
        d = tmp_path / f"p{k}"
        d.mkdir()
        m, b = msg, book
        if k % 4 == 3:
            b, _ = damaged(book, rng)
        else:
            m, _ = damaged(msg, rng, 1 + k % 2)
        (d / msg_name).write_bytes(m)
        (d / book_name).write_bytes(b)
        read = lambda d=d: load_recorded("lobster", str(d), snapshot=True)  # noqa: E731
        seen[outcome(read, derived=True)] += 1
        shutil.rmtree(d)
    assert seen["loaded"] and seen["refused"], seen


def test_damaged_market_data_journals_load_or_are_refused_in_one_line(tmp_path):
    from bot4.journal import JournalWriter
    from bot4.marketdata.files import read_table
    from bot4.marketdata.journaled import read_journal_market_data
    from bot4.replay.sources import open_source

    rng, _seed = seeded_rng("damaged journal")
    (tmp_path / "c.csv").write_bytes(CLEAN_CSV)
    recs = read_table(tmp_path / "c.csv")[0]
    seen = {"loaded": 0, "refused": 0}
    for k in range(20):
        j = tmp_path / f"j{k}"
        with JournalWriter(j, fsync="none") as w:
            for i in range(0, len(recs), 8):
                w.append(recs[i : i + 8])
        seg = sorted(j.glob("journal-*.bj4"))[0]
        data = seg.read_bytes()
        if k % 3 == 0:
            data = data[: int(rng.integers(len(data) // 2, len(data)))]  # cut (a crash)
        else:
            data, _ = damaged(data, rng)
        seg.write_bytes(data)
        seen[outcome(lambda j=j: read_journal_market_data(j))] += 1
        try:
            src = open_source(j)
            assert src.total == sum(len(c) for c in src.chunks())
        except Bot4Error as exc:
            assert "\n" not in str(exc)
    assert seen["loaded"] and seen["refused"], seen


BAD_VALUES = [
    math.nan, math.inf, -math.inf, -1, 0, 1.5, 2**63 - 1, 10**15, "", "x" * 60, True,
    [], {}, [1, "a"], {"a": 1}, "operator", "control",
]  # fmt: skip


def test_fuzzed_topologies_are_accepted_or_refused_in_one_line(tmp_path):
    """Random bad values under random keys of the default topology (stage, ring, group
    and every param key of the stage's kind): a TopologyError naming file and key, or a
    topology that passed every check. (That an accepted one also starts is the probe in
    the commit message; here: never another exception.)"""
    from bot4.pipeline.topology import TopologyError, parse_topology
    from bot4.pipeline.validate import validate_topology
    from bot4.stages import KINDS

    rng, _seed = seeded_rng("fuzzed topology")
    base = tomllib.loads(resources.files("bot4.config").joinpath("default.toml").read_text())
    base["group"] = [{"name": "hot", "members": ["signals", "risk"], "core": 1}]
    refused = 0
    for _ in range(400):
        doc = copy.deepcopy(base)
        where = ("stage", "ring", "group")[int(rng.integers(0, 3))]
        table = doc[where][int(rng.integers(0, len(doc[where])))]
        keys = list(table)
        if where == "stage":
            params = table.setdefault("params", {})
            keys += [f"params.{k}" for k in sorted(KINDS[table["kind"]].params_keys)]
        key = keys[int(rng.integers(0, len(keys)))]
        value = BAD_VALUES[int(rng.integers(0, len(BAD_VALUES)))]
        if key.startswith("params."):
            params[key[7:]] = value
        else:
            table[key] = value
        try:
            validate_topology(parse_topology(doc, "fuzz.toml", cpu_count=2))
        except TopologyError as exc:
            assert str(exc).startswith("fuzz.toml: ") and "\n" not in str(exc), str(exc)
            refused += 1
    assert refused > 200
