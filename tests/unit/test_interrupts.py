"""bot4.interrupts: a Ctrl-C before the supervisor's handler is counted while
modules import and raised once they are in; a process started meanwhile starts with
SIGINT blocked, and one arriving during its start reaches this process's handler."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest

from bot4 import interrupts


@pytest.fixture
def restore_sigint():
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def test_deferred_sigint_is_counted_then_raised_once_armed(restore_sigint):
    before = interrupts.defer()
    assert before is not None
    os.kill(os.getpid(), signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a syscall: the handler has run by now
    assert interrupts.pending() == 1  # counted, nothing raised
    with pytest.raises(KeyboardInterrupt):
        interrupts.arm()
    with pytest.raises(KeyboardInterrupt):  # later ones raise as usual, and count
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert interrupts.pending() == 2
    interrupts.restore(before)
    assert signal.getsignal(signal.SIGINT) is before


def test_restore_leaves_a_handler_someone_set_since(restore_sigint):
    before = interrupts.defer()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's end-of-run choice
    interrupts.restore(before)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_sigint_during_a_child_start_reaches_the_handler_not_lost(restore_sigint):
    seen = []
    signal.signal(signal.SIGINT, lambda *_: seen.append(1))
    with interrupts.children_block_sigint():
        # the disposition stays this process's handler: an earlier SIG_IGN here dropped a
        # SIGINT that another thread (numpy's OpenBLAS worker) took meanwhile
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert seen == [1]


def _report_mask(q) -> None:
    # the spawn bootstrap ran before this: the mask is the one the process started with
    q.put(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_child_started_inside_starts_with_sigint_blocked():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with interrupts.children_block_sigint():
        p = ctx.Process(target=_report_mask, args=(q,))
        p.start()
    try:
        assert q.get(timeout=60) is True
    finally:
        p.join(60)
    assert p.exitcode == 0
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # ours restored
