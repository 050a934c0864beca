"""Versioned SQL migrations: applied in order, once, each in its own transaction.

Migrations are files ``bot4/db/migrations/<scope>/<NNNN>_<name>.sql`` (package data, read
with ``importlib.resources``). Two scopes: ``events`` (the events database) and ``ledger``
(the ledger database; applied to the events database too when the ledger lives there).

``migrate(dsn, scopes)`` brings a database up to date:

1. takes the session advisory lock :data:`MIGRATE_LOCK` (so two processes migrating the same
   database at once apply each migration once: the second waits, then finds nothing to do);
2. creates ``schema_migrations(scope, version, name, checksum, applied_at)`` if missing;
3. applies every migration of each scope whose version is not recorded, in version order,
   each in its own transaction together with its ``schema_migrations`` row, so a migration
   is either applied and recorded or neither;
4. refuses (:class:`MigrationError`) a recorded migration whose file changed since
   (checksum), or a database recording a version this build does not have (it is newer).

Idempotent: a second call applies nothing. Versions are positive and unique per scope.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING

from bot4.records.errors import Bot4Error, Code

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATE_LOCK",
    "SCOPES",
    "AppliedMigration",
    "Migration",
    "MigrationError",
    "applied_migrations",
    "load_migrations",
    "migrate",
    "pending_migrations",
]

SCOPES = ("events", "ledger")
MIGRATE_LOCK = int.from_bytes(b"bot4migr", "big") & 0x7FFF_FFFF_FFFF_FFFF  # advisory lock key
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    scope       text    NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    name        text    NOT NULL,
    checksum    text    NOT NULL,   -- sha256 of the file as applied
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, version)
)
"""


class MigrationError(Bot4Error):
    """Migrations cannot be applied: a changed or unknown applied migration, a bad file."""

    code = Code.CONFIG_INVALID


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``scope``, ``version`` (from the file name), ``name``, ``sql``."""

    scope: str
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def __str__(self) -> str:
        return f"{self.scope} {self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    scope: str
    version: int
    name: str
    checksum: str
    applied_at: datetime


def load_migrations(scope: str) -> list[Migration]:
    """The migrations of ``scope`` shipped with this build, by version."""
    if scope not in SCOPES:
        raise MigrationError(f"unknown migration scope {scope!r} (have {', '.join(SCOPES)})")
    found: dict[int, Migration] = {}
    folder = resources.files("bot4.db").joinpath("migrations", scope)
    for entry in folder.iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        if version == 0 or version in found:
            raise MigrationError(f"migrations/{scope}/{entry.name}: version 0 or duplicated")
        found[version] = Migration(scope, version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _connect(dsn: str) -> psycopg.Connection:
    import psycopg

    from bot4.db.pool import db_errors

    with db_errors("migrate: connect"):
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def applied_migrations(conn: psycopg.Connection) -> list[AppliedMigration]:
    """Rows of ``schema_migrations`` (empty if the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return []
    rows = conn.execute(
        "SELECT scope, version, name, checksum, applied_at FROM schema_migrations "
        "ORDER BY scope, version"
    ).fetchall()
    return [AppliedMigration(*r) for r in rows]


def pending_migrations(
    conn: psycopg.Connection, scopes: Sequence[str] = ("events",)
) -> list[Migration]:
    """Migrations of ``scopes`` not yet recorded in the database, in the order
    :func:`migrate` applies them; MigrationError if the recorded ones disagree with this
    build (changed checksum, unknown version)."""
    done = {(a.scope, a.version): a for a in applied_migrations(conn)}
    todo = []
    for scope in scopes:
        shipped = load_migrations(scope)
        known = {m.version for m in shipped}
        for (s, v), a in done.items():
            if s == scope and v not in known:
                raise MigrationError(
                    f"database has {scope} migration {v:04d}_{a.name}, which this build does "
                    "not know: the database is newer than the code"
                )
        for m in shipped:
            a = done.get((scope, m.version))
            if a is None:
                todo.append(m)
            elif a.checksum != m.checksum:
                raise MigrationError(
                    f"{m} was applied with checksum {a.checksum[:12]}, the file now has "
                    f"{m.checksum[:12]}: applied migrations must not change; add a new one"
                )
    return todo


def migrate(
    dsn_or_conn: str | psycopg.Connection,
    scopes: Sequence[str] = ("events",),
    *,
    lock_timeout_s: float = 60.0,
) -> list[Migration]:
    """Apply the pending migrations of ``scopes`` to one database; the ones applied now.

    ``dsn_or_conn``: a DSN, or an open autocommit connection (left open). Serialised across
    processes by the advisory lock :data:`MIGRATE_LOCK`, waited for at most
    ``lock_timeout_s`` seconds. Each migration commits with its ``schema_migrations`` row.
    A connection failure raises ``DatabaseUnavailable``; a failing migration raises
    MigrationError naming the file, with nothing of it applied.
    """
    import psycopg

    from bot4.db.pool import db_errors

    own = isinstance(dsn_or_conn, str)
    conn = _connect(dsn_or_conn) if own else dsn_or_conn
    if not conn.autocommit:
        raise ValueError("migrate needs an autocommit connection")
    applied: list[Migration] = []
    try:
        with db_errors("migrate"):
            conn.execute(f"SET lock_timeout = {int(lock_timeout_s * 1000)}")
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
            try:
                conn.execute(_CREATE_TABLE)
                for m in pending_migrations(conn, scopes):
                    try:
                        with conn.transaction():
                            conn.execute(m.sql.encode())
                            conn.execute(
                                "INSERT INTO schema_migrations (scope, version, name, checksum)"
                                " VALUES (%s, %s, %s, %s)",
                                (m.scope, m.version, m.name, m.checksum),
                            )
                    except psycopg.DatabaseError as exc:
                        from bot4.db.pool import is_unavailable

                        if is_unavailable(exc):
                            raise
                        raise MigrationError(f"migration {m} failed: {exc}") from exc
                    applied.append(m)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
                    conn.execute("RESET lock_timeout")
    finally:
        if own:
            conn.close()
    return applied
