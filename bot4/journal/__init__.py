"""The journal: crash-safe append-only segment files of record frames.

:mod:`bot4.journal.format` holds the on-disk format (segment files, file header, frames,
the chain between segments) and the errors; :mod:`bot4.journal.scan` scans a segment and
tells a torn tail from damage; :mod:`bot4.journal.writer` holds :class:`JournalWriter` (the
single appender of a directory, its durability and recovery);
:mod:`bot4.journal.reader` holds :class:`JournalReader` (every frame, in order);
:mod:`bot4.journal.tail` holds :class:`JournalTail`, the incremental reader from a frame
index on that a loader keeps open beside the live writer (Chronicle keeps the tailer beside
the appender). This package sits below the
domain and the services (``db`` reads journals through it) and above ``records``.
"""

from bot4.journal.format import (
    DEFAULT_MAX_BYTES,
    FILE_HEADER,
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FILE_VERSION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    FSYNC_POLICIES,
    Frame,
    JournalCorrupt,
    JournalDamagedTail,
    JournalGap,
    TornTail,
    check_layout,
    frame_crc,
    gap_error,
    link_gap_error,
    list_segments,
    read_frame,
    segment_name,
)
from bot4.journal.reader import JournalReader, JournalReport
from bot4.journal.scan import classify_bad_frame
from bot4.journal.tail import JournalBehindDatabase, JournalTail, journal_created_ns
from bot4.journal.writer import JournalWriter

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
    "JournalBehindDatabase",
    "JournalCorrupt",
    "JournalDamagedTail",
    "JournalGap",
    "JournalReader",
    "JournalReport",
    "JournalTail",
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
    "journal_created_ns",
]
