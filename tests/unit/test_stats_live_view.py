"""`bot4 stats` details an operator relies on: a full ring's high-water is never below its
depth (the producer records it on its full path), a restarted stage shows no heartbeat
until it beats, names come from the segments without a topology, the table fits 100
columns and is highlighted only when asked, and an instance that does not exist is one
line and exit 1."""

from __future__ import annotations

import subprocess
import time

import numpy as np

from bot4.ops_stats import snapshot, to_json
from bot4.ops_stats_view import WIDTH, render
from bot4.records import RECORD_TYPES
from bot4.shm import control as C
from bot4.shm import create_ring, segment_name
from bot4.shm import metrics as M
from bot4.shm import ring_layout as L
from bot4.shm import ring_ops as ops
from bot4.shm.segment import Segment, instance_segments
from tests.system.pipeline_util import BOT4


def _drop(instance: str) -> None:
    for n in instance_segments(instance):
        Segment.unlink(n)


def test_full_ring_high_water_is_recorded_by_the_producer_without_any_consumer(instance):
    name = segment_name(instance, "ticks")
    create_ring(name, RECORD_TYPES["MARKET_DATA"], 8)
    seg = Segment.attach(name)
    try:
        hdr = np.frombuffer(seg.buf, np.uint64, L.HEADER_WORDS)
        _, got = ops.producer_claim(hdr, 8)
        ops.producer_commit(hdr, got)
        _, got = ops.wait_claim(hdr, 1, 1_000)  # full: one full wait, nothing claimed
        assert got == 0 and int(hdr[L.W_PRODUCER_FULL_WAITS]) == 1
        assert int(hdr[L.W_PRODUCER_HIGH_WATER]) == 8
        assert int(hdr[L.W_CONSUMER_HIGH_WATER]) == 0  # the consumer never looked
        (ring,) = snapshot(instance)["rings"]
        assert (ring["ring"], ring["depth"], ring["high_water"]) == ("ticks", 8, 8)
        del hdr
    finally:
        seg.close()
        _drop(instance)


def test_restarted_stage_shows_no_heartbeat_until_it_beats_and_ages_are_never_negative(
    instance,
):
    C.create_control(instance, 2, created_ns=1, session=1)
    M.create_metrics(instance, None, ["md", "risk"])
    cb = C.ControlBlock(instance)
    try:
        now = time.monotonic_ns()
        for i in range(2):
            cb.stage(i)[C.S_STATE] = C.STAGE_RUNNING
        old = cb.stage(1)
        old[C.S_HEARTBEAT_NS] = now - 9_000_000_000  # the killed predecessor's last beat
        old[C.S_STARTED_NS] = now - 1_000_000_000  # the supervisor started its successor
        cb.stage(0)[C.S_HEARTBEAT_NS] = now + 5_000_000  # stored "after" the reader's clock
        snap = snapshot(instance)
        md, risk = snap["stages"]
        assert (md["name"], risk["name"]) == ("md", "risk")  # from the metrics segment
        assert risk["heartbeat_age_ns"] is None
        assert md["heartbeat_age_ns"] >= 0
        old[C.S_HEARTBEAT_NS] = time.monotonic_ns()  # the new process beats
        assert 0 <= snapshot(instance)["stages"][1]["heartbeat_age_ns"] < 5_000_000_000
        assert b'"name": "risk"' in to_json(snapshot(instance))
        del old
    finally:
        cb.close()
        _drop(instance)


def test_table_fits_100_columns_and_highlights_only_when_asked(instance):
    C.create_control(instance, 2, created_ns=1, session=1)
    M.create_metrics(instance, 1, ["marketdata-feed", "persistence"], risk_writer=0)
    create_ring(segment_name(instance, "venue_orders_xl"), RECORD_TYPES["ORDER"], 8)
    seg = Segment.attach(segment_name(instance, "venue_orders_xl"))
    met = Segment.attach(segment_name(instance, M.METRICS_SEGMENT))
    try:
        acct = dict.fromkeys(M.RISK_ACCOUNT, -987_654_321_000_000)  # large losses
        acct.update(daily_loss_limit=10**12, max_gross=10**18, max_open_orders=0)
        rows = np.zeros((300, M.RISK_ROW_WORDS), np.int64)
        rows[255] = [1, -95, 0, 0, 0, -(10**15), 10**15, 10**12, 100, 0]  # 95 % of its limit
        w = np.frombuffer(met.buf, np.uint64)
        M.publish_risk(w, 10_000, np.array(list(acct.values()), np.int64), rows)
        del w
        hdr = np.frombuffer(seg.buf, np.uint64, L.HEADER_WORDS)
        _, got = ops.producer_claim(hdr, 8)
        ops.producer_commit(hdr, got)  # full
        del hdr
        snap = snapshot(instance)
        snap["stages"][0].update(records_in=123_456_789_012, records_out=98_765_432, pid=4_194_304)
        plain = render(snap, snap)
        assert "\033" not in plain
        assert all(len(ln) <= WIDTH for ln in plain.splitlines()), plain
        assert "latency us" in plain and "tick_to_order" in plain
        assert "risk pnl -197.53G" in plain and "position 95% (255)" in plain
        colored = render(snap, None, color=True)
        full = next(ln for ln in colored.splitlines() if "venue_orders_xl" in ln)
        assert full.startswith("\033[1;31m")  # the full ring
        used = next(ln for ln in colored.splitlines() if "limits used" in ln)
        assert used.startswith("\033[1;31m") and len(used) - len("\033[1;31m\033[0m") <= WIDTH
    finally:
        met.close()
        seg.close()
        _drop(instance)


def test_stats_of_an_instance_that_does_not_exist_is_one_line_and_exit_1(instance):
    for extra in ([], ["--json"], ["--once"]):
        out = subprocess.run(
            [*BOT4, "stats", "--instance", instance, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out
        assert out.stdout == ""
        assert out.stderr == f"bot4: error: instance {instance} has no segments (not running?)\n"


def test_groups_and_their_members_from_the_topology_or_from_shared_pids(instance):
    """Stages that run in one process are listed as a group: named by the topology when
    given, else by the pid they share; a stage in its own process is in no group."""
    C.create_control(instance, 3, created_ns=1, session=1)
    M.create_metrics(instance, None, ["signals", "risk", "venue"])
    cb = C.ControlBlock(instance)
    try:
        for i, (pid, core) in enumerate([(4242, 1), (4242, 1), (77, 0)]):
            b = cb.stage(i)
            b[C.S_PID], b[C.S_CORE] = pid, core
            del b
        snap = snapshot(instance)
        assert [s["group"] for s in snap["stages"]] == ["pid 4242", "pid 4242", None]
        assert snap["groups"] == [
            {"name": "pid 4242", "pid": 4242, "core": 1, "members": ["signals", "risk"]}
        ]
        named = snapshot(instance, None, {"signals": "hot", "risk": "hot"})
        assert [g["name"] for g in named["groups"]] == ["hot"]
        assert b'"group": "hot"' in to_json(named)
        assert "group hot (pid 4242, core 1): signals, risk" in render(named).splitlines()
    finally:
        cb.close()
        _drop(instance)


def test_live_view_piped_is_plain_and_says_when_the_instance_stops(instance, monkeypatch, capsys):
    """Piped (not a terminal): no highlighting and no screen clearing, snapshots separated
    by a blank line; an instance that stops while watched is one line, watched on (a
    systemd restart brings it back), not an empty table."""
    import bot4.cli as cli

    C.create_control(instance, 1, created_ns=1, session=1)
    M.create_metrics(instance, None, ["md"])
    ticks = [0]

    def tick(_s):
        ticks[0] += 1
        if ticks[0] == 1:
            _drop(instance)  # the instance stops between two refreshes
        else:
            raise KeyboardInterrupt  # the operator's Ctrl-C

    monkeypatch.setattr(cli.time, "sleep", tick)
    try:
        assert cli.main(["stats", "--instance", instance, "--interval", "0.1"]) == 130
    finally:
        _drop(instance)
    out = capsys.readouterr().out
    assert "\033" not in out
    first, second = out.split("\n\n")
    assert first.startswith(f"\ninstance {instance}  pipeline ")
    assert (
        second == f"instance {instance} has no segments (stopped); waiting for it to start again\n"
    )


def test_latency_cells_fit_their_columns_at_every_magnitude():
    """A latency too wide for its column in µs is shown in ms or s with the unit: under
    load a 1.57 s max ran into the next column ('50,3321,568,67')."""
    from bot4.ops_stats_view import _us

    for width in (7, 8):
        for ns in (0, 999, 7_200, 4_096_000, 25_559_000, 125_559_000, 999_999_999,
                   1_568_672_000, 12 * 10**9, 999 * 10**9):  # fmt: skip
            cell = _us(ns, width)
            assert len(cell) < width, (ns, width, cell)
    assert _us(7_200) == "7.2" and _us(25_559_000) == "25,559"
    assert _us(125_559_000, 7) == "126ms" and _us(1_568_672_000, 8) == "1.57s"


def test_once_shows_rates_over_one_interval(instance, monkeypatch, capsys):
    import bot4.cli as cli

    C.create_control(instance, 1, created_ns=1, session=1)
    M.create_metrics(instance, None, ["md"])
    create_ring(segment_name(instance, "ticks"), RECORD_TYPES["MARKET_DATA"], 64)
    seg = Segment.attach(segment_name(instance, "ticks"))
    slept = []

    def produce(s):  # 40 records published during the interval
        slept.append(s)
        hdr = np.frombuffer(seg.buf, np.uint64, L.HEADER_WORDS)
        _, got = ops.producer_claim(hdr, 40)
        ops.producer_commit(hdr, got)

    monkeypatch.setattr(cli.time, "sleep", produce)
    try:
        assert cli.main(["stats", "--instance", instance, "--once", "--interval", "0.5"]) == 0
        out = capsys.readouterr().out
        (row,) = [ln for ln in out.splitlines() if ln.startswith("ticks")]
        produced, rate = row.split()[4:6]  # rate/s over the time between the snapshots
        assert slept == [0.5] and produced == "40" and int(rate.replace(",", "")) > 0, row
        assert cli.main(["stats", "--instance", instance, "--once", "--interval", "0"]) == 0
        (row,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ticks")]
        assert slept == [0.5] and row.split()[4:6] == ["40", "0"], row  # no rate: fullw next
    finally:
        seg.close()
        _drop(instance)


def test_host_steal_is_read_per_cpu_and_shown_over_the_interval(instance, monkeypatch):
    # a hypervisor not running a vCPU pauses everything on it (~100 ms on the 2-core VM):
    # the table names it, per CPU, for the last interval and since boot
    import os

    import bot4.ops_stats as S
    from bot4.ops_stats_view import _render_steal

    got = S.host_steal_ns()
    assert got is not None and len(got) == os.cpu_count(), got  # this host's /proc/stat
    snap = snapshot(instance)
    later = snap["host"]["steal_ns"]
    assert len(later) == len(got) and all(b >= a for a, b in zip(got, later, strict=True))
    import orjson

    assert len(orjson.loads(to_json(snap))["host"]["steal_ns"]) == len(got)
    prev = {"host": {"steal_ns": [1_000_000_000, 50_000_000, 0]}}
    now = {"host": {"steal_ns": [1_100_000_000, 50_000_000, 30_000_000]}}
    (line,) = _render_steal(now, prev)
    assert line == "host steal       interval cpu0 100 ms, cpu2 30 ms | since boot 1.2 s", line
    assert len(line) <= WIDTH
    (marked,) = _render_steal(now, prev, color=True)
    assert marked != line and line in marked  # highlighted: the interval had steal
    (quiet,) = _render_steal(now, now, color=True)
    assert quiet == "host steal       interval none | since boot 1.2 s"
    (first,) = _render_steal(now, None)  # no interval yet
    assert first == "host steal       interval - | since boot 1.2 s"
    assert _render_steal({"host": {"steal_ns": [0, 0]}}, None) == []  # none since boot
    assert _render_steal({"host": None}, None) == []
    many = {"host": {"steal_ns": [10**13 + 10**9] * 128}}  # ~3 h each, 1 s in the interval
    (wide,) = _render_steal(many, {"host": {"steal_ns": [10**13] * 128}})
    assert len(wide) <= WIDTH and "+126 CPUs" in wide, wide
