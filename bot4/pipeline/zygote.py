"""The stage processes' zygote (``bot4 run``): one process imports what every stage process
imports (numpy, numba and its CPU target, every stage kind) once, then forks the stage
processes from that state.

Why: a spawned stage process spends ~1 CPU-second before it can attach (interpreter,
numpy, numba, the stage kinds ~0.5 s; numba's typing and target registries at the first
cache load ~0.4 s, scipy included: numba's BLAS check imports it), and the default
topology's four processes did it at once on two cores, after the supervisor's own
imports. Forked, each costs only its own kernels' cache loads and its setup.

What stays as with ``spawn`` (the start method of :mod:`bot4.pipeline.processes`, still
used when the zygote is off or gone):

* the child runs :func:`stage_entry` exactly as a spawned stage does (SIGINT ignored,
  ``PR_SET_PDEATHSIG`` — its parent is the zygote, which dies with the supervisor — then
  ``stage_main``), and ends through the interpreter's normal exit
  (``atexit``, logging's flush), with the exit code ``sys.exit`` gave;
* its environment and working directory are the supervisor's at the moment of the start
  (sent with each request), not the zygote's at its own start; SIGTERM is back to the
  default action until the stage loop installs its handler (a stage stopped while
  starting ends there);
* the supervisor sees a process handle with ``pid``, ``exitcode`` and ``join()``: the
  zygote reaps its children and reports each exit code over its pipe, so a stage killed
  and joined is reaped (its pid can no longer be a live ring owner); the supervisor
  signals it through a pidfd the zygote opened at the fork, since a pid the zygote has
  reaped could name another process before the supervisor reads the exit.

The zygote itself ignores SIGINT and SIGTERM (stops are the supervisor's to coordinate:
systemd's stop reaches every process of the unit, and the zygote's death would kill
every stage by ``PR_SET_PDEATHSIG`` before its drain); it ends when the supervisor closes
its pipe or dies (``PR_SET_PDEATHSIG`` again). It is single-threaded when it forks (idle
in ``select``), numba has compiled nothing in it and no kernel has been loaded, so a
child's numba starts from a clean JIT state; its objects are frozen (``gc.freeze``)
before the first fork, so a child's collections do not touch (and copy) the inherited
heap. If it cannot be reached, the supervisor spawns the process as before.

``bot4 stage`` (systemd's units) does not use it. ``BOT4_ZYGOTE=0`` turns it off (see
:func:`enabled`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing as mp
import os
import select
import signal
import sys
import time
from multiprocessing import reduction

from bot4.interrupts import children_block_sigint, ignore_in_child
from bot4.pipeline.corecheck import pin_process

SPAWN = mp.get_context("spawn")
ENV = "BOT4_ZYGOTE"
PRELOAD = ("bot4.stages.entry", "bot4.stages.group", "bot4.stages.hotpath")


def own_session() -> None:
    """Make this stage process the leader of a session of its own (``setsid``).

    Why: Linux's autogroup scheduling (``CONFIG_SCHED_AUTOGROUP``, on when
    ``/proc/sys/kernel/sched_autogroup_enabled`` is 1) schedules each session as one
    entity. With every stage in ``bot4 run``'s session, a stage that sleeps and wakes
    thousands of times a second and one that backs off with ``sched_yield`` made one
    entity that starved the processes of other sessions pinned to the same core: the
    embedded PostgreSQL's backends (each its own session) got under 50 ms of CPU in the
    first 18 s of a first run, so the loader migrated and loaded nothing until the drain
    (kernel 6.18; docs/ARCHITECTURE.md "Sessions", ``perf/sessionstarve.py`` shows it
    without bot4). A session per stage process makes each stage its own entity, as a
    systemd unit per stage already is. Nothing else changes: the terminal's Ctrl-C was
    never the stages' (they ignore SIGINT) and they still die with their parent
    (``PR_SET_PDEATHSIG``). A process that already leads its process group (``setsid``
    refuses it) keeps its session."""
    with contextlib.suppress(OSError):
        os.setsid()


def stage_entry(topology, name: str) -> None:
    """The body of a stage process, spawned or forked: SIGINT ignored from its first
    instruction, never outliving its parent (the supervisor, or the zygote that dies with
    it), then :func:`bot4.stages.entry.stage_main`."""
    # before any import that can take seconds (numba): Ctrl-C is the supervisor's to act
    # on (the process starts with SIGINT blocked: bot4.interrupts)
    ignore_in_child()
    own_session()
    import ctypes

    from bot4.stages.entry import stage_main

    # a stage never outlives its supervisor: no orphan writer on a ring nobody supervises
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit(3)

    sys.exit(stage_main(topology, name))


def enabled() -> bool:
    """On unless ``BOT4_ZYGOTE`` is ``0`` / ``no`` / ``off`` / ``false``. (It was opt-in
    for a day: forked stages in the full suite stopped heartbeating; the cause was the
    tests' stdout pipes, full at 64 KiB and read only at the end, docs/compile.md.)"""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


_early: Zygote | None = None


def start_early() -> None:
    """Start the zygote now, for the supervisor this process is about to run (``bot4 run``
    calls it before its own imports, so both import on their own core); the supervisor
    takes it over (:func:`take`). Closed at exit if nobody did."""
    global _early
    if _early is None and enabled():
        _early = Zygote()


def take() -> Zygote | None:
    """The zygote for a supervisor's run: the one started early, else a new one; None
    when ``BOT4_ZYGOTE=0``."""
    global _early
    z, _early = _early, None
    if z is not None and z.alive:
        return z
    return Zygote() if enabled() else None


class Zygote:
    """The supervisor's side: start the zygote, ask it for stage processes."""

    def __init__(self) -> None:
        self._conn, child = SPAWN.Pipe()  # a socket pair: both ways
        self.proc = SPAWN.Process(target=_zygote_main, args=(child,), name="bot4-zygote")
        with children_block_sigint():  # as for a stage: Ctrl-C is the supervisor's
            self.proc.start()
        child.close()
        self.exits: dict[int, int] = {}
        self.pending: dict[int, int | None] = {}  # pid -> its start (clock ticks after boot)
        # pid -> a pidfd of that very process (opened by the zygote before it could reap
        # it): signals never reach another process that reuses the pid after the zygote
        # reaped it and before the supervisor read its exit
        self.pidfds: dict[int, int] = {}
        self.alive = True
        # before multiprocessing's own exit handler (atexit runs last-registered first),
        # which joins its children: the zygote ends only once its pipe is closed
        atexit.register(self.close)

    def pin(self, cores: set[int]) -> None:
        """Keep the zygote off the hot path's cores (the supervisor's own service cores).
        Started before the supervisor pins itself, it could be scheduled on the hot
        group's core; its forked stages pin themselves to their own cores."""
        with contextlib.suppress(OSError, AttributeError, TypeError):
            pin_process(self.proc.pid, cores)

    def fork(self, topology, unit: str, timeout: float) -> Forked | None:
        """A forked process running ``unit`` (a stage or a group), or None when the zygote
        is gone or did not answer within ``timeout`` seconds (its imports hang: it is
        killed, with anything it forked); the caller then spawns the process."""
        if not self.alive:
            return None
        try:
            self._conn.send((topology, unit, dict(os.environ), os.getcwd()))
            deadline = time.monotonic() + timeout
            while True:
                if not self._conn.poll(max(0.0, min(0.1, deadline - time.monotonic()))):
                    if time.monotonic() < deadline:
                        continue
                    self.proc.kill()
                    raise EOFError
                msg = self._conn.recv()
                if msg[0] == "pid":
                    _, pid, has_fd = msg
                    self.pending[pid] = _start_of(pid)
                    if has_fd:
                        self.pidfds[pid] = reduction.recv_handle(self._conn)
                    return Forked(self, pid)
                self._note(msg)
        except (EOFError, OSError):
            self._gone()
            return None

    def _note(self, msg) -> None:
        _, pid, code = msg
        self.exits[pid] = code
        self.pending.pop(pid, None)
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def send_signal(self, pid: int, sig: int) -> None:
        """``sig`` to forked process ``pid`` while it has not been reported exited
        (``ProcessLookupError`` once it is gone)."""
        self.poll()
        if pid in self.exits:
            raise ProcessLookupError(pid)
        fd = self.pidfds.get(pid)
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)

    def poll(self, timeout: float = 0.0) -> None:
        """Take in the exit codes the zygote reported (waiting up to ``timeout`` for one)."""
        if not self.alive:
            return
        try:
            while self._conn.poll(timeout):
                self._note(self._conn.recv())
                timeout = 0.0
        except (EOFError, OSError):
            self._gone()

    def _gone(self) -> None:
        """The zygote died: its children die with it (``PR_SET_PDEATHSIG``); make sure,
        and wait until each is gone, so none can still write when it counts as exited."""
        self.alive = False
        deadline = time.monotonic() + 10.0
        for pid, start in list(self.pending.items()):
            # the same process (its pidfd, else pid and start time): a pid the zygote
            # reaped unreported may name another process by now
            if start is not None and _start_of(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    fd = self.pidfds.get(pid)
                    if fd is None:
                        os.kill(pid, signal.SIGKILL)
                    else:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                while _start_of(pid) == start and time.monotonic() < deadline:
                    time.sleep(0.005)
            self._note(("exit", pid, -signal.SIGKILL))

    def close(self) -> None:
        """End the zygote and reap it (after the supervisor reaped every stage; a zygote
        still importing, as after a ``bot4 run`` that failed early, is not waited for)."""
        atexit.unregister(self.close)
        self.alive = False
        with contextlib.suppress(OSError):
            self._conn.close()  # EOF: the zygote leaves
        if self.pending:
            self.proc.join(10)  # its children die with it: not before they were reaped
        if self.proc.exitcode is None:
            self.proc.kill()
        self.proc.join()
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()


def _start_of(pid: int) -> int | None:
    """The start (clock ticks after boot) of live process ``pid``; None when there is no
    such process or it is a zombie (it cannot run any more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


class Forked:
    """A stage process the zygote forked: what the supervisor uses of a ``Process``."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._z = zygote
        self.pid = pid

    @property
    def exitcode(self) -> int | None:
        if self.pid not in self._z.exits:
            self._z.poll()
        return self._z.exits.get(self.pid)

    def is_alive(self) -> bool:
        return self.exitcode is None

    def send_signal(self, sig: int) -> None:
        """``sig`` to this very process (its pidfd), never to a later owner of its pid;
        ``ProcessLookupError`` once it exited."""
        self._z.send_signal(self.pid, sig)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exitcode is None:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return
            self._z.poll(left)


def _zygote_main(conn) -> None:
    import ctypes

    ignore_in_child()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the supervisor
    if os.getppid() == 1:
        sys.exit(3)
    for name in PRELOAD:
        # a module that fails to import here fails again in the stage, which says why
        with contextlib.suppress(Exception):
            __import__(name)
    with contextlib.suppress(Exception):
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()  # the typing and lowering registries
    gc.collect()
    gc.freeze()
    try:
        job = _serve(conn)
    except Exception:
        os._exit(1)  # quietly: the supervisor sees the pipe close and spawns the stages
    if job is None:
        return  # the supervisor closed the pipe
    stage_entry(*job)  # the forked child: a stage process from here on


def _after_fork(unit: str) -> None:
    """What multiprocessing's own fork start does in a child: drop the parent's
    finalizers, run the after-fork hooks; and the process name a spawned stage has."""
    from multiprocessing import util

    with contextlib.suppress(AttributeError):
        util._finalizer_registry.clear()
        util._run_after_forkers()
    mp.current_process().name = f"bot4-{unit}"


def _serve(conn):
    """Fork a child per request, report each child's exit; returns ``(topology, unit)``
    in a child, None in the zygote when the supervisor is gone."""
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(sig_w)
    try:
        while True:
            ready, _, _ = select.select([conn, sig_r], [], [])
            if sig_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(sig_r, 4096)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn.send(("exit", pid, os.waitstatus_to_exitcode(status)))
            if conn in ready:
                try:
                    topology, unit, env, cwd = conn.recv()
                except EOFError:
                    return None
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.close(sig_r)
                    os.close(sig_w)
                    conn.close()
                    os.environ.clear()
                    os.environ.update(env)
                    os.chdir(cwd)
                    _after_fork(unit)
                    return topology, unit
                try:  # before this loop can reap it: the pidfd is of this child
                    fd = os.pidfd_open(pid)
                except (AttributeError, OSError):
                    fd = None
                conn.send(("pid", pid, fd is not None))
                if fd is not None:
                    reduction.send_handle(conn, fd, 0)
                    os.close(fd)
    except (BrokenPipeError, ConnectionResetError):
        return None  # the supervisor is gone: the children die with this process
