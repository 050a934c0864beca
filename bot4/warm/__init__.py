"""``bot4 warm``: compile numba kernels ahead of the stages, in parallel, into numba's
on-disk cache (the machinery, and the warm-up ``bot4 run`` does itself, are
:mod:`bot4.pipeline.warm`'s: jobs, recipes, manifests, worker processes).

This package adds what only the tools need: :func:`all_jobs` (every kernel bot4 has:
every stage kind and record type, the tools' kernels and the replay engine, for CI and
``bot4 warm --all``), the replay engine's recipes (:mod:`bot4.warm.recipes`),
:func:`warm_command` (the command) and :func:`warm` (every job in this process).
"""

from __future__ import annotations

import sys

from bot4.pipeline import warm as _pipeline_warm
from bot4.pipeline.warm import *  # noqa: F403 - this facade offers the pipeline's warm too
from bot4.pipeline.warm import (
    RING_TYPES,
    Job,
    Progress,
    cold_jobs,
    default_jobs,
    jobs_for,
    run_jobs,
)
from bot4.pipeline.warm.catalogue import hot_path_job, longest_first, stage_jobs
from bot4.pipeline.warm.runner import recipe

__all__ = [*_pipeline_warm.__all__, "all_jobs", "warm", "warm_command"]


def all_jobs() -> list[Job]:
    """Every kernel bot4 has: every stage kind (relay and count-sink for every record
    type), every ring type's ring operations, the depth and histogram kernels, the
    market data readers, the hot path group's cycle, the default topology's jobs, then
    a short replay through the default topology."""
    from bot4.pipeline.topology import load_topology
    from bot4.stages import KINDS
    from bot4.stages.hotpath import HOT_KINDS

    jobs: list[Job] = []
    for kind, cls in KINDS.items():
        if cls.warm_as:
            continue  # another kind's kernels (persistence: count-sink's plus a journal file)
        for ins, outs in cls.warm_shapes(tuple(RING_TYPES)):
            jobs += stage_jobs(kind, ins, outs, cls.warm_params({}))
    jobs += [
        Job(f"ring operations ({len(RING_TYPES)} types)", "_job_rings", tuple(RING_TYPES), 9.0),
        Job("market data readers", "_job_marketdata", (), 15.0),
        Job("depth kernels", "_job_depth", (), 1.0),
        Job("latency histogram", "_job_histogram", (), 0.5),
        Job("operator log", "_job_operator_log", (), 1.0),
        Job("database breaker", "_job_db_breaker", (), 0.5),
    ]
    after = tuple(j.name for j in jobs if j.fn == "_job_stage" and j.args[0] in HOT_KINDS)
    jobs.append(hot_path_job((False, False), after))
    # and the depth wiring the system tests run (book_level into signals); a topology
    # with risk reading depth compiles its own specialisation when it is first warmed
    jobs.append(hot_path_job((True, False), after))
    # and the default topology's own jobs, so that its first `bot4 run` finds them warm
    have = {j.ident for j in jobs}
    names = {j.name for j in jobs}
    for j in jobs_for(load_topology(None)):
        if j.ident not in have:
            name = j.name if j.name not in names else f"{j.name} (default topology)"
            after = tuple(a if a not in names else f"{a} (default topology)" for a in j.after)
            jobs.append(Job(name, j.fn, j.args, j.weight, after))
    # the replay's kernels at the other SIMD width a host offers (512-bit vectors where it
    # has AVX-512, else 256): numba's cache keys them apart, and the suite's SIMD-width
    # test replays at both (tests/system/test_replay_simd.py). Independent of the jobs
    # above (its own cache entries), so it starts with them
    jobs.append(
        Job("replay engine (other SIMD width)", "bot4.warm.recipes:_job_replay_width", (), 60.0)
    )
    jobs = longest_first(jobs)
    # the replay runs the default topology's stages in-process: after they are cached
    jobs.append(
        Job(
            "replay engine",
            "bot4.warm.recipes:_job_replay",
            (),
            2.0,
            after=tuple(j.name for j in jobs),
        )
    )
    return jobs


def warm() -> int:
    """Compile (or load from cache) every kernel in this process, one job after another;
    returns how many entry points ran (for tools that want a warm node, e.g. research)."""
    n = 0
    for j in all_jobs():
        n += recipe(j.fn)(*j.args)
    return n


def warm_command(topology, *, workers: int | None = None, force: bool = False) -> int:
    """``bot4 warm``: ``topology``'s jobs (None: every job), those not warm unless
    ``force``, with the progress display on stderr; one summary line on stdout, one
    ``bot4: error:`` line per failed job (exit 1)."""
    from bot4 import nbcache

    jobs = all_jobs() if topology is None else jobs_for(topology)
    what = "every kernel" if topology is None else topology.source
    todo = jobs if force else cold_jobs(jobs)
    n = min(workers or default_jobs(), max(1, len(todo)))
    if todo:
        print(
            f"bot4: warm: {what}: {len(todo)} of {len(jobs)} jobs to run on {n} processes "
            f"(cache {nbcache.cache_root()})",
            file=sys.stderr,
            flush=True,
        )
    rep = run_jobs(todo, n, Progress(len(todo)))
    print(
        f"warmed {what}: {len(jobs) - len(todo)} jobs already warm, {len(rep.done)} run in "
        f"{rep.seconds:.1f} s ({rep.compiled} kernels compiled, the rest loaded; cache "
        f"{nbcache.cache_root()})"
    )
    for name, why in rep.failed.items():
        print(f"bot4: error: warm: {name}: {why}", file=sys.stderr)
    return 1 if rep.failed else 0
