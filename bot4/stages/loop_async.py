"""A gateway stage's process: the stage loop's duty cycle driven from an asyncio loop on
uvloop, so the network side (sockets, timers) and the ring side share one thread.

The gateway's :class:`~bot4.stages.loop.StageRunner` is the same as every stage's
(attach, exact cursor recovery, heartbeat, counters, drain); only the dedicated-mode loop
is replaced by :func:`_drive`:

* **busy** (the last cycle did work): ``await asyncio.sleep(0)`` between cycles, one loop
  iteration with a zero-timeout poll of the sockets, so network callbacks run between two
  ring batches: a busy ring delays a datagram by at most one batch's processing;
* **idle**: the coroutine waits on a :class:`Waker` with a 1 ms timeout (the heartbeat and
  control-block reads). It is woken by (a) the stage's own network callbacks (a datagram,
  a TCP segment: ``stage.wake()``), in the same loop iteration, and (b) for a stage with a
  ring input, a watcher thread parked on that ring (``ring_ops.wait_peek``, a futex wait,
  GIL released) that calls ``loop.call_soon_threadsafe`` when a record is published — a
  futex wake plus an eventfd write, tens of microseconds, instead of a 1 ms poll.

So the ring-to-wire latency of an idle gateway is bounded by one futex wake plus one
eventfd wake, and the wire-to-ring latency by the loop's dispatch of one callback batch
plus one cycle; nothing ever blocks the event loop (ring outputs that are full leave the
records in the gateway's own buffers, see each stage).

A gateway cannot be a member of a ``[[group]]`` (``bot4.stages.entry`` refuses to start such
a group): its process belongs to its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from bot4.shm import ring_ops as ops
from bot4.shm.segment import ShmError
from bot4.stages.loop import StageRunner
from bot4.stages.process import apply_process_settings

log = logging.getLogger("bot4.stage")

IDLE_WAIT_S = 0.001  # longest idle wait: heartbeat, control block, timers


class Waker:
    """Wakes the idle duty cycle from the loop's own callbacks (``wake``) or from another
    thread (``wake_threadsafe``). ``waiting`` is read by the ring watcher thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future | None = None
        self.waiting = threading.Event()

    def wake(self) -> None:
        f = self.fut
        if f is not None and not f.done():
            f.set_result(None)

    def wake_threadsafe(self) -> None:
        self.loop.call_soon_threadsafe(self.wake)

    async def wait(self, timeout: float) -> None:
        self.fut = self.loop.create_future()
        h = self.loop.call_later(timeout, self.wake)
        self.waiting.set()
        try:
            await self.fut
        finally:
            self.waiting.clear()
            h.cancel()
            self.fut = None


def _watch_ring(hdr, waker: Waker, stop: threading.Event) -> None:
    """Park on the input ring while the duty cycle is idle; wake it on a new record."""
    while not stop.is_set():
        if not waker.waiting.wait(0.05):
            continue
        _pos, count = ops.wait_peek(hdr, 1, 1_000_000)
        if count and waker.waiting.is_set():
            waker.waiting.clear()
            waker.wake_threadsafe()


async def _drive(runner: StageRunner) -> int:
    loop = asyncio.get_running_loop()
    stage = runner.stage
    runner.start()
    waker = Waker(loop)
    stage.bind(runner, waker)
    await stage.open()
    runner.notifier.send("READY=1", f"STATUS=gateway {runner.spec.name} on uvloop")
    stop = threading.Event()
    watcher = None
    if runner.ins:
        watcher = threading.Thread(
            target=_watch_ring, args=(runner.ins[0].hdr, waker, stop), daemon=True
        )
        watcher.start()
    try:
        while True:
            n = runner.cycle()
            if n < 0:
                break
            if n:
                await asyncio.sleep(0)
                continue
            await waker.wait(IDLE_WAIT_S)
        runner.notifier.send("STOPPING=1")
        runner.finish()
        return 0
    except BaseException:
        runner.fail()
        raise
    finally:
        stop.set()
        waker.waiting.set()
        if watcher is not None:
            watcher.join(2.0)
        await stage.shut()
        runner.close()


def gateway_main(topology, name: str) -> int:
    """Process body of a gateway stage (``bot4 stage NAME`` or the supervisor)."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = StageRunner(topology, name)
    signal.signal(signal.SIGTERM, lambda *_: setattr(runner, "local_stop", True))
    for w in apply_process_settings(runner.spec):
        log.warning(w)
    try:
        return uvloop.run(_drive(runner))
    except ShmError as exc:
        log.error("%s: %s", name, exc)
        return 4
    except OSError as exc:  # a port taken, a peer unreachable: one line, the supervisor retries
        log.error("%s: network: %s", name, exc)
        return 5
