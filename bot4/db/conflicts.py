"""Identity conflicts at the loader: a repeated execution id with different content.

The loader inserts executions with ``ON CONFLICT DO NOTHING`` on their identity, ``(venue,
session, exec_id)`` (events migration 0006; the session is the OMS's ``seq >> 32``): right
for the same execution loaded twice (a journal frame written again, a reload), wrong for a
*different* execution under a taken id, which would vanish. So, right after the
executions INSERT and in the same transaction, :func:`exec_conflicts_sql` looks up every
record of the batch whose id is held by a row loaded from another journal record with
different content (:data:`bot4.records.identity.EXEC_CONTENT_FIELDS`, compared column by
column after conversion, so 100.00 equals 100.0000) and keeps it in ``exec_conflicts``
(events migration 0002) with the columns that differ and the row holding the id. It
returns the records kept, for the loader to log, count and alarm. A conflicting record
already kept once (the same frame journalled twice) is not kept again.

The ledger's counterpart is :data:`LEDGER_SQL`: the legs of a batch's fills, inserted
``ON CONFLICT DO NOTHING`` on ``(venue, exec_session, exec_id, leg)`` (ledger migration
0003: the same execution identity as ``exec_reports``), and in the same statement the legs
that met an existing leg with a different account, instrument, strategy or amount are kept
in ``ledger_conflicts`` (ledger migration 0002); it returns (legs inserted, legs kept).

Both read their rows from ``{source}``: the loader's staging table or the pipelined paths'
array parameters, aliased ``s``, with ``rid``, ``frame``, ``idx`` and the record's fields.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

from bot4.records.identity import EXEC_CONTENT_FIELDS

__all__ = ["LEDGER_SQL", "exec_conflicts_sql"]


class _Column(Protocol):
    name: str

    def sql(self) -> str: ...


@functools.cache  # a pure function of the loader's fixed column specs: built once
def exec_conflicts_sql(columns: Sequence[_Column], source: str) -> str:
    """The statement keeping ``source``'s rows ``rid`` in [%(lo)s, %(hi)s) that conflict
    with ``exec_reports``; returns ``(exec_id, src_frame, src_index, differs, kept_journal,
    kept_frame, kept_index)`` per row kept. ``columns``: the loader's ``exec_reports``
    column spec (each with the SQL converting the staged field)."""
    by_name = {c.name: c for c in columns}
    content = [by_name[f] for f in EXEC_CONTENT_FIELDS]
    # the identity (events migration 0006): (venue, session = the OMS's seq >> 32, exec_id)
    venue = by_name["venue"].sql() if "venue" in by_name else "0"
    session = f"({by_name['seq'].sql()} >> 32)::integer"
    theirs = ", ".join(c.sql() for c in content)
    differs = ", ".join(
        f"CASE WHEN e.{c.name} IS DISTINCT FROM {c.sql()} THEN '{c.name}' END" for c in content
    )
    names = [c.name for c in columns]
    cols = ", ".join(
        [*names, "src_journal", "src_frame", "src_index", "differs", "kept_journal",
         "kept_frame", "kept_index"]
    )  # fmt: skip
    exprs = ", ".join(
        [*(c.sql() for c in columns), "%(journal)s", "s.frame", "s.idx",
         f"array_remove(ARRAY[{differs}]::text[], NULL)", "e.src_journal", "e.src_frame",
         "e.src_index"]
    )  # fmt: skip
    # the last condition is a one-time gate: skip the join when the executions' INSERT just
    # before (same transaction, same rows) inserted every row: then none met an existing
    # one. The source's rids are 0..n-1 and 0 <= lo <= hi <= n, so [lo, hi) holds hi - lo
    # rows (a wider range only opens the gate). The text is sent with its runs of spaces
    # collapsed: under 4096 bytes psycopg caches its parse of the placeholders (it has no
    # string literal that a collapse would change)
    sql = f"""
WITH kept AS (
    INSERT INTO exec_conflicts ({cols})
    SELECT {exprs}
    FROM {source}
    LEFT JOIN instruments i ON i.instrument = s.instrument
    JOIN exec_reports e ON e.exec_id = bot4_u64(s.exec_id) AND e.exec_id <> 0
         AND e.venue = {venue} AND e.exec_session = {session}
    WHERE s.exec_id <> 0 AND s.rid >= %(lo)s AND s.rid < %(hi)s
      AND (e.src_journal, e.src_frame, e.src_index)
          IS DISTINCT FROM (%(journal)s::text, s.frame, s.idx)
      AND ({", ".join(f"e.{c.name}" for c in content)}) IS DISTINCT FROM ({theirs})
      AND NOT EXISTS (
          SELECT 1 FROM exec_conflicts x
          WHERE x.exec_id = e.exec_id AND x.venue = e.venue AND x.exec_session = e.exec_session
            AND ({", ".join(f"x.{c.name}" for c in content)}) IS NOT DISTINCT FROM ({theirs}))
      AND coalesce(nullif(current_setting('bot4.inserted_execs', true), '')::bigint, -1)
          < %(hi)s::bigint - %(lo)s::bigint
    ON CONFLICT DO NOTHING
    RETURNING exec_id, src_frame, src_index, differs, kept_journal, kept_frame, kept_index
)
SELECT * FROM kept ORDER BY src_frame, src_index
"""
    return " ".join(sql.split())


#: the ledger legs of ``{source}``'s fills (see the ledger migrations), inserted once, and
#: the legs that met a different leg under their key kept in ``ledger_conflicts``;
#: returns one row: (legs inserted, legs kept as conflicts)
LEDGER_SQL = """
WITH legs AS (
    SELECT s.venue::smallint AS venue, (s.seq >> 32)::integer AS exec_session,
           bot4_u64(s.exec_id) AS exec_id, l.leg, l.account, s.instrument::integer AS instrument,
           s.strategy::integer AS strategy, l.debit, l.credit, s.ts_venue_ns,
           %(journal)s::text AS src_journal, s.frame AS src_frame, s.idx::integer AS src_index
    FROM {source}
    JOIN instruments i ON i.instrument = s.instrument
    CROSS JOIN LATERAL (SELECT s.last_price::numeric * s.last_qty AS notional,
                               CASE WHEN s.exec_type = 12 THEN -s.fee ELSE s.fee END::numeric
                                   AS fee,
                               (s.side > 0) <> (s.exec_type = 12) AS buy) u
    CROSS JOIN LATERAL (SELECT CASE WHEN u.buy THEN -u.notional ELSE u.notional END
                               - u.fee AS cash) c
    CROSS JOIN LATERAL (VALUES
        (1, 'position:' || i.symbol,
            CASE WHEN u.buy THEN u.notional ELSE 0 END * i.unit,
            CASE WHEN u.buy THEN 0 ELSE u.notional END * i.unit),
        (2, 'fees', greatest(u.fee, 0) * i.unit, greatest(-u.fee, 0) * i.unit),
        (3, 'cash', greatest(c.cash, 0) * i.unit, greatest(-c.cash, 0) * i.unit)
    ) AS l(leg, account, debit, credit)
    WHERE l.leg = 1 OR (l.leg = 2 AND u.fee <> 0) OR (l.leg = 3 AND c.cash <> 0)
), inserted AS (
    INSERT INTO ledger_entries (venue, exec_session, exec_id, leg, account, instrument,
                                strategy, debit, credit, ts_venue_ns, src_journal, src_frame,
                                src_index)
    SELECT * FROM legs
    ON CONFLICT DO NOTHING
    RETURNING 1
), kept AS (
    INSERT INTO ledger_conflicts (venue, exec_session, exec_id, leg, account, instrument,
                                  strategy, debit, credit, ts_venue_ns, src_journal, src_frame,
                                  src_index,
                                  kept_account, kept_instrument, kept_strategy, kept_debit,
                                  kept_credit, kept_journal, kept_frame, kept_index)
    SELECT n.*, e.account, e.instrument, e.strategy, e.debit, e.credit, e.src_journal,
           e.src_frame, e.src_index
    FROM legs n
    JOIN ledger_entries e ON e.venue = n.venue AND e.exec_session = n.exec_session
                         AND e.exec_id = n.exec_id AND e.leg = n.leg
    WHERE (e.account, e.instrument, e.strategy, e.debit, e.credit)
          IS DISTINCT FROM (n.account, n.instrument, n.strategy, n.debit, n.credit)
      -- a one-time gate: every leg inserted means none met an existing leg (the join
      -- reads the table as it was before this statement, as the INSERT's conflicts do)
      AND (SELECT count(*) FROM inserted) < (SELECT count(*) FROM legs)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM kept)
"""
