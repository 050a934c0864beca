"""Crash-safe append-only journal of record batches: framing, segment files, the writer
and the whole-journal reader, recovery. (The incremental reader beside a live writer is
:mod:`bot4.journal.tail`; both are re-exported by :mod:`bot4.journal`.)

A journal is a directory of segment files ``journal-<first-frame-index:016d>.bj4``. Each
starts with a 32-byte file header, followed by frames; one frame holds one batch of records
of one type (typically what a stage drained from its ring in one pass).

File header (little-endian, 32 bytes)::

    offset  size  field        meaning
    0       8     magic        b"BOT4JRNL"
    8       2     version      FILE_VERSION
    10      2     header_size  32
    12      4     prev_crc     crc of the previous segment's last frame (its chain link;
                               0: first segment, or written by a build without links)
    16      8     created_ns   wall clock (time.time_ns) when the file was created, ns
    24      8     first_frame  global index of the file's first frame (= the file name)

Continuity. Segment names and headers form a chain: the first segment is frame 0, each
next one is named for (and its header says) the frame where the previous one ends, and
its ``prev_crc`` is the crc of the previous one's last frame. A missing, renumbered,
overlapping or foreign segment breaks the chain: :class:`JournalGap`, naming the file and
the frames missing, from every reader (and from the loader's tail).

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

Recovery. What an interrupted append can leave after the last intact frame of the last
file, and only there: a *prefix* of its frame (a process crash mid-``write(2)``; a power
loss before the file grew), or zeros (a power loss after the file grew but before its data
reached the disk). Opening a writer drops such a **torn tail** (truncates, logs a warning,
reports it in ``torn_tail`` / ``truncated_bytes``) only when that is provably what it is:

- fewer than 32 bytes, zero or the start of a frame header ("incomplete frame header");
- a plausible frame header (its record type, fingerprint, count and length agree) whose
  length runs past the end of the file ("frame length beyond end of file");
- nothing but zeros up to the end of the file ("zero-filled tail");
- a last file shorter than its header, or all zeros (rotation interrupted): the writer
  rewrites its header.

Anything else is never truncated automatically (a frame whose length fits the file may have
been synced, even loaded, before it was damaged; cutting it would lose it silently): a CRC
mismatch (a bit flip), a header whose fields disagree, garbage, or a plausible header with a **zeroed payload** (a power loss can leave the header's sector
on disk and not the payload's) raises :class:`JournalDamagedTail` naming file and offset;
``bot4 journal repair DIR`` (:mod:`bot4.journal_repair`) cuts it, saving the bytes and
writing an audit record. A bad frame followed by an intact frame, or in a file that is not
the last, cannot come from a torn write: :class:`JournalCorrupt`, never repaired by a tool.

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
    "FILE_HEADER",
    "FILE_HEADER_SIZE",
    "FILE_MAGIC",
    "FILE_VERSION",
    "FRAME_HEADER",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "FSYNC_POLICIES",
    "Frame",
    "JournalCorrupt",
    "JournalDamagedTail",
    "JournalGap",
    "JournalReader",
    "JournalReport",
    "JournalWriter",
    "TornTail",
    "check_layout",
    "classify_bad_frame",
    "frame_crc",
    "gap_error",
    "link_gap_error",
    "list_segments",
    "read_frame",
    "segment_name",
]

log = logging.getLogger("bot4.journal")

FILE_MAGIC = b"BOT4JRNL"
FILE_VERSION = 1
FILE_HEADER_SIZE = 32
FRAME_MAGIC = b"BJ4F"
FRAME_HEADER_SIZE = 32
DEFAULT_MAX_BYTES = 64 << 20  # rotate before a file would exceed this, bytes
FSYNC_POLICIES = ("always", "batch", "none")

FILE_HEADER = struct.Struct("<8sHHIqQ")  # the file header's fields, as diagrammed above
FRAME_HEADER = struct.Struct("<4sIHHIQII")  # the frame header's fields, as diagrammed above
_CRC_OFFSET = 24
_SEGMENT_RE = re.compile(r"^journal-(\d{16})\.bj4$")
# every layout a frame of each record type may carry: today's and compatible earlier versions
_FINGERPRINTS = {rt: readable_fingerprints(rt) for rt in RECORD_TYPE_IDS.values()}
_WRITE_FINGERPRINTS = {
    rt: dtype_fingerprint(dtype_by_record_type(rt)) for rt in RECORD_TYPE_IDS.values()
}
_TYPE_NAMES = {rt: name for name, rt in RECORD_TYPE_IDS.items()}

if FILE_HEADER.size != FILE_HEADER_SIZE or FRAME_HEADER.size != FRAME_HEADER_SIZE:
    raise AssertionError("journal header structs do not match their documented sizes")


class JournalCorrupt(Bot4Error):
    """A journal frame is damaged where a crash cannot have torn it. ``path``, ``offset``."""

    code = Code.JOURNAL_CRC

    def __init__(self, path: Path, offset: int, reason: str, code: Code | None = None) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: {reason} at offset {offset}", code)


class JournalGap(JournalCorrupt):
    """Frames are missing between segments: a segment is missing, renumbered, overlaps the
    previous one or does not continue it (``prev_crc``). ``path``: the segment where the
    chain breaks (``offset`` 0); the message says which frames and why."""

    code = Code.JOURNAL_GAP

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.offset = 0
        self.reason = reason
        Bot4Error.__init__(self, f"{path}: {reason}")


class JournalDamagedTail(JournalCorrupt):
    """The last file ends in a damaged frame that a torn write cannot explain (its length
    fits the file, or its header is not one bot4 wrote) and no intact frame follows it.

    Never truncated automatically; ``bot4 journal repair`` cuts it, audited. ``bytes``:
    from ``offset`` to the end of the file. ``kind``: ``"zeroed"`` (a plausible header over
    a zero-filled payload, as a power loss before the frame was synced leaves it) or
    ``"damaged"`` (a CRC mismatch, a header whose fields disagree, garbage)."""

    def __init__(self, path: Path, offset: int, size: int, kind: str, reason: str) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        self.bytes = size - offset
        self.kind = kind
        Bot4Error.__init__(
            self,
            f"{path}: {reason}, at offset {offset} ({self.bytes} bytes to the end of the "
            f"file); not truncated automatically: check it, then `bot4 journal repair "
            f"{self.path.parent}`",
        )


@dataclass(frozen=True, slots=True)
class TornTail:
    """A partially written last frame: where it starts and how many bytes it spans."""

    path: Path
    offset: int
    bytes: int
    reason: str

    def describe(self) -> str:
        """One line for an operator: where, what, and what happens to it."""
        return (
            f"{self.path}: torn tail ({self.reason}) at offset {self.offset}, {self.bytes} "
            "bytes: an append cut short by a crash (or still being written); the journal's "
            "writer truncates it when it next opens the journal"
        )


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
        """No corruption: no damaged frame, no gap (a torn tail is the trace of a crash)."""
        return self.corruption is None

    @property
    def complete(self) -> bool:
        """Every byte is in an intact frame: no corruption and no torn tail either."""
        return self.corruption is None and self.torn_tail is None


def segment_name(first_frame: int) -> str:
    """File name of the segment whose first frame has global index ``first_frame``."""
    return f"journal-{first_frame:016d}.bj4"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first frame, path)`` of the directory's segment files, by first frame."""
    found = []
    for entry in directory.iterdir():
        m = _SEGMENT_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _header_first_frame(path: Path) -> int | None:
    """``first_frame`` of the file header of ``path``, or None if it has no valid header."""
    try:
        with open(path, "rb") as f:
            head = f.read(FILE_HEADER_SIZE)
    except OSError:
        return None
    if len(head) < FILE_HEADER_SIZE or head[:8] != FILE_MAGIC:
        return None
    return int(FILE_HEADER.unpack(head)[5])


def gap_error(path: Path, first: int, expected: int, previous: Path | None) -> JournalGap:
    """The error for segment ``path``, named for frame ``first``, met where the journal
    should continue at frame ``expected`` (after ``previous``, None: at the start)."""
    said = _header_first_frame(path)
    if previous is not None:
        after = f"{previous.name} ends at frame {expected}"
    else:
        after = "a journal starts at frame 0" if expected == 0 else f"frame {expected} is wanted"
    if said == expected:
        return JournalGap(
            path,
            f"renumbered segment: named for frame {first}, its header says frame {said}, "
            f"where {after} (its name should be {segment_name(expected)})",
        )
    if first > expected:
        return JournalGap(
            path,
            f"frames {expected}..{first - 1} missing: {after}, {segment_name(expected)} not "
            f"found, the next segment is {path.name} (a segment missing or renumbered)",
        )
    return JournalGap(
        path, f"overlapping segment: starts at frame {first}, but {after} (renumbered?)"
    )


def link_gap_error(path: Path, link: int, last_crc: int, previous: Path) -> JournalGap:
    """The error for segment ``path`` whose header's ``prev_crc`` (``link``) is not the crc
    of ``previous``'s last frame (``last_crc``)."""
    return JournalGap(
        path,
        f"does not continue {previous.name}: its header links to a frame with crc "
        f"{link:08x}, {previous.name} ends with crc {last_crc:08x} (a segment of another "
        "journal, or renumbered)",
    )


def frame_crc(header: bytes | memoryview, payload: bytes | memoryview) -> int:
    """The crc a frame header stores: over the header without its crc field, then the
    payload."""
    crc = zlib.crc32(header[:_CRC_OFFSET])
    crc = zlib.crc32(header[_CRC_OFFSET + 4 : FRAME_HEADER_SIZE], crc)
    return zlib.crc32(payload, crc)


@dataclass(frozen=True, slots=True)
class Frame:
    """Where one frame sits in its segment file (bytes) and what its header says."""

    offset: int
    record_type: int
    count: int
    fingerprint: int
    length: int
    crc: int = 0  # the frame's stored crc (the next segment's prev_crc links to the last)

    @property
    def payload(self) -> int:
        return self.offset + FRAME_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.offset + FRAME_HEADER_SIZE + self.length


def read_frame(data: memoryview, offset: int) -> tuple[Frame | None, str]:
    """The intact (CRC-checked) frame at ``offset``, or None and why not."""
    if len(data) - offset < FRAME_HEADER_SIZE:
        return None, "incomplete frame header"
    magic, length, rtype, _flags, count, fp, crc, _res = FRAME_HEADER.unpack_from(data, offset)
    if magic != FRAME_MAGIC:
        return None, "bad frame magic"
    end = offset + FRAME_HEADER_SIZE + length
    if end > len(data):
        return None, "frame length beyond end of file"
    header = data[offset : offset + FRAME_HEADER_SIZE]
    if frame_crc(header, data[offset + FRAME_HEADER_SIZE : end]) != crc:
        return None, "frame CRC mismatch"
    return Frame(offset, rtype, count, fp, length, crc), ""


_SECTOR = 512  # bytes: the smallest unit a disk writes; a power loss loses whole sectors
_ZEROED_MIN = 64  # bytes of zeros from a sector boundary that make a payload "zeroed"


def _header_problem(fields: tuple, path: Path, offset: int) -> str:
    """Why a frame header that has the magic is not one this journal's writer wrote ("" if
    its record type, fingerprint, count, length and reserved fields all agree)."""
    _magic, length, rtype, flags, count, fp, _crc, reserved = fields
    if flags or reserved:
        return "reserved header fields not zero"
    try:
        check_layout(Frame(offset, rtype, count, fp, length), path)
    except JournalCorrupt as exc:
        return exc.reason
    return ""


def _zeroed_payload(data: memoryview, payload: int, end: int, base: int = 0) -> bool:
    """The payload ``[payload, end)`` of ``data`` (the file from byte ``base`` on) is all
    zeros, or zeros from a sector boundary of the file to its end (at least ``_ZEROED_MIN``
    bytes): what a power loss leaves of sectors that never reached the disk."""
    body = bytes(data[payload:end])
    zero_from = payload + len(body.rstrip(b"\0"))
    if zero_from == payload:
        return True
    boundary = -(-(base + zero_from) // _SECTOR) * _SECTOR - base
    return end - boundary >= min(_ZEROED_MIN, end - payload)


def classify_bad_frame(
    data: memoryview, offset: int, path: Path, reason: str, is_last: bool, base: int = 0
) -> TornTail | JournalCorrupt:
    """What the bytes from ``offset`` (no intact frame there, because of ``reason``) to the
    end of the file are: a torn tail (provably an interrupted append), a damaged tail
    (:class:`JournalDamagedTail`) or corruption (an intact frame follows, or this is not
    the last file). ``data`` holds the file from byte ``base`` on (``offset`` counts from
    there too; reports give file offsets). See the module docstring for the rules."""
    size = len(data)
    at = base + offset
    follower = _next_intact_frame(data, offset + 1)
    if follower is not None:
        return JournalCorrupt(path, at, f"{reason}, intact frame follows at {base + follower}")
    if not is_last:
        return JournalCorrupt(path, at, f"{reason} (not the last file)")
    rest = bytes(data[offset:])
    end_of_file = base + size
    if not rest.strip(b"\0"):
        return TornTail(path, at, size - offset, "zero-filled tail")
    if len(rest) < FRAME_HEADER_SIZE:
        if rest[:4] == FRAME_MAGIC[: len(rest)]:
            return TornTail(path, at, size - offset, "incomplete frame header")
        return JournalDamagedTail(path, at, end_of_file, "damaged", "garbage after the last frame")
    fields = FRAME_HEADER.unpack_from(data, offset)
    if fields[0] != FRAME_MAGIC:
        return JournalDamagedTail(path, at, end_of_file, "damaged", "bad frame magic")
    problem = _header_problem(fields, path, at)
    if problem:
        reason = f"frame header fields disagree ({problem})"
        return JournalDamagedTail(path, at, end_of_file, "damaged", reason)
    end = offset + FRAME_HEADER_SIZE + fields[1]
    if end > size:
        return TornTail(path, at, size - offset, "frame length beyond end of file")
    if _zeroed_payload(data, offset + FRAME_HEADER_SIZE, end, base):
        reason = "zeroed payload under a plausible frame header (power loss before a sync?)"
        return JournalDamagedTail(path, at, end_of_file, "zeroed", reason)
    reason = "last frame's CRC does not match and its length fits the file (not a torn write)"
    return JournalDamagedTail(path, at, end_of_file, "damaged", reason)


def _next_intact_frame(data: memoryview, start: int) -> int | None:
    """Offset of the first intact frame at or after ``start`` (resync by magic), or None."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    pos = raw.find(FRAME_MAGIC, start)
    while pos >= 0:
        if read_frame(data, pos)[0] is not None:
            return pos
        pos = raw.find(FRAME_MAGIC, pos + 1)
    return None


def check_layout(frame: Frame, path: Path) -> None:
    """JournalCorrupt unless the frame's record type is known, its fingerprint one this
    build reads, and its length ``count`` records of that type."""
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
    frames: list[Frame]
    end: int  # offset just after the last intact frame
    size: int
    torn: TornTail | None = None
    corruption: JournalCorrupt | None = None
    link: int = 0  # the file header's prev_crc


def _torn_file_header(data: bytes) -> bool:
    """A last file whose header an interrupted rotation left short or zero-filled."""
    if len(data) < FILE_HEADER_SIZE and data[:8] == FILE_MAGIC[: len(data)]:
        return True
    return data.count(0) == len(data)


def _scan_segment(data: bytes, path: Path, first_frame: int, is_last: bool) -> _SegmentScan:
    """Every intact frame of one segment; a bad tail is torn only in the last segment."""
    mv = memoryview(data)
    size = len(data)
    if is_last and _torn_file_header(data):
        reason = "incomplete file header" if size < FILE_HEADER_SIZE else "zero-filled file"
        return _SegmentScan([], 0, size, torn=TornTail(path, 0, size, reason))
    if size < FILE_HEADER_SIZE:
        return _SegmentScan([], 0, size, corruption=JournalCorrupt(path, 0, "short file header"))
    magic, version, header_size, link, _created, first = FILE_HEADER.unpack_from(mv, 0)
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
    frames: list[Frame] = []
    offset = FILE_HEADER_SIZE
    while offset < size:
        frame, reason = read_frame(mv, offset)
        if frame is None:
            scan = _SegmentScan(frames, offset, size, link=link)
            bad = classify_bad_frame(mv, offset, path, reason, is_last)
            if isinstance(bad, TornTail):
                scan.torn = bad
            else:
                scan.corruption = bad
            return scan
        try:
            check_layout(frame, path)
        except JournalCorrupt as exc:
            return _SegmentScan(frames, offset, size, corruption=exc, link=link)
        frames.append(frame)
        offset = frame.end
    return _SegmentScan(frames, offset, size, link=link)


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


class JournalReader:
    """Read-only view of a journal directory; never writes, safe beside a live writer.

    Iterating yields ``(frame_index, record_type, records)`` in order across segments;
    ``records`` is a fresh (writable) array of the frame's dtype. A torn last frame ends
    the iteration quietly (``torn_tail`` then describes it); corruption — a damaged frame,
    or a gap between segments (:class:`JournalGap`) — raises :class:`JournalCorrupt` after
    every intact frame before it has been yielded.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.torn_tail: TornTail | None = None  # set by an iteration that ended at one

    def _scans(self) -> Iterator[tuple[int, Path, bytes, _SegmentScan]]:
        """Each segment's scan, in order, the chain checked: segment 0 first, each next one
        named for the frame where the previous one ends and linked to its last crc."""
        segments = list_segments(self.directory)
        expected, last_crc, previous = 0, 0, None
        for i, (first, path) in enumerate(segments):
            data = path.read_bytes()
            if first != expected:
                scan = _SegmentScan(
                    [], 0, len(data), corruption=gap_error(path, first, expected, previous)
                )
            else:
                scan = _scan_segment(data, path, first, is_last=i == len(segments) - 1)
                if (
                    previous is not None
                    and scan.end
                    and scan.link
                    and last_crc
                    and scan.link != last_crc
                ):
                    scan = _SegmentScan(
                        [],
                        0,
                        len(data),
                        corruption=link_gap_error(path, scan.link, last_crc, previous),
                    )
            yield first, path, data, scan
            if scan.corruption is not None:
                return
            expected = first + len(scan.frames)
            last_crc = scan.frames[-1].crc if scan.frames else scan.link or last_crc
            previous = path

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        self.torn_tail = None
        for first, _path, data, scan in self._scans():
            for k, frame in enumerate(scan.frames):
                dtype = dtype_by_record_type(frame.record_type)
                records = np.frombuffer(
                    data, dtype=dtype, count=frame.count, offset=frame.payload
                ).copy()
                yield first + k, frame.record_type, records
            if scan.corruption is not None:
                raise scan.corruption
            self.torn_tail = scan.torn or self.torn_tail

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
