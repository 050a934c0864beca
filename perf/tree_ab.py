"""Same-process A/B of two source trees' book builder and ITCH decoder (issue 13), both loaded
modules of their own (neither is the installed package), rounds interleaved, A/B order
alternating each round; medians of CPU time (thread_time); outputs asserted identical. Besides
the LOBSTER days, ``book deep sides``: the builder on a full-depth book's random flow
(:func:`deep_flow`, sides of hundreds of levels, changes far from the best)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from booklayout_ab import load_module  # perf/ (this script's directory)

from bot4.gateways import mold
from bot4.gateways.feed import lobster_to_itch
from bot4.marketdata.lobster import find_pairs, read_pair
from bot4.records import (
    BOOK_LEVEL,
    MARKET_DATA,
    MD_BOOK_ADD,
    MD_BOOK_DELETE,
    MDF_LAST_IN_BATCH,
    SIDE_BUY,
    SIDE_SELL,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster-2012-06-21"
AMZN = str(DATA / "amzn_level1")


def load(root: Path, tmp: Path, tag: str):
    srcs = {
        n: (root / p).read_text()
        for n, p in (
            ("book_step", "bot4/marketdata/book_step.py"),
            ("builder", "bot4/marketdata/builder.py"),
            ("itch", "bot4/gateways/itch.py"),
        )
    }
    for n in ("builder", "itch"):
        srcs[n] = srcs[n].replace(
            "from bot4.marketdata.book_step import", f"from book_step_{tag} import"
        )
    srcs["itch"] = srcs["itch"].replace(
        "from bot4.marketdata.builder import", f"from builder_{tag} import"
    )
    mods = {}
    for n in ("book_step", "builder", "itch"):
        p = tmp / f"{n}_{tag}.py"
        p.write_text(srcs[n])
        mods[n] = load_module(f"{n}_{tag}", p)
    return mods


def book_run(mods, rec, book, n_inst, window, depth, check):
    B = mods["builder"]
    b = B.BookBuilder(n_inst, window, depth, check=check)
    out = np.zeros(4 * len(rec) + 8, MARKET_DATA)
    lv = np.zeros(max(8, 2 * depth * len(rec) + 8), BOOK_LEVEL)
    counts = np.zeros(2, np.int64)
    t = time.thread_time()
    done = 0
    while True:
        if hasattr(B, "BuildState"):
            done = B.build_kernel(rec, done, book, b.state(), out, counts, lv)
        else:
            done = B.build_kernel(
                rec,
                done,
                book,
                b.cfg,
                b.px,
                b.qty,
                b.cnt,
                b.n,
                b.seeded,
                b.stale,
                b.qpx,
                b.qqty,
                b.ppx,
                b.pqty,
                b.pcnt,
                b.otab,
                b.live,
                b.stats,
                out,
                counts,
                lv,
            )
        if done == len(rec):
            break
        b.reserve(1)
    dt = time.thread_time() - t
    return dt, (out[: counts[0]].tobytes(), lv[: counts[1]].tobytes(), b.stats.tolist())


def itch_run(mods, store, n, out):
    im = mods["itch"]
    b, lq = im.new_books(5, 1024, 1 << 17)
    lm = np.zeros(1 << 16, np.int64)
    lm[1] = 2
    ds = np.zeros(8, np.int64)
    keys, ids = np.zeros(1, np.uint64), np.zeros(1, np.int64)
    t = time.thread_time()
    if hasattr(im, "ItchDecoder"):
        k = im.itch_decode_kernel(
            tuple(store), 1, n, 0, out, 1, im.decoder_state(lm, keys, ids, lq, ds, b), True
        )
    else:
        k = im.itch_decode_kernel(
            store.msgs,
            store.lens,
            store.seqs,
            store.recvs,
            1,
            n,
            0,
            out,
            1,
            lm,
            keys,
            ids,
            b.px,
            b.qty,
            b.cnt,
            b.n,
            b.stats,
            lq,
            b.otab,
            b.live,
            ds,
            True,
        )
    dt = time.thread_time() - t
    return dt, (
        out[:k].tobytes(),
        ds.tolist(),
        # the books level by level, best first (not the arrays: trees may store them in
        # different orders)
        [b.top(i, b.window).tobytes() for i in range(b.n.shape[0])],
        b.stats.tolist(),
        lq.tobytes(),
    )


def deep_flow(n: int = 200_000, seed: int = 7) -> np.ndarray:
    """A full-depth book's flow (md_gateway's case): adds at prices uniform over 1000 ticks
    a side and deletes by id of random live orders (up to 3000 live), so most changes land
    far from the best (sides of several hundred levels). MARKET_DATA, instrument 1."""
    rng = np.random.default_rng(seed)
    live: dict[int, tuple[int, int]] = {}
    ids: list[int] = []
    out = np.zeros(n, MARKET_DATA)
    nxt = 1
    for m in range(n):
        if len(ids) < 3000 and (not ids or rng.random() < 0.55):
            side = SIDE_BUY if rng.random() < 0.5 else SIDE_SELL
            lo = 100_000 if side == SIDE_BUY else 101_000
            price, q = int(rng.integers(lo, lo + 1000)), int(rng.integers(1, 50))
            live[nxt] = (side, q)
            ids.append(nxt)
            out[m] = (m + 1, 0, m, 0, price, q, nxt, 1, MD_BOOK_ADD, side, MDF_LAST_IN_BATCH)
            nxt += 1
        else:
            k = int(rng.integers(len(ids)))
            oid = ids[k]
            ids[k] = ids[-1]
            ids.pop()
            _side, q = live.pop(oid)
            out[m] = (m + 1, 0, m, 0, 0, q, oid, 1, MD_BOOK_DELETE, 0, MDF_LAST_IN_BATCH)
    return out


def deep_run(mods, msgs):
    b = mods["builder"].BookBuilder(2, 2048, 0, reference=False, orders=1 << 14)
    t = time.thread_time()
    stream, _ = b.build(msgs)
    dt = time.thread_time() - t
    return dt, (stream.tobytes(), b.top(1, 2048).tobytes(), b.stats.tolist())


def ab(label, n, fa, fb, rounds):
    ta, tb, want = [], [], None
    for r in range(rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            dt, got = (fa if name == "A" else fb)()
            (ta if name == "A" else tb).append(dt)
            want = got if want is None else want
            assert got == want, f"{label}: {name} output differs"
    a, b = statistics.median(ta), statistics.median(tb)
    print(
        f"{label:<22} A {n / a / 1e6:7.2f} M/s  B {n / b / 1e6:7.2f} M/s  B/A speed {a / b:.2f}x  "
        f"(median of {rounds}; outputs identical)",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        A = load(Path(args.a), Path(tmp), "a")
        B = load(Path(args.b), Path(tmp), "b")
        feed = lobster_to_itch([AMZN])
        n = feed.messages
        store = mold.new_store(1 << 17)
        for s0, p in mold.packets(b"X         ", 1, feed.buf, feed.offsets, 0, n):
            body = np.frombuffer(p, np.uint8, offset=mold.HEADER_BYTES)
            mold.mold_ingest_kernel(body, s0, int.from_bytes(p[18:20], "big"), store, 1, 0)
        out = np.zeros(4 * n, MARKET_DATA)
        for m in (A, B):
            itch_run(m, store, 100, out)
        ab(
            "itch decode AMZN-1",
            n,
            lambda: itch_run(A, store, n, out),
            lambda: itch_run(B, store, n, out),
            args.rounds,
        )
        deep = deep_flow()
        ab(
            "book deep sides",
            len(deep),
            partial(deep_run, A, deep),
            partial(deep_run, B, deep),
            args.rounds,
        )
        names = [
            "GOOG_2012-06-21_34200000_57600000_message_10",
            "AMZN_2012-06-21_34200000_57600000_message_5",
        ]
        for pair in [
            p for p in find_pairs(DATA, recursive=True) if p.message.filename[:-4] in names
        ]:
            rec, book, _ = read_pair(pair)
            w = pair.levels
            ni = int(rec["instrument"].max()) + 1
            for m in (A, B):
                book_run(m, rec[:100], book, ni, w, w, True)
            for label, depth, check in (("kernel", 0, False), ("depth+check", w, True)):
                ab(
                    f"book {pair.ticker}-{w} {label}",
                    len(rec),
                    partial(book_run, A, rec, book, ni, w, depth, check),
                    partial(book_run, B, rec, book, ni, w, depth, check),
                    args.rounds,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
