"""Connection pools, and the one error a database outage becomes.

:func:`make_pool` builds a ``psycopg_pool.ConnectionPool`` the way every bot4 database user
wants it:

- bounded: ``min_size`` .. ``max_size`` connections (1..2 by default: the loader holds one
  connection per database at a time);
- checked on checkout (``check=ConnectionPool.check_connection``, one empty round trip), so
  a connection the server dropped is replaced instead of failing the caller's first query;
- reconnecting: broken connections are discarded and re-established by the pool's worker
  with exponential backoff; after ``reconnect_timeout`` seconds of failures the pool gives
  up on that attempt, and the next checkout starts a fresh one;
- short timeouts: ``connect_timeout`` (seconds, per connection attempt) and ``timeout``
  (seconds a checkout waits), so an outage surfaces quickly as :class:`DatabaseUnavailable`
  instead of hanging the caller;
- autocommit connections: callers issue ``BEGIN ISOLATION LEVEL ...`` / ``PREPARE
  TRANSACTION`` themselves; the pool rolls back whatever a caller leaves open.

Nothing connects at import time; ``make_pool`` opens the pool without waiting
(``open(wait=False)``), so creating a pool while the server is down succeeds.

:func:`db_errors` turns connection-level failures (``psycopg.OperationalError`` and the
pool's ``PoolTimeout``, lock timeouts) into :class:`DatabaseUnavailable`
(``Code.DB_UNAVAILABLE``); SQL errors (constraint violations, serialization failures) pass
through unchanged for the caller to handle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bot4.records.errors import Bot4Error, Code

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["DatabaseUnavailable", "db_errors", "is_unavailable", "make_pool"]

# SQLSTATEs that mean "the database cannot serve us now", not "your statement is wrong":
# class 08 connection exceptions, 57P01-57P03 shutdown / cannot connect now, 53300 too many
# connections, 55P03 lock not available (lock_timeout), 57014 query canceled (timeouts).
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "55P03", "57014"})


class DatabaseUnavailable(Bot4Error):
    """The database cannot be reached or used right now (connection lost, server down or
    shutting down, pool timeout, lock timeout). Retry later: nothing was committed by the
    failed call, and the journal still holds everything."""

    code = Code.DB_UNAVAILABLE


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection-level failure (as opposed to an SQL error)."""
    import psycopg
    from psycopg_pool import PoolClosed, PoolTimeout

    if isinstance(exc, DatabaseUnavailable | PoolTimeout | PoolClosed):
        return True
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None)
        if state is None:
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state.startswith("08") or state in _UNAVAILABLE_STATES
    return False


@contextlib.contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Re-raise connection-level failures inside the body as :class:`DatabaseUnavailable`
    (``what`` names the database and the step in the message)."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable(f"{what}: {type(exc).__name__}: {exc}".strip()) from exc
        raise


def make_pool(
    dsn: str,
    *,
    name: str = "bot4",
    min_size: int = 1,
    max_size: int = 2,
    timeout: float = 3.0,
    connect_timeout: int = 2,
    reconnect_timeout: float = 5.0,
    max_idle: float = 300.0,
    application_name: str = "bot4",
    lock_timeout_ms: int = 10_000,
) -> ConnectionPool:
    """An open, bounded, checked-on-checkout pool of autocommit connections to ``dsn``.

    ``timeout``: seconds a checkout waits before PoolTimeout (-> DatabaseUnavailable under
    :func:`db_errors`); ``connect_timeout``: seconds per connection attempt;
    ``reconnect_timeout``: seconds of failed reconnection before the pool gives up on an
    attempt (the next checkout starts another); ``lock_timeout_ms``: server-side
    ``lock_timeout`` of every session, so a stuck lock holder cannot hang a caller forever.
    Does not wait for the first connection: safe to call while the server is down.
    """
    from psycopg_pool import ConnectionPool

    if not 0 <= min_size <= max_size or max_size < 1:
        raise ValueError(
            f"pool sizes must satisfy 0 <= min_size <= max_size >= 1, got {min_size}..{max_size}"
        )
    pool: ConnectionPool = ConnectionPool(
        dsn,
        name=name,
        min_size=min_size,
        max_size=max_size,
        kwargs={
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "application_name": application_name,
            "options": f"-c lock_timeout={int(lock_timeout_ms)}",
        },
        check=ConnectionPool.check_connection,
        timeout=timeout,
        reconnect_timeout=reconnect_timeout,
        max_idle=max_idle,
        num_workers=1,
        open=False,
    )
    pool.open(wait=False)
    return pool
