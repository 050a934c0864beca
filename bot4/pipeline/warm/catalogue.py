"""The warm job catalogue: which kernels a topology's stages run (:func:`jobs_for`), cut
into :class:`Job` s with their expected cold seconds and the jobs they wait for (the
package's docstring: :mod:`bot4.pipeline.warm`; every kernel bot4 has, tools included:
``bot4.warm.all_jobs``).
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
    "database breaker": ("_job_db_breaker", (), 0.5),
    "market data readers": ("_job_marketdata", (), 15.0),
}


@dataclass(frozen=True)
class Job:
    """One unit of warm work, run in a worker process.

    ``name`` is what the progress line shows; ``fn`` a function of
    :mod:`bot4.pipeline.warm.recipes` (or ``module:function`` of a tool's:
    :func:`~bot4.pipeline.warm.runner.recipe`) called with ``args``; ``weight`` the expected cold seconds (longest first); ``after``: names of jobs
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
    """The warm packages' sources, this one's and the tools' ``bot4/warm`` (as the one
    ``bot4/warm.py`` was before it split), read as files: an edit to any recipe, the
    catalogue or the runner re-runs every job."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    h = hashlib.sha256()
    for d in (here, here.parent.parent / "warm"):
        for path in sorted(d.glob("*.py")):
            h.update(path.read_bytes())
    return h.hexdigest()


def stage_jobs(
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
            jobs += stage_jobs(*key)
        for part in cls.warm_parts(s.params):
            if part not in seen:
                seen.add(part)
                jobs.append(Job(part, *PARTS[part]))
    for g in topology.groups:
        staged = [j for j in jobs if j.fn == "_job_stage"]
        kinds = [topology.stage(m).kind for m in g.members]
        wiring = _hot_wiring(topology, g)
        if wiring is not None and ("hot path", wiring) not in seen:
            seen.add(("hot path", wiring))
            after = tuple(j.name for j in staged if j.args[0] in kinds)
            jobs.append(hot_path_job(wiring, after))
    types = sorted({r.type for r in topology.rings})
    if types:  # the stage loops' operations: on the header words, whatever the type
        jobs.append(Job("ring operations", "_job_ring_loop", (), 2.0))
    if "BOOK_LEVEL" in types:
        jobs.append(Job("depth kernels", "_job_depth", (), 1.0))
    return longest_first(jobs)


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


def hot_path_job(wiring: tuple[bool, bool], after: tuple[str, ...] = ()) -> Job:
    """The hot path group cycle's job for one wiring (the default: no args, its name
    unchanged; a depth wiring compiles its own specialisation of ``hot_cycle``)."""
    if not any(wiring):
        return Job("hot path group cycle", "_job_hot_path", (), 45.0, after=after)
    which = ", ".join(m for m, on in zip(("signals", "risk"), wiring, strict=True) if on)
    return Job(f"hot path group cycle (depth: {which})", "_job_hot_path", wiring, 45.0, after)


def longest_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: -j.weight)


def _priority(job: Job, jobs: list[Job]) -> float:
    """Expected seconds from ``job``'s start to the end of the longest chain of jobs
    waiting for it (critical path first: the venue's setup before a longer lone job)."""
    after = [_priority(j, jobs) for j in jobs if job.name in j.after]
    return job.weight + max(after, default=0.0)
