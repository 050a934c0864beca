"""Database test fixtures: one PostgreSQL per session, fresh databases per test, event flows.

The server is the embedded one (``bot4.db.server.EmbeddedPostgres``) under the session's
tmp dir, started once and stopped at the end of the session; with ``BOT4_TEST_DSN`` (a
superuser DSN of an existing server, any database) and optionally
``BOT4_TEST_LEDGER_DSN`` (the ledger's server, default the same) the tests use those
instead. Tests that stop the server (outages) always get an embedded server of their own
kind: the session's when it is embedded, else a private one.

Every test asks for fresh databases (``new_db``, ``dbs``): ``CREATE DATABASE`` with a unique
name, dropped (after rolling back anything left prepared in it) at teardown, so tests are
independent of each other and of the order they run in.

``make_flow`` builds a consistent stream of events — a risk decision, an order, an ack and
one or two fills per intent, with unique ids from ``start`` on — and ``write_flow``
journals it in frames the way the persistence stage would (one record type per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np

from bot4.journal import JournalWriter
from bot4.records import (
    ACTION_NEW,
    DECISION_ACCEPT,
    DEFAULT_INSTRUMENTS,
    EXEC_ACK,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REPORT,
    OPERATOR_ACTION,
    ORDER,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
    OT_LIMIT,
    RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
    from_fixed,
)
from tests.conftest import (  # noqa: F401  (re-exported: the database tests import them from here)
    create_database,
    drop_database,
    dsn_for,
    make_test_server,
    private_server,
    query,
    scalar,
)

SCALE = 10_000  # DEFAULT_INSTRUMENTS price scale
INTENT_PRODUCER = 1


# --- server and databases -------------------------------------------------------------------


# --- event flows ----------------------------------------------------------------------------


@dataclass
class Flow:
    """Records of one generated flow, by type, in the order they happened."""

    decisions: np.ndarray
    orders: np.ndarray
    execs: np.ndarray
    operator: np.ndarray

    @property
    def fills(self) -> np.ndarray:
        return self.execs[self.execs["last_qty"] > 0]

    def __len__(self) -> int:
        return len(self.decisions) + len(self.orders) + len(self.execs) + len(self.operator)


def client_order_id(intent_seq: int) -> int:
    return (INTENT_PRODUCER << 48) | intent_seq


def make_flow(
    n: int,
    *,
    start: int = 0,
    seed: int = 0,
    instruments: tuple[int, ...] = (1, 2, 3),
    strategies: tuple[int, ...] = (1, 2),
    operator_actions: int = 0,
) -> Flow:
    """``n`` intents from intent seq ``start + 1``: each a decision (ACCEPT), an ORDER NEW,
    an ACK and one or two fills (partial then full) with their own venue exec ids, prices
    on a 0.01 grid in 50-150, fees of a few cents (some rebates). Ids depend only on the
    intent seq, so two flows with overlapping ranges describe the same events."""
    rng = np.random.default_rng(seed + 7919 * start)
    seqs = np.arange(start + 1, start + n + 1, dtype=np.uint64)
    inst = rng.choice(np.array(instruments, dtype=np.uint32), n)
    strat = rng.choice(np.array(strategies, dtype=np.uint16), n)
    side = rng.choice(np.array([SIDE_BUY, SIDE_SELL], dtype=np.int8), n)
    qty = rng.integers(1, 20, n) * 10
    price = rng.integers(5_000, 15_000, n) * 100  # 50.00 .. 149.99 at scale 1e4
    ts = 1_700_000_000_000_000_000 + seqs.astype(np.int64) * 1000

    d = np.zeros(n, RISK_DECISION)
    d["seq"] = seqs
    d["parent_seq"] = seqs
    d["intent_seq"] = seqs
    d["intent_producer"] = INTENT_PRODUCER
    d["decision"] = DECISION_ACCEPT
    d["instrument"], d["strategy"], d["side"], d["qty"] = inst, strat, side, qty
    d["limit_price"] = price
    d["exposure"] = price * qty * side
    d["ts_event_ns"] = ts
    d["ts_risk_ns"] = ts + 10

    o = np.zeros(n, ORDER)
    o["seq"] = seqs
    o["parent_seq"] = seqs
    o["client_order_id"] = (np.uint64(INTENT_PRODUCER) << np.uint64(48)) | seqs
    o["order_id"] = seqs + np.uint64(1_000_000)
    o["instrument"], o["strategy"], o["side"], o["qty"] = inst, strat, side, qty
    o["limit_price"] = price
    o["order_type"], o["tif"], o["action"] = OT_LIMIT, TIF_DAY, ACTION_NEW
    o["ts_event_ns"] = ts
    o["ts_order_ns"] = ts + 20

    split = rng.random(n) < 0.4  # partial then full fill
    n_exec = n * 2 + int(split.sum())
    e = np.zeros(n_exec, EXEC_REPORT)
    k = 0
    for j in range(n):
        base = 3 * int(seqs[j])
        common = {
            "client_order_id": int(o["client_order_id"][j]),
            "order_id": int(o["order_id"][j]),
            "instrument": int(inst[j]),
            "strategy": int(strat[j]),
            "side": int(side[j]),
            "ts_event_ns": int(ts[j]),
        }
        parts = [int(qty[j]) // 2, int(qty[j]) - int(qty[j]) // 2] if split[j] else [int(qty[j])]
        rows = [(EXEC_ACK, OS_NEW, 0, 0, 0)]
        cum = 0
        for q in parts:
            cum += q
            px = int(price[j]) - int(rng.integers(0, 3)) * 100
            last = cum == int(qty[j])
            rows.append(
                (
                    EXEC_FILL if last else EXEC_PARTIAL_FILL,
                    OS_FILLED if last else OS_PARTIALLY_FILLED,
                    q,
                    px,
                    int(rng.integers(-5, 40)) * 10,  # fee in price units, rebate < 0
                )
            )
        cum = 0
        for m, (etype, status, q, px, fee) in enumerate(rows):
            cum += q
            e[k] = 0
            for f, v in common.items():
                e[k][f] = v
            e[k]["seq"] = 10 * int(seqs[j]) + m
            e[k]["parent_seq"] = int(seqs[j])
            e[k]["exec_id"] = base + m + 1
            e[k]["exec_type"], e[k]["status"] = etype, status
            e[k]["last_qty"], e[k]["last_price"], e[k]["fee"] = q, px, fee
            e[k]["cum_qty"], e[k]["leaves_qty"] = cum, int(qty[j]) - cum
            e[k]["ts_venue_ns"] = int(ts[j]) + 100 + m
            k += 1
    assert k == n_exec

    op = np.zeros(operator_actions, OPERATOR_ACTION)
    op["seq"] = np.arange(start + 1, start + operator_actions + 1)
    op["ts_ns"] = 5_000 + op["seq"].astype(np.int64)
    op["who"] = b"alice"
    op["action"] = 3
    op["target_kind"] = 3
    op["note"] = b"halt for test"
    return Flow(d, o, e, op)


def flow_frames(flow: Flow, frame_size: int = 16) -> list[np.ndarray]:
    """The flow as journal frames: per intent chunk, decisions, orders, then reports."""
    frames = []
    per = max(1, frame_size)
    n = len(flow.decisions)
    e_starts = np.searchsorted(flow.execs["parent_seq"], flow.decisions["seq"])
    for lo in range(0, n, per):
        hi = min(n, lo + per)
        frames.append(flow.decisions[lo:hi])
        frames.append(flow.orders[lo:hi])
        e_hi = e_starts[hi] if hi < n else len(flow.execs)
        frames.append(flow.execs[e_starts[lo] : e_hi])
    for lo in range(n, len(flow.orders), per):  # orders with no decision of their own
        frames.append(flow.orders[lo : lo + per])
    for lo in range(0, len(flow.operator), per):
        frames.append(flow.operator[lo : lo + per])
    return [f for f in frames if len(f)]


def write_flow(journal_dir: Path, flow: Flow, frame_size: int = 16, **kwargs) -> int:
    """Append ``flow`` to the journal in ``journal_dir``; the number of frames written."""
    frames = flow_frames(flow, frame_size)
    with JournalWriter(journal_dir, fsync="none", **kwargs) as w:
        for f in frames:
            w.append(f)
    return len(frames)


def concat_flows(flows: list[Flow]) -> Flow:
    return Flow(
        np.concatenate([f.decisions for f in flows]),
        np.concatenate([f.orders for f in flows]),
        np.concatenate([f.execs for f in flows]),
        np.concatenate([f.operator for f in flows]),
    )


def unique_fills(flow: Flow) -> np.ndarray:
    """The flow's fills, each exec id once, in first-seen order."""
    fills = flow.fills
    _, first = np.unique(fills["exec_id"], return_index=True)
    return fills[np.sort(first)]


# --- expectations ---------------------------------------------------------------------------


def money(units: int) -> Decimal:
    return from_fixed(int(units), SCALE)


def expected_positions(fills: np.ndarray) -> dict[tuple[int, int], dict]:
    """Per (strategy, instrument): qty, bought, sold, fills, fees and the signed notional
    (sum of side * price * qty), from the fills alone (order-independent sums), plus an
    exact average-cost model (Fractions) of cost and realised P&L."""
    out: dict[tuple[int, int], dict] = {}
    for r in fills:
        key = (int(r["strategy"]), int(r["instrument"]))
        p = out.setdefault(
            key,
            dict(
                qty=0,
                bought=0,
                sold=0,
                fills=0,
                fees=0,
                notional=0,
                cost=Fraction(0),
                pnl=Fraction(0),
            ),
        )
        q, px = int(r["last_qty"]), int(r["last_price"])
        signed = q if int(r["side"]) == SIDE_BUY else -q
        p["fills"] += 1
        p["fees"] += int(r["fee"])
        p["notional"] += px * signed
        p["bought" if signed > 0 else "sold"] += q
        if p["qty"] == 0 or (p["qty"] > 0) == (signed > 0):
            p["cost"] += px * signed
            p["qty"] += signed
        else:
            closed = min(q, abs(p["qty"]))
            closing = closed if signed > 0 else -closed
            released = p["cost"] * closed / abs(p["qty"])
            p["pnl"] += -px * closing - released
            p["cost"] -= released
            p["qty"] += closing
            rest = signed - closing
            if rest:
                p["qty"] += rest
                p["cost"] += px * rest
    return out


def load_counts(dsn: str) -> dict[str, int]:
    tables = ("orders", "order_actions", "exec_reports", "risk_decisions", "operator_actions",
              "rejected_rows")  # fmt: skip
    return {t: scalar(dsn, f"SELECT count(*) FROM {t}") for t in tables}


def ledger_check(ledger_dsn: str) -> dict[str, int]:
    """Fills with ledger legs, and how many of them do not balance (should be 0)."""
    rows = query(
        ledger_dsn,
        "SELECT count(*), count(*) FILTER (WHERE d <> c) FROM "
        "(SELECT sum(debit) d, sum(credit) c FROM ledger_entries "
        "GROUP BY venue, exec_session, exec_id) x",
    )
    return {"fills": rows[0][0], "unbalanced": rows[0][1]}


def exec_ids(dsn: str, table: str = "exec_reports", where: str = "last_qty > 0") -> list[int]:
    return [int(r[0]) for r in query(dsn, f"SELECT exec_id FROM {table} WHERE {where}")]


def ledger_exec_ids(ledger_dsn: str) -> list[int]:
    return [int(r[0]) for r in query(ledger_dsn, "SELECT DISTINCT exec_id FROM ledger_entries")]


def instruments_symbol(instrument: int) -> str:
    return DEFAULT_INSTRUMENTS.symbol_of(instrument)
