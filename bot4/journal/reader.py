"""Reading a whole journal, in order, beside a live writer: :class:`JournalReader` (every
frame, and ``verify``'s :class:`JournalReport`). A torn last frame ends an iteration
quietly; damage or a gap between segments raises (:mod:`bot4.journal.format`). The
incremental reader from a frame index on is :mod:`bot4.journal.tail`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot4.journal.format import (
    _TYPE_NAMES,
    JournalCorrupt,
    TornTail,
    gap_error,
    link_gap_error,
    list_segments,
)
from bot4.journal.scan import _scan_segment, _SegmentScan
from bot4.records.types import (
    RECORD_TYPES,
    dtype_by_record_type,
)

__all__ = [
    "JournalReader",
    "JournalReport",
]


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
