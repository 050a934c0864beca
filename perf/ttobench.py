"""Tick-to-order latency of the default pipeline, from the timestamps on the records.

Runs ``bot4 run`` on the packaged default topology (synthetic market data; md, venue and
persistence on core 0, the hot path group signals -> risk -> orders on core 1 in one
process with the compiled duty cycle) for a few seconds under a private instance and data
directory, then reads the NEW orders the orders stage sent (the persistence stage's
journal, ``order_events`` ring). Each ORDER carries the stamps it picked up on the way:

    ts_event_ns   (synthetic source) md made the tick
    ts_recv_ns    md published the tick that triggered it (CLOCK_MONOTONIC), stamped in
                  the compiled publish call just before the commit (bot4.stages.publish)
    ts_signal_ns  signals emitted the intent
    ts_risk_ns    risk passed it
    ts_order_ns   the orders stage sent it to the venue

so tick-to-order = ``ts_order_ns - ts_recv_ns`` is measured on every order, not estimated,
and the per-hop split comes with it (md -> signals crosses processes; signals -> risk and
risk -> orders are the group's in-process hops; ``md_build``, printed last, is md's own
step before it publishes, outside tick-to-order). Three ring hops: the same count as
``pipebench``'s 3-hop chain on multiprocessing.Queue, the baseline (paced by sleeping,
timed only once its four processes are up and a warm-up message crossed the three hops),
measured before and after each default run; ratios use the median of its p50s.

    python perf/ttobench.py                 # 20 k ticks/s, journal only and with PostgreSQL
    python perf/ttobench.py --no-db-only --rates 20000,100000,400000
    python perf/ttobench.py --sweep         # also the highest md rate without a full-wait
    python perf/ttobench.py --topology my.toml --duration 6

``--sweep`` doubles the md rate from 20 k ticks/s until a run has a full-wait on any ring
(a producer found its output full) and reports the last rate without one.

Host steal: on a virtual machine the hypervisor can stop a vCPU for a while. Every ~100 ms
stall of the whole pipeline seen here (and of an idle probe sleeping 1 ms at a time) came
with 10 ticks (100 ms) of that CPU's steal time in ``/proc/stat``. Each run samples every
CPU's steal every ~5 ms (:class:`StealWatch`) and prints the episodes, and the percentiles
of the orders whose tick-to-order did not overlap one beside those of all orders. All
orders' figures are the result; the split says how much of the tail the host took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOPS = ("md_signals", "signals_risk", "risk_orders")


class StealWatch:
    """Every CPU's steal time (``/proc/stat``: time the hypervisor did not run a runnable
    vCPU), sampled every ``interval`` s in a thread; :meth:`episodes` gives the
    CLOCK_MONOTONIC intervals (ns) that may hold it. Linux accounts steal at its ticks, so
    an increase of ``d`` seen at ``t`` happened within ``[t_prev - d - one tick, t]``;
    the window is widened to that, never narrowed."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[int, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steal-watch", daemon=True)

    @staticmethod
    def read() -> list[int]:
        """Steal per CPU since boot, ns (``bot4 stats`` reads the same); [] if unknown."""
        from bot4.ops_stats import host_steal_ns

        return host_steal_ns() or []

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic_ns(), self.read()))
            self._stop.wait(self.interval)
        self.samples.append((time.monotonic_ns(), self.read()))

    def __enter__(self) -> StealWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def episodes(self) -> list[tuple[int, int, int, int]]:
        """``(cpu, start_ns, end_ns, stolen_ns)`` per sample interval in which a CPU's steal
        grew."""
        out = []
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:], strict=False):
            for cpu, (x, y) in enumerate(zip(a, b, strict=False)):
                if y > x:
                    d = y - x
                    out.append((cpu, t0 - d - self.tick_ns, t1, d))
        return out


def stolen_mask(start_ns: np.ndarray, end_ns: np.ndarray, episodes: list) -> np.ndarray:
    """True for each ``[start, end]`` interval that overlaps a steal episode."""
    hit = np.zeros(len(start_ns), dtype=bool)
    for _cpu, lo, hi, _d in episodes:
        hit |= (start_ns <= hi) & (end_ns >= lo)
    return hit


def default_text(rate: int | None = None) -> str:
    """The packaged default topology, with the md stage's ``rate`` replaced if given."""
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    if rate is not None:
        text, n = re.subn(r"\brate = \d+", f"rate = {int(rate)}", text, count=1)
        if n != 1:
            raise RuntimeError("the default topology has no md rate to replace")
    return text


def _end_run(proc: subprocess.Popen, inst: str) -> None:
    """A run cut short: SIGKILL its process group (``bot4 run`` and its zygote; the stages,
    each in a session of its own, die with their parent: PR_SET_PDEATHSIG) and unlink the
    instance's segments, which the supervisor had no chance to (before, every gate stopped
    by its budget during this run left 16 segments in /dev/shm)."""
    from bot4.pipeline.segments import destroy_segments

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    destroy_segments(inst)


def run_default(
    duration: float = 4.0,
    db: bool = False,
    *,
    rate: int | None = None,
    topology: str | None = None,
    info: dict | None = None,
) -> dict[str, np.ndarray]:
    """Latencies in ns of every NEW order of one default run: ``tick_to_order`` and the
    hops ``md_signals``, ``signals_risk``, ``risk_orders``. ``db``: with the persistence
    stage loading PostgreSQL (an embedded server in the run's temporary data directory,
    whose processes share the two cores), else journal only (``--no-db``). ``rate``: md
    ticks/s instead of the topology's; ``topology``: a TOML file instead of the default.
    ``info``, if given, receives the run's ``full_waits`` per ring and ``ticks``."""
    from bot4.journal import JournalReader
    from bot4.records import ACTION_NEW, RT_ORDER

    inst = f"tto{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bot4-tto-") as tmp:
        os.chmod(tmp, 0o711)  # as root the embedded server's own user must reach pg/ under it
        env = dict(os.environ, BOT4_DATA_DIR=tmp)
        topo = Path(tmp) / "topology.toml"
        text = Path(topology).read_text() if topology else default_text()
        if rate is not None:
            text = re.sub(r"\brate = \d+", f"rate = {int(rate)}", text, count=1)
        topo.write_text(text)
        report = Path(tmp) / "report.json"
        with StealWatch() as watch:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot4.cli", "run", str(topo), "--duration", str(duration)]
                + ["--instance", inst, "--quiet", "--report", str(report)]
                + ([] if db else ["--no-db"]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
            try:
                _out, err = proc.communicate(timeout=300)
            except BaseException:  # the gate's budget or a Ctrl-C: end the run, leave nothing
                _end_run(proc, inst)
                raise
        if proc.returncode != 0:
            raise RuntimeError(f"bot4 run failed ({proc.returncode}): {err[-2000:]}")
        if info is not None:
            final = json.loads(report.read_text())
            info["full_waits"] = {k: r["full_waits"] for k, r in final["rings"].items()}
            info["ticks"] = final["rings"]["ticks"]["produced"]
            info["steal"] = watch.episodes()
        parts = [
            r[(r["action"] == ACTION_NEW) & (r["ts_recv_ns"] > 0)]
            for _p, t, r in JournalReader(Path(tmp) / "journal" / inst)
            if t == RT_ORDER
        ]
    o = np.concatenate(parts) if parts else np.zeros(0)
    if len(o) < 20:
        raise RuntimeError(f"the default run sent only {len(o)} orders")
    i64 = np.int64
    if info is not None:
        info["stolen"] = stolen_mask(
            o["ts_recv_ns"].astype(i64), o["ts_order_ns"].astype(i64), info["steal"]
        )
    return {
        "tick_to_order": (o["ts_order_ns"].astype(i64) - o["ts_recv_ns"].astype(i64)),
        "md_signals": (o["ts_signal_ns"].astype(i64) - o["ts_recv_ns"].astype(i64)),
        "signals_risk": (o["ts_risk_ns"].astype(i64) - o["ts_signal_ns"].astype(i64)),
        "risk_orders": (o["ts_order_ns"].astype(i64) - o["ts_risk_ns"].astype(i64)),
        # not part of tick-to-order: the synthetic source's tick is made (ts_event_ns)
        # this long before md publishes and stamps it (ts_recv_ns): md's own Python step
        "md_build": (o["ts_recv_ns"].astype(i64) - o["ts_event_ns"].astype(i64)),
    }


def percentiles(lat_ns: np.ndarray) -> dict[str, float]:
    """Through bot4's one latency histogram (``bot4.shm.histogram``)."""
    from bot4.shm.histogram import percentiles_of

    return percentiles_of(lat_ns)


def _us(p: dict, key: str) -> str:
    return f"{p[key] / 1e3:9.1f}"


def print_run(title: str, lat: dict, base_p50: float, info: dict | None = None) -> float:
    """Print one run's table; returns its tick-to-order p50 (ns)."""
    waits = {k: v for k, v in (info or {}).get("full_waits", {}).items() if v}
    print(f"{title}: {len(lat['tick_to_order'])} orders"
          + (f", full-waits {waits}" if info is not None else ""))  # fmt: skip
    print(f"  {'':<14} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'max us':>9}")
    for k, v in lat.items():
        p = percentiles(v)
        print(f"  {k:<14} {_us(p, 'p50_ns')} {_us(p, 'p99_ns')} {_us(p, 'p999_ns')} "
              f"{float(np.max(v)) / 1e3:9.1f}")  # fmt: skip
    steal = (info or {}).get("steal")
    if steal is not None:
        per_cpu: dict[int, int] = {}
        for cpu, _lo, _hi, d in steal:
            per_cpu[cpu] = per_cpu.get(cpu, 0) + d
        cpus = ", ".join(f"cpu{c} {v / 1e6:.0f} ms" for c, v in sorted(per_cpu.items()))
        hit = info["stolen"]
        line = f"  host steal during the run: {len(steal)} episodes ({cpus or 'none'})"
        if hit.any() and (~hit).sum() >= 20:
            p = percentiles(lat["tick_to_order"][~hit])
            line += (f"; the {int(hit.sum())} orders overlapping one left out, tick-to-order "
                     f"p50 {p['p50_ns'] / 1e3:.1f}  p99 {p['p99_ns'] / 1e3:.1f}  "
                     f"p99.9 {p['p999_ns'] / 1e3:.1f} us")  # fmt: skip
        print(line)
    p50 = percentiles(lat["tick_to_order"])["p50_ns"]
    print(f"  tick-to-order p50 is {base_p50 / p50:.1f}x lower than the 3-hop mp.Queue chain's "
          f"{base_p50 / 1e3:.1f} us (same run)")  # fmt: skip
    return p50


def main(argv: list[str] | None = None) -> None:
    import pipebench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("duration", nargs="?", type=float, default=4.0, help="s per run (4)")
    ap.add_argument("--rates", default="20000", help="md ticks/s, comma-separated (20000)")
    ap.add_argument("--no-db-only", action="store_true", help="skip the PostgreSQL runs")
    ap.add_argument("--sweep", action="store_true", help="find the highest rate w/o full-waits")
    ap.add_argument("--topology", help="a topology file instead of the packaged default")
    a = ap.parse_args(argv)
    rates = [int(float(r)) for r in a.rates.split(",")]
    dbs = (False,) if a.no_db_only else (False, True)

    def base() -> dict:
        return pipebench.mpqueue_chain(5000, 5000, hops=3)

    bases = [base()]
    runs = []
    for rate in rates:
        for db in dbs:
            info: dict = {}
            runs.append((rate, db, run_default(a.duration, db, rate=rate, topology=a.topology,
                                               info=info), info))  # fmt: skip
            bases.append(base())
    b50 = statistics.median(b["p50_ns"] for b in bases)
    bp = percentiles(np.concatenate([b["latencies_ns"] for b in bases]).astype(np.int64))
    print(f"3-hop mp.Queue chain (fair baseline, {len(bases)} runs): p50 "
          + ", ".join(f"{b['p50_ns'] / 1e3:.0f}" for b in bases)
          + f" us; all runs p99 {bp['p99_ns'] / 1e3:.0f} us, p99.9 {bp['p999_ns'] / 1e3:.0f} us")  # fmt: skip
    for rate, db, lat, info in runs:
        what = "loading PostgreSQL" if db else "journal only (--no-db)"
        print_run(f"default pipeline at {rate} ticks/s, {what}", lat, b50, info)
    if a.sweep:
        rate, best = 20_000, None
        while rate <= 3_200_000:
            info = {}
            lat = run_default(a.duration, False, rate=rate, topology=a.topology, info=info)
            waits = {k: v for k, v in info["full_waits"].items() if v}
            ticks_s = info["ticks"] / a.duration
            print(f"sweep: md rate {rate}: {info['ticks']} ticks (~{ticks_s:,.0f}/s), "
                  f"full-waits {waits or 'none'}")  # fmt: skip
            if waits:
                break
            best = (rate, lat, info)
            rate *= 2
        if best is None:
            print("sweep: full-waits already at 20000 ticks/s")
        else:
            print_run(f"highest md rate without full-waits: {best[0]} ticks/s, journal only",
                      best[1], b50, best[2])  # fmt: skip


if __name__ == "__main__":
    main()
