"""Database benchmark (pyperf): the exactly-once loader against a raw COPY of the same rows,
single-transaction latency, and journal append throughput.

    .venv/bin/python perf/bench_db.py --fast              # ~1-2 min, one table
    .venv/bin/python perf/bench_db.py -o perf/results/db.json
    .venv/bin/python perf/bench_db.py --dsn ... --ledger-dsn ...   # existing servers (*)

Without ``--dsn`` the parent starts an embedded PostgreSQL (production settings: fsync on)
in a temporary directory and removes it at the end. (*) With ``--dsn``/``--ledger-dsn``
(superuser, any database) it creates its databases there and drops them at the end.

What is timed (pyperf calibrates ``loops``; one loop = one chunk of ``CHUNK`` intents =
``4 * CHUNK`` events: a risk decision, an order, an ack and a fill each, journaled in
64-record frames as persistence writes them; the chunk is generated and journaled
untimed, every chunk with fresh ids):

* ``loader``: ``Loader.load_available()`` over the chunk, exactly once: batches of 4096
  records, each one SERIALIZABLE transaction per database with two-phase commit (fills
  make ledger legs), positions, load position, decision log fsync. Per event.
* ``raw COPY``: the same rows — every row the loader writes, events and ledger legs,
  encoded the same way — binary COPYed into identical tables in their own databases, one
  plain transaction per database per batch of the same size (ledger alongside, as the
  loader does), nothing else: what loading costs without exactly once. Per event.
* ``raw COPY orders``: the order rows alone into ``orders`` (the issue's reference
  figure, ~330 k rows/s here). Per row.
* ``journal append``: ``JournalWriter.append`` of 64-record ORDER frames, fsync ``none``
  and ``batch`` (``flush()`` after every frame). Per record.

The table (parent only): events/s of each, the loader/raw ratio (target >= 0.5x), and the
single-transaction latency percentiles from a separate sampler measured in the parent after
pyperf: one intent per transaction (decision, order, ack, fill), with two-phase commit
across the two databases (``2pc``), with the ledger in the events database (``one-db``),
and without the fill (``no-fill``: events database only); target p99 < 2 ms.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402

from bot4.db.encoding import write_chunks  # noqa: E402
from bot4.db.loader import Loader  # noqa: E402
from bot4.db.rows import LEDGER_COLUMNS, TABLES, Batch, ledger_stream, table_stream  # noqa: E402
from bot4.journal import JournalWriter  # noqa: E402
from bot4.records import (  # noqa: E402
    ACTION_NEW,
    DECISION_ACCEPT,
    EXEC_ACK,
    EXEC_FILL,
    EXEC_REPORT,
    ORDER,
    OS_FILLED,
    OS_NEW,
    OT_LIMIT,
    RISK_DECISION,
    RT_EXEC_REPORT,
    RT_ORDER,
    TIF_DAY,
)
from bot4.shm.histogram import percentiles_of  # noqa: E402

CHUNK = 2000  # intents per timed loop (8000 events)
FRAME = 64  # records per journal frame
BATCH = 4096  # loader batch_records
EVENTS_PER_INTENT = 4
LATENCY_SAMPLES = 2000
TARGET_RATIO = 0.5

TITLES = {
    "loader": "db: exactly-once loader, per event",
    "raw": "db: raw COPY of the same rows, per event",
    "orders": "db: raw COPY orders, per row",
    "append-none": "journal: append 64 x ORDER, fsync none, per record",
    "append-batch": "journal: append + flush 64 x ORDER, fsync batch, per record",
}


# --- workload -------------------------------------------------------------------------------


def workload(n: int, start: int) -> list[np.ndarray]:
    """``n`` intents from id ``start``: decision, order, ack and fill each, as frames of
    ``FRAME`` records (decisions, orders, then reports, per block of intents)."""
    seq = np.arange(start + 1, start + n + 1, dtype=np.uint64)
    k = np.arange(n)
    inst = (k % 3 + 1).astype(np.uint32)
    strat = (k % 2 + 1).astype(np.uint16)
    side = np.where(k % 2 == 0, 1, -1).astype(np.int8)
    qty = (k % 19 + 1) * 10
    price = (5_000 + (k * 7919) % 10_000) * 100
    ts = 1_700_000_000_000_000_000 + seq.astype(np.int64) * 1000

    d = np.zeros(n, RISK_DECISION)
    d["seq"] = d["intent_seq"] = seq
    d["intent_producer"] = 1
    d["decision"] = DECISION_ACCEPT
    d["instrument"], d["strategy"], d["side"], d["qty"], d["limit_price"] = (
        inst, strat, side, qty, price,
    )  # fmt: skip
    d["exposure"] = price * qty * side
    d["ts_event_ns"] = ts

    o = np.zeros(n, ORDER)
    o["seq"] = seq
    o["client_order_id"] = (np.uint64(1) << np.uint64(48)) | seq
    o["order_id"] = seq
    o["instrument"], o["strategy"], o["side"], o["qty"], o["limit_price"] = (
        inst, strat, side, qty, price,
    )  # fmt: skip
    o["order_type"], o["tif"], o["action"] = OT_LIMIT, TIF_DAY, ACTION_NEW
    o["ts_event_ns"] = ts

    e = np.zeros(2 * n, EXEC_REPORT)
    for j, (etype, status) in enumerate(((EXEC_ACK, OS_NEW), (EXEC_FILL, OS_FILLED))):
        r = e[j::2]
        r["seq"] = seq * np.uint64(2) + np.uint64(j)
        r["exec_id"] = seq * np.uint64(2) + np.uint64(j)
        r["client_order_id"], r["order_id"] = o["client_order_id"], o["order_id"]
        r["instrument"], r["strategy"], r["side"] = inst, strat, side
        r["exec_type"], r["status"] = etype, status
        r["ts_venue_ns"] = ts + 100 + j
        if etype == EXEC_FILL:
            r["last_qty"], r["last_price"], r["cum_qty"] = qty, price, qty
            r["fee"] = 100 + k % 50
        else:
            r["leaves_qty"] = qty
    frames = []
    for lo in range(0, n, FRAME):
        frames += [d[lo : lo + FRAME], o[lo : lo + FRAME]]
        frames += [e[2 * lo : 2 * lo + FRAME], e[2 * lo + FRAME : 2 * (lo + FRAME)]]
    return [f for f in frames if len(f)]


def batches_of(frames: list[np.ndarray]) -> list[Batch]:
    """The frames grouped as the loader groups them (at most BATCH records a batch)."""
    from bot4.records import record_type_of

    out, group, count = [], [], 0
    for i, f in enumerate(frames):
        if group and count + len(f) > BATCH:
            out.append(Batch.of(group))
            group, count = [], 0
        group.append((i, record_type_of(f.dtype), f))
        count += len(f)
    if group:
        out.append(Batch.of(group))
    return out


# --- worker fixtures (one per process) ------------------------------------------------------


class Fixture:
    """Per-worker state: a journal + loader, raw-COPY connections, an id counter."""

    def __init__(self, args) -> None:
        import psycopg

        self.args = args
        self.dir = tempfile.mkdtemp(prefix="bot4-benchdb-")
        self.next_id = secrets.randbelow(2**30) << 16  # ids < 2**47: unique across workers
        jid = f"bench{os.getpid()}"
        self.writer = JournalWriter(os.path.join(self.dir, jid), fsync="none")
        self.loader = Loader(self.writer.directory, args.events_dsn, args.ledger_dsn, journal_id=jid,
                             batch_records=BATCH)  # fmt: skip
        self.loader.load_available()  # migrations, instruments, staging: not timed
        self.encoder = Loader(os.path.join(self.dir, "enc"), args.raw_events_dsn, journal_id="enc")
        self.raw_ev = psycopg.connect(args.raw_events_dsn, autocommit=True)
        self.raw_lg = psycopg.connect(args.raw_ledger_dsn, autocommit=True)

    def chunk(self) -> list[np.ndarray]:
        start = self.next_id
        self.next_id += CHUNK
        return workload(CHUNK, start)

    def close(self) -> None:
        for c in (self.raw_ev, self.raw_lg):
            c.close()
        self.loader.close()
        self.encoder.close()
        self.writer.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_fx: Fixture | None = None


def fixture(args) -> Fixture:
    global _fx
    if _fx is None:
        _fx = Fixture(args)
    return _fx


# --- timed loops ----------------------------------------------------------------------------


def time_loader(loops: int, args) -> float:
    fx = fixture(args)
    total = 0.0
    for _ in range(loops):
        for f in fx.chunk():
            fx.writer.append(f)
        t0 = time.perf_counter()
        n = fx.loader.load_available()
        total += time.perf_counter() - t0
        assert n == CHUNK * EVENTS_PER_INTENT, n
    return total


def _raw_batch(fx: Fixture, batch: Batch) -> None:
    enc = fx.encoder
    fills = batch.parts[RT_EXEC_REPORT].take(batch.parts[RT_EXEC_REPORT].records["last_qty"] > 0)

    def ledger() -> None:
        chunks, _n = ledger_stream(fills, enc._inst, enc._journal_bytes)
        fx.raw_lg.execute("BEGIN")
        with fx.raw_lg.cursor().copy(
            f"COPY ledger_entries ({', '.join(LEDGER_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            write_chunks(cp, chunks)
        fx.raw_lg.execute("COMMIT")

    side = threading.Thread(target=ledger)
    side.start()
    fx.raw_ev.execute("BEGIN")
    with fx.raw_ev.cursor() as cur:
        for rtype, part in batch.parts.items():
            for table in TABLES[rtype]:
                which = table.route(part.records)
                rows = part if which is None else part.take(which)
                if len(rows):
                    with cur.copy(table.copy_sql()) as cp:
                        write_chunks(cp, table_stream(table, rows, enc._inst, enc._journal_bytes))
    fx.raw_ev.execute("COMMIT")
    side.join()


def time_raw(loops: int, args) -> float:
    fx = fixture(args)
    total = 0.0
    for _ in range(loops):
        batches = batches_of(fx.chunk())
        t0 = time.perf_counter()
        for b in batches:
            _raw_batch(fx, b)
        total += time.perf_counter() - t0
    return total


def time_orders(loops: int, args) -> float:
    fx = fixture(args)
    table = TABLES[RT_ORDER][0]
    total = 0.0
    for _ in range(loops):
        frames = [(i, RT_ORDER, f) for i, f in enumerate(fx.chunk()) if f.dtype == ORDER]
        part = Batch.of(frames).parts[RT_ORDER]
        t0 = time.perf_counter()
        fx.raw_ev.execute("BEGIN")
        with fx.raw_ev.cursor().copy(table.copy_sql()) as cp:
            write_chunks(cp, table_stream(table, part, fx.encoder._inst, fx.encoder._journal_bytes))
        fx.raw_ev.execute("COMMIT")
        total += time.perf_counter() - t0
    return total


def time_append(loops: int, policy: str) -> float:
    frame = workload(FRAME, 0)[1]  # 64 ORDER records, 8 KiB
    directory = tempfile.mkdtemp(prefix="bot4-benchjournal-")
    try:
        with JournalWriter(directory, fsync=policy) as w:
            t0 = time.perf_counter()
            for _ in range(loops):
                w.append(frame)
                if policy == "batch":
                    w.flush()
            return time.perf_counter() - t0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- parent: databases, latency sampler, table ----------------------------------------------


@contextlib.contextmanager
def databases(args):
    """Create the four benchmark databases (on an embedded server unless --dsn)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from bot4.db.migrate import migrate
    from bot4.db.server import EmbeddedPostgres

    server = root = None
    admin_ev, admin_lg = args.dsn, args.ledger_dsn or args.dsn
    if admin_ev is None:
        root = tempfile.mkdtemp(prefix="bot4-benchdb-pg-")
        os.chmod(root, 0o711)  # as root the server's own user must reach data/ (mkdtemp: 0700)
        server = EmbeddedPostgres(
            os.path.join(root, "data"), settings={"shared_buffers": "'256MB'"}
        )
        server.start()
        admin_ev = admin_lg = server.dsn("postgres")
    tag = uuid.uuid4().hex[:8]
    made = []

    def create(admin: str, name: str) -> str:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append((admin, name))
        params = conninfo_to_dict(admin)
        params["dbname"] = name
        return make_conninfo(**params)

    try:
        args.events_dsn = create(admin_ev, f"bench_ev_{tag}")
        args.ledger_dsn_db = create(admin_lg, f"bench_lg_{tag}")
        args.raw_events_dsn = create(admin_ev, f"bench_rawev_{tag}")
        args.raw_ledger_dsn = create(admin_lg, f"bench_rawlg_{tag}")
        if getattr(args, "beside", False):
            args.beside_events_dsn = create(admin_ev, f"bench_runev_{tag}")
            args.beside_ledger_dsn = create(admin_lg, f"bench_runlg_{tag}")
        migrate(args.raw_events_dsn, ("events",))
        migrate(args.raw_ledger_dsn, ("ledger",))
        with psycopg.connect(args.raw_events_dsn, autocommit=True) as c:
            c.execute(
                "INSERT INTO instruments VALUES (1,'AAPL',10000,0.0001,0.01,1),"
                "(2,'AMZN',10000,0.0001,0.01,1),(3,'GOOG',10000,0.0001,0.01,1)"
            )
        yield args
    finally:
        for admin, name in made:
            with contextlib.suppress(Exception), psycopg.connect(admin, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


LATENCY_CASES = {
    # label: (ledger in its own database, the intent's fill included)
    "2pc": (True, True),  # 4 events + 3 ledger legs, two databases, two-phase commit
    "one-db": (False, True),  # the same, ledger tables in the events database: one commit
    "no-fill": (True, False),  # decision, order, ack: events database only, one commit
}
# --compare: the same two cases with the loader sending small batches with fills in two round
# trips on the events database (one_trip=False), in the same run
OLD_CASES = {"2pc-2rt": (True, True), "one-db-2rt": (False, True)}
BASELINES = ("bare", "bare-2pc", "fsync")
TARGET_P99_MS_CASE = {"2pc": 5.0, "one-db": 2.0, "no-fill": 2.0}
WARMUP = 100


class _Bare:
    """The floors, on the same server: a one-row ``BEGIN; INSERT; COMMIT`` (``bare``), the
    same row under ``PREPARE TRANSACTION`` + ``COMMIT PREPARED`` (``bare-2pc``), and a
    pg_test_fsync-style 8 KiB ``write`` + ``fdatasync`` of a file (``fsync``) in
    ``directory`` (the embedded server's file system)."""

    def __init__(self, dsn: str, directory: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS bench_bare (k bigint PRIMARY KEY)")
        self.k = 0
        self.path = os.path.join(directory, "fsync-probe")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.page = os.urandom(8192)

    def bare(self) -> None:
        self.k += 1
        with self.conn.transaction():
            self.conn.execute("INSERT INTO bench_bare VALUES (%s)", (self.k,))

    def bare_2pc(self) -> None:
        self.k += 1
        gid = f"bench-bare-{os.getpid()}-{self.k}"
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO bench_bare VALUES (%s)", (self.k,))
        self.conn.execute(f"PREPARE TRANSACTION '{gid}'")
        self.conn.execute(f"COMMIT PREPARED '{gid}'")

    def fsync(self) -> None:
        os.pwrite(self.fd, self.page, 0)
        os.fdatasync(self.fd)

    def close(self) -> None:
        self.conn.close()
        os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def latency_samples(args, samples: int, compare: bool = False) -> dict[str, np.ndarray]:
    """Wall time (ms) of one transaction per case of :data:`LATENCY_CASES` (load_available
    over one intent) and of the :data:`BASELINES`, warm-up excluded. The cases take turns
    sample by sample, so each sees the same load on the machine; each case has its own
    journal."""
    directory = tempfile.mkdtemp(prefix="bot4-benchlat-")
    cases = {**LATENCY_CASES, **(OLD_CASES if compare else {})}
    times: dict[str, list[int]] = {k: [] for k in (*cases, *BASELINES)}
    cpu: dict[str, list[int]] = {k: [] for k in cases}  # the loader thread's CPU time
    next_id = 9 * 10**12
    runs = []
    bare = _Bare(args.events_dsn, directory)
    try:
        for label, (two_dbs, with_fill) in cases.items():
            writer = JournalWriter(os.path.join(directory, label), fsync="batch")
            ledger = args.ledger_dsn if two_dbs else None
            old = {"one_trip": False} if label in OLD_CASES else {}
            loader = Loader(
                writer.directory, args.events_dsn, ledger, journal_id=f"lat-{label}", **old
            )
            loader.load_available()
            runs.append((label, with_fill, writer, loader))
        floors = {"bare": bare.bare, "bare-2pc": bare.bare_2pc, "fsync": bare.fsync}
        for i in range(samples + WARMUP):
            for case, (label, with_fill, writer, loader) in enumerate(runs):
                frames = workload(1, next_id)
                next_id += 1
                for f in frames:  # each case its own positions, as one loader per journal
                    f["strategy"] += 10 * (case + 1)
                if not with_fill:
                    frames[2] = frames[2][:1]  # the ack alone: no fill, no ledger
                for f in frames:
                    writer.append(f)
                writer.flush()
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                loader.load_available()
                if i >= WARMUP:
                    times[label].append(time.perf_counter_ns() - t0)
                    cpu[label].append(time.thread_time_ns() - c0)
            for label, fn in floors.items():
                t0 = time.perf_counter_ns()
                fn()
                if i >= WARMUP:
                    times[label].append(time.perf_counter_ns() - t0)
        for label, _fill, _writer, loader in runs:
            if label == "2pc":
                assert loader.stats.twophase >= samples, loader.stats
            st = loader.stats
            print(f"{label}: {st.one_trip_batches} batches in one round trip, "
                  f"{st.cas_misses} positions CAS refused, {st.pipelined_batches} pipelined")  # fmt: skip
    finally:
        for _label, _fill, writer, loader in runs:
            loader.close()
            writer.close()
        bare.close()
        shutil.rmtree(directory, ignore_errors=True)
    out = {k: np.array(v) / 1e6 for k, v in times.items()}
    out.update({f"{k} cpu": np.array(v) / 1e6 for k, v in cpu.items()})
    return out


@contextlib.contextmanager
def topology_beside(args):
    """The default topology (``bot4 run``) running for the latency sampler's duration, its
    loader on two more databases of the same server; stopped (SIGINT, then SIGKILL by pid)
    and its data directory removed at the end. Yields its pid, or None when not asked."""
    import signal
    import subprocess

    if not args.beside:
        yield None
        return
    data = tempfile.mkdtemp(prefix="bot4-benchdb-run-")
    instance = f"benchdb{os.getpid()}"
    bot4 = os.path.join(os.path.dirname(sys.executable), "bot4")
    cmd = [bot4, "run", "--quiet", "--instance", instance, "--duration", "3600",
           "--dsn", args.beside_events_dsn, "--ledger-dsn", args.beside_ledger_dsn]  # fmt: skip
    env = {**os.environ, "BOT4_DATA_DIR": data}
    log_path = os.path.join(data, "run.log")
    with open(log_path, "wb") as out:
        cpus = getattr(args, "all_cpus", None)
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,  # the stages pin themselves
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)  # fmt: skip
    try:
        time.sleep(args.beside_warmup)  # stages up and trading before the first sample
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                tail = f.read()[-2000:]
            raise SystemExit(f"bench_db: error: bot4 run exited {proc.returncode}: {tail}")
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            for name in os.listdir("/dev/shm"):
                if instance in name:
                    os.unlink(os.path.join("/dev/shm", name))
        shutil.rmtree(data, ignore_errors=True)


def print_table(ns: dict[str, float], lat: dict[str, np.ndarray] | None) -> None:
    print()
    if ns:
        head = f"{'benchmark':<46}{'ns/unit':>12}{'units/s':>14}"
        print(head)
        print("-" * len(head))
    for k, title in TITLES.items():
        if k in ns:
            print(f"{title:<46}{ns[k]:>12,.0f}{1e9 / ns[k]:>14,.0f}")
    if "loader" in ns and "raw" in ns:
        ratio = ns["raw"] / ns["loader"]
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        print(
            f"\nexactly-once loader / raw COPY of the same rows: {ratio:.2f}x "
            f"(target >= {TARGET_RATIO}x)  {verdict}"
        )
        if "orders" in ns:
            print(f"loader events/s vs raw COPY order rows/s: {ns['orders'] / ns['loader']:.2f}x")
    if lat:
        q = {}
        for label, ms in lat.items():
            # bot4's one latency histogram (ns), as every other latency bot4 reports
            h = percentiles_of((np.asarray(ms) * 1e6).astype(np.int64))
            q[label] = {k: h[f"{k}_ns"] / 1e6 for k in ("p50", "p99", "p999")}
            q[label]["max"] = float(np.max(ms))
        bare = q.get("bare")
        print(f"\nsingle transaction, {len(next(iter(lat.values())))} samples each, cases "
              "interleaved sample by sample (ms; x: p50 and p99 over the bare commit's)")  # fmt: skip
        for label, v in q.items():
            if label.endswith(" cpu"):
                continue
            line = (f"  {label:<9} p50 {v['p50']:7.3f}  p99 {v['p99']:7.3f}  "
                    f"p99.9 {v['p999']:7.3f}  max {v['max']:7.3f}")  # fmt: skip
            if bare is not None and label != "bare":
                line += f"   x{v['p50'] / bare['p50']:5.1f} / x{v['p99'] / bare['p99']:5.1f}"
            target = TARGET_P99_MS_CASE.get(label)
            if target is not None:
                verdict = "PASS" if v["p99"] <= target else "FAIL"
                line += f"   target p99 <= {target} ms {verdict}"
            print(line)
        print("loader thread CPU time per transaction (ms; the client's share, less sensitive "
              "to the machine's load than wall time)")  # fmt: skip
        for label, v in q.items():
            if label.endswith(" cpu"):
                print(f"  {label[:-4]:<9} p50 {v['p50']:7.3f}  p99 {v['p99']:7.3f}")


def _worker_args(cmd: list[str], args) -> None:
    for name in ("events_dsn", "ledger_dsn_db", "raw_events_dsn", "raw_ledger_dsn"):
        cmd += [f"--{name.replace('_', '-')}", getattr(args, name)]
    for s in args.only or ():
        cmd += ["--only", s]


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_worker_args)
    ap = runner.argparser
    ap.add_argument("--dsn", help="superuser DSN of the events server (default: embedded)")
    ap.add_argument("--ledger-dsn", help="superuser DSN of the ledger server (default: --dsn)")
    ap.add_argument("--only", action="append", help="benchmark keys containing this")
    ap.add_argument("--latency-samples", type=int, default=LATENCY_SAMPLES)
    ap.add_argument(
        "--latency-only",
        action="store_true",
        help="only the single-transaction latency sampler (no pyperf runs)",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="also sample the loader without one-round-trip batches",
    )
    ap.add_argument(
        "--beside",
        action="store_true",
        help="run the default topology (bot4 run) beside the latency sampler",
    )
    ap.add_argument(
        "--service-cpus",
        help="run the sampler and the embedded server on these CPUs (e.g. 0), as bot4 run "
        "places its loader and server off the hot group's core; --beside's bot4 run "
        "keeps every CPU",
    )
    ap.add_argument(
        "--beside-warmup",
        type=float,
        default=15.0,
        help="seconds the topology runs before the first sample (15)",
    )
    for name in ("events-dsn", "ledger-dsn-db", "raw-events-dsn", "raw-ledger-dsn"):
        ap.add_argument(f"--{name}", help=argparse_hidden())
    args = runner.parse_args()
    args.all_cpus = os.sched_getaffinity(0)
    if args.service_cpus and not args.worker:
        os.sched_setaffinity(0, {int(c) for c in args.service_cpus.split(",")})
    keys = [k for k in TITLES if not args.only or any(s in k for s in args.only)]
    if args.worker:
        args.ledger_dsn = args.ledger_dsn_db
        run(runner, args, keys)
        if _fx is not None:
            _fx.close()
        return
    with databases(args):
        args.ledger_dsn = args.ledger_dsn_db
        results = {} if args.latency_only else run(runner, args, keys)
        lat = None
        if ("loader" in keys or args.latency_only) and args.latency_samples:
            with topology_beside(args) as pid:
                if pid is not None:
                    print(f"default topology running beside the sampler (bot4 run, pid {pid})")
                lat = latency_samples(args, args.latency_samples, args.compare)
    if any(b is None for b in results.values()):
        return
    print_table({k: b.median() * 1e9 for k, b in results.items()}, lat)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def run(runner: pyperf.Runner, args, keys: list[str]) -> dict:
    funcs = {
        "loader": (time_loader, args, CHUNK * EVENTS_PER_INTENT),
        "raw": (time_raw, args, CHUNK * EVENTS_PER_INTENT),
        "orders": (time_orders, args, CHUNK),
        "append-none": (time_append, "none", FRAME),
        "append-batch": (time_append, "batch", FRAME),
    }
    results = {}
    for k in keys:
        fn, arg, inner = funcs[k]
        results[k] = runner.bench_time_func(TITLES[k], fn, arg, inner_loops=inner)
    return results


if __name__ == "__main__":
    main()
