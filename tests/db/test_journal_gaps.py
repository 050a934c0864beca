"""Loads over damaged journals fail loudly: a gap (a segment missing, renumbered or foreign)
or a damaged tail stops the load at the damage with a one-line error and a non-zero exit,
nothing past it is loaded, and neither ``bot4 db load`` nor a following loader waits there;
a torn tail is loaded up to and reported (exit 3); the persistence stage refuses a damaged
journal at start and its loader thread raises an alarm instead of waiting at a gap."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from bot4.db import cli
from bot4.journal import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    JournalDamagedTail,
    JournalGap,
    JournalTail,
    JournalWriter,
    segment_name,
)
from bot4.pipeline.topology import StageSpec
from bot4.records import MARKET_DATA, RT_ORDER, Code, record_type_of
from bot4.stages.persistence import PersistenceStage
from tests.db.conftest import flow_frames, load_counts, make_flow, scalar

pytestmark = pytest.mark.timeout(120)

SEGMENT_BYTES = 8 << 10  # small segments: a flow of 200 intents spans a dozen or more


def write_segmented(journal: Path, n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """A flow journaled the way persistence does it, across many segments; the frames."""
    frames = flow_frames(make_flow(n, seed=seed), 8)
    with JournalWriter(journal, fsync="none", max_bytes=SEGMENT_BYTES) as w:
        for f in frames:
            w.append(f)
    return frames


def segment_firsts(journal: Path) -> list[int]:
    return sorted(int(p.name[8:24]) for p in journal.glob("journal-*.bj4"))


def orders_before(frames: list[np.ndarray], end: int) -> int:
    return sum(len(f) for f in frames[:end] if record_type_of(f.dtype) == RT_ORDER)


def drain(tail: JournalTail) -> list[int]:
    got = []
    while frames := tail.read(max_records=500):
        got += [i for i, _, _ in frames]
    return got


# --- the tail reader (no database) ----------------------------------------------------------


def test_tail_raises_at_a_missing_middle_segment_instead_of_waiting(tmp_path):
    write_segmented(tmp_path)
    firsts = segment_firsts(tmp_path)
    gone = firsts[3]
    (tmp_path / segment_name(gone)).unlink()
    tail = JournalTail(tmp_path, 0)
    got = []
    with pytest.raises(JournalGap) as excinfo:
        for _ in range(10_000):  # a waiting tail would return [] forever
            got += [i for i, _, _ in tail.read(max_records=500)]
    assert got == list(range(gone))
    err = excinfo.value
    assert err.code == Code.JOURNAL_GAP and err.path == tmp_path / segment_name(firsts[4])
    assert f"frames {gone}..{firsts[4] - 1} missing" in str(err) and "\n" not in str(err)
    with pytest.raises(JournalGap):  # seeking into the missing frames names the gap too
        JournalTail(tmp_path, gone + 1)
    tail.close()


def test_tail_raises_at_a_renumbered_segment(tmp_path):
    write_segmented(tmp_path)
    firsts = segment_firsts(tmp_path)
    (tmp_path / segment_name(firsts[2])).rename(tmp_path / segment_name(firsts[2] + 1))
    tail = JournalTail(tmp_path, 0)
    with pytest.raises(JournalGap, match=f"renumbered segment: named for frame {firsts[2] + 1}"):
        drain(tail)
    assert tail.next_frame == firsts[2]
    tail.close()


def test_tail_raises_at_a_segment_of_another_journal(tmp_path):
    for name, fill in (("a", 1), ("b", 2)):  # same frame sizes, other records
        with JournalWriter(tmp_path / name, fsync="none", max_bytes=SEGMENT_BYTES) as w:
            for k in range(100):
                w.append(np.full(1 + k % 5, fill, MARKET_DATA))
    firsts = segment_firsts(tmp_path / "a")
    assert firsts == segment_firsts(tmp_path / "b")
    name = segment_name(firsts[2])
    shutil.copyfile(tmp_path / "b" / name, tmp_path / "a" / name)
    tail = JournalTail(tmp_path / "a", 0)
    with pytest.raises(JournalGap, match=f"does not continue {segment_name(firsts[1])}"):
        drain(tail)
    tail.close()


@pytest.mark.parametrize("damage", ["bit flip", "zeroed payload"])
def test_tail_raises_at_a_damaged_last_frame(tmp_path, damage):
    with JournalWriter(tmp_path, fsync="none") as w:
        for k in range(3):
            w.append(np.full(4, k, MARKET_DATA))
    path = tmp_path / segment_name(0)
    data = bytearray(path.read_bytes())
    last = len(data) - FRAME_HEADER_SIZE - 4 * MARKET_DATA.itemsize
    if damage == "bit flip":
        data[last + FRAME_HEADER_SIZE + 5] ^= 0x10
    else:
        data[last + FRAME_HEADER_SIZE :] = bytes(len(data) - last - FRAME_HEADER_SIZE)
    path.write_bytes(bytes(data))
    tail = JournalTail(tmp_path, 0)
    assert [i for i, _, _ in tail.read(100)] == [0, 1]
    with pytest.raises(JournalDamagedTail) as excinfo:
        tail.read(100)
    assert excinfo.value.offset == last
    assert excinfo.value.kind == ("zeroed" if damage == "zeroed payload" else "damaged")
    tail.close()


def test_tail_waits_at_a_torn_tail_and_says_where(tmp_path):
    with JournalWriter(tmp_path, fsync="none") as w:
        w.append(np.zeros(3, MARKET_DATA))
    path = tmp_path / segment_name(0)
    size = path.stat().st_size
    frame = path.read_bytes()[FILE_HEADER_SIZE:]
    with open(path, "ab") as f:  # the frame again, cut 8 bytes into its payload
        f.write(frame[: FRAME_HEADER_SIZE + 8])
    tail = JournalTail(tmp_path, 0)
    assert len(tail.read(100)) == 1
    assert tail.read(100) == [] and tail.read(100) == []  # waits, no error
    assert tail.torn_tail is not None and tail.torn_tail.offset == size
    assert tail.torn_tail.reason == "frame length beyond end of file"
    tail.close()


def test_tail_beside_a_writer_rotating_fast_never_sees_a_gap(tmp_path):
    """Rotation race: the tail at the end of a segment while the writer appends its last
    frame and creates the next segment must read on, not report frames missing."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    n = 3000
    sizes = rng.integers(1, 6, n)
    done = threading.Event()

    def write() -> None:
        with JournalWriter(tmp_path, fsync="none", max_bytes=2048) as w:
            for k in range(n):
                w.append(np.full(int(sizes[k]), k, MARKET_DATA))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    tail = JournalTail(tmp_path, 0)
    got: list[int] = []
    idle_after_done = 0
    while len(got) < n:
        frames = tail.read(max_records=50)  # a JournalGap here fails the test
        got += [i for i, _, _ in frames]
        if not frames and done.is_set():
            idle_after_done += 1
            assert idle_after_done < 100, f"tail stopped at frame {tail.next_frame} of {n}"
    writer.join(timeout=60)
    assert got == list(range(n))
    assert len(segment_firsts(tmp_path)) > 20
    tail.close()


# --- bot4 db load ---------------------------------------------------------------------------


def load_args(journal: Path, ev: str, lg: str, *extra: str) -> list[str]:
    return ["load", str(journal), "--dsn", ev, "--ledger-dsn", lg, "--journal-id", "gap", *extra]


@pytest.mark.parametrize("follow", [False, True])
def test_load_over_a_missing_segment_exits_1_and_loads_nothing_past_it(
    tmp_path, dbs, capsys, follow
):
    ev, lg = dbs
    frames = write_segmented(tmp_path / "j")
    firsts = segment_firsts(tmp_path / "j")
    gone = firsts[len(firsts) // 2]
    moved = tmp_path / "kept.bj4"
    shutil.move(tmp_path / "j" / segment_name(gone), moved)

    extra = ("--follow", "--interval", "0.05") if follow else ()
    assert cli.main(load_args(tmp_path / "j", ev, lg, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("bot4: error: loaded up to the damage, nothing after it: ")
    assert f"frames {gone}..{firsts[firsts.index(gone) + 1] - 1} missing" in err
    assert err.count("\n") == 1
    position = scalar(ev, "SELECT next_frame FROM load_positions WHERE journal_id = 'gap'")
    assert position == gone
    assert load_counts(ev)["orders"] == orders_before(frames, gone)
    assert scalar(ev, "SELECT max(src_frame) FROM orders") < gone

    shutil.move(moved, tmp_path / "j" / segment_name(gone))  # restored: the load completes
    assert cli.main(load_args(tmp_path / "j", ev, lg)) == 0
    assert scalar(ev, "SELECT next_frame FROM load_positions WHERE journal_id = 'gap'") == len(
        frames
    )
    assert load_counts(ev)["orders"] == orders_before(frames, len(frames))


def test_load_over_a_renumbered_segment_exits_1(tmp_path, dbs, capsys):
    ev, lg = dbs
    frames = write_segmented(tmp_path)
    firsts = segment_firsts(tmp_path)
    (tmp_path / segment_name(firsts[-1])).rename(tmp_path / segment_name(firsts[-1] + 7))
    assert cli.main(load_args(tmp_path, ev, lg)) == 1
    assert "renumbered segment" in capsys.readouterr().err
    assert load_counts(ev)["orders"] == orders_before(frames, firsts[-1])


def test_load_over_a_torn_tail_loads_every_intact_frame_and_exits_3(tmp_path, dbs, capsys):
    ev, lg = dbs
    frames = write_segmented(tmp_path)
    last = tmp_path / segment_name(segment_firsts(tmp_path)[-1])
    os.truncate(last, last.stat().st_size - 7)
    assert cli.main(load_args(tmp_path, ev, lg)) == 3
    err = capsys.readouterr().err
    assert err.startswith("bot4: error: ") and "torn tail" in err and err.count("\n") == 1
    assert load_counts(ev)["orders"] == orders_before(frames, len(frames) - 1)


# --- the persistence stage ------------------------------------------------------------------


def persistence(journal: Path, **params) -> PersistenceStage:
    spec = StageSpec(
        name="persistence", kind="persistence", core=0, index=0, params={"dir": str(journal),
        **params},
    )  # fmt: skip
    return PersistenceStage(spec, [], [], instance=f"gap{os.getpid()}")


def test_persistence_refuses_to_start_on_a_zeroed_tail_payload(tmp_path, caplog):
    with JournalWriter(tmp_path) as w:
        w.append(np.ones(3, MARKET_DATA))
        w.append(np.ones(2, MARKET_DATA))
    path = tmp_path / segment_name(0)
    data = bytearray(path.read_bytes())
    offset = len(data) - FRAME_HEADER_SIZE - 2 * MARKET_DATA.itemsize
    data[offset + FRAME_HEADER_SIZE :] = bytes(2 * MARKET_DATA.itemsize)
    path.write_bytes(bytes(data))
    stage = persistence(tmp_path, database=False)
    with caplog.at_level(logging.ERROR, logger="bot4.stage"), pytest.raises(SystemExit) as exc:
        stage.setup()
    assert exc.value.code == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{path}: zeroed payload" in line and f"offset {offset}" in line
    assert "\n" not in line and "bot4 journal repair" in line
    assert path.read_bytes() == bytes(data)  # refused, not truncated


def test_persistence_loader_thread_raises_an_alarm_at_a_gap(tmp_path, dbs, caplog):
    ev, lg = dbs
    write_segmented(tmp_path)
    firsts = segment_firsts(tmp_path)
    (tmp_path / segment_name(firsts[1])).unlink()
    stage = persistence(tmp_path, dsn=ev, ledger_dsn=lg)
    with caplog.at_level(logging.ERROR, logger="bot4.stage"):
        stage.setup()
        stage._loader_thread.join(timeout=60)  # ends by itself: it does not wait at the gap
    assert not stage._loader_thread.is_alive()
    assert stage.alarms.count == 1
    assert stage.loader_error is not None and "JournalGap" in stage.loader_error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"code {int(Code.JOURNAL_GAP)}" in m and "missing" in m for m in errors)
    assert scalar(ev, "SELECT next_frame FROM load_positions") == firsts[1]
    assert scalar(ev, "SELECT count(*) FROM orders WHERE src_frame >= %s", (firsts[1],)) == 0
    assert scalar(ev, "SELECT count(*) FROM orders") > 0
    stage.on_drain()
    assert stage.summary()["database"]["error"] == stage.loader_error
