"""Where bot4 keeps files, and the session counter of each pipeline instance.

``$BOT4_DATA_DIR`` (default ``./bot4-data``) holds the journals (``journal/<instance>``),
the embedded PostgreSQL (``pg``) and ``session/counter``: the number of the last session
started with this data directory.

A *session* is one creation of an instance's shared segments (one ``bot4 run``, one
``bot4 shm create``). Its number is stored in the control block; a stage starting fresh in
a session numbers its records from ``session << SESSION_SEQ_SHIFT``, so sequence numbers —
and the identities built from them (client order ids, OMS order ids, venue execution ids,
decisions by producer and sequence) — stay unique across sessions, in the journal and in
the database, which outlive every session. The counter is one per data directory, not per
instance: every instance loading into the same database must use the same data directory
(the embedded database lives there anyway). Within a session a restarted stage continues
from its cursors, as before. Capacity: 2^16 sessions per data directory, 2^32 records per
stage per session below the next session's range (more only reaches records that nothing
keys on: market data).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

SESSION_SEQ_SHIFT = 32
MAX_SESSION = (1 << 16) - 1


def data_dir() -> Path:
    """``$BOT4_DATA_DIR`` or ``./bot4-data`` (not created here)."""
    return Path(os.environ.get("BOT4_DATA_DIR", "bot4-data"))


def next_session(instance: str, root: Path | None = None) -> int:
    """Advance and return the data directory's session number (1, 2, ...), durably, for a
    session of ``instance`` (appended to ``session/log``: number, instance).

    Serialised between processes by an exclusive lock on the counter file; the new value
    is fsync'ed before it is returned, so a number is never handed out twice.
    """
    d = (root or data_dir()) / "session"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "counter"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).strip()
        try:
            cur = int(raw) if raw else 0
        except ValueError:
            raise ValueError(f"{path}: session counter is not an integer: {raw[:32]!r}") from None
        nxt = cur + 1
        if nxt > MAX_SESSION:
            raise ValueError(f"{path}: all {MAX_SESSION} sessions of this data directory are used")
        data = f"{nxt}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        with open(d / "log", "a") as f:  # for people: which instance had which session
            f.write(f"{nxt} {instance}\n")
        return nxt
    finally:
        os.close(fd)


def session_seq_base(session: int) -> int:
    """First sequence number of a stage starting fresh in ``session`` (1 for session 0)."""
    return max(1, session << SESSION_SEQ_SHIFT)
