"""`bot4 metrics serve` against a running default pipeline: what Prometheus scrapes is what
`bot4 stats --json` shows at the same moment, and /readyz follows the supervisor's verdict
when a stage is frozen (SIGSTOP) and when it resumes (SIGCONT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from importlib import resources

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot4.ops_stats import snapshot
from tests.system.pipeline_util import BOT4, LoggedPopen, start_pipeline, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]


def _topology(instance: str) -> str:
    """The packaged default, its signals stage given a minute before the supervisor would
    kill it for a stale heartbeat or a stall (the test freezes it for a few seconds)."""
    text = resources.files("bot4.config").joinpath("default.toml").read_text()
    text = text.replace('instance = "default"', f'instance = "{instance}"')
    marker = 'name = "signals"\n'
    assert marker in text
    return text.replace(marker, marker + "heartbeat_timeout = 60\nstall_timeout = 60\n", 1)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _stats(instance: str) -> dict:
    out = subprocess.run(
        [*BOT4, "stats", "--instance", instance, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _wait_ready(base: str, want: int, timeout: float, p) -> str:
    deadline = time.monotonic() + timeout
    code, body = _get(base + "/readyz")
    while code != want:
        assert p.poll() is None, p.log_text()[-4000:]
        assert time.monotonic() < deadline, f"/readyz stayed {code}: {body}"
        time.sleep(0.2)
        code, body = _get(base + "/readyz")
    return body


def test_scrape_equals_stats_json_and_readyz_follows_a_frozen_stage(instance, procs, tmp_path):
    p = start_pipeline(tmp_path, _topology(instance), procs, "--no-db", "--duration", "240")
    wait_running(instance, timeout=240)
    exp = LoggedPopen(
        [*BOT4, "metrics", "serve", "--instance", instance, "--port", "0", "--no-db"],
        tmp_path / "exporter.log",
    )
    procs.add(exp)
    deadline = time.monotonic() + 120
    while "http://127.0.0.1:" not in (line := exp.log_text().partition("\n")[0]):
        assert exp.poll() is None, exp.log_text()[-4000:]
        assert time.monotonic() < deadline, f"the exporter did not say where it serves: {line}"
        time.sleep(0.05)
    base = line.split("on ", 1)[1].strip().rsplit("/", 1)[0]
    assert _get(base + "/healthz") == (200, "ok\n")
    _wait_ready(base, 200, 240, p)
    # orders have gone out (the latency histograms have something to show)
    deadline = time.monotonic() + 120
    while not snapshot(instance)["latency"]["tick_to_order"]["count"]:
        assert time.monotonic() < deadline, "no NEW order recorded within 120 s"
        time.sleep(0.5)

    before = _stats(instance)
    code, text = _get(base + "/metrics")
    after = _stats(instance)
    assert code == 200
    m = _samples(text)
    inst = ("bot4_instance", instance)

    def val(name, **labels):
        return m[(name, tuple(sorted([inst, *labels.items()])))]

    def between(v, a, b, what):
        assert a <= v <= b, f"{what}: scraped {v}, stats said {a} then {b}"

    for rb, ra in zip(before["rings"], after["rings"], strict=True):
        r = rb["ring"]
        for key, name in (
            ("produced", "bot4_ring_produced_records_total"),
            ("consumed", "bot4_ring_consumed_records_total"),
            ("full_waits", "bot4_ring_full_waits_total"),
            ("empty_waits", "bot4_ring_empty_waits_total"),
            ("producer_batches", "bot4_ring_producer_batches_total"),
        ):
            between(val(name, ring=r), rb[key], ra[key], f"{r} {key}")
        assert val("bot4_ring_capacity", ring=r) == rb["capacity"]
    for sb, sa in zip(before["stages"], after["stages"], strict=True):
        s = sb["name"]
        assert val("bot4_stage_pid", stage=s) == sb["pid"] == sa["pid"]
        assert val("bot4_stage_state", stage=s, bot4_stage_state="running") == 1
        for key in ("records_in", "records_out", "batches", "restarts"):
            between(val(f"bot4_stage_{key}_total", stage=s), sb[key], sa[key], f"{s} {key}")
        assert val("bot4_stage_cpu_seconds_total", stage=s, mode="user") >= 0
        assert val("bot4_stage_resident_memory_bytes", stage=s) > 0
    for hop, lb in before["latency"].items():
        n = val("bot4_latency_seconds_count", hop=hop)
        between(n, lb["count"], after["latency"][hop]["count"], f"latency {hop}")
        assert val("bot4_latency_seconds_bucket", hop=hop, le="+Inf") == n
    between(
        val("bot4_orders_total", action="new"),
        before["flow"]["orders"]["new"],
        after["flow"]["orders"]["new"],
        "orders new",
    )
    between(val("bot4_fills_total"), before["flow"]["fills"], after["flow"]["fills"], "fills")
    g = before["trading"]["global"]["state"]
    assert val("bot4_trading_state", instrument="global", bot4_trading_state=g) == 1
    # the risk stage's panel: every instrument it knows, its limits' utilisation
    assert before["risk"] is not None and before["risk"]["instruments"]
    for ident in before["risk"]["instruments"]:
        val("bot4_risk_position_shares", instrument=ident)
        val("bot4_risk_pnl", instrument=ident, component="realised")
    assert val("bot4_risk_open_orders", instrument="account") >= 0

    # freeze the signals stage: not ready, and the body says who; thawed: ready again
    sig = next(s for s in before["stages"] if s["name"] == "signals")
    os.kill(sig["pid"], signal.SIGSTOP)
    try:
        body = _wait_ready(base, 503, 60, p)
        assert "signals" in body, body
    finally:
        os.kill(sig["pid"], signal.SIGCONT)
    _wait_ready(base, 200, 60, p)
    assert snapshot(instance)["stages"][1]["restarts"] == 0  # frozen, never killed

    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    exp.send_signal(signal.SIGTERM)
    exp.wait(timeout=30)
    assert exp.returncode == 0
