"""Ctrl-C in the ``bot4`` process before a supervisor takes SIGINT over: counted, and raised
as ``KeyboardInterrupt`` only where that is safe.

Why: Python's default handler raises ``KeyboardInterrupt`` at whatever bytecode runs next,
and three places lost a Ctrl-C sent to ``bot4 run`` in its first second (seen in CI and in
a seeded loop of interrupts at random moments, docs/ARCHITECTURE.md "Ctrl-C"):

* raised inside a weakref callback (importlib's module-lock cleanup), it is printed as
  "Exception ignored" and dropped: the pipeline then started and ran for ever;
* raised inside a C extension's module init (numba's ``_dispatcher``), it became an
  ``ImportError`` traceback and exit 1;
* raised inside code the interpreter ran through ``PyRun_String``, it was caught and the
  run said "interrupted", yet the interpreter marked it unhandled and killed itself with
  SIGINT at exit (status -2).

So, from the first line of bot4's own code that runs (:func:`defer`: in ``bot4.__main__``
for the ``bot4`` script and ``python -m bot4``, at the top of ``bot4.cli`` for
``python -m bot4.cli``), a SIGINT is only counted while the
command's modules import; :func:`arm` then raises it once, synchronously, and after that a
SIGINT raises as usual (long phases such as a cold compile or the database's start stay
interruptible) but is counted too, so a raise that something swallowed is still seen:
the supervisor checks :func:`pending` when it installs its own handler and stops instead
of starting the stages.

Stage processes never see the terminal's Ctrl-C: they start with SIGINT *blocked*
(:func:`children_block_sigint`) and set it ignored as their first instruction. The parent
only blocks it, in its own thread, for the start: setting it ignored there, as an earlier
version did, dropped a SIGINT that arrived meanwhile (the kernel hands a process-directed
signal to any thread not blocking it, numpy's OpenBLAS worker here, where ``SIG_IGN``
discards it).
"""

from __future__ import annotations

import contextlib
import signal
import threading

_count = 0
_armed = False


def _handler(signum, frame) -> None:
    global _count
    _count += 1
    if _armed:
        raise KeyboardInterrupt


def defer():
    """Count SIGINT from now on, without raising (the main thread only; a no-op elsewhere).
    Returns the handler it replaced, for :func:`restore`."""
    global _armed, _count
    if threading.current_thread() is not threading.main_thread():
        return None
    _armed, _count = False, 0
    return signal.signal(signal.SIGINT, _handler)


def restore(before) -> None:
    """Put back the handler :func:`defer` replaced, unless someone set another since (the
    supervisor ignores stops at the end of a command that ends with its run)."""
    if before is not None and signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, before)


def arm() -> None:
    """Raise ``KeyboardInterrupt`` now if a SIGINT came while deferred, and for every later
    one (still counted)."""
    global _armed
    if signal.getsignal(signal.SIGINT) is not _handler:
        return
    _armed = True
    if _count:
        raise KeyboardInterrupt


def pending() -> int:
    """How many SIGINTs :func:`defer`'s handler saw (0 when it was never installed)."""
    return _count


@contextlib.contextmanager
def children_block_sigint():
    """Start processes with SIGINT blocked (a signal mask survives fork and exec; the child
    sets SIGINT ignored as its first instruction and unblocks it, which discards one that
    came meanwhile). The disposition here is left alone, so a SIGINT arriving during the
    start reaches this process's handler: at once through another thread, or when the
    mask is restored."""
    from multiprocessing import resource_tracker

    # a spawn start launches multiprocessing's resource tracker when it is not running,
    # and UNBLOCKS SIGINT after that launch (its own mask dance): the process started next
    # would then see the Ctrl-C while importing. Launched here, before the mask is set.
    with contextlib.suppress(Exception):
        resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_in_child() -> None:
    """A child's first instruction: SIGINT ignored, then unblocked (what arrived while it
    was blocked is discarded with it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
