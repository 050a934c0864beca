"""Soak: the default ``bot4 run`` for minutes, sampled every second, then checked end to end.

Not a test (it takes minutes and its figures depend on the machine); a script an engineer
runs after touching the stage loop, the rings or persistence, and before a release.

What it does
    Runs ``bot4 warm`` (``--no-warm`` skips it), then starts ``bot4 run`` (the packaged default topology unless ``--topology``; the run's own
    defaults otherwise) in a session of its own, with ``$BOT4_DATA_DIR`` a fresh temporary
    directory (never ``./bot4-data``; ``$BOT4_DSN``/``$BOT4_LEDGER_DSN`` are dropped, so the
    database is the run's embedded PostgreSQL under that directory, or none with
    ``--no-db``). Once a second it takes the snapshot ``bot4 stats --json --instance NAME
    --once`` prints (:func:`bot4.ops_stats.snapshot`, in process: spawning the CLI costs
    ~0.7 s of CPU per call, a third of a core on a two-core machine; ``--stats-cli`` spawns
    it anyway). The run stops itself after ``--duration`` seconds of running, or
    ``--ctrl-c-at S`` sends SIGINT to its process group S seconds after launch, as a
    terminal's Ctrl-C does.

    ``--kills N`` (issue 12): N SIGKILLs of random stages at random moments (seeded; the
    seed is printed), by the pid the supervisor recorded in the control block (checked to
    be a child of the run), each followed by a wait until the supervisor's replacement
    reports running with a fresh heartbeat. The run gets ``--max-restarts N+1`` so the
    restart policy never halts it for kills it was told to expect.

Checks (a table at the end; ``--json FILE`` writes them with the figures and a per-second
series: ticks/s, records moved per ring, trading state, stuck verdicts, kill-disturbed)
    run         exit status 0; no ``Traceback``; no ``bot4: error`` line; no restart except
                one per kill (Ctrl-C and ``--duration`` runs: none at all).
    md flow     no second with zero market data published (md's output rings) while the
                pipeline is running, from the second after start-up on.
    stuck full  no second in which a ring is full at both ends and its consumer did not
                move; the longest stretch per ring is shown.
    order path  on each of intents, orders, venue_orders, venue_execs, fills, decisions,
                order_events, exec_events (rings of the order, intent, decision and
                execution types in another topology): the longest stretch of seconds in
                which its consumer moved nothing, against ``--flow-bound`` (10 s). The order
                path is bursty: intents fire when a signal crosses its threshold, then cool
                down, and risk denies at its position and rate limits. At ~20,000 ticks/s
                the default strategy sends ~50-100 orders/s and makes ~430 decisions/s, so
                10 s without one is a stall, not a lull, and short enough to be caught
                within a soak. Orders and executions move only when risk lets orders
                through: their stretches count only while trading is ACTIVE everywhere (the
                default strategy loses money, and risk's daily-loss guard puts trading in
                REDUCING within a minute or two; the reducing orders then rest, unfilled,
                for minutes). Seconds not ACTIVE are shown as an info row.
    waiting     no second in which a ring holds records and its consumer moves nothing while
                that consumer's outputs have room (the stall itself, whatever risk decided),
                and no second the supervisor's own liveness verdict (``bot4 stats``) has
                called a stage stuck for 1 s or more.
    conservation at the end (the run's ``--report``, taken after the drain): every ring
                produced == consumed + depth; md records_out == (md's rings) x signals
                records_in and every md ring produced the same count; persistence
                records_in == the journal's record count (after a persistence restart: the
                journal's distinct records == what persistence consumed, a rewritten frame
                being the documented trace of a kill); the journal verifies (no corruption,
                no torn tail).
    database    (unless ``--no-db``) every journalled event in the database exactly once,
                fills with balanced ledger legs, nothing rejected; no exec id carrying two
                executions; database positions == the journal's fills per instrument
                (:mod:`bot4.db.journal_check`, shared with the system tests).
    kills       every kill done and followed by exactly one restart.
    leftovers   nothing the soak started is alive at exit; no ``/dev/shm/bot4.<instance>.*``.

Exit status 0 only if every check passed; otherwise 1, with one line per failed check on
stderr. Ctrl-C of the soak itself stops the run (SIGTERM to the supervisor, then SIGKILL
by pid), stops the embedded server and removes the instance's segments.

Everything it starts is ended by pid: the run (its session's processes), the embedded
PostgreSQL it restarts for the database checks. The data directory is removed when every
check passed (``--keep-data`` keeps it) and kept, with its path printed, when one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOT4 = [sys.executable, "-m", "bot4.cli"]
ORDER_PATH_TYPES = ("ORDER_INTENT", "ORDER", "EXEC_REPORT", "RISK_DECISION")  # RECORD_TYPES names
STAGE_FIELDS = ("pid", "state", "restarts", "records_in", "records_out", "liveness", "stuck_for_ns")
SAMPLE_S = 1.0
POLL_S = 0.05  # control-block polls while a kill waits for its restart
RESTART_TIMEOUT_S = 60.0  # a killed stage not running again by then is a failed check
SETTLE_S = 3.0  # after a restart, seconds excluded from the flow checks (backlog catch-up)
START_GRACE_S = 300.0  # bot4 run's own start-up limit is 120 s (after the embedded server's)
STOP_GRACE_S = 180.0  # after --duration / Ctrl-C: start-up, drain (60 s) and report fit in this
KILL_WARMUP_S = 5.0  # no kill in the first seconds of running
RESTART_RE = re.compile(r"\brestart \d+ in\b")
KILL_TAIL_S = 10.0  # nor in the last ones: the drain should see every stage back


# -- process helpers ----------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a live pid, None if gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the run and every stage process it spawned)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _proc_stat(int(d.name))
            if st is not None and st[1] == sid:
                out.append(int(d.name))
    return out


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- samples ------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float  # seconds since launch (monotonic)
    pipeline: str | None
    rings: dict[str, dict]  # short name -> produced, consumed, depth, capacity
    stages: list[dict]  # per stage index: pid, state, restarts, records_in/out, liveness
    trading: str | None = None  # None: every instrument ACTIVE; else what is not (risk's state)


def take_sample(instance: str, t0: float, use_cli: bool) -> Sample:
    from bot4.ops_stats import snapshot

    if use_cli:
        out = subprocess.run(
            [*BOT4, "stats", "--json", "--instance", instance, "--once"],
            capture_output=True,
            timeout=30,
            cwd=ROOT,
        )
        snap = json.loads(out.stdout) if out.returncode == 0 else {"rings": [], "stages": []}
    else:
        snap = snapshot(instance)
    rings = {
        r["name"].split(".", 2)[-1]: {
            k: r[k] for k in ("produced", "consumed", "depth", "capacity", "consumer_position")
        }
        for r in snap["rings"]
    }
    stages = [{k: s.get(k) for k in STAGE_FIELDS} for s in snap["stages"]]
    return Sample(time.monotonic() - t0, snap.get("pipeline"), rings, stages, trading_label(snap))


def trading_label(snap: dict) -> str | None:
    """None when trading is ACTIVE everywhere (or the instance has no trading state), else
    e.g. ``global reducing (DAILY_LOSS, risk)`` or ``2 instruments halted``."""
    tr = snap.get("trading")
    if not tr:
        return None
    g = tr.get("global")
    if g and g["state"] != "active":
        return f"global {g['state']} ({g['reason']}, {g['source']})"
    off = [r for r in tr.get("instruments", []) if r["state"] != "active"]
    if off:
        return f"{len(off)} instruments {'/'.join(sorted({r['state'] for r in off}))}"
    return None


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Kill:
    at: float  # seconds since launch
    stage: str
    pid: int
    stages: list[str]  # every stage of that process (groups)
    before: dict = field(default_factory=dict)  # stage index -> started_ns before the kill
    signalled: bool = False  # SIGKILL sent (False: the pid failed its checks)
    restarted_at: float | None = None
    error: str | None = None


@dataclass
class Soak:
    args: argparse.Namespace
    topology: object
    instance: str
    data: Path
    t0: float = 0.0
    proc: subprocess.Popen | None = None
    running_at: float | None = None  # seconds since launch when the pipeline first ran
    ctrl_c_sent_at: float | None = None
    samples: list[Sample] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)  # stage -> [first, max, last] MB
    alarms: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    hung: bool = False
    leftovers: list[str] = field(default_factory=list)
    cb: object = None
    warm_s: float | None = None

    @property
    def early(self) -> bool:
        """Ctrl-C came before a full second of running (issue 11's Ctrl-C at 1 s and 5 s):
        only the run's own behaviour is checked (exit 0, no traceback, no restart, nothing
        left), not flow, conservation or the database."""
        return self.ctrl_c_sent_at is not None and (
            self.running_at is None or self.ctrl_c_sent_at < self.running_at + 2 * SAMPLE_S
        )

    @property
    def report_path(self) -> Path:
        return self.data / "soak-run-report.json"

    @property
    def log_path(self) -> Path:
        return self.data / "soak-run.log"

    def argv(self) -> list[str]:
        a = self.args
        cmd = [*BOT4, "run"]
        if a.topology:
            cmd.append(str(Path(a.topology).resolve()))
        cmd += ["--instance", self.instance, "--report", str(self.report_path)]
        if a.ctrl_c_at is None:
            cmd += ["--duration", f"{a.duration:g}"]
        if a.no_db:
            cmd.append("--no-db")
        if a.kills:
            cmd += ["--max-restarts", str(a.kills + 1)]
        return cmd

    # -- control block (read-only) ---------------------------------------------------------
    def _block(self, index: int) -> dict | None:
        from bot4.shm import control as C

        if self.cb is None:
            try:
                self.cb = C.ControlBlock(self.instance, readonly=True)
            except Exception:  # not created yet, or not yet valid
                return None
        b = self.cb.stage(index)
        out = {
            "pid": int(b[C.S_PID]),
            "state": int(b[C.S_STATE]),
            "started_ns": int(b[C.S_STARTED_NS]),
            "heartbeat_ns": int(b[C.S_HEARTBEAT_NS]),
            "alarms": int(b[C.S_ALARMS]) if hasattr(C, "S_ALARMS") else 0,
        }
        del b
        return out

    def _pipeline_running(self) -> bool:
        from bot4.shm import control as C

        if self._block(0) is None:
            return False
        return int(self.cb.words[C.W_PIPE_STATE]) == C.PIPE_RUNNING

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        env = dict(os.environ, BOT4_DATA_DIR=str(self.data))
        env.pop("BOT4_DSN", None)
        env.pop("BOT4_LEDGER_DSN", None)
        log = open(self.log_path, "wb")  # noqa: SIM115 (closed in close())
        self._log = log
        if a.warm and not self._warm(env):
            return
        print(f"soak: {' '.join(self.argv()[2:])}  (BOT4_DATA_DIR={self.data})", flush=True)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        rng = random.Random(a.seed)
        kill_plan = self._plan_kills(rng) if a.kills else []
        next_sample = 0.0
        pending: Kill | None = None
        deadline = None
        while not self.interrupted:
            now = time.monotonic() - self.t0
            if self.proc.poll() is not None:
                break
            if self.running_at is None and self._pipeline_running():
                self.running_at = now
                print(f"soak: pipeline running after {now:.1f} s", flush=True)
                if kill_plan:
                    kill_plan = [now + k for k in kill_plan]
            if self.running_at is None and a.ctrl_c_at is None and now > START_GRACE_S:
                self.hung = True
                print(f"soak: the run did not start by {START_GRACE_S:.0f} s: stopping it")
                break
            if deadline is None:
                if a.ctrl_c_at is not None:
                    deadline = a.ctrl_c_at + STOP_GRACE_S
                elif self.running_at is not None:
                    deadline = self.running_at + a.duration + STOP_GRACE_S
            if deadline is not None and now > deadline:
                self.hung = True
                print(f"soak: the run did not exit by {deadline:.0f} s: stopping it", flush=True)
                break
            if a.ctrl_c_at is not None and self.ctrl_c_sent_at is None and now >= a.ctrl_c_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGINT)
                self.ctrl_c_sent_at = now
                print(f"soak: SIGINT to the run's process group at {now:.1f} s", flush=True)
            if now >= next_sample:
                self._sample()
                next_sample += SAMPLE_S
                while next_sample <= now:  # a slow sample: skip, never bunch up
                    next_sample += SAMPLE_S
                self._progress(now)
            if self.running_at is not None:
                if pending is not None:
                    if self._restarted(pending):
                        pending = None
                elif kill_plan and now >= kill_plan[0]:
                    if now > self.running_at + a.duration - KILL_TAIL_S / 2:
                        kill_plan = []  # too late: the drain is near; counted as not done
                    elif self._pipeline_running():
                        kill_plan.pop(0)
                        pending = self._kill(rng, now)
            wake = next_sample
            if pending is not None or kill_plan or self.running_at is None:
                wake = min(wake, now + POLL_S)
            time.sleep(max(0.0, wake - (time.monotonic() - self.t0)))
        if pending is not None and pending.restarted_at is None and pending.error is None:
            pending.error = "the run ended before the restart"

    def _warm(self, env: dict) -> bool:
        """``bot4 warm`` first, as the README's run command does: six stage processes
        compiling the same kernels at once (a fresh cache, or kernels another change made
        stale) can take longer than the run's start-up timeout on two busy cores."""
        t = time.monotonic()
        p = subprocess.Popen(
            [*BOT4, "warm"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        while p.poll() is None:
            if self.interrupted:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait()
                return False
            time.sleep(0.2)
        self.warm_s = time.monotonic() - t
        print(f"soak: bot4 warm: exit {p.returncode} in {self.warm_s:.1f} s", flush=True)
        return True

    def _plan_kills(self, rng: random.Random) -> list[float]:
        """Kill moments in seconds after the pipeline runs: N uniform draws in the window
        between the warm-up and the tail, sorted. A kill whose moment passes while the
        previous one still waits for its restart happens as soon as that restart is done."""
        a = self.args
        # planned up to 2 tails before the end, done up to half a tail before it: slack
        # for restarts that take longer than planned (a persistence catching up: ~10 s)
        hi = max(KILL_WARMUP_S + 1.0, a.duration - 2 * KILL_TAIL_S)
        return sorted(rng.uniform(KILL_WARMUP_S, hi) for _ in range(a.kills))

    def _kill(self, rng: random.Random, now: float) -> Kill | None:
        stages = self.topology.stages
        s = rng.choice(stages)
        b = self._block(s.index)
        pid = b["pid"] if b else 0
        st = _proc_stat(pid) if pid else None
        # the supervisor's child, or its zygote's (bot4.pipeline.zygote forks the stages)
        parent = _proc_stat(st[0]) if st is not None else None
        ours = st is not None and (
            st[0] == self.proc.pid or (parent is not None and parent[0] == self.proc.pid)
        )
        if not pid or not ours:
            k = Kill(now, s.name, pid, [s.name], error=f"pid {pid} is not a live stage of the run")
            self.kills.append(k)
            return None
        same = [x.name for x in stages if (self._block(x.index) or {}).get("pid") == pid]
        k = Kill(now, s.name, pid, same)
        k.before = {x.index: self._block(x.index)["started_ns"] for x in stages if x.name in same}
        os.kill(pid, signal.SIGKILL)
        k.signalled = True
        self.kills.append(k)
        return k

    def _restarted(self, k: Kill) -> bool:
        """True once every stage of the killed process runs again: a new start recorded by
        the supervisor, state running and a heartbeat since that start."""
        from bot4.shm import control as C

        now = time.monotonic() - self.t0
        for idx, started in k.before.items():
            b = self._block(idx)
            if not (
                b["started_ns"] > started
                and b["state"] == C.STAGE_RUNNING
                and b["heartbeat_ns"] >= b["started_ns"]
            ):
                if now - k.at > RESTART_TIMEOUT_S:
                    k.error = f"not running again {RESTART_TIMEOUT_S:g} s after the kill"
                    return True
                return False
        k.restarted_at = now
        return True

    def _sample(self) -> None:
        try:
            s = take_sample(self.instance, self.t0, self.args.stats_cli)
        except Exception as exc:  # segments vanishing at the end of the run
            print(f"soak: sample failed: {exc}", flush=True)
            return
        self.samples.append(s)
        for spec, st in zip(self.topology.stages, s.stages, strict=False):
            mb = _rss_mb(st["pid"]) if st.get("pid") else None
            if mb is not None and s.pipeline == "running":
                r = self.rss.setdefault(spec.name, [mb, mb, mb])
                r[1], r[2] = max(r[1], mb), mb
            b = self._block(spec.index)
            if b is not None:
                self.alarms[spec.name] = b["alarms"]

    def _progress(self, now: float) -> None:
        if self.running_at is None or len(self.samples) < 2:
            return
        s = self.samples[-1]
        if s.pipeline != "running" or int(now) % self.args.print_every:
            return
        p = self.samples[-2]
        md = md_rate(self.topology, p, s) / max(1, len(md_rings(self.topology)))
        orders = _moved(p, s, "orders")
        fullest = max(s.rings.items(), key=lambda kv: kv[1]["depth"] / kv[1]["capacity"])
        print(
            f"soak: {now:6.0f} s  ticks {md:>7,.0f}/s  orders {orders:>6,}/s  fullest {fullest[0]} "
            f"{fullest[1]['depth']}/{fullest[1]['capacity']}  kills {len(self.kills)}"
            + (f"  trading: {s.trading}" if s.trading else ""),
            flush=True,
        )

    # -- ending -----------------------------------------------------------------------------
    def stop(self) -> int | None:
        """End the run if it is still alive (SIGTERM to the supervisor: a drain; SIGKILL of
        every process of its session after 90 s), then anything else of its session. Returns
        the run's exit status."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                for pid in _session_pids(p.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                p.wait(30)
        deadline = time.monotonic() + 10.0  # e.g. multiprocessing's resource tracker, exiting
        while _session_pids(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _session_pids(p.pid)
        for pid in left:
            self.leftovers.append(f"process {pid} of the run's session alive after it exited")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return p.returncode

    def close(self) -> None:
        """Release the control block mapping, stop an orphaned embedded server, remove the
        instance's segments when no process of the run is left to own them. Each step runs
        whatever the previous one raised: cleanup never stops half-way."""
        if self.cb is not None:
            with contextlib.suppress(Exception):
                self.cb.close()
            self.cb = None
        pg = self.data / "pg"
        if not self.args.no_db and (pg / "postmaster.pid").exists():
            try:
                from bot4.db.server import EmbeddedPostgres

                server = EmbeddedPostgres(pg)
                if server.running:
                    self.leftovers.append("embedded PostgreSQL running after the run: stopped")
                    server.stop()
            except Exception as exc:
                self.leftovers.append(f"embedded PostgreSQL: could not check or stop: {exc}")
        left = shm_segments(self.instance)
        if left:
            self.leftovers.append(f"{len(left)} segments left in /dev/shm, e.g. {left[0]}: removed")
            for path in left:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if hasattr(self, "_log"):
            self._log.close()


def shm_segments(instance: str) -> list[Path]:
    """``/dev/shm/bot4.<instance>.*``: the instance's segments (bot4.shm.segment's naming),
    listed without importing bot4, so cleanup works whatever state the package is in."""
    shm = Path("/dev/shm")
    return sorted(shm.glob(f"bot4.{instance}.*")) if shm.is_dir() else []


# -- checks -------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable
    value: str
    bound: str = ""
    detail: str = ""


def _moved(p: Sample, s: Sample, ring: str) -> int:
    a, b = p.rings.get(ring), s.rings.get(ring)
    return 0 if a is None or b is None else b["consumed"] - a["consumed"]


def md_rings(topology) -> list[str]:
    return [r.name for s in topology.stages if s.kind == "md" for r in topology.outputs_of(s.name)]


def md_rate(topology, p: Sample, s: Sample) -> float:
    dt = s.t - p.t
    produced = sum(
        s.rings[r]["produced"] - p.rings[r]["produced"]
        for r in md_rings(topology)
        if r in s.rings and r in p.rings
    )
    return produced / dt if dt > 0 else 0.0


def stuck_s(st: dict) -> float:
    """How long the supervisor has judged this stage stuck (s; 0 when it is not). Its
    verdict is observed every ~100 ms, so a stage descheduled for 100 ms on a busy machine
    is "stuck" for that long: the checks count only verdicts held for a second or more."""
    return (st.get("stuck_for_ns") or 0) / 1e9 if st.get("liveness") == "stuck" else 0.0


def _stretches(flags: list[bool]) -> int:
    """Longest run of consecutive True."""
    best = cur = 0
    for f in flags:
        cur = cur + 1 if f else 0
        best = max(best, cur)
    return best


def _intervals(soak: Soak) -> list[tuple[Sample, Sample, bool]]:
    """Consecutive sample pairs while the pipeline ran, from the second after start-up,
    each with whether a kill disturbed it (kill .. restart + SETTLE_S)."""
    pairs = []
    start = soak.running_at or 0.0
    for p, s in zip(soak.samples, soak.samples[1:], strict=False):
        if p.pipeline != "running" or s.pipeline != "running" or p.t < start + SAMPLE_S:
            continue
        disturbed = False
        for k in soak.kills:
            end = (k.restarted_at if k.restarted_at is not None else float("inf")) + SETTLE_S
            if k.at < s.t and p.t < end:
                disturbed = True
        pairs.append((p, s, disturbed))
    return pairs


def flow_checks(soak: Soak, bound: float) -> tuple[list[Check], dict]:
    t = soak.topology
    if soak.early:
        return [Check("flow: not checked", None, "Ctrl-C during start-up")], {}
    pairs = _intervals(soak)
    clean = [(p, s) for p, s, d in pairs if not d]
    figures: dict = {
        "seconds_sampled": len(pairs),
        "seconds_disturbed_by_kills": len(pairs) - len(clean),
    }
    checks = []
    zero_md = [p.t for p, s in clean if md_rate(t, p, s) == 0]
    rates = [md_rate(t, p, s) / max(1, len(md_rings(t))) for p, s in clean]
    figures["ticks_per_s"] = {  # per md ring: each tick goes to every one of them
        "min": min(rates, default=0),
        "median": sorted(rates)[len(rates) // 2] if rates else 0,
        "max": max(rates, default=0),
    }
    checks.append(
        Check(
            "md flow: seconds with zero md flow",
            bool(clean) and not zero_md,
            f"{len(zero_md)} of {len(clean)}",
            "0",
            f"first at {zero_md[0]:.0f} s" if zero_md else "",
        )
    )
    stuck: dict[str, int] = {}
    for r in t.rings:
        flags = [
            s.rings[r.name]["depth"] >= s.rings[r.name]["capacity"]
            and p.rings[r.name]["depth"] >= p.rings[r.name]["capacity"]
            and _moved(p, s, r.name) == 0
            for p, s in clean
            if r.name in p.rings and r.name in s.rings
        ]
        stuck[r.name] = _stretches(flags)
    worst = max(stuck.items(), key=lambda kv: kv[1], default=("-", 0))
    checks.append(
        Check(
            "stuck full: longest stretch (s)",
            worst[1] == 0,
            f"{worst[1]} ({worst[0]})" if worst[1] else "0",
            "0",
        )
    )
    figures["stuck_full_longest_s"] = stuck
    # Order path. Intents and decisions owe nothing to risk's verdicts: they must keep
    # moving. Orders and executions move only when risk lets orders through, so their quiet
    # stretches count only while trading is ACTIVE everywhere (a daily-loss REDUCING lets
    # only position-reducing orders pass, and those may rest unfilled for minutes). A
    # stretch is broken by a second that does not count.
    quiet: dict[str, int] = {}
    rate: dict[str, float] = {}
    span = sum(s.t - p.t for p, s in clean)
    for r in t.rings:
        if r.type.upper() not in ORDER_PATH_TYPES:
            continue
        gated = r.type.upper() in ("ORDER", "EXEC_REPORT")
        flags = [
            _moved(p, s, r.name) == 0 and not (gated and (p.trading or s.trading))
            for p, s in clean
            if r.name in s.rings
        ]
        quiet[r.name] = _stretches(flags)
        rate[r.name] = sum(_moved(p, s, r.name) for p, s in clean) / span if span else 0.0
    not_active = [s for p, s in clean if p.trading or s.trading]
    if not_active:
        first = not_active[0]
        checks.append(
            Check(
                "trading: seconds not ACTIVE everywhere (info)",
                None,
                f"{len(not_active)} of {len(clean)}",
                "",
                f"from {first.t:.0f} s: {first.trading}; orders/executions gated there",
            )
        )
    figures["series"] = [
        {
            "t": round(s.t, 1),
            "disturbed": d,
            "ticks_per_s": round(md_rate(t, p, s) / max(1, len(md_rings(t)))),
            "moved": {r.name: _moved(p, s, r.name) for r in t.rings if r.name in s.rings},
            "trading": s.trading,
            "stuck": {
                spec.name: round(stuck_s(st), 1)
                for spec, st in zip(t.stages, s.stages, strict=False)
                if stuck_s(st)
            },
        }
        for p, s, d in pairs
    ]
    figures["seconds_trading_not_active"] = len(not_active)
    figures["trading_states_seen"] = sorted({s.trading for p, s in clean if s.trading})
    # records waiting on a ring whose consumer moves nothing for a whole second: the stall
    # itself, whatever the trading state (a consumer blocked on a full output shows as that
    # output stuck full instead)
    held: dict[str, int] = {}
    for r in t.rings:
        flags = [
            p.rings[r.name]["depth"] > 0
            and s.rings[r.name]["depth"] > 0
            and _moved(p, s, r.name) == 0
            and not any(
                s.rings.get(o.name, {}).get("depth", 0) >= o.capacity
                for o in t.outputs_of(r.consumer)
            )
            for p, s in clean
            if r.name in p.rings and r.name in s.rings
        ]
        held[r.name] = _stretches(flags)
    worst = max(held.items(), key=lambda kv: kv[1], default=("-", 0))
    checks.append(
        Check(
            "records waiting, consumer not moving: longest (s)",
            worst[1] == 0,
            f"{worst[1]} ({worst[0]})" if worst[1] else "0",
            "0",
        )
    )
    figures["waiting_not_consumed_longest_s"] = held

    # the supervisor's own verdict from the ring cursors (bot4 stats' liveness column)
    stuck_seen = sorted(
        {
            spec.name
            for _p, s in clean
            for spec, st in zip(t.stages, s.stages, strict=False)
            if stuck_s(st) >= 1.0
        }
    )
    stuck_secs = sum(1 for _p, s in clean if any(stuck_s(st) >= 1.0 for st in s.stages))
    longest = max((stuck_s(st) for _p, s in clean for st in s.stages), default=0.0)
    checks.append(
        Check(
            "liveness: seconds a stage was 'stuck' >= 1 s (supervisor)",
            stuck_secs == 0,
            f"{stuck_secs} (longest seen {longest:.1f} s)",
            "0",
            ", ".join(stuck_seen),
        )
    )
    figures["liveness_stuck_seconds"] = stuck_secs
    figures["order_path_longest_quiet_s"] = quiet
    figures["order_path_rate_per_s"] = rate
    for name, q in quiet.items():
        checks.append(
            Check(
                f"order path: {name} longest no-progress (s)",
                bool(clean) and q <= bound,
                str(q),
                f"<= {bound:g}",
                f"{rate[name]:,.0f}/s",
            )
        )
    return checks, figures


# bot4's exit codes (README "Exit codes"): what a non-zero status of `bot4 run` means
RUN_EXITS = {1: "failure or drain timeout", 2: "usage", 3: "halted by the restart policy",
             130: "second interrupt"}  # fmt: skip


def _exit_meaning(rc: int | None) -> str:
    return f"{rc} ({RUN_EXITS[rc]})" if rc in RUN_EXITS else str(rc)


def run_checks(soak: Soak, rc: int | None, log: str, final: dict) -> list[Check]:
    a = soak.args
    checks = [
        Check("run: exit status", rc == 0, _exit_meaning(rc), "0"),
        Check(
            "run: no Traceback in its output",
            "Traceback" not in log,
            str(log.count("Traceback")),
            "0",
        ),
    ]
    errors = [ln for ln in log.splitlines() if ln.startswith("bot4: error")]
    checks.append(
        Check(
            "run: no 'bot4: error' line",
            not errors,
            str(len(errors)),
            "0",
            errors[0][:100] if errors else "",
        )
    )
    # the supervisor's line, one per process: "bot4: stage NAME <why>; restart N in S s"
    # (a group: "bot4: group G (member NAME) <why>; ..."); its report counts every member
    restart_lines = [ln for ln in log.splitlines() if RESTART_RE.search(ln)]
    if a.kills:
        killed = [k for k in soak.kills if k.signalled]
        want_members = sum(len(k.stages) for k in killed)
        counted = sum(s["restarts"] for s in final.get("stages", {}).values())
        checks.append(
            Check(
                "run: one restart per kill (its output, its report)",
                len(restart_lines) == len(killed) and (not final or counted == want_members),
                f"{len(restart_lines)} lines, {counted} counted",
                f"{len(killed)}, {want_members}",
                next((ln[:100] for ln in restart_lines if "signal 9" not in ln), ""),
            )
        )
    else:
        counted = sum(s["restarts"] for s in final.get("stages", {}).values())
        checks.append(
            Check(
                "run: no restart (its output, its report)",
                not restart_lines and not counted,
                f"{len(restart_lines)} lines, {counted} counted",
                "0",
                restart_lines[0][:100] if restart_lines else "",
            )
        )
    checks.append(
        Check(
            "run: pipeline reached running",
            soak.running_at is not None or (None if soak.early else False),
            f"{soak.running_at:.1f} s" if soak.running_at is not None else "never",
        )
    )
    checks.append(Check("run: exited in time", not soak.hung, "hung" if soak.hung else "yes"))
    alarms = {k: v for k, v in soak.alarms.items() if v}
    checks.append(
        Check(
            "run: no stage alarms",
            not alarms,
            str(sum(alarms.values())),
            "0",
            str(alarms) if alarms else "",
        )
    )
    return checks


def conservation_checks(soak: Soak, final: dict) -> tuple[list[Check], dict]:
    """From the run's end-of-run report (taken after the drain) and its journal."""
    from bot4.journal import JournalReader
    from bot4.records import RECORD_TYPES

    t = soak.topology
    checks: list[Check] = []
    figures: dict = {}
    rings = final.get("rings", {})
    stages = final.get("stages", {})
    if not rings or not stages:
        # interrupted before the supervisor made its segments: no report, nothing to conserve
        missing = Check("conservation: end-of-run report", None if soak.early else False, "missing")
        return [missing], figures
    bad = {
        n: (r["produced"], r["consumed"], r["depth"])
        for n, r in rings.items()
        if r["produced"] != r["consumed"] + r["depth"]
    }
    checks.append(
        Check(
            "conservation: every ring produced == consumed + depth",
            not bad,
            f"{len(rings) - len(bad)} of {len(rings)} rings",
            "all",
            str(bad) if bad else "",
        )
    )
    left = {n: r["depth"] for n, r in rings.items() if r["depth"]}
    if left:
        # e.g. venue_execs: the venue's EXEC_CANCELLED replies to the CANCEL_ALL the orders
        # stage sends as it drains; it exits without reading them, so they are in no journal
        checks.append(
            Check(
                "drain: records left unread in rings (info)",
                None,
                str(sum(left.values())),
                "",
                ", ".join(f"{n} {d}" for n, d in left.items()),
            )
        )
    figures["rings_end"] = {
        n: {k: r[k] for k in ("produced", "consumed", "depth")} for n, r in rings.items()
    }
    restarted = {n for n, s in stages.items() if s["restarts"]}
    # md fan-out
    for md in [s for s in t.stages if s.kind == "md"]:
        outs = [r.name for r in t.outputs_of(md.name)]
        sig = [r for r in t.outputs_of(md.name) if t.stage(r.consumer).kind == "signals"]
        produced = {r: rings[r]["produced"] for r in outs if r in rings}
        equal = len(set(produced.values())) == 1
        checks.append(
            Check(
                f"conservation: {md.name} rings all produced the same",
                equal,
                f"{min(produced.values(), default=0):,}",
                "equal",
                "" if equal else str(produced),
            )
        )
        if sig:
            consumer = sig[0].consumer
            if {md.name, consumer} & restarted:
                want = len(outs) * rings[sig[0].name]["consumed"]
                got = sum(produced.values())
                label = f"rings: sum produced == {len(outs)} x {sig[0].name} consumed"
            else:
                want = len(outs) * stages[consumer]["records_in"]
                got = stages[md.name]["records_out"]
                label = f"records_out == {len(outs)} x {consumer} records_in"
            checks.append(
                Check(f"conservation: {md.name} {label}", got == want, f"{got:,}", f"== {want:,}")
            )
    # persistence and its journal
    for ps in [s for s in t.stages if s.kind == "persistence"]:
        journal = Path(ps.params.get("dir") or soak.data / "journal" / t.instance)
        if not journal.is_dir():
            checks.append(
                Check(
                    f"journal: {ps.name} exists",
                    None if soak.early else False,
                    "missing",
                    "",
                    str(journal),
                )
            )
            continue
        rep = JournalReader(journal).verify()
        total = sum(rep.records.values())
        figures.setdefault("journal", {})[ps.name] = {
            "records": {k: v for k, v in rep.records.items() if v},
            "frames": rep.frames,
        }
        checks.append(
            Check(
                f"journal: {ps.name} verifies (no corruption, no torn tail)",
                rep.complete,
                "ok" if rep.complete else "damaged",
                "",
                str(rep.corruption or rep.torn_tail or ""),
            )
        )
        ins = [r.name for r in t.inputs_of(ps.name)]
        consumed = sum(rings[r]["consumed"] for r in ins if r in rings)
        names = {i: n for i, n in enumerate(RECORD_TYPES, start=1)}
        distinct: set = set()
        for _pos, rtype, recs in JournalReader(journal):
            if names.get(rtype) != "OPERATOR_ACTION":
                distinct.update((rtype, int(x)) for x in recs["seq"])
        operator = rep.records.get("OPERATOR_ACTION", 0)
        if ps.name in restarted:
            checks.append(
                Check(
                    f"conservation: {ps.name} consumed == distinct journal records",
                    consumed == len(distinct),
                    f"{consumed:,}",
                    f"== {len(distinct):,}",
                    f"{total - operator - len(distinct):,} records journalled twice (frames rewritten after a kill)",
                )
            )
        else:
            got = stages[ps.name]["records_in"]
            checks.append(
                Check(
                    f"conservation: {ps.name} records_in == journal records",
                    got == total - operator,
                    f"{got:,}",
                    f"== {total - operator:,}",
                    f"ring consumed {consumed:,}; {operator} operator actions",
                )
            )
    return checks, figures


def database_checks(soak: Soak) -> tuple[list[Check], dict]:
    from bot4.db.journal_check import exactly_once_problems, identity_problems
    from bot4.db.server import LEDGER_DB, EmbeddedPostgres

    t = soak.topology
    ps = [s for s in t.stages if s.kind == "persistence"]
    if not ps:
        return [], {}
    journal = Path(ps[0].params.get("dir") or soak.data / "journal" / t.instance)
    if not journal.is_dir():
        return [Check("database: not checked", None if soak.early else False, "no journal")], {}
    server = EmbeddedPostgres(soak.data / "pg")
    checks: list[Check] = []
    try:
        server.start()
        dsn, ledger = server.dsn(), server.dsn(LEDGER_DB)
        figures, problems = exactly_once_problems(journal, dsn, ledger)
        checks.append(
            Check(
                "database: journal exactly once (events, fills, ledger)",
                not problems,
                f"{figures['exec_reports']:,} execs, {figures['fills']:,} fills, {figures['orders']:,} orders",
                "",
                "; ".join(problems),
            )
        )
        ident, iproblems = identity_problems(journal, dsn)
        merged = [p for p in iproblems if "exec ids carry" in p or "exec_conflicts" in p]
        pos = [p for p in iproblems if p.startswith("positions")]
        checks.append(
            Check(
                "database: no exec id with two executions",
                not merged,
                str(ident["merged_exec_ids"]),
                "0",
                "; ".join(merged),
            )
        )
        checks.append(
            Check(
                "database: positions == journal fills per instrument",
                not pos,
                f"{ident['instruments_with_position']} instruments",
                "",
                "; ".join(pos),
            )
        )
        return checks, {**figures, **ident}
    except Exception as exc:
        return [Check("database: checks ran", False, type(exc).__name__, "", str(exc)[:200])], {}
    finally:
        if server.started:
            with contextlib.suppress(Exception):
                server.stop()


def kill_checks(soak: Soak) -> tuple[list[Check], dict]:
    a = soak.args
    done = [k for k in soak.kills if k.error is None and k.restarted_at is not None]
    failed = [k for k in soak.kills if k.error is not None]
    waits = [k.restarted_at - k.at for k in done]
    per_stage: dict[str, int] = {}
    for k in done:
        per_stage[k.stage] = per_stage.get(k.stage, 0) + 1
    checks = [
        Check(
            "kills: done, each followed by a restart",
            len(done) == a.kills and not failed,
            f"{len(done)} of {a.kills}",
            f"{a.kills}",
            "; ".join(f"{k.stage} at {k.at:.1f} s: {k.error}" for k in failed[:3]),
        )
    ]
    figures = {
        "seed": a.seed,
        "done": len(done),
        "per_stage": per_stage,
        "restart_s": {
            "median": sorted(waits)[len(waits) // 2] if waits else None,
            "max": max(waits, default=None),
        },
        "kills": [
            {
                "at_s": round(k.at, 2),
                "stage": k.stage,
                "pid": k.pid,
                "restart_s": round(k.restarted_at - k.at, 2) if k.restarted_at else None,
                "error": k.error,
            }
            for k in soak.kills
        ],
    }
    return checks, figures


# -- output -------------------------------------------------------------------------------------
def print_table(checks: list[Check], figures: dict, soak: Soak) -> None:
    print()
    print(f"{'check':<64}{'result':<7}{'value':<28}{'bound':<12}detail")
    for c in checks:
        res = "info" if c.ok is None else ("PASS" if c.ok else "FAIL")
        print(f"{c.name:<64}{res:<7}{c.value:<28}{c.bound:<12}{c.detail}")
    quiet = figures.get("flow", {}).get("order_path_longest_quiet_s", {})
    stuck = figures.get("flow", {}).get("stuck_full_longest_s", {})
    held = figures.get("flow", {}).get("waiting_not_consumed_longest_s", {})
    rate = figures.get("flow", {}).get("order_path_rate_per_s", {})
    ends = figures.get("conservation", {}).get("rings_end", {})
    if ends:
        print()
        print(
            f"{'ring':<16}{'produced':>14}{'consumed':>14}{'depth':>7}{'rate/s':>10}"
            f"{'quiet s':>9}{'stuck s':>9}{'held s':>8}"
        )
        for name, r in ends.items():
            rt = f"{rate[name]:,.0f}" if name in rate else ""
            print(
                f"{name:<16}{r['produced']:>14,}{r['consumed']:>14,}{r['depth']:>7}{rt:>10}"
                f"{quiet.get(name, ''):>9}{stuck.get(name, ''):>9}{held.get(name, ''):>8}"
            )
        print("quiet: longest stretch without consumer progress (order path; see the checks);")
        print("stuck: full, consumer not moving; held: records waiting, consumer not moving")
    if soak.rss:
        print()
        print(f"{'stage':<14}{'rss first MB':>13}{'max MB':>9}{'last MB':>9}")
        for name, (first, mx, last) in soak.rss.items():
            print(f"{name:<14}{first:>13.1f}{mx:>9.1f}{last:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--duration", type=float, default=600.0, help="seconds of running (default 600)"
    )
    ap.add_argument("--instance", help="pipeline instance name (default soak<pid>)")
    ap.add_argument("--topology", help="topology TOML (default: the packaged default)")
    ap.add_argument("--no-db", action="store_true", help="journal only (bot4 run --no-db)")
    ap.add_argument("--data-dir", help="BOT4_DATA_DIR for the run (default: a fresh temp dir)")
    ap.add_argument(
        "--keep-data", action="store_true", help="keep the data dir even if every check passed"
    )
    ap.add_argument(
        "--ctrl-c-at", type=float, help="SIGINT the run's process group S s after launch"
    )
    ap.add_argument("--kills", type=int, default=0, help="SIGKILL N random stages during the run")
    ap.add_argument("--seed", type=int, help="seed of the kills (default: random, printed)")
    ap.add_argument(
        "--flow-bound", type=float, default=10.0, help="order path: max seconds without progress"
    )
    ap.add_argument("--json", help="write the checks and figures here")
    ap.add_argument("--stats-cli", action="store_true", help="sample by spawning bot4 stats --json")
    ap.add_argument(
        "--no-warm", dest="warm", action="store_false", help="skip bot4 warm before the run"
    )
    ap.add_argument("--print-every", type=int, default=10, help="progress line every N s")
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    if a.kills and a.ctrl_c_at is not None:
        ap.error("--kills and --ctrl-c-at do not mix (kills need the run's --duration)")
    if a.kills and a.no_db:
        ap.error("--kills checks the database: drop --no-db")

    from bot4.pipeline.topology import load_topology
    from bot4.records.errors import Bot4Error

    instance = a.instance or f"soak{os.getpid()}"
    try:
        topology = load_topology(a.topology, instance=instance)
    except Bot4Error as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 1
    if shm_segments(instance):
        print(
            f"soak: error: instance {instance} has segments in /dev/shm: in use?", file=sys.stderr
        )
        return 1
    made = a.data_dir is None
    data = Path(a.data_dir or tempfile.mkdtemp(prefix="bot4-soak-")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    if made and os.geteuid() == 0:
        # as root the embedded server runs as another user, which must be able to reach
        # pg/ under it: search permission only (mkdtemp makes it 0700), no listing
        data.chmod(0o711)
    soak = Soak(a, topology, instance, data)
    if a.kills:
        print(f"soak: {a.kills} kills, seed {a.seed}", flush=True)

    def on_signal(signum, frame):
        soak.interrupted = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    rc = None
    try:
        soak.run()
    finally:
        # a second Ctrl-C must not leave the run behind: ignore it while stopping
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        rc = soak.stop()
        soak.close()
    log = soak.log_path.read_text(errors="replace")
    checks: list[Check] = []
    figures: dict = {"instance": instance, "data_dir": str(data), "seed": a.seed}
    if soak.interrupted:
        checks.append(Check("soak: ran to the end", False, "interrupted (Ctrl-C)"))
    try:
        final = json.loads(soak.report_path.read_text())
    except (OSError, ValueError):
        final = {}
    checks += run_checks(soak, rc, log, final)
    groups = [
        ("flow", flow_checks, (soak, a.flow_bound)),
        ("conservation", conservation_checks, (soak, final)),
    ]
    if not a.no_db:
        groups.append(("database", database_checks, (soak,)))
    if a.kills:
        groups.append(("kills", kill_checks, (soak,)))
    for name, fn, fargs in groups:
        try:
            c, figures[name] = fn(*fargs)
        except Exception as exc:  # a check that cannot run is a failed check, not a traceback
            c = [Check(f"{name}: checks ran", False, type(exc).__name__, "", str(exc)[:200])]
        checks += c
    checks.append(
        Check(
            "leftovers: none (processes, server, segments)",
            not soak.leftovers and not shm_segments(instance),
            str(len(soak.leftovers)),
            "0",
            "; ".join(soak.leftovers)[:200],
        )
    )
    figures["rss_mb"] = soak.rss
    figures["run_exit"] = rc
    figures["warm_s"] = soak.warm_s
    figures["running_after_s"] = soak.running_at
    figures["ctrl_c_at_s"] = soak.ctrl_c_sent_at
    print_table(checks, figures, soak)
    failed = [c for c in checks if c.ok is False]
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"args": vars(a), "checks": [c.__dict__ for c in checks], "figures": figures},
                indent=2,
                default=str,
            )
        )
    print()
    if failed:
        print(f"run log and data kept: {data}")
        for c in failed:
            print(
                f"soak: FAIL {c.name}: {c.value} (want {c.bound or 'ok'}) {c.detail}".rstrip(),
                file=sys.stderr,
            )
        return 1
    if made and not a.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    else:
        print(f"data kept: {data}")
    n = sum(1 for c in checks if c.ok)
    print(f"soak: every check passed ({n}; {len(checks) - n} info rows)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the run was ended and cleaned up in main's finally
        print(f"soak: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
