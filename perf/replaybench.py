"""Replay measurements: the deterministic harness over a synthetic quote-and-trade stream
through the full default chain (signals, risk, orders, venue, persistence), and
hftbacktest on the same events when it is importable.

    .venv/bin/python perf/replaybench.py                    # quick look: 1 M events
    .venv/bin/python perf/replaybench.py --events 10000000  # the issue's size
    .venv/bin/python perf/replaybench.py --rss 1000000      # one run, prints peak RSS (MB)
    .venv/bin/python perf/replaybench.py --rss 10000000 --step 0 \
        --lobster-rss ../shared/data/lobster-2012-06-21/amzn_level1  # a LOBSTER day, tiled
    .venv/bin/python perf/replaybench.py --stages           # where the time goes, per stage
    .venv/bin/python perf/replaybench.py --lobster ../shared/data/lobster-2012-06-21/zips/LOBSTER_SampleFile_GOOG_2012-06-21_1.zip
        # event-exact: quiet steps' kernel vs the Python scheduler alone, same run

What is measured (one run each, after a warm-up run that loads every kernel):

* ``memory``  — :class:`bot4.replay.sources.SyntheticSource` chunks generated on the fly;
  the time spent inside the source iterator is subtracted ("parsing excluded");
* ``parquet`` — the same events written once to a Parquet tick file (``price_units``),
  then streamed by row group and converted ("parsing included": wall time of the run);
* ``hftbacktest`` — the same events as hftbacktest v2 events (BBO depth updates and
  trades, one asset per instrument, 20 µs feed and 50 µs order latency, risk-averse queue
  model), a market maker that looks at the book on every event and requotes both sides
  every 50 events per asset;
* ``stages`` — one run with every stage's ``process`` timed: per stage and input, ns per
  event of the run and per call; the rest is the harness (feed, scheduling, rings);
* ``rss`` — peak resident memory of a fresh process running one replay of N events: the
  data is streamed in 65 536-record chunks, so it stays flat as N grows.

Events are one every ``dt`` ns (default 1 µs: a 1 M events/s feed over three
instruments); the replay steps every ``step`` ns (default 1 ms). Both are printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bot4.records import MD_QUOTE  # noqa: E402
from bot4.replay.engine import DeterministicReplay  # noqa: E402
from bot4.replay.sources import SyntheticSource, open_source, write_parquet  # noqa: E402

DT_NS = 1_000
STEP_NS = 1_000_000
INSTRUMENTS = 3


def source(n: int, dt_ns: int = DT_NS) -> SyntheticSource:
    return SyntheticSource(n, instruments=INSTRUMENTS, seed=1, dt_ns=dt_ns)


def run_replay(src, step_ns: int = STEP_NS, quiet: bool = True) -> dict:
    """One deterministic run of ``src``; wall and source seconds, events, fills.
    ``quiet`` False: event-exact time without the quiet steps' kernel (the Python
    scheduler does every step: the baseline of ``bot4.replay.quiet``)."""
    d = tempfile.mkdtemp(prefix="bot4-replaybench-")
    try:
        gc.collect()
        t0 = time.perf_counter()
        eng = DeterministicReplay(src, d, step_ns=step_ns)
        eng.quiet_steps = quiet
        r = eng.run()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "events": r.events,
        "wall_s": wall,
        "source_s": r.source_s,
        "steps": r.steps,
        "fills": int(r.summaries["venue"]["fills"]),
        "intents": int(r.summaries["signals"]["intents"]),
        "orders": int(r.summaries["orders"]["counters"]["new_sent"]),
    }


def parquet_file(n: int, dt_ns: int = DT_NS, directory: str | None = None) -> Path:
    """The synthetic events as a Parquet tick file (written once, reused)."""
    d = Path(directory or tempfile.gettempdir())
    p = d / f"bot4-replaybench-{n}-{dt_ns}.parquet"
    if not p.exists():
        tmp = p.with_suffix(".tmp")
        write_parquet(tmp, source(n, dt_ns).chunks())
        tmp.rename(p)
    return p


def tiled_pair(pair: str, n: int) -> str:
    """The LOBSTER ``pair`` tiled (``tile_pair``) to at least ``n`` replay events, written
    once under the temporary directory; the message file's path."""
    from bot4.marketdata.lobster_stream import iter_lobster_stream, one_pair, tile_pair

    base = one_pair(pair)
    per_copy = sum(len(c) for c in iter_lobster_stream(base))
    copies = max(1, -(-n // per_copy))
    d = (
        Path(tempfile.gettempdir())
        / f"bot4-replaybench-lobster-{base.ticker}-{base.levels}-{copies}"
    )
    if not d.exists():
        tmp = d.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tile_pair(base, tmp, copies)
        tmp.rename(d)
    return str(one_pair(d).message)


def csv_file(n: int, dt_ns: int = DT_NS) -> Path:
    """The synthetic events as a CSV tick file with decimal prices (from the Parquet one;
    written once, reused)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    p = parquet_file(n, dt_ns).with_suffix(".csv")
    if not p.exists():
        t = pq.read_table(parquet_file(n, dt_ns))
        cols = {f.name: t[f.name] for f in t.schema}
        units = cols.pop("price_units")
        whole = pc.cast(pc.divide(units, 10_000), pa.string())
        frac = pc.utf8_lpad(
            pc.cast(pc.subtract(units, pc.multiply(pc.divide(units, 10_000), 10_000)), pa.string()),
            4,
            "0",
        )
        cols["price"] = pc.binary_join_element_wise(whole, frac, ".")
        out = pa.table({k: (pc.cast(v, pa.string()) if pa.types.is_dictionary(v.type) else v)
                        for k, v in cols.items()})  # fmt: skip
        tmp = p.with_suffix(".tmp")
        pcsv.write_csv(out, tmp, pcsv.WriteOptions(quoting_style="none"))
        tmp.rename(p)
    return p


# --- hftbacktest on the same events ---------------------------------------------------------


def hft_events(n: int, dt_ns: int = DT_NS) -> list[np.ndarray]:
    """Per instrument, the synthetic events as hftbacktest ``event_dtype`` records."""
    from hftbacktest import (
        BUY_EVENT,
        DEPTH_BBO_EVENT,
        EXCH_EVENT,
        LOCAL_EVENT,
        SELL_EVENT,
        TRADE_EVENT,
        event_dtype,
    )

    data = np.concatenate(list(source(n, dt_ns).chunks()))
    out = []
    for inst in range(1, INSTRUMENTS + 1):
        d = data[data["instrument"] == inst]
        e = np.zeros(len(d), event_dtype)
        quote = d["kind"] == MD_QUOTE
        side = np.where(d["side"] > 0, BUY_EVENT, SELL_EVENT).astype(np.uint64)
        kind = np.where(quote, DEPTH_BBO_EVENT, TRADE_EVENT).astype(np.uint64)
        e["ev"] = kind | side | EXCH_EVENT | LOCAL_EVENT
        e["exch_ts"] = d["ts_event_ns"]
        e["local_ts"] = d["ts_event_ns"] + 20_000
        e["px"] = d["price"] / 10_000.0
        e["qty"] = d["qty"]
        out.append(e)
    return out


def run_hftbacktest(events: list[np.ndarray]) -> dict:
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    assets = [
        BacktestAsset()
        .data([e])
        .linear_asset(1.0)
        .constant_order_latency(50_000, 50_000)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(0.01)
        .lot_size(1.0)
        for e in events
    ]
    hbt = HashMapMarketDepthBacktest(assets)
    t0 = time.perf_counter()
    n = _mm(hbt, len(events))
    wall = time.perf_counter() - t0
    hbt.close()
    return {"events": int(n), "wall_s": wall}


def _mm_kernel():
    from hftbacktest import GTX, LIMIT
    from numba import njit

    @njit
    def mm(hbt, n_assets):
        """Every event: read each book; every 50 events of an asset: cancel and requote
        both sides at the touch (order ids per asset and side)."""
        seen = np.zeros(n_assets, np.int64)
        oid = np.int64(1)
        n = 0
        while True:
            rc = hbt.wait_next_feed(False, 1_000_000_000)
            if rc == 1:
                break  # end of data (0: a timeout with no feed, 2: a feed)
            if rc != 2:
                continue
            n += 1
            for a in range(n_assets):
                d = hbt.depth(a)
                bid = d.best_bid
                ask = d.best_ask
                if not (bid > 0 and ask > bid):
                    continue
                seen[a] += 1
                if seen[a] % 50 != 0:
                    continue
                hbt.clear_inactive_orders(a)
                orders = hbt.orders(a)
                vals = orders.values()
                while vals.has_next():
                    o = vals.get()
                    if o.cancellable:
                        hbt.cancel(a, o.order_id, False)
                hbt.submit_buy_order(a, oid, bid, 100.0, GTX, LIMIT, False)
                hbt.submit_sell_order(a, oid + 1, ask, 100.0, GTX, LIMIT, False)
                oid += 2
        return n

    return mm


_MM = None


def _mm(hbt, n_assets):
    global _MM
    if _MM is None:
        _MM = _mm_kernel()
    return _MM(hbt, n_assets)


def lobster_quiet(path: str, rounds: int = 1) -> None:
    """A LOBSTER day (or any file ``open_source`` reads) at event-exact time, with the
    quiet steps' kernel and with the Python scheduler alone, interleaved in one run; the
    output files of both compared byte for byte (``report.html`` and ``run.json`` aside)."""
    import bot4.replay.engine as engine
    from bot4.replay.runner import replay

    def one(quiet: bool, d: str) -> tuple[float, int, int]:
        engine.QUIET_STEPS = quiet
        try:
            gc.collect()
            o = replay(path, d, progress=None)
            return o.run["wall_s"], o.run["events"], o.run["steps"]
        finally:
            engine.QUIET_STEPS = True

    def files(d: str) -> dict:
        return {
            str(p.relative_to(d)): p.read_bytes()
            for p in sorted(Path(d).rglob("*"))
            if p.is_file() and p.name not in ("report.html", "run.json")
        }

    for _ in range(rounds + 1):  # the first round loads the kernels
        walls = {}
        outs = {}
        for quiet in (True, False):
            d = tempfile.mkdtemp(prefix="bot4-replaybench-")
            try:
                walls[quiet], ev, steps = one(quiet, d)
                outs[quiet] = files(d)
            finally:
                shutil.rmtree(d, ignore_errors=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    same = "identical" if outs[True] == outs[False] else "DIFFERENT"
    print(
        f"{Path(path).name}: {ev:,} events, {steps:,} steps (load {load}): quiet "
        f"{ev / walls[True] / 1e3:.1f} k ev/s, scheduler alone {ev / walls[False] / 1e3:.1f} k "
        f"ev/s: {walls[False] / walls[True]:.2f}x (the replay; the report aside); outputs {same}"
    )


def stage_split(n: int, dt_ns: int = DT_NS, step_ns: int = STEP_NS) -> None:
    """One run of ``n`` events with each stage class's ``process`` timed (the wrappers
    add about 0.1 us per call); prints the split."""
    from collections import defaultdict

    from bot4.stages import KINDS

    acc: dict = defaultdict(float)
    calls: dict = defaultdict(int)
    depth = [0]  # a subclass's process calling its base's: timed once, as the subclass
    saved = {}
    for cls in set(KINDS.values()):
        if "process" not in cls.__dict__:
            continue
        saved[cls] = orig = cls.__dict__["process"]

        def process(self, i, batch, outs, counts, seq, _orig=orig):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return _orig(self, i, batch, outs, counts, seq)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    acc[(self.kind, i)] += time.perf_counter() - t
                    calls[(self.kind, i)] += 1

        cls.process = process
    try:
        run_replay(source(20_000, dt_ns), step_ns)
        acc.clear()
        calls.clear()
        r = run_replay(source(n, dt_ns), step_ns)
    finally:
        for cls, orig in saved.items():
            cls.process = orig
    ex = r["wall_s"] - r["source_s"]
    ev = r["events"]
    print(f"{ev:,} events, {ex:.3f} s parsing excluded: {ex / ev * 1e9:.1f} ns/event")
    for (kind, i), s in sorted(acc.items(), key=lambda kv: -kv[1]):
        c = calls[(kind, i)]
        print(f"  {kind:<12} input {i}  {s / ev * 1e9:7.1f} ns/event  {s / c * 1e6:8.1f} us/call"
              f"  {c:,} calls")  # fmt: skip
    rest = ex - sum(acc.values())
    print(f"  harness              {rest / ev * 1e9:7.1f} ns/event")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dt", type=int, default=DT_NS, help="ns between events")
    ap.add_argument("--step", type=int, default=STEP_NS, help="replay step, ns (0: event-exact)")
    ap.add_argument("--rss", type=int, help="run N events once and print the peak RSS (MB)")
    ap.add_argument("--parquet", action="store_true", help="with --rss: read the Parquet file")
    ap.add_argument("--csv", action="store_true", help="with --rss: read the CSV tick file")
    ap.add_argument(
        "--lobster-rss",
        metavar="PAIR",
        help="with --rss N: replay the LOBSTER pair PAIR tiled to at least N events "
        "(bot4.marketdata.lobster_stream.tile_pair; written by a child, under /tmp)",
    )
    ap.add_argument("--tile", nargs=2, metavar=("PAIR", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--stages", action="store_true", help="time per stage (one run)")
    ap.add_argument("--write", type=int, help="write the Parquet file of N events and exit")
    ap.add_argument(
        "--lobster",
        nargs="*",
        metavar="FILE",
        help="event-exact replays of these files with and without the quiet steps' kernel",
    )
    args = ap.parse_args()
    if args.stages:
        stage_split(args.events, args.dt, args.step)
        return
    if args.write:
        (csv_file if args.csv else parquet_file)(args.write, args.dt)
        return
    if args.lobster:
        for f in args.lobster:
            lobster_quiet(f)
        return
    if args.tile:
        print(tiled_pair(args.tile[0], int(args.tile[1])))
        return
    if args.rss:
        if args.lobster_rss:  # written by a child: the measured process only reads it
            import subprocess

            cmd = [sys.executable, __file__, "--tile", args.lobster_rss, str(args.rss)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = run_replay(open_source(out.strip()), args.step)
            print(f"{peak_rss_mb():.1f} {r['events']} {r['wall_s']:.2f}")
            return
        if args.parquet or args.csv:  # written by a child: the measured process only reads
            import subprocess

            cmd = [sys.executable, __file__, "--write", str(args.rss), "--dt", str(args.dt)]
            subprocess.run(cmd + (["--csv"] if args.csv else []), check=True)
        if args.parquet or args.csv:
            f = csv_file if args.csv else parquet_file
            t0 = time.perf_counter()
            src = open_source(f(args.rss, args.dt))
            print(f"open_source: {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        else:
            src = source(args.rss, args.dt)
        r = run_replay(src, args.step)
        print(f"{peak_rss_mb():.1f} {r['events']} {r['wall_s']:.2f}")
        return
    run_replay(source(20_000, args.dt), args.step)  # load every kernel
    r = run_replay(source(args.events, args.dt), args.step)
    ex = r["events"] / (r["wall_s"] - r["source_s"])
    print(
        f"memory : {r['events']:,} events in {r['wall_s']:.2f} s ({r['source_s']:.2f} s generating)"
        f" -> {ex / 1e6:.2f} M events/s parsing excluded; {r['steps']:,} steps, "
        f"{r['intents']:,} intents, {r['fills']:,} fills"
    )
    p = parquet_file(args.events, args.dt)
    r = run_replay(open_source(p), args.step)
    print(
        f"parquet: {r['events'] / r['wall_s'] / 1e6:.2f} M events/s parsing included "
        f"({r['wall_s']:.2f} s, {r['source_s']:.2f} s reading)"
    )
    try:
        ev = hft_events(min(args.events, 2_000_000), args.dt)
    except ImportError:
        print("hftbacktest: not installed (pip install hftbacktest)")
        return
    run_hftbacktest([e[:20_000] for e in ev])
    h = run_hftbacktest(ev)
    print(f"hftbacktest: {h['events'] / h['wall_s'] / 1e6:.2f} M events/s ({h['events']:,} events)")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (pid {os.getpid()})")


if __name__ == "__main__":
    main()
