"""End-to-end pipeline measurements: bot4 stages against the same chain on multiprocessing.Queue.

The chain is source -> relay -> relay -> sink: four processes, three hops. The source
stamps each record with CLOCK_MONOTONIC when it publishes it; the sink subtracts that
from its own clock on arrival. Measured:

* latency: at a fixed ``rate`` (records/s, well below capacity), every record's
  source-to-sink time -> p50 / p99 / p99.9;
* throughput: ``n`` records flat out; records/s from the sink's first to last arrival.

bot4 runs with the default waits (``park``) on the machine's cores, as ``bot4 run`` would;
``one_hop_busy_spin`` runs source -> sink on two dedicated cores with ``busy-spin``. The
multiprocessing.Queue chain moves the same 64-byte records, up to 256 per message (the
stage loop's batch size): its strongest configuration.

Both chains are timed fairly: each source is paced by sleeping until its next record is
due (the records due by then go together, the first at once), and neither starts before
every process of its chain is up: the bot4 source holds while the pipeline starts (every
stage running), the mp.Queue source until all four processes reported ready and a warm-up
message crossed the three hops.

Every segment this module creates is in instance ``pipe<pid>`` (or ``pipe<pid>x`` for the
sink's log) and is unlinked on the way out.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bot4.records import MARKET_DATA
from bot4.shm import Segment, segment_name
from bot4.shm.histogram import percentiles_of
from bot4.shm.segment import instance_segments

BATCH = 256
CTX = mp.get_context("spawn")


def _topology(instance: str, *, n: int, rate: float, wait: str, hops: int) -> str:
    stages = [("src", "test-source", 0, f"{{ count = {n}, rate = {rate} }}")]
    for k in range(hops - 1):
        stages.append((f"relay{k}", "relay", (k + 1) % 2, "{}"))
    stages.append(
        ("sink", "test-sink", hops % 2, f'{{ log = "sink", log_instance = "{instance}x" }}')
    )
    text = [f'instance = "{instance}"']
    for name, kind, core, params in stages:
        text.append(
            f'[[stage]]\nname = "{name}"\nkind = "{kind}"\ncore = {core}\nwait = "{wait}"\nparams = {params}'
        )
    for a, b in zip(stages, stages[1:], strict=False):
        text.append(
            f'[[ring]]\nname = "{a[0]}-{b[0]}"\nfrom = "{a[0]}"\nto = "{b[0]}"\ntype = "market_data"\ncapacity = 8192\nwait = "{wait}"'
        )
    return "\n\n".join(text) + "\n"


def _percentiles(lat_ns: np.ndarray) -> dict:
    """Through bot4's one latency histogram (``bot4.shm.histogram``)."""
    return percentiles_of(lat_ns)


def bot4_chain(
    n: int, rate: float, *, wait: str = "park", hops: int = 3, timeout: float = 300
) -> dict:
    """Run the bot4 chain for ``n`` records at ``rate`` (0 = flat out)."""
    inst = f"pipe{os.getpid()}"
    log_names = [segment_name(inst + "x", "sink"), segment_name(inst + "x", "sink-lat")]
    for name in log_names:
        Segment.unlink(name)
        Segment.create(name, (n + 2) * 8).close()
    tmp = Path(tempfile.mkdtemp())
    topo = tmp / "chain.toml"
    topo.write_text(_topology(inst, n=n, rate=rate, wait=wait, hops=hops))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot4.cli", "run", str(topo), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seg = Segment.attach(log_names[0], readonly=True)
    words = np.frombuffer(seg.buf, np.uint64)
    try:
        deadline = time.monotonic() + timeout
        while words[0] == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bot4 chain did not deliver")
            time.sleep(0.0005)
        t_first = time.perf_counter()
        while words[0] < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bot4 chain stopped at {int(words[0])} of {n}")
            time.sleep(0.0005)
        t_last = time.perf_counter()
        ids = words[1 : 1 + n].copy()
        if not np.array_equal(ids, np.arange(1, n + 1, dtype=np.uint64)):
            raise RuntimeError("bot4 chain delivered records out of order or twice")
        lat_seg = Segment.attach(log_names[1], readonly=True)
        lat = np.frombuffer(lat_seg.buf, np.uint64)[1 : 1 + n].astype(np.float64)
        lat_seg.close()
    finally:
        del words
        seg.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for name in log_names + instance_segments(inst):
            Segment.unlink(name)
    return {
        **_percentiles(lat),
        "records_per_s": n / max(t_last - t_first, 1e-9),
        "latencies_ns": lat,
    }


# -- the same chain on multiprocessing.Queue --------------------------------------------------
# A fair baseline: the source sleeps until each record is due (it never spins on a core the
# relays and the sink need), and nothing is timed until every process of the chain has
# reported ready and a warm-up message (b"") has crossed all three hops (each queue's feeder
# thread started, every process past its imports). The bot4 chain is held the same way: its
# source emits nothing while the pipeline is starting (every stage attached and running),
# and its clock starts at its first emission.
START_TIMEOUT_S = 120.0


def _mq_source(q, ctl, go, n, rate, core):
    os.sched_setaffinity(0, {core})
    rec = np.zeros(BATCH, MARKET_DATA)
    ctl.put("ready")
    q.put(b"")  # warm-up through every hop
    go.wait()
    sent = 0
    t0 = time.monotonic_ns()
    period_ns = 1e9 / rate if rate > 0 else 0.0
    while sent < n:
        now = time.monotonic_ns()
        if rate > 0:
            # records due by now: the first at t0, then one every period (as TestSource)
            due = int((now - t0) * rate / 1e9) + 1 - sent
            if due <= 0:
                time.sleep(max(0.0, t0 + sent * period_ns - now) / 1e9)
                continue
            k = min(BATCH, due, n - sent)
        else:
            k = min(BATCH, n - sent)
        r = rec[:k]
        r["order_id"] = np.arange(sent + 1, sent + k + 1)
        r["ts_recv_ns"] = now
        q.put(r.tobytes())
        sent += k
    q.put(None)


def _mq_relay(qin, qout, ctl, core):
    os.sched_setaffinity(0, {core})
    seq = 1
    ctl.put("ready")
    while True:
        b = qin.get()
        if b is None:
            qout.put(None)
            return
        if not b:
            qout.put(b)
            continue
        r = np.frombuffer(b, MARKET_DATA).copy()
        r["parent_seq"] = r["seq"]
        r["seq"] = np.arange(seq, seq + len(r))
        seq += len(r)
        qout.put(r.tobytes())


def _mq_sink(qin, out, ctl, n, core):
    os.sched_setaffinity(0, {core})
    lat = np.zeros(n, np.float64)
    ids = np.zeros(n, np.uint64)
    got = 0
    t_first = None
    ctl.put("ready")
    while True:
        b = qin.get()
        if b is None:
            break
        now = time.monotonic_ns()
        if not b:
            ctl.put("warm")
            continue
        if t_first is None:
            t_first = time.perf_counter()
        r = np.frombuffer(b, MARKET_DATA)
        lat[got : got + len(r)] = now - r["ts_recv_ns"]
        ids[got : got + len(r)] = r["order_id"]
        got += len(r)
    t_last = time.perf_counter()
    ok = got == n and np.array_equal(ids, np.arange(1, n + 1, dtype=np.uint64))
    out.put((ok, lat.tobytes(), n / max(t_last - (t_first or t_last), 1e-9)))


def mpqueue_chain(n: int, rate: float, *, hops: int = 3) -> dict:
    """The same chain on multiprocessing.Queue: ``n`` records at ``rate`` records/s (0 =
    flat out), source paced by sleeping, timed only once every process is up and warm."""
    qs = [CTX.Queue() for _ in range(hops)]
    out = CTX.Queue()
    ctl = CTX.Queue()
    go = CTX.Event()
    procs = [CTX.Process(target=_mq_source, args=(qs[0], ctl, go, n, rate, 0))]
    for k in range(hops - 1):
        procs.append(CTX.Process(target=_mq_relay, args=(qs[k], qs[k + 1], ctl, (k + 1) % 2)))
    procs.append(CTX.Process(target=_mq_sink, args=(qs[-1], out, ctl, n, hops % 2)))
    for p in procs:
        p.start()
    try:
        want = {"ready": len(procs), "warm": 1}
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(want.values()):
            try:
                want[ctl.get(timeout=max(0.0, deadline - time.monotonic()))] -= 1
            except queue.Empty:
                raise RuntimeError("multiprocessing.Queue chain did not start") from None
        go.set()
        ok, lat_b, rps = out.get(timeout=300)
    finally:
        go.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    if not ok:
        raise RuntimeError("multiprocessing.Queue chain lost or reordered records")
    lat = np.frombuffer(lat_b, np.float64)
    return {**_percentiles(lat), "records_per_s": rps, "latencies_ns": lat}


def one_hop_busy_spin(n: int, rate: float) -> dict:
    """source -> sink on cores 0 and 1, busy-spin: the floor of a hop on dedicated cores."""
    return bot4_chain(n, rate, wait="busy-spin", hops=1)
