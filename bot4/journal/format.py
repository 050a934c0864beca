"""The journal's on-disk format: segment files, their file header and frames, the chain
that links segments, and the errors a reader raises. (The writer is
:mod:`bot4.journal.writer`, the whole-journal reader :mod:`bot4.journal.reader`, the segment
scan and torn-tail rules :mod:`bot4.journal.scan`, the incremental reader beside a live
writer :mod:`bot4.journal.tail`; :mod:`bot4.journal` re-exports them all.)

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
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from bot4.records.errors import Bot4Error, Code
from bot4.records.types import (
    RECORD_TYPE_IDS,
    dtype_by_record_type,
    dtype_fingerprint,
    readable_fingerprints,
)

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
    "TornTail",
    "check_layout",
    "frame_crc",
    "gap_error",
    "link_gap_error",
    "list_segments",
    "read_frame",
    "segment_name",
]


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
