"""Crash-safe append-only journal of record batches: framing, segment files, recovery.

A journal is a directory of segment files ``journal-<first-frame-index:016d>.bj4``. Each
starts with a 32-byte file header, followed by frames; one frame holds one batch of records
of one type (typically what a stage drained from its ring in one pass).

File header (little-endian, 32 bytes)::

    offset  size  field        meaning
    0       8     magic        b"BOT4JRNL"
    8       2     version      FILE_VERSION
    10      2     header_size  32
    12      4     reserved     zero
    16      8     created_ns   wall clock (time.time_ns) when the file was created, ns
    24      8     first_frame  global index of the file's first frame (= the file name)

Frame (little-endian, 32-byte header, then the payload)::

    offset  size  field        meaning
    0       4     magic        b"BJ4F"
    4       4     length       payload bytes = count * itemsize
    8       2     record_type  RT_* of the records
    10      2     flags        zero (reserved for future use)
    12      4     count        records in this frame, >= 1
    16      8     fingerprint  dtype_fingerprint of the record dtype
    24      4     crc          zlib.crc32 over header bytes [0, 24) + [28, 32) + payload
    28      4     reserved     zero
    32      ...   payload      the records' bytes, native numpy layout

Positions: ``JournalWriter.append`` returns the frame's *global frame index*: 0 for the
first frame ever written, then +1 per frame, monotonic across segment files and across
reopenings. The reader yields the same index with every frame.

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

Recovery. A crash can leave the *last* frame of the *last* file torn (incomplete header,
length beyond end of file, CRC mismatch, or garbage such as zeros). Opening a writer drops
that tail (truncates, logs a warning, reports the bytes in ``truncated_bytes``); every frame
before it is intact. A bad frame that is followed by an intact frame cannot come from a torn
write: it is corruption and raises :class:`JournalCorrupt` naming file and offset.

Ownership: one writer per journal directory (an exclusive ``flock`` on the directory
enforces it); readers never write and can read while the writer appends (a torn last frame
just ends the iteration).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.records.dtypes import (
    RECORD_TYPE_IDS,
    RECORD_TYPES,
    dtype_by_record_type,
    dtype_fingerprint,
    readable_fingerprints,
    record_type_of,
)
from bot4.records.errors import Bot4Error, Code

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FILE_HEADER_SIZE",
    "FILE_MAGIC",
    "FILE_VERSION",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "FSYNC_POLICIES",
    "JournalCorrupt",
    "JournalReader",
    "JournalReport",
    "JournalWriter",
    "TornTail",
    "segment_name",
]

log = logging.getLogger(__name__)

FILE_MAGIC = b"BOT4JRNL"
FILE_VERSION = 1
FILE_HEADER_SIZE = 32
FRAME_MAGIC = b"BJ4F"
FRAME_HEADER_SIZE = 32
DEFAULT_MAX_BYTES = 64 << 20  # rotate before a file would exceed this, bytes
FSYNC_POLICIES = ("always", "batch", "none")

_FILE = struct.Struct("<8sHHIqQ")
_FRAME = struct.Struct("<4sIHHIQII")
_CRC_OFFSET = 24
_SEGMENT_RE = re.compile(r"^journal-(\d{16})\.bj4$")
# every layout a frame of each record type may carry: today's and compatible earlier versions
_FINGERPRINTS = {rt: readable_fingerprints(rt) for rt in RECORD_TYPE_IDS.values()}
_WRITE_FINGERPRINTS = {
    rt: dtype_fingerprint(dtype_by_record_type(rt)) for rt in RECORD_TYPE_IDS.values()
}
_TYPE_NAMES = {rt: name for name, rt in RECORD_TYPE_IDS.items()}

if _FILE.size != FILE_HEADER_SIZE or _FRAME.size != FRAME_HEADER_SIZE:
    raise AssertionError("journal header structs do not match their documented sizes")


class JournalCorrupt(Bot4Error):
    """A journal frame is damaged where a crash cannot have torn it. ``path``, ``offset``."""

    code = Code.JOURNAL_CRC

    def __init__(self, path: Path, offset: int, reason: str, code: Code | None = None) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: {reason} at offset {offset}", code)


@dataclass(frozen=True, slots=True)
class TornTail:
    """A partially written last frame: where it starts and how many bytes it spans."""

    path: Path
    offset: int
    bytes: int
    reason: str


@dataclass(slots=True)
class JournalReport:
    """Result of :meth:`JournalReader.verify`. ``bytes`` counts intact frames + headers."""

    files: int = 0
    frames: int = 0
    records: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    torn_tail: TornTail | None = None
    corruption: JournalCorrupt | None = None

    @property
    def ok(self) -> bool:
        """No corruption (a torn tail is the normal trace of a crash, not an error)."""
        return self.corruption is None


def segment_name(first_frame: int) -> str:
    """File name of the segment whose first frame has global index ``first_frame``."""
    return f"journal-{first_frame:016d}.bj4"


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in directory.iterdir():
        m = _SEGMENT_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _frame_crc(header: bytes | memoryview, payload: bytes | memoryview) -> int:
    crc = zlib.crc32(header[:_CRC_OFFSET])
    crc = zlib.crc32(header[_CRC_OFFSET + 4 : FRAME_HEADER_SIZE], crc)
    return zlib.crc32(payload, crc)


@dataclass(frozen=True, slots=True)
class _Frame:
    offset: int
    record_type: int
    count: int
    fingerprint: int
    length: int

    @property
    def payload(self) -> int:
        return self.offset + FRAME_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.offset + FRAME_HEADER_SIZE + self.length


def _read_frame(data: memoryview, offset: int) -> tuple[_Frame | None, str]:
    """The intact (CRC-checked) frame at ``offset``, or None and why not."""
    if len(data) - offset < FRAME_HEADER_SIZE:
        return None, "incomplete frame header"
    magic, length, rtype, _flags, count, fp, crc, _res = _FRAME.unpack_from(data, offset)
    if magic != FRAME_MAGIC:
        return None, "bad frame magic"
    end = offset + FRAME_HEADER_SIZE + length
    if end > len(data):
        return None, "frame length beyond end of file"
    header = data[offset : offset + FRAME_HEADER_SIZE]
    if _frame_crc(header, data[offset + FRAME_HEADER_SIZE : end]) != crc:
        return None, "frame CRC mismatch"
    return _Frame(offset, rtype, count, fp, length), ""


def _next_intact_frame(data: memoryview, start: int) -> int | None:
    """Offset of the first intact frame at or after ``start`` (resync by magic), or None."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    pos = raw.find(FRAME_MAGIC, start)
    while pos >= 0:
        if _read_frame(data, pos)[0] is not None:
            return pos
        pos = raw.find(FRAME_MAGIC, pos + 1)
    return None


def _check_layout(frame: _Frame, path: Path) -> None:
    expected = _FINGERPRINTS.get(frame.record_type)
    if expected is None:
        raise JournalCorrupt(path, frame.offset, f"unknown record type {frame.record_type}")
    itemsize = dtype_by_record_type(frame.record_type).itemsize
    if (
        frame.fingerprint not in expected
        or frame.length != frame.count * itemsize
        or frame.count < 1
    ):
        raise JournalCorrupt(
            path,
            frame.offset,
            f"frame layout differs from this build's {_TYPE_NAMES[frame.record_type]}",
            Code.DTYPE_MISMATCH,
        )


@dataclass(slots=True)
class _SegmentScan:
    frames: list[_Frame]
    end: int  # offset just after the last intact frame
    size: int
    torn: TornTail | None = None
    corruption: JournalCorrupt | None = None


def _scan_segment(data: bytes, path: Path, first_frame: int, is_last: bool) -> _SegmentScan:
    """Every intact frame of one segment; a bad tail is torn only in the last segment."""
    mv = memoryview(data)
    size = len(data)
    if size < FILE_HEADER_SIZE:
        scan = _SegmentScan([], 0, size)
        if is_last:
            scan.torn = TornTail(path, 0, size, "incomplete file header")
        else:
            scan.corruption = JournalCorrupt(path, 0, "incomplete file header")
        return scan
    magic, version, header_size, _res, _created, first = _FILE.unpack_from(mv, 0)
    if magic != FILE_MAGIC or header_size != FILE_HEADER_SIZE:
        return _SegmentScan(
            [], 0, size, corruption=JournalCorrupt(path, 0, "bad file magic", Code.BAD_MAGIC)
        )
    if version != FILE_VERSION:
        reason = f"journal version {version}, this build reads {FILE_VERSION}"
        return _SegmentScan(
            [], 0, size, corruption=JournalCorrupt(path, 0, reason, Code.LAYOUT_VERSION_MISMATCH)
        )
    if first != first_frame:
        reason = f"file header says first frame {first}, file name says {first_frame}"
        return _SegmentScan([], 0, size, corruption=JournalCorrupt(path, 0, reason))
    frames: list[_Frame] = []
    offset = FILE_HEADER_SIZE
    while offset < size:
        frame, reason = _read_frame(mv, offset)
        if frame is None:
            scan = _SegmentScan(frames, offset, size)
            follower = _next_intact_frame(mv, offset + 1)
            if follower is not None:
                reason = f"{reason}, intact frame follows at {follower}"
                scan.corruption = JournalCorrupt(path, offset, reason)
            elif is_last:
                scan.torn = TornTail(path, offset, size - offset, reason)
            else:
                scan.corruption = JournalCorrupt(path, offset, f"{reason} (not the last file)")
            return scan
        try:
            _check_layout(frame, path)
        except JournalCorrupt as exc:
            return _SegmentScan(frames, offset, size, corruption=exc)
        frames.append(frame)
        offset = frame.end
    return _SegmentScan(frames, offset, size)


def _file_header(first_frame: int, created_ns: int) -> bytes:
    return _FILE.pack(FILE_MAGIC, FILE_VERSION, FILE_HEADER_SIZE, 0, created_ns, first_frame)


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
    ``torn_tail`` describes it, a warning is logged); corruption raises
    :class:`JournalCorrupt` and leaves the files untouched.
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
        segments = _list_segments(self.directory)
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
                _write_all(self._fd, _file_header(first, int(self.clock())))
            os.fsync(self._fd)
        self._file_bytes = max(scan.end, FILE_HEADER_SIZE)
        self._next_frame = first + len(scan.frames)

    def _start_segment(self, first_frame: int) -> None:
        path = self.directory / segment_name(first_frame)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _write_all(fd, _file_header(first_frame, int(self.clock())))
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
            _FRAME.pack(
                FRAME_MAGIC, len(payload), rtype, 0, len(records), _WRITE_FINGERPRINTS[rtype], 0, 0
            )
        )
        struct.pack_into("<I", header, _CRC_OFFSET, _frame_crc(header, payload))
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


class JournalReader:
    """Read-only view of a journal directory; never writes, safe beside a live writer.

    Iterating yields ``(frame_index, record_type, records)`` in order across segments;
    ``records`` is a fresh (writable) array of the frame's dtype. A torn last frame ends
    the iteration quietly; corruption raises :class:`JournalCorrupt` after every intact
    frame before it has been yielded.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _scans(self) -> Iterator[tuple[int, Path, bytes, _SegmentScan]]:
        segments = _list_segments(self.directory)
        expected = segments[0][0] if segments else 0
        for i, (first, path) in enumerate(segments):
            data = path.read_bytes()
            if first != expected:
                reason = f"file starts at frame {first}, previous file ended at frame {expected}"
                scan = _SegmentScan([], 0, len(data), corruption=JournalCorrupt(path, 0, reason))
            else:
                scan = _scan_segment(data, path, first, is_last=i == len(segments) - 1)
            yield first, path, data, scan
            if scan.corruption is not None:
                return
            expected = first + len(scan.frames)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        for first, _path, data, scan in self._scans():
            for k, frame in enumerate(scan.frames):
                dtype = dtype_by_record_type(frame.record_type)
                records = np.frombuffer(
                    data, dtype=dtype, count=frame.count, offset=frame.payload
                ).copy()
                yield first + k, frame.record_type, records
            if scan.corruption is not None:
                raise scan.corruption

    def verify(self) -> JournalReport:
        """Check every frame; report counts, the torn tail and corruption (never raises)."""
        report = JournalReport(records={name: 0 for name in RECORD_TYPES})
        for _first, _path, _data, scan in self._scans():
            report.files += 1
            report.frames += len(scan.frames)
            report.bytes += scan.end
            for frame in scan.frames:
                report.records[_TYPE_NAMES[frame.record_type]] += frame.count
            report.torn_tail = scan.torn or report.torn_tail
            report.corruption = scan.corruption
        return report
