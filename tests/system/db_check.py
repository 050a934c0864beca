"""Exactly once, checked: what a journal holds against what the databases hold."""

from __future__ import annotations

from pathlib import Path

from bot4.journal import JournalReader
from bot4.records import ACTION_NEW, RT_EXEC_REPORT, RT_OPERATOR_ACTION, RT_ORDER, RT_RISK_DECISION
from tests.db.conftest import ledger_check, load_counts, query


def journal_identities(journal: Path) -> dict[str, set]:
    """Each loadable event of the journal by the identity the loader keys it on."""
    ids: dict[str, set] = {k: set() for k in ("orders", "order_actions", "exec_reports",
                                               "risk_decisions", "operator_actions")}  # fmt: skip
    fills = set()
    for _pos, rtype, recs in JournalReader(journal):
        for r in recs:
            if rtype == RT_ORDER:
                key = (int(r["client_order_id"]), int(r["order_id"]))
                if int(r["action"]) == ACTION_NEW:
                    ids["orders"].add(key)
                else:
                    ids["order_actions"].add((*key, int(r["action"]), int(r["seq"])))
            elif rtype == RT_EXEC_REPORT:
                if int(r["exec_id"]):
                    ids["exec_reports"].add(int(r["exec_id"]))
                    if int(r["last_qty"]) > 0:
                        fills.add(int(r["exec_id"]))
                else:
                    ids["exec_reports"].add(
                        (int(r["client_order_id"]), int(r["order_id"]), int(r["exec_type"]),
                         int(r["seq"]))
                    )  # fmt: skip
            elif rtype == RT_RISK_DECISION:
                ids["risk_decisions"].add((int(r["intent_producer"]), int(r["intent_seq"])))
            elif rtype == RT_OPERATOR_ACTION:
                ids["operator_actions"].add((bytes(r["who"]), int(r["seq"]), int(r["ts_ns"])))
    ids["fills"] = fills
    return ids


def assert_exactly_once(journal: Path, dsn: str, ledger_dsn: str) -> dict[str, int]:
    """Every event of the journal is in the events database once (row counts equal the
    distinct identities, the constraints forbid a second copy), every fill has balanced
    ledger legs, nothing was rejected; returns the counts."""
    ids = journal_identities(journal)
    counts = load_counts(dsn)
    assert counts.pop("rejected_rows") == 0
    want = {k: len(v) for k, v in ids.items() if k != "fills"}
    assert counts == want, (counts, want)
    db_fills = {
        int(r[0]) for r in query(dsn, "SELECT exec_id FROM exec_reports WHERE last_qty > 0")
    }
    assert db_fills == ids["fills"]
    ledger = ledger_check(ledger_dsn)
    assert ledger == {"fills": len(ids["fills"]), "unbalanced": 0}, ledger
    return {**want, "fills": len(ids["fills"])}
