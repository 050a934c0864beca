"""Unit tests of bot4.journal: framing round trip, rotation, torn tails, corruption, kill."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bot4.journal import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    JournalCorrupt,
    JournalReader,
    JournalWriter,
    segment_name,
)
from bot4.records import (
    BOOK_TOP,
    EXEC_REPORT,
    MARKET_DATA,
    ORDER,
    RT_MARKET_DATA,
    Bot4Error,
    Code,
    record_type_of,
)

N_FRAMES = 6
BATCH = 5


def make_batch(dtype: np.dtype, first_seq: int, n: int) -> np.ndarray:
    """``n`` records with seq first_seq.. and a seq-derived int64 field, so contents check."""
    records = np.zeros(n, dtype=dtype)
    records["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    records["parent_seq"] = records["seq"] * 7 + 3
    return records


def write_frames(directory: Path, n: int = N_FRAMES, **kwargs) -> list[np.ndarray]:
    batches = [make_batch(MARKET_DATA, 1 + i * BATCH, BATCH) for i in range(n)]
    with JournalWriter(directory, **kwargs) as writer:
        for batch in batches:
            writer.append(batch)
    return batches


def read_all(directory: Path) -> list[tuple[int, int, np.ndarray]]:
    return list(JournalReader(directory))


def last_file(directory: Path) -> Path:
    return sorted(directory.glob("journal-*.bj4"))[-1]


FRAME_BYTES = FRAME_HEADER_SIZE + BATCH * MARKET_DATA.itemsize


def test_round_trip_of_several_record_types_across_rotation(tmp_path: Path) -> None:
    written = []
    seq = 1
    with JournalWriter(tmp_path, fsync="batch", max_bytes=4096) as writer:
        for i in range(40):
            dtype = (MARKET_DATA, BOOK_TOP, ORDER, EXEC_REPORT)[i % 4]
            batch = make_batch(dtype, seq, 1 + i % 7)
            seq += len(batch)
            assert writer.append(batch) == i
            written.append(batch)
            if i % 10 == 9:
                writer.flush()
        assert writer.next_frame == 40
    files = sorted(tmp_path.glob("journal-*.bj4"))
    assert len(files) > 2
    assert files[0].name == segment_name(0)
    assert all(f.stat().st_size <= 4096 for f in files)

    frames = read_all(tmp_path)
    assert [pos for pos, _, _ in frames] == list(range(40))
    for (_, rtype, records), batch in zip(frames, written, strict=True):
        assert rtype == record_type_of(batch.dtype)
        assert records.dtype == batch.dtype
        assert records.tobytes() == batch.tobytes()

    report = JournalReader(tmp_path).verify()
    assert report.ok and report.torn_tail is None
    assert report.files == len(files)
    assert report.frames == 40
    assert report.records["MARKET_DATA"] == sum(len(b) for b in written[0::4])
    assert report.records["EXEC_REPORT"] == sum(len(b) for b in written[3::4])
    assert report.bytes == sum(f.stat().st_size for f in files)

    with JournalWriter(tmp_path) as writer:  # reopen continues the global frame index
        assert writer.truncated_bytes == 0
        assert writer.append(make_batch(ORDER, seq, 2)) == 40
    assert len(read_all(tmp_path)) == 41


def test_second_writer_on_same_directory_is_refused(tmp_path: Path) -> None:
    with JournalWriter(tmp_path), pytest.raises(Bot4Error, match="another writer"):
        JournalWriter(tmp_path)


def assert_torn_tail_recovered(directory: Path, expected_dropped: int, caplog, batches) -> None:
    path = last_file(directory)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot4.journal"):
        writer = JournalWriter(directory)
    try:
        assert writer.truncated_bytes == expected_dropped
        assert writer.torn_tail is not None and writer.torn_tail.path == path
        assert any("torn tail" in r.getMessage() for r in caplog.records)
        assert path.stat().st_size == FILE_HEADER_SIZE + (N_FRAMES - 1) * FRAME_BYTES
        frames = read_all(directory)
        assert [pos for pos, _, _ in frames] == list(range(N_FRAMES - 1))
        for (_, rtype, records), batch in zip(frames, batches[:-1], strict=True):
            assert rtype == RT_MARKET_DATA
            assert records.tobytes() == batch.tobytes()
        assert writer.append(batches[-1]) == N_FRAMES - 1  # the journal is appendable again
    finally:
        writer.close()
    assert JournalReader(directory).verify().frames == N_FRAMES


def test_torn_tail_at_sampled_offsets_is_truncated_to_last_full_frame(
    tmp_path: Path, caplog
) -> None:
    pristine = tmp_path / "pristine"
    batches = write_frames(pristine)
    size = last_file(pristine).stat().st_size
    frame_start = size - FRAME_BYTES
    cuts = sorted(
        {frame_start + 1, frame_start + FRAME_HEADER_SIZE - 1, frame_start + FRAME_HEADER_SIZE}
        | {int(c) for c in np.linspace(frame_start + 1, size - 1, 17)}
    )
    assert len(cuts) >= 18
    for cut in cuts:
        work = tmp_path / f"cut-{cut}"
        shutil.copytree(pristine, work)
        os.truncate(last_file(work), cut)
        report = JournalReader(work).verify()
        assert report.ok and report.torn_tail is not None
        assert report.torn_tail.offset == frame_start
        assert len(read_all(work)) == N_FRAMES - 1  # a reader stops quietly at a torn tail
        assert_torn_tail_recovered(work, cut - frame_start, caplog, batches)


def test_zero_filled_tail_is_torn(tmp_path: Path, caplog) -> None:
    batches = write_frames(tmp_path)
    path = last_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-FRAME_BYTES:] = bytes(FRAME_BYTES)  # size extended, data never written
    path.write_bytes(bytes(data))
    assert_torn_tail_recovered(tmp_path, FRAME_BYTES, caplog, batches)


@pytest.mark.parametrize("where", [0, 5, 9, 13, 17, 25, 28, FRAME_HEADER_SIZE + 40, -1])
def test_flipped_byte_in_last_frame_is_treated_as_torn(tmp_path: Path, caplog, where) -> None:
    batches = write_frames(tmp_path)
    path = last_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[(len(data) - FRAME_BYTES + where) if where >= 0 else where] ^= 0x40
    path.write_bytes(bytes(data))
    assert_torn_tail_recovered(tmp_path, FRAME_BYTES, caplog, batches)


@pytest.mark.parametrize("where", [0, 4, 24, FRAME_HEADER_SIZE + 8])
def test_flipped_byte_in_earlier_frame_is_corruption(tmp_path: Path, where) -> None:
    write_frames(tmp_path)
    path = last_file(tmp_path)
    bad_offset = FILE_HEADER_SIZE + 2 * FRAME_BYTES  # third frame of the file
    data = bytearray(path.read_bytes())
    data[bad_offset + where] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(JournalCorrupt) as excinfo:
        JournalWriter(tmp_path)
    err = excinfo.value
    assert err.code == Code.JOURNAL_CRC
    assert err.path == path and err.offset == bad_offset
    assert str(path) in str(err) and f"offset {bad_offset}" in str(err)
    assert path.stat().st_size == len(data)  # nothing truncated

    seen = []
    with pytest.raises(JournalCorrupt):
        for pos, _, _ in JournalReader(tmp_path):
            seen.append(pos)
    assert seen == [0, 1]  # every intact frame before the damage is still readable
    report = JournalReader(tmp_path).verify()
    assert not report.ok and report.corruption.offset == bad_offset
    assert report.frames == 2 and report.torn_tail is None


def test_torn_tail_in_a_file_that_is_not_the_last_is_corruption(tmp_path: Path) -> None:
    write_frames(tmp_path, max_bytes=FILE_HEADER_SIZE + 2 * FRAME_BYTES)
    first = sorted(tmp_path.glob("journal-*.bj4"))[0]
    os.truncate(first, first.stat().st_size - 10)
    report = JournalReader(tmp_path).verify()
    assert not report.ok and report.corruption.path == first


KILLED_WRITER = """
import sys
import numpy as np
from bot4.journal import JournalWriter
from bot4.records import MARKET_DATA
writer = JournalWriter(sys.argv[1], fsync="none", max_bytes=64 * 1024)
seq = 1
for i in range(10**9):
    n = 1 + i % 13
    batch = np.zeros(n, dtype=MARKET_DATA)
    batch["seq"] = np.arange(seq, seq + n, dtype=np.uint64)
    batch["parent_seq"] = batch["seq"] * 7 + 3
    batch["price"] = batch["seq"].astype(np.int64) * 11
    writer.append(batch)
    seq += n
"""


@pytest.mark.timeout(60)
def test_killed_writer_leaves_a_prefix_of_complete_frames(tmp_path: Path, caplog) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("journal-*.bj4"))) < 3:
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    frames = read_all(tmp_path)
    assert len(frames) > 0
    assert [pos for pos, _, _ in frames] == list(range(len(frames)))
    records = np.concatenate([r for _, _, r in frames])
    n = len(records)
    expected = np.arange(1, n + 1, dtype=np.uint64)
    assert np.array_equal(records["seq"], expected)
    assert np.array_equal(records["parent_seq"], expected * 7 + 3)
    assert np.array_equal(records["price"], expected.astype(np.int64) * 11)
    assert [len(r) for _, _, r in frames] == [1 + i % 13 for i in range(len(frames))]
    assert JournalReader(tmp_path).verify().ok

    with JournalWriter(tmp_path) as writer:  # recovery after the kill, then appendable
        assert writer.next_frame == len(frames)
        writer.append(make_batch(MARKET_DATA, n + 1, 3))
    assert len(read_all(tmp_path)) == len(frames) + 1
