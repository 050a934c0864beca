"""The same replay at two SIMD widths (``BOT4_SIMD``: numba compiled for the host's
default vectors and for 512-bit ones, or 256-bit where the host has no AVX-512), each in
its own process: byte-identical journals and report. Each width has its own numba cache
entries; ``bot4 warm --all`` compiles the replay's at both widths (the README's test
command runs it first), else a cold cache compiles every kernel once here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot4.simd import has_avx512

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

SCRIPT = """
import hashlib, sys
from pathlib import Path
from bot4.replay.latency import LatencyConfig
from bot4.replay.runner import replay
from bot4.replay.sources import SyntheticSource

out = Path(sys.argv[1])
o = replay(SyntheticSource(30_000, instruments=3, seed=5), out, progress=None,
           latency=LatencyConfig.from_specs(["order=quantiles:0=20us,0.5=50us,1=300us"]))
h = hashlib.sha256()
for p in sorted((out / "journal").iterdir()):
    h.update(p.name.encode()); h.update(p.read_bytes())
h.update((out / "report.json").read_bytes())
print(h.hexdigest(), o.report.doc["summary"]["fills"], o.report.doc["summary"]["orders"])
"""


def test_replay_is_byte_identical_at_two_simd_widths(tmp_path):
    widths = ("auto", "512") if has_avx512() else ("auto", "256")
    procs = []
    for w in widths:
        env = dict(os.environ, BOT4_SIMD=w)
        env.pop("NUMBA_CPU_FEATURES", None)
        env.pop("NUMBA_CPU_NAME", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, str(tmp_path / w)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=850)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.split())
    (h1, fills1, orders1), (h2, _f2, _o2) = outs
    assert int(fills1) > 0 and int(orders1) > 0
    assert h1 == h2, f"{widths[0]} and {widths[1]} replays differ"
