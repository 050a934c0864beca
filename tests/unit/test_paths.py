"""Session numbers: durable, monotonic, never handed out twice (even to racing processes)."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from bot4.paths import MAX_SESSION, SESSION_SEQ_SHIFT, next_session, session_seq_base


def _take(root, n, q):
    q.put([next_session("race", root) for _ in range(n)])


def test_sessions_count_up_per_instance(tmp_path):
    assert [next_session("a", tmp_path) for _ in range(3)] == [1, 2, 3]
    assert next_session("b", tmp_path) == 1
    assert (tmp_path / "session" / "a").read_text() == "3\n"


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
    (tmp_path / "session" / "x").write_text("eleven\n")
    with pytest.raises(ValueError, match="session counter is not an integer"):
        next_session("x", tmp_path)
    (tmp_path / "session" / "y").write_text(f"{MAX_SESSION}\n")
    with pytest.raises(ValueError, match="used all"):
        next_session("y", tmp_path)


def test_sequence_ranges_of_sessions_do_not_overlap():
    assert session_seq_base(0) == 1
    assert session_seq_base(1) == 1 << SESSION_SEQ_SHIFT
    # a client order id keeps the producer in bits 48..63: every session's seqs fit below
    assert session_seq_base(MAX_SESSION) + (1 << SESSION_SEQ_SHIFT) - 1 < 1 << 48
