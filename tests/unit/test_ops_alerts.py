"""The shipped Prometheus alert rules and Grafana dashboard (ops/): every rule fires on the
series its test gives and stays quiet on the neighbours (``promtool test rules``, where
promtool is installed: Debian's ``prometheus`` package), every metric they name is one the
exporter exposes, every window is longer than the shipped scrape interval."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot4.records import ACTION_NEW, DECISION_DENY, EXEC_FILL, EXEC_REJECTED, RECORD_TYPES
from bot4.shm import control as C
from bot4.shm import create_ring, segment_name
from bot4.shm import metrics as M
from bot4.shm.segment import Segment, instance_segments

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "bot4-alerts.yml"
RULE_TESTS = OPS / "prometheus" / "bot4-alerts.test.yml"
CONFIG = OPS / "prometheus" / "prometheus.yml"
DASHBOARD = OPS / "grafana" / "bot4-dashboard.json"
_NAME = re.compile(r"(?<![$\w])(bot4_[a-z0-9_]+)\b(?!\s*=)")  # metrics: no labels, no $vars


_GROUPING = re.compile(r"\b(?:on|by|without|ignoring|group_left|group_right)\s*\([^)]*\)")


def _metric_names(expr: str) -> set[str]:
    """The bot4 metric names a PromQL expression reads (label lists left out)."""
    return set(_NAME.findall(_GROUPING.sub("", expr)))


def _seconds(d: str) -> float:
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", d)
    assert m, d
    return float(m[1]) * units[m[2]]


def test_promtool_checks_the_rules_and_every_alert_fires_on_its_series():
    """Skipped without promtool, except under CI=true, where .ci/run installs it (Debian's
    prometheus package) and its absence fails: CI never passes without running the rules."""
    if shutil.which("promtool") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("promtool is not installed (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed")
    for args in (["check", "config", str(CONFIG)], ["test", "rules", str(RULE_TESTS)]):
        out = subprocess.run(
            ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent
        )
        assert out.returncode == 0, out.stdout + out.stderr


def _exposed(instance: str) -> set[str]:
    """Every family name (and sample name) the exporter gives for an instance with all
    kinds of segments and a loader lag."""
    from prometheus_client.parser import text_string_to_metric_families

    from bot4.ops_metrics import Exporter
    from bot4.risk import create_risk_segments

    C.create_control(instance, 1, created_ns=1, session=1)
    M.create_metrics(instance, 0, ["persistence"], risk_writer=0)
    create_ring(segment_name(instance, "ticks"), RECORD_TYPES["MARKET_DATA"], 64)
    create_risk_segments(instance, 1, 2)
    seg = Segment.attach(segment_name(instance, M.METRICS_SEGMENT))
    w = np.frombuffer(seg.buf, np.uint64)
    w[M.W_LOADED_FRAME_PLUS1] = 1
    orders = np.zeros(1, RECORD_TYPES["ORDER"])
    orders["action"] = ACTION_NEW
    M.record_orders(w, orders)
    execs = np.zeros(2, RECORD_TYPES["EXEC_REPORT"])
    execs["exec_type"] = [EXEC_REJECTED, EXEC_FILL]
    execs["last_qty"], execs["instrument"] = 5, 1
    M.record_execs(w, execs)
    dec = np.zeros(1, RECORD_TYPES["RISK_DECISION"])
    dec["decision"], dec["reason"] = DECISION_DENY, 1
    M.record_decisions(w, dec)
    rows = np.zeros((2, M.RISK_ROW_WORDS), np.int64)
    rows[1] = [1, 5, 0, 0, 0, 0, 0, 0, 100, 3]  # instrument 1, 5 % of its position limit
    M.publish_risk(w, 10_000, np.zeros(M.RISK_ACCOUNT_WORDS, np.int64), rows)
    del w
    seg.close()
    cb = C.ControlBlock(instance)
    cb.stage(0)[C.S_PID] = os.getpid()  # psutil's figures of a live process
    cb.close()
    body, _ = Exporter(instance).metrics(None)
    names = set()
    for fam in text_string_to_metric_families(body.decode()):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    return names


def test_rules_and_dashboard_name_only_metrics_the_exporter_exposes(instance):
    try:
        exposed = _exposed(instance)
    finally:
        for n in instance_segments(instance):
            Segment.unlink(n)
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    used = {n for r in rules for n in _metric_names(r["expr"])}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    used |= {n for e in exprs for n in _metric_names(e)}
    # histogram functions use the _bucket series; the parser gives those as sample names
    missing = sorted(n for n in used if n not in exposed)
    assert not missing, f"not exposed: {missing}"
    assert {"bot4_latency_seconds_bucket", "bot4_ring_depth"} <= used


def test_every_alert_has_severity_summary_and_windows_longer_than_the_scrape_interval():
    scrape = _seconds(yaml.safe_load(CONFIG.read_text())["global"]["scrape_interval"])
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "Bot4RingNearlyFull",
        "Bot4StageRestarted",
        "Bot4BreakerOpen",
        "Bot4LoaderLagGrowing",
        "Bot4HeartbeatStale",
    }
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        if "for" in r:
            assert _seconds(r["for"]) > scrape, r["alert"]
        for rng in re.findall(r"\[(\w+)\]", r["expr"]):
            assert _seconds(rng) > scrape, r["alert"]
    tested = {
        a["alertname"]
        for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for a in t["alert_rule_test"]
        if a["exp_alerts"]
    }
    assert tested == {r["alert"] for r in rules}  # each alert has a series that fires it
