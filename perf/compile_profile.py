"""Where a cold ``bot4 warm`` spends its compile time (issue 17): per numba dispatcher.

Runs the named warm jobs of the default topology (``bot4.warm.jobs_for``; a job is picked
when its name contains one of the words given, e.g. ``"stage orders"``) one after another
in this process, with ``NUMBA_CACHE_DIR`` an empty temporary directory unless it is set,
and listens to numba's ``numba:compile`` events. Prints each job's seconds, then per
dispatcher, in CPU seconds of this process: exclusive seconds (its own typing, lowering
and LLVM work; the compiles of the callees it triggered taken out), the part of those
spent holding numba's LLVM lock (``numba:llvm_lock`` events: LLVM's optimisation passes,
module linking and machine code; the rest is numba's Python frontend: type inference,
``inline='always'`` inlining, lowering), inclusive seconds, and how many signatures it
was compiled for. Then every bot4 function compiled for more than one signature, and each
argument typed as a *literal* (``Literal[int](0)``: a bare constant argument, compiled
once per distinct value, docs/compile.md).

Jobs run in order in one process, so a later job loads what an earlier one compiled (as
``bot4 warm``'s ``after`` does): profile ``"stage orders"`` then ``"hot path"`` to see
what the hot cycle adds. Exit 1 with ``--no-literals`` if any bot4 function was compiled
with a literal argument.

    .venv/bin/python perf/compile_profile.py "stage orders" "hot path"
    .venv/bin/python perf/compile_profile.py --no-literals "stage"
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jobs", nargs="+", help="words a job's name contains (default topology)")
    ap.add_argument("--top", type=int, default=30, help="dispatchers to list")
    ap.add_argument("--no-literals", action="store_true", help="exit 1 on a literal argument")
    args = ap.parse_args()
    tmp = None
    if not os.environ.get("NUMBA_CACHE_DIR"):
        tmp = tempfile.TemporaryDirectory(prefix="compile_profile.")
        os.environ["NUMBA_CACHE_DIR"] = tmp.name
    from numba.core import event  # after NUMBA_CACHE_DIR: numba reads it on import

    stack: list[list] = []  # [dispatcher, cpu at start, callees' cpu, llvm cpu]
    excl: dict[str, float] = collections.defaultdict(float)
    llvm: dict[str, float] = collections.defaultdict(float)
    lock: list[float] = []
    incl: dict[str, float] = collections.defaultdict(float)
    nsig: collections.Counter = collections.Counter()

    class Listener(event.Listener):
        def on_start(self, ev) -> None:
            stack.append([ev.data["dispatcher"], time.process_time(), 0.0, 0.0])

        def on_end(self, ev) -> None:
            disp, t0, inner, in_llvm = stack.pop()
            dt = time.process_time() - t0
            name = f"{disp.py_func.__module__}.{disp.py_func.__qualname__}"
            excl[name] += dt - inner
            llvm[name] += in_llvm
            incl[name] += dt
            nsig[name] += 1
            if stack:
                stack[-1][2] += dt

    class LlvmListener(event.Listener):
        """numba takes its LLVM lock around every llvmlite call (optimisation passes,
        linking, machine code): its CPU time is charged to the compile under way."""

        def on_start(self, ev) -> None:
            lock.append(time.process_time())

        def on_end(self, ev) -> None:
            t0 = lock.pop()
            if stack and not lock:
                stack[-1][3] += time.process_time() - t0

    event.register("numba:compile", Listener())
    event.register("numba:llvm_lock", LlvmListener())
    from numba.core.dispatcher import Dispatcher

    import bot4.warm as W
    from bot4.pipeline.topology import load_topology
    from bot4.pipeline.warm.runner import recipe

    print(f"cache {os.environ['NUMBA_CACHE_DIR']}")
    jobs = W.jobs_for(load_topology(None))
    t_all = time.perf_counter()
    for word in args.jobs:
        for job in jobs:
            if word in job.name:
                t0 = time.perf_counter()
                recipe(job.fn)(*job.args)
                print(f"job {job.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    print(
        f"all: {time.perf_counter() - t_all:.1f} s, {sum(nsig.values())} compilations, "
        f"compile CPU {sum(excl.values()):.1f} s of which LLVM {sum(llvm.values()):.1f} s "
        f"(NUMBA_OPT={os.environ.get('NUMBA_OPT', '3')})"
    )
    print(f"{'excl s':>8}{'llvm s':>8}{'incl s':>8}{'sigs':>6}  dispatcher (CPU seconds)")
    for name, sec in sorted(excl.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{sec:8.2f}{llvm[name]:8.2f}{incl[name]:8.2f}{nsig[name]:6d}  {name}")
    literal = 0
    seen = set()
    for d in gc.get_objects():
        if not isinstance(d, Dispatcher) or not (d.py_func.__module__ or "").startswith("bot4"):
            continue
        name = f"{d.py_func.__module__}.{d.py_func.__qualname__}"
        if name in seen or len(d.signatures) < 2:
            continue
        seen.add(name)
        print(f"{name}: {len(d.signatures)} signatures")
        for sig in d.signatures:
            lits = [f"arg {k}: {t}" for k, t in enumerate(sig) if "Literal" in str(t)]
            literal += bool(lits)
            print(f"    {'; '.join(lits) if lits else '(no literal argument)'}")
    if tmp is not None:
        tmp.cleanup()
    return 1 if args.no_literals and literal else 0


if __name__ == "__main__":
    sys.exit(main())
