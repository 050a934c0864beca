"""Gateway benchmarks (issue 19), ratios measured in one run.

1. ITCH decode throughput: the AMZN level-1 day as ITCH (the simulator's encoding, ~90 k
   messages) decoded by md_gateway's numba kernel (records + the md stage's books: order map
   and levels, ``bot4.marketdata.builder``)
   against a plain-Python ``struct`` decoder of the same messages (fields only, no book):
   messages/s each and the ratio.
2. Wire-to-ring latency on loopback: a sender process sends one ITCH Add per MoldUDP64
   packet at ``--rate`` packets/s, stamping its CLOCK_MONOTONIC send time into the ITCH
   timestamp; the receiver publishes the decoded records and stamps the time they are
   ready. Two receivers in the same run: md_gateway's path (datagram callback on uvloop,
   the duty cycle woken by it, as bot4.stages.loop_async does) and a plain non-blocking
   ``recv`` busy loop with the same kernels (the baseline: what uvloop's per-datagram cost
   adds). p50 / p99 / max in µs. The ring commit itself (~100 ns) is not included.

    .venv/bin/python perf/gatewaybench.py [--packets 5000] [--rate 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from booklayout_ab import load_module  # perf/ (this script's directory)

AMZN = str(
    Path(__file__).resolve().parents[1].parent / "shared/data/lobster-2012-06-21/amzn_level1"
)
M48 = (1 << 48) - 1


def python_decode(buf: bytes, offsets: np.ndarray) -> int:
    """Plain-Python struct decoder of the same messages: a tuple of fields per message."""
    hdr = struct.Struct(">cHH6s")
    add = struct.Struct(">QcI8sI")
    exe = struct.Struct(">QIQ")
    can = struct.Struct(">QI")
    dele = struct.Struct(">Q")
    trade = struct.Struct(">QcI8sIQ")
    out = []
    offs = offsets.tolist()
    for i in range(len(offs) - 1):
        o = offs[i]
        t, loc, trk, ts = hdr.unpack_from(buf, o)
        ts = int.from_bytes(ts, "big")
        if t == b"A":
            out.append((t, loc, ts, *add.unpack_from(buf, o + 11)))
        elif t == b"E":
            out.append((t, loc, ts, *exe.unpack_from(buf, o + 11)))
        elif t == b"X":
            out.append((t, loc, ts, *can.unpack_from(buf, o + 11)))
        elif t == b"D":
            out.append((t, loc, ts, *dele.unpack_from(buf, o + 11)))
        elif t == b"P":
            out.append((t, loc, ts, *trade.unpack_from(buf, o + 11)))
        else:
            out.append((t, loc, ts))
    return len(out)


def stage(params: dict):
    from bot4.stages.md_gateway import MdGatewayStage

    st = MdGatewayStage(
        SimpleNamespace(name="md_gateway", params=params),
        [],
        [SimpleNamespace(type="MARKET_DATA")],
        "bench",
    )
    st.setup()
    return st


def decode_throughput() -> None:
    from bot4.gateways import mold
    from bot4.gateways.feed import lobster_to_itch

    feed = lobster_to_itch([AMZN])
    n = feed.messages
    st = stage({"symbols": ["AMZN"], "date": str(feed.day), "store": 1 << 17})
    pk = mold.packets(b"BOT4SIM   ", 1, feed.buf, feed.offsets, 0, n)
    from bot4.records import MARKET_DATA

    out = np.zeros(4 * n, MARKET_DATA)
    best_nb = best_py = float("inf")
    for _ in range(3):
        st.setup()
        for _s, p in pk:
            st.on_packet(p)
        t0 = time.perf_counter()
        k = st.source_ready(0, 0)
        st.generate(0, k, [out], np.zeros(1, np.int64), 1)
        best_nb = min(best_nb, time.perf_counter() - t0)
        assert k == n
        raw = feed.buf.tobytes()
        t0 = time.perf_counter()
        python_decode(raw, feed.offsets)
        best_py = min(best_py, time.perf_counter() - t0)
    print(f"ITCH decode, {n:,} messages (best of 3):")
    print(f"  numba kernel (records + order table + books): {n / best_nb / 1e6:8.2f} M msg/s")
    print(f"  plain-Python struct (fields only):            {n / best_py / 1e6:8.2f} M msg/s")
    print(f"  ratio: {best_py / best_nb:.1f}x")


SLICE = 4096  # messages per decoder call (MdGatewayStage.DECODE_SLICE)


def decode_split() -> None:
    """Where the decoder's time goes: the same kernel source compiled with the book step
    (order map + levels, the builder's ``apply_event``) and the quote emission each cut out (text substitution into a throw-away
    module; the AMZN level-1 day)."""
    from bot4.gateways import itch, mold
    from bot4.records import MARKET_DATA

    src = Path(itch.__file__).read_text().replace("cache=True", "cache=False")
    cut_book = (
        "    apply_event(b, b.px.shape[2], inst, out[n - 1])",
        "    pass",
    )

    # every quote emission (add/execute/cancel paths alike) becomes a no-op
    cut_quotes = (
        "w = _quotes(e, w, bk.px, bk.qty, bk.n, last_q)",
        "w = w",
    )
    variants = {"full": [], "no book step": [cut_book], "no quotes": [cut_quotes],
                "decode only": [cut_book, cut_quotes]}  # fmt: skip
    from bot4.gateways.feed import lobster_to_itch

    feed = lobster_to_itch([AMZN])
    n, buf, offs = feed.messages, feed.buf, feed.offsets
    cap = 1 << 17
    store = mold.new_store(cap)
    for s0, p in mold.packets(b"X         ", 1, buf, offs, 0, n):
        body = np.frombuffer(p, np.uint8, offset=mold.HEADER_BYTES)
        mold.mold_ingest_kernel(body, s0, int.from_bytes(p[18:20], "big"), store, 1, 0)
    out = np.zeros(4 * n, MARKET_DATA)
    raw = buf.tobytes()
    best_py = float("inf")
    for _ in range(3):  # the plain-Python reference, in this run
        t0 = time.perf_counter()
        python_decode(raw, offs)
        best_py = min(best_py, time.perf_counter() - t0)
    print("ITCH decoder split (AMZN day, M msg/s, best of 3; ratio to this run's struct):")
    print(f"  {'plain struct':16s} {n / best_py / 1e6:8.2f}")
    for name, cuts in variants.items():
        text = src
        for a, b in cuts:
            assert a in text, a
            text = text.replace(a, b)
        path = f"/tmp/bot4_itch_{os.getpid()}_{len(cuts)}_{abs(hash(name))}.py"
        with open(path, "w") as f:
            f.write(text)
        m = load_module("itch_variant", path)
        best = float("inf")
        for _ in range(3):
            b, lq = itch.new_books(5, 1024, 4096)
            lm = np.zeros(1 << 16, np.int64)
            lm[1] = 2
            lm[2:] = 0
            ds = np.zeros(8, np.int64)
            t0 = time.perf_counter()
            w = 0
            for a in range(0, n, SLICE):  # as md_gateway calls it: the map grown per slice
                k = min(SLICE, n - a)
                b.reserve(k)
                dec = m.decoder_state(lm, np.zeros(1, np.uint64), np.zeros(1, np.int64), lq,
                                      ds, b)  # fmt: skip
                w += m.itch_decode_kernel(store, 1 + a, k, 0, out[w:], 1 + w, dec, True)
            best = min(best, time.perf_counter() - t0)
            assert ds[itch.DS_TABLE_FULL] == 0 and ds[itch.DS_MESSAGES] == n, ds
        os.unlink(path)
        print(f"  {name:16s} {n / best / 1e6:8.2f}  {best_py / best:6.1f}x")


def sender(port: int, packets: int, rate: float, start: mp.Event) -> None:
    from bot4.gateways import mold

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start.wait()
    t0 = time.monotonic()
    for i in range(packets):
        due = t0 + i / rate
        while time.monotonic() < due:  # sleep-paced: a spinning sender starves a 2-core box
            time.sleep(max(0.0, min(due - time.monotonic(), 0.0005)))
        now = time.monotonic_ns() & M48
        msg = (b"A" + struct.pack(">HH", 1, 0) + now.to_bytes(6, "big") +
               struct.pack(">Q", i + 1) + b"B" + struct.pack(">I", 100) + b"AMZN    " +
               struct.pack(">I", 2_000_000 + (i % 50) * 100))  # fmt: skip
        s.sendto(mold.header(b"BOT4SIM   ", i + 2, 1) + len(msg).to_bytes(2, "big") + msg,
                 ("127.0.0.1", port))  # fmt: skip


def _directory() -> bytes:
    from bot4.gateways import itch

    g = np.zeros(1, itch.GENERIC)
    g["type"], g["locate"], g["stock"] = b"R", 1, b"AMZN    "
    buf, _ = itch.encode(g)
    m = buf.tobytes()
    from bot4.gateways import mold

    return mold.header(b"BOT4SIM   ", 1, 1) + len(m).to_bytes(2, "big") + m


def latencies(st, out, counts, lat, pos, seq) -> tuple[int, int]:
    k = st.source_ready(pos, 0)
    if k:
        n, seq = st.generate(pos, k, [out], counts, seq)
        done = time.monotonic_ns() & M48
        recs = out[: counts[0]]
        sent = (recs["ts_event_ns"] - st.day_ns) & M48
        adds = recs["kind"] == 1
        lat.extend(((done - sent[adds]) & M48).tolist())
        pos += n
    return pos, seq


def run_uvloop(port: int, packets: int, rate: float) -> list[int]:
    import uvloop

    from bot4.records import MARKET_DATA

    st = stage({"listen": f"127.0.0.1:{port}", "symbols": ["AMZN"], "date": "2012-06-21"})
    out = np.zeros(4 * 4096, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    lat: list[int] = []
    start = mp.Event()
    proc = mp.Process(target=sender, args=(port, packets, rate, start))

    async def main():
        from bot4.stages.loop_async import Waker

        loop = asyncio.get_running_loop()
        waker = Waker(loop)
        st.bind(None, waker)
        await st.open()
        st.on_packet(_directory())
        proc.start()
        start.set()
        pos, seq = 0, 1
        deadline = time.monotonic() + packets / rate + 10
        while pos < packets + 1 and time.monotonic() < deadline:
            pos, seq = latencies(st, out, counts, lat, pos, seq)
            if st.source_ready(pos, 0) == 0:
                await waker.wait(0.001)
            else:
                await asyncio.sleep(0)
        await st.shut()

    uvloop.run(main())
    proc.join()
    return lat


def run_recv(port: int, packets: int, rate: float) -> list[int]:
    from bot4.records import MARKET_DATA

    st = stage({"symbols": ["AMZN"], "date": "2012-06-21"})
    out = np.zeros(4 * 4096, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    lat: list[int] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    st.on_packet(_directory())
    start = mp.Event()
    proc = mp.Process(target=sender, args=(port, packets, rate, start))
    proc.start()
    start.set()
    pos, seq = 0, 1
    deadline = time.monotonic() + packets / rate + 10
    while pos < packets + 1 and time.monotonic() < deadline:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            os.sched_yield()  # share the core, as every bot4 wait does
            continue
        st.on_packet(data)
        pos, seq = latencies(st, out, counts, lat, pos, seq)
    sock.close()
    proc.join()
    return lat


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show(name: str, lat: list[int], packets: int) -> None:
    """Percentiles through bot4's one latency histogram (bot4.shm.histogram), as every
    perf script and ``bot4 stats`` report them."""
    from bot4.shm.histogram import percentiles_of

    a = np.array(lat[len(lat) // 10 :], np.int64)  # first 10 % warm-up
    if a.size == 0:
        print(f"  {name}: no samples")
        return
    p = percentiles_of(a)
    p50, p99 = p["p50_ns"] / 1e3, p["p99_ns"] / 1e3
    print(f"  {name:34s} n={a.size:6d}/{packets}  p50 {p50:7.1f} µs  p99 {p99:8.1f} µs  "
          f"max {a.max() / 1e3:8.1f} µs")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=2000.0)
    a = ap.parse_args()
    decode_throughput()
    decode_split()
    print(f"wire-to-ring latency, loopback UDP, {a.rate:.0f} packets/s, one Add per packet:")
    show("md_gateway path (uvloop callback)", run_uvloop(free_port(), a.packets, a.rate), a.packets)
    show("baseline: non-blocking recv loop", run_recv(free_port(), a.packets, a.rate), a.packets)


if __name__ == "__main__":
    main()
