"""Unit tests of bot4.journal: framing round trip, rotation, torn tails, corruption, kill."""

from __future__ import annotations

import hashlib
import json
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

from bot4.cli import main
from bot4.journal import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    JournalCorrupt,
    JournalDamagedTail,
    JournalGap,
    JournalReader,
    JournalWriter,
    TornTail,
    segment_name,
)
from bot4.journal_repair import REPAIR_LOG, RepairRefused, repair
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
def test_flipped_byte_in_last_frame_is_damage_never_truncated(tmp_path: Path, where) -> None:
    """A bit flip anywhere in the last frame (its length fits the file, or its header's
    fields disagree) is not a torn write: the writer refuses, nothing is cut."""
    batches = write_frames(tmp_path)
    path = last_file(tmp_path)
    data = bytearray(path.read_bytes())
    frame_start = len(data) - FRAME_BYTES
    data[(frame_start + where) if where >= 0 else where] ^= 0x40
    path.write_bytes(bytes(data))

    with pytest.raises(JournalDamagedTail) as excinfo:
        JournalWriter(tmp_path)
    err = excinfo.value
    assert (err.path, err.offset, err.bytes, err.kind) == (
        path,
        frame_start,
        FRAME_BYTES,
        "damaged",
    )
    assert "\n" not in str(err) and f"offset {frame_start}" in str(err) and str(path) in str(err)
    assert "bot4 journal repair" in str(err)
    assert path.read_bytes() == bytes(data)  # nothing truncated
    report = JournalReader(tmp_path).verify()
    assert isinstance(report.corruption, JournalDamagedTail) and report.torn_tail is None
    assert report.frames == N_FRAMES - 1
    seen = []
    with pytest.raises(JournalDamagedTail):
        for pos, _, records in JournalReader(tmp_path):
            seen.append(pos)
            assert records.tobytes() == batches[pos].tobytes()
    assert seen == list(range(N_FRAMES - 1))


def zero_payload(directory: Path) -> tuple[Path, int]:
    """Zero the last frame's payload under its intact header (a power loss after the header
    sector reached the disk, before the payload's did); the file and the frame's offset."""
    path = last_file(directory)
    data = bytearray(path.read_bytes())
    frame_start = len(data) - FRAME_BYTES
    data[frame_start + FRAME_HEADER_SIZE :] = bytes(FRAME_BYTES - FRAME_HEADER_SIZE)
    path.write_bytes(bytes(data))
    return path, frame_start


def test_zeroed_payload_under_a_plausible_header_is_refused_until_repaired(
    tmp_path: Path, capsys
) -> None:
    batches = write_frames(tmp_path)
    path, frame_start = zero_payload(tmp_path)
    damaged = path.read_bytes()

    with pytest.raises(JournalDamagedTail) as excinfo:
        JournalWriter(tmp_path)
    assert excinfo.value.kind == "zeroed" and excinfo.value.offset == frame_start
    assert "zeroed payload" in str(excinfo.value)
    assert path.read_bytes() == damaged

    assert main(["journal", "verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bot4: error: ")
    assert f"{path}: zeroed payload" in err and f"offset {frame_start}" in err

    assert main(["journal", "repair", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"cut {FRAME_BYTES} bytes of {path.name} from offset {frame_start}" in out
    assert "zeroed" in out and "repair.log" in out

    (line,) = (tmp_path / REPAIR_LOG).read_text().splitlines()
    rec = json.loads(line)
    assert rec["uid"] == os.getuid() and rec["pid"] == os.getpid()
    assert (rec["file"], rec["offset"], rec["bytes"]) == (path.name, frame_start, FRAME_BYTES)
    assert (rec["frame"], rec["kind"], rec["action"]) == (N_FRAMES - 1, "zeroed", "truncate")
    saved = (tmp_path / rec["saved"]).read_bytes()
    assert saved == damaged[frame_start:]
    assert rec["sha256"] == hashlib.sha256(saved).hexdigest()
    assert oct((tmp_path / REPAIR_LOG).stat().st_mode & 0o777) == oct(0o640)

    assert JournalReader(tmp_path).verify().complete
    with JournalWriter(tmp_path) as writer:  # starts again, appends where the cut was
        assert writer.truncated_bytes == 0
        assert writer.append(batches[-1]) == N_FRAMES - 1
    assert main(["journal", "repair", str(tmp_path)]) == 0  # nothing left to cut
    assert "nothing to repair" in capsys.readouterr().out
    assert len((tmp_path / REPAIR_LOG).read_text().splitlines()) == 1


def test_repair_refuses_while_a_writer_holds_the_journal(tmp_path: Path) -> None:
    write_frames(tmp_path)
    with JournalWriter(tmp_path), pytest.raises(RepairRefused, match="open by a writer"):
        repair(tmp_path)


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


# --- damaged journals: classification, one-line errors, exit codes ---------------------------

PER_SEGMENT = FILE_HEADER_SIZE + 2 * FRAME_BYTES  # max_bytes: two frames per segment


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*.bj4"))


def write_segmented(directory: Path, first_seq: int = 1) -> list[np.ndarray]:
    """N_FRAMES frames, two per segment: journal-0, -2, -4."""
    batches = [make_batch(MARKET_DATA, first_seq + i * BATCH, BATCH) for i in range(N_FRAMES)]
    with JournalWriter(directory, max_bytes=PER_SEGMENT) as writer:
        for batch in batches:
            writer.append(batch)
    assert [p.name for p in segments(directory)] == [segment_name(k) for k in (0, 2, 4)]
    return batches


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def missing_middle_segment(d: Path) -> None:
    (d / segment_name(2)).unlink()


def missing_first_segment(d: Path) -> None:
    (d / segment_name(0)).unlink()


def renumbered_segment(d: Path) -> None:
    (d / segment_name(2)).rename(d / segment_name(3))


def renumbered_last_segment(d: Path) -> None:
    (d / segment_name(4)).rename(d / segment_name(9))


def foreign_segment(d: Path) -> None:
    """Segment 4 of another journal (same frame numbers, other records) in its place."""
    other = d.parent / f"{d.name}-other"
    write_segmented(other, first_seq=1000)
    shutil.copyfile(other / segment_name(4), d / segment_name(4))


def bit_flip_mid_file(d: Path) -> None:
    flip(d / segment_name(2), FILE_HEADER_SIZE + FRAME_HEADER_SIZE + 8)  # frame 2's payload


def bit_flip_last_frame(d: Path) -> None:
    flip(d / segment_name(4), PER_SEGMENT - 9)


def zeroed_tail_payload(d: Path) -> None:
    zero_payload(d)


def truncated_last_frame(d: Path) -> None:
    os.truncate(d / segment_name(4), PER_SEGMENT - 100)


def zero_filled_tail(d: Path) -> None:
    with open(d / segment_name(4), "ab") as f:
        f.write(bytes(4096))


def intact(d: Path) -> None:
    pass


DAMAGES = {  # damage: (what verify classifies it as, a fragment of its line, exit code)
    "missing middle segment": (JournalGap, "frames 2..3 missing", 1),
    "missing first segment": (JournalGap, "frames 0..1 missing", 1),
    "renumbered segment": (JournalGap, "renumbered segment: named for frame 3", 1),
    "renumbered last segment": (JournalGap, "renumbered segment: named for frame 9", 1),
    "foreign segment": (JournalGap, "does not continue journal-0000000000000002.bj4", 1),
    "bit flip mid-file": (JournalCorrupt, "intact frame follows", 1),
    "bit flip in the last frame": (JournalDamagedTail, "CRC does not match", 1),
    "zeroed tail payload": (JournalDamagedTail, "zeroed payload", 1),
    "truncated last frame": (TornTail, "torn tail (frame length beyond end of file)", 3),
    "zero-filled tail": (TornTail, "torn tail (zero-filled tail)", 3),
    "intact": (None, "", 0),
}
DAMAGE_FNS = {
    "missing middle segment": missing_middle_segment,
    "missing first segment": missing_first_segment,
    "renumbered segment": renumbered_segment,
    "renumbered last segment": renumbered_last_segment,
    "foreign segment": foreign_segment,
    "bit flip mid-file": bit_flip_mid_file,
    "bit flip in the last frame": bit_flip_last_frame,
    "zeroed tail payload": zeroed_tail_payload,
    "truncated last frame": truncated_last_frame,
    "zero-filled tail": zero_filled_tail,
    "intact": intact,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_journal_classification_one_line_error_and_exit_code(
    tmp_path: Path, capsys, damage: str
) -> None:
    journal = tmp_path / "j"
    write_segmented(journal)
    DAMAGE_FNS[damage](journal)
    kind, fragment, code = DAMAGES[damage]

    report = JournalReader(journal).verify()
    found = report.torn_tail if kind is TornTail else report.corruption
    if kind is None:
        assert report.complete
    else:
        assert type(found) is kind, (damage, report)
        assert report.complete is False
        assert (report.corruption is None) == (kind is TornTail)

    for action in ("verify", "cat"):
        assert main(["journal", action, str(journal)]) == code, (damage, action)
        err = capsys.readouterr().err
        if code == 0:
            assert err == ""
        else:
            assert err.startswith("bot4: error: ") and err.count("\n") == 1, err
            assert fragment in err, err


def test_a_reader_stops_at_a_gap_after_the_frames_before_it(tmp_path: Path) -> None:
    batches = write_segmented(tmp_path)
    missing_middle_segment(tmp_path)
    seen = []
    with pytest.raises(JournalGap) as excinfo:
        for pos, _, records in JournalReader(tmp_path):
            seen.append(pos)
            assert records.tobytes() == batches[pos].tobytes()
    assert seen == [0, 1]
    assert excinfo.value.code == Code.JOURNAL_GAP
    assert excinfo.value.path == tmp_path / segment_name(4)
    assert str(excinfo.value) == (
        f"{tmp_path / segment_name(4)}: frames 2..3 missing: {segment_name(0)} ends at frame 2, "
        f"{segment_name(2)} not found, the next segment is {segment_name(4)} (a segment "
        "missing or renumbered)"
    )


def test_segment_headers_link_to_the_previous_segments_last_frame(tmp_path: Path) -> None:
    write_segmented(tmp_path)
    first, second, third = (p.read_bytes() for p in segments(tmp_path))
    crc = FILE_HEADER_SIZE + FRAME_BYTES + 24  # the stored crc of a segment's second frame
    assert first[12:16] == bytes(4)  # segment 0 links to nothing
    assert second[12:16] == first[crc : crc + 4]
    assert third[12:16] == second[crc : crc + 4]

    # a journal written before links (prev_crc 0) still reads: the link is only checked when set
    data = bytearray(third)
    data[12:16] = bytes(4)
    (tmp_path / segment_name(4)).write_bytes(bytes(data))
    assert JournalReader(tmp_path).verify().complete


def test_interrupted_rotation_rewrites_the_header_with_its_link(tmp_path: Path, caplog) -> None:
    write_segmented(tmp_path)
    last = tmp_path / segment_name(4)
    link = last.read_bytes()[12:16]
    for short in (b"BOT4J", bytes(FILE_HEADER_SIZE)):  # cut short, zero-filled
        last.write_bytes(short)
        report = JournalReader(tmp_path).verify()
        assert report.ok and report.torn_tail is not None and report.torn_tail.offset == 0
        with JournalWriter(tmp_path, max_bytes=PER_SEGMENT) as writer:
            assert writer.truncated_bytes == len(short)
            assert writer.next_frame == 4
        assert last.read_bytes()[12:16] == link
        assert JournalReader(tmp_path).verify().complete


def test_true_torn_tail_is_still_truncated_and_reported(tmp_path: Path, caplog) -> None:
    write_segmented(tmp_path)
    truncated_last_frame(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot4.journal"):
        writer = JournalWriter(tmp_path, max_bytes=PER_SEGMENT)
    with writer:
        assert writer.torn_tail is not None
        assert writer.torn_tail.reason == "frame length beyond end of file"
        assert writer.truncated_bytes == FRAME_BYTES - 100
        assert writer.next_frame == N_FRAMES - 1
    assert any("torn tail" in r.getMessage() for r in caplog.records)
    assert JournalReader(tmp_path).verify().complete


@pytest.mark.parametrize(
    "damage", ["missing middle segment", "renumbered segment", "bit flip mid-file"]
)
def test_repair_refuses_damage_that_is_not_a_tail(tmp_path: Path, capsys, damage: str) -> None:
    write_segmented(tmp_path)
    DAMAGE_FNS[damage](tmp_path)
    before = {p.name: p.read_bytes() for p in segments(tmp_path)}
    assert main(["journal", "repair", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bot4: error: cannot repair: ") and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in segments(tmp_path)} == before
    assert not (tmp_path / REPAIR_LOG).exists()


@pytest.mark.parametrize("damage", ["bit flip in the last frame", "truncated last frame"])
def test_repair_cuts_a_damaged_or_torn_tail_and_audits_it(tmp_path: Path, capsys, damage) -> None:
    batches = write_segmented(tmp_path)
    DAMAGE_FNS[damage](tmp_path)
    last = tmp_path / segment_name(4)
    cut = last.read_bytes()[FILE_HEADER_SIZE + FRAME_BYTES :]
    assert main(["journal", "repair", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / REPAIR_LOG).read_text())
    assert rec["kind"] == ("damaged" if "flip" in damage else "torn")
    assert rec["frame"] == N_FRAMES - 1 and rec["bytes"] == len(cut)
    assert (tmp_path / rec["saved"]).read_bytes() == cut
    assert last.stat().st_size == FILE_HEADER_SIZE + FRAME_BYTES
    frames = read_all(tmp_path)
    assert [p for p, _, _ in frames] == list(range(N_FRAMES - 1))
    assert all(r.tobytes() == batches[p].tobytes() for p, _, r in frames)


# --- the tail's directory listing (bot4.journal.tail: listed again only when it changed) -----


def test_the_tail_sees_a_new_segment_at_once_when_the_mtime_moves_and_within_a_bound_if_not(
    tmp_path: Path, monkeypatch
) -> None:
    from bot4.journal import tail as tail_mod

    # no age bound until the end: a slow machine must not expire the listing meanwhile
    monkeypatch.setattr(tail_mod, "LISTING_MAX_AGE_NS", 10**15)
    batches = [make_batch(MARKET_DATA, 1 + i * BATCH, BATCH) for i in range(5)]
    writer = JournalWriter(tmp_path, max_bytes=PER_SEGMENT)  # two frames per segment
    try:
        for b in batches[:2]:
            writer.append(b)
        writer.flush()
        settled = time.time() - 10
        os.utime(tmp_path, (settled, settled))  # long settled: the listing is kept
        tail = tail_mod.JournalTail(tmp_path, 0)
        assert [f for f, _rt, _r in tail.read(10_000)] == [0, 1]
        assert tail.read(10_000) == [] and tail._listing is not None  # at the end, kept
        # the writer rotates: journal-2 moves the directory's mtime, read at once
        writer.append(batches[2])
        writer.flush()
        assert [f for f, _rt, _r in tail.read(10_000)] == [2]
        # a file server that leaves the mtime where it was: journal-4 appears ...
        os.utime(tmp_path, (settled, settled))
        assert tail.read(10_000) == [] and tail._listing is not None
        for b in batches[3:]:
            writer.append(b)
        writer.flush()
        assert (tmp_path / segment_name(4)).exists()
        os.utime(tmp_path, (settled, settled))
        # ... frame 3 (journal-2) is read, journal-4 waits for the listing's age bound
        assert [f for f, _rt, _r in tail.read(10_000)] == [3]
        assert tail.read(10_000) == []
        monkeypatch.setattr(tail_mod, "LISTING_MAX_AGE_NS", 0)
        got = tail.read(10_000)
        assert [f for f, _rt, _r in got] == [4]
        assert np.array_equal(got[0][2], batches[4])
    finally:
        writer.close()
