"""The restarted risk stage's fills (``bot4.stages.risk.applied_fills``): exactly those the
previous process had released from its ``fills`` ring, whatever persistence's lag, each
once (issue 15: the hot group's SIGKILL left risk's rebuilt position one fill off)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from bot4.journal import JournalWriter
from bot4.oms.recovery import session_range
from bot4.records import EXEC_ACK, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REPORT
from bot4.shm import Consumer, Producer, segment_name
from bot4.shm.ring import create_ring
from bot4.shm.segment import Segment
from bot4.stages.risk import applied_fills
from tests.seeds import seeded_rng

SESSION = 3


@pytest.fixture
def rings():
    inst = f"r{uuid.uuid4().hex[:10]}"
    names = [segment_name(inst, n) for n in ("fills", "exec_events")]
    for n in names:
        create_ring(n, EXEC_REPORT, 64)
    sides = []
    try:
        fp, fc = Producer(names[0], EXEC_REPORT, 64), Consumer(names[0], EXEC_REPORT, 64)
        ep, ec = Producer(names[1], EXEC_REPORT, 64), Consumer(names[1], EXEC_REPORT, 64)
        sides = [fp, fc, ep, ec]
        yield inst, fp, fc, ep, ec
    finally:
        for s in sides:
            s.close()
        for n in names:
            Segment.unlink(n)


def _reports(n: int, rng) -> np.ndarray:
    lo, _hi = session_range(SESSION)
    r = np.zeros(n, EXEC_REPORT)
    r["seq"] = lo + np.arange(n) * 2  # the OMS's seqs: increasing, not dense
    r["exec_type"] = rng.choice([EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_ACK], n)
    r["last_qty"] = np.where(r["exec_type"] == EXEC_ACK, 0, 100)
    r["instrument"] = 1
    r["side"] = 1
    r["exec_id"] = np.arange(1, n + 1)
    return r


def _push(p: Producer, recs: np.ndarray) -> None:
    for r in recs:
        assert p.try_push(r)


def _pop(c: Consumer, n: int) -> None:
    for _ in range(n):
        assert c.try_pop() is not None


def test_fills_released_by_risk_each_once_whatever_persistence_journalled(rings, tmp_path):
    """Seeded: the OMS emitted ``n`` reports to both rings; risk released ``k`` of them,
    persistence journalled ``j`` (one frame of them twice, as after a persistence
    restart). The rebuild is the fills among the first ``k``, in order, each once."""
    inst, fp, fc, ep, ec = rings
    rng, _seed = seeded_rng("risk recovery fills")
    for trial in range(20):
        n = int(rng.integers(1, 40))
        recs = _reports(n, rng)
        lo, _ = session_range(SESSION)
        recs["seq"] += trial * 1000  # fresh seqs per trial, same session
        k, j = int(rng.integers(0, n + 1)), int(rng.integers(0, n + 1))
        _push(fp, recs)
        _push(ep, recs)
        _pop(fc, k)
        journal = tmp_path / f"j{trial}"
        w = JournalWriter(journal, fsync="none")
        cut = int(rng.integers(0, j + 1))
        for frame in (recs[:cut], recs[cut:j], recs[cut:j]):  # the last again: a restart
            if len(frame):
                w.append(frame)
        w.close()
        _pop(ec, j)
        got = applied_fills(inst, "fills", "exec_events", journal, SESSION)
        want = recs[:k]
        want = want[want["exec_type"] != EXEC_ACK]
        assert got is not None
        assert got["seq"].tolist() == want["seq"].tolist(), (trial, n, k, j)
        _pop(fc, n - k)  # both rings empty for the next trial
        _pop(ec, n - j)


def test_a_first_start_finds_nothing(rings, tmp_path):
    inst, *_ = rings
    assert applied_fills(inst, "fills", "exec_events", tmp_path / "none", SESSION) is None
