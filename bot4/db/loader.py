"""The journal loader: journal frames into PostgreSQL, exactly once.

A :class:`Loader` owns one journal (``journal_id``, default the directory's name) and moves
its ORDER, EXEC_REPORT, RISK_DECISION and OPERATOR_ACTION records into the events database
(other record types are passed over). Fills also become double-entry ledger rows in the
ledger database, under two-phase commit (:mod:`bot4.db.twophase`).

Exactly once. The events database stores, per journal, the first frame not yet loaded
(``load_positions.next_frame``). Each :meth:`Loader.load_available` starts there, reads
the frames after it (:class:`JournalTail`, incrementally) and groups consecutive frames
into batches of at most ``batch_records`` loadable records (a bigger frame is a batch of
its own). One batch is one SERIALIZABLE transaction (two with a separate ledger database)
that inserts the batch's rows, moves ``positions`` by the batch's *inserted* fills, writes
their ledger legs and advances ``load_positions`` to the end of the batch, fenced on the
value it started from. Only a committed transaction moves the position, together with the
rows: after a crash anywhere the batch is either loaded with the position after it, or
absent with the position before it, and loading resumes from there.

Identity (each row is inserted at most once): orders ``(client_order_id, order_id)``;
other order requests ``(client_order_id, order_id, action, seq)``; executions the venue's
``exec_id`` (reports the OMS made itself, exec_id 0: ``(client_order_id, order_id,
exec_type, seq)``); risk decisions ``(intent_producer, intent_seq)``; operator actions
``(who, seq, ts_ns)``; ledger legs ``(exec_id, leg)``. A repeated execution id or ledger
key with the same content is a no-op; with different content it is an identity conflict
(:mod:`bot4.db.conflicts`): the record is kept in ``exec_conflicts`` / ``ledger_conflicts``,
counted (``stats.conflicts``, ``stats.ledger_conflicts``), logged at ERROR and passed to
``alarm`` — never dropped as a duplicate.

How rows get in. A batch of at most ``small_batch`` (128) loadable records takes

- **pipeline**: the ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` statements read
  ``unnest`` of array parameters, sent with psycopg's pipeline mode: BEGIN, the INSERTs
  and the positions read in one round trip; positions, the fenced advance and COMMIT (or
  PREPARE) in the next; the ledger branch's INSERT runs on its server meanwhile. The
  fewest round trips, for the latency of a lightly loaded pipeline.

A bigger batch tries, in order:

- **fast**: one binary COPY per table straight into the real tables, rows encoded with
  numpy (NUMERIC included: fixed point becomes base-10000 digits exactly, no per-row
  Python); with a separate ledger database its COPY runs alongside on a helper thread.
  Taken when the batch collides with nothing: any identity already present (a duplicated
  frame, a reload) or any refused row makes a COPY fail, the transaction is rolled back,
  and the batch is redone in
- **dedupe**: each record type is COPYed into the loader's UNLOGGED staging table
  (``bot4_stage.<type>_<journal hash>_<layout hash>``; TEMP tables cannot be used: PREPARE
  TRANSACTION refuses them) and moved with the same ``INSERT ... ON CONFLICT DO
  NOTHING`` as the pipeline path.

In the ON CONFLICT paths the executions INSERT returns the fills it inserted, and only
those move positions and get ledger legs, so a fill loaded twice counts once. Should the
database refuse a row (integrity 23xxx or data 22xxx error), the batch is redone in

- **isolate**: staging, each INSERT under a savepoint, bisecting a refused range down to
  the rows the database refuses; those go to ``rejected_rows`` (bytes, SQLSTATE, reason)
  and the rest of the batch commits. Records naming an instrument the loader has no scale
  for are rejected before any INSERT or COPY (``Code.UNKNOWN_INSTRUMENT``), in every mode.

Every path writes identical rows (the tests compare them). Prices and money become NUMERIC
in currency, exactly: ``units / price_scale`` with the scale's decimal places.

Failures:

- serialization failure or deadlock (SQLSTATE 40001, 40P01): the whole batch is retried
  in the same mode, up to :data:`MAX_RETRIES` times, after a full-jitter exponential
  backoff (``uniform(0, min(1 s, 20 ms * 2**attempt))``); then
  :class:`LoadRetriesExhausted`;
- connection loss, server shutdown, pool or lock timeout: :class:`DatabaseUnavailable`.
  The failed batch committed nothing (or, past the two-phase decision, will be completed
  by recovery); the journal keeps everything, and the next call first resolves in-doubt
  two-phase transactions, then resumes from the database's position.

``guard`` (optional): a callable returning a context manager, entered once around
"connect, recover, set up, read the position" and once around each batch (its retries
included), e.g. ``functools.partial(breakers.guard, handle)`` for the "db" circuit
breaker: a call that raises counts as a failure, one that completes as a success; a
refusal (``BreakerOpenError``) propagates before any database work.

Threads: a Loader is used by one thread at a time (e.g. the persistence stage's background
thread) while the stage keeps appending to the journal; it never writes the journal.
Crash test hook: ``BOT4_DB_CRASH_AT=<point>[:<n>]`` SIGKILLs the process the n-th time
(default 1st) it reaches ``point`` (:data:`HOOK_POINTS`); ``hook=`` is called at every
point with its name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import re
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot4.db.conflicts import LEDGER_SQL, exec_conflicts_sql
from bot4.db.pool import DatabaseUnavailable, db_errors, make_pool
from bot4.db.twophase import DEFAULT_PRUNE_AFTER, Coordinator, finish, prepare
from bot4.journal import TornTail
from bot4.journal.tail import JournalBehindDatabase, JournalTail, journal_created_ns
from bot4.records.accounting import average_cost_fill
from bot4.records.dtypes import (
    ACTION_NEW,
    ACTION_REPLACE,
    EXEC_REPORT,
    OPERATOR_ACTION,
    ORDER,
    RISK_DECISION,
    RT_EXEC_REPORT,
    RT_OPERATOR_ACTION,
    RT_ORDER,
    RT_RISK_DECISION,
    SIDE_BUY,
)
from bot4.records.errors import Bot4Error, Code
from bot4.records.fixed import from_fixed, to_fixed
from bot4.records.instruments import DEFAULT_INSTRUMENTS, InstrumentTable

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = [
    "DEFAULT_BATCH_RECORDS",
    "HOOK_POINTS",
    "LOADED_TYPES",
    "MAX_RETRIES",
    "MODES",
    "DatabaseUnavailable",
    "JournalBehindDatabase",
    "LoadPositionConflict",
    "LoadRetriesExhausted",
    "Loader",
    "LoaderStats",
    "Position",
    "apply_fill",
    "journal_created_ns",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_RECORDS = 4096  # loadable records per transaction (a bigger frame goes alone)
# two-phase sessions: a WAL flush waits this long for the other database's flush to join it
# (both COMMIT PREPAREDs are sent at once; without it the server flushes them one by one)
DEFAULT_COMMIT_DELAY_US = 200
SMALL_BATCH_RECORDS = 128  # up to this many loadable records: the pipelined path
MAX_RETRIES = 3  # whole-batch retries on 40001 / 40P01
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 1.0
MAX_CONFLICTS_LOGGED = 10  # identity conflicts logged one by one per batch (all are kept)
MODES = ("pipeline", "fast", "dedupe", "isolate")
LOADED_TYPES = (RT_ORDER, RT_EXEC_REPORT, RT_RISK_DECISION, RT_OPERATOR_ACTION)
HOOK_POINTS = (
    "positions-read",  # positions of the batch's fills read, not yet written
    "before-commit",  # every statement done, nothing prepared or committed
    "committed",  # single-database commit done
    "prepared-events",  # events branch prepared, ledger branch open
    "prepared-ledger",  # both branches prepared, no decision
    "decided",  # commit decision durable, nothing committed
    "committed-events",  # events branch committed, ledger branch prepared
    "committed-ledger",  # both committed
)
_JOURNAL_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ROW_ERROR_CLASSES = ("22", "23")  # data exception, integrity constraint violation


class LoadPositionConflict(Bot4Error):
    """The stored load position moved under this loader: another loader of the same
    journal id ran against this database."""

    code = Code.CONFIG_INVALID


class LoadRetriesExhausted(Bot4Error):
    """A batch kept failing with serialization failures or deadlocks; retry later."""

    code = Code.SERIALIZATION_FAILURE


class _SlowPathNeeded(Exception):
    """A batch the fast path cannot encode (a value outside a column's range)."""


# --- binary COPY encoding -------------------------------------------------------------------

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_NUMERIC_INT_GROUPS = 5  # base-10000 digits before the point: 10000**5 > 2**64
_NUMERIC_NEG = 0x4000


def _numeric_dtype(frac_groups: int) -> np.dtype:
    """Binary NUMERIC with a fixed digit count: ndigits, weight, sign, dscale, then 5
    integer and ``frac_groups`` fraction base-10000 digits, most significant first
    (PostgreSQL strips zero digits at either end on input)."""
    return np.dtype(
        [
            ("ndigits", ">i2"),
            ("weight", ">i2"),
            ("sign", ">u2"),
            ("dscale", ">i2"),
            ("digits", ">i2", (_NUMERIC_INT_GROUPS + frac_groups,)),
        ]
    )


def split_sign(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|units|, units < 0)`` of int64 ``units`` as uint64 magnitudes (INT64_MIN too)."""
    signed = np.asarray(units).astype(np.int64, copy=False)
    negative = signed < 0
    magnitude = signed.view(np.uint64).copy()
    magnitude[negative] = ~magnitude[negative] + np.uint64(1)
    return magnitude, negative


def numeric_payload(
    magnitude: np.ndarray,
    negative: np.ndarray | None,
    scale: np.ndarray | int,
    decimals: np.ndarray | int,
    frac_groups: int,
) -> np.ndarray:
    """``±magnitude / scale`` as binary NUMERIC with ``decimals`` places, exactly.

    ``magnitude`` uint64; ``scale`` (per row or one) must divide ``10**(4 * frac_groups)``
    and ``decimals`` be at most ``4 * frac_groups``.
    """
    n = len(magnitude)
    out = np.empty(n, _numeric_dtype(frac_groups))
    out["ndigits"] = _NUMERIC_INT_GROUPS + frac_groups
    out["weight"] = _NUMERIC_INT_GROUPS - 1
    out["sign"] = 0 if negative is None else np.where(negative, _NUMERIC_NEG, 0)
    out["dscale"] = decimals
    digits = np.empty((n, _NUMERIC_INT_GROUPS + frac_groups), dtype=np.int16)
    whole = magnitude.astype(np.uint64, copy=True)
    if frac_groups:
        scale = np.asarray(scale, dtype=np.uint64)
        frac = (whole % scale) * (np.uint64(10 ** (4 * frac_groups)) // scale)
        whole //= scale
        for k in range(frac_groups):
            digits[:, _NUMERIC_INT_GROUPS + frac_groups - 1 - k] = frac % np.uint64(10_000)
            frac //= np.uint64(10_000)
    for k in range(_NUMERIC_INT_GROUPS):
        digits[:, _NUMERIC_INT_GROUPS - 1 - k] = whole % np.uint64(10_000)
        whole //= np.uint64(10_000)
    out["digits"] = digits
    return out


@dataclass(slots=True)
class _Field:
    """One column of a binary COPY: its payload per row (big-endian dtype), NULL mask, and
    whether its (``S``) payload has a per-row length (rows are then grouped by value)."""

    payload: np.ndarray
    null: np.ndarray | None = None
    varlen: bool = False


def copy_stream(fields: list[_Field], n: int) -> list:
    """The binary COPY stream of ``n`` rows of ``fields``, built with numpy, as a list of
    buffers to write in order (no copy of the rows into one ``bytes``).

    A row format is fixed per row only when every column has a fixed length, so rows are
    grouped by their NULL pattern and by the value of each ``varlen`` column; each group
    is one numpy array of wire rows. Row order is not kept across groups (COPY does not
    care; the fast path inserts every row or none).
    """
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for f in fields:
        if f.null is not None:
            key += f.null.astype(np.int64) * radix
            radix *= 2
        if f.varlen:
            values, inverse = np.unique(f.payload, return_inverse=True)
            key += inverse.astype(np.int64) * radix
            radix *= len(values)
    if radix == 1 or key.min() == key.max():
        groups = [None]  # one row format: encode the columns as they are, no copies
    else:
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))
        groups = np.split(order, bounds[:-1])
    chunks = [_COPY_HEADER]
    for rows in groups:
        r0 = 0 if rows is None else int(rows[0])
        count = n if rows is None else len(rows)
        wire: list[tuple] = [("ncols", ">i2")]
        plan = []
        for k, f in enumerate(fields):
            wire.append((f"l{k}", ">i4"))
            if f.null is not None and f.null[r0]:
                plan.append((k, -1, None))
                continue
            if f.varlen:
                value = bytes(f.payload[r0])
                dtype = np.dtype(f"S{len(value)}")
                plan.append((k, len(value), value))
            else:
                dtype = f.payload.dtype
                plan.append((k, dtype.itemsize, f.payload if rows is None else f.payload[rows]))
            wire.append((f"v{k}", dtype))
        out = np.empty(count, dtype=np.dtype(wire))
        out["ncols"] = len(fields)
        for k, length, values in plan:
            out[f"l{k}"] = length
            if values is not None:
                out[f"v{k}"] = values
        chunks.append(memoryview(out.view(np.uint8)))
    chunks.append(_COPY_TRAILER)
    return chunks


def _write(copy, chunks: list) -> None:
    for chunk in chunks:
        copy.write(chunk)


def _ints(values: np.ndarray, wire: str) -> np.ndarray:
    """An integer column in ``wire`` (``>i8``, ``>i4``, ``>i2``); uint64 by bit pattern
    into bigint, like the staging path. _SlowPathNeeded if a value does not fit."""
    if wire == ">i8":
        return (values.view(np.int64) if values.dtype == np.uint64 else values).astype(wire)
    info = np.iinfo(np.dtype(wire).newbyteorder("="))
    if len(values) and (values.max() > info.max or values.min() < info.min):
        raise _SlowPathNeeded(f"value out of {wire} range")
    return values.astype(wire)


# --- tables: one column spec drives the fast (COPY) and the slow (SQL) path -----------------


@dataclass(frozen=True, slots=True)
class _Column:
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


def _spec(text: str) -> tuple[_Column, ...]:
    cols = []
    for item in text.split():
        name, kind = item.split(":")
        cols.append(_Column(name, kind.rstrip("?"), kind.endswith("?")))
    return tuple(cols)


_SRC_COLUMNS = ("src_journal", "src_frame", "src_index")
_ORDER_SPEC = (
    "client_order_id:u64 order_id:u64 {orig} seq:i8 parent_seq:i8 action:i2 instrument:i4 "
    "strategy:i4 side:i2 order_type:i2 tif:i2 qty:i8 limit_price:px? stop_price:px? "
    "ts_event_ns:i8 ts_recv_ns:i8 ts_signal_ns:i8 ts_risk_ns:i8 ts_order_ns:i8 model_id:i8"
)
_CREATES_ORDER = (ACTION_NEW, ACTION_REPLACE)


@dataclass(frozen=True)
class _Table:
    """A real table fed from one record type. ``creates`` routes ORDER records: True for
    the actions that create an order (``orders``), False for the others
    (``order_actions``), None: every record. ``fast``: eligible for the COPY path."""

    name: str
    rtype: int
    columns: tuple[_Column, ...]
    creates: bool | None = None
    fast: bool = True

    @property
    def join(self) -> bool:
        return any(c.kind == "px" for c in self.columns)

    def route(self, records: np.ndarray) -> np.ndarray | None:
        if self.creates is None:
            return None
        creates = np.isin(records["action"], _CREATES_ORDER)
        return creates if self.creates else ~creates

    def insert_sql(self, source: str) -> str:
        """Rows of ``source`` (the staging table, or ``unnest`` of arrays, aliased ``s``)
        -> table, ON CONFLICT DO NOTHING, over rows ``rid`` in [%(lo)s, %(hi)s); for
        executions: (rows inserted, frames and indexes of the inserted fills)."""
        cols = ", ".join([*(c.name for c in self.columns), *_SRC_COLUMNS])
        exprs = ", ".join([*(c.sql() for c in self.columns), "%(journal)s", "s.frame", "s.idx"])
        join = " LEFT JOIN instruments i ON i.instrument = s.instrument" if self.join else ""
        where = "true"
        if self.creates is not None:
            where = f"s.action {'' if self.creates else 'NOT '}IN {_CREATES_ORDER}"
        sql = (
            f"INSERT INTO {self.name} ({cols}) SELECT {exprs} FROM {source}{join} "
            f"WHERE {where} AND s.rid >= %(lo)s AND s.rid < %(hi)s ON CONFLICT DO NOTHING"
        )
        if self.rtype != RT_EXEC_REPORT:
            return sql
        return (
            f"WITH ins AS ({sql} RETURNING src_frame, src_index, last_qty) "
            "SELECT count(*), array_agg(src_frame) FILTER (WHERE last_qty > 0), "
            "array_agg(src_index) FILTER (WHERE last_qty > 0), "
            "set_config('bot4.inserted_fills', (count(*) FILTER (WHERE last_qty > 0))::text, "
            "true) FROM ins"
        )

    def copy_sql(self) -> str:
        cols = ", ".join([*(c.name for c in self.columns), *_SRC_COLUMNS])
        return f"COPY {self.name} ({cols}) FROM STDIN (FORMAT BINARY)"


_TABLES: dict[int, tuple[_Table, ...]] = {
    RT_ORDER: (
        _Table(
            "orders", RT_ORDER, _spec(_ORDER_SPEC.format(orig="orig_client_order_id:u64?")), True
        ),
        _Table(
            "order_actions",
            RT_ORDER,
            _spec(_ORDER_SPEC.format(orig="orig_client_order_id:u64")),
            False,
        ),
    ),
    RT_EXEC_REPORT: (
        _Table(
            "exec_reports",
            RT_EXEC_REPORT,
            _spec(
                "exec_id:u64 client_order_id:u64 order_id:u64 seq:i8 parent_seq:i8 exec_type:i2 "
                "status:i2 reason:i4 instrument:i4 strategy:i4 side:i2 last_qty:i8 last_price:px "
                "cum_qty:i8 leaves_qty:i8 fee:px ts_event_ns:i8 ts_recv_ns:i8 ts_order_ns:i8 "
                "ts_venue_ns:i8 prevented_qty:i8 venue:i2"
            ),
        ),
    ),
    RT_RISK_DECISION: (
        _Table(
            "risk_decisions",
            RT_RISK_DECISION,
            _spec(
                "intent_producer:i4 intent_seq:i8 seq:i8 parent_seq:i8 decision:i2 reason:i4 "
                "instrument:i4 strategy:i4 side:i2 qty:i8 limit_price:px? stop_price:px? "
                "position:i8 exposure:px checked_value:i8 limit_value:i8 ts_event_ns:i8 "
                "ts_recv_ns:i8 ts_signal_ns:i8 ts_risk_ns:i8"
            ),
        ),
    ),
    RT_OPERATOR_ACTION: (
        _Table(
            "operator_actions",
            RT_OPERATOR_ACTION,
            _spec(
                "who:text seq:i8 ts_ns:i8 parent_seq:i8 action:i2 target_kind:i2 target:i8 "
                "reason:i4 old_state:i2 new_state:i2 note:text"
            ),
            fast=False,  # rare, and text of any length: always through staging
        ),
    ),
}
_LEDGER_COLUMNS = (
    "venue", "exec_session", "exec_id", "leg", "account", "instrument", "strategy", "debit", "credit", "ts_venue_ns",
    *_SRC_COLUMNS,
)  # fmt: skip


# --- staging (the dedupe and isolate paths) -------------------------------------------------


@dataclass(frozen=True)
class _StageLayout:
    """How one record type is staged: ``rid`` (row in the batch), ``frame``, ``idx``, then
    its fields (every integer as bigint, uint64 by bit pattern; bytes as bytea)."""

    dtype: np.dtype
    kind: str  # table stem
    fields: tuple[str, ...]

    @classmethod
    def of(cls, dtype: np.dtype, kind: str) -> _StageLayout:
        return cls(dtype, kind, tuple(f for f in dtype.names if not f.startswith("reserved")))

    def columns_sql(self) -> str:
        cols = ["rid bigint", "frame bigint", "idx bigint"]
        for name in self.fields:
            cols.append(f"{name} {'bytea' if self.dtype.fields[name][0].kind == 'S' else 'bigint'}")
        return ", ".join(cols)

    def table(self, journal_key: str) -> str:
        digest = hashlib.sha1(self.columns_sql().encode()).hexdigest()[:8]
        return f"bot4_stage.{self.kind}_{journal_key}_{digest}"

    def unnest_source(self) -> str:
        """The staging columns as ``unnest`` of array parameters ``%(u0)s``.., alias ``s``:
        what the pipeline path reads instead of the staging table."""
        names = ["rid", "frame", "idx", *self.fields]
        kinds = ["bigint"] * 3 + [
            "bytea" if self.dtype.fields[f][0].kind == "S" else "bigint" for f in self.fields
        ]
        arrays = ", ".join(f"%(u{k})s::{t}[]" for k, t in enumerate(kinds))
        return f"unnest({arrays}) AS s({', '.join(names)})"

    def unnest_params(self, part: _Part) -> dict[str, list]:
        """The array parameters of :meth:`unnest_source` for ``part`` (rid = position)."""
        params: dict[str, list] = {
            "u0": list(range(len(part))),
            "u1": part.frames.tolist(),
            "u2": part.idx.tolist(),
        }
        for k, name in enumerate(self.fields, start=3):
            col = part.records[name]
            if col.dtype.kind == "S":
                params[f"u{k}"] = col.tolist()
            else:
                params[f"u{k}"] = (col.view(np.int64) if col.dtype == np.uint64 else col).tolist()
        return params

    def encode(self, part: _Part) -> list:
        """Binary COPY stream of ``part`` (rid = position in ``part``)."""
        n = len(part.records)
        fields = [
            _Field(np.arange(n, dtype=">i8")),
            _Field(part.frames.astype(">i8")),
            _Field(part.idx.astype(">i8")),
        ]
        for name in self.fields:
            col = part.records[name]
            fields.append(_Field(col if col.dtype.kind == "S" else _ints(col, ">i8")))
        return copy_stream(fields, n)


_LAYOUTS = {
    RT_ORDER: _StageLayout.of(ORDER, "order"),
    RT_EXEC_REPORT: _StageLayout.of(EXEC_REPORT, "exec"),
    RT_RISK_DECISION: _StageLayout.of(RISK_DECISION, "decision"),
    RT_OPERATOR_ACTION: _StageLayout.of(OPERATOR_ACTION, "operator"),
}

_LEDGER_SQL = LEDGER_SQL  # legs inserted once; legs unlike the ones under their key kept

_ADVANCE_SQL = "SELECT bot4_advance(%(journal)s, %(first)s, %(end)s, %(records)s, %(created)s)"
_FENCED = "B4001"  # bot4_advance: the stored position is not where this batch starts
_CAS_MISS = "B4003"  # bot4_positions_cas: a fill not inserted, or a position moved meanwhile
_POSITIONS_CAS_SQL = (
    "SELECT bot4_positions_cas(%s, %s::integer[], %s::integer[], %s::bigint[], %s::bigint[], "
    "%s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::numeric[], %s::bigint[])"
)

_POSITIONS_READ_SQL = """
SELECT strategy, instrument, qty, cost, realised_pnl, fees, bought_qty, sold_qty, fills,
       last_exec_id, last_ts_venue_ns
FROM positions
WHERE (strategy, instrument) IN (SELECT * FROM unnest(%s::integer[], %s::integer[]))
"""

_POSITIONS_WRITE_SQL = """
INSERT INTO positions (strategy, instrument, qty, cost, realised_pnl, fees, bought_qty,
                       sold_qty, fills, last_exec_id, last_ts_venue_ns, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (strategy, instrument) DO UPDATE
   SET qty = EXCLUDED.qty, cost = EXCLUDED.cost, realised_pnl = EXCLUDED.realised_pnl,
       fees = EXCLUDED.fees, bought_qty = EXCLUDED.bought_qty, sold_qty = EXCLUDED.sold_qty,
       fills = EXCLUDED.fills, last_exec_id = EXCLUDED.last_exec_id,
       last_ts_venue_ns = EXCLUDED.last_ts_venue_ns, updated_at = now()
"""

_REJECT_SQL = """
INSERT INTO rejected_rows (src_journal, src_frame, src_index, record_type, code, sqlstate,
                           reason, payload)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

_INSTRUMENT_SQL = """
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


# --- positions ------------------------------------------------------------------------------


@dataclass(slots=True)
class Position:
    """One strategy's position in one instrument, in fixed-point integers.

    ``cost`` and ``realised`` are in price units times shares (currency = value / scale),
    ``fees`` in price units. Average cost: see :func:`apply_fill`.
    """

    qty: int = 0
    cost: int = 0
    realised: int = 0
    fees: int = 0
    bought: int = 0
    sold: int = 0
    fills: int = 0
    last_exec_id: int | None = None
    last_ts_venue_ns: int | None = None


def apply_fill(
    p: Position, side: int, qty: int, price: int, fee: int, exec_id: int, ts_venue_ns: int
) -> None:
    """Move ``p`` by one fill (``qty`` > 0 shares at ``price`` units, ``fee`` units).

    Average cost by :func:`bot4.records.accounting.average_cost_fill`, the rule the risk
    stage keeps its positions by, so the table and risk agree to the unit.
    """
    signed = qty if side == SIDE_BUY else -qty
    p.fills += 1
    p.fees += fee
    if signed > 0:
        p.bought += qty
    else:
        p.sold += qty
    q, c, realised, _closed = average_cost_fill(p.qty, p.cost, signed, price)
    p.qty, p.cost = int(q), int(c)
    p.realised += int(realised)
    p.last_exec_id = exec_id
    p.last_ts_venue_ns = ts_venue_ns


# --- batches --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """The records of one type in a batch, with their journal frame and index in it."""

    records: np.ndarray
    frames: np.ndarray  # int64 global frame index
    idx: np.ndarray  # int64 index within the frame

    def take(self, which: np.ndarray) -> _Part:
        return _Part(self.records[which], self.frames[which], self.idx[which])

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class _Batch:
    first: int  # frames [first, end)
    end: int
    records: int  # every record of the frames, loadable or not
    parts: dict[int, _Part]

    @classmethod
    def of(cls, frames: list[tuple[int, int, np.ndarray]]) -> _Batch:
        grouped: dict[int, list[tuple[int, np.ndarray]]] = {}
        for index, rtype, records in frames:
            if rtype in _LAYOUTS:
                grouped.setdefault(rtype, []).append((index, records))
        parts = {}
        for rtype, items in grouped.items():
            counts = np.array([len(r) for _, r in items], dtype=np.int64)
            starts = np.cumsum(counts) - counts
            parts[rtype] = _Part(
                np.concatenate([r for _, r in items]),
                np.repeat(np.array([i for i, _ in items], dtype=np.int64), counts),
                np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts),
            )
        total = sum(len(r) for _, _, r in frames)
        return cls(frames[0][0], frames[-1][0] + 1, total, parts)


@dataclass
class LoaderStats:
    """Counters of one Loader (written by its thread only; read by anyone)."""

    batches: int = 0  # committed load transactions
    frames: int = 0  # journal frames in committed batches
    records: int = 0  # journal records in committed batches (every type)
    staged: int = 0  # loadable records in committed batches
    inserted: int = 0  # rows inserted into the event tables
    duplicates: int = 0  # loadable records whose identity was already there
    rejected: int = 0  # records stored in rejected_rows
    fills: int = 0  # fills inserted (positions and ledger moved by them)
    ledger_rows: int = 0  # ledger legs inserted
    conflicts: int = 0  # executions kept in exec_conflicts: their id holds another execution
    ledger_conflicts: int = 0  # ledger legs kept in ledger_conflicts (unlike the leg there)
    twophase: int = 0  # batches committed with two-phase commit
    pipelined_batches: int = 0  # small batches committed by the pipelined ON CONFLICT path
    fast_batches: int = 0  # batches committed by direct COPY
    dedupe_batches: int = 0  # batches committed through staging + ON CONFLICT
    isolations: int = 0  # batches committed with refused rows isolated by savepoints
    retries: int = 0  # whole-batch retries after 40001 / 40P01
    serialization_failures: int = 0
    deadlocks: int = 0
    unavailable: int = 0  # DatabaseUnavailable raised
    backoffs: int = 0  # follow(): waits after a failed call (database down, breaker open)
    recovered_commits: int = 0  # in-doubt branches committed by recovery
    recovered_rollbacks: int = 0  # in-doubt branches rolled back by recovery
    pruned_decisions: int = 0  # two-phase decisions dropped from the log (both committed)
    one_trip_batches: int = 0  # small batches with fills sent in one round trip (positions CAS)
    cas_misses: int = 0  # one-round-trip attempts refused (B4003) and redone in two
    skipped: int = 0  # records of types the loader does not load (market data, ...)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Outcome:
    staged: int = 0  # loadable records of the batch
    inserted: int = 0
    rejected: int = 0
    ledger_rows: int = 0
    fills: _Part | None = None  # the fills inserted, in journal order
    conflicts: list = field(default_factory=list)  # exec_conflicts rows kept (RETURNING)
    ledger_conflicts: int = 0
    moved: dict | None = None  # positions the batch wrote, (strategy, instrument) -> Position


class _Instruments:
    """The loader's instruments as NUMERIC conversion data, per id and as sorted arrays.

    ``decimals`` of a scale: the fewest decimal places that hold ``1 / scale`` exactly
    (scales with prime factors other than 2 and 5 are refused); the COPY path carries
    ``ceil(max decimals / 4)`` base-10000 fraction digits.
    """

    def __init__(self, table: InstrumentTable) -> None:
        self.by_id: dict[int, tuple[int, Decimal, str, Decimal, int]] = {}
        for ident in table.ids:
            scale = table.price_scale(ident)
            try:
                unit = from_fixed(1, scale)
            except ValueError:
                raise Bot4Error(
                    f"instrument {ident}: price_scale {scale} has no exact decimal unit "
                    "(only factors 2 and 5 convert exactly to NUMERIC)",
                    Code.INSTRUMENT_CONFIG_INVALID,
                ) from None
            tick = from_fixed(table.tick_size(ident), scale)
            self.by_id[ident] = (scale, unit, table.symbol_of(ident), tick, table.lot_size(ident))
        self.ids = np.array(sorted(self.by_id), dtype=np.uint32)
        self.scales = np.array([self.by_id[int(i)][0] for i in self.ids], dtype=np.uint64)
        self.decimals = np.array([-self.by_id[int(i)][1].as_tuple().exponent for i in self.ids])
        self.frac_groups = math.ceil(int(self.decimals.max(initial=0)) / 4)
        self.copy_ok = self.frac_groups <= 4  # fraction digits fit uint64 arithmetic
        self.accounts = np.array(
            [f"position:{self.by_id[int(i)][2]}".encode() for i in self.ids], dtype=object
        )

    def scale(self, ident: int) -> int:
        return self.by_id[ident][0]

    def known(self, instruments: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.ids, instruments), len(self.ids) - 1)
        return self.ids[at] == instruments

    def rows(self, instruments: np.ndarray) -> np.ndarray:
        """Index into the sorted arrays of each (known) instrument."""
        return np.searchsorted(self.ids, instruments)

    def money(self, units: np.ndarray, instruments: np.ndarray) -> np.ndarray:
        """Binary NUMERIC of fixed-point ``units`` in each row's instrument scale."""
        at = self.rows(instruments)
        magnitude, negative = split_sign(units)
        return numeric_payload(
            magnitude, negative, self.scales[at], self.decimals[at], self.frac_groups
        )


def _u64_numeric(values: np.ndarray) -> np.ndarray:
    return numeric_payload(values.astype(np.uint64, copy=False), None, 1, 0, 0)


# --- the loader -----------------------------------------------------------------------------


class Loader:
    """Loads one journal into the events (and ledger) database, exactly once.

    ``journal_dir``: the journal (read only; it may not exist yet). ``dsn``: the events
    database; ``ledger_dsn``: the ledger database (None: the ledger tables live in the
    events database, one transaction, no two-phase commit). ``journal_id``: the journal's
    name in the database (default: the directory's name; 1-64 of ``A-Za-z0-9_.-``).
    ``instruments``: gives each price its scale (default ``DEFAULT_INSTRUMENTS``).
    ``batch_records``: loadable records per transaction. ``small_batch``: batches of at
    most this many loadable records take the pipelined path (0: never). ``fast_path``: try
    the direct COPY first for bigger ones (False: staging + ON CONFLICT).
    ``coordinator_dir``: the two-phase decision log (default
    ``<journal_dir>/coordinator``). ``guard``, ``hook``: see the module docstring.
    ``pool_timeout``: seconds a checkout waits for a connection. ``synchronous_commit``:
    wait for the WAL flush of one-database commits too (default False: the journal is the
    durable copy; see :meth:`_commit_one_phase`). Two-phase branches always flush: PREPARE
    and COMMIT PREPARED ignore the setting. ``prune_after``: decisions in the two-phase
    decision log before a call that completed every transaction it decided drops them
    (:meth:`Coordinator.prune <bot4.db.twophase.Coordinator.prune>`).

    The constructor does not touch the database (it may be down); the first
    :meth:`load_available` or :meth:`recover` resolves in-doubt transactions, applies the
    migrations, registers the instruments and creates the staging tables.
    """

    def __init__(
        self,
        journal_dir: str | os.PathLike,
        dsn: str,
        ledger_dsn: str | None = None,
        *,
        journal_id: str | None = None,
        instruments: InstrumentTable | None = None,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        fast_path: bool = True,
        guard: Callable[[], AbstractContextManager] | None = None,
        hook: Callable[[str], None] | None = None,
        alarm: Callable[[Code, int], None] | None = None,
        coordinator_dir: str | os.PathLike | None = None,
        pool_timeout: float = 3.0,
        small_batch: int = SMALL_BATCH_RECORDS,
        synchronous_commit: bool = False,
        prune_after: int = DEFAULT_PRUNE_AFTER,
        one_trip: bool = True,
        commit_delay_us: int = DEFAULT_COMMIT_DELAY_US,
    ) -> None:
        self.journal_dir = Path(journal_dir)
        self.journal_id = journal_id or self.journal_dir.resolve().name
        if not _JOURNAL_ID_RE.match(self.journal_id):
            raise Bot4Error(
                f"journal id {self.journal_id!r}: use 1-64 of A-Z a-z 0-9 _ . -",
                Code.CONFIG_INVALID,
            )
        if batch_records < 1:
            raise ValueError("batch_records must be >= 1")
        self.batch_records = batch_records
        self.small_batch = small_batch
        self.synchronous_commit = synchronous_commit
        self.one_trip = one_trip
        self.commit_delay_us = commit_delay_us
        # positions as this loader last committed them; a batch whose fills move only
        # these is sent in one round trip (bot4_positions_cas checks them); emptied by any
        # failure, a refused CAS and recovery
        self._known: dict[tuple[int, int], Position] = {}
        self.guard = guard
        self.hook = hook
        self.alarm = alarm
        self.stats = LoaderStats()
        self.two_phase = ledger_dsn is not None
        self._inst = _Instruments(instruments or DEFAULT_INSTRUMENTS)
        self.fast_path = fast_path and self._inst.copy_ok
        self._key = hashlib.sha1(self.journal_id.encode()).hexdigest()[:10]
        self._journal_bytes = self.journal_id.encode()
        self._crash = _crash_point()
        self._crash_seen = 0
        self._events: ConnectionPool | None = None
        self._ledger: ConnectionPool | None = None
        self._tail: JournalTail | None = None
        self._coord = Coordinator(
            coordinator_dir or self.journal_dir / "coordinator", self.journal_id, prune_after
        )
        app = f"bot4-loader:{self.journal_id}"[:63]
        try:
            self._events = make_pool(
                dsn, name="bot4-events", application_name=app, timeout=pool_timeout
            )
            if ledger_dsn is not None:
                self._ledger = make_pool(
                    ledger_dsn, name="bot4-ledger", application_name=app, timeout=pool_timeout
                )
        except BaseException:
            self.close()
            raise
        self._ready = False
        self._recover_needed = True
        self._created_ns: int | None = None
        self._pool_executor = None  # one thread: the ledger branch of fast batches
        self._position: int | None = None  # committed position, while nothing failed
        self._held: tuple | None = None  # (events, ledger) connections between calls

    # --- setup ------------------------------------------------------------------------------

    def _stage_table(self, rtype: int) -> str:
        return _LAYOUTS[rtype].table(self._key)

    def _setup_db(
        self, conn: psycopg.Connection, scopes: tuple[str, ...], rtypes: tuple[int, ...]
    ) -> None:
        from bot4.db.migrate import migrate

        migrate(conn, scopes)
        rows = [
            (ident, symbol, scale, unit, tick, lot)
            for ident, (scale, unit, symbol, tick, lot) in self._inst.by_id.items()
        ]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_INSTRUMENT_SQL, rows)
        for rtype in rtypes:
            conn.execute(
                f"CREATE UNLOGGED TABLE IF NOT EXISTS {self._stage_table(rtype)} "
                f"({_LAYOUTS[rtype].columns_sql()}) WITH (autovacuum_enabled = false)"
            )

    def _setup(self, ev: psycopg.Connection, lg: psycopg.Connection | None) -> None:
        if lg is None:
            self._setup_db(ev, ("events", "ledger"), LOADED_TYPES)
        else:
            self._setup_db(ev, ("events",), LOADED_TYPES)
            self._setup_db(lg, ("ledger",), (RT_EXEC_REPORT,))
            for conn, name in ((ev, "events"), (lg, "ledger")):
                n = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
                if n < 2:
                    raise Bot4Error(
                        f"{name} database: max_prepared_transactions = {n}; two-phase commit "
                        "needs at least 2 (set it in postgresql.conf and restart the server)",
                        Code.CONFIG_INVALID,
                    )
        self._ready = True

    # --- connections, hooks -----------------------------------------------------------------

    @contextlib.contextmanager
    def _connections(self) -> Iterator[tuple[psycopg.Connection, psycopg.Connection | None]]:
        """The loader's connections, checked out of the pools (and checked) on first use and
        kept across calls while they work; any exception hands them back to their pools
        (which discard broken ones), so the next call checks out fresh, checked ones."""
        if self._events is None:
            raise Bot4Error("loader is closed")
        if self._held is None:
            held: list = []
            try:
                with db_errors(f"journal {self.journal_id}: connect"):
                    held.append(self._events.getconn())
                    if self._ledger is not None:
                        held.append(self._ledger.getconn())
            except BaseException:
                for pool, conn in zip((self._events, self._ledger), held, strict=False):
                    pool.putconn(conn)
                raise
            self._held = (held[0], held[1] if len(held) > 1 else None)
            if self._held[1] is not None and self.commit_delay_us > 0:
                try:
                    with db_errors(f"journal {self.journal_id}: connect"):
                        self._group_flushes(self._held)
                except BaseException:
                    self._release()
                    raise
        try:
            yield self._held
        except BaseException:
            self._release()
            raise

    def _group_flushes(self, conns: tuple) -> None:
        """Two-phase sessions: ``commit_delay`` (with ``commit_siblings`` 0) so the WAL
        flush of one database's PREPARE / COMMIT PREPARED waits ``commit_delay_us`` for the
        other's to join it when both share a server; without it the server flushes the
        pair one after the other. A superuser setting: where the loader's role may not set
        it, it says so once and goes on without (a DBA can ``ALTER ROLE ... SET``)."""
        from psycopg import errors

        for conn in conns:
            try:
                conn.execute(f"SET commit_delay = {int(self.commit_delay_us)}")
                conn.execute("SET commit_siblings = 0")
            except errors.InsufficientPrivilege:
                log.info("journal %s: commit_delay not settable by this role: two-phase "
                         "flushes are not grouped", self.journal_id)  # fmt: skip
                self.commit_delay_us = 0
                return

    def _release(self) -> None:
        """Hand the held connections back to their pools (rolled back or discarded there)."""
        held, self._held = self._held, None
        if held is None:
            return
        for pool, conn in ((self._events, held[0]), (self._ledger, held[1])):
            if pool is not None and conn is not None:
                with contextlib.suppress(Exception):
                    pool.putconn(conn)

    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)
        if self._crash is not None and point == self._crash[0]:
            self._crash_seen += 1
            if self._crash_seen >= self._crash[1]:
                log.warning("BOT4_DB_CRASH_AT: killing the loader at %s", point)
                os.kill(os.getpid(), signal.SIGKILL)

    def _guarded(self) -> AbstractContextManager:
        return self.guard() if self.guard is not None else contextlib.nullcontext()

    def _prepare_both(
        self,
        ev: psycopg.Connection,
        lg: psycopg.Connection,
        gids: tuple[str, str],
        sent: list[tuple[psycopg.Connection, str]],
    ) -> None:
        """First phase: PREPARE TRANSACTION on both databases at once (both sent before
        either is awaited; on one server their WAL flushes can share a sync). The crash
        point ``prepared-events`` is reached when the events branch is prepared, the
        ledger's PREPARE then in flight; ``prepared-ledger`` when both are."""
        with lg.pipeline():
            with ev.pipeline():
                sent.append((lg, gids[1]))
                prepare(lg, gids[1])
                sent.append((ev, gids[0]))
                prepare(ev, gids[0])
            self._hook("prepared-events")
        self._hook("prepared-ledger")

    def _commit_prepared(
        self, ev: psycopg.Connection, lg: psycopg.Connection, gid_e: str, gid_l: str
    ) -> None:
        """Second phase, once the decision is durable: COMMIT PREPARED on both databases at
        once. ``committed-events`` is reached when the events branch is committed (the
        ledger's COMMIT PREPARED in flight), ``committed-ledger`` when both are."""
        with lg.pipeline():
            with ev.pipeline():
                finish(lg, gid_l, True)
                finish(ev, gid_e, True)
            self._hook("committed-events")
        self._hook("committed-ledger")
        self.stats.twophase += 1

    def _undo(
        self,
        conns: tuple[psycopg.Connection | None, ...],
        sent: list[tuple[psycopg.Connection, str]],
    ) -> None:
        """A batch failed before its decision: roll back both branches, prepared or not. A
        PREPARE that never took effect has nothing to roll back; one that cannot be
        reached now is left to presumed abort at the next recovery."""
        from psycopg import errors

        for conn in conns:
            _rollback_quietly(conn)
        for conn, gid in sent:
            try:
                finish(conn, gid, False)
            except errors.UndefinedObject:
                pass  # not prepared (its PREPARE failed or never ran)
            except Exception:
                self._recover_needed = True

    def _commit_one_phase(self, conn: psycopg.Connection) -> None:
        """COMMIT of a batch that touches one database. Unless ``synchronous_commit``, the
        commit does not wait for its WAL flush: the journal already holds the batch
        durably, and a server crash that takes back the last commits takes their load
        position back with them (one WAL stream), so those frames load again."""
        if not self.synchronous_commit:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
        conn.execute("COMMIT")

    # --- public API -------------------------------------------------------------------------

    def recover(self) -> dict[str, list[str]]:
        """Resolve this journal's in-doubt two-phase transactions on both databases from
        the decision log (commit if decided, else roll back): the gids committed and
        rolled back. DatabaseUnavailable if a database cannot be reached."""
        with self._guarded(), self._connections() as (ev, lg):
            return self._recover(ev, lg)

    def _recover(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None
    ) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {"committed": [], "rolled_back": []}
        with db_errors(f"journal {self.journal_id}: recover"):
            for conn in (ev, lg) if lg is not None else (ev,):
                res = self._coord.resolve(conn)
                done["committed"] += res.committed
                done["rolled_back"] += res.rolled_back
        self._known = {}  # another process may have moved positions since
        self.stats.recovered_commits += len(done["committed"])
        self.stats.recovered_rollbacks += len(done["rolled_back"])
        if done["committed"]:
            self._position = None  # a batch landed: read the position again
        if done["committed"] or done["rolled_back"]:
            log.warning(
                "journal %s: in-doubt transactions resolved: committed %s, rolled back %s",
                self.journal_id,
                done["committed"],
                done["rolled_back"],
            )
        self._recover_needed = False
        return done

    @property
    def torn_tail(self) -> TornTail | None:
        """Where the last :meth:`load_available` stopped short of the end of the journal: a
        frame still being appended, or torn by a crash (the writer truncates it when it
        next opens the journal); None when it read every byte."""
        return self._tail.torn_tail if self._tail is not None else None

    @property
    def loaded_frame(self) -> int | None:
        """The first journal frame not loaded, as this loader last knew it without asking
        the database (None before it read the position, or after an error): for metrics."""
        return self._position

    def position(self) -> int:
        """The first journal frame the events database has not loaded (0 if none)."""
        with self._connections() as (ev, _lg), db_errors(f"journal {self.journal_id}: position"):
            return self._read_position(ev, check=False)

    def _read_position(self, ev: psycopg.Connection, check: bool = True) -> int:
        exists = ev.execute("SELECT to_regclass('load_positions') IS NOT NULL").fetchone()[0]
        if not exists:
            return 0
        row = ev.execute(
            "SELECT next_frame, journal_created_ns FROM load_positions WHERE journal_id = %s",
            (self.journal_id,),
        ).fetchone()
        if row is None:
            return 0
        if check and row[1] is not None:
            created = journal_created_ns(self.journal_dir)
            if created is not None and created != row[1]:
                raise JournalBehindDatabase(
                    f"journal {self.journal_id} in {self.journal_dir} is not the one loaded so "
                    f"far (created {created}, database has {row[1]}): give it another id"
                )
        return int(row[0])

    def load_available(self, max_batches: int | None = None) -> int:
        """Load every complete frame after the database's position, in at most
        ``max_batches`` transactions; returns the journal records of the committed batches
        (0: nothing new). Raises DatabaseUnavailable, LoadRetriesExhausted,
        BreakerOpenError (from ``guard``) or journal errors; batches committed before the
        error stay committed."""
        loaded = 0
        try:
            with contextlib.ExitStack() as stack:
                with self._guarded():  # one call: connect, recover, set up, read position
                    ev, lg = stack.enter_context(self._connections())
                    if self._recover_needed:
                        self._recover(ev, lg)
                    with db_errors(f"journal {self.journal_id}: setup"):
                        if not self._ready:
                            self._setup(ev, lg)
                        if self._position is None or self._recover_needed:
                            self._position = self._read_position(ev)
                        position = self._position
                if self._created_ns is None:
                    self._created_ns = journal_created_ns(self.journal_dir)
                tail = self._tail_at(position)
                batches = 0
                while max_batches is None or batches < max_batches:
                    frames = tail.read(self.batch_records)
                    if not frames:
                        break
                    batch = _Batch.of(frames)
                    self._commit_batch(ev, lg, batch)  # guarded per batch
                    loaded += batch.records
                    batches += 1
                self._maybe_prune()
        except BaseException as exc:
            if isinstance(exc, DatabaseUnavailable):
                self.stats.unavailable += 1
            self._recover_needed = True
            self._position = None
            self._known = {}
            self._drop_tail()
            raise
        return loaded

    def follow(
        self,
        stop: threading.Event,
        poll_s: float = 0.05,
        max_backoff_s: float = 5.0,
        batches_per_call: int = 16,
        caught_up: Callable[[], None] | None = None,
    ) -> None:
        """Load until ``stop`` is set: the loop of the persistence stage's loader thread.

        Calls :meth:`load_available` (at most ``batches_per_call`` transactions at a time,
        so ``stop`` is seen within that many batches), waits ``poll_s`` seconds when there
        was nothing new. While the database is unavailable, retries are exhausted or the
        guard refuses (breaker open), it waits with exponential backoff and jitter,
        ``poll_s`` doubling up to ``max_backoff_s``, and tries again: the journal keeps
        everything meanwhile. Anything else (a corrupt journal, a configuration error)
        propagates. ``caught_up`` (optional) is called on this thread whenever a call finds
        nothing new after one that loaded something (and once at the first catch-up): the
        database then holds the journal up to the tail (e.g. to reconcile the two).
        """
        delay = poll_s
        fresh = True
        while not stop.is_set():
            try:
                n = self.load_available(max_batches=batches_per_call)
            except (DatabaseUnavailable, LoadRetriesExhausted) as exc:
                self._backoff_note(exc)
            except Bot4Error as exc:
                if exc.code != Code.BREAKER_OPEN:
                    raise
                self._backoff_note(exc)
            else:
                delay = poll_s
                if n:
                    fresh = True
                elif fresh and caught_up is not None:
                    fresh = False
                    caught_up()
                if n == 0:
                    stop.wait(poll_s)
                continue
            stop.wait(random.uniform(delay / 2, delay))
            delay = min(max_backoff_s, delay * 2)

    def _backoff_note(self, exc: BaseException) -> None:
        self.stats.backoffs += 1
        if self.stats.backoffs == 1 or self.stats.backoffs % 100 == 0:
            log.warning("journal %s: loading deferred (%d so far): %s", self.journal_id,
                        self.stats.backoffs, exc)  # fmt: skip

    def _maybe_prune(self) -> None:
        """Drop the decision log once it is long enough and none of it is needed: the last
        recovery resolved every in-doubt branch of the journal, and every two-phase batch
        since then committed on both databases (any failure sets ``_recover_needed``)."""
        if self._recover_needed or not self._coord.should_prune():
            return
        self.stats.pruned_decisions += self._coord.prune(self._hook)

    def _tail_at(self, position: int) -> JournalTail:
        if self._tail is None:
            self._tail = JournalTail(self.journal_dir, position)
        elif self._tail.next_frame != position:
            self._tail.seek(position)
        return self._tail

    def _drop_tail(self) -> None:
        """After a failed batch the tail is ahead of the database: re-seek next time."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    def close(self) -> None:
        """Close the pools and the decision log; a prepared, undecided transaction is
        left for the next recovery. Idempotent."""
        if getattr(self, "_held", None) is not None:
            self._release()
        for pool in (self._events, self._ledger):
            if pool is not None:
                with contextlib.suppress(Exception):
                    pool.close(timeout=2.0)
        self._events = self._ledger = None
        if getattr(self, "_pool_executor", None) is not None:
            self._pool_executor.shutdown(wait=True)
            self._pool_executor = None
        self._coord.close()
        self._drop_tail()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one batch --------------------------------------------------------------------------

    def _commit_batch(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: _Batch
    ) -> None:
        from psycopg import errors

        loadable = sum(len(p) for p in batch.parts.values())
        if loadable <= self.small_batch:
            mode = "pipeline"  # few rows: fewest round trips
        else:
            mode = "fast" if self.fast_path else "dedupe"
        attempt = 0
        where = f"journal {self.journal_id}: frames {batch.first}..{batch.end - 1}"
        with self._guarded():
            while True:
                try:
                    with db_errors(where):
                        out = self._attempt(ev, lg, batch, mode)
                    break
                except _SlowPathNeeded:
                    mode = "dedupe"
                except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                    self._known = {}  # another transaction moved something: read again
                    deadlock = isinstance(exc, errors.DeadlockDetected)
                    if deadlock:
                        self.stats.deadlocks += 1
                    else:
                        self.stats.serialization_failures += 1
                    if attempt >= MAX_RETRIES:
                        code = Code.DEADLOCK_DETECTED if deadlock else Code.SERIALIZATION_FAILURE
                        raise LoadRetriesExhausted(
                            f"{where}: failed {attempt + 1} times: {exc}", code
                        ) from exc
                    attempt += 1
                    self.stats.retries += 1
                    time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
                except errors.Error as exc:
                    if exc.sqlstate == _FENCED:
                        raise LoadPositionConflict(
                            f"{where}: the load position moved under this loader: another "
                            "loader of this journal id writes to this database"
                        ) from exc
                    if mode == "isolate" or (exc.sqlstate or "")[:2] not in _ROW_ERROR_CLASSES:
                        raise
                    mode = "dedupe" if mode == "fast" else "isolate"
        s = self.stats
        s.batches += 1
        s.frames += batch.end - batch.first
        s.records += batch.records
        s.staged += out.staged
        s.inserted += out.inserted
        s.rejected += out.rejected
        conflicts = len(out.conflicts)
        s.duplicates += out.staged - out.inserted - out.rejected - conflicts
        if conflicts or out.ledger_conflicts:
            self._report_conflicts(out)
        s.fills += 0 if out.fills is None else len(out.fills)
        if out.moved:
            self._known.update(out.moved)
        s.ledger_rows += out.ledger_rows
        s.skipped += batch.records - out.staged
        if mode == "pipeline":
            s.pipelined_batches += 1
        elif mode == "fast":
            s.fast_batches += 1
        elif mode == "dedupe":
            s.dedupe_batches += 1
        else:
            s.isolations += 1
        self._position = batch.end

    def _attempt(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: _Batch, mode: str
    ) -> _Outcome:
        if mode == "pipeline":
            return self._attempt_pipelined(ev, lg, batch)
        parts, unknown = self._split_unknown(batch)
        sent: list[tuple[psycopg.Connection, str]] = []
        decided = False
        ledger_branch = None
        try:
            if mode == "fast" and lg is not None and RT_EXEC_REPORT in parts:
                fills = parts[RT_EXEC_REPORT].take(parts[RT_EXEC_REPORT].records["last_qty"] > 0)
                if len(fills):  # known before the events COPY: the ledger runs alongside
                    ledger_branch = self._executor().submit(self._ledger_fast_branch, lg, fills)
            ev.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            out = self._load_events(ev, batch, parts, unknown, mode)
            fills = out.fills
            if fills is not None:
                out.moved = self._move_positions(ev, fills)
            self._advance(ev, batch)
            if ledger_branch is not None:
                out.ledger_rows, out.ledger_conflicts = ledger_branch.result()
            elif fills is not None:
                if lg is not None:
                    lg.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                out.ledger_rows, out.ledger_conflicts = self._write_ledger(
                    lg if lg is not None else ev, fills, mode
                )
            self._hook("before-commit")
            if lg is None or fills is None:
                self._commit_one_phase(ev)
                self._hook("committed")
                return out
            token = self._coord.new_token()
            gid_e = self._coord.gid(token, batch.first, batch.end, "e")
            gid_l = self._coord.gid(token, batch.first, batch.end, "l")
            self._prepare_both(ev, lg, (gid_e, gid_l), sent)
            self._coord.decide_commit(token, batch.first, batch.end, len(fills))
            decided = True
            self._hook("decided")
            self._commit_prepared(ev, lg, gid_e, gid_l)
            return out
        except BaseException:
            if ledger_branch is not None:
                with contextlib.suppress(BaseException):
                    ledger_branch.result()  # lg is ours again only when the branch is done
            if decided:
                self._recover_needed = True  # recovery commits what is left
            else:
                self._undo((ev, lg), sent)
            raise

    def _report_conflicts(self, out: _Outcome) -> None:
        """A committed batch kept identity conflicts: count, log at ERROR, alarm."""
        n, legs = len(out.conflicts), out.ledger_conflicts
        self.stats.conflicts += n
        self.stats.ledger_conflicts += legs
        for exec_id, frame, idx, differs, kj, kf, ki in out.conflicts[:MAX_CONFLICTS_LOGGED]:
            log.error(
                "journal %s: frame %d record %d: exec_id %s already holds another execution "
                "(%s:%d[%d]; differs in %s): kept in exec_conflicts, not loaded",
                self.journal_id, frame, idx, exec_id, kj, kf, ki, ", ".join(differs),
            )  # fmt: skip
        if n > MAX_CONFLICTS_LOGGED:
            log.error("journal %s: %d more exec_id conflicts in exec_conflicts", self.journal_id,
                      n - MAX_CONFLICTS_LOGGED)  # fmt: skip
        if legs:
            log.error(
                "journal %s: %d ledger legs met a different leg under their (exec_id, leg): "
                "kept in ledger_conflicts, not entered",
                self.journal_id,
                legs,
            )
        if self.alarm is not None:
            self.alarm(Code.EXEC_ID_CONFLICT, n + legs)

    def _executor(self):
        if self._pool_executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool_executor = ThreadPoolExecutor(1, thread_name_prefix="bot4-ledger")
        return self._pool_executor

    def _ledger_fast_branch(self, lg: psycopg.Connection, fills: _Part) -> tuple[int, int]:
        lg.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        return self._write_ledger(lg, fills, "fast")

    def _split_unknown(self, batch: _Batch) -> tuple[dict[int, _Part], dict[int, _Part]]:
        """The batch's records by type, split into those the loader can convert and those
        naming an instrument it has no scale for."""
        parts: dict[int, _Part] = {}
        unknown: dict[int, _Part] = {}
        for rtype, part in batch.parts.items():
            keep = self._check_instruments(rtype, part.records)
            if not keep.all():
                unknown[rtype] = part.take(~keep)
                part = part.take(keep)
            if len(part):
                parts[rtype] = part
        return parts, unknown

    def _load_events(
        self,
        ev: psycopg.Connection,
        batch: _Batch,
        parts: dict[int, _Part],
        unknown: dict[int, _Part],
        mode: str,
    ) -> _Outcome:
        out = _Outcome(staged=sum(len(p) for p in batch.parts.values()))
        for rtype, part in unknown.items():
            out.rejected += self._reject_unknown(ev, rtype, part)
        fast = {rt for rt in parts if mode == "fast" and all(t.fast for t in _TABLES[rt])}
        staged = [rt for rt in parts if rt not in fast]
        if staged:
            ev.execute(f"TRUNCATE {', '.join(self._stage_table(rt) for rt in staged)}")
        with ev.cursor() as cur:
            for rtype, part in parts.items():
                if rtype in fast:
                    for table in _TABLES[rtype]:
                        which = table.route(part.records)
                        rows = part if which is None else part.take(which)
                        if len(rows):
                            with cur.copy(table.copy_sql()) as cp:
                                _write(cp, self._encode(table, rows))
                            out.inserted += len(rows)
                    if rtype == RT_EXEC_REPORT:
                        fills = part.take(part.records["last_qty"] > 0)
                        out.fills = fills if len(fills) else None
                    continue
                stage = self._stage_table(rtype)
                with cur.copy(f"COPY {stage} FROM STDIN (FORMAT BINARY)") as cp:
                    _write(cp, _LAYOUTS[rtype].encode(part))
                for table in _TABLES[rtype]:
                    sql = table.insert_sql(f"{stage} s")
                    if mode == "isolate":
                        n, rows, refused = self._insert_isolating(
                            cur, sql, table, part, 0, len(part)
                        )
                    else:
                        (n, rows), refused = self._insert(cur, sql, table, 0, len(part)), 0
                    out.inserted += n
                    out.rejected += refused
                    if table.rtype == RT_EXEC_REPORT:
                        out.fills = self._fills_of(batch, part, rows)
                        sql = exec_conflicts_sql(table.columns, f"{stage} s")
                        cur.execute(sql, {"journal": self.journal_id, "lo": 0, "hi": len(part)})
                        out.conflicts = cur.fetchall()
        return out

    def _encode(self, table: _Table, part: _Part) -> list:
        """The binary COPY stream of ``part``'s rows of ``table`` (fast path)."""
        r = part.records
        fields = []
        for col in table.columns:
            values = r[col.name]
            null = (values == 0) if col.null_zero else None
            if col.kind == "u64":
                fields.append(_Field(_u64_numeric(values), null))
            elif col.kind == "px":  # no scale (instrument 0 of CANCEL_ALL): NULL, as in SQL
                unknown = ~self._inst.known(r["instrument"])
                null = unknown if null is None else (null | unknown)
                fields.append(_Field(self._inst.money(values, r["instrument"]), null))
            else:
                fields.append(
                    _Field(_ints(values, {"i8": ">i8", "i4": ">i4", "i2": ">i2"}[col.kind]), null)
                )
        fields += self._src_fields(part)
        return copy_stream(fields, len(part))

    def _src_fields(self, part: _Part) -> list[_Field]:
        n = len(part)
        journal = np.full(n, self._journal_bytes, dtype=f"S{len(self._journal_bytes)}")
        return [_Field(journal), _Field(part.frames.astype(">i8")), _Field(_ints(part.idx, ">i4"))]

    def _insert(self, cur, sql: str, table: _Table, lo: int, hi: int) -> tuple[int, list]:
        """``table``'s INSERT over staged rows ``[lo, hi)``: (rows inserted, the (frame,
        index) of the inserted fills)."""
        cur.execute(sql, {"journal": self.journal_id, "lo": lo, "hi": hi})
        return _inserted(cur, table)

    def _insert_isolating(
        self, cur, sql: str, table: _Table, part: _Part, lo: int, hi: int
    ) -> tuple[int, list, int]:
        """Insert staged rows ``[lo, hi)`` under a savepoint; when the database refuses the
        range, bisect it down to the single rows it refuses and store those in
        ``rejected_rows``. Returns (inserted, inserted fills, rejected)."""
        from psycopg import errors

        if lo >= hi:
            return 0, [], 0
        cur.execute("SAVEPOINT bot4_rows")
        try:
            inserted, rows = self._insert(cur, sql, table, lo, hi)
        except errors.Error as exc:
            if (exc.sqlstate or "")[:2] not in _ROW_ERROR_CLASSES:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT bot4_rows")
            cur.execute("RELEASE SAVEPOINT bot4_rows")
            if hi - lo == 1:
                reason = f"{table.name}: {exc.diag.message_primary or exc}"
                row = self._reject_row(part, lo, table.rtype, Code.CONSTRAINT_VIOLATION, reason)
                cur.execute(_REJECT_SQL, (*row[:5], exc.sqlstate, *row[6:]))
                return 0, [], cur.rowcount
            mid = (lo + hi) // 2
            a = self._insert_isolating(cur, sql, table, part, lo, mid)
            b = self._insert_isolating(cur, sql, table, part, mid, hi)
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        cur.execute("RELEASE SAVEPOINT bot4_rows")
        return inserted, rows, 0

    def _reject_row(self, part: _Part, k: int, rtype: int, code: Code, reason: str) -> tuple:
        """A ``rejected_rows`` parameter tuple for record ``k`` of ``part`` (sqlstate None)."""
        return (
            self.journal_id, int(part.frames[k]), int(part.idx[k]), rtype, int(code), None,
            reason, part.records[k : k + 1].tobytes(),
        )  # fmt: skip

    def _fills_of(self, batch: _Batch, part: _Part, rows: list) -> _Part | None:
        """The staged EXEC_REPORT rows the INSERT returned as inserted fills, in journal
        order (found by the frame and index they came from)."""
        if not rows:
            return None
        keys = ((part.frames - batch.first) << 32) | part.idx  # ascending: staged in order
        got = np.array(rows, dtype=np.int64)
        want = np.sort(((got[:, 0] - batch.first) << 32) | got[:, 1])
        at = np.searchsorted(keys, want)
        if (at >= len(keys)).any() or (keys[np.minimum(at, len(keys) - 1)] != want).any():
            raise Bot4Error("inserted fills do not match the staged rows", Code.INTERNAL_ERROR)
        return part.take(at)

    def _check_instruments(self, rtype: int, records: np.ndarray) -> np.ndarray:
        """Mask of records whose instrument the loader can convert (CANCEL_ALL: 0 = all)."""
        if rtype == RT_OPERATOR_ACTION:
            return np.ones(len(records), dtype=bool)
        known = self._inst.known(records["instrument"])
        if rtype == RT_ORDER:
            creates = np.isin(records["action"], _CREATES_ORDER)
            known |= (records["instrument"] == 0) & ~creates
        return known

    def _reject_unknown(self, ev: psycopg.Connection, rtype: int, part: _Part) -> int:
        """Store records naming an instrument the loader has no scale for as rejected."""
        rows = [
            self._reject_row(
                part,
                k,
                rtype,
                Code.UNKNOWN_INSTRUMENT,
                f"instrument {int(part.records['instrument'][k])} not in the loader's table",
            )  # fmt: skip
            for k in range(len(part))
        ]
        with ev.cursor() as cur:
            cur.executemany(_REJECT_SQL, rows)
            return cur.rowcount

    @staticmethod
    def _position_keys(fills: _Part) -> tuple[list[int], list[int]]:
        """(strategies, instruments) of the positions ``fills`` move, as query arrays."""
        r = fills.records
        keys = sorted(set(zip(r["strategy"].tolist(), r["instrument"].tolist(), strict=True)))
        return [k[0] for k in keys], [k[1] for k in keys]

    def _positions_read(self, rows: list[tuple]) -> dict[tuple[int, int], Position]:
        current = {}
        for s, i, qty, cost, realised, fees, bought, sold, n, last_id, last_ts in rows:
            scale = self._inst.scale(i)
            current[(s, i)] = Position(
                qty, to_fixed(cost, scale), to_fixed(realised, scale), to_fixed(fees, scale),
                bought, sold, n, None if last_id is None else int(last_id), last_ts,
            )  # fmt: skip
        return current

    def _positions_moved(
        self, current: dict[tuple[int, int], Position], fills: _Part
    ) -> tuple[list[tuple], dict[tuple[int, int], Position]]:
        """Apply ``fills`` in journal order to copies of ``current``; the upsert rows of
        the moved positions (NUMERIC from fixed point, exact) and the moved positions."""
        r = fills.records
        cols = zip(
            r["strategy"].tolist(), r["instrument"].tolist(), r["side"].tolist(),
            r["last_qty"].tolist(), r["last_price"].tolist(), r["fee"].tolist(),
            r["exec_id"].tolist(), r["ts_venue_ns"].tolist(), strict=True,
        )  # fmt: skip
        moved: dict[tuple[int, int], Position] = {}
        for s, i, side, qty, price, fee, exec_id, ts in cols:
            p = moved.get((s, i))
            if p is None:
                was = current.get((s, i))
                p = Position() if was is None else dataclasses.replace(was)
                moved[(s, i)] = p
            apply_fill(p, side, qty, price, fee, exec_id, ts)
        out = []
        for (s, i), p in sorted(moved.items()):
            scale = self._inst.scale(i)
            last = None if p.last_exec_id is None else Decimal(p.last_exec_id)
            out.append(
                (
                    s, i, p.qty, from_fixed(p.cost, scale), from_fixed(p.realised, scale),
                    from_fixed(p.fees, scale), p.bought, p.sold, p.fills, last,
                    p.last_ts_venue_ns,
                )
            )  # fmt: skip
        return out, moved

    def _move_positions(self, ev: psycopg.Connection, fills: _Part) -> dict:
        """Apply the batch's inserted fills, in journal order, to their positions; the
        positions moved."""
        rows = ev.execute(_POSITIONS_READ_SQL, self._position_keys(fills)).fetchall()
        current = self._positions_read(rows)
        self._hook("positions-read")
        rows, moved = self._positions_moved(current, fills)
        with ev.cursor() as cur:
            cur.executemany(_POSITIONS_WRITE_SQL, rows)
        return moved

    def _attempt_pipelined(
        self, ev: psycopg.Connection, lg: psycopg.Connection | None, batch: _Batch
    ) -> _Outcome:
        """A small batch in the fewest round trips (psycopg pipeline mode; one round trip
        per pipeline block, whose exit is the sync).

        Events database: BEGIN, the INSERTs from ``unnest`` of arrays (ON CONFLICT DO
        NOTHING) and the positions read; then the positions, the ledger (same database),
        the fenced advance and COMMIT or PREPARE. A batch without a fill needs only the
        first round trip, which then ends in the advance and COMMIT. With a ledger database
        its whole branch (BEGIN, the legs of the fills inserted, PREPARE) is sent just
        before the events' second round trip and runs on its server meanwhile, so both
        PREPAREs are in flight at once; then the decision, then both COMMIT PREPAREDs at
        once: three waits on the network and one fsync of the decision log.
        """
        from psycopg import errors

        parts, unknown = self._split_unknown(batch)
        execs = parts.get(RT_EXEC_REPORT)
        if self.one_trip and execs is not None:
            fills = execs.take(execs.records["last_qty"] > 0)
            r = fills.records
            keys = zip(r["strategy"].tolist(), r["instrument"].tolist(), strict=True)
            if len(fills) and all(k in self._known for k in keys):
                try:
                    return self._attempt_one_trip(ev, lg, batch, parts, unknown, fills)
                except errors.Error as exc:
                    if exc.sqlstate != _CAS_MISS:
                        raise
                    self.stats.cas_misses += 1  # rolled back: the two-round-trip way
                    self._known = {}
        out = _Outcome(staged=sum(len(p) for p in batch.parts.values()))
        sent: list[tuple[psycopg.Connection, str]] = []
        decided = False
        try:
            maybe = None if execs is None else execs.take(execs.records["last_qty"] > 0)
            if maybe is not None and not len(maybe):
                maybe = None
            token = self._coord.new_token()
            gid_e = self._coord.gid(token, batch.first, batch.end, "e")
            gid_l = self._coord.gid(token, batch.first, batch.end, "l")
            if maybe is None:
                self._hook("before-commit")  # nothing sent yet: one round trip follows
            with ev.pipeline():
                ev.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                rejects = [self._queue_rejects(ev, rt, part) for rt, part in unknown.items()]
                inserts, conflicts = self._queue_inserts(ev, parts)
                read = None
                if maybe is not None:
                    read = ev.cursor()
                    read.execute(_POSITIONS_READ_SQL, self._position_keys(maybe))
                else:  # no fill: nothing below depends on the results
                    ev.execute(_ADVANCE_SQL, self._advance_params(batch))
                    self._commit_one_phase(ev)
            out.rejected = sum(c.rowcount for c in rejects)
            for table, part, cur in inserts:
                n, rows = _inserted(cur, table)
                out.inserted += n
                if table.rtype == RT_EXEC_REPORT:
                    out.fills = self._fills_of(batch, part, rows)
                    out.conflicts = conflicts.fetchall()
            if maybe is None:
                self._hook("committed")
                return out
            current = self._positions_read(read.fetchall())
            fills = out.fills
            if fills is not None:
                self._hook("positions-read")
            two_phase = lg is not None and fills is not None
            self._hook("before-commit")
            with contextlib.ExitStack() as flights:
                if two_phase:  # the ledger branch, whole, runs on its server meanwhile
                    flights.enter_context(lg.pipeline())
                    lg.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    ledger = self._ledger_pipelined(lg, fills)
                    sent.append((lg, gid_l))
                    prepare(lg, gid_l)
                with ev.pipeline():
                    if fills is not None:
                        rows, out.moved = self._positions_moved(current, fills)
                        ev.cursor().executemany(_POSITIONS_WRITE_SQL, rows)
                        if lg is None:
                            ledger = self._ledger_pipelined(ev, fills)
                    ev.execute(_ADVANCE_SQL, self._advance_params(batch))
                    if two_phase:  # both PREPAREs in flight at once
                        sent.append((ev, gid_e))
                        prepare(ev, gid_e)
                    else:
                        self._commit_one_phase(ev)
                if not two_phase:
                    if fills is not None:
                        out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
                    self._hook("committed")
                    return out
                self._hook("prepared-events")
            out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
            self._hook("prepared-ledger")
            self._coord.decide_commit(token, batch.first, batch.end, len(fills))
            decided = True
            self._hook("decided")
            self._commit_prepared(ev, lg, gid_e, gid_l)
            return out
        except BaseException:
            if decided:
                self._recover_needed = True
            else:
                self._undo((ev, lg), sent)
            raise

    def _attempt_one_trip(
        self,
        ev: psycopg.Connection,
        lg: psycopg.Connection | None,
        batch: _Batch,
        parts: dict[int, _Part],
        unknown: dict[int, _Part],
        fills: _Part,
    ) -> _Outcome:
        """A small batch with fills whose positions this loader knows, in one round trip
        on the events database: BEGIN, the INSERTs, the positions computed from the known
        ones and written by ``bot4_positions_cas`` (which refuses, SQLSTATE B4003, unless
        every fill was inserted by this transaction and every position is still the known
        one), the ledger (same database), the advance and COMMIT or PREPARE. With a ledger
        database its branch, computed from every fill of the batch, is sent first and
        PREPAREd meanwhile; the decision and both COMMIT PREPAREDs follow as in the
        two-round-trip path. A B4003 rolls everything back (nothing was decided) and
        propagates: the caller redoes the batch the two-round-trip way."""
        out = _Outcome(staged=sum(len(p) for p in batch.parts.values()))
        sent: list[tuple[psycopg.Connection, str]] = []
        decided = False
        two_phase = lg is not None
        try:
            token = self._coord.new_token()
            gid_e = self._coord.gid(token, batch.first, batch.end, "e")
            gid_l = self._coord.gid(token, batch.first, batch.end, "l")
            rows, moved = self._positions_moved(self._known, fills)
            expect = [self._known[k].fills for k in sorted(moved)]
            cas = (len(fills), *map(list, zip(*rows, strict=True)))
            cas = (cas[0], cas[1], cas[2], expect, *cas[3:])
            self._hook("positions-read")  # known, not yet written: nothing sent
            self._hook("before-commit")
            with contextlib.ExitStack() as flights:
                if two_phase:  # the ledger branch, whole, runs on its server meanwhile
                    flights.enter_context(lg.pipeline())
                    lg.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    ledger = self._ledger_pipelined(lg, fills)
                    sent.append((lg, gid_l))
                    prepare(lg, gid_l)
                with ev.pipeline():
                    ev.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    rejects = [self._queue_rejects(ev, rt, part) for rt, part in unknown.items()]
                    inserts, conflicts = self._queue_inserts(ev, parts)
                    ev.execute(_POSITIONS_CAS_SQL, cas)
                    if not two_phase:
                        ledger = self._ledger_pipelined(ev, fills)
                    ev.execute(_ADVANCE_SQL, self._advance_params(batch))
                    if two_phase:
                        sent.append((ev, gid_e))
                        prepare(ev, gid_e)
                    else:
                        self._commit_one_phase(ev)
                out.rejected = sum(c.rowcount for c in rejects)
                for table, part, cur in inserts:
                    n, got = _inserted(cur, table)
                    out.inserted += n
                    if table.rtype == RT_EXEC_REPORT:
                        out.fills = self._fills_of(batch, part, got)
                        out.conflicts = conflicts.fetchall()
                out.moved = moved
                self.stats.one_trip_batches += 1
                if not two_phase:
                    out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
                    self._hook("committed")
                    return out
                self._hook("prepared-events")
            out.ledger_rows, out.ledger_conflicts = ledger.fetchone()
            self._hook("prepared-ledger")
            self._coord.decide_commit(token, batch.first, batch.end, len(fills))
            decided = True
            self._hook("decided")
            self._commit_prepared(ev, lg, gid_e, gid_l)
            return out
        except BaseException:
            if decided:
                self._recover_needed = True
            else:
                self._undo((ev, lg), sent)
            raise

    def _queue_rejects(self, conn: psycopg.Connection, rtype: int, part: _Part):
        """Queue the rejected_rows INSERT of records naming an unknown instrument; its
        cursor (pipeline mode)."""
        rows = [
            self._reject_row(
                part,
                k,
                rtype,
                Code.UNKNOWN_INSTRUMENT,
                f"instrument {int(part.records['instrument'][k])} not in the loader's table",
            )  # fmt: skip
            for k in range(len(part))
        ]
        cur = conn.cursor()
        cur.executemany(_REJECT_SQL, rows)
        return cur

    def _queue_inserts(self, conn: psycopg.Connection, parts: dict[int, _Part]):
        """Queue the ON CONFLICT INSERTs of ``parts`` from ``unnest`` (pipeline mode):
        ``[(table, part, cursor)]`` and the exec_conflicts cursor (None without
        executions)."""
        inserts, conflicts = [], None
        for rtype, part in parts.items():
            layout = _LAYOUTS[rtype]
            params = layout.unnest_params(part)
            params.update(journal=self.journal_id, lo=0, hi=len(part))
            for table in _TABLES[rtype]:
                which = table.route(part.records)
                if which is not None and not which.any():
                    continue  # no rows for this table: no statement
                cur = conn.cursor()
                cur.execute(table.insert_sql(layout.unnest_source()), params)
                inserts.append((table, part, cur))
                if table.rtype == RT_EXEC_REPORT:
                    conflicts = conn.cursor()
                    conflicts.execute(
                        exec_conflicts_sql(table.columns, layout.unnest_source()), params
                    )
        return inserts, conflicts

    def _ledger_pipelined(self, conn: psycopg.Connection, fills: _Part):
        """Queue the ledger INSERT of ``fills`` from ``unnest`` (pipeline mode); its cursor."""
        layout = _LAYOUTS[RT_EXEC_REPORT]
        params = layout.unnest_params(fills)
        params["journal"] = self.journal_id
        cur = conn.cursor()
        cur.execute(_LEDGER_SQL.format(source=layout.unnest_source()), params)
        return cur

    def _write_ledger(self, conn: psycopg.Connection, fills: _Part, mode: str) -> tuple[int, int]:
        """The double-entry legs of ``fills`` (2 or 3 each): (legs inserted, legs kept in
        ``ledger_conflicts``; the COPY path fails on any existing key instead)."""
        if mode == "fast":
            buf, n = self._ledger_stream(fills)
            cols = ", ".join(_LEDGER_COLUMNS)
            copy = f"COPY ledger_entries ({cols}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cur, cur.copy(copy) as cp:
                _write(cp, buf)
            return n, 0
        stage = self._stage_table(RT_EXEC_REPORT)
        conn.execute(f"TRUNCATE {stage}")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {stage} FROM STDIN (FORMAT BINARY)") as cp:
                _write(cp, _LAYOUTS[RT_EXEC_REPORT].encode(fills))
            cur.execute(_LEDGER_SQL.format(source=f"{stage} s"), {"journal": self.journal_id})
            rows, kept = cur.fetchone()
            return int(rows), int(kept)

    def _ledger_stream(self, fills: _Part) -> tuple[list, int]:
        """Binary COPY of the legs of ``fills`` (see the ledger migration for the legs)."""
        r = fills.records
        m = len(r)
        price, _neg = split_sign(r["last_price"])
        qty = r["last_qty"].astype(np.uint64)
        limit = np.uint64(2**62)  # |cash| = notional + |fee| stays inside int64
        if (qty == 0).any() or (price > limit // np.maximum(qty, np.uint64(1))).any():
            raise _SlowPathNeeded("ledger notional beyond 2**62 units")
        notional = (price * qty).astype(np.int64)
        fee = r["fee"].astype(np.int64)
        if (np.abs(fee) > 2**62).any():
            raise _SlowPathNeeded("fee beyond 2**62 units")
        buy = r["side"] > 0
        cash = np.where(buy, -notional, notional) - fee
        each = np.arange(m)
        paid = np.nonzero(fee != 0)[0]
        flows = np.nonzero(cash != 0)[0]
        rows = np.concatenate([each, paid, flows])
        leg = np.concatenate([np.full(m, 1), np.full(len(paid), 2), np.full(len(flows), 3)]).astype(
            ">i2"
        )
        signed = np.concatenate([np.where(buy, notional, -notional), fee[paid], cash[flows]])
        at = self._inst.rows(r["instrument"])
        account = np.concatenate(
            [
                self._inst.accounts[at],
                np.full(len(paid), b"fees", dtype=object),
                np.full(len(flows), b"cash", dtype=object),
            ]
        )
        n = len(rows)
        scales = self._inst.scales[at][rows]
        decimals = self._inst.decimals[at][rows]
        amount, credit = split_sign(signed)
        zero = np.zeros(n, dtype=np.uint64)
        g = self._inst.frac_groups
        legs = _Part(r[rows], fills.frames[rows], fills.idx[rows])
        fields = [
            _Field(_ints(legs.records["venue"], ">i2")),
            _Field(_ints(legs.records["seq"] >> np.uint64(32), ">i4")),
            _Field(_u64_numeric(legs.records["exec_id"])),
            _Field(leg),
            _Field(account.astype(bytes), varlen=True),
            _Field(_ints(legs.records["instrument"], ">i4")),
            _Field(_ints(legs.records["strategy"], ">i4")),
            _Field(numeric_payload(np.where(credit, zero, amount), None, scales, decimals, g)),
            _Field(numeric_payload(np.where(credit, amount, zero), None, scales, decimals, g)),
            _Field(legs.records["ts_venue_ns"].astype(">i8")),
            *self._src_fields(legs),
        ]
        return copy_stream(fields, n), n

    def _advance_params(self, batch: _Batch) -> dict:
        return {
            "journal": self.journal_id,
            "first": batch.first,
            "end": batch.end,
            "records": batch.records,
            "created": self._created_ns,
        }

    def _advance(self, ev: psycopg.Connection, batch: _Batch) -> None:
        """Move the load position from the batch's first frame to its end, in the batch's
        transaction; the database refuses (SQLSTATE B4001) if it is not at the first."""
        ev.execute(_ADVANCE_SQL, self._advance_params(batch))


def _inserted(cur, table: _Table) -> tuple[int, list]:
    """Result of ``table``'s INSERT on ``cur``: (rows inserted, (frame, index) of the
    inserted fills for executions)."""
    if table.rtype != RT_EXEC_REPORT:
        return cur.rowcount, []
    count, frames, idx = cur.fetchone()[:3]
    return int(count), list(zip(frames or (), idx or (), strict=True))


def _rollback_quietly(conn: psycopg.Connection | None) -> None:
    """Roll back an open transaction on ``conn`` (no-op when idle or broken)."""
    if conn is None or conn.closed or conn.broken:
        return
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        # rollback(), not execute("ROLLBACK"): psycopg then also drops its prepared
        # statements on both sides (DEALLOCATE ALL), so a pipeline an error cut short (a
        # Parse the server skipped) cannot leave its cache naming statements the session
        # does not have
        with contextlib.suppress(Exception):
            conn.rollback()


def _crash_point() -> tuple[str, int] | None:
    spec = os.environ.get("BOT4_DB_CRASH_AT", "").strip()
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    if point not in HOOK_POINTS:
        raise Bot4Error(
            f"BOT4_DB_CRASH_AT={spec!r}: point must be one of {', '.join(HOOK_POINTS)}",
            Code.CONFIG_INVALID,
        )
    return point, max(1, int(nth or 1))
