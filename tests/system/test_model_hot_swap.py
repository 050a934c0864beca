"""A model promoted while the pipeline trades reaches the running signals stage between two
batches (issue 21): no restart, no tick lost or scored twice, and in the journal every
order before the swap carries the old model's id and every one after it the new one."""

from __future__ import annotations

import json
import re
import signal
import time
import tomllib
from importlib import resources

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.models.cli import main as models
from bot4.records import ACTION_NEW
from bot4.shm.segment import instance_segments
from bot4.stages import signals as S
from tests.system.pipeline_util import start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def default_with_slot(instance: str, registry: str) -> str:
    """The built-in default topology, its signals stage following registry slot 'default'."""
    data = tomllib.loads(resources.files("bot4.config").joinpath("default.toml").read_text())
    data["instance"] = instance
    for st in data["stage"]:
        if st["kind"] == "signals":
            st.setdefault("params", {}).update(model_slot="default", model_registry=registry)
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, list)]
    for key, tables in data.items():
        if isinstance(tables, list):
            for t in tables:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def new_order_models(journal) -> np.ndarray:
    """model_id of every NEW order in the journal, in journal order."""
    out = []
    for _pos, _rtype, recs in JournalReader(journal):
        if recs.dtype.names and "model_id" in recs.dtype.names:
            out.append(recs["model_id"][recs["action"] == ACTION_NEW])
    return np.concatenate(out) if out else np.zeros(0, np.uint32)


def wait_for(what, cond, p, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert p.poll() is None, f"pipeline ended while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_promote_while_trading_swaps_between_batches(instance, procs, tmp_path, capsys):
    reg = str(tmp_path / "models")
    np.save(tmp_path / "a.npy", S.DEFAULT_MODEL)
    np.save(tmp_path / "b.npy", S.DEFAULT_MODEL * 1.25)
    for name in ("a", "b"):
        args = ["register", str(tmp_path / f"{name}.npy"), "--name", name]
        assert models([*args, "--registry", reg, "--no-db"]) == 0
    assert models(["promote", "1", "--registry", reg, "--no-db"]) == 0
    capsys.readouterr()
    p = start_pipeline(
        tmp_path, default_with_slot(instance, reg), procs, "--no-db", "--duration", "120"
    )
    journal = tmp_path / "bot4-data" / "journal" / instance
    wait_running(instance)
    wait_for("orders of model 1", lambda: (new_order_models(journal) == 1).sum() >= 20, p)
    assert models(["promote", "2", "--registry", reg, "--no-db"]) == 0
    wait_for("orders of model 2", lambda: (new_order_models(journal) == 2).sum() >= 20, p)
    p.send_signal(signal.SIGINT)  # drain and stop
    out, _ = p.communicate(timeout=150)
    assert p.returncode == 0, out
    ids = new_order_models(journal)
    ids = ids[ids != 0]  # orders no model decided (none expected; not part of the claim)
    swap = int(np.argmax(ids == 2))
    assert (ids[:swap] == 1).all() and (ids[swap:] == 2).all(), ids
    st = json.loads((tmp_path / "report.json").read_text())["stages"]
    assert all(s["restarts"] == 0 for s in st.values())
    # every tick md sent to signals was read once (md fans out to signals, risk and venue)
    assert st["md"]["records_out"] == 3 * st["signals"]["records_in"]
    # logged by the process of the signals stage or of its group (``hot`` by default)
    m = re.findall(r"[\w-]+\[\d+\] INFO signals summary  summary=(\{.*\})", out)
    assert m, out
    summ = json.loads(m[-1])
    assert summ["model_swaps"] == 1 and summ["model_generation"] >= 2, summ
    assert not instance_segments(instance)
