"""Warm job manifests: ``<cache root>/.warm/<job id>.json`` lists the key directory of every
kernel module a completed job's worker looked a kernel up in; the job is warm while each
is still there under the module's current key (:mod:`bot4.nbcache`).
"""

from __future__ import annotations

import os

from bot4.pipeline.warm.catalogue import Job

MANIFEST_DIR = ".warm"


def _manifest_path(job: Job):
    from bot4 import nbcache

    return nbcache.cache_root() / MANIFEST_DIR / f"{job.ident}.json"


def _write_manifest(job: Job) -> None:
    """Record the key directories this process has looked kernels up in (best effort)."""
    import json
    from pathlib import Path

    from bot4 import nbcache

    dirs = {Path(d).name.rpartition("-")[0]: d for d in sorted(nbcache.used_paths)}
    path = _manifest_path(job)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"job": job.name, "modules": dirs}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def is_warm(job: Job) -> bool:
    """Whether ``job`` completed under the current keys of every kernel module it loaded
    (their directories still there): nothing of it would compile now."""
    import json
    from pathlib import Path

    from bot4 import nbcache

    if job.fn == "_job_replay_width":
        return False  # its keys are another width's (see the job)
    try:
        mods = json.loads(_manifest_path(job).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for module, path in mods.items():
        if nbcache.module_file(module) is None:
            return False
        p = Path(path)
        if p.name != nbcache.key_of(module).dirname or not (p / nbcache.INFO_NAME).is_file():
            return False
    return True


def cold_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs that are not warm, their ``after`` limited to jobs still to run."""
    cold = [j for j in jobs if not is_warm(j)]
    names = {j.name for j in cold}
    return [
        Job(j.name, j.fn, j.args, j.weight, tuple(a for a in j.after if a in names)) for j in cold
    ]
