"""Compile numba kernels ahead of the stages, in parallel, into numba's on-disk cache.

Stage processes start with the spawn method and would otherwise all compile the same
kernels at the same moment (seconds to minutes each, on every core). ``bot4 warm`` (and
``bot4 run`` itself, for a topology whose kernels are not cached yet: see
:func:`ensure_warm`) runs each kernel once on small inputs of every record type it handles.

Work is cut into **jobs**, one per distinct stage (kind and ring types) of the topology,
one for the ring operations its stage loops call, and a few for what only tools use (the
replay engine, the LOBSTER readers, the latency histogram): :func:`jobs_for` (a topology)
and ``bot4.warm.all_jobs`` (every kind and record type, for CI and tools). A stage kind that
is slow to compile and has several inputs (the venue) is split into one job per input,
after a job running its ``setup`` alone, so its two kernel trees compile on two cores.

:func:`run_jobs` runs them longest first on ``jobs`` spawned worker processes (default:
the CPUs this process may use). numba's compiler holds a process-wide lock, so threads
would not help; processes share the cache through files, and concurrent writers of one
function's index are serialised by ``bot4.nbcache`` (numba's own update of the index is
not safe across processes). Each worker says on a queue which kernel it is compiling, and
the parent draws a progress line on stderr (what compiles, how many jobs are left,
elapsed time), redrawn in place on a terminal and as plain lines otherwise.

A job that completed writes a **manifest** under the cache root,
``.warm/<job id>.json``: the key directory of every kernel module its process looked a
kernel up in (this job's and, conservatively, earlier jobs' of the same worker).
The job is warm while every one of those still exists under its current key
(``bot4.nbcache``: source, imports, toolchain, CPU), so :func:`ensure_warm` knows without
starting a process that nothing needs compiling (a few ms), and an edit re-runs exactly
the jobs whose kernels' sources changed. The job id covers the job and this package's
sources.

Modules: :mod:`~bot4.pipeline.warm.catalogue` (a topology's jobs: :func:`jobs_for`),
:mod:`~bot4.pipeline.warm.recipes` (what each job runs),
:mod:`~bot4.pipeline.warm.manifest` (which jobs are warm),
:mod:`~bot4.pipeline.warm.runner` (worker processes, scheduling, the progress line); this
module: :func:`ensure_warm`, which the supervisor calls before any stage starts. The
``bot4 warm`` command, every kernel of the tools too (``all_jobs``) and the replay
engine's recipes are the tools' :mod:`bot4.warm`.
"""

from __future__ import annotations

import sys

from bot4.pipeline.warm.catalogue import PARTS, RING_TYPES, Job, jobs_for
from bot4.pipeline.warm.manifest import MANIFEST_DIR, cold_jobs, is_warm
from bot4.pipeline.warm.runner import Progress, WarmReport, default_jobs, run_jobs

__all__ = [
    "MANIFEST_DIR",
    "PARTS",
    "RING_TYPES",
    "Job",
    "Progress",
    "WarmReport",
    "cold_jobs",
    "default_jobs",
    "ensure_warm",
    "is_warm",
    "jobs_for",
    "run_jobs",
]


def ensure_warm(
    topology, *, workers: int | None = None, stream=None, live=None, say=None
) -> WarmReport | None:
    """Before a pipeline's stages start: compile what ``topology`` runs and is not cached
    yet, on ``workers`` processes, with the progress display; None when everything is
    warm (the manifests say so; no process is started)."""
    cold = cold_jobs(jobs_for(topology))
    if not cold:
        return None
    from bot4 import nbcache

    say = say or (lambda msg: print(f"bot4: {msg}", file=stream or sys.stderr, flush=True))
    n = min(workers or default_jobs(), len(cold))
    say(
        f"numba kernels of {len(cold)} parts of this topology not known to be cached "
        f"({', '.join(j.name for j in cold)}): compiling them on {n} processes before the "
        f"stages start (cache {nbcache.cache_root()}; `bot4 warm` does this ahead of time)"
    )
    progress = Progress(len(cold), stream=stream, live=live, say=lambda m: say(f"warm: {m}"))
    rep = run_jobs(cold, n, progress)
    say(
        f"warm: {len(rep.done)} parts ready in {rep.seconds:.1f} s "
        f"({rep.compiled} kernels compiled, the rest loaded from the cache)"
    )
    for name, why in rep.failed.items():
        say(f"warm: {name}: {why} (the stage compiles what it needs itself)")
    return rep
