"""Row specs: which table each loaded record type feeds, column by column, and the batches
the loader moves.

One column spec (:class:`Column`) drives both ways rows get in: the binary COPY straight
into the real tables (:func:`table_stream`, numpy-encoded) and the SQL of the ON CONFLICT
paths (:meth:`Table.insert_sql`, from the staging table or from array
parameters, :class:`StageLayout`). The ledger's legs of a batch's fills as one COPY stream:
:func:`ledger_stream`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from bot4.db.arrays import BigintArray, ByteaArray, bigint_matrix, bytea_matrix
from bot4.db.conflicts import LEDGER_SQL
from bot4.db.encoding import (
    Field,
    Instruments,
    SlowPathNeeded,
    copy_stream,
    ints,
    numeric_payload,
    split_sign,
    u64_numeric,
)
from bot4.records.dtypes import (
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_BROKEN,
    EXEC_REPORT,
    OPERATOR_ACTION,
    ORDER,
    RISK_DECISION,
)
from bot4.records.errors import Bot4Error, Code
from bot4.records.types import (
    RT_EXEC_REPORT,
    RT_OPERATOR_ACTION,
    RT_ORDER,
    RT_RISK_DECISION,
)

__all__ = [
    "ADVANCE_ASYNC_SQL",
    "ADVANCE_SQL",
    "INSTRUMENT_SQL",
    "SRC_COLUMNS",
    "CREATES_ORDER",
    "FENCED",
    "LAYOUTS",
    "LEDGER_COLUMNS",
    "LEDGER_SQL",
    "LOADED_TYPES",
    "REJECT_SQL",
    "TABLES",
    "Batch",
    "Column",
    "Outcome",
    "Part",
    "StageLayout",
    "Table",
    "fills_of",
    "inserted",
    "ledger_stream",
    "src_fields",
    "table_stream",
]


@dataclass(frozen=True, slots=True)
class Column:
    """A real-table column filled from the record field of the same name. ``kind``:
    ``u64`` (numeric(20,0) id), ``i8`` / ``i4`` / ``i2`` (bigint / integer / smallint),
    ``px`` (NUMERIC currency from fixed point, the record's instrument scale), ``text``
    (NUL-padded ASCII); ``null_zero``: NULL when the field is 0."""

    name: str
    kind: str
    null_zero: bool

    def sql(self) -> str:
        c = f"s.{self.name}"
        if self.kind == "u64":
            return f"NULLIF(bot4_u64({c}), 0)" if self.null_zero else f"bot4_u64({c})"
        if self.kind == "px":
            return f"NULLIF({c}, 0) * i.unit" if self.null_zero else f"{c} * i.unit"
        if self.kind == "text":
            return f"convert_from(rtrim({c}, '\\x00'::bytea), 'UTF8')"
        return c


def spec(text: str) -> tuple[Column, ...]:
    cols = []
    for item in text.split():
        name, kind = item.split(":")
        cols.append(Column(name, kind.rstrip("?"), kind.endswith("?")))
    return tuple(cols)


SRC_COLUMNS = ("src_journal", "src_frame", "src_index")
ORDER_SPEC = (
    "client_order_id:u64 order_id:u64 {orig} seq:i8 parent_seq:i8 action:i2 instrument:i4 "
    "strategy:i4 side:i2 order_type:i2 tif:i2 qty:i8 limit_price:px? stop_price:px? "
    "ts_event_ns:i8 ts_recv_ns:i8 ts_signal_ns:i8 ts_risk_ns:i8 ts_order_ns:i8 model_id:i8"
)
CREATES_ORDER = (ACTION_NEW, ACTION_REPLACE)


def creates_order(actions: np.ndarray) -> np.ndarray:
    """Mask of the ORDER ``actions`` that create an order (:data:`CREATES_ORDER`); one
    comparison per action, not ``np.isin`` (~10x their cost on a batch of a few records)."""
    mask = np.zeros(len(actions), bool)
    for action in CREATES_ORDER:
        mask |= actions == action
    return mask


@dataclass(frozen=True)
class Table:
    """A real table fed from one record type. ``creates`` routes ORDER records: True for
    the actions that create an order (``orders``), False for the others
    (``order_actions``), None: every record. ``fast``: eligible for the COPY path."""

    name: str
    rtype: int
    columns: tuple[Column, ...]
    creates: bool | None = None
    fast: bool = True

    @property
    def join(self) -> bool:
        return any(c.kind == "px" for c in self.columns)

    def route(self, records: np.ndarray) -> np.ndarray | None:
        if self.creates is None:
            return None
        creates = creates_order(records["action"])
        return creates if self.creates else ~creates

    @functools.cache  # noqa: B019 - the tables are module constants; the text never changes
    def insert_sql(self, source: str) -> str:
        """Rows of ``source`` (the staging table, or the array parameters, aliased ``s``)
        -> table, ON CONFLICT DO NOTHING, over rows ``rid`` in [%(lo)s, %(hi)s), in
        ``rid`` (journal) order whatever plan the join gets, so of two records of a batch
        under one identity the first is the one inserted; for
        executions: (rows inserted, frames and indexes of the inserted fills)."""
        cols = ", ".join([*(c.name for c in self.columns), *SRC_COLUMNS])
        exprs = ", ".join([*(c.sql() for c in self.columns), "%(journal)s", "s.frame", "s.idx"])
        join = " LEFT JOIN instruments i ON i.instrument = s.instrument" if self.join else ""
        where = "true"
        if self.creates is not None:
            where = f"s.action {'' if self.creates else 'NOT '}IN {CREATES_ORDER}"
        sql = (
            f"INSERT INTO {self.name} ({cols}) SELECT {exprs} FROM {source}{join} "
            f"WHERE {where} AND s.rid >= %(lo)s AND s.rid < %(hi)s ORDER BY s.rid "
            "ON CONFLICT DO NOTHING"
        )
        if self.rtype != RT_EXEC_REPORT:
            return sql
        return (
            f"WITH ins AS ({sql} RETURNING src_frame, src_index, last_qty) "
            "SELECT count(*), array_agg(src_frame) FILTER (WHERE last_qty > 0), "
            "array_agg(src_index) FILTER (WHERE last_qty > 0), "
            "set_config('bot4.inserted_fills', (count(*) FILTER (WHERE last_qty > 0))::text, "
            "true), set_config('bot4.inserted_execs', count(*)::text, true) FROM ins"
        )

    def copy_sql(self) -> str:
        cols = ", ".join([*(c.name for c in self.columns), *SRC_COLUMNS])
        return f"COPY {self.name} ({cols}) FROM STDIN (FORMAT BINARY)"


TABLES: dict[int, tuple[Table, ...]] = {
    RT_ORDER: (
        Table("orders", RT_ORDER, spec(ORDER_SPEC.format(orig="orig_client_order_id:u64?")), True),
        Table(
            "order_actions",
            RT_ORDER,
            spec(ORDER_SPEC.format(orig="orig_client_order_id:u64")),
            False,
        ),
    ),
    RT_EXEC_REPORT: (
        Table(
            "exec_reports",
            RT_EXEC_REPORT,
            spec(
                "exec_id:u64 client_order_id:u64 order_id:u64 seq:i8 parent_seq:i8 exec_type:i2 "
                "status:i2 reason:i4 instrument:i4 strategy:i4 side:i2 last_qty:i8 last_price:px "
                "cum_qty:i8 leaves_qty:i8 fee:px ts_event_ns:i8 ts_recv_ns:i8 ts_order_ns:i8 "
                "ts_venue_ns:i8 prevented_qty:i8 venue:i2"
            ),
        ),
    ),
    RT_RISK_DECISION: (
        Table(
            "risk_decisions",
            RT_RISK_DECISION,
            spec(
                "intent_producer:i4 intent_seq:i8 seq:i8 parent_seq:i8 decision:i2 reason:i4 "
                "instrument:i4 strategy:i4 side:i2 qty:i8 limit_price:px? stop_price:px? "
                "position:i8 exposure:px checked_value:i8 limit_value:i8 ts_event_ns:i8 "
                "ts_recv_ns:i8 ts_signal_ns:i8 ts_risk_ns:i8"
            ),
        ),
    ),
    RT_OPERATOR_ACTION: (
        Table(
            "operator_actions",
            RT_OPERATOR_ACTION,
            spec(
                "who:text seq:i8 ts_ns:i8 parent_seq:i8 action:i2 target_kind:i2 target:i8 "
                "reason:i4 old_state:i2 new_state:i2 note:text"
            ),
            fast=False,  # rare, and text of any length: always through staging
        ),
    ),
}
LEDGER_COLUMNS = (
    "venue", "exec_session", "exec_id", "leg", "account", "instrument", "strategy", "debit", "credit", "ts_venue_ns",
    *SRC_COLUMNS,
)  # fmt: skip


# --- staging (the dedupe and isolate paths) -------------------------------------------------


@dataclass(frozen=True)
class StageLayout:
    """How one record type is staged: ``rid`` (row in the batch), ``frame``, ``idx``, then
    its fields (every integer as bigint, uint64 by bit pattern; bytes as bytea)."""

    dtype: np.dtype
    kind: str  # table stem
    fields: tuple[str, ...]

    @classmethod
    def of(cls, dtype: np.dtype, kind: str) -> StageLayout:
        return cls(dtype, kind, tuple(f for f in dtype.names if not f.startswith("reserved")))

    def columns_sql(self) -> str:
        cols = ["rid bigint", "frame bigint", "idx bigint"]
        for name in self.fields:
            cols.append(f"{name} {'bytea' if self.dtype.fields[name][0].kind == 'S' else 'bigint'}")
        return ", ".join(cols)

    def table(self, journal_key: str) -> str:
        digest = hashlib.sha1(self.columns_sql().encode()).hexdigest()[:8]
        return f"bot4_stage.{self.kind}_{journal_key}_{digest}"

    @functools.cache  # noqa: B019 - the layouts are module constants; the text never changes
    def array_source(self) -> str:
        """The staging columns read from the array parameters of :meth:`array_params`
        (``%(m)s``: the integers as ``bigint[][]``, field by row; ``%(b)s``: the bytes
        fields as ``bytea[][]``), alias ``s``: what the pipeline path reads instead of the
        staging table."""
        ints = ["rid", "frame", "idx"]
        cols = ["p.m[1][g.i] AS rid", "p.m[2][g.i] AS frame", "p.m[3][g.i] AS idx"]
        nbytes = 0
        for name in self.fields:
            if self.dtype.fields[name][0].kind == "S":
                nbytes += 1
                cols.append(f"p.b[{nbytes}][g.i] AS {name}")
            else:
                ints.append(name)
                cols.append(f"p.m[{len(ints)}][g.i] AS {name}")
        arrays = "%(m)s::bigint[] AS m" + (", %(b)s::bytea[] AS b" if nbytes else "")
        return (
            f"(SELECT {', '.join(cols)} FROM (SELECT {arrays}) p "
            "CROSS JOIN LATERAL generate_subscripts(p.m, 2) AS g(i)) s"
        )

    def array_params(self, part: Part) -> dict[str, BigintArray | ByteaArray]:
        """The array parameters of :meth:`array_source` for ``part`` (rid = position), in
        the binary array format built with numpy (:mod:`bot4.db.arrays`): the same values
        as the staging table's COPY (uint64 by bit pattern, bytes at their full width)."""
        n = len(part)
        ints = [np.arange(n, dtype=np.int64), part.frames, part.idx]
        nbytes = []
        for name in self.fields:
            col = part.records[name]
            (nbytes if col.dtype.kind == "S" else ints).append(col)
        params: dict[str, BigintArray | ByteaArray] = {"m": bigint_matrix(ints, n)}
        if nbytes:
            params["b"] = bytea_matrix(nbytes, n)
        return params

    def encode(self, part: Part) -> list:
        """Binary COPY stream of ``part`` (rid = position in ``part``)."""
        n = len(part.records)
        fields = [
            Field(np.arange(n, dtype=">i8")),
            Field(part.frames.astype(">i8")),
            Field(part.idx.astype(">i8")),
        ]
        for name in self.fields:
            col = part.records[name]
            fields.append(Field(col if col.dtype.kind == "S" else ints(col, ">i8")))
        return copy_stream(fields, n)


LOADED_TYPES = (RT_ORDER, RT_EXEC_REPORT, RT_RISK_DECISION, RT_OPERATOR_ACTION)
LAYOUTS = {
    RT_ORDER: StageLayout.of(ORDER, "order"),
    RT_EXEC_REPORT: StageLayout.of(EXEC_REPORT, "exec"),
    RT_RISK_DECISION: StageLayout.of(RISK_DECISION, "decision"),
    RT_OPERATOR_ACTION: StageLayout.of(OPERATOR_ACTION, "operator"),
}


ADVANCE_SQL = "SELECT bot4_advance(%(journal)s, %(first)s, %(end)s, %(records)s, %(created)s)"
#: the same, and this transaction's commit not waiting for its WAL flush (``set_config``
#: with ``is_local``: ``SET LOCAL synchronous_commit TO OFF`` without a statement of its own)
ADVANCE_ASYNC_SQL = (
    "SELECT bot4_advance(%(journal)s, %(first)s, %(end)s, %(records)s, %(created)s), "
    "set_config('synchronous_commit', 'off', true)"
)
FENCED = "B4001"  # bot4_advance: the stored position is not where this batch starts
REJECT_SQL = """
INSERT INTO rejected_rows (src_journal, src_frame, src_index, record_type, code, sqlstate,
                           reason, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

INSTRUMENT_SQL = """
INSERT INTO instruments (instrument, symbol, price_scale, unit, tick_size, lot_size)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (instrument) DO UPDATE
   SET symbol = EXCLUDED.symbol, price_scale = EXCLUDED.price_scale, unit = EXCLUDED.unit,
       tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size, updated_at = now()
 WHERE (instruments.symbol, instruments.price_scale, instruments.tick_size,
        instruments.lot_size)
       IS DISTINCT FROM (EXCLUDED.symbol, EXCLUDED.price_scale, EXCLUDED.tick_size,
                         EXCLUDED.lot_size)
"""


# --- batches --------------------------------------------------------------------------------


@dataclass(slots=True)
class Part:
    """The records of one type in a batch, with their journal frame and index in it."""

    records: np.ndarray
    frames: np.ndarray  # int64 global frame index
    idx: np.ndarray  # int64 index within the frame

    def take(self, which: np.ndarray) -> Part:
        return Part(self.records[which], self.frames[which], self.idx[which])

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class Batch:
    first: int  # frames [first, end)
    end: int
    records: int  # every record of the frames, loadable or not
    parts: dict[int, Part]

    @classmethod
    def of(cls, frames: list[tuple[int, int, np.ndarray]]) -> Batch:
        grouped: dict[int, list[tuple[int, np.ndarray]]] = {}
        for index, rtype, records in frames:
            if rtype in LAYOUTS:
                grouped.setdefault(rtype, []).append((index, records))
        parts = {}
        for rtype, items in grouped.items():
            counts = np.array([len(r) for _, r in items], dtype=np.int64)
            starts = np.cumsum(counts) - counts
            parts[rtype] = Part(
                np.concatenate([r for _, r in items]),
                np.repeat(np.array([i for i, _ in items], dtype=np.int64), counts),
                np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts),
            )
        total = sum(len(r) for _, _, r in frames)
        return cls(frames[0][0], frames[-1][0] + 1, total, parts)


@dataclass(slots=True)
class Outcome:
    staged: int = 0  # loadable records of the batch
    inserted: int = 0
    rejected: int = 0
    ledger_rows: int = 0
    fills: Part | None = None  # the fills inserted, in journal order
    conflicts: list = field(default_factory=list)  # exec_conflicts rows kept (RETURNING)
    ledger_conflicts: int = 0
    moved: dict | None = None  # positions the batch wrote, (strategy, instrument) -> Position


# --- encoding a batch's rows ----------------------------------------------------------------


def src_fields(part: Part, journal: bytes) -> list[Field]:
    """The ``src_journal``, ``src_frame``, ``src_index`` COPY fields of ``part``'s rows."""
    n = len(part)
    name = np.full(n, journal, dtype=f"S{len(journal)}")
    return [Field(name), Field(part.frames.astype(">i8")), Field(ints(part.idx, ">i4"))]


def table_stream(table: Table, part: Part, inst: Instruments, journal: bytes) -> list:
    """The binary COPY stream of ``part``'s rows of ``table`` (the fast path)."""
    r = part.records
    fields = []
    for col in table.columns:
        values = r[col.name]
        null = (values == 0) if col.null_zero else None
        if col.kind == "u64":
            fields.append(Field(u64_numeric(values), null))
        elif col.kind == "px":  # no scale (instrument 0 of CANCEL_ALL): NULL, as in SQL
            unknown = ~inst.known(r["instrument"])
            null = unknown if null is None else (null | unknown)
            fields.append(Field(inst.money(values, r["instrument"]), null))
        else:
            wire = {"i8": ">i8", "i4": ">i4", "i2": ">i2"}[col.kind]
            fields.append(Field(ints(values, wire), null))
    fields += src_fields(part, journal)
    return copy_stream(fields, len(part))


def ledger_stream(fills: Part, inst: Instruments, journal: bytes) -> tuple[list, int]:
    """Binary COPY of the legs of ``fills`` (see the ledger migration for the legs):
    (the stream, the number of legs)."""
    r = fills.records
    m = len(r)
    price, _neg = split_sign(r["last_price"])
    qty = r["last_qty"].astype(np.uint64)
    limit = np.uint64(2**62)  # |cash| = notional + |fee| stays inside int64
    if (qty == 0).any() or (price > limit // np.maximum(qty, np.uint64(1))).any():
        raise SlowPathNeeded("ledger notional beyond 2**62 units")
    notional = (price * qty).astype(np.int64)
    fee = r["fee"].astype(np.int64)
    if (np.abs(fee) > 2**62).any():
        raise SlowPathNeeded("fee beyond 2**62 units")
    # a trade bust (EXEC_BROKEN) books the reverse of the fill it names: the other side,
    # the fee given back
    broken = r["exec_type"] == EXEC_BROKEN
    fee = np.where(broken, -fee, fee)
    buy = (r["side"] > 0) != broken
    cash = np.where(buy, -notional, notional) - fee
    each = np.arange(m)
    paid = np.nonzero(fee != 0)[0]
    flows = np.nonzero(cash != 0)[0]
    rows = np.concatenate([each, paid, flows])
    leg = np.concatenate([np.full(m, 1), np.full(len(paid), 2), np.full(len(flows), 3)]).astype(
        ">i2"
    )
    signed = np.concatenate([np.where(buy, notional, -notional), fee[paid], cash[flows]])
    at = inst.rows(r["instrument"])
    account = np.concatenate(
        [
            inst.accounts[at],
            np.full(len(paid), b"fees", dtype=object),
            np.full(len(flows), b"cash", dtype=object),
        ]
    )
    n = len(rows)
    scales = inst.scales[at][rows]
    decimals = inst.decimals[at][rows]
    amount, credit = split_sign(signed)
    zero = np.zeros(n, dtype=np.uint64)
    g = inst.frac_groups
    legs = Part(r[rows], fills.frames[rows], fills.idx[rows])
    fields = [
        Field(ints(legs.records["venue"], ">i2")),
        Field(ints(legs.records["seq"] >> np.uint64(32), ">i4")),
        Field(u64_numeric(legs.records["exec_id"])),
        Field(leg),
        Field(account.astype(bytes), varlen=True),
        Field(ints(legs.records["instrument"], ">i4")),
        Field(ints(legs.records["strategy"], ">i4")),
        Field(numeric_payload(np.where(credit, zero, amount), None, scales, decimals, g)),
        Field(numeric_payload(np.where(credit, amount, zero), None, scales, decimals, g)),
        Field(legs.records["ts_venue_ns"].astype(">i8")),
        *src_fields(legs, journal),
    ]
    return copy_stream(fields, n), n


def inserted(cur, table: Table) -> tuple[int, list]:
    """Result of ``table``'s INSERT on ``cur``: (rows inserted, (frame, index) of the
    inserted fills for executions)."""
    if table.rtype != RT_EXEC_REPORT:
        return cur.rowcount, []
    count, frames, idx = cur.fetchone()[:3]
    return int(count), list(zip(frames or (), idx or (), strict=True))


def fills_of(batch: Batch, part: Part, rows: list) -> Part | None:
    """The EXEC_REPORT rows of ``part`` an INSERT returned as inserted fills (``rows``:
    their (frame, index)), in journal order; None for none."""
    if not rows:
        return None
    keys = ((part.frames - batch.first) << 32) | part.idx  # ascending: staged in order
    got = np.array(rows, dtype=np.int64)
    want = np.sort(((got[:, 0] - batch.first) << 32) | got[:, 1])
    at = np.searchsorted(keys, want)
    if (at >= len(keys)).any() or (keys[np.minimum(at, len(keys) - 1)] != want).any():
        raise Bot4Error("inserted fills do not match the staged rows", Code.INTERNAL_ERROR)
    return part.take(at)
