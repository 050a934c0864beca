"""Book building: the md stage's builder (numba, ``bot4.marketdata.builder``) against a
plain-Python dict-based book doing the same work on the same LOBSTER messages, in one run.

Both sides apply every message to an order map (id -> remaining, price, side) and to the
price levels of a window of N levels per side (size and order count), take a level that
slides into the window from the orderbook row, and publish a quote when a side's best
level changed; parsing is excluded. Three timings per round, interleaved, medians:

* ``kernel`` — the builder's kernel alone, outputs preallocated, the stage's order-map
  size, no cross-check (``check = False``), no depth (``depth = 0``): the book itself (it
  also writes the event and trade records, which the Python book only counts);
* ``md setup`` — what the md stage's start-up runs (``build_lobster_stream`` after
  parsing): ``BookBuilder(depth = the file's levels, check = True).build``, outputs
  allocated, every BOOK_LEVEL update and the per-row cross-check included;
* ``python`` — the plain-Python dict book (:func:`python_book`), same quotes asserted.

Rates are messages per second of the process's CPU time (``time.thread_time``: on a
shared, loaded machine wall time also counts the time other processes held the core);
the ratios are given on CPU time and, in brackets, on wall time:

    .venv/bin/python perf/bookbench.py                       # GOOG-10 and AMZN-5, 5 rounds
    .venv/bin/python perf/bookbench.py --pairs GOOG_2012-06-21_34200000_57600000_message_10
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bot4.marketdata.builder import BookBuilder, build_kernel
from bot4.marketdata.lobster import find_pairs, read_pair
from bot4.records import BOOK_LEVEL, MARKET_DATA

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster-2012-06-21"


def python_book(msgs: list[tuple], ref: list[list[int]], window: int) -> int:
    """The plain-Python book; ``msgs`` (seq, kind, order_id, side, price, qty). Returns the
    quotes it would publish."""
    orders: dict[int, list[int]] = {}
    keys = ([], [])  # per side: sorted keys, best last (bid: price, ask: -price)
    levels: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
    quotes = 0
    last = [None, None]

    def seed(row: list[int]) -> None:
        for s in (0, 1):
            keys[s].clear()
            levels[s].clear()
            col = 2 if s == 0 else 0
            for k in range(window):
                p, q = row[4 * k + col], row[4 * k + col + 1]
                if q > 0:
                    key = p if s == 0 else -p
                    bisect.insort(keys[s], key)
                    levels[s][key] = [q, 1]

    first = True
    for seq, kind, oid, side, price, qty in msgs:
        row = ref[seq - 1]
        if first:
            seed(row)
            first = False
        if 1 <= kind <= 4 and side in (1, -1):
            s = 0 if side == 1 else 1
            key = price if s == 0 else -price
            lv = levels[s]
            if kind == 1:
                orders[oid] = [qty, price, side]
                if key in lv:
                    lv[key][0] += qty
                    lv[key][1] += 1
                else:
                    bisect.insort(keys[s], key)
                    lv[key] = [qty, 1]
                    if len(keys[s]) > window:
                        del lv[keys[s].pop(0)]
            else:
                o = orders.get(oid)
                gone = kind == 3
                if o is not None:
                    o[0] = 0 if kind == 3 else o[0] - qty
                    if o[0] <= 0:
                        del orders[oid]
                        gone = True
                cur = lv.get(key)
                if cur is not None:
                    cur[0] -= qty
                    if cur[0] <= 0:
                        del lv[key]
                        keys[s].remove(key)
                    elif gone and cur[1] > 1:
                        cur[1] -= 1
            for s2 in (0, 1):  # slide in from the row
                if len(keys[s2]) < window:
                    col = 2 if s2 == 0 else 0
                    worst = keys[s2][0] if keys[s2] else None
                    for k in range(window):
                        p, q = row[4 * k + col], row[4 * k + col + 1]
                        kk = p if s2 == 0 else -p
                        if q > 0 and (worst is None or kk < worst) and len(keys[s2]) < window:
                            bisect.insort(keys[s2], kk)
                            levels[s2][kk] = [q, 1]
        for s in (0, 1):
            top = (keys[s][-1], levels[s][keys[s][-1]][0]) if keys[s] else None
            if top != last[s]:
                last[s] = top
                quotes += 1
    return quotes


def timed(into: list, fn, *args):
    """``fn(*args)``, appending its (CPU, wall) seconds to ``into``."""
    w, c = time.perf_counter(), time.thread_time()
    res = fn(*args)
    into.append((time.thread_time() - c, time.perf_counter() - w))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--pairs",
        nargs="*",
        default=[
            "GOOG_2012-06-21_34200000_57600000_message_10",
            "AMZN_2012-06-21_34200000_57600000_message_5",
        ],
    )
    args = ap.parse_args()
    pairs = [p for p in find_pairs(DATA, recursive=True) if p.message.filename[:-4] in args.pairs]
    print(f"load average {os.getloadavg()[0]:.1f}; rates from CPU time (thread_time), wall in []")
    print(
        f"{'pair':<8} {'messages':>8} {'kernel msg/s':>13} {'md setup msg/s':>15} "
        f"{'python msg/s':>13} {'kernel/py':>17} {'md setup/py':>17}"
    )
    for pair in pairs:
        records, book, _ = read_pair(pair)
        window = pair.levels
        n_inst = int(records["instrument"].max()) + 1
        BookBuilder(n_inst, window, window).build(records[:100], book)  # compile
        msgs = list(
            zip(
                records["seq"].astype(np.int64).tolist(),
                records["kind"].tolist(),
                records["order_id"].tolist(),
                records["side"].tolist(),
                records["price"].tolist(),
                records["qty"].tolist(),
                strict=True,
            )
        )
        ref = book.tolist()
        times: dict[str, list[tuple[float, float]]] = {"kernel": [], "setup": [], "python": []}
        out = np.zeros(4 * len(records) + 8, MARKET_DATA)
        lv = np.zeros(8, BOOK_LEVEL)

        for _ in range(args.rounds):
            b = BookBuilder(n_inst, window, 0, check=False)  # the stage's order map size
            counts = np.zeros(2, np.int64)
            done = timed(
                times["kernel"], build_kernel, records, 0, book, b.state(), out, counts, lv
            )
            assert done == len(records), "order map too small for one kernel call"
            stream = out[: counts[0]]
            # what the md stage's setup runs: depth = the file's levels, cross-check on,
            # outputs allocated (bot4.marketdata.replay.build_lobster_stream, parsing aside)
            full = timed(times["setup"], BookBuilder(n_inst, window, window).build, records, book)
            q = timed(times["python"], python_book, msgs, ref, window)
        assert q == int((stream["kind"] == 8).sum()), "the two books published different quotes"
        assert full[0].tobytes() != b"" and len(full[0]) == len(stream)
        med = {k: [statistics.median(x[j] for x in v) for j in (0, 1)] for k, v in times.items()}
        rate = {k: len(records) / v[0] for k, v in med.items()}
        py = med["python"]
        ratio = {k: (py[0] / med[k][0], py[1] / med[k][1]) for k in ("kernel", "setup")}
        name = f"{pair.ticker}-{pair.levels}"
        print(
            f"{name:<8} {len(records):>8} {rate['kernel']:>13,.0f} {rate['setup']:>15,.0f} "
            f"{rate['python']:>13,.0f} {ratio['kernel'][0]:>8.1f}x [{ratio['kernel'][1]:.1f}x] "
            f"{ratio['setup'][0]:>8.1f}x [{ratio['setup'][1]:.1f}x]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
