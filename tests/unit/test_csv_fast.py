"""The CSV reader's numba fast path (bot4.marketdata.csv_fast) reads every line it claims
as the Python path does: a file read with it equals the same file read with the fast
path claiming nothing, records and bad-input report alike, on seeded random lines full of
what the fast path must leave alone."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bot4.marketdata import csv_fast
from bot4.marketdata.files import iter_csv
from bot4.marketdata.report import BadInputReport, UnsortedInputError
from bot4.records import MD_QUOTE, SIDE_BUY


def _field(rng: random.Random, name: str, ts: int) -> str:
    r = rng.random()
    if name == "ts_event_ns":
        v = str(ts)
        return rng.choice([v, f" {v}", f"+{v}", f"{v} ", "0" + v, "x"]) if r < 0.1 else v
    if name == "symbol":
        good = rng.choice(["AAPL", "AMZN", "GOOG", "MSFT"])
        return rng.choice(["aapl", "NOPE", " AAPL", "", "AAPLé", '"AAPL"']) if r < 0.1 else good
    if name == "kind":
        good = rng.choice(["quote", "trade"])
        return rng.choice(["QUOTE", " trade", "Trade", "quotes", "", "qu0te"]) if r < 0.15 else good
    if name == "side":
        good = rng.choice(["bid", "ask", "buy", "sell", ""])
        return rng.choice(["BID", " ask", "Sell\t", "b1d", "bids"]) if r < 0.15 else good
    if name == "price":
        whole = rng.choice([0, 1, 185, 585, 99999])
        frac = rng.choice(["", ".", ".3", ".33", ".3300", ".12345", ".0001", ".00010",
                           ".123456789000000000000"])  # fmt: skip
        odd = ["-1.5", " 2.5", "1e3", ".5", "1.2.3", "9" * 18, "9" * 15 + ".5", "9" * 19,
               "922337203685477.5807", "922337203685477.5808", "+3.25", ""]  # fmt: skip
        return rng.choice(odd) if r < 0.15 else f"{whole}{frac}"
    if name == "price_units":
        v = str(rng.choice([0, 1, 5_850_000, 10**17]))
        return rng.choice(["-5", " 7", "9" * 19, "9" * 20, "1.5", ""]) if r < 0.1 else v
    v = str(rng.choice([0, 1, 100, 10**12, 10**12 + 1]))  # qty
    return rng.choice(["-1", " 5", "9" * 19, "9" * 20, "5.0", ""]) if r < 0.1 else v


def _file(rng: random.Random, path, n: int) -> None:
    names = ["ts_event_ns", "symbol", "kind", "side", rng.choice(["price", "price_units"]), "qty"]
    if rng.random() < 0.5:
        names.append("venue")
    rng.shuffle(names)
    lines = [",".join(names)]
    ts = 1_700_000_000_000_000_000
    for _ in range(n):
        ts += rng.randint(0, 3)
        row = [("X" if nm == "venue" else _field(rng, nm, ts)) for nm in names]
        line = ",".join(row)
        r = rng.random()
        if r < 0.03:
            line += ",extra"
        elif r < 0.05:
            line = line.rsplit(",", 1)[0]
        elif r < 0.06:
            line = line.replace(",", "\x00", 1)
        elif r < 0.07:
            line = ""
        lines.append(line)
    end = rng.choice(["\n", "\r\n"])
    text = end.join(lines) + (end if rng.random() < 0.8 else "")
    path.write_bytes(text.encode("utf-8"))


def _read(path, size: int):
    report = BadInputReport(str(path))
    try:
        chunks = list(iter_csv(path, report, size=size))
    except UnsortedInputError as e:
        return ("unsorted", str(e))
    recs = np.concatenate(chunks) if chunks else np.zeros(0)
    return recs.tobytes(), report.as_dict()


def test_fast_path_reads_as_the_python_path(tmp_path, monkeypatch):
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    claimed = total = 0
    real = csv_fast.FastLines.read

    def counting(self, lines):
        nonlocal claimed, total
        out = real(self, lines)
        claimed += int((out[:, 0] == 1).sum())
        total += len(lines)
        return out

    def nothing(self, lines):
        out = np.zeros((len(lines), self.COLUMNS), np.int64)
        return out

    for case in range(12):
        path = tmp_path / f"t{case}.csv"
        _file(rng, path, rng.randint(1, 600))
        size = rng.choice([1, 7, 64, 1 << 16])
        monkeypatch.setattr(csv_fast.FastLines, "read", counting)
        fast = _read(path, size)
        monkeypatch.setattr(csv_fast.FastLines, "read", nothing)
        slow = _read(path, size)
        assert fast == slow, (seed, case, size)
    assert total > 0 and 0.2 * total < claimed < total, (seed, claimed, total)


@pytest.mark.parametrize(
    ("price", "units", "ok"),
    [
        ("585.33", 5_853_300, True),
        ("585.3300000", 5_853_300, True),
        ("585.33001", 0, False),  # finer than the scale (1e-4)
        ("922337203685477.5807", 2**63 - 1, True),
        ("922337203685477.5808", 0, False),  # past int64
        ("7.", 70_000, True),
    ],
)
def test_fast_path_prices_are_exact(tmp_path, price, units, ok):
    from bot4.marketdata.files import _codes
    from bot4.records import DEFAULT_INSTRUMENTS

    idx = {"ts_event_ns": 0, "symbol": 1, "kind": 2, "side": 3, "price": 4, "qty": 5}
    fast = csv_fast.FastLines(idx, 6, DEFAULT_INSTRUMENTS, *_codes(DEFAULT_INSTRUMENTS))
    out = fast.read([f"5,AAPL,Quote,BID,{price},100\n".encode()])
    assert out[0, 0] == 1 and out[0, 6:8].tolist() == [units, int(ok)]
    assert out[0, 3] == DEFAULT_INSTRUMENTS.id_of("AAPL") and out[0, 4:6].tolist() == [
        MD_QUOTE,
        SIDE_BUY,
    ]
