"""The stage loop: attach, recover cursors, then batch after batch until drained.

Per batch (one input ring, or the source's generator):

1. peek up to ``batch`` input records (contiguous slots);
2. claim room on every output (``max_out_per_in`` per input); an output that is muted
   (its outputs for these inputs were already published before a restart) gets scratch;
3. call the stage's kernel;
4. write the cursor buffer not written last time (``bot4.shm.control``): the input
   position reached, each output's position after this commit, the next sequence number,
   and its generation last;
5. commit the outputs (release stores), then release the input.

A process killed anywhere in 1–5 is recovered exactly: see ``recover``. Every 64 batches
and whenever idle the loop beats its heartbeat, updates its counters, talks to systemd
and reads the pipeline state from the control block.

Shutdown (pipeline state ``draining``, or SIGTERM to this process alone): a source stops
producing; a stage with inputs keeps going until every non-feedback input's producer
has stopped and the input is empty. It then runs ``on_drain`` (the stage's shutdown
policy) and keeps cycling (state DRAINING) while the policy's records are pending or the
stage awaits their answers on a feedback input (``Stage.awaiting_replies``: the OMS's
CANCEL_ALL and the venue's CANCELLED reports, journalled before it stops), at most
``DRAIN_REPLY_S``; then it marks itself stopped and exits 0.

This module is the dedicated mode (one stage, one process: Aeron's dedicated agent). The
shared mode, several stages in one process, is ``bot4.stages.group``; the process body
that picks one (signals, process settings, exit codes) is ``bot4.stages.entry``; process
settings and the garbage collector's freeze are ``bot4.stages.process``.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from bot4.paths import session_seq_base
from bot4.records import RECORD_TYPES
from bot4.records.errors import Code
from bot4.shm import Consumer, Producer, segment_name
from bot4.shm import control as C
from bot4.shm import ring_ops as ops
from bot4.shm.multipark import MultiPark
from bot4.shm.owners import self_start
from bot4.shm.ring_layout import (
    W_CONSUMER_POSITION,
    W_PRODUCER_POSITION,
    WAIT_BUSY_SPIN,
    WAIT_SPIN_YIELD,
)
from bot4.shm.segment import ShmError
from bot4.stages.loop_drain import Shutdown
from bot4.stages.notify import Notifier
from bot4.stages.prefault import prefault
from bot4.stages.process import quiet_gc
from bot4.stages.publish import publish_stamped
from bot4.stages.ring_full import RingFullLog
from bot4.stages.testing import hang_requested, hook_restarts, stall_requested

log = logging.getLogger("bot4.stage")
_M64 = (1 << 64) - 1
HOUSEKEEP_EVERY = 64
IDLE_WAIT_NS = 1_000_000
IDLE_HOUSEKEEP_NS = 200_000  # an idle stage beats and reads the control block this often
WRAP = "wrap"  # a claim whose records sit in scratch until they are copied across the wrap


def _behind(a: int, b: int) -> bool:
    """Position ``a`` is strictly before ``b`` (wrapping u64 comparison)."""
    return 0 < ((b - a) & _M64) < (1 << 63)


class StageRunner(Shutdown):
    def __init__(self, topology, name: str) -> None:
        from bot4.stages import KINDS

        self.topology = topology
        self.spec = topology.stage(name)
        self.in_specs = topology.inputs_of(name)
        self.out_specs = topology.outputs_of(name)
        self.stage = KINDS[self.spec.kind](
            self.spec, self.in_specs, self.out_specs, topology.instance, topology
        )
        self.upstream = [topology.stage(r.producer).index for r in self.in_specs if not r.feedback]
        self.notifier = Notifier()
        self.local_stop = False
        self._multipark = None
        self._full_log = None  # ring-full episodes of the outputs, once attached

    # -- attach ---------------------------------------------------------------------------
    def attach(self) -> None:
        inst = self.topology.instance
        self.cb = C.ControlBlock(inst)
        self.blk = self.cb.stage(self.spec.index)
        self.stage.session = int(self.cb.words[C.W_SESSION])
        self.blk[C.S_PID_SEEN_START] = self_start()  # owner (pid, start): bot4.shm.owners
        self.blk[C.S_PID_SEEN] = os.getpid()
        self.blk[C.S_STATE] = C.STAGE_STARTING
        C.write_counter_names(self.blk, self.stage.counter_names)
        restarts = hook_restarts(self.blk)  # 0 at once unless a test hook is set
        self.test_stall = stall_requested(self.spec.name, restarts)
        while hang_requested(self.spec.name, restarts):
            time.sleep(1)  # test hook: a restart stuck while starting
        self.ins = [
            Consumer(segment_name(inst, r.name), RECORD_TYPES[r.type], r.capacity)
            for r in self.in_specs
        ]
        self.outs = [
            Producer(segment_name(inst, r.name), RECORD_TYPES[r.type], r.capacity)
            for r in self.out_specs
        ]
        b = self.spec.batch
        self.cap_out = b * self.stage.max_out_per_in
        self.scratch = [np.zeros(self.cap_out, RECORD_TYPES[r.type]) for r in self.out_specs]
        self.counts = np.zeros(max(1, len(self.outs)), np.int64)
        self.bufs = [
            self.blk[C.S_CURSOR_A : C.S_CURSOR_A + C.CURSOR_WORDS],
            self.blk[C.S_CURSOR_B : C.S_CURSOR_B + C.CURSOR_WORDS],
        ]
        self.stage.setup()
        # a source whose outputs all carry MARKET_DATA and that asks for it publishes its
        # batches in one compiled call that stamps ts_recv_ns last (bot4.stages.publish)
        self._stamped = (
            self.stage.source
            and getattr(self.stage, "stamp_on_publish", False)
            and bool(self.out_specs)
            and all(r.type == "MARKET_DATA" for r in self.out_specs)
        )
        self._hdrs = tuple(p.hdr for p in self.outs)
        self._claims = np.zeros(max(1, len(self.outs)), np.uint64)
        self._full_log = RingFullLog(
            self.spec.name,
            [(r.name, p.hdr) for r, p in zip(self.out_specs, self.outs, strict=True)],
        )
        self._prime()
        # the stage's tables written once now, not a page at a time under the first
        # records that reach them (bot4.stages.prefault)
        prefault((self.stage.hot_tables(), self.scratch))

    def _prime(self) -> None:
        """Load every kernel this stage will call (numba's cache loads lazily, tens of ms
        each) before reporting running, so the first records do not pay for it."""
        for c in self.ins:
            ops.consumer_peek(c.hdr, 0)
            ops.wait_peek(c.hdr, 0, 0)
            ops.consumer_release(c.hdr, 0)
        for p in self.outs:
            ops.producer_claim(p.hdr, 0)
            ops.producer_room(p.hdr, 0)
            ops.wait_claim(p.hdr, 0, 0)
            ops.producer_commit(p.hdr, 0)
            ops.count_rejection(p.hdr, 0)
        counts = self.counts.copy()
        views = [s[:0] for s in self.scratch]
        if self._stamped:
            scratch_buf = np.zeros(C.CURSOR_WORDS, np.uint64)
            views_out = tuple(p.slots[:0] for p in self.outs)
            publish_stamped(scratch_buf, np.uint64(0), self._hdrs, views_out, self._claims,
                            counts, 0, 0)  # fmt: skip
        if self.stage.source:
            self.stage.generate(0, 0, views, counts, 1)
        else:
            for i, c in enumerate(self.ins):
                self.stage.process(i, c.slots[:0], views, counts, 1)

    # -- recovery -------------------------------------------------------------------------
    def recover(self) -> None:
        """Work out where to resume and which outputs to mute for how long.

        For output j the effective cursor buffer is the highest-generation one whose
        ``valid_at[j]`` the ring's producer position has reached (its batch's outputs on j
        were committed). Inputs below that buffer's cursor are already reflected on j.
        """
        gens = [int(b[C.C_GEN]) for b in self.bufs]
        self.gen = max(gens)
        self.next_buf = 0 if gens[0] <= gens[1] else 1
        n_in = max(1, len(self.ins))
        eff = []
        for j, out in enumerate(self.outs):
            pos = out.producer_position
            best = None
            for b in self.bufs:
                g = int(b[C.C_GEN])
                if (
                    g
                    and not _behind(pos, int(b[C.C_VALID_AT + j]))
                    and (best is None or g > int(best[C.C_GEN]))
                ):
                    best = b
            eff.append(best)
        if not self.outs:
            top = max(self.bufs, key=lambda b: int(b[C.C_GEN]))
            eff_all = [top] if int(top[C.C_GEN]) else []
        else:
            eff_all = [b for b in eff if b is not None]
        # fresh in this session: number from the session's range (unique across sessions)
        self.next_seq = max(
            [int(b[C.C_NEXT_SEQ]) for b in eff_all] + [session_seq_base(self.stage.session)]
        )
        # where each input resumes: inputs from the released consumer position; the source
        # from the least advanced output (the others are muted until they catch up)
        if self.stage.source:
            if self.outs:
                self.cur = [min(int(b[C.C_CURSOR]) if b is not None else 0 for b in eff)]
            else:
                self.cur = [int(eff_all[0][C.C_CURSOR]) if eff_all else 0]
        else:
            self.cur = [c.consumer_position for c in self.ins]
        # mute_until[j][i]: output j already holds the outputs of input i below this position
        self.mute_until = []
        for j in range(len(self.outs)):
            b = eff[j]
            row = []
            for i in range(n_in):
                m = int(b[C.C_CURSOR + i]) if b is not None else self.cur[i]
                if self.stage.source and b is None:
                    m = 0
                row.append(m if _behind(self.cur[i], m) else None)
            self.mute_until.append(row)
        self.muted_records = 0
        if any(x is not None for row in self.mute_until for x in row):
            log.warning(
                "stage %s: resuming with outputs muted until %s (already published before restart)",
                self.spec.name,
                self.mute_until,
            )

    # -- one batch ------------------------------------------------------------------------
    def _step(self, i: int) -> int:
        if self.test_stall:
            return 0  # test hook (bot4.stages.testing.stall_requested): alive, no progress
        stage = self.stage
        b = self.spec.batch
        pos = self.cur[i]
        if stage.source:
            if stage.source_done(pos):
                return -1
            if int(self.cb.words[C.W_PIPE_STATE]) == C.PIPE_STARTING:
                return 0  # sources hold until every stage is running
            k = min(b, stage.source_ready(pos, stage.clock()))
            if k <= 0:
                return 0
            in_view = None
        else:
            if not stage.input_ready(i, stage.clock()):
                return 0  # the stage holds this input (e.g. reconciling after a restart)
            inp = self.ins[i]
            p, k = ops.consumer_peek(inp.hdr, b)
            k = int(k)
            if k == 0:
                return 0
            pos = int(p)
            ix = pos & inp.mask
            in_view = inp.slots[ix : ix + k]
        # mutes bound the batch so a batch is either muted or live on each output
        muted = []
        for j in range(len(self.outs)):
            m = self.mute_until[j][i]
            if m is not None:
                if _behind(pos, m):
                    k = min(k, (m - pos) & _M64)
                    muted.append(True)
                    continue
                self.mute_until[j][i] = None
            muted.append(False)
        # room on every live output
        mo = stage.max_out_per_in
        views = []
        claims = []
        for j, out in enumerate(self.outs):
            if muted[j]:
                views.append(self.scratch[j])
                claims.append(None)
                continue
            got = self._claim_output(j, out, k, mo, views, claims)
            if got < 0:
                return 0  # blocked by backpressure; housekeeping runs, then we retry
            k = min(k, got)
        if not stage.source:
            in_view = in_view[:k]
        counts = self.counts
        counts[:] = 0
        if stage.source:
            k, seq = stage.generate(pos, k, views, counts, self.next_seq)
            if k == 0:
                return 0
        else:
            seq = stage.process(i, in_view, views, counts, self.next_seq)
        self.cur[i] = (pos + k) & _M64
        if self._stamped and all(type(c) is int and c != -1 for c in claims):
            self._publish_stamped(views, claims, counts, seq)
        else:
            self._publish(claims, counts, seq)
        if not stage.source:
            ops.consumer_release(self.ins[i].hdr, k)
        self.next_seq = seq
        self.records_in += k
        return k

    def _claim_output(self, j: int, out, k: int, mo: int, views: list, claims: list) -> int:
        """Room on output ``j`` for the outputs of up to ``k`` inputs (``mo`` each).

        Appends the view the kernel writes to and the claim ``_publish`` commits; returns
        how many inputs fit (>= 1), or -1 when a ``block`` ring stays full past the idle
        wait. Near the wrap point fewer than ``mo`` contiguous slots may remain although
        the ring has room: the kernel then writes to scratch and ``_publish`` copies the
        records across the wrap (claim ``("wrap", n_inputs)``); a contiguous claim would
        never grow there and the stage would stall for good (issue 11).
        """
        want = k * mo
        cpos, got = ops.producer_claim(out.hdr, want)
        got = int(got)
        if got >= mo:
            ix = int(cpos) & out.mask
            views.append(out.slots[ix : ix + got])
            claims.append(int(cpos))
            return got // mo
        room = int(ops.producer_room(out.hdr, want)[1])
        if room < mo and not out.reject:
            ops.wait_claim(out.hdr, want, IDLE_WAIT_NS)
            room = int(ops.producer_room(out.hdr, want)[1])
            if room < mo:
                return -1
        views.append(self.scratch[j][: max(room, mo * k)])
        if room < mo:  # full reject-ring: this batch's outputs are counted as rejected
            claims.append(-1)
            return k
        claims.append(WRAP)
        return room // mo

    def _publish(self, claims: list, counts: np.ndarray, seq: int) -> int:
        """Write the cursor buffer (generation last), then commit the outputs.

        The buffer becomes effective for output j only once j's producer position reaches
        ``valid_at[j]``, i.e. once this commit has happened. ``claims[j]``: the claimed
        position, None for a muted output, -1 for a full reject-ring (counted), ``WRAP``
        for outputs written to scratch that are copied across the wrap here."""
        buf = self.bufs[self.next_buf]
        for ii, c in enumerate(self.cur):
            buf[C.C_CURSOR + ii] = c
        for j, out in enumerate(self.outs):
            n = int(counts[j]) if claims[j] is not None and claims[j] != -1 else 0
            buf[C.C_VALID_AT + j] = (out.producer_position + n) & _M64
        buf[C.C_NEXT_SEQ] = seq
        self.gen += 1
        buf[C.C_GEN] = self.gen
        self.next_buf ^= 1
        out_n = 0
        for j, out in enumerate(self.outs):
            n = int(counts[j])
            if claims[j] is None:
                self.muted_records += n
            elif claims[j] == -1:
                if n:
                    ops.count_rejection(out.hdr, n)
            elif n:
                if claims[j] is WRAP:
                    out.write_wrapped(self.scratch[j][:n])
                ops.producer_commit(out.hdr, n)
                out_n += n
        self.records_out += out_n
        return out_n

    def _publish_stamped(self, views: list, claims: list, counts: np.ndarray, seq: int) -> None:
        """``_publish`` for a source's batch claimed contiguously on every output, in one
        compiled call that stamps ``ts_recv_ns`` just before the commits
        (``bot4.stages.publish``)."""
        cl = self._claims
        for j, c in enumerate(claims):
            cl[j] = c
        self.gen += 1
        publish_stamped(
            self.bufs[self.next_buf], np.uint64(self.cur[0]), self._hdrs, tuple(views), cl,
            counts, seq, self.gen,
        )  # fmt: skip
        self.next_buf ^= 1
        self.records_out += int(counts[: len(self.outs)].sum())

    def _emit_pending(self) -> int:
        """Records the stage sends on its own (not derived from an input batch: queries at
        restart, the cancel-all of its shutdown policy), published like a batch with the
        input cursors unchanged. Returns how many were published."""
        stage = self.stage
        want = stage.pending(stage.clock())
        if want <= 0 or not self.outs:
            return 0
        views, claims = [], []
        k = want
        for out in self.outs:
            cpos, got = ops.wait_claim(out.hdr, want, IDLE_WAIT_NS)
            got = int(got)
            if got == 0:
                return 0  # backpressure: try again on the next iteration
            ix = int(cpos) & out.mask
            views.append(out.slots[ix : ix + got])
            claims.append(int(cpos))
            k = min(k, got)
        counts = self.counts
        counts[:] = 0
        seq = stage.emit([v[:k] for v in views], counts, self.next_seq)
        n = self._publish(claims, counts, seq)
        self.next_seq = seq
        return n

    # -- housekeeping ---------------------------------------------------------------------
    def _housekeep(self) -> None:
        now = time.monotonic_ns()
        blk = self.blk
        blk[C.S_HEARTBEAT_NS] = now
        blk[C.S_BATCHES] = self.batches
        blk[C.S_RECORDS_IN] = self.records_in
        blk[C.S_RECORDS_OUT] = self.records_out
        for c in self.ins:
            ops.beat_consumer(c.hdr)
        for p in self.outs:
            ops.beat_producer(p.hdr)
        self.report(now)
        self.notifier.watchdog(now)

    def report(self, now: int) -> None:
        """The housekeeping that only reads the rings and the stage (a compiled group's
        housekeeping thread runs it beside the kernels, ``bot4.stages.hotkeeper``): the
        stage's own counters into its control-block slot, the ring-position check,
        ring-full episodes into the log."""
        if self.stage.counter_names:
            C.write_counter_values(self.blk, self.stage.counter_values())
        self._check_positions()
        if self._full_log is not None:
            self._full_log.poll(now)

    def _check_positions(self) -> None:
        """Positions read from shared memory are trusted only within the ring's capacity:
        a damaged word (a stray write, a bit flip) would otherwise have this stage read
        billions of phantom records. Raises ``ShmError`` naming the segment."""
        for side in (*self.ins, *self.outs):
            # consumer, producer, consumer again: both may move meanwhile (the other
            # process; in a compiled group this stage's own side too, as the check runs on
            # the housekeeping thread), so an intact ring has the producer between the first
            # consumer read and the second plus the capacity
            cons = int(side.hdr[W_CONSUMER_POSITION])
            prod = int(side.hdr[W_PRODUCER_POSITION])
            later = int(side.hdr[W_CONSUMER_POSITION])
            depth = (prod - cons) & _M64
            if depth > ((later - cons) & _M64) + side.capacity:
                raise ShmError(
                    Code.RING_POSITIONS_CORRUPT,
                    side.name,
                    f"producer position {prod} and consumer position {cons} are {depth} apart, "
                    f"more than the capacity {side.capacity}: the segment is damaged",
                )

    def _draining(self) -> bool:
        st = int(self.cb.words[C.W_PIPE_STATE])
        return self.local_stop or st in (C.PIPE_DRAINING, C.PIPE_STOPPED)

    def _upstream_stopped(self) -> bool:
        for idx in self.upstream:
            if int(self.cb.stage(idx)[C.S_STATE]) not in (C.STAGE_STOPPED, C.STAGE_FAILED):
                return False
        return True

    def _inputs_empty(self) -> bool:
        return all(
            c.depth == 0 for c, r in zip(self.ins, self.in_specs, strict=True) if not r.feedback
        )

    def _idle(self, iteration: int) -> None:
        if len(self.ins) == 1 and not self.stage.source:
            ops.wait_peek(self.ins[0].hdr, 1, IDLE_WAIT_NS)
        elif self.stage.source:
            time.sleep(0.0002 if iteration > 16 else 0)
        else:
            strat = self.spec.wait
            if strat == WAIT_BUSY_SPIN:
                return
            if strat == WAIT_SPIN_YIELD or iteration < 64:
                os.sched_yield()
            else:
                # asleep until any input's producer publishes (futex_waitv): no input
                # waits for another's timeout
                if self._multipark is None:
                    self._multipark = MultiPark([c.hdr for c in self.ins])
                self._multipark.park([c.consumer_position for c in self.ins], IDLE_WAIT_NS)

    # -- main -----------------------------------------------------------------------------
    def start(self, running: bool = True) -> None:
        """Attach, recover the cursors, beat once and report running (``running``; a
        group reports its members running once it has loaded its compiled cycle)."""
        self.batches = self.records_in = self.records_out = 0
        self._drain_deadline: float | None = None  # set when the shutdown policy ran
        self._trail_deadline: float | None = None  # set when a stopped member trails
        self.attach()
        self.recover()
        self._housekeep()
        if running:
            self.blk[C.S_STATE] = C.STAGE_RUNNING
        self.n_src = 1 if self.stage.source else len(self.ins)
        self.rr = 0
        self._last_hk = time.monotonic_ns()

    def cycle(self, steps: bool = True) -> int:
        """One duty cycle: a batch from each input (or the source), the stage's own
        records, housekeeping when due. Returns the records done (> 0), 0 when idle (the
        caller idles), -1 when the stage is to leave its loop (drained, halted, done).
        ``steps`` False: no input batches (a compiled group's housekeeping round: its
        compiled cycle reads the inputs as soon as the round ends)."""
        done = 0
        finished = False
        n_src = self.n_src if steps else 0
        for _ in range(n_src):
            got = self._step(self.rr)
            self.rr = (self.rr + 1) % n_src
            if got < 0:
                finished = True
                break
            done += got
        done += self._emit_pending()
        self.batches += 1
        if done and not finished:
            if self.batches % HOUSEKEEP_EVERY == 0:
                self._housekeep()
                if self.stage.source and self._draining():
                    return -1  # a busy source stops producing as soon as told
                if int(self.cb.words[C.W_PIPE_STATE]) == C.PIPE_STOPPED:
                    return -1
            return done
        now = time.monotonic_ns()
        if now - self._last_hk >= IDLE_HOUSEKEEP_NS or finished:
            self._last_hk = now
            self._housekeep()
        if int(self.cb.words[C.W_PIPE_STATE]) == C.PIPE_STOPPED:
            return -1  # halted: leave at once
        if self.stage.source and (finished or self._draining()):
            return -1
        if not self.stage.source and self._draining():
            upstream_stopped = self._upstream_stopped()
            if upstream_stopped and self._inputs_empty():
                return self._drain_policy()
            pipe = int(self.cb.words[C.W_PIPE_STATE])
            if self.local_stop and pipe == C.PIPE_RUNNING and not upstream_stopped:
                # stopped alone (systemctl stop/restart of this unit): leave now; what
                # is in its inputs stays there for the restarted stage's cursors
                return -1
        return 0

    def fail(self) -> None:
        self.blk[C.S_STATE] = C.STAGE_FAILED
        self.blk[C.S_LAST_ERROR] = int(Code.STAGE_DIED)

    def close(self) -> None:
        for side in (*self.ins, *self.outs):
            side.close()

    def run(self) -> int:
        """The dedicated mode: this stage alone in its process."""
        # the full collection (tens to hundreds of ms) before reporting running: sources
        # hold until every stage runs, so the first records do not wait behind it
        self.start(running=False)
        quiet_gc()
        self._housekeep()  # a fresh beat after the collection
        self.blk[C.S_STATE] = C.STAGE_RUNNING
        self.notifier.send(
            "READY=1", f"STATUS=stage {self.spec.name} running on core {self.spec.core}"
        )
        idle_iter = 0
        try:
            while True:
                n = self.cycle()
                if n < 0:
                    break
                if n:
                    idle_iter = 0
                    continue
                self._idle(idle_iter)
                idle_iter += 1
            self.notifier.send("STOPPING=1")
            self.finish()
            self.stopped()
            return 0
        except BaseException:
            self.fail()
            raise
        finally:
            self.close()
