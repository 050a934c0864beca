"""bot4's deterministic replay against hftbacktest, like for like, ratios from one run.

    .venv/bin/python perf/hbtcompare.py                      # 2 M and 10 M events
    .venv/bin/python perf/hbtcompare.py --events 2000000 --rounds 3
    .venv/bin/python perf/hbtcompare.py --rss-hbt 10000000   # peak RSS of hftbacktest alone

hftbacktest is an optional, perf-only dependency, pinned: ``pip install --no-deps
hftbacktest==2.4.4`` (its declared pins would downgrade numpy below 2.3; the backtest core
runs on the project's numpy). Not a core dependency.

The same events for both (``replaybench.source``: N synthetic quotes and trades, one per
µs over three instruments), each side processing all N:

* **bot4**: the default topology (signals → risk → orders → venue → persistence) in the
  deterministic harness at **event-exact time** (every order, cancel, fill and report at
  its modelled time) and, beside it, with a 1 ms step; feed 20 µs, order 50 µs, report
  50 µs + the venue's 50 µs; venue ``trade_through`` with partial fills; parsing excluded
  (the generator's time subtracted).
* **hftbacktest 2.4.4** (``HashMapMarketDepthBacktest``, one asset per instrument, feed
  20 µs, ``constant_order_latency(50 µs, 50 µs)``, ``risk_adverse_queue_model``,
  ``no_partial_fill_exchange``, L2): the book fed as ``DEPTH_EVENT`` rows, the events
  hftbacktest applies (a quote whose price moved is preceded by a row clearing the old
  level, which hftbacktest's depth would otherwise keep: rows ≥ events), trades as
  ``TRADE_EVENT``; the strategy reacts to every event: bot4's own signals kernel, with the
  default topology's state and parameters, on that one record inside hftbacktest's
  ``wait_next_feed`` loop, and on each intent cancels the asset's resting orders and sends
  a GTX limit order of the intent's price and size (no risk checks: more orders than bot4,
  whose risk stage denies some).

Reported per size: events/s of each (and hftbacktest's feed rows/s), the orders each side
sent, bot4 exact / hftbacktest and 1 ms / hftbacktest; up to ``--scheduler-upto`` events
also bot4 exact with the Python scheduler doing every step (no quiet steps' kernel,
``bot4.replay.quiet``): the speed-up's baseline, its orders and fills checked equal. Rates on this shared 2-core VM move
with other sessions' load: read the ratios of one round.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import replaybench as rb  # noqa: E402

from bot4.records import MD_QUOTE, ORDER_INTENT  # noqa: E402

HBT_VERSION = "2.4.4"
FEED_NS = 20_000
ORDER_NS = 50_000


def hbt_depth_events(md: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per instrument, hftbacktest ``event_dtype`` rows for ``md`` (quotes as DEPTH_EVENT,
    a clearing row first when the side's price moved; trades as TRADE_EVENT), and for the
    merged feed in order, True where a row is one of ``md``'s events (False: a clearing
    row)."""
    import hftbacktest as H

    n = len(md)
    inst = md["instrument"].astype(np.int64)
    side = md["side"].astype(np.int64)
    price = md["price"].astype(np.int64)
    quote = md["kind"] == MD_QUOTE
    clear = np.zeros(n, np.bool_)
    clear_px = np.zeros(n, np.int64)
    for i in np.unique(inst):
        for s in (1, -1):
            idx = np.flatnonzero((inst == i) & (side == s) & quote)
            if len(idx) < 2:
                continue
            prev = price[idx[:-1]]
            moved = price[idx[1:]] != prev
            clear[idx[1:][moved]] = True
            clear_px[idx[1:][moved]] = prev[moved]
    rows = n + int(clear.sum())
    pos = np.arange(n) + np.cumsum(clear)  # each event's row in the merged feed
    is_event = np.zeros(rows, np.bool_)
    is_event[pos] = True
    all_rows = np.zeros(rows, H.event_dtype)
    sflag = np.where(side > 0, H.BUY_EVENT, H.SELL_EVENT).astype(np.uint64)
    kind = np.where(quote, H.DEPTH_EVENT, H.TRADE_EVENT).astype(np.uint64)
    base = np.uint64(H.EXCH_EVENT | H.LOCAL_EVENT)
    r = all_rows[pos]
    r["ev"] = kind | sflag | base
    r["exch_ts"] = md["ts_event_ns"]
    r["local_ts"] = md["ts_event_ns"] + FEED_NS
    r["px"] = price / 10_000.0
    r["qty"] = md["qty"]
    all_rows[pos] = r
    cpos = pos[clear] - 1
    c = all_rows[cpos]
    c["ev"] = np.uint64(H.DEPTH_EVENT) | sflag[clear] | base
    c["exch_ts"] = md["ts_event_ns"][clear] - 1  # its own instant, just before the quote
    c["local_ts"] = md["ts_event_ns"][clear] + FEED_NS - 1
    c["px"] = clear_px[clear] / 10_000.0
    c["qty"] = 0.0
    all_rows[cpos] = c
    row_inst = np.empty(rows, np.int64)
    row_inst[pos] = inst
    row_inst[cpos] = inst[clear]
    return [all_rows[row_inst == i] for i in np.unique(inst)], is_event


def signals_state():
    """The default topology's signals stage, set up: its kernel's state and parameters."""
    from bot4.pipeline.topology import load_topology
    from bot4.stages import KINDS

    t = load_topology(None)
    spec = t.stage("signals")
    st = KINDS[spec.kind](spec, t.inputs_of("signals"), t.outputs_of("signals"), t.instance)
    st.setup()
    return st


_FAIR = None


def _fair_kernel():
    from hftbacktest import GTX, LIMIT
    from numba import njit

    from bot4.signals.features import signals_kernel

    @njit
    def fair(hbt, md, local, sig, out):
        """Every feed wake-up: each event received by hftbacktest's current time (its
        ``local`` receive time; hftbacktest applies the rows of one instant in one wake-up)
        runs bot4's signals kernel on that one record at that time; on an intent the
        asset's resting orders are cancelled and a GTX limit goes out at its price."""
        oid = np.int64(1)
        n = 0
        sent = 0
        while True:
            rc = hbt.wait_next_feed(False, 1_000_000_000)
            if rc == 1:
                break
            if rc != 2:
                continue
            now = hbt.current_timestamp
            while n < md.shape[0] and local[n] <= now:
                n, sent, oid = _one(hbt, md, n, sent, oid, sig, out, now)
        return n, sent

    @njit
    def _one(hbt, md, n, sent, oid, sig, out, now):
        if True:
            a = np.int64(md[n].instrument) - 1
            k = signals_kernel(md[n : n + 1], out, n, sig, now)
            n += 1
            if k == 0:
                return n, sent, oid
            hbt.clear_inactive_orders(a)
            vals = hbt.orders(a).values()
            while vals.has_next():
                o = vals.get()
                if o.cancellable:
                    hbt.cancel(a, o.order_id, False)
            px = out[0].limit_price / 10_000.0
            q = float(out[0].qty)
            if out[0].side > 0:
                hbt.submit_buy_order(a, oid, px, q, GTX, LIMIT, False)
            else:
                hbt.submit_sell_order(a, oid, px, q, GTX, LIMIT, False)
            oid += 1
            sent += 1
        return n, sent, oid

    return fair


def run_hbt_fair(md: np.ndarray, rows: list[np.ndarray], is_event: np.ndarray) -> dict:
    """hftbacktest over ``rows`` with the fair strategy; events, rows, wall, orders."""
    global _FAIR
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    if _FAIR is None:
        _FAIR = _fair_kernel()
    assets = [
        BacktestAsset()
        .data([e])
        .linear_asset(1.0)
        .constant_order_latency(ORDER_NS, ORDER_NS)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(0.01)
        .lot_size(1.0)
        for e in rows
    ]
    hbt = HashMapMarketDepthBacktest(assets)
    s = signals_state()
    out = np.zeros(4, ORDER_INTENT)
    t0 = time.perf_counter()
    local = md["ts_event_ns"].astype(np.int64) + FEED_NS
    n, sent = _FAIR(hbt, md, local, s.kernel_state(), out)
    wall = time.perf_counter() - t0
    hbt.close()
    return {"events": int(n), "rows": len(is_event), "wall_s": wall,
            "intents": int(s.counters[2]), "orders": int(sent)}  # fmt: skip


def bot4(n: int, step_ns: int, quiet: bool = True) -> dict:
    r = rb.run_replay(rb.source(n), step_ns, quiet)
    r["rate"] = r["events"] / (r["wall_s"] - r["source_s"])
    return r


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, nargs="*", default=[2_000_000, 10_000_000])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rss-hbt", type=int, help="run hftbacktest alone on N events, print RSS")
    ap.add_argument(
        "--scheduler-upto",
        type=int,
        default=2_000_000,
        help="also run bot4 exact without the quiet steps' kernel (the Python scheduler "
        "alone: the speed-up's baseline) at sizes up to this (0: never)",
    )
    a = ap.parse_args()
    import hftbacktest

    assert hftbacktest.__version__ == HBT_VERSION if hasattr(hftbacktest, "__version__") else 1
    if a.rss_hbt:
        md = np.concatenate(list(rb.source(a.rss_hbt).chunks()))
        rows, is_ev = hbt_depth_events(md)
        h = run_hbt_fair(md, rows, is_ev)
        print(f"{peak_rss_mb():.1f} {h['events']} {h['wall_s']:.2f}")
        return
    w = 20_000  # load every kernel of both first
    md = np.concatenate(list(rb.source(w).chunks()))
    run_hbt_fair(md, *hbt_depth_events(md))
    bot4(w, 0)
    bot4(w, 0, quiet=False)
    bot4(w, rb.STEP_NS)
    for n in a.events:
        md = np.concatenate(list(rb.source(n).chunks()))
        rows, is_ev = hbt_depth_events(md)
        ratios = []
        for k in range(a.rounds):
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            b = bot4(n, 0)
            h = run_hbt_fair(md, rows, is_ev)
            s = bot4(n, rb.STEP_NS)
            p = bot4(n, 0, quiet=False) if n <= a.scheduler_upto else None
            hx = h["events"] / h["wall_s"]
            ratios.append((b["rate"] / hx, s["rate"] / hx))
            print(
                f"{n:,} events, round {k + 1} (load {load}):\n"
                f"  bot4 exact  {b['rate'] / 1e6:6.2f} M ev/s  {b['events']:,} events, "
                f"{b['steps']:,} steps, {b['intents']:,} intents, {b['orders']:,} orders, "
                f"{b['fills']:,} fills\n"
                f"  bot4 1 ms   {s['rate'] / 1e6:6.2f} M ev/s  {s['orders']:,} orders, "
                f"{s['fills']:,} fills\n"
                f"  hftbacktest {hx / 1e6:6.2f} M ev/s  {h['events']:,} events "
                f"({h['rows']:,} rows, {h['rows'] / h['wall_s'] / 1e6:.2f} M rows/s), "
                f"{h['intents']:,} intents, {h['orders']:,} orders\n"
                f"  exact / hftbacktest {b['rate'] / hx:.2f}x   1 ms / hftbacktest "
                f"{s['rate'] / hx:.2f}x",
                flush=True,
            )
            if p is not None:
                same = (p["orders"], p["fills"]) == (b["orders"], b["fills"])
                print(
                    f"  bot4 exact, scheduler alone {p['rate'] / 1e6:6.2f} M ev/s "
                    f"({p['orders']:,} orders, {p['fills']:,} fills{'' if same else ' DIFFER'}): "
                    f"quiet steps {b['rate'] / p['rate']:.1f}x faster",
                    flush=True,
                )
        if a.rounds > 1:
            print(f"  median exact/hbt {statistics.median(r[0] for r in ratios):.2f}x, "
                  f"1 ms/hbt {statistics.median(r[1] for r in ratios):.2f}x")  # fmt: skip
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (pid {os.getpid()})")


if __name__ == "__main__":
    main()
