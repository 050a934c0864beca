"""``bot4 replay`` with a registry slot: the live routing and the automatic rollout on the
simulated clock (bot4/replay/models.py). Deterministic scenarios on a market whose book
imbalance announces the next move (tests/unit/model_scenarios.py), 1000 rounds over two
instruments (4000 quotes), checkpoints every 30 challenger trades, markout horizon 1 fill:

* a challenger worse by construction is rolled back within 60 of its trades, the reason
  in the replay's registry events and its report, its open orders cancelled, its
  inventory the champion's; two runs give the same journal bytes;
* an equal challenger is not rolled back and completes its canary ramp (promoted);
* a shadow challenger never produces an order; it is judged on its would-be trades (an
  equal one passes every look and stays, a worse one is taken out);
* an A/B split's fraction is the configured one within binomial tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from bot4.journal import JournalReader
from bot4.models.cli import main as models_main
from bot4.records import ACTION_CANCEL, ACTION_NEW, EXEC_CANCELLED, RT_EXEC_REPORT, RT_ORDER
from bot4.replay.runner import replay
from bot4.stages.signals_models import read_shadow_log
from tests.unit.model_scenarios import LATENCY, challenge, imbalance_market, registry, topology

CYCLES = 1000
SEED = 7  # the market's draws (fixed: the scenarios are deterministic)
WITHIN_TRADES = 60  # the stated bound: a worse challenger is out by its 60th trade


def run(tmp_path, name, kind, mode, qty=100, **kw):
    d = tmp_path / name
    reg = registry(d / "reg", kind)
    challenge(reg, mode, **kw)
    out = replay(
        imbalance_market(CYCLES, SEED), d / "out", topology=topology(d, reg.root, qty=qty),
        latency=LATENCY, progress=None,
    )  # fmt: skip
    return out, reg


def journal(out_dir):
    orders, reports = [], []
    for _f, rtype, recs in JournalReader(out_dir / "journal"):
        if rtype == RT_ORDER:
            orders.append(recs)
        elif rtype == RT_EXEC_REPORT:
            reports.append(recs)
    return np.concatenate(orders), np.concatenate(reports)


def digest(out_dir) -> str:
    h = hashlib.sha256()
    for p in sorted((out_dir / "journal").iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()


def sub_positions_sum_to_the_total(doc) -> None:
    total: dict[int, int] = {}
    for r in doc["models"]["sub_positions"]:
        total[r["instrument"]] = total.get(r["instrument"], 0) + r["position"]
    book = {p["instrument"]: p["position"] for p in doc["positions"].values()}
    assert {i: q for i, q in total.items() if q} == {i: q for i, q in book.items() if q}


def test_worse_challenger_is_rolled_back_within_60_trades_with_reason_cancels_and_hand_over(
    tmp_path, capsys
):
    # qty 300 against a 200 lot touch: an order on the signal's side leaves 100 resting
    out, reg = run(tmp_path, "a", "worse", "canary", qty=300, ramp=(20, 50, 80))
    doc = out.report.doc
    m = doc["models"]
    print("\n".join(out.report.summary_lines()))
    rb = [look for look in m["looks"] if look["rollback"]]
    assert len(rb) == 1 and rb[0]["action"] == "rolled_back"
    look = rb[0]
    assert look["trades"]["challenger"] <= WITHIN_TRADES
    assert {t["test"] for t in look["triggers"]} & {"welch", "sharpe", "accuracy", "profit_factor"}
    assert all(t["p"] < m["config"]["alpha_per_look"] for t in look["triggers"])
    assert m["end"] == {**m["end"], "champion": 1, "challenger": 0}
    # the reason in the replay's model journal (its registry's event log), on the sim clock
    evs = [
        json.loads(x) for x in (out.out_dir / "models" / "events.jsonl").read_text().splitlines()
    ]
    ev = [e for e in evs if e["event"] == "rolled_back"]
    assert len(ev) == 1 and ev[0]["model"] == 2 and ev[0]["who"] == "bot4-replay"
    assert ev[0]["why"].startswith("automatic: ") and "p=" in ev[0]["why"]
    assert ev[0]["ts_ns"] == look["at_ns"]  # the simulated time, not the wall clock
    assert ev[0]["details"]["triggers"] == look["triggers"]
    assert ev[0]["details"]["inventory_to"] == 1
    # the source registry is untouched: the challenger still runs there
    a = reg.assignment("sig")
    assert (a.challenger, a.mode, a.pct) == (2, "canary", 20.0)
    # its open orders cancelled through the OMS (journalled), nothing of it traded after
    orders, reports = journal(out.out_dir)
    assert look["cancelled_orders"] >= 1
    cancels = orders[orders["action"] == ACTION_CANCEL]
    mine = set(
        orders[(orders["action"] == ACTION_NEW) & (orders["model_id"] == 2)][
            "client_order_id"
        ].tolist()
    )
    cancelled = set(cancels["orig_client_order_id"].tolist()) & mine
    assert len(cancelled) == look["cancelled_orders"]
    done = reports[reports["exec_type"] == EXEC_CANCELLED]["client_order_id"].tolist()
    assert cancelled <= set(done)
    new = orders[orders["action"] == ACTION_NEW]
    assert (new[new["ts_risk_ns"] > look["at_ns"]]["model_id"] == 1).all()
    assert (new[new["ts_risk_ns"] > look["at_ns"]]).size > 100
    # the champion took its inventory; sub-positions add up to the book's positions
    assert m["models"]["1"]["took_inventory_of"] == [2]
    assert m["models"]["2"]["positions"] == {}
    assert look["inventory_to"] == 1
    sub_positions_sum_to_the_total(doc)
    # bot4 models status on the replay's registry and journal: the same attribution
    capsys.readouterr()
    args = ["status", "--registry", str(out.out_dir / "models"), "--slot", "sig"]
    assert models_main([*args, "--journal", str(out.out_dir / "journal"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["assignment"]["challenger"] == 0 and st["sub_positions"]["handed_over"] == {"2": 1}
    rows = st["sub_positions"]["rows"]
    assert all(r["position"] == 0 for r in rows if r["model"] == 2)
    assert sum(r["fills"] for r in rows) == doc["summary"]["fills"]
    assert models_main([*args, "--journal", str(out.out_dir / "journal")]) == 0
    text = capsys.readouterr().out
    assert "model 2 rolled back: its inventory is model 1's" in text
    # bot4 models watch (the same monitor following a journal, as live) on the source
    # registry, over the replay's journal: the same decision at the same look
    capsys.readouterr()
    w = ["watch", "--registry", str(reg.root), "--slot", "sig", "--no-db", "--once"]
    w += ["--journal", str(out.out_dir / "journal"), "--horizon", "1"]
    assert models_main([*w, "--min-trades", "30", "--checkpoint-trades", "30"]) == 0
    text = capsys.readouterr().out
    print(text)
    assert f"checkpoint {look['checkpoint']} (" in text and "ROLLBACK" in text
    assert reg.assignment("sig").challenger == 0
    assert reg.events()[-1]["event"] == "rolled_back"
    # deterministic: the same run again, the same journal bytes and rollout
    again, _ = run(tmp_path, "b", "worse", "canary", qty=300, ramp=(20, 50, 80))
    assert digest(out.out_dir) == digest(again.out_dir)
    assert again.report.doc["models"] == m


def test_equal_challenger_is_not_rolled_back_and_completes_its_canary_ramp(tmp_path):
    out, _ = run(tmp_path, "a", "equal", "canary", ramp=(20, 50, 80))
    m = out.report.doc["models"]
    print("\n".join(out.report.summary_lines()))
    assert not any(look["rollback"] for look in m["looks"])
    assert [look["action"] for look in m["looks"]] == ["ramped", "ramped", "promoted"]
    assert [look.get("pct") for look in m["looks"][:2]] == [50.0, 80.0]
    html = out.html_path.read_text()
    assert "Models: routing and rollout" in html and "promoted" in html
    assert m["end"]["champion"] == 2 and m["end"]["challenger"] == 0
    orders, _ = journal(out.out_dir)
    new = orders[orders["action"] == ACTION_NEW]
    after = new[new["ts_risk_ns"] > m["looks"][-1]["at_ns"]]
    assert after.size > 100 and (after["model_id"] == 2).all()  # the new champion decides
    sub_positions_sum_to_the_total(out.report.doc)


@pytest.mark.parametrize("kind", ["equal", "worse"])
def test_shadow_challenger_never_produces_an_order_and_is_judged_on_would_be_trades(tmp_path, kind):
    out, _ = run(tmp_path, "a", kind, "shadow")
    print("\n".join(out.report.summary_lines()))
    orders, _ = journal(out.out_dir)
    new = orders[orders["action"] == ACTION_NEW]
    assert new.size > 1000 and set(new["model_id"].tolist()) == {1}
    sig = out.report.doc["run"]["stages"]["signals"]
    assert sig["shadow_intents"] >= 30 and sig["challenger_intents"] == 0
    shadow = read_shadow_log(out.out_dir / "models" / "shadow" / sig["shadow_log"].split("/")[-1])
    assert len(shadow) == sig["shadow_intents"] and set(shadow["model_version"].tolist()) == {2}
    m = out.report.doc["models"]
    r = m["models"]["2"]
    assert r["orders"] == 0 and r["fills"] == 0 and r["positions"] == {}
    assert r["would_be_fills"] == r["would_be_intents"] == sig["shadow_intents"]  # crossing
    if kind == "equal":  # judged on every look, never taken out, still a shadow
        assert len(m["looks"]) == 10 and not any(look["rollback"] for look in m["looks"])
        assert sum(look["passed"] for look in m["looks"]) >= 9  # the first may lack trades
        assert m["end"]["mode"] == "shadow" and m["end"]["challenger"] == 2
    else:  # taken out at its first look; it never traded
        assert [look["rollback"] for look in m["looks"]] == [True]
        assert m["looks"][0]["shadow"] and "p=" in m["looks"][0]["reason"]
        assert m["end"]["challenger"] == 0 and r["trades"] == m["looks"][0]["trades"]["challenger"]


@pytest.mark.parametrize("pct", [30.0])
def test_ab_split_fraction_matches_configuration_within_binomial_tolerance(tmp_path, pct):
    out, _ = run(tmp_path, "a", "equal", "ab", pct=pct)
    sig = out.report.doc["run"]["stages"]["signals"]
    p, n = pct / 100, sig["decided_ticks"]
    sd = math.sqrt(p * (1 - p) / n)
    got = sig["challenger_ticks"] / n
    orders, _ = journal(out.out_dir)
    new = orders[orders["action"] == ACTION_NEW]
    frac = float((new["model_id"] == 2).mean())
    print(f"A/B {pct}%: {got:.4f} of {n} decided quotes, {frac:.4f} of {new.size} orders "
          f"(binomial sd {sd:.4f})")  # fmt: skip
    assert abs(got - p) < 4 * sd
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / new.size)
    assert not any(look["rollback"] for look in out.report.doc["models"]["looks"])
