"""The pipeline trading over the wire: ``bot4 run`` with bot4/config/wire.toml (md_gateway,
order_gateway) against ``bot4 exchange serve`` on loopback.

One run proves, together:

* orders are filled over OUCH / SoupBinTCP by the simulator's matching engine;
* the simulator drops every 50th MoldUDP64 packet: md_gateway detects each gap and recovers
  it through the re-request server (nothing lost: it decodes every message, and no
  execution or delete names an order it does not know);
* order_gateway SIGKILLed mid-run and restarted: it logs in again, replays the session
  from sequence 1 and publishes nothing twice (the OMS sees no repeated execution id and
  no identity conflict), every order the OMS sent exists exactly once at the exchange,
  and the fills journalled equal the exchange's fills (count, net quantity = position);
* md_gateway SIGKILLed and restarted: it rebuilds its books from sequence 1 before
  publishing again;
* with the database on, the events database holds each order and each execution once and
  the exchange's position.

A second run cuts the OUCH session at random points (seeded) at least 20 times during the
flow, with the same identity checks, the database's included.

A third run has the simulator break every 2nd execution (OUCH Broken Trade) while
order_gateway is SIGKILLed twice: each bust is one EXEC_BROKEN in the journal and one row in
the database, and risk's and the database's positions reverse the broken fills.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
from importlib import resources

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.records import ACTION_NEW, EXEC_FILL, EXEC_PARTIAL_FILL, RT_EXEC_REPORT, RT_ORDER
from bot4.shm.segment import instance_segments
from tests.conftest import scalar
from tests.data_paths import lobster_dir
from tests.seeds import seeded_rng
from tests.system.pipeline_util import BOT4, LoggedPopen, stage_block, wait_running

pytestmark = [pytest.mark.system, pytest.mark.timeout(400)]

MD, ORDER_GW = 0, 4  # stage indexes in wire.toml


def free_port(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wire_topology(instance: str, md: int, rr: int, ouch: int, params=None) -> str:
    """wire.toml on these ports; ``params``: {stage name: {param: value}} to override."""
    data = tomllib.loads(resources.files("bot4.config").joinpath("wire.toml").read_text())
    lines = [f'instance = "{instance}"']
    for st in data["stage"]:
        p = st.setdefault("params", {})
        p.update((params or {}).get(st["name"], {}))
        if st["kind"] == "md_gateway":
            p.update(listen=f"127.0.0.1:{md}", rerequest=f"127.0.0.1:{rr}")
        elif st["kind"] == "order_gateway":
            p.update(connect=f"127.0.0.1:{ouch}")
        lines.append("[[stage]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in st.items()]
    for r in data["ring"]:
        lines.append("[[ring]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in r.items()]
    return "\n".join(lines) + "\n"


def summary(log: str, stage: str, marker: str) -> dict:
    """The last ``marker`` line of ``stage``: a dict printed as JSON or as a Python repr."""
    lines = [ln for ln in log.splitlines() if re.search(rf"{stage}\[\d+\] INFO {marker}", ln)]
    assert lines, f"no '{marker}' line from {stage} in the log"
    body = lines[-1][lines[-1].index("{") :]
    try:
        return json.loads(body)
    except ValueError:
        return ast.literal_eval(body)


def stats_counters(instance: str) -> dict[str, dict]:
    """Each stage's named counters as ``bot4 stats --json`` shows them (read-only)."""
    out = subprocess.run(
        [*BOT4, "stats", "--instance", instance, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {s["name"]: s["counters"] for s in json.loads(out.stdout)["stages"]}


def wait_counters(instance: str, stage: str, ready, timeout: float, what: str) -> dict:
    """Poll the stages' counters in-process (what ``bot4 stats --json`` prints, read the same
    read-only way) until ``ready(counters of stage)``, then read them once through the
    command itself: what it shows is what the test checks, without an interpreter start
    per poll."""
    from bot4.ops_stats import snapshot

    deadline = time.monotonic() + timeout
    while not ready(c := {s["name"]: s["counters"] for s in snapshot(instance)["stages"]}[stage]):
        assert time.monotonic() < deadline, f"{what} within {timeout} s: {c}"
        time.sleep(0.1)
    return stats_counters(instance)[stage]


def kill_and_wait_restart(instance: str, index: int) -> None:
    os.kill(stage_block(instance, index)["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        b = stage_block(instance, index)
        if b["restarts"] >= 1 and b["state"] == 2:
            return
        assert time.monotonic() < deadline, f"stage {index} not restarted"
        time.sleep(0.05)


def start_exchange(tmp_path, procs, *faults: str):
    """``bot4 exchange serve`` on free loopback ports; returns (process, md, rr, ouch)."""
    md, rr = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    ouch = free_port(socket.SOCK_STREAM)
    ready = tmp_path / "exchange.json"
    ex = procs.add(
        LoggedPopen(
            [
                *BOT4,
                "exchange",
                "serve",
                str(lobster_dir() / "amzn_level1"),
                "--md-to",
                f"127.0.0.1:{md}",
                "--rerequest-port",
                str(rr),
                "--ouch-port",
                str(ouch),
                "--rate",
                "3000",
                "--heartbeat",
                "0.1",
                "--ready-file",
                str(ready),
                "--start-on-login",  # the day starts with the pipeline, however slow its start
                *faults,
            ],
            tmp_path / "exchange.log",
            start_new_session=True,
        )  # fmt: skip
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert ex.poll() is None, ex.communicate()[0]
        assert time.monotonic() < deadline, "exchange not serving within 120 s"
        time.sleep(0.1)
    return ex, md, rr, ouch


def run_pipeline(
    instance, procs, tmp_path, ex, md, rr, ouch, during=None, trade_s=6.0, params=None, db=False
):
    """``bot4 run`` of wire.toml against the exchange: once reports flow, ``during(instance)``
    runs, trading goes on ``trade_s`` more, then SIGTERM drains the pipeline (timed from
    the flow, not the start: a loaded machine starts stages slowly). Returns (pipeline
    log, exchange log, run report)."""
    topo = tmp_path / "wire.toml"
    topo.write_text(wire_topology(instance, md, rr, ouch, params))
    p = LoggedPopen(
        [*BOT4, "run", str(topo), "--quiet", "--report", str(tmp_path / "r.json")]
        + ([] if db else ["--no-db"]),
        tmp_path / "pipeline.log", start_new_session=True,
    )  # fmt: skip
    p.group = True
    procs.add(p)
    wait_running(instance)
    deadline = time.monotonic() + 60
    while stage_block(instance, ORDER_GW)["records_out"] == 0:  # reports flow
        assert time.monotonic() < deadline, "no execution report within 60 s"
        time.sleep(0.05)
    if during is not None:
        during(instance)
    time.sleep(trade_s)
    p.send_signal(signal.SIGTERM)
    log, _ = p.communicate(timeout=300)
    ex.send_signal(signal.SIGTERM)
    exlog, _ = ex.communicate(timeout=60)
    assert p.returncode == 0, log[-4000:]
    assert "Traceback" not in log + exlog
    return log, exlog, json.loads((tmp_path / "r.json").read_text())


def check_trading_identity(log, exlog, tmp_path, instance) -> tuple[dict, dict]:
    """Every order once at the exchange, no execution published twice, journal fills =
    the exchange's fills, risk's position = the exchange's net. Returns the exchange's
    and the (last) order gateway's summaries."""
    exch = ast.literal_eval(re.findall(r"exchange summary (\{.*\})", exlog)[-1])
    ogw = summary(log, "order_gateway", "order_gateway summary")
    print("exchange", exch, "\norder_gateway", ogw)
    assert exch["fills"] > 0, "nothing traded over the wire"
    assert ogw["errors"] == 0 and ogw["bad_frames"] == 0
    assert exch["errors"] == 0 and exch["bad_frames"] == 0
    orders = summary(log, "orders", "orders summary")
    assert orders["counters"]["duplicate_execs"] == 0
    assert orders["counters"]["exec_id_conflicts"] == 0
    journal = tmp_path / "bot4-data" / "journal" / instance
    fills, news, exec_ids = [], set(), []
    for _pos, rtype, recs in JournalReader(journal):
        if rtype == RT_EXEC_REPORT:
            wire = recs[recs["venue"] == 1]
            exec_ids += [int(x) for x in wire["exec_id"]]
            fills.append(wire[np.isin(wire["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL))])
        elif rtype == RT_ORDER:
            news |= {int(x) for x in recs[recs["action"] == ACTION_NEW]["client_order_id"]}
    assert len(exec_ids) == len(set(exec_ids)), "an execution id journalled twice"
    fills = np.concatenate(fills)
    assert len(fills) == exch["fills"]
    net = int((fills["last_qty"] * fills["side"].astype(np.int64)).sum())
    assert {k: v for k, v in exch["net"].items() if v} == ({"bot4:AMZN": net} if net else {})
    assert exch["enters"] == len(news), "an order missing or entered twice at the exchange"
    # positions: what persistence journalled (and loads) equals the exchange's fills. Risk's
    # summary is not compared: risk stops before the orders stage's drain, whose cancel-all
    # and the fills the feed still brings meanwhile reach only the journal
    sink = summary(log, "persistence", "summary")
    assert {k: v for k, v in sink["net_filled"].items() if v} == ({"2": net} if net else {})
    assert not instance_segments(instance)
    return exch, ogw


def check_database(log, exch) -> None:
    """The events database (the session's server, BOT4_DSN) holds each order once, each
    execution once and the exchange's position; the loader reconciled with the journal."""
    dsn = os.environ["BOT4_DSN"]
    sink = summary(log, "persistence", "summary")["database"]
    assert sink["reconciled"] and sink["conflicts"] == 0 and sink["rejected"] == 0
    assert scalar(dsn, "SELECT count(*) FROM orders WHERE action = 1") == exch["enters"]
    fills = scalar(dsn, "SELECT count(*) FROM exec_reports WHERE venue = 1 AND last_qty > 0")
    assert fills == exch["fills"]
    twice = "SELECT count(*) - count(DISTINCT (venue, exec_session, exec_id)) FROM exec_reports"
    assert scalar(dsn, twice) == 0
    pos = scalar(dsn, "SELECT coalesce(sum(qty), 0) FROM positions WHERE instrument = 2")
    assert pos == exch["net"].get("bot4:AMZN", 0)


def test_pipeline_trades_over_the_wire_through_dropped_packets_and_gateway_kills(
    instance, procs, tmp_path
):
    # 1500 msg/s: the day (~90 k messages) outlasts two kills and restarts on a slow machine
    ex, md, rr, ouch = start_exchange(tmp_path, procs, "--drop-every", "50", "--rate", "1500")

    def kills(instance):
        # the gateways' live counters in bot4 stats: the dropped packets' gaps recovered
        md = wait_counters(instance, "md_gateway", lambda c: c["requests"] > 0, 60,
                           "no re-request in bot4 stats")  # fmt: skip
        print("bot4 stats md_gateway", md)
        assert md["gaps"] > 0 and md["requested"] > 0 and md["packets"] > 0
        assert md["next_seq"] > 1 and md["bad_packets"] == 0
        kill_and_wait_restart(instance, ORDER_GW)
        time.sleep(1.0)
        kill_and_wait_restart(instance, MD)
        # the new md_gateway publishes again (after its rebuild): a loaded machine, or a
        # numba cache another checkout made stale, can take many seconds before it binds
        out0 = stage_block(instance, MD)["records_out"]
        deadline = time.monotonic() + 120
        while stage_block(instance, MD)["records_out"] <= out0:
            assert time.monotonic() < deadline, "the restarted md_gateway never published"
            time.sleep(0.1)

    # with the database on (the session's server, BOT4_DSN): the loads are checked too. 3 s
    # of trading after the restarted md_gateway publishes again: at 1500 msg/s with every
    # 50th packet dropped, it recovers gaps of its own in that time many times over
    log, exlog, report = run_pipeline(instance, procs, tmp_path, ex, md, rr, ouch, kills,
                                      trade_s=3.0, db=True)  # fmt: skip
    assert report["stages"]["order_gateway"]["restarts"] == 1
    assert report["stages"]["md_gateway"]["restarts"] == 1
    exch, ogw = check_trading_identity(log, exlog, tmp_path, instance)
    check_database(log, exch)
    assert exch["dropped"] > 0 and exch["rerequests"] > 0
    # the restarted md_gateway rebuilt its books, recovered every gap, knew every order
    mdg = summary(log, "md_gateway", "md_gateway summary")
    print("md_gateway", mdg)
    assert mdg["rebuilt"] > 0 and mdg["gaps"] > 0
    assert mdg["unknown_ref"] == 0 and mdg["bad_length"] == 0
    # the restarted order_gateway replayed the session from 1 and republished nothing
    assert ogw["replayed"] > 0 and ogw["logins"] == 1 and ogw["disconnects"] == 0


def test_order_session_cut_at_random_points_enters_each_order_once(instance, procs, tmp_path):
    """The exchange ends each OUCH connection after a random number (1..8, seeded) of the
    sequenced messages it sends (a replay included), cancelling our resting orders each
    time: the gateway logs in again at its next expected sequence number over and over
    during the flow (>= 20 cuts), resending what was in flight by token."""
    _rng, seed = seeded_rng("session cuts")
    ex, md, rr, ouch = start_exchange(
        tmp_path, procs, "--disconnect-random", "8", "--seed", str(seed)
    )

    def flow(instance):  # enough reports for >= 20 cuts (1..8 messages each), however slow
        deadline = time.monotonic() + 150
        while stage_block(instance, ORDER_GW)["records_out"] < 150:
            assert time.monotonic() < deadline, "fewer than 150 reports within 150 s"
            time.sleep(0.1)
        # the session cuts are live in bot4 stats (counters the stage writes at housekeeping)
        og = wait_counters(instance, "order_gateway", lambda c: c["disconnects"] > 0, 30,
                           "no disconnect in bot4 stats")  # fmt: skip
        print("bot4 stats order_gateway", og)
        assert og["connects"] >= og["logins"] >= 1 and og["sent"] > 0 and og["reports"] > 0
        assert og["bad_frames"] == 0 and og["errors"] == 0

    # a position limit the flow does not reach: orders keep coming (and fills with them)
    log, exlog, report = run_pipeline(instance, procs, tmp_path, ex, md, rr, ouch, flow,
                                      trade_s=2.0, params={"risk": {"max_position": 100_000}},
                                      db=True)  # fmt: skip
    assert report["stages"]["order_gateway"]["restarts"] == 0
    exch, ogw = check_trading_identity(log, exlog, tmp_path, instance)
    check_database(log, exch)
    assert ogw["disconnects"] >= 20 and exch["logins"] >= 20


def test_exchange_busts_trades_and_risk_db_reverse_each_once_through_gateway_kills(
    instance, procs, tmp_path
):
    """The simulator breaks every 2nd execution (an OUCH Broken Trade right after its
    Executed, ``--bust-every 2``) while order_gateway is SIGKILLed twice during the flow:
    each bust becomes one EXEC_BROKEN (exec_id 2^62 | the match number of an execution
    journalled before it), the OMS counts each once without reopening anything, the
    database holds each once and its positions equal the exchange's net (busts reversed),
    and risk's position is the journal's net (busts reversed) at the point risk stopped."""
    from bot4.records import BROKEN_EXEC_ID_BIT, EXEC_BROKEN

    ex, md, rr, ouch = start_exchange(tmp_path, procs, "--bust-every", "2")

    def kills(instance):
        for k in (1, 2):
            out0 = stage_block(instance, ORDER_GW)["records_out"]
            deadline = time.monotonic() + 120
            while stage_block(instance, ORDER_GW)["records_out"] < out0 + 12:
                assert time.monotonic() < deadline, f"no reports before kill {k} within 120 s"
                time.sleep(0.05)
            os.kill(stage_block(instance, ORDER_GW)["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 120
            while not (
                stage_block(instance, ORDER_GW)["restarts"] >= k
                and stage_block(instance, ORDER_GW)["state"] == 2
            ):
                assert time.monotonic() < deadline, f"order_gateway not restarted after kill {k}"
                time.sleep(0.05)
            # running is not logged in: the restarted gateway logs in after it reports
            # running, and a drain that began before its login left the orders stage's
            # CANCEL_ALL without a session; an order filled after the logout and its bust
            # waited for a next login (OMS 28 vs exchange 29 busts under load)
            wait_counters(instance, "order_gateway", lambda c: c["logins"] >= 1, 120,
                          f"order_gateway not logged in after kill {k}")  # fmt: skip

    # 3 s of trading after the second login (each kill came after 12 more reports)
    log, exlog, report = run_pipeline(instance, procs, tmp_path, ex, md, rr, ouch, kills,
                                      trade_s=3.0, params={"risk": {"max_position": 100_000}},
                                      db=True)  # fmt: skip
    assert report["stages"]["order_gateway"]["restarts"] == 2
    exch = ast.literal_eval(re.findall(r"exchange summary (\{.*\})", exlog)[-1])
    print("exchange", exch)
    assert exch["fills"] >= 2 and exch["busts"] == exch["fills"] // 2
    orders = summary(log, "orders", "orders summary")["counters"]
    assert orders["duplicate_execs"] == 0 and orders["exec_id_conflicts"] == 0
    assert orders["broken_fills"] == exch["busts"] and orders["illegal_transitions"] == 0

    journal = tmp_path / "bot4-data" / "journal" / instance
    wire = np.concatenate(
        [r[r["venue"] == 1] for _p, t, r in JournalReader(journal) if t == RT_EXEC_REPORT]
    )
    assert len(set(wire["exec_id"].tolist())) == len(wire), "an execution journalled twice"
    fills = wire[np.isin(wire["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL))]
    busts = wire[wire["exec_type"] == EXEC_BROKEN]
    assert len(fills) == exch["fills"] and len(busts) == exch["busts"]
    by_id = {int(f["exec_id"]): f for f in fills}
    for b in busts:  # each names a fill journalled before it, with its quantity and price
        f = by_id[int(b["exec_id"]) ^ BROKEN_EXEC_ID_BIT]
        assert int(f["seq"]) < int(b["seq"])
        assert (b["last_qty"], b["last_price"], b["side"]) == (
            f["last_qty"], f["last_price"], f["side"])  # fmt: skip
        assert int(b["client_order_id"]) == int(f["client_order_id"])
    signed = wire["last_qty"].astype(np.int64) * wire["side"].astype(np.int64)
    signed = np.where(wire["exec_type"] == EXEC_BROKEN, -signed, signed)
    signed = np.where(np.isin(wire["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_BROKEN)),
                      signed, 0)  # fmt: skip
    net = int(signed.sum())
    assert {k: v for k, v in exch["net"].items() if v} == ({"bot4:AMZN": net} if net else {})
    sink = summary(log, "persistence", "summary")
    assert {k: v for k, v in sink["net_filled"].items() if v} == ({"2": net} if net else {})

    # risk reversed the busts it received: its final position and bust count are those of a
    # prefix of the OMS's reports (risk stops before the orders stage's drain)
    risk = summary(log, "risk", "risk summary")
    pos = risk["positions"].get("AMZN", {}).get("position", 0)
    order = np.argsort(wire["seq"])
    prefix_net = np.concatenate([[0], np.cumsum(signed[order])])
    prefix_busts = np.concatenate([[0], np.cumsum(wire["exec_type"][order] == EXEC_BROKEN)])
    print("risk", risk["positions"], "broken_fills", risk["broken_fills"])
    assert any(
        int(n) == pos and int(b) == risk["broken_fills"]
        for n, b in zip(prefix_net, prefix_busts, strict=True)
    ), "risk's position is no prefix of the journal's fills with busts reversed"
    assert risk["broken_fills"] > 0

    dsn = os.environ["BOT4_DSN"]
    db = summary(log, "persistence", "summary")["database"]
    assert db["reconciled"] and db["conflicts"] == 0 and db["rejected"] == 0
    assert scalar(dsn, "SELECT count(*) FROM exec_reports WHERE exec_type = 12") == exch["busts"]
    assert scalar(dsn, "SELECT count(*) FROM broken_fills") == exch["busts"]
    twice = "SELECT count(*) - count(DISTINCT (venue, exec_session, exec_id)) FROM exec_reports"
    assert scalar(dsn, twice) == 0
    pos_db = scalar(dsn, "SELECT coalesce(sum(qty), 0) FROM positions WHERE instrument = 2")
    assert pos_db == exch["net"].get("bot4:AMZN", 0)
    assert not instance_segments(instance)


def test_exchange_busts_one_chosen_fill_end_to_end(instance, procs, tmp_path):
    """``--bust-fill 3`` breaks the day's 3rd execution and nothing else: the exchange logs
    its match number, the journal holds one EXEC_BROKEN naming exactly that fill (the 3rd
    journalled), risk counts one bust and its position is a prefix of the journal's net with
    it reversed, the database's broken_fills view pairs that fill with its bust and its
    positions equal the exchange's net."""
    from bot4.ops_stats import snapshot
    from bot4.records import BROKEN_EXEC_ID_BIT, EXEC_BROKEN

    ex, md, rr, ouch = start_exchange(tmp_path, procs, "--bust-fill", "3")
    seen = {}

    def watch(instance):  # bot4 stats shows the bust live, in the orders stage's counters
        deadline = time.monotonic() + 120
        while True:
            st = {s["name"]: s for s in snapshot(instance)["stages"]}
            seen.update(st["orders"]["counters"])
            if seen.get("broken_fills"):
                return
            assert time.monotonic() < deadline, f"no bust in bot4 stats within 120 s: {seen}"
            time.sleep(0.1)

    # ``watch`` returns once the OMS has counted the bust (its counters trail its work), and
    # the OMS put it on risk's fills ring as it took it: 2 s of trading after that are plenty
    log, exlog, report = run_pipeline(instance, procs, tmp_path, ex, md, rr, ouch, watch,
                                      trade_s=2.0, params={"risk": {"max_position": 100_000}},
                                      db=True)  # fmt: skip
    assert seen["broken_fills"] == 1 and seen["exec_reports"] > 0, seen
    exch = ast.literal_eval(re.findall(r"exchange summary (\{.*\})", exlog)[-1])
    print("exchange", exch)
    assert exch["fills"] >= 3 and exch["busts"] == 1
    broke = re.findall(r"breaking execution (\d+) \(fill (\d+),", exlog)
    assert len(broke) == 1 and broke[0][1] == "3", broke
    match = int(broke[0][0])

    journal = tmp_path / "bot4-data" / "journal" / instance
    wire = np.concatenate(
        [r[r["venue"] == 1] for _p, t, r in JournalReader(journal) if t == RT_EXEC_REPORT]
    )
    wire = wire[np.argsort(wire["seq"])]
    fills = wire[np.isin(wire["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL))]
    busts = wire[wire["exec_type"] == EXEC_BROKEN]
    assert len(busts) == 1 and len(fills) == exch["fills"]
    assert int(fills[2]["exec_id"]) == match
    assert int(busts[0]["exec_id"]) == BROKEN_EXEC_ID_BIT | match
    assert (busts[0]["last_qty"], busts[0]["last_price"], busts[0]["side"]) == (
        fills[2]["last_qty"], fills[2]["last_price"], fills[2]["side"])  # fmt: skip

    signed = wire["last_qty"].astype(np.int64) * wire["side"].astype(np.int64)
    signed = np.where(wire["exec_type"] == EXEC_BROKEN, -signed, signed)
    signed = np.where(np.isin(wire["exec_type"], (EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_BROKEN)),
                      signed, 0)  # fmt: skip
    net = int(signed.sum())
    assert {k: v for k, v in exch["net"].items() if v} == ({"bot4:AMZN": net} if net else {})
    orders = summary(log, "orders", "orders summary")["counters"]
    assert orders["broken_fills"] == 1 and orders["illegal_transitions"] == 0
    risk = summary(log, "risk", "risk summary")
    pos = risk["positions"].get("AMZN", {}).get("position", 0)
    prefix_net = np.concatenate([[0], np.cumsum(signed)])
    prefix_busts = np.concatenate([[0], np.cumsum(wire["exec_type"] == EXEC_BROKEN)])
    print("risk", risk["positions"], "broken_fills", risk["broken_fills"])
    assert risk["broken_fills"] == 1
    assert any(int(n) == pos and int(b) == 1 for n, b in zip(prefix_net, prefix_busts,
                                                              strict=True))  # fmt: skip

    dsn = os.environ["BOT4_DSN"]
    assert scalar(dsn, "SELECT count(*) FROM broken_fills") == 1
    assert scalar(dsn, "SELECT exec_id FROM broken_fills") == match
    pos_db = scalar(dsn, "SELECT coalesce(sum(qty), 0) FROM positions WHERE instrument = 2")
    assert pos_db == exch["net"].get("bot4:AMZN", 0)
    assert not instance_segments(instance)
