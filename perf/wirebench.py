"""Tick-to-order through the gateways, end to end, in the same run as the in-process venue
topology (issue 19).

Two ``bot4 run``s of the same stages on the same LOBSTER day (AMZN level 1), one after the
other in this process:

* **wire**: ``bot4/config/wire.toml`` against ``bot4 exchange serve`` on loopback (feed at
  ``--rate`` messages/s, started at the first OUCH login, ``--latency-log``). The exchange
  stamps when it sent each message (``sent_ns``, CLOCK_MONOTONIC, per MoldUDP64 packet) and
  when each OUCH Enter's bytes reached it (``enter_ns``, at ``data_received``). Each NEW
  order of the journal names its token (client order id) and the ITCH timestamp of the
  message that triggered it (``ts_event_ns``); the message is the latest one with that
  timestamp the exchange sent before md_gateway received it (``ts_recv_ns``). Tick-to-order
  = ``enter_ns - sent_ns``: exchange sends the message -> the order reaches the exchange's
  socket. Split: ``wire_in`` (send -> md_gateway's datagram stamp), ``pipeline``
  (``ts_order_ns - ts_recv_ns``: md_gateway's record -> the OMS sends, the same span as the
  in-process figure below), ``wire_out`` (OMS sends -> the Enter reaches the exchange:
  venue_orders ring, order_gateway's wake, OUCH encode, SoupBinTCP over TCP).
* **in-process**: wire.toml with ``md_gateway`` replaced by ``md`` (``source = "lobster"``,
  ``speed`` chosen so the day runs at about the same message rate) and ``order_gateway`` by
  ``venue`` (plus the ``venue_md`` ring): tick-to-order = ``ts_order_ns - ts_recv_ns`` (md
  publishes the tick -> the OMS sends the order to the venue ring), as perf/ttobench.py;
  ``tick_to_venue`` (-> the venue takes it: the first report's ``ts_venue_ns``), the
  in-process counterpart of the wire's end to end, and ``to_venue`` (OMS -> venue) that of
  ``wire_out``.

    .venv/bin/python perf/wirebench.py [--duration 20] [--rate 4000]

Figures are ratios within the run; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AMZN = str(
    Path(__file__).resolve().parents[1].parent / "shared/data/lobster-2012-06-21/amzn_level1"
)
BOT4 = [sys.executable, "-m", "bot4.cli"]


def _free(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(instance: str, wire: bool, md=0, rr=0, ouch=0, speed=0.0) -> str:
    """wire.toml on the given ports, or its in-process twin (md + venue)."""
    from bot4.research.space import dumps_toml

    data = tomllib.loads(resources.files("bot4.config").joinpath("wire.toml").read_text())
    data["instance"] = instance
    for st in data["stage"]:
        p = st.setdefault("params", {})
        if st["kind"] == "md_gateway" and wire:
            p.update(listen=f"127.0.0.1:{md}", rerequest=f"127.0.0.1:{rr}")
        elif st["kind"] == "md_gateway":
            st.update(name="md", kind="md", params={"source": "lobster", "path": AMZN,
                                                    "speed": speed})  # fmt: skip
        elif st["kind"] == "order_gateway" and wire:
            p.update(connect=f"127.0.0.1:{ouch}")
        elif st["kind"] == "order_gateway":
            st.update(name="venue", kind="venue", params={})
            st.pop("stall_timeout", None)
    if not wire:
        rename = {"md_gateway": "md", "order_gateway": "venue"}
        data["ring"].append({"name": "venue_md", "from": "md", "to": "venue",
                             "type": "market_data", "capacity": 8192})  # fmt: skip
        for r in data["ring"]:
            r["from"], r["to"] = rename.get(r["from"], r["from"]), rename.get(r["to"], r["to"])
    return dumps_toml(data)


def _orders(journal: Path) -> np.ndarray:
    from bot4.journal import JournalReader
    from bot4.records import ACTION_NEW, ORDER, RT_ORDER

    parts = [
        r[(r["action"] == ACTION_NEW) & (r["ts_recv_ns"] > 0)]
        for _p, t, r in JournalReader(journal)
        if t == RT_ORDER
    ]
    return np.concatenate(parts) if parts else np.zeros(0, ORDER)


def _run(topo: Path, inst: str, env: dict, duration: float) -> None:
    out = subprocess.run(
        [*BOT4, "run", str(topo), "--duration", str(duration), "--instance", inst, "--quiet",
         "--no-db"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=duration + 300,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bot4 run failed ({out.returncode}): {out.stderr[-2000:]}")


def wire_run(duration: float, rate: float) -> dict[str, np.ndarray]:
    from bot4.gateways.ouch import token_of

    md, rr = _free(socket.SOCK_DGRAM), _free(socket.SOCK_DGRAM)
    ouch = _free(socket.SOCK_STREAM)
    inst = f"wireb{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bot4-wireb-") as tmp:
        env = dict(os.environ, BOT4_DATA_DIR=tmp)
        lat, ready = Path(tmp) / "lat.npz", Path(tmp) / "ready.json"
        # the exchange's log to a file: a pipe read only on failure fills at 64 KiB and
        # blocks the exchange mid-run
        exlog = Path(tmp) / "exchange.log"
        with open(exlog, "w") as errf:
            ex = subprocess.Popen(
                [*BOT4, "exchange", "serve", AMZN, "--md-to", f"127.0.0.1:{md}",
                 "--rerequest-port", str(rr), "--ouch-port", str(ouch), "--rate", str(rate),
                 "--start-on-login", "--latency-log", str(lat), "--ready-file", str(ready)],
                stdout=subprocess.DEVNULL, stderr=errf, env=env, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if ex.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exchange not serving: {exlog.read_text()[-2000:]}")
                time.sleep(0.1)
            topo = Path(tmp) / "wire.toml"
            topo.write_text(topology(inst, True, md, rr, ouch))
            _run(topo, inst, env, duration)
        finally:
            if ex.poll() is None:
                os.kill(ex.pid, signal.SIGTERM)
            ex.wait(60)
        z = np.load(lat)
        o = _orders(Path(tmp) / "journal" / inst)
    if len(o) < 20:
        raise RuntimeError(f"the wire run sent only {len(o)} orders")
    arrival = dict(zip(z["enter_token"].tolist(), z["enter_ns"].tolist(), strict=True))
    sent, ev = z["sent_ns"], z["itch_ts"] + int(z["day_ns"])
    order = np.argsort(ev, kind="stable")
    rows = []
    for r in o:
        a = arrival.get(token_of(int(r["client_order_id"])))
        if a is None:
            continue
        lo, hi = (
            np.searchsorted(ev[order], int(r["ts_event_ns"]), side="left"),
            np.searchsorted(ev[order], int(r["ts_event_ns"]), side="right"),
        )
        cand = sent[order[lo:hi]]
        cand = cand[(cand > 0) & (cand <= int(r["ts_recv_ns"]))]
        if cand.size:
            rows.append((int(cand.max()), int(r["ts_recv_ns"]), int(r["ts_order_ns"]), a))
    t = np.array(rows, np.int64)
    return {
        "tick_to_order": t[:, 3] - t[:, 0],
        "wire_in": t[:, 1] - t[:, 0],
        "pipeline": t[:, 2] - t[:, 1],
        "wire_out": t[:, 3] - t[:, 2],
    }


def inproc_run(duration: float, speed: float) -> dict[str, np.ndarray]:
    inst = f"inprb{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="bot4-inprb-") as tmp:
        env = dict(os.environ, BOT4_DATA_DIR=tmp)
        topo = Path(tmp) / "inproc.toml"
        topo.write_text(topology(inst, False, speed=speed))
        _run(topo, inst, env, duration)
        o = _orders(Path(tmp) / "journal" / inst)
        first = _first_reports(Path(tmp) / "journal" / inst)
    if len(o) < 20:
        raise RuntimeError(f"the in-process run sent only {len(o)} orders")
    i64 = np.int64
    # the venue stamps ts_venue_ns (CLOCK_MONOTONIC) when it takes the order: the
    # in-process counterpart of the Enter reaching the exchange's socket
    venue = np.array([first.get(int(c), 0) for c in o["client_order_id"]], i64)
    seen = venue > 0
    return {
        "tick_to_order": o["ts_order_ns"].astype(i64) - o["ts_recv_ns"].astype(i64),
        "tick_to_venue": venue[seen] - o["ts_recv_ns"][seen].astype(i64),
        "to_venue": venue[seen] - o["ts_order_ns"][seen].astype(i64),
    }


def _first_reports(journal: Path) -> dict[int, int]:
    """client order id -> ``ts_venue_ns`` of its first execution report (journalled)."""
    from bot4.journal import JournalReader
    from bot4.records import RT_EXEC_REPORT

    first: dict[int, int] = {}
    for _p, t, r in JournalReader(journal):
        if t == RT_EXEC_REPORT:
            for c, v in zip(r["client_order_id"].tolist(), r["ts_venue_ns"].tolist(), strict=True):
                first.setdefault(c, v)
    return first


def _table(title: str, lat: dict) -> float:
    from bot4.shm.histogram import percentiles_of

    print(f"{title}: {len(lat['tick_to_order'])} orders")
    print(f"  {'':<14} {'p50 us':>9} {'p99 us':>9} {'max us':>9}")
    for k, v in lat.items():
        p = percentiles_of(v)
        print(f"  {k:<14} {p['p50_ns'] / 1e3:9.1f} {p['p99_ns'] / 1e3:9.1f} "
              f"{float(np.max(v)) / 1e3:9.1f}")  # fmt: skip
    return percentiles_of(lat["tick_to_order"])["p50_ns"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per run (20)")
    ap.add_argument("--rate", type=float, default=4000.0, help="wire feed, ITCH msg/s (4000)")
    args = ap.parse_args(argv)
    # the LOBSTER day: ~57.5 k messages over 23 400 s; the wire feed adds ~56 % (synthetic
    # adds, corrections): the in-process replay's speed that gives about the same rate
    speed = args.rate / 1.56 * 23_400 / 57_515
    print(f"load average before: {os.getloadavg()}")
    w = wire_run(args.duration, args.rate)
    i = inproc_run(args.duration, speed)
    print(f"load average after: {os.getloadavg()}")
    pw = _table("wire: bot4 exchange serve -> md_gateway ... order_gateway -> exchange", w)
    pi = _table(f"in-process: md (lobster, speed {speed:.0f}) ... orders -> venue ring", i)
    pp = float(np.median(w["pipeline"]))
    pv = float(np.median(i["tick_to_venue"]))
    print(f"wire tick-to-order p50 / in-process p50: {pw / pi:.1f}x; the wire run's pipeline "
          f"span alone (same span as in-process): {pp / pi:.1f}x; wire end to end / "
          f"in-process tick to venue: {pw / pv:.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
