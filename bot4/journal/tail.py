"""Reading a journal from a global frame index on, incrementally, beside its live writer:
the loader's tail (Chronicle keeps its tailer beside the appender).

:class:`JournalTail` keeps the current segment open with a byte offset, so each read costs
only the frames appended since the previous one; it waits at a frame still being written
and raises at damage or a gap (see its docstring). :func:`journal_created_ns` reads a
journal's identity (segment 0's creation time).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import numpy as np

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
    TornTail,
    check_layout,
    frame_crc,
    gap_error,
    link_gap_error,
    list_segments,
    read_frame,
    segment_name,
)
from bot4.journal.scan import classify_bad_frame
from bot4.records.errors import Bot4Error, Code
from bot4.records.types import dtype_by_record_type

__all__ = ["MAX_READ_FRAMES", "JournalBehindDatabase", "JournalTail", "journal_created_ns"]

log = logging.getLogger(__name__)

MAX_READ_FRAMES = 50_000  # frames one read returns at most
# a directory listing taken this long after the directory's mtime stays valid while the
# mtime does not move (file systems stamp with a coarse clock: a file created within the
# same tick as the mtime would not move it)
LISTING_SETTLED_NS = 50_000_000
# and is listed again after this long whatever the mtime says (a file server whose clock
# or timestamp granularity differs from ours can leave it unmoved): a new segment is seen
# within this bound in every case
LISTING_MAX_AGE_NS = 1_000_000_000


class JournalBehindDatabase(Bot4Error):
    """The database says frames were loaded that the journal does not have (the journal
    was replaced, truncated, or lost unsynced frames in a power loss)."""

    code = Code.CONFIG_INVALID


class JournalTail:
    """The frames of one journal from a global frame index on, read incrementally.

    Unlike ``JournalReader`` (which reads every segment whole), this keeps the current
    segment open with a byte offset, so each :meth:`read` costs only the frames appended
    since the previous one. :meth:`seek` opens the segment whose name (its first frame) is
    the largest at or before the index and walks frame headers to the index.

    Read-only and safe beside the live writer: a frame still being appended (a header or
    payload cut short by the end of the file, or zeros) ends a read and is tried again by
    the next; ``torn_tail`` then says where the read stopped. Everything else raises, so a
    loader never waits at damage: a damaged frame (a CRC mismatch with a length that fits
    the file: :class:`~bot4.journal.JournalDamagedTail`; followed by an intact frame or a
    later segment: :class:`~bot4.journal.JournalCorrupt`), and a gap — the segment named
    for the next frame missing while a later one exists, a renumbered segment, or one whose
    ``prev_crc`` does not link to the frame before it (:class:`~bot4.journal.JournalGap`).
    """

    def __init__(self, directory: str | os.PathLike, start_frame: int = 0) -> None:
        self.directory = Path(directory)
        self._fd = -1
        self._path: Path | None = None
        self._first = -1  # first frame of the open segment (its name)
        self._offset = 0
        self._next = 0
        self._last_crc = 0  # crc of the frame before _next (0: not known)
        #: ((offset, file size, later segment), TornTail) of the torn frame the tail waits at
        self._bad: tuple | None = None
        self.torn_tail: TornTail | None = None  # where the last read stopped short, if it did
        self._listing: tuple[int, int, list[tuple[int, Path]]] | None = None
        self.seek(start_frame)

    @property
    def next_frame(self) -> int:
        """Global index of the next frame :meth:`read` returns."""
        return self._next

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path, self._first, self._bad = -1, None, -1, None

    def _open(self, first: int, path: Path, previous: Path | None = None) -> bool:
        """Open segment ``path``; False if its header is not complete yet (being created)."""
        fd = os.open(path, os.O_RDONLY)
        head = os.pread(fd, FILE_HEADER_SIZE, 0)
        if len(head) < FILE_HEADER_SIZE:
            os.close(fd)
            return False
        magic, version, size, link, _created, first_in_file = FILE_HEADER.unpack(head)
        if magic != FILE_MAGIC or size != FILE_HEADER_SIZE or version != FILE_VERSION:
            os.close(fd)
            raise JournalCorrupt(path, 0, "bad file header", Code.BAD_MAGIC)
        if first_in_file != first:
            os.close(fd)
            raise JournalCorrupt(path, 0, f"file header says first frame {first_in_file}")
        if previous is not None and link and self._last_crc and link != self._last_crc:
            os.close(fd)
            raise link_gap_error(path, link, self._last_crc, previous)
        self._fd, self._path, self._first, self._offset = fd, path, first, FILE_HEADER_SIZE
        self._bad = None
        return True

    def _segments(self) -> list[tuple[int, Path]]:
        """``list_segments`` of the directory ([] when it is not one), listed again only
        when the directory may have changed: a read at the end of the journal looks for
        the next segment and for a gap each time, and the loader reads there after every
        batch (a listing cost ~10 % of a one-record batch's CPU). A listing is reused while
        the directory's mtime is the one seen before it and was :data:`LISTING_SETTLED_NS`
        older than it (creating or renaming a segment moves the mtime), for at most
        :data:`LISTING_MAX_AGE_NS`."""
        try:
            st = os.stat(self.directory)
        except OSError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            return []
        cached = self._listing
        now = time.monotonic_ns()  # the age; the mtime is compared with the wall clock
        if (
            cached is not None
            and cached[0] == st.st_mtime_ns
            and now - cached[1] < LISTING_MAX_AGE_NS
        ):
            return cached[2]
        listed_wall_ns = time.time_ns()
        segments = list_segments(self.directory)
        if listed_wall_ns - st.st_mtime_ns > LISTING_SETTLED_NS:
            self._listing = (st.st_mtime_ns, now, segments)
        else:
            self._listing = None
        return segments

    def _later_segment(self) -> tuple[int, Path] | None:
        """The first segment after the open one (with none open: at or after the next
        frame), or None."""
        after = self._first if self._fd >= 0 else self._next - 1
        later = [(f, p) for f, p in self._segments() if f > after]
        return later[0] if later else None

    def _check_gap(self) -> None:
        """At the end of the open segment, with no segment named for the next frame: a
        later segment means frames are missing (a writer fills a segment, then creates the
        next one, named for the frame after its last)."""
        later = self._later_segment()
        if later is None or later[0] == self._next:
            return
        if self._fd >= 0 and os.fstat(self._fd).st_size > self._offset:
            return  # the segment grew since we looked (then rotated): not a gap, read on
        raise gap_error(later[1], later[0], self._next, self._path)

    def seek(self, frame: int) -> None:
        """Position before global frame ``frame``. JournalBehindDatabase if the journal has
        fewer frames (it can only have been shortened); JournalGap if frames before it are
        missing from where the walk starts."""
        self._close_fd()
        self._next = frame
        self._last_crc = 0
        self.torn_tail = None
        segments = self._segments()
        below = [(first, path) for first, path in segments if first <= frame]
        if not below:
            if segments:
                raise gap_error(segments[0][1], segments[0][0], frame, None)
            if frame:
                raise JournalBehindDatabase(
                    f"{self.directory}: no journal segments, but frame {frame} is wanted"
                )
            return
        first, path = below[-1]
        if not self._open(first, path):
            if frame != first:
                raise JournalBehindDatabase(f"{path}: empty, frame {frame} wanted")
            return
        for k in range(first, frame):
            hdr = os.pread(self._fd, FRAME_HEADER_SIZE, self._offset)
            if len(hdr) < FRAME_HEADER_SIZE or hdr[:4] != FRAME_MAGIC:
                later = self._later_segment()
                if later is not None:
                    raise gap_error(later[1], later[0], k, path)
                raise JournalBehindDatabase(
                    f"{path}: ends at frame {k}, but the database has loaded up to frame "
                    f"{frame}: the journal was replaced or lost frames"
                )
            _magic, length, *_rest, crc, _res = FRAME_HEADER.unpack(hdr)
            self._offset += FRAME_HEADER_SIZE + length
            self._last_crc = crc

    def _next_segment(self) -> bool:
        """Open the segment that starts at the next frame (the writer rotated), if any."""
        name = segment_name(self._next)
        path = next((p for _f, p in self._segments() if p.name == name), None)
        if path is None or path == self._path:
            return False
        current, old_fd = self._path, self._fd
        if not self._open(self._next, path, current):  # raises before changing anything
            return False
        if old_fd >= 0:
            os.close(old_fd)
        if current is not None:
            log.debug("journal tail: %s -> %s", current.name, path.name)
        return True

    def _waiting_or_corrupt(self, reason: str) -> None:
        """No intact frame at the offset (``reason``): wait if it is an append in progress
        (or a torn tail its writer will truncate), raise if it is damage."""
        assert self._path is not None
        size = os.fstat(self._fd).st_size
        later = self._later_segment()
        state = (self._offset, size, later)
        if self._bad is not None and self._bad[0] == state:
            self.torn_tail = self._bad[1]
            return  # unchanged since we last looked: still the same torn tail
        rest = os.pread(self._fd, size - self._offset, self._offset)
        if read_frame(memoryview(rest), 0)[0] is not None:
            return  # completed since the first look: the next read takes it
        verdict = classify_bad_frame(
            memoryview(rest), 0, self._path, reason, is_last=later is None, base=self._offset
        )
        if not isinstance(verdict, TornTail):
            raise verdict
        self._bad = (state, verdict)
        self.torn_tail = verdict

    def read(
        self, max_records: int, max_frames: int = MAX_READ_FRAMES
    ) -> list[tuple[int, int, np.ndarray]]:
        """The next intact frames, ``(frame_index, record_type, records)``, stopping before
        the frame that would take the record count past ``max_records`` (at least one
        frame is returned when one is ready). ``records`` are read-only views. Damage or a
        gap met after some frames ends the read with them; the next read raises it."""
        out: list[tuple[int, int, np.ndarray]] = []
        self.torn_tail = None
        try:
            self._read_into(out, max_records, max_frames)
        except JournalCorrupt:
            if not out:
                raise  # else: nothing moved past the damage, so the next read meets it again
        return out

    def _read_into(self, out: list, max_records: int, max_frames: int) -> None:
        count = 0
        while len(out) < max_frames:
            if self._fd < 0 and not self._next_segment():
                if self._fd < 0:
                    self._check_gap()
                break
            hdr = os.pread(self._fd, FRAME_HEADER_SIZE, self._offset)
            if not hdr:
                if self._next_segment():
                    continue
                self._check_gap()
                break
            if len(hdr) < FRAME_HEADER_SIZE:
                self._waiting_or_corrupt("incomplete frame header")
                break
            magic, length, rtype, _flags, n, fp, crc, _res = FRAME_HEADER.unpack(hdr)
            if magic != FRAME_MAGIC:
                self._waiting_or_corrupt("bad frame magic")
                break
            if out and count + n > max_records:
                break
            payload = os.pread(self._fd, length, self._offset + FRAME_HEADER_SIZE)
            if len(payload) < length:
                self._waiting_or_corrupt("frame length beyond end of file")
                break
            if frame_crc(hdr, payload) != crc:
                self._waiting_or_corrupt("frame CRC mismatch")
                break
            assert self._path is not None
            check_layout(Frame(self._offset, rtype, n, fp, length), self._path)
            records = np.frombuffer(payload, dtype=dtype_by_record_type(rtype), count=n)
            out.append((self._next, rtype, records))
            self._next += 1
            self._offset += FRAME_HEADER_SIZE + length
            self._last_crc = crc
            self._bad = None
            count += n

    def close(self) -> None:
        self._close_fd()


def journal_created_ns(directory: str | os.PathLike) -> int | None:
    """``created_ns`` of the journal's segment 0 (its identity), or None if it has none."""
    try:
        with open(Path(directory) / segment_name(0), "rb") as f:
            head = f.read(FILE_HEADER_SIZE)
    except OSError:
        return None
    if len(head) < FILE_HEADER_SIZE or head[:8] != FILE_MAGIC:
        return None
    return int(FILE_HEADER.unpack(head)[4])
