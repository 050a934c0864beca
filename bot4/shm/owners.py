"""Who owns an instance's segments, and whether that process still lives.

A pid alone does not identify a process: pids are reused, so a pid recorded by a run that
was SIGKILLed can belong to an unrelated process a minute later. A process is identified by
``(pid, start)``, ``start`` being field 22 of ``/proc/<pid>/stat`` (``starttime``: clock
ticks after boot at which the process started). Two processes alive in one boot never share
both; ``/dev/shm`` does not survive a reboot, so no recorded pair outlives its boot.

:func:`process_start` reads a process's start; :func:`alive` says whether the process a
pair names is still running (not a zombie: a zombie writes nothing). Linux only (``/proc``);
pids are those of the reader's pid namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Owner", "alive", "process_start", "self_start"]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None if there is no such
    process. The command name (field 2) may hold spaces and parentheses: split after the
    last ``)``."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None
    end = raw.rfind(b")")
    if end < 0:
        return None
    return raw[end + 2 :].decode("ascii", "replace").split()


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field
    22), or None when no such process runs (gone, or a zombie)."""
    if pid <= 0:
        return None
    f = _stat_fields(pid)
    if f is None or len(f) < 20 or f[0] in ("Z", "X", "x"):
        return None
    return int(f[19])  # field 22 of the whole line: the 20th after the state (field 3)


_SELF: tuple[int, int] | None = None


def self_start() -> int:
    """This process's own start (cached per pid: valid after a fork)."""
    global _SELF
    pid = os.getpid()
    if _SELF is None or _SELF[0] != pid:
        _SELF = (pid, process_start(pid) or 0)
    return _SELF[1]


def alive(pid: int, start: int) -> bool:
    """Whether the process recorded as ``(pid, start)`` still runs. ``start`` 0 (unknown)
    falls back to the pid alone, which errs towards alive: a reused pid then keeps an
    instance "running" rather than letting a live one be replaced."""
    now = process_start(pid)
    if now is None:
        return False
    return start == 0 or now == start


@dataclass(frozen=True)
class Owner:
    """A process recorded in a control block: its role (``supervisor``, ``creator``,
    ``stage md``...), pid and start ticks."""

    role: str
    pid: int
    start: int

    @property
    def alive(self) -> bool:
        return self.pid > 0 and alive(self.pid, self.start)

    def __str__(self) -> str:
        return f"{self.role} pid {self.pid}"
