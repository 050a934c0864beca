"""The metrics recorder's kernels: NEW orders' latencies per hop, missing stamps never
counted, the order flow by action, exec type and reason, net position per instrument."""

from __future__ import annotations

import numpy as np

from bot4.records import (
    ACTION_CANCEL,
    ACTION_CANCEL_ALL,
    ACTION_NEW,
    DECISION_ACCEPT,
    DECISION_DENY,
    EXEC_CANCELLED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    RECORD_TYPES,
    SIDE_BUY,
    SIDE_SELL,
)
from bot4.shm import histogram as H
from bot4.shm import metrics as M


def _orders() -> np.ndarray:
    o = np.zeros(5, RECORD_TYPES["ORDER"])
    o["action"] = [ACTION_NEW, ACTION_NEW, ACTION_CANCEL, ACTION_CANCEL_ALL, ACTION_NEW]
    o["ts_recv_ns"] = [1_000, 2_000, 0, 0, 0]  # the last NEW: a tick stamp missing
    o["ts_signal_ns"] = [1_500, 2_700, 0, 0, 5_000]
    o["ts_risk_ns"] = [3_000, 4_000, 0, 0, 6_000]
    o["ts_order_ns"] = [10_000, 6_000, 9_000, 9_000, 8_000]
    return o


def test_new_orders_feed_every_hop_and_missing_stamps_are_skipped():
    w = M.private_metrics()
    M.record_orders(w, _orders())
    f = M.flow(w)
    assert f[M.F_ORDERS + ACTION_NEW] == 3
    assert f[M.F_ORDERS + ACTION_CANCEL] == 1 and f[M.F_ORDERS + ACTION_CANCEL_ALL] == 1

    def values(k):
        h = M.hist(w, k)
        return int(h[H.H_COUNT]), int(h[H.H_MIN]), int(h[H.H_MAX])

    assert values(M.HIST_TICK_TO_ORDER) == (2, 4_000, 9_000)  # third NEW has no tick stamp
    assert values(M.HIST_MD_SIGNALS) == (2, 500, 700)
    assert values(M.HIST_SIGNALS_RISK) == (3, 1_000, 1_500)
    assert values(M.HIST_RISK_ORDERS) == (3, 2_000, 7_000)
    assert int(w[M.W_UPDATED_NS]) > 0


def test_exec_reports_and_decisions_count_by_type_reason_and_position():
    w = M.private_metrics()
    e = np.zeros(6, RECORD_TYPES["EXEC_REPORT"])
    e["exec_type"] = [EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_REJECTED, EXEC_CANCELLED, 3]
    e["side"] = [SIDE_BUY, SIDE_BUY, SIDE_SELL, SIDE_BUY, SIDE_BUY, SIDE_BUY]
    e["last_qty"] = [100, 50, 30, 0, 0, 7]
    e["instrument"] = [1, 1, 1, 2, 2, 300]  # 300: beyond the positions kept
    e["reason"] = [0, 0, 0, 42, 0, 0]
    M.record_execs(w, e)
    f = M.flow(w)
    assert f[M.F_FILLS] == 4 and f[M.F_FILLED_QTY] == 187
    assert M.by_slot(f[M.F_REJECTS : M.F_REJECTS + M.N_REASONS]) == {42: 1}
    assert M.positions(w) == {1: 120}
    assert f[M.F_EXECS + EXEC_CANCELLED] == 1
    d = np.zeros(4, RECORD_TYPES["RISK_DECISION"])
    d["decision"] = [DECISION_ACCEPT, DECISION_DENY, DECISION_DENY, DECISION_DENY]
    d["reason"] = [0, 7, 7, 5000]  # a code beyond the table lands in the last slot
    M.record_decisions(w, d)
    assert f[M.F_ACCEPTED] == 1 and f[M.F_DENIED] == 3
    assert M.by_slot(f[M.F_DENIALS : M.F_DENIALS + M.N_REASONS]) == {7: 2, M.N_REASONS - 1: 1}


def test_sell_position_reads_back_negative():
    w = M.private_metrics()
    e = np.zeros(1, RECORD_TYPES["EXEC_REPORT"])
    e["exec_type"], e["side"], e["last_qty"], e["instrument"] = EXEC_FILL, SIDE_SELL, 25, 3
    M.record_execs(w, e)
    assert M.positions(w) == {3: -25}


def test_loader_lag_is_the_journal_frames_not_yet_loaded():
    w = M.private_metrics()
    assert M.loader_lag(w) is None  # no loader (journal only), or position not read yet
    w[M.W_JOURNAL_NEXT_FRAME] = 120
    w[M.W_LOADED_FRAME_PLUS1] = 101  # frames 0..99 loaded
    assert M.loader_lag(w) == {"journal_frames": 120, "loaded_frames": 100, "behind_frames": 20}


def test_risk_panel_round_trips_and_a_copy_being_written_is_never_read():
    words = M.init_metrics(np.zeros(M.TOTAL_WORDS, np.uint64), None, 1, (), risk_writer=3)
    assert M.risk_panel(words) is None  # nothing published yet
    account = np.arange(-5, M.RISK_ACCOUNT_WORDS - 5, dtype=np.int64)
    rows = np.zeros((4, M.RISK_ROW_WORDS), np.int64)
    rows[2] = [1, -300, 100, 0, 1, -12_345, 678, 9, 2_000, 3]
    M.publish_risk(words, 10_000, account, rows)
    got = M.risk_panel(words)
    assert got["price_scale"] == 10_000
    assert list(got["account"].values()) == account.tolist()
    assert got["instruments"] == {2: dict(zip(M.RISK_ROW[1:], rows[2, 1:].tolist(), strict=True))}
    gen = M.RISK_BASE + M.R_GEN
    assert words[gen] % 2 == 0
    words[gen] += 1  # the writer is between its stores
    assert M.risk_panel(words, tries=3) is None
    words[gen] += 1
    assert M.risk_panel(words) == got
    none = M.init_metrics(np.zeros(M.TOTAL_WORDS, np.uint64), None, 1, ())
    M.publish_risk(none, 10_000, account, rows)
    assert M.risk_panel(none) is None  # no stage was named to publish it
