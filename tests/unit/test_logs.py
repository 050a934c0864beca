"""bot4.logs: one configuration for every process; JSON lines; journald priorities.

The journald cases run a child whose stderr is one end of a Unix stream socket — what
systemd gives a unit's stderr — with ``$JOURNAL_STREAM`` naming that socket's device and
inode, as systemd sets it; the test reads the lines journald would receive."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from bot4 import logs
from bot4.shm.ring_layout import HEADER_WORDS, W_PRODUCER_FULL_WAITS, W_PRODUCER_REJECTIONS
from bot4.stages.ring_full import QUIET_NS, REPEAT_NS, RingFullLog

CHILD = r"""
import logging, sys
from bot4 import logs
cfg = logs.resolve()
logs.configure(cfg, "risk")
log = logging.getLogger("bot4.stage")
log.debug("d")
logs.log_event(log, logging.INFO, "stage_summary", "risk summary", summary={"fills": 3, 1: {"x": [1, 2]}})
logs.log_event(log, logging.WARNING, "ring_full", "ring %s full", "orders", ring="orders", waits=2)
log.error("e")
log.critical("c")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
"""


def _run_child(env_extra: dict, *, journald: bool) -> list[str]:
    """Run CHILD with stderr on a stream socket; returns the lines read from the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env.update(env_extra)
    if journald:
        st = os.fstat(theirs.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    try:
        p = subprocess.Popen([sys.executable, "-c", CHILD], stderr=theirs.fileno(), env=env)
        theirs.close()
        chunks = []
        ours.settimeout(120)
        while True:
            b = ours.recv(65536)
            if not b:
                break
            chunks.append(b)
        assert p.wait(timeout=120) == 0
    finally:
        ours.close()
    return b"".join(chunks).decode().splitlines()


def test_journald_text_lines_carry_syslog_priorities():
    lines = _run_child({"BOT4_LOG_LEVEL": "debug", "BOT4_LOG_FORMAT": "text"}, journald=True)
    assert all(ln[:1] == "<" and ln[2] == ">" for ln in lines), lines
    heads = [ln for ln in lines if "risk[" in ln]
    assert [h[:3] for h in heads] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"], heads
    # journald stamps the entries: no timestamp of our own
    assert heads[0].startswith("<7>risk[") and heads[0].endswith("] DEBUG d")
    assert "risk summary  summary=" in heads[1]
    assert json.loads(heads[1].split("summary=", 1)[1]) == {"fills": 3, "1": {"x": [1, 2]}}
    assert heads[2].endswith("ring orders full  ring=orders waits=2")
    # a traceback's lines keep the error priority (each is its own journal entry)
    tb = lines[lines.index(heads[-1]) + 1 :]
    assert tb and all(ln.startswith("<3>") for ln in tb) and "ZeroDivisionError" in tb[-1]


def test_journald_json_lines_parse_after_the_priority_and_carry_the_fields():
    lines = _run_child({"BOT4_LOG_LEVEL": "info", "BOT4_LOG_FORMAT": "json"}, journald=True)
    prios = [int(ln[1]) for ln in lines]
    docs = [json.loads(ln[3:]) for ln in lines]
    assert prios == [6, 4, 3, 2, 3]  # debug filtered out at info
    assert [d["level"] for d in docs] == ["info", "warning", "error", "critical", "error"]
    assert all(d["process"] == "risk" and d["logger"] == "bot4.stage" for d in docs)
    s, full = docs[0], docs[1]
    assert s["event"] == "stage_summary" and s["summary"] == {"fills": 3, "1": {"x": [1, 2]}}
    assert full["event"] == "ring_full" and full["msg"] == "ring orders full"
    assert full["ring"] == "orders" and full["waits"] == 2
    assert "ZeroDivisionError" in docs[-1]["exc"]


def test_a_journal_stream_that_is_not_our_stderr_gets_no_prefix():
    # a child whose stderr was redirected inherits $JOURNAL_STREAM: it must not prefix
    env = {"JOURNAL_STREAM": "1:1", "BOT4_LOG_FORMAT": "text"}
    lines = _run_child(env, journald=False)
    assert lines and not any(ln.startswith("<") for ln in lines), lines


def test_settings_command_line_over_environment_over_topology(monkeypatch):
    class Topo:
        log_level, log_format = "debug", "json"

    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.resolve() == logs.LogConfig("info", "text")
    assert logs.resolve(topology=Topo) == logs.LogConfig("debug", "json")
    monkeypatch.setenv(logs.LEVEL_ENV, "warning")
    assert logs.resolve(topology=Topo) == logs.LogConfig("warning", "json")
    assert logs.resolve("error", "text", Topo) == logs.LogConfig("error", "text")
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(logs.LogConfigError, match="BOT4_LOG_FORMAT: 'xml': use one of text, json"):
        logs.resolve()


def test_reserved_names_among_the_fields_are_renamed():
    fmt = logs.Bot4Formatter(logs.LogConfig("info", "json"), "md", journald=False, tool=False)
    rec = logging.LogRecord("bot4.stage", logging.INFO, "", 0, "m", (), None)
    rec.event, rec.fields = "e", {"msg": "x", "level": 1, "n": np.int64(5)}
    doc = json.loads(fmt.format(rec))
    assert doc["msg"] == "m" and doc["field_msg"] == "x" and doc["field_level"] == 1
    assert doc["n"] == 5 and doc["ts"].endswith("Z")


def test_configure_replaces_its_own_handler_only():
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    level = root.level
    try:
        a, b = io.StringIO(), io.StringIO()
        logs.configure(logs.LogConfig("info", "text"), "x", stream=a)
        logs.configure(logs.LogConfig("warning", "json"), "x", stream=b)
        logging.getLogger("bot4.t").warning("w")
        logging.getLogger("bot4.t").info("i")
        assert a.getvalue() == "" and json.loads(b.getvalue())["msg"] == "w"
        assert other in root.handlers
    finally:
        for h in list(root.handlers):
            if getattr(h, "_bot4_handler", False):
                root.removeHandler(h)
        root.removeHandler(other)
        root.setLevel(level)


def test_ring_full_episodes_start_end_and_rate_limit(caplog):
    hdr = np.zeros(HEADER_WORDS, np.uint64)
    hdr[W_PRODUCER_FULL_WAITS] = 7  # from before this process: not news
    rl = RingFullLog("risk", [("orders", hdr)])
    caplog.set_level(logging.INFO, logger="bot4.stage")
    t = 1_000_000_000
    rl.poll(t)
    assert not caplog.records
    hdr[W_PRODUCER_FULL_WAITS] += 1
    rl.poll(t + 1)
    hdr[W_PRODUCER_FULL_WAITS] += 2
    rl.poll(t + 500_000_000)
    rl.poll(t + 500_000_000 + QUIET_NS)  # quiet long enough: the episode ends
    start, end = caplog.records
    assert (start.levelno, start.event, start.fields["ring"]) == (
        logging.WARNING,
        "ring_full",
        "orders",
    )
    assert end.levelno == logging.INFO and end.event == "ring_full_end"
    assert end.fields["full_waits"] == 3 and end.fields["rejections"] == 0
    caplog.clear()
    # two more episodes within REPEAT_NS of the first line: not logged one by one
    base = t + 2 * QUIET_NS
    for k in range(2):
        hdr[W_PRODUCER_REJECTIONS] += 10
        rl.poll(base + k * 2 * QUIET_NS)
        rl.poll(base + k * 2 * QUIET_NS + QUIET_NS)
    assert not caplog.records
    hdr[W_PRODUCER_REJECTIONS] += 1
    rl.poll(t + 1 + REPEAT_NS)
    (again,) = caplog.records
    assert again.levelno == logging.WARNING and again.fields["episodes_unlogged"] == 2


def test_breaker_and_trading_state_changes_logged_once_at_their_level(caplog):
    from bot4.records.errors import Code
    from bot4.shm import breakers as B
    from bot4.shm import trading_state as T
    from bot4.stages.state_log import POLL_NS, SharedStateLog

    cfgs = [B.BreakerConfig(name="venue"), B.BreakerConfig(name="db")]
    brk = B.local_breakers(cfgs, 1)
    ts = np.zeros(T.trading_bytes(3) // 8, np.uint64)
    T.init_trading_state(ts, 3, 1)
    watch = SharedStateLog(brk, ts, lambda i: f"SYM{i}")
    caplog.set_level(logging.INFO, logger="bot4.stage")
    now = 10 * POLL_NS
    watch.poll(now)
    assert not caplog.records  # nothing changed
    B.breaker_trip(brk, 1, now)
    T.set_state(ts, 2, T.HALTED, int(Code.MARKET_DATA_STALE), T.SRC_RISK)
    watch.poll(now + 1)  # within POLL_NS of the last look: not yet
    assert not caplog.records
    watch.poll(now + POLL_NS)
    trip, halt = caplog.records
    assert trip.levelno == logging.WARNING and trip.event == "breaker_transition"
    assert trip.getMessage() == "breaker db: closed -> open (operator trip: open until reset)"
    assert (
        trip.fields["breaker"] == "db" and trip.fields["forced"] and trip.fields["transitions"] == 1
    )
    assert halt.levelno == logging.WARNING and halt.event == "trading_state"
    assert halt.getMessage() == (
        "trading instrument 2 (SYM2): active -> halted by risk (MARKET_DATA_STALE)"
    )
    caplog.clear()
    B.breaker_reset(brk, 1, now)
    T.set_state(ts, 2, T.ACTIVE, 0, T.SRC_OPERATOR)
    watch.poll(now + 2 * POLL_NS)
    reset, resume = caplog.records
    assert reset.levelno == logging.INFO and reset.fields["new"] == "closed"
    assert resume.levelno == logging.INFO and resume.fields["source"] == "operator"
    caplog.clear()
    watch.poll(now + 3 * POLL_NS)
    assert not caplog.records  # each change once
