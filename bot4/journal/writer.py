"""The journal's single appender, :class:`JournalWriter` (format: :mod:`bot4.journal.format`).

Durability (``fsync`` policy of :class:`JournalWriter`). Every append is one ``write(2)``
straight to the kernel (no user-space buffer), so once ``append`` returns the frame is in
the page cache and survives a *process crash* (SIGKILL included) under every policy. Only
``fdatasync`` makes it survive a *power loss / kernel crash*:

- ``"always"``: fdatasync after every append: every returned append survives power loss.
- ``"batch"``: fdatasync in :meth:`JournalWriter.flush` (and at rotation and close); what
  was appended before the last ``flush()`` returned survives power loss. Call ``flush()``
  before the consumer publishes its ring position, so no record leaves the ring before it
  is durable.
- ``"none"``: never fdatasync: survives process crashes only; after a power loss any
  suffix (not necessarily on a frame boundary) may be lost.

Ownership: one writer per journal directory (an exclusive ``flock`` on the directory
enforces it; ``bot4 journal repair`` takes the same lock); readers never write and can read
while the writer appends (a torn last frame just ends the iteration, and is reported in the
reader's ``torn_tail``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bot4.journal.format import (
    _CRC_OFFSET,
    _WRITE_FINGERPRINTS,
    DEFAULT_MAX_BYTES,
    FILE_HEADER,
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FILE_VERSION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    FSYNC_POLICIES,
    TornTail,
    frame_crc,
    list_segments,
    segment_name,
)
from bot4.journal.scan import _scan_segment
from bot4.records.errors import Bot4Error, Code
from bot4.records.types import (
    record_type_of,
)

__all__ = [
    "JournalWriter",
]

log = logging.getLogger("bot4.journal")


def _file_header(first_frame: int, created_ns: int, prev_crc: int = 0) -> bytes:
    return FILE_HEADER.pack(
        FILE_MAGIC, FILE_VERSION, FILE_HEADER_SIZE, prev_crc, created_ns, first_frame
    )


def _last_crc(path: Path, first_frame: int) -> int:
    """crc of the last intact frame of segment ``path`` (its prev_crc if it has none)."""
    scan = _scan_segment(path.read_bytes(), path, first_frame, is_last=False)
    return scan.frames[-1].crc if scan.frames else scan.link


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


class JournalWriter:
    """The single appender of a journal directory (created if missing).

    ``append(records)`` writes one frame and returns its global frame index. ``fsync`` is
    one of :data:`FSYNC_POLICIES` (see the module docstring for what survives what).
    A new segment is started when the next frame would push the current file past
    ``max_bytes`` (a single larger frame gets a file of its own).

    On open the last segment is scanned: a torn tail is truncated (``truncated_bytes`` > 0,
    ``torn_tail`` describes it, a warning is logged); a damaged tail raises
    :class:`JournalDamagedTail` (refused until ``bot4 journal repair``) and other corruption
    :class:`JournalCorrupt`, both leaving the files untouched. A new segment's header links
    to the crc of the frame before it (``prev_crc``).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        fsync: str = "batch",
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if max_bytes < FILE_HEADER_SIZE + FRAME_HEADER_SIZE:
            raise ValueError(f"max_bytes {max_bytes} too small")
        self.directory = Path(directory)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.clock = clock  # stamps created_ns of new segment files (replay: simulated time)
        self.truncated_bytes = 0
        self.torn_tail: TornTail | None = None
        self._fd = -1
        self._dirty = False
        self._last_crc = 0  # crc of the last frame written: the next segment's prev_crc
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._dir_fd)
            raise Bot4Error(f"{self.directory}: journal already open by another writer") from None
        try:
            self._open_last()
        except BaseException:
            os.close(self._dir_fd)
            raise

    def _open_last(self) -> None:
        segments = list_segments(self.directory)
        if not segments:
            self._start_segment(0)
            return
        first, path = segments[-1]
        scan = _scan_segment(path.read_bytes(), path, first, is_last=True)
        if scan.corruption is not None:
            raise scan.corruption
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if scan.torn is not None:
            self.torn_tail = scan.torn
            self.truncated_bytes = scan.torn.bytes
            log.warning(
                "journal %s: torn tail (%s) at offset %d, dropped %d bytes [code %d]",
                path,
                scan.torn.reason,
                scan.torn.offset,
                scan.torn.bytes,
                Code.JOURNAL_TORN_TAIL,
            )
            os.ftruncate(self._fd, scan.end)
            if scan.end == 0:
                scan.link = _last_crc(segments[-2][1], segments[-2][0]) if segments[1:] else 0
                _write_all(self._fd, _file_header(first, int(self.clock()), scan.link))
            os.fsync(self._fd)
        self._file_bytes = max(scan.end, FILE_HEADER_SIZE)
        self._next_frame = first + len(scan.frames)
        self._last_crc = scan.frames[-1].crc if scan.frames else scan.link

    def _start_segment(self, first_frame: int) -> None:
        path = self.directory / segment_name(first_frame)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _write_all(fd, _file_header(first_frame, int(self.clock()), self._last_crc))
        if self.fsync != "none":
            os.fsync(fd)
            os.fsync(self._dir_fd)
        self._fd, self._path = fd, path
        self._file_bytes = FILE_HEADER_SIZE
        self._next_frame = first_frame

    def _rotate(self) -> None:
        if self.fsync != "none" and self._dirty:
            os.fdatasync(self._fd)
        self._dirty = False
        os.close(self._fd)
        self._fd = -1
        self._start_segment(self._next_frame)

    @property
    def path(self) -> Path:
        """The segment file being appended to."""
        return self._path

    @property
    def next_frame(self) -> int:
        """Global index the next appended frame will get (= frames in the journal)."""
        return self._next_frame

    def append(self, records: np.ndarray) -> int:
        """Write ``records`` (1-D, one bot4 record dtype, >= 1) as one frame; its index."""
        if self._fd < 0:
            raise ValueError("journal writer is closed")
        if records.ndim != 1 or len(records) == 0:
            raise ValueError("append takes a non-empty 1-D record array")
        rtype = record_type_of(records.dtype)
        payload = np.ascontiguousarray(records).tobytes()
        header = bytearray(
            FRAME_HEADER.pack(
                FRAME_MAGIC, len(payload), rtype, 0, len(records), _WRITE_FINGERPRINTS[rtype], 0, 0
            )
        )
        struct.pack_into("<I", header, _CRC_OFFSET, frame_crc(header, payload))
        frame_bytes = FRAME_HEADER_SIZE + len(payload)
        if self._file_bytes > FILE_HEADER_SIZE and self._file_bytes + frame_bytes > self.max_bytes:
            self._rotate()
        _write_all(self._fd, bytes(header) + payload)
        self._file_bytes += frame_bytes
        self._dirty = True
        if self.fsync == "always":
            os.fdatasync(self._fd)
            self._dirty = False
        index = self._next_frame
        self._next_frame += 1
        self._last_crc = struct.unpack_from("<I", header, _CRC_OFFSET)[0]
        return index

    def flush(self) -> None:
        """Make every appended frame durable per the policy (no-op for ``"none"``)."""
        if self._fd >= 0 and self._dirty and self.fsync != "none":
            os.fdatasync(self._fd)
        self._dirty = False

    def close(self) -> None:
        """Flush per policy, close the file and release the directory lock. Idempotent."""
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1
        if self._dir_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._dir_fd, fcntl.LOCK_UN)
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
