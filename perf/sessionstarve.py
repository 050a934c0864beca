"""Why each stage process has a session of its own (``bot4.pipeline.zygote.own_session``).

    .venv/bin/python perf/sessionstarve.py [--seconds 5] [--core 0] [--work-us 1000]

On one core: a process that loops "spin 5 us, sleep 50 us" (a paced source such as md) and
one that loops on ``sched_yield`` (a stage backing off on an empty ring, such as the venue),
and a server in a session of its own (as every PostgreSQL backend is: they call
``setsid``) that answers each request from this script (off that core) after
``--work-us`` of CPU. Two rounds in one run: the two stage-like processes in one session
(every stage of ``bot4 run`` until 7 December 2026), then each in a session of its own (since).
Prints the requests answered and the server's CPU and run-queue wait.

With autogroup scheduling on (``/proc/sys/kernel/sched_autogroup_enabled`` = 1) the
kernel schedules each session as one entity; on 6.18 (this machine) the first round
starves the server (104-134 requests in 5 s, 0.08-0.10 s of CPU, 4.9 s waiting to run)
and the second does not (3445-3585 requests, 2.1-2.2 s of CPU): 26-32x. Neither process
alone, nor two yielders, nor two sleepers starve it. Not a test: what it shows is the
kernel scheduler's.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time


def _stage_like(kind: str, core: int, own_session: bool) -> None:
    if own_session:
        os.setsid()
    os.sched_setaffinity(0, {core})
    while True:
        if kind == "yield":
            os.sched_yield()
            continue
        end = time.perf_counter() + 5e-6
        while time.perf_counter() < end:
            pass
        time.sleep(50e-6)


def _server(sock: socket.socket, core: int, work_s: float) -> None:
    os.setsid()
    os.sched_setaffinity(0, {core})
    while sock.recv(1):
        end = time.perf_counter() + work_s
        while time.perf_counter() < end:
            pass
        sock.send(b"r")


def _fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        finally:
            os._exit(0)
    return pid


def _schedstat(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/schedstat") as f:
        run_ns, wait_ns, _ = f.read().split()
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def round_(args, own_sessions: bool) -> tuple[int, float, float]:
    """(requests answered, server CPU s, server run-queue wait s) over ``args.seconds``."""
    ours, theirs = socket.socketpair()
    pids = [_fork(_stage_like, kind, args.core, own_sessions) for kind in ("sleep", "yield")]
    server = _fork(_server, theirs, args.core, args.work_us / 1e6)
    theirs.close()
    try:
        time.sleep(0.5)  # every process up before measuring
        cpu0, wait0 = _schedstat(server)
        n, end = 0, time.monotonic() + args.seconds
        while time.monotonic() < end:
            ours.send(b"q")
            ours.recv(1)
            n += 1
        cpu1, wait1 = _schedstat(server)
    finally:
        ours.close()
        for pid in (*pids, server):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return n, cpu1 - cpu0, wait1 - wait0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--core", type=int, default=0, help="the shared core (default 0)")
    ap.add_argument("--work-us", type=float, default=1000.0, help="server CPU per request")
    args = ap.parse_args()
    others = sorted(os.sched_getaffinity(0) - {args.core})
    if others:
        os.sched_setaffinity(0, others)  # the client is not on the shared core
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            autogroup = f.read().strip()
    except OSError:
        autogroup = "absent"
    print(f"kernel {os.uname().release}, sched_autogroup_enabled {autogroup}, core "
          f"{args.core}, {args.seconds:g} s per round")  # fmt: skip
    for label, own in (("stages in one session", False), ("a session each", True)):
        n, cpu, wait = round_(args, own)
        print(f"  {label:22s} {n:6d} requests; server CPU {cpu:6.3f} s, "
              f"waiting to run {wait:6.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
