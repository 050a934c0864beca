"""A venue's ``orders_stage_index`` past the topology's stages is refused at load (issue 12):
it used to pass every check and crash-loop the venue at each start (the control block has
one block per stage)."""

from __future__ import annotations

import subprocess
import uuid
from importlib import resources

import pytest

from bot4.pipeline.topology import TopologyError, load_topology
from bot4.shm.segment import instance_segments
from tests.system.pipeline_util import BOT4

DEFAULT = resources.files("bot4.config").joinpath("default.toml").read_text()
VENUE = "params = { latency_ns = 50000 }"


def topology(tmp_path, index: int):
    assert DEFAULT.count(VENUE) == 1
    p = tmp_path / "t.toml"
    p.write_text(
        DEFAULT.replace(VENUE, f"params = {{ latency_ns = 50000, orders_stage_index = {index} }}")
    )
    return p


def test_an_orders_stage_index_past_the_stages_is_refused_at_load(tmp_path):
    n = len(load_topology(None).stages)
    with pytest.raises(TopologyError, match=rf"orders_stage_index: {n} is past the last stage"):
        load_topology(topology(tmp_path, n))
    assert (
        load_topology(topology(tmp_path, n - 1)).stage("venue").params["orders_stage_index"]
        == n - 1
    )


def test_shm_create_refuses_it_in_one_line_and_creates_nothing(tmp_path):
    instance = f"v{uuid.uuid4().hex[:10]}"
    r = subprocess.run(
        [*BOT4, "shm", "create", "--topology", str(topology(tmp_path, 99)), "--instance", instance],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "orders_stage_index: 99 is past the last stage" in lines[0], r.stderr
    assert not instance_segments(instance)
