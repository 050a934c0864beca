"""Cold compile and start-up (issue 17): ``bot4 warm`` from an empty cache, before and
after the parallel per-topology warm, and a later ``bot4 run``'s start-up to its first tick.

Every measured process imports a fresh copy of this tree's ``bot4`` package (no
``__pycache__``: as a fresh clone, bytecode compiled on the way) through ``PYTHONPATH``,
with ``NUMBA_CACHE_DIR`` an empty directory, so nothing compiled earlier (the tree's
``__pycache__``, ``~/.cache/bot4/numba``) is reused. Runs, in one session:

* ``before``  — what ``bot4 warm`` did before issue 17: every kernel compiled one after
  another in one process: ``bot4.warm.warm()`` of the measured package (default,
  ``--before-warm current``: today's kernel set, jobs run in-process in order), or
  ``bot4/warm.py`` of git revision ``--before-warm REV`` dropped into the same copy (the
  one before the parallel warm, ``b5ebd9a~1``, no longer runs on trees after the issue-13
  layering commit: its risk recipe calls ``bot4.stages.risk.warm_kernels``, broken there);
* ``serial``  — the default topology's jobs on one worker (``bot4 warm -j 1``);
* ``after``   — ``bot4 warm`` (the default topology's jobs on every CPU);
* ``all``     — ``bot4 warm --all`` (every kernel, every CPU);
* ``compare`` — ``after`` of ``--rev`` and of ``--compare REV`` (default ``HEAD~1``: the
  previous commit), alternately, ``--repeat`` pairs, each from its own empty cache: the
  wall-time ratio of each pair (run back to back under the same load) and their median,
  and each job's seconds in its worker side by side: what a change to the kernels or to
  ``bot4/warm.py`` did to a fresh install's ``bot4 warm``;
* ``startup`` — with ``after``'s cache: ``bot4 run --no-db`` of the default topology,
  twice, each from its start to the first record on the ``ticks`` ring (read-only
  attachment, polled every ms); the run's log is checked for a stage that compiled;
* ``startup-compare`` — the same start-up of ``--rev`` and of ``--compare`` alternately,
  ``--repeat`` pairs, from one cache both warmed first (``--cache DIR``, default a new
  one under the work directory: a first ``bot4 warm`` from empty takes a minute), after
  one unmeasured run of each (bytecode written, stale warm manifests re-checked): each
  pair's ratio old/new and the median. ``--compare-env K=V`` sets a variable for the
  ``--compare`` side only (``--rev worktree --compare worktree --compare-env
  BOT4_ZYGOTE=0``: the zygote against spawned stages in one tree).

The package is ``git archive`` of ``--rev`` (default HEAD: others' uncommitted edits in
a shared working tree are not measured), or the working tree with ``--rev worktree``.
Each run's stderr is kept in ``<work>/<run>/stderr.txt`` (with ``--keep``).

Wall and CPU seconds (children's user+sys) are printed with the load average before and
after each run: the machine is shared, so compare CPU seconds when the load moved.

    .venv/bin/python perf/bench_warm.py                  # before, after, startup
    .venv/bin/python perf/bench_warm.py --runs after,startup --keep /tmp/bw
    .venv/bin/python perf/bench_warm.py --runs compare --rev worktree --compare HEAD
    .venv/bin/python perf/bench_warm.py --runs startup-compare --compare HEAD~1 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copy_tree(dst: Path, rev: str | None) -> Path:
    """A fresh copy of the bot4 package under ``dst`` (no bytecode): git revision ``rev``
    of this repository, or the working tree when ``rev`` is None."""
    if rev is None:
        shutil.copytree(
            ROOT / "bot4", dst / "bot4", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        return dst
    dst.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "bot4"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=tar, check=True)
    return dst


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _env(src: Path, cache: Path, data: Path) -> dict:
    return dict(
        os.environ,
        # each warm worker's compiles, one JSON line each (bot4/pipeline/warm/runner.py, _Trace):
        # read by _profile() (older trees ignore it)
        BOT4_WARM_PROFILE=str(cache.parent / "profile"),
        PYTHONPATH=str(src),
        NUMBA_CACHE_DIR=str(cache),
        BOT4_DATA_DIR=str(data),
        PYTHONDONTWRITEBYTECODE="",
        # `python -m bot4.cli` (and spawned workers) would put the current directory first
        # on sys.path: run from the repository, the working tree's bot4 was measured (and
        # its uncommitted edits made the startup run find jobs cold), not the copy
        PYTHONSAFEPATH="1",
    )


def _timed(argv: list[str], env: dict, what: str, timeout: float) -> dict:
    load0 = os.getloadavg()[0]
    cpu0, t0 = _cpu_children(), time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    wall, cpu = time.monotonic() - t0, _cpu_children() - cpu0
    Path(env["NUMBA_CACHE_DIR"]).parent.joinpath("stderr.txt").write_text(p.stderr)
    row = {
        "run": what,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "exit": p.returncode,
        "stdout": p.stdout.strip().splitlines()[-1:] if p.stdout.strip() else [],
    }
    if p.returncode:
        row["stderr"] = p.stderr.strip().splitlines()[-5:]
    print(json.dumps(row), flush=True)
    return row


def _job_seconds(stderr: str) -> dict[str, float]:
    """Each job's seconds in its worker, from ``bot4 warm``'s plain progress lines
    (``bot4: warm: [3/9 done, 6 left, 41 s] JOB: 22.0 s (compiling: ...)``)."""
    import re

    done = re.compile(r" left, \d+ s\] (.*): ([0-9.]+) s \(compiling: ")
    return {m[1]: float(m[2]) for m in map(done.search, stderr.splitlines()) if m}


def _profile(d: Path, top: int = 12) -> dict:
    """What ``BOT4_WARM_PROFILE`` recorded in ``d``: compile seconds (exclusive of callees'
    compiles, wall and CPU) in all, per job, the ``top`` kernels, and the compiles of one
    kernel and argument types done by more than one worker (work done twice)."""
    from collections import defaultdict

    rows = []
    for f in sorted(d.glob("worker-*.jsonl")):
        for line in f.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append({**json.loads(line), "worker": f.stem})
    if not rows:
        return {}
    per_job, per_kernel, who = defaultdict(float), defaultdict(float), defaultdict(set)
    for r in rows:
        per_job[r["job"]] += r["cpu_s"]
        per_kernel[r["kernel"]] += r["cpu_s"]
        who[(r["kernel"], r["args"])].add(r["worker"])
    twice = {k: r for k, r in who.items() if len(r) > 1}
    twice_s = sum(r["cpu_s"] for r in rows if (r["kernel"], r["args"]) in twice)
    return {
        "compiles": len(rows),
        "compile_cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
        "compile_wall_s": round(sum(r["wall_s"] for r in rows), 1),
        "per_job_cpu_s": {
            k: round(v, 1) for k, v in sorted(per_job.items(), key=lambda kv: -kv[1])
        },
        "top_kernels_cpu_s": {
            k: round(v, 2) for k, v in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top]
        },
        "compiled_in_two_workers": len(twice),
        "compiled_in_two_workers_cpu_s": round(twice_s, 1),
    }


def _compare(args, work: Path, j: list[str]) -> list[dict]:
    """``bot4 warm`` (the default topology, every CPU) of ``--rev`` and ``--compare``
    alternately from empty caches: rows, then the ratio of each back-to-back pair."""
    py = sys.executable
    revs = {"new": args.rev, "old": args.compare}
    rows, pairs = [], []
    for k in range(args.repeat):
        pair = {}
        for side in ("old", "new") if k % 2 == 0 else ("new", "old"):
            d = work / f"{side}{k}"
            shutil.rmtree(d, ignore_errors=True)
            rev = revs[side]
            src = _copy_tree(d / "src", None if rev == "worktree" else rev)
            env = _env(src, d / "cache", d / "data")
            row = _timed([py, "-m", "bot4.cli", "warm", *j], env, f"{side} {rev}", 1800)
            row["jobs"] = _job_seconds((d / "stderr.txt").read_text())
            print(json.dumps({"run": row["run"], "job_s": row["jobs"]}), flush=True)
            prof = _profile(d / "profile")
            if prof:
                print(json.dumps({"run": row["run"], "profile": prof}), flush=True)
            rows.append(row)
            pair[side] = row
        ratio = pair["old"]["wall_s"] / max(pair["new"]["wall_s"], 1e-9)
        cpu = pair["old"]["cpu_s"] / max(pair["new"]["cpu_s"], 1e-9)
        pairs.append(ratio)
        print(
            json.dumps({"pair": k, "speedup_wall": round(ratio, 2), "speedup_cpu": round(cpu, 2)})
        )
    pairs.sort()
    print(
        json.dumps(
            {
                "compare": f"{args.rev} vs {args.compare}",
                "pairs": len(pairs),
                "median_speedup_wall": round(pairs[len(pairs) // 2], 2),
                "min_speedup_wall": round(pairs[0], 2),
            }
        ),
        flush=True,
    )
    return rows


def _first_tick(env: dict, instance: str, ring: str, duration: float) -> dict:
    """``bot4 run`` of the default topology; seconds from its start to the first record
    on ``ring`` (and to the supervisor's ``running`` line)."""
    from bot4.shm import Segment, segment_name
    from bot4.shm import ring_layout as L

    argv = [sys.executable, "-m", "bot4.cli", "run", "--no-db", "--quiet"]
    argv += ["--instance", instance, "--duration", str(duration)]
    lines: list[tuple[float, str]] = []
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    p = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    def read() -> None:
        for line in p.stderr:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))

    th = threading.Thread(target=read, daemon=True)
    th.start()
    tick = None
    name = segment_name(instance, ring)
    seg = None
    try:
        while p.poll() is None and time.monotonic() - t0 < 600:
            if seg is None:
                try:
                    seg = Segment.attach(name, readonly=True, min_size=L.HEADER_BYTES)
                    import numpy as np

                    hdr = np.frombuffer(seg.buf, np.uint64, L.HEADER_WORDS)
                except Exception:
                    time.sleep(0.001)
                    continue
            if int(hdr[L.W_PRODUCER_POSITION]) > 0:
                tick = time.monotonic() - t0
                break
            time.sleep(0.001)
        p.wait(timeout=duration + 120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        if seg is not None:
            hdr = None
            with contextlib.suppress(BufferError):
                seg.close()
    th.join(5)
    running = next((t for t, ln in lines if " running: " in ln), None)
    row = {
        "run": "startup",
        "to_first_tick_s": None if tick is None else round(tick, 2),
        "to_running_line_s": None if running is None else round(running, 2),
        "exit": p.returncode,
        "load_before": round(load0, 2),
        "warm_before_spawn": [ln for _, ln in lines if "not known to be cached" in ln],
        "stages_that_compiled": [ln for _, ln in lines if "numba cache cold" in ln],
    }
    print(json.dumps(row), flush=True)
    return row


def _startup_compare(args, work: Path) -> list[dict]:
    """Start-up to the first tick of ``--rev`` and ``--compare`` alternately from one warm
    cache: rows, then each back-to-back pair's ratio old/new and their median."""
    import statistics

    py = sys.executable
    cache = Path(args.cache) if args.cache else work / "cache"
    sides = {}
    for side, rev in (("new", args.rev), ("old", args.compare)):
        d = work / side
        shutil.rmtree(d, ignore_errors=True)
        src = _copy_tree(d / "src", None if rev == "worktree" else rev)
        env = _env(src, cache / "x", d / "data")
        env["NUMBA_CACHE_DIR"] = str(cache)
        if side == "old":
            env.update(kv.split("=", 1) for kv in args.compare_env)
        (cache / "x").mkdir(parents=True, exist_ok=True)  # _timed keeps stderr beside it
        _timed([py, "-m", "bot4.cli", "warm"], env, f"warm {side} {rev}", 1800)
        _first_tick(env, f"bw{os.getpid()}{side}", "ticks", args.duration)  # unmeasured
        sides[side] = (rev, env)
    rows, ratios, seconds = [], [], {"old": [], "new": []}
    for k in range(args.repeat):
        pair = {}
        for side in ("old", "new") if k % 2 == 0 else ("new", "old"):
            rev, env = sides[side]
            row = _first_tick(env, f"bw{os.getpid()}{side}{k}", "ticks", args.duration)
            row["run"] = f"startup {side} {rev}"
            rows.append(row)
            # a run that warmed or compiled first (a cache shared with other sessions that
            # prune or rewrite it) measured that too: left out of the figures
            clean = not row["warm_before_spawn"] and not row["stages_that_compiled"]
            pair[side] = row["to_first_tick_s"] if clean else None
            if pair[side]:
                seconds[side].append(pair[side])
        if pair["old"] and pair["new"]:
            ratios.append(pair["old"] / pair["new"])
            print(json.dumps({"pair": k, "old_over_new": round(ratios[-1], 2)}), flush=True)
        else:
            print(json.dumps({"pair": k, "left_out": "a run warmed or compiled"}), flush=True)
    med = {s: statistics.median(v) if v else None for s, v in seconds.items()}
    print(
        json.dumps(
            {
                "startup_compare": f"{args.rev} vs {args.compare} {' '.join(args.compare_env)}",
                "pairs": len(ratios),
                "median_old_over_new": round(statistics.median(ratios), 2) if ratios else None,
                "median_old_s": med["old"],
                "median_new_s": med["new"],
            }
        ),
        flush=True,
    )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--runs",
        default="before,after,startup",
        help="before,serial,after,all,compare,startup,startup-compare",
    )
    ap.add_argument(
        "--compare",
        default="HEAD~1",
        help="compare: the git revision to measure --rev against (default HEAD~1)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="compare, startup-compare: pairs")
    ap.add_argument(
        "--compare-env",
        action="append",
        default=[],
        metavar="K=V",
        help="startup-compare: an environment variable for the --compare side only",
    )
    ap.add_argument("--cache", help="startup-compare: the numba cache (default: a new one)")
    ap.add_argument("--jobs", type=int, help="bot4 warm -j (default: its own)")
    ap.add_argument(
        "--rev",
        default="HEAD",
        help="git revision of bot4 to measure (default HEAD: a committed, consistent tree); "
        "'worktree' for the working tree as it is",
    )
    ap.add_argument(
        "--before-warm",
        default="current",
        help="'current' (bot4.warm.warm(): every job in one process, in order) or a git "
        "revision whose bot4/warm.py is the 'before' (b5ebd9a~1: before the parallel warm)",
    )
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one, removed)")
    ap.add_argument("--duration", type=float, default=2.0, help="startup: seconds each run lasts")
    args = ap.parse_args()
    runs = args.runs.split(",")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_warm."))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    j = ["-j", str(args.jobs)] if args.jobs else []
    rev = args.rev
    if rev != "worktree":
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True
        ).stdout.strip()
    print(json.dumps({"cpus": len(os.sched_getaffinity(0)), "rev": rev, "work": str(work)}))
    rows = []
    try:
        if ("compare" in runs or "startup-compare" in runs) and args.compare != "worktree":
            args.compare = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", args.compare],
                capture_output=True,
                text=True,
            ).stdout.strip()
        if "compare" in runs:
            rows += _compare(args, work / "compare", j)
        if "startup-compare" in runs:
            rows += _startup_compare(args, work / "startup-compare")
        for what in ("before", "serial", "after", "all"):
            if what not in runs and not (what == "after" and "startup" in runs):
                continue
            d = work / what
            shutil.rmtree(d, ignore_errors=True)
            src = _copy_tree(d / "src", None if args.rev == "worktree" else args.rev)
            env = _env(src, d / "cache", d / "data")
            if what == "before" and args.before_warm != "current":
                old = subprocess.run(
                    ["git", "-C", str(ROOT), "show", f"{args.before_warm}:bot4/warm.py"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                # bot4/warm/ (the package warm.py split into) would shadow the old module
                shutil.rmtree(src / "bot4" / "warm", ignore_errors=True)
                (src / "bot4" / "warm.py").write_text(old)
            if what == "before":
                argv = [py, "-c", "import bot4.warm as w; print(w.warm(), 'entry points')"]
            else:
                argv = [py, "-m", "bot4.cli", "warm", *j]
                argv += {"serial": ["-j", "1"], "all": ["--all"]}.get(what, [])
            rows.append(_timed(argv, env, what, timeout=1800))
            prof = _profile(d / "profile")
            if prof:
                print(json.dumps({"run": what, "profile": prof}), flush=True)
        if "startup" in runs:
            d = work / "after"
            env = _env(d / "src", d / "cache", d / "data")
            for k in range(2):
                rows.append(_first_tick(env, f"bw{os.getpid()}x{k}", "ticks", args.duration))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.get("exit") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
