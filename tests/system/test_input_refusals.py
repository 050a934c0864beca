"""Bad recorded input end to end: ``bot4 replay``, ``bot4 run``, ``bot4 shm create`` and
``bot4 stage`` as a user (or systemd) runs them. Bad rows are counted and said once; an
input that cannot be used is one ``bot4: error:`` line and a non-zero exit before any
segment exists; a file that breaks after that check stops the md stage once (exit 5), the
supervisor halts instead of restarting it. Each case takes seconds (--no-db)."""

from __future__ import annotations

import io
import subprocess

import pytest

from bot4.shm.segment import instance_segments
from tests.damage import CLEAN_CSV
from tests.system.pipeline_util import BOT4

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

TOPO = """
instance = "{instance}"

[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "file", path = "{path}" }}

[[stage]]
name = "sink"
kind = "count-sink"
core = 1

[[ring]]
name = "{ring}"
from = "md"
to = "sink"
type = "market_data"
capacity = 1024
"""


def bot4(*args, timeout=150):
    return subprocess.run(
        [*BOT4, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def one_error_line(p) -> str:
    """The process failed with exactly one ``bot4: error:`` line and no traceback."""
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("bot4: error: ")]
    assert len(errors) == 1, p.stderr
    return errors[0]


def unsorted_csv(tmp_path):
    lines = CLEAN_CSV.splitlines(keepends=True)
    lines[10], lines[20] = lines[20], lines[10]  # line 11 now later than line 12
    p = tmp_path / "unsorted.csv"
    p.write_bytes(b"".join(lines))
    return p


def test_replay_counts_damaged_rows_once_and_refuses_unsorted_input(tmp_path):
    damaged = tmp_path / "damaged.csv"
    lines = CLEAN_CSV.splitlines(keepends=True)
    lines[5] = b"1004,AA\xffPL,quote,bid,585.30,100\n"  # not UTF-8
    lines[9] = b"1008,AAPL,quote,bid,99999999999999999999999.1,100\n"  # beyond int64
    damaged.write_bytes(b"".join(lines))
    p = bot4("replay", damaged, "--out", tmp_path / "o", "--quiet")
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if "bad input:" in ln]
    assert len(warn) == 1 and "malformed_row 2 (lines [6, 10])" in warn[0], p.stderr
    assert "kept 38 of 40 rows" in warn[0]

    p = bot4("replay", unsorted_csv(tmp_path), "--out", tmp_path / "u", "--quiet")
    line = one_error_line(p)
    assert "timestamps not sorted: line 12 is earlier than line 11" in line
    assert not (tmp_path / "u").exists()


def test_run_and_shm_create_refuse_the_same_inputs_before_any_segment(instance, tmp_path):
    topo = tmp_path / "t.toml"
    for path, ring, expect in (
        (unsorted_csv(tmp_path), "ticks", "params.path: "),
        (tmp_path / "none.csv", "ticks", "no such file"),
        (tmp_path / "unsorted.csv", "operator", "ring[0] (operator).name"),
    ):
        topo.write_text(TOPO.format(instance=instance, path=path, ring=ring))
        for args in (
            ("run", topo, "--no-db", "--duration", 3, "--quiet"),
            ("shm", "create", "--topology", topo),
        ):
            line = one_error_line(bot4(*args))
            assert expect in line, line
            assert not instance_segments(instance)


def test_md_stage_whose_file_breaks_after_the_check_stops_once(instance, tmp_path):
    """What is left after the check-time read: the file changes before the stage reads
    it. Under systemd (``bot4 stage``) the stage exits 5, which its unit does not restart;
    under the supervisor the pipeline halts naming the stage, with no restart."""
    from bot4.pipeline.supervisor import EXIT_HALTED, Supervisor
    from bot4.pipeline.topology import load_topology

    data = tmp_path / "ticks.csv"
    data.write_bytes(CLEAN_CSV)
    topo = tmp_path / "t.toml"
    topo.write_text(TOPO.format(instance=instance, path=data, ring="ticks"))
    made = bot4("shm", "create", "--topology", topo)
    assert made.returncode == 0, made.stderr
    try:
        data.write_bytes(b"ts_event_ns,sym\xfe\n1,2\n")  # after the check: the header broke
        p = bot4("stage", "md", "--topology", topo, timeout=120)
        assert p.returncode == 5, p.stdout + p.stderr
        assert "Traceback" not in p.stderr
        errs = [ln for ln in p.stderr.splitlines() if "header row is not UTF-8" in ln]
        assert len(errs) == 1 and "stage md: params.path: " in errs[0], p.stderr
    finally:
        assert bot4("shm", "destroy", "--instance", instance, "--force").returncode == 0

    t = load_topology(topo)  # not validated: as if the file broke after `bot4 run` read it
    out = io.StringIO()
    sup = Supervisor(t, live=False, out=out, start_timeout=90.0)
    assert sup.run() == EXIT_HALTED
    said = out.getvalue()
    assert said.count("stage md cannot use its input") == 1, said
    assert "restart" not in said.replace("not restarted", ""), said
    assert sup.final["stages"]["md"]["restarts"] == 0
    assert not instance_segments(instance)
