"""Session numbers: durable, monotonic, never handed out twice (even to racing processes)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from bot4.paths import MAX_SESSION, SESSION_SEQ_SHIFT, next_session, session_seq_base


def _take(root, n, q):
    q.put([next_session("race", root) for _ in range(n)])


def test_sessions_count_up_per_data_directory(tmp_path):
    assert [next_session("a", tmp_path) for _ in range(3)] == [1, 2, 3]
    assert next_session("b", tmp_path) == 4  # instances sharing a database never collide
    assert (tmp_path / "session" / "counter").read_text() == "4\n"
    assert (tmp_path / "session" / "log").read_text().split() == [
        "1",
        "a",
        "2",
        "a",
        "3",
        "a",
        "4",
        "b",
    ]


@pytest.mark.timeout(60)
def test_racing_processes_never_share_a_session(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(tmp_path, 50, q)) for _ in range(4)]
    for p in procs:
        p.start()
    got = sorted(x for _ in procs for x in q.get(timeout=50))
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert got == list(range(1, 201))


def test_garbage_and_exhausted_counters_are_named(tmp_path):
    (tmp_path / "session").mkdir()
    (tmp_path / "session" / "counter").write_text("eleven\n")
    with pytest.raises(ValueError, match="session counter is not an integer"):
        next_session("x", tmp_path)
    (tmp_path / "session" / "counter").write_text(f"{MAX_SESSION}\n")
    with pytest.raises(ValueError, match="all 65535 sessions of this data directory are used"):
        next_session("y", tmp_path)


def test_sequence_ranges_of_sessions_do_not_overlap():
    assert session_seq_base(0) == 1
    assert session_seq_base(1) == 1 << SESSION_SEQ_SHIFT
    # a client order id keeps the producer in bits 48..63: every session's seqs fit below
    assert session_seq_base(MAX_SESSION) + (1 << SESSION_SEQ_SHIFT) - 1 < 1 << 48
