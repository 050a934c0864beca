"""The warm job catalogue: which kernels a topology's stages run (:func:`jobs_for`) or
bot4 has at all (:func:`all_jobs`), cut into :class:`Job` s with their expected cold
seconds and the jobs they wait for (the package's docstring: :mod:`bot4.warm`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from bot4.records import RECORD_TYPES

#: record types that travel on rings (TXN_DECISION lives only in the 2PC decision log)
RING_TYPES = {k: v for k, v in RECORD_TYPES.items() if k != "TXN_DECISION"}

#: The stage kinds say what their jobs are (``bot4.stages.base.Stage``'s warm
#: capabilities): ``warm_seconds``, the rough cold-compile seconds for longest-first
#: scheduling (perf/bench_warm.py on this 2-core VM, lightly loaded: orders 58 s, hot path
#: cycle 43 s, risk 27 s, the venue 51 s in its three jobs since its kernels compile once
#: per signature: docs/compile.md); ``warm_split_inputs``, one job per input after one
#: running the setup alone (the venue: its kernel trees per input are independent and
#: about as long as a whole other stage); ``warm_as``, ``warm_params``, ``warm_parts``,
#: ``warm_shapes``. The jobs a stage may ask for besides its own, by name:
PARTS = {
    "operator log": ("_job_operator_log", (), 1.0),
    "market data readers": ("_job_marketdata", (), 15.0),
}


@dataclass(frozen=True)
class Job:
    """One unit of warm work, run in a worker process.

    ``name`` is what the progress line shows; ``fn`` a function of :mod:`bot4.warm.recipes`
    called with ``args``; ``weight`` the expected cold seconds (longest first); ``after``: names of jobs
    that must be done before this one starts (their kernels then load from the cache).
    """

    name: str
    fn: str
    args: tuple = ()
    weight: float = 1.0
    after: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ident(self) -> str:
        """Stable id of what this job compiles (its manifest's file name)."""
        import hashlib

        h = hashlib.sha256(repr((self.fn, self.args, _own_digest())).encode())
        return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _own_digest() -> str:
    """The warm package's sources (as the one ``bot4/warm.py`` was before it split): an
    edit to any recipe, the catalogue or the runner re-runs every job."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def _stage_jobs(
    kind: str, ins: tuple[str, ...], outs: tuple[str, ...], params: tuple = ()
) -> list[Job]:
    """The jobs of one stage kind with these input and output record types and these
    kernel-selecting ``params`` (``(key, value)`` pairs: ``Stage.warm_params``)."""
    from bot4.stages import KINDS

    label = kind
    if ins or outs:
        label += f" ({','.join(t.lower() for t in ins) or '-'} -> "
        label += f"{','.join(t.lower() for t in outs) or '-'})"
    w = KINDS[kind].warm_seconds
    if not KINDS[kind].warm_split_inputs or len(ins) < 2:
        return [Job(f"stage {label}", "_job_stage", (kind, ins, outs, None, params), w)]
    first = Job(f"stage {kind} setup", "_job_stage", (kind, ins, outs, (), params), w * 0.05)
    return [first] + [
        Job(
            f"stage {kind} input {k} ({t.lower()})",
            "_job_stage",
            (kind, ins, outs, (k,), params),
            w * 0.5,
            after=(first.name,),
        )
        for k, t in enumerate(ins)
    ]


def jobs_for(topology) -> list[Job]:
    """What the stage processes of ``topology`` run: each distinct stage (kind, input and
    output record types), the ring operations its stage loops call, the depth kernels if a
    ring carries BOOK_LEVEL records, the LOBSTER/file readers if a market data stage reads
    recorded data. Longest first."""
    from bot4.stages import KINDS

    jobs: list[Job] = []
    seen = set()
    for s in topology.stages:
        cls = KINDS[s.kind]
        ins = tuple(r.type for r in topology.inputs_of(s.name))
        outs = tuple(r.type for r in topology.outputs_of(s.name))
        if cls.warm_as:  # its kernels are another kind's (persistence: count-sink's)
            key = (cls.warm_as, ins, (), KINDS[cls.warm_as].warm_params(s.params))
        else:
            key = (s.kind, ins, outs, cls.warm_params(s.params))
        if key not in seen:
            seen.add(key)
            jobs += _stage_jobs(*key)
        for part in cls.warm_parts(s.params):
            if part not in seen:
                seen.add(part)
                jobs.append(Job(part, *PARTS[part]))
    for g in topology.groups:
        stage_jobs = [j for j in jobs if j.fn == "_job_stage"]
        kinds = [topology.stage(m).kind for m in g.members]
        wiring = _hot_wiring(topology, g)
        if wiring is not None and ("hot path", wiring) not in seen:
            seen.add(("hot path", wiring))
            after = tuple(j.name for j in stage_jobs if j.args[0] in kinds)
            jobs.append(_hot_path_job(wiring, after))
    types = sorted({r.type for r in topology.rings})
    if types:  # the stage loops' operations: on the header words, whatever the type
        jobs.append(Job("ring operations", "_job_ring_loop", (), 2.0))
    if "BOOK_LEVEL" in types:
        jobs.append(Job("depth kernels", "_job_depth", (), 1.0))
    return _longest_first(jobs)


def all_jobs() -> list[Job]:
    """Every kernel bot4 has: every stage kind (relay and count-sink for every record
    type), every ring type's ring operations, the depth and histogram kernels, the
    market data readers, the hot path group's cycle, the default topology's jobs, then
    a short replay through the default topology."""
    from bot4.stages import KINDS
    from bot4.stages.hotpath import HOT_KINDS

    jobs: list[Job] = []
    for kind, cls in KINDS.items():
        if cls.warm_as:
            continue  # another kind's kernels (persistence: count-sink's plus a journal file)
        for ins, outs in cls.warm_shapes(tuple(RING_TYPES)):
            jobs += _stage_jobs(kind, ins, outs, cls.warm_params({}))
    jobs += [
        Job(f"ring operations ({len(RING_TYPES)} types)", "_job_rings", tuple(RING_TYPES), 9.0),
        Job("market data readers", "_job_marketdata", (), 15.0),
        Job("depth kernels", "_job_depth", (), 1.0),
        Job("latency histogram", "_job_histogram", (), 0.5),
        Job("operator log", "_job_operator_log", (), 1.0),
    ]
    after = tuple(j.name for j in jobs if j.fn == "_job_stage" and j.args[0] in HOT_KINDS)
    jobs.append(_hot_path_job((False, False), after))
    # and the depth wiring the system tests run (book_level into signals); a topology
    # with risk reading depth compiles its own specialisation when it is first warmed
    jobs.append(_hot_path_job((True, False), after))
    # and the default topology's own jobs, so that its first `bot4 run` finds them warm
    from bot4.pipeline.topology import load_topology

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
    jobs.append(Job("replay engine (other SIMD width)", "_job_replay_width", (), 60.0))
    jobs = _longest_first(jobs)
    # the replay runs the default topology's stages in-process: after they are cached
    jobs.append(Job("replay engine", "_job_replay", (), 2.0, after=tuple(j.name for j in jobs)))
    return jobs


def _hot_wiring(topology, group) -> tuple[bool, bool] | None:
    """The hot path cycle's wiring for a group (``bot4.stages.hotpath.HotPath.of``):
    (signals reads depth, risk reads depth), None where the group's members do not run
    the compiled cycle (not signals, risk, orders in topology order, another shape, a
    signals stage routed through the model registry)."""
    from bot4.stages.hotpath import BASE_INPUTS, HOT_KINDS, HOT_SHAPES

    order = topology.order()
    names = sorted(group.members, key=order.index)
    if [topology.stage(m).kind for m in names] != list(HOT_KINDS):
        return None
    for name, shapes, n_in in zip(names, HOT_SHAPES, BASE_INPUTS, strict=True):
        ins, outs = topology.inputs_of(name), topology.outputs_of(name)
        if (len(ins), len(outs)) not in shapes:
            return None
        if any(r.type != "BOOK_LEVEL" for r in ins[n_in:]):
            return None
    if topology.stage(names[0]).params.get("model_slot"):
        return None
    return (
        len(topology.inputs_of(names[0])) > BASE_INPUTS[0],
        len(topology.inputs_of(names[1])) > BASE_INPUTS[1],
    )


def _hot_path_job(wiring: tuple[bool, bool], after: tuple[str, ...] = ()) -> Job:
    """The hot path group cycle's job for one wiring (the default: no args, its name
    unchanged; a depth wiring compiles its own specialisation of ``hot_cycle``)."""
    if not any(wiring):
        return Job("hot path group cycle", "_job_hot_path", (), 45.0, after=after)
    which = ", ".join(m for m, on in zip(("signals", "risk"), wiring, strict=True) if on)
    return Job(f"hot path group cycle (depth: {which})", "_job_hot_path", wiring, 45.0, after)


def _longest_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: -j.weight)


def _priority(job: Job, jobs: list[Job]) -> float:
    """Expected seconds from ``job``'s start to the end of the longest chain of jobs
    waiting for it (critical path first: the venue's setup before a longer lone job)."""
    after = [_priority(j, jobs) for j in jobs if job.name in j.after]
    return job.weight + max(after, default=0.0)
