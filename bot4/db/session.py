"""The loader's database session: its connections (held across calls, handed back on any
error), the setup of each database (migrations, instruments, staging tables), the load
position it reads, and the one-phase COMMIT.

:class:`Session` is a part of :class:`bot4.db.loader.Loader` (it uses the loader's pools,
journal id and settings); it is not used on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bot4.db.pool import db_errors
from bot4.db.rows import (
    ADVANCE_ASYNC_SQL,
    ADVANCE_SQL,
    INSTRUMENT_SQL,
    LAYOUTS,
    LOADED_TYPES,
)
from bot4.journal.tail import JournalBehindDatabase, journal_created_ns
from bot4.records.errors import Bot4Error, Code
from bot4.records.types import RT_EXEC_REPORT

if TYPE_CHECKING:
    import psycopg

__all__ = ["Session"]


class Session:
    """The database session of :class:`bot4.db.loader.Loader` (see the module docstring)."""

    # --- setup ------------------------------------------------------------------------------

    def _stage_table(self, rtype: int) -> str:
        return LAYOUTS[rtype].table(self._key)

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
            cur.executemany(INSTRUMENT_SQL, rows)
        for rtype in rtypes:
            conn.execute(
                f"CREATE UNLOGGED TABLE IF NOT EXISTS {self._stage_table(rtype)} "
                f"({LAYOUTS[rtype].columns_sql()}) WITH (autovacuum_enabled = false)"
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
        try:
            yield self._held
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        """Hand the held connections back to their pools (rolled back or discarded there)."""
        held, self._held = self._held, None
        if held is None:
            return
        for pool, conn in ((self._events, held[0]), (self._ledger, held[1])):
            if pool is not None and conn is not None:
                with contextlib.suppress(Exception):
                    pool.putconn(conn)

    def _advance(self, conn: psycopg.Connection, batch, one_phase: bool) -> None:
        """Queue the fenced advance of ``batch``; for a one-phase commit, unless
        ``synchronous_commit``, the same statement sets this transaction's commit not to wait
        for its WAL flush (:meth:`_commit_one_phase` says why), one statement less."""
        sql = ADVANCE_ASYNC_SQL if one_phase and not self.synchronous_commit else ADVANCE_SQL
        conn.execute(sql, self._advance_params(batch))

    def _commit_one_phase(self, conn: psycopg.Connection) -> None:
        """COMMIT of a batch that touches one database, after :meth:`_advance` with
        ``one_phase``. Unless ``synchronous_commit``, the commit does not wait for its WAL
        flush: the journal already holds the batch durably, and a server crash that takes
        back the last commits takes their load position back with them (one WAL stream),
        so those frames load again."""
        conn.execute("COMMIT")

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
