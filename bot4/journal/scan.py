"""Scanning one segment file: its intact frames, and what follows the last of them — a torn
tail (what a crash can leave; the writer drops it) or damage (never dropped automatically).

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot4.journal.format import (
    FILE_HEADER,
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FILE_VERSION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    Frame,
    JournalCorrupt,
    JournalDamagedTail,
    TornTail,
    check_layout,
    read_frame,
)
from bot4.records.errors import Code

__all__ = [
    "classify_bad_frame",
]

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
