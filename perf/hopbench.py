"""The hot group's in-group hops in one process, per wiring: the compiled cycle
(``bot4.stages.hotloop``) on process-local rings (``hotpath._bench_members``), no
scheduler, no other process: what the wiring itself costs a tick.

Each repetition builds fresh members for each wiring (interleaved, the same synthetic
quotes), feeds market data, then the ticks a few at a time (``--chunk``, one compiled
round per chunk; with depth wired, ``--levels`` BOOK_LEVEL updates before each chunk),
and reads the stamps of the NEW orders the orders member sent: signals -> risk is
``ts_risk_ns - ts_signal_ns``, risk -> orders ``ts_order_ns - ts_risk_ns``. Medians of
the per-order hops over all repetitions, and their ratio to the default wiring's.

    python perf/hopbench.py                 # default vs depth into signals, 30 reps
    python perf/hopbench.py --reps 50 --wirings default,signals,risk,both
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIRINGS = {
    "default": (False, False),
    "signals": (True, False),
    "risk": (False, True),
    "both": (True, True),
}


def one(wiring, quotes, levels, chunk: int, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    from bot4.shm import ring_ops as ops
    from bot4.stages import hotpath as P

    members, rings = P._bench_members(4096, *wiring)
    hp = P.HotPath(members, {"signals", "risk", "orders"})
    hp.prime()

    def push(name, recs):
        hdr, slots = rings[name]
        pos, got = ops.producer_claim(hdr, len(recs))
        ix = int(pos) & (len(slots) - 1)
        slots[ix : ix + int(got)] = recs[: int(got)]
        ops.producer_commit(hdr, int(got))

    def drain(name):
        hdr, slots = rings[name]
        pos, k = ops.consumer_peek(hdr, len(slots))
        ix = int(pos) & (len(slots) - 1)
        out = slots[ix : ix + int(k)].copy()
        ops.consumer_release(hdr, int(k))
        return out

    push("risk_md", quotes)
    for _ in range(4):
        hp.run(0, False, 0)
    sent = []
    for c in range(0, len(quotes), chunk):
        for name, on in zip(("depth", "risk_depth"), wiring, strict=True):
            if on and n_levels:
                push(name, levels[(c // chunk) % (len(levels) - n_levels) :][:n_levels])
        push("ticks", quotes[c : c + chunk])
        hp.run(0, False, 0)  # deadline in the past: one round
        hp.run(0, False, 0)  # the depth and fills left
        sent.append(drain("venue_orders"))
        for n in ("decisions", "order_events", "exec_events"):
            drain(n)
    hp.to_python()
    v = np.concatenate(sent)
    return (v["ts_risk_ns"] - v["ts_signal_ns"]), (v["ts_order_ns"] - v["ts_risk_ns"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--chunk", type=int, default=4, help="ticks per round (4)")
    ap.add_argument("--wirings", default="default,signals")
    ap.add_argument("--levels", type=int, default=8, help="depth updates per round (8; 0: none)")
    a = ap.parse_args(argv)
    from bot4.records import BOOK_LEVEL, MARKET_DATA
    from bot4.spec import StageSpec
    from bot4.stages import hotpath as P
    from bot4.stages.standins import SyntheticMarketData

    names = a.wirings.split(",")
    for n in names:
        P.warm(*WIRINGS[n])  # compiled (or loaded) before any quote is stamped
    rng = np.random.default_rng(1)
    levels = np.zeros(256, BOOK_LEVEL)
    levels["instrument"] = rng.integers(1, 4, len(levels))
    levels["side"] = rng.choice(np.array([1, -1], np.int8), len(levels))
    levels["level"] = rng.integers(0, 5, len(levels))
    levels["qty"] = rng.integers(1, 5000, len(levels))
    hops = {n: ([], []) for n in names}
    for _ in range(a.reps):
        spec = StageSpec(name="md", kind="synthetic-md", core=0, index=0, params={"seed": 1})
        md = SyntheticMarketData(spec, [], [], "t")
        md.setup()
        quotes = np.zeros(400, MARKET_DATA)
        md.generate(0, len(quotes), [quotes], np.zeros(1, np.int64), 1)
        for n in names:
            sr, ro = one(WIRINGS[n], quotes, levels, a.chunk, a.levels)
            hops[n][0].append(sr)
            hops[n][1].append(ro)
    base = None
    for n in names:
        sr = np.concatenate(hops[n][0])
        ro = np.concatenate(hops[n][1])
        row = (float(np.median(sr)), float(np.median(ro)))
        base = base or row
        print(f"{n:8s} orders {len(sr):5d}  signals->risk p50 {row[0] / 1e3:6.2f} us "
              f"({row[0] / base[0]:.2f}x)  risk->orders p50 {row[1] / 1e3:6.2f} us "
              f"({row[1] / base[1]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
