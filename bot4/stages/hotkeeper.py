"""The compiled group's housekeeping thread (Aeron's conductor beside its agents).

While the group's main thread runs :func:`~bot4.stages.hotloop.hot_cycle` (compiled,
``nogil``), the work that only *reads* the members' state runs here, on a core other than
the group's: each member's own counters into its control-block slot (``bot4 stats``), the
ring-position sanity check, ring-full episode logs, risk's read-only reporting
(``Stage.observe``: stale-data episodes, breaker and trading-state transitions, the risk
panel) and systemd's watchdog ping. The main thread then returns to the interpreter only
when something needs a member's Python (``R_PENDING``, ``R_STATE``, ``R_BAIL``) or at the
cycle's long deadline (``hotloop.HOUSEKEEP_NS``): a cold Python round there took 2-3 ms,
and a tick arriving meanwhile waited for it.

Ownership: the members' Python objects belong to whichever thread holds :attr:`lock`.
The main thread holds it whenever it is not inside the compiled cycle (``HotPath.run``
releases it for the call); the keeper works only when it gets the lock without waiting,
so it never runs beside the members' Python round, and the main thread, back from the
cycle, waits at most for one keeper pass. The compiled cycle writes the kernels' arrays
meanwhile: what the keeper reads there (counters, positions for the panel) may be one
batch old, never torn beyond a word.

Signals: Python runs signal handlers only in the main thread, between bytecodes, and the
main thread may stay in compiled code for ``HOUSEKEEP_NS``. The C-level handler, though,
writes the signal's number to the wakeup fd (``signal.set_wakeup_fd``) at once, whichever
thread the kernel picked: the keeper sleeps on that pipe, and on SIGTERM sets the group's
stop flag and pokes the cycle (``timers[T_POKE]``), which returns at its next round; the
Python handler runs then too. A keeper failure (e.g. a damaged ring position) pokes the
cycle as well and is raised in the main thread (:meth:`Keeper.check`).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time

from bot4.shm import control as C

log = logging.getLogger("bot4.stage")
KEEP_NS = 250_000_000  # a keeper pass this often: bot4 stats' counters are this fresh
#: systemd's watchdog is pinged only while every member's heartbeat (written by the
#: compiled cycle every hotloop.BEAT_NS) is younger than this: a wedged cycle stops it
FRESH_NS = 2_000_000_000


def keeper_cores(topology, group_core: int) -> set[int] | None:
    """Where the keeper runs: the machine's cores no stage or group is pinned to, else
    every core but the group's, else None (a one-core machine: it stays on the group's).
    The group's own affinity (one core) is no guide: a thread inherits it."""
    machine = set(range(os.cpu_count() or 1))
    return (machine - topology.pinned_cores()) or (machine - {group_core}) or None


class Keeper:
    """The housekeeping thread of one compiled group. ``members``: the group's
    ``StageRunner`` s; ``notifier``: the group's sd_notify; ``poke``: a one-element
    view the compiled cycle polls (non-zero: return ``R_PENDING``); ``on_term``: called
    in the keeper thread on SIGTERM (sets the group's stop flag)."""

    def __init__(self, members, notifier, poke, on_term, cores: set[int] | None) -> None:
        self.members = members
        self.notifier = notifier
        self.poke = poke
        self.on_term = on_term
        self.cores = cores
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bot4-keeper", daemon=True)
        self.passes = 0

    def start(self) -> None:
        """Take the lock for the main thread, route signal numbers to the keeper's pipe
        (main thread only: ``set_wakeup_fd``; SIGTERM must have a Python handler, as
        ``bot4.stages.entry`` installs), start the thread."""
        self.lock.acquire()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (the main thread holds the lock), restore the wakeup fd."""
        self._stop.set()
        self._thread.join(timeout=4 * KEEP_NS / 1e9)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._rfd)
        os.close(self._wfd)
        if self.lock.locked():
            self.lock.release()

    def _signalled(self, timeout_s: float) -> bool:
        """Sleep until a signal arrives or ``timeout_s``; whether one was SIGTERM."""
        ready, _, _ = select.select([self._rfd], [], [], timeout_s)
        if not ready:
            return False
        try:
            got = os.read(self._rfd, 64)
        except BlockingIOError:
            return False
        return signal.SIGTERM in got

    def check(self) -> None:
        """Raise, in the main thread, what failed in the keeper."""
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def _main(self) -> None:
        if self.cores:
            try:
                os.sched_setaffinity(0, self.cores)  # this thread only
            except OSError as exc:
                log.warning("group keeper: cannot move to cores %s: %s", sorted(self.cores), exc)
        while not self._stop.is_set():
            if self._signalled(KEEP_NS / 1e9):
                self.on_term()
                self.poke[0] = 1
            if self._stop.is_set() or not self.lock.acquire(blocking=False):
                continue  # the members' Python round runs: it keeps house itself
            try:
                self._pass(time.monotonic_ns())
            except BaseException as exc:  # handed to the main thread
                self.error = exc
                self.poke[0] = 1
                return
            finally:
                self.lock.release()

    def _pass(self, now: int) -> None:
        """What ``StageRunner._housekeep`` (its ``report``) and the stages' ``pending``
        (``observe``) do that only reads; the cycle writes heartbeats, ring beats and
        record totals itself."""
        fresh = True
        for m in self.members:
            m.report(now)
            m.stage.observe(now)
            fresh = fresh and now - int(m.blk[C.S_HEARTBEAT_NS]) < FRESH_NS
        if fresh:
            self.notifier.watchdog(now)
        self.passes += 1
