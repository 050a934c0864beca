"""``bot4 journal repair DIR``: cut a damaged or torn tail off a journal, explicitly and audited.

A journal writer truncates only a tail that is provably a torn write (``bot4.journal``); a
damaged last frame whose length fits the file — a bit flip, or the zeroed payload a power
loss can leave under an intact header — makes the writer refuse to open. This is the one
tool that cuts such a tail, and only a tail: the damage must be in the last file with no
intact frame after it. Corruption followed by intact frames, a damaged non-last file or a
gap between segments is refused (:class:`RepairRefused`): restore the segment from a copy.

What a repair does, in this order, each step durable (fsync) before the next:

1. takes the journal's writer lock (the directory ``flock``): refused while a writer has
   the journal open;
2. copies the bytes it will cut to ``DIR/repaired/<segment>@<offset>.<ns>.bin`` (0640);
3. appends one JSON line to ``DIR/repair.log`` (0640): when (``ts``, ``ts_ns``), who — the
   process's real uid and its name from the password database, not ``$USER`` — ``pid``,
   ``host``, ``file``, ``offset``, ``bytes``, ``frame`` (global index of the first frame
   cut), ``kind`` (``torn`` | ``zeroed`` | ``damaged``), ``reason``, the cut bytes'
   ``sha256``, ``saved`` and ``action`` (``truncate``; ``unlink`` when the cut starts in the
   file header, so the file held no frame);
4. only then truncates the segment (or unlinks it) and syncs it and the directory.

The audit record precedes the change: a repair that dies half-way has a record and the
saved bytes, and running it again finishes it. Frames cut that a database loader had
already loaded (a bit flip after loading) make that loader refuse the journal
(``JournalBehindDatabase``) rather than miss it silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bot4.journal import (
    FILE_HEADER_SIZE,
    JournalDamagedTail,
    JournalReader,
    JournalReport,
)
from bot4.records.errors import Bot4Error, Code

__all__ = ["REPAIR_LOG", "SAVED_DIR", "Repair", "RepairRefused", "repair"]

REPAIR_LOG = "repair.log"  # JSON lines, one per repair, next to the segments
SAVED_DIR = "repaired"  # the bytes each repair cut, one file per repair


class RepairRefused(Bot4Error):
    """The journal's damage is not a tail this tool may cut (or a writer holds it)."""

    code = Code.JOURNAL_CRC


@dataclass(frozen=True, slots=True)
class Repair:
    """One repair's audit record (the JSON line written to ``repair.log``)."""

    ts: str  # UTC, ISO 8601
    ts_ns: int  # wall clock, ns
    uid: int  # real uid of the repairing process
    user: str  # its name in the password database ("" if none)
    pid: int
    host: str
    journal: str
    file: str
    offset: int  # bytes into ``file`` where the cut starts
    bytes: int  # bytes cut (to the end of the file)
    frame: int  # global index of the first frame cut (= intact frames kept)
    kind: str  # torn | zeroed | damaged
    reason: str
    sha256: str  # of the bytes cut
    saved: str  # where the bytes cut were copied
    action: str  # truncate | unlink


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _write_durable(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tail_of(report: JournalReport) -> tuple[Path, int, int, str, str]:
    """(file, offset, bytes, kind, reason) of the tail to cut; RepairRefused otherwise."""
    bad = report.corruption
    if isinstance(bad, JournalDamagedTail):
        return bad.path, bad.offset, bad.bytes, bad.kind, bad.reason
    if bad is not None:
        raise RepairRefused(
            f"cannot repair: {bad} (not a damaged tail of the last file: restore the segment "
            "from a copy)",
            bad.code,
        )
    torn = report.torn_tail
    assert torn is not None
    return torn.path, torn.offset, torn.bytes, "torn", torn.reason


def repair(directory: str | os.PathLike, clock: Callable[[], int] = time.time_ns) -> Repair | None:
    """Cut the damaged or torn tail of the journal in ``directory``; its audit record, or
    None when the journal is complete (nothing cut, nothing written). Raises
    :class:`RepairRefused` for damage that is not such a tail or while a writer has it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RepairRefused(f"{directory}: no such journal directory", Code.CONFIG_INVALID)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RepairRefused(
                f"{directory}: journal open by a writer (stop its persistence stage first)",
                Code.CONFIG_INVALID,
            ) from None
        report = JournalReader(directory).verify()
        if report.complete:
            return None
        path, offset, nbytes, kind, reason = _tail_of(report)
        with open(path, "rb") as f:
            f.seek(offset)
            cut = f.read()
        if len(cut) != nbytes:
            raise RepairRefused(f"{path}: changed while being repaired", Code.CONFIG_INVALID)
        now = int(clock())
        saved_dir = directory / SAVED_DIR
        saved_dir.mkdir(mode=0o750, exist_ok=True)
        saved = saved_dir / f"{path.name}@{offset}.{now}.bin"
        _write_durable(saved, cut, os.O_EXCL)
        _fsync_dir(saved_dir)
        uid = os.getuid()
        record = Repair(
            ts=datetime.fromtimestamp(now / 1e9, UTC).isoformat(timespec="microseconds"),
            ts_ns=now,
            uid=uid,
            user=_user(uid),
            pid=os.getpid(),
            host=socket.gethostname(),
            journal=str(directory.resolve()),
            file=path.name,
            offset=offset,
            bytes=nbytes,
            frame=report.frames,
            kind=kind,
            reason=reason,
            sha256=hashlib.sha256(cut).hexdigest(),
            saved=str(saved.relative_to(directory)),
            action="unlink" if offset < FILE_HEADER_SIZE else "truncate",
        )
        _write_durable(directory / REPAIR_LOG, orjson.dumps(asdict(record)) + b"\n", os.O_APPEND)
        os.fsync(dir_fd)
        if record.action == "unlink":
            path.unlink()
        else:
            os.truncate(path, offset)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        os.fsync(dir_fd)
        return record
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(dir_fd, fcntl.LOCK_UN)
        os.close(dir_fd)
