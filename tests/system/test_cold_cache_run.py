"""A first ``bot4 run`` on an empty numba cache compiles the topology's kernels once, in
parallel worker processes with a progress line, before any stage starts (no stage then
compiles); ``bot4 warm`` afterwards knows it is all warm, and a job whose kernel module
key changed is cold again. ~25 s on the loaded 2-core VM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bot4 import warm
from bot4.pipeline.topology import load_topology

CHAIN = """
instance = "{instance}"

[[stage]]
name = "src"
kind = "test-source"
core = 0
params = {{ count = 0, rate = 1000 }}

[[stage]]
name = "a"
kind = "relay"
core = 1

[[stage]]
name = "sink"
kind = "count-sink"
core = 1

[[ring]]
name = "r1"
from = "src"
to = "a"
type = "market_data"
capacity = 1024

[[ring]]
name = "r2"
from = "a"
to = "sink"
type = "market_data"
capacity = 1024
"""


@pytest.mark.timeout(600)
def test_first_run_on_an_empty_cache_compiles_once_before_the_stages_start(tmp_path):
    cache = tmp_path / "cache"
    topo = tmp_path / "chain.toml"
    instance = f"coldrun{os.getpid()}"
    topo.write_text(CHAIN.format(instance=instance))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), BOT4_DATA_DIR=str(tmp_path / "data"))
    bot4 = [sys.executable, "-m", "bot4.cli"]
    jobs = warm.jobs_for(load_topology(topo))

    run = subprocess.run(
        [*bot4, "run", str(topo), "--duration", "1", "--no-db", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr
    err = run.stderr.splitlines()
    cold = [ln for ln in err if "not known to be cached" in ln]
    assert len(cold) == 1 and f"{len(jobs)} parts" in cold[0]
    progress = [ln for ln in err if "warm: [" in ln]  # plain lines: stderr is not a terminal
    assert len(progress) == len(jobs) and f"[{len(jobs)}/{len(jobs)} done, 0 left" in progress[-1]
    first_stage_line = next(i for i, ln in enumerate(err) if "running:" in ln)
    assert max(err.index(ln) for ln in progress) < first_stage_line
    assert not [ln for ln in err if "numba cache cold" in ln]  # no stage compiled
    assert "Traceback" not in run.stderr and "\r" not in run.stderr
    assert not [p for p in os.listdir("/dev/shm") if instance in p]

    again = subprocess.run(
        [*bot4, "warm", "--topology", str(topo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(jobs)} jobs already warm, 0 run" in again.stdout

    code = textwrap.dedent(
        f"""
        import json
        from bot4 import warm
        from bot4.pipeline.topology import load_topology
        from bot4.pipeline.warm import manifest
        jobs = warm.jobs_for(load_topology({str(topo)!r}))
        rings = [j for j in jobs if j.fn == "_job_ring_loop"][0]
        p = manifest._manifest_path(rings)
        m = json.loads(p.read_text())
        m["modules"]["bot4.shm.ring_ops"] += "0"  # as if ring_ops' key had changed
        p.write_text(json.dumps(m))
        print(json.dumps([j.name for j in warm.cold_jobs(jobs)]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [j.name for j in jobs if j.fn == "_job_ring_loop"]
