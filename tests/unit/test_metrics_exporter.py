"""The exporter's collector and readiness rules, on segments made here (no pipeline): it
maps every segment read-only (a write through its mapping faults), its latency histograms
are cumulative in seconds, and /readyz follows the supervisor's verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bot4.records import RECORD_TYPES
from bot4.shm import control as C
from bot4.shm import create_ring, segment_name
from bot4.shm import histogram as H
from bot4.shm import metrics as M
from bot4.shm.segment import Segment, instance_segments


def _make(instance: str) -> None:
    C.create_control(instance, 2, created_ns=1, session=1)
    M.create_metrics(instance, 1, ["src", "sink"])
    create_ring(segment_name(instance, "ticks"), RECORD_TYPES["MARKET_DATA"], 64)


def _drop(instance: str) -> None:
    for n in instance_segments(instance):
        Segment.unlink(n)


def test_every_mapping_is_read_only_and_a_write_through_it_faults(instance):
    _make(instance)
    child = textwrap.dedent(
        f"""
        import ctypes, numpy as np
        from bot4.shm.segment import Segment
        from bot4.ops_metrics_collector import Bot4Collector
        kept = []
        real_attach, real_close = Segment.attach, Segment.close
        def attach(name, *, readonly=False, min_size=0):
            seg = real_attach(name, readonly=readonly, min_size=min_size)
            kept.append(seg)
            return seg
        Segment.attach = staticmethod(attach)
        Segment.close = lambda self: None  # keep the exporter's mappings to write through
        fams = list(Bot4Collector({instance!r}).collect())
        names = sorted({{s.name for s in kept}})
        print("families", len(fams), "attached", len(kept), names, flush=True)
        assert kept and all(s.readonly for s in kept), [(s.name, s.readonly) for s in kept]
        seg = next(s for s in kept if s.name.endswith(".metrics"))
        addr = np.frombuffer(seg.buf, np.uint8).ctypes.data
        print("writing", flush=True)
        ctypes.memset(addr + 128 * 8, 1, 1)  # the flow counters' first byte
        print("wrote: the mapping was writable", flush=True)
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
        )
        assert "attached" in out.stdout and "writing" in out.stdout, out.stdout + out.stderr
        assert ".metrics" in out.stdout and ".control" in out.stdout and ".ticks" in out.stdout
        assert "wrote" not in out.stdout
        assert out.returncode == -11, (out.returncode, out.stdout, out.stderr)  # SIGSEGV
        seg = Segment.attach(segment_name(instance, M.METRICS_SEGMENT), readonly=True)
        assert int(np.frombuffer(seg.buf, np.uint64)[M.FLOW_BASE]) == 0  # nothing written
        seg.close()
    finally:
        _drop(instance)


def test_latency_histograms_are_cumulative_le_buckets_in_seconds(instance):
    from bot4.ops_metrics import Exporter
    from bot4.ops_metrics_collector import LATENCY_BUCKETS_S

    _make(instance)
    try:
        w = np.zeros(M.TOTAL_WORDS, np.uint64)
        M.init_metrics(w, 1, 1, ["src", "sink"])
        values = np.array([800, 3_000, 40_000, 40_000, 2_000_000, 4 * 10**9], np.int64)
        H.record_many(M.hist(w, M.HIST_TICK_TO_ORDER), values)
        seg = Segment.attach(segment_name(instance, M.METRICS_SEGMENT))
        np.frombuffer(seg.buf, np.uint64)[:] = w
        seg.close()
        body, ctype = Exporter(instance).metrics(None)
        assert ctype.startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        lat = fams["bot4_latency_seconds"]
        buckets = [
            (s.labels["le"], s.value)
            for s in lat.samples
            if s.name.endswith("_bucket") and s.labels["hop"] == "tick_to_order"
        ]
        assert len(buckets) == len(LATENCY_BUCKETS_S) + 1 and buckets[-1] == ("+Inf", 6)
        got = dict(buckets)
        assert got["1e-06"] == 1 and got["5e-06"] == 2 and got["5e-05"] == 4
        assert got["0.0025"] == 5 and got["2.5"] == 5  # 4 s: only in +Inf
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        s = {x.name: x.value for x in lat.samples if x.labels["hop"] == "tick_to_order"}
        assert s["bot4_latency_seconds_count"] == 6
        assert abs(s["bot4_latency_seconds_sum"] - values.sum() / 1e9) < 1e-9
        stage_names = {
            x.labels["stage"]
            for x in fams["bot4_stage_restarts"].samples  # the parser drops _total
        }
        assert stage_names == {"src", "sink"}
        # the host's steal per CPU, from the same snapshot (/proc/stat since boot)
        steal = {x.labels["cpu"]: x.value for x in fams["bot4_host_steal_seconds"].samples}
        assert sorted(steal) == [str(c) for c in range(os.cpu_count())], steal
        assert all(v >= 0 for v in steal.values())
    finally:
        _drop(instance)


def test_risk_panel_is_exported_in_currency_with_each_limits_utilisation(instance):
    from bot4.ops_metrics import Exporter

    _make(instance)
    try:
        seg = Segment.attach(segment_name(instance, M.METRICS_SEGMENT))
        w = np.frombuffer(seg.buf, np.uint64)
        w[M.W_RISK_WRITER] = 2  # stage 1 publishes it
        acct = dict.fromkeys(M.RISK_ACCOUNT, 0)
        acct.update(realised=-25_000, unrealised=5_000, daily_pnl=-20_000,
                    daily_loss_limit=100_000, max_open_orders=4, open_orders=3)  # fmt: skip
        rows = np.zeros((3, M.RISK_ROW_WORDS), np.int64)
        rows[1] = [1, -150, 50, 0, 3, -25_000, 5_000, 700, 200, 10]
        M.publish_risk(w, 10_000, np.array(list(acct.values()), np.int64), rows)
        del w
        seg.close()
        body, _ = Exporter(instance).metrics(None)
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}

        def val(fam, **labels):
            (s,) = [x for x in fams[fam].samples if labels.items() <= x.labels.items()]
            return s.value

        assert val("bot4_risk_account_pnl", component="realised") == -2.5
        assert val("bot4_risk_account_pnl", component="daily") == -2.0
        assert val("bot4_risk_pnl", instrument="1", component="fees") == 0.07
        assert val("bot4_risk_position_shares", instrument="1") == -150
        assert val("bot4_risk_open_order_shares", instrument="1", side="buy") == 50
        use = "bot4_risk_limit_utilisation_ratio"
        assert val(use, instrument="1", limit="position") == 0.75  # |-150 - 0| of 200
        assert val(use, instrument="1", limit="open_orders") == 0.3
        assert val(use, instrument="account", limit="daily_loss") == 0.2
        assert val(use, instrument="account", limit="open_orders") == 0.75
        limits = {x.labels["limit"] for x in fams[use].samples}
        assert "gross" not in limits and "daily_halt" not in limits  # limits that are off
        assert {x.labels["instrument"] for x in fams["bot4_risk_pnl"].samples} == {"1"}
    finally:
        _drop(instance)


def _snap(**over) -> dict:
    st = {
        "name": "risk", "state": "running", "heartbeat_age_ns": 1_000_000, "liveness": "moving",
        "liveness_ring": None, "liveness_records": 0, "stuck_for_ns": None,
    }  # fmt: skip
    snap = {
        "instance": "t", "exists": True, "pipeline": "running", "pipeline_stuck_for_ns": None,
        "stages": [dict(st, name="md"), dict(st)],
        "rings": [{"ring": "orders", "depth": 10, "capacity": 1024}],
    }  # fmt: skip
    for k, v in over.items():
        if k in ("risk",):
            snap["stages"][1].update(v)
        else:
            snap[k] = v
    return snap


def test_readiness_follows_the_supervisors_verdicts():
    from bot4.ops_metrics import readiness

    assert readiness(_snap()) == []
    # a stage blocked on its full output: backpressure, ready
    full = [{"ring": "orders", "depth": 1024, "capacity": 1024}]
    assert readiness(_snap(risk={"liveness": "blocked", "liveness_ring": "orders"})) == []
    assert readiness(_snap(rings=full)) == []
    stuck = {"liveness": "stuck", "liveness_ring": "orders", "liveness_records": 1024,
             "stuck_for_ns": 2_500_000_000}  # fmt: skip
    (why,) = readiness(_snap(risk=stuck))
    assert why.startswith("stage risk stuck: input orders holds 1024 records") and "2.5 s" in why
    both = readiness(_snap(risk=stuck, rings=full))
    assert both[-1] == "ring orders stuck full (consumer risk stuck)"
    assert readiness(_snap(risk={"heartbeat_age_ns": 3_000_000_000})) == [
        "stage risk: heartbeat 3.0 s old"
    ]
    assert readiness(_snap(risk={"heartbeat_age_ns": 3_000_000_000}), stale_after_s=5) == []
    assert readiness(_snap(risk={"state": "starting"})) == ["stage risk starting"]
    assert readiness(_snap(pipeline_stuck_for_ns=6_000_000_000)) == [
        "pipeline stuck: no ring moved for 6.0 s"
    ]
    assert readiness(_snap(exists=False)) == ["instance t has no segments"]
    assert readiness(_snap(pipeline="draining")) == ["pipeline draining"]


def test_a_port_in_use_is_one_line_not_a_traceback():
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bot4.cli", "metrics", "serve", "--instance", "nosuch",
             "--port", str(port), "--no-db"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert out.returncode != 0 and out.stdout == ""
    assert (
        out.stderr
        == f"bot4: error: metrics: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_a_scrape_that_fails_is_a_500_and_one_line_not_a_traceback(monkeypatch, capsys):
    """A segment unlinked while a scrape reads it (the instance stopping): the scraper gets
    a 500 with the reason, the exporter's stderr one line, and it keeps serving."""
    import threading
    import urllib.error
    import urllib.request

    import bot4.ops_metrics as OM
    import bot4.ops_metrics_collector as OMC

    def gone(*a, **kw):
        raise OSError("segment vanished\nsecond line")

    exp = OM.Exporter("nosuch")
    srv = exp.server("127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        monkeypatch.setattr(OM, "snapshot", gone)  # /readyz
        monkeypatch.setattr(OMC, "snapshot", gone)  # /metrics (the collector)
        for path in ("/metrics", "/readyz"):
            try:
                urllib.request.urlopen(base + path, timeout=30)
                raise AssertionError(f"{path}: no error")
            except urllib.error.HTTPError as exc:
                assert exc.code == 500 and exc.read() == b"OSError: segment vanished\n"
        err = capsys.readouterr().err
        assert err == (
            "bot4: error: metrics: /metrics: OSError: segment vanished\n"
            "bot4: error: metrics: /readyz: OSError: segment vanished\n"
        ), err
        monkeypatch.undo()
        with urllib.request.urlopen(base + "/readyz", timeout=30) as never:
            raise AssertionError(never.read())
    except urllib.error.HTTPError as exc:  # served again: not ready, no such instance
        assert exc.code == 503 and exc.read() == b"instance nosuch has no segments\n"
    finally:
        srv.shutdown()
        srv.server_close()


def test_readyz_names_an_unreachable_database_in_one_line_and_asks_it_sparingly(monkeypatch):
    import socket

    import bot4.ops_metrics as OM

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert OM.DbCheck(None).problem() is None  # no database configured: never asked
    check = OM.DbCheck(f"postgresql://bot4@127.0.0.1:{port}/bot4?connect_timeout=2")
    why = check.problem()
    assert why.startswith("database unreachable: ") and "\n" not in why, why
    asked = []
    monkeypatch.setattr(check, "_ask", lambda: asked.append(1))
    assert check.problem() == why and not asked  # the verdict is kept DB_CHECK_EVERY_S
    monkeypatch.setattr(check, "_at", check._at - OM.DB_CHECK_EVERY_S)
    assert check.problem() is None and asked == [1]  # asked again once it is due
    snap = {"instance": "t", "exists": True, "pipeline": "running", "stages": [], "rings": []}
    monkeypatch.setattr(OM, "snapshot", lambda *a: snap)
    exp = OM.Exporter("t", dsn="x")
    monkeypatch.setattr(exp.db, "problem", lambda: why)
    assert exp.ready() == [why]
