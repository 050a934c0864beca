"""Exactly once, checked after the fact: what a journal holds against what the databases hold.

For a journal whose loader has stopped (a finished ``bot4 run``, a test), read the journal
and both databases and list every difference. The system tests assert on these lists;
``perf/soak.py`` prints them. Nothing here writes: the databases are only queried.

Identities are the loader's (:mod:`bot4.db.loader`): orders by ``(client_order_id,
order_id)``, order actions by ``(client_order_id, order_id, action, seq)``, executions by
the venue's ``exec_id`` (reports without one by their order, type and seq), decisions by
``(intent_producer, intent_seq)``, operator actions by ``(who, seq, ts_ns)``. A journal can
hold a record twice (a persistence stage killed between writing a frame and releasing its
input writes the batch again); identities count it once, as the database does.

Two families of checks:

* :func:`exactly_once_problems` — every journalled event is in the events database once
  (row counts equal the journal's distinct identities; the constraints forbid a second
  copy), nothing rejected, the fills in the database are exactly the journal's, every fill
  has ledger legs that balance.
* :func:`identity_problems` — execution identity (issue 12): no ``exec_id`` carries two
  different executions in the journal (content: :data:`EXEC_CONTENT_FIELDS`), no identity
  conflict kept by the loader, and the database's net position per instrument equals the
  net of the journal's fills.

Units: quantities are signed shares (+ bought, - sold), as in the ``positions`` table.
"""

from __future__ import annotations

from pathlib import Path

from bot4.journal import JournalReader
from bot4.records import (
    ACTION_NEW,
    RT_EXEC_REPORT,
    RT_OPERATOR_ACTION,
    RT_ORDER,
    RT_RISK_DECISION,
    SIDE_BUY,
)
from bot4.records.identity import EXEC_CONTENT_FIELDS

__all__ = [
    "EVENT_TABLES",
    "database_counts",
    "database_fills",
    "database_positions",
    "exactly_once_problems",
    "identity_problems",
    "journal_executions",
    "journal_identities",
    "journal_net_positions",
    "ledger_balance",
    "query",
]

#: events-database tables holding one row per journal identity, in journal_identities' keys
EVENT_TABLES = ("orders", "order_actions", "exec_reports", "risk_decisions", "operator_actions")


def query(dsn: str, text: str, params=None) -> list[tuple]:
    """Rows of one read-only statement on its own autocommit connection."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()


def journal_identities(journal: str | Path) -> dict[str, set]:
    """Each loadable event of the journal by the identity the loader keys it on, per table
    (:data:`EVENT_TABLES`), plus ``fills``: the exec ids of executions with a quantity."""
    ids: dict[str, set] = {k: set() for k in EVENT_TABLES}
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


def journal_executions(journal: str | Path) -> dict[int, set[tuple]]:
    """Venue executions of the journal: exec id -> the distinct contents seen under it
    (tuples of :data:`EXEC_CONTENT_FIELDS`). More than one content is an identity conflict."""
    out: dict[int, set[tuple]] = {}
    for _pos, rtype, recs in JournalReader(journal):
        if rtype != RT_EXEC_REPORT:
            continue
        for r in recs[recs["exec_id"] != 0]:
            out.setdefault(int(r["exec_id"]), set()).add(
                tuple(int(r[f]) for f in EXEC_CONTENT_FIELDS)
            )
    return out


def journal_net_positions(executions: dict[int, set[tuple]]) -> dict[int, int]:
    """Net signed shares per instrument over the distinct fills of ``executions`` (from
    :func:`journal_executions`); instruments netting to 0 are left out."""
    i_qty = EXEC_CONTENT_FIELDS.index("last_qty")
    i_side = EXEC_CONTENT_FIELDS.index("side")
    i_instr = EXEC_CONTENT_FIELDS.index("instrument")
    net: dict[int, int] = {}
    for contents in executions.values():
        for c in contents:
            if c[i_qty] > 0:
                signed = c[i_qty] if c[i_side] == SIDE_BUY else -c[i_qty]
                net[c[i_instr]] = net.get(c[i_instr], 0) + signed
    return {k: v for k, v in net.items() if v}


def database_counts(dsn: str) -> dict[str, int]:
    """Rows per event table, and ``rejected_rows`` (records the loader refused)."""
    return {t: int(query(dsn, f"SELECT count(*) FROM {t}")[0][0])
            for t in (*EVENT_TABLES, "rejected_rows")}  # fmt: skip


def database_fills(dsn: str) -> set[int]:
    """Exec ids of the executions with a quantity in the events database."""
    return {int(r[0]) for r in query(dsn, "SELECT exec_id FROM exec_reports WHERE last_qty > 0")}


def database_positions(dsn: str) -> dict[int, int]:
    """Net signed shares per instrument (all strategies) in ``positions``; zeros left out."""
    rows = query(dsn, "SELECT instrument, sum(qty) FROM positions GROUP BY instrument")
    return {int(i): int(q) for i, q in rows if int(q)}


def ledger_balance(ledger_dsn: str) -> dict[str, int]:
    """Fills with ledger legs, and how many of them do not balance (should be 0)."""
    rows = query(
        ledger_dsn,
        "SELECT count(*), count(*) FILTER (WHERE d <> c) FROM "
        "(SELECT exec_id, sum(debit) d, sum(credit) c FROM ledger_entries GROUP BY exec_id) x",
    )
    return {"fills": int(rows[0][0]), "unbalanced": int(rows[0][1])}


def exactly_once_problems(
    journal: str | Path, dsn: str, ledger_dsn: str | None = None
) -> tuple[dict[str, int], list[str]]:
    """``(figures, problems)``: the journal's distinct identities per table (and ``fills``),
    and one line per difference with the databases (empty: exactly once). ``ledger_dsn``
    None: the ledger tables are in the events database."""
    ids = journal_identities(journal)
    counts = database_counts(dsn)
    problems = []
    rejected = counts.pop("rejected_rows")
    if rejected:
        problems.append(f"{rejected} rows rejected by the loader (rejected_rows)")
    want = {k: len(v) for k, v in ids.items() if k != "fills"}
    for table in EVENT_TABLES:
        if counts[table] != want[table]:
            problems.append(
                f"{table}: {counts[table]} rows in the database, {want[table]} distinct in the journal"
            )
    db_fills = database_fills(dsn)
    if db_fills != ids["fills"]:
        problems.append(
            f"fills: {len(ids['fills'] - db_fills)} journalled fills missing from the database, "
            f"{len(db_fills - ids['fills'])} database fills not in the journal"
        )
    ledger = ledger_balance(ledger_dsn or dsn)
    if ledger["fills"] != len(ids["fills"]):
        problems.append(
            f"ledger: {ledger['fills']} fills with legs, {len(ids['fills'])} fills journalled"
        )
    if ledger["unbalanced"]:
        problems.append(f"ledger: {ledger['unbalanced']} fills whose legs do not balance")
    return {**want, "fills": len(ids["fills"])}, problems


def identity_problems(journal: str | Path, dsn: str) -> tuple[dict[str, int], list[str]]:
    """``(figures, problems)`` for execution identity: exec ids with two different
    executions in the journal, conflicts the loader kept (``exec_conflicts``, where the
    schema has it), net position per instrument database vs journal."""
    execs = journal_executions(journal)
    merged = {k: v for k, v in execs.items() if len(v) > 1}
    problems = []
    if merged:
        problems.append(
            f"{len(merged)} exec ids carry two or more different executions in the journal "
            f"(e.g. exec_id {min(merged)})"
        )
    conflicts = 0
    if query(dsn, "SELECT to_regclass('exec_conflicts') IS NOT NULL")[0][0]:
        conflicts = int(query(dsn, "SELECT count(*) FROM exec_conflicts")[0][0])
        if conflicts:
            problems.append(f"{conflicts} identity conflicts kept by the loader (exec_conflicts)")
    want = journal_net_positions(execs)
    got = database_positions(dsn)
    if got != want:
        diff = {
            i: (got.get(i, 0), want.get(i, 0))
            for i in sorted(set(got) | set(want))
            if got.get(i, 0) != want.get(i, 0)
        }
        problems.append(
            "positions differ (instrument: database, journal): "
            + ", ".join(f"{i}: {d} vs {j}" for i, (d, j) in diff.items())
        )
    figures = {
        "executions": len(execs),
        "merged_exec_ids": len(merged),
        "exec_conflicts": conflicts,
        "instruments_with_position": len(want),
    }
    return figures, problems
