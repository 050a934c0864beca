"""Tick-to-order latency of the default pipeline, from the timestamps on the records.

Runs ``bot4 run`` on the packaged default topology (synthetic market data, every wait
parked, six stages on this machine's cores) for a few seconds under a private instance and
data directory, then reads the NEW orders the orders stage sent (the persistence stage's
journal, ``order_events`` ring). Each ORDER carries the stamps it picked up on the way:

    ts_recv_ns    md published the tick that triggered it (CLOCK_MONOTONIC)
    ts_signal_ns  signals emitted the intent
    ts_risk_ns    risk passed it
    ts_order_ns   the orders stage sent it to the venue

so tick-to-order = ``ts_order_ns - ts_recv_ns`` is measured on every order, not estimated,
and the per-hop split comes with it. Three ring hops (md -> signals -> risk -> orders):
the same count as ``pipebench``'s 3-hop chain, the baseline the gate compares it with
(paced by sleeping, timed only once its four processes are up and a warm-up message has
crossed the three hops; ``python perf/ttobench.py`` measures it before and after each
default run and compares with the median).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run_default(duration: float = 4.0, db: bool = False) -> dict[str, np.ndarray]:
    """Latencies in ns of every NEW order of one default run: ``tick_to_order`` and the
    hops ``md_signals``, ``signals_risk``, ``risk_orders``. ``db``: with the persistence
    stage loading PostgreSQL (an embedded server in the run's temporary data directory,
    whose processes share the two cores), else journal only (``--no-db``)."""
    from bot4.journal import JournalReader
    from bot4.records import ACTION_NEW, RT_ORDER

    inst = f"tto{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bot4-tto-") as tmp:
        os.chmod(tmp, 0o711)  # as root the embedded server's own user must reach pg/ under it
        env = dict(os.environ, BOT4_DATA_DIR=tmp)
        out = subprocess.run(
            [sys.executable, "-m", "bot4.cli", "run", "--duration", str(duration)]
            + ["--instance", inst, "--quiet"]
            + ([] if db else ["--no-db"]),
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=240,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bot4 run failed ({out.returncode}): {out.stderr[-2000:]}")
        parts = [
            r[(r["action"] == ACTION_NEW) & (r["ts_recv_ns"] > 0)]
            for _p, t, r in JournalReader(Path(tmp) / "journal" / inst)
            if t == RT_ORDER
        ]
    o = np.concatenate(parts) if parts else np.zeros(0)
    if len(o) < 20:
        raise RuntimeError(f"the default run sent only {len(o)} orders")
    i64 = np.int64
    return {
        "tick_to_order": (o["ts_order_ns"].astype(i64) - o["ts_recv_ns"].astype(i64)),
        "md_signals": (o["ts_signal_ns"].astype(i64) - o["ts_recv_ns"].astype(i64)),
        "signals_risk": (o["ts_risk_ns"].astype(i64) - o["ts_signal_ns"].astype(i64)),
        "risk_orders": (o["ts_order_ns"].astype(i64) - o["ts_risk_ns"].astype(i64)),
    }


def percentiles(lat_ns: np.ndarray) -> dict[str, float]:
    """Through bot4's one latency histogram (``bot4.shm.histogram``)."""
    from bot4.shm.histogram import percentiles_of

    return percentiles_of(lat_ns)


def main() -> None:
    import statistics

    import pipebench

    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    # the fair 3-hop baseline (pipebench: paced by sleeping, timed once every process is up
    # and warm), measured before and after each default run; its median p50 is the reference
    bases = [pipebench.mpqueue_chain(5000, 5000, hops=3)]
    runs = []
    for db in (False, True):
        runs.append((db, run_default(duration, db=db)))
        bases.append(pipebench.mpqueue_chain(5000, 5000, hops=3))
    base = {"p50_ns": statistics.median(b["p50_ns"] for b in bases)}
    each = ", ".join(f"{b['p50_ns'] / 1e3:.0f}" for b in bases)
    print(f"3-hop mp.Queue chain p50 (fair baseline, {len(bases)} runs): {each} us")
    for db, lat in runs:
        print(f"default pipeline, {'loading PostgreSQL' if db else 'journal only (--no-db)'}: "
              f"{len(lat['tick_to_order'])} orders")  # fmt: skip
        for k, v in lat.items():
            p = percentiles(v)
            print(f"  {k:<14} p50 {p['p50_ns'] / 1e3:8.1f} us  p99 {p['p99_ns'] / 1e3:8.1f} us")
        p = percentiles(lat["tick_to_order"])
        print(
            f"  3-hop mp.Queue chain p50 {base['p50_ns'] / 1e3:.1f} us: tick-to-order p50 is "
            f"{base['p50_ns'] / p['p50_ns']:.2f}x lower"
        )


if __name__ == "__main__":
    main()
