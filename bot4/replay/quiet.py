"""The event-exact loop's quiet steps in one kernel call (``bot4.replay.kernels.quiet_steps``).

Most events of a replay through the default chain reach only the risk stage: an intent it
denies (its decision waits for the journal's batch), a staleness check that finds nothing.
At such a step every other stage is idle: the signals stage read the feed ahead, the orders
stage and the venue get nothing due (no record in their delay lines before the next event,
no report to release), persistence waits for ``SINK_BATCH`` records. :class:`QuietPath`
runs those steps in a kernel, many per interpreter trip, calling the stages' own kernels in
the order and at the clocks the scheduler (``bot4.replay.engine``) does, and hands the
scheduler the first step that is not quiet: when the risk stage wrote an order or queued a
CANCEL_ALL, a stale episode started, the journal's batch filled (the kernel did the risk
stage's part of that step, :meth:`QuietPath.run` the rest), or another event comes first.

It applies when the topology is the default chain's shape: one read-ahead signals stage,
one windowed risk stage (intents first, market data as its third input), the venue on the
exchange's clock, orders stages taking intents, sinks; no taps (the model rollout), no
stage reading each feed record. Otherwise the scheduler does every step itself.
"""

from __future__ import annotations

import numpy as np

from bot4.records import EXEC_REPORT
from bot4.replay.kernels import (
    IO_BOUND,
    IO_CALLS,
    IO_CS,
    IO_CV,
    IO_DEC_N,
    IO_FILLS,
    IO_IN,
    IO_INT,
    IO_INT_FIRST,
    IO_MO,
    IO_NEED_D,
    IO_NEED_O,
    IO_NEXT_PART,
    IO_NOW_R,
    IO_OFF,
    IO_ORD_N,
    IO_OUT,
    IO_SEQ,
    IO_SINK_BASE,
    IO_SINK_BATCH,
    IO_STALE_DUE,
    IO_STALE_EVERY,
    IO_STEP_S,
    IO_STEPS,
    IO_T,
    IO_VNOW,
    IO_WANT,
    IO_WINDOW,
    IO_WORDS,
    Q_BOUND,
    Q_POLL,
    Q_ROOM,
    Q_STARTED,
    Q_VENUE,
    WINDOW,
    QuietState,
    quiet_steps,
)
from bot4.venue.matching import next_release_ns

try:
    from bot4.risk.layout import I_STALE, X_FEED_GONE, X_NEXT_RESET_NS
except ImportError:  # pragma: no cover - before the split
    from bot4.risk.checks import I_STALE, X_FEED_GONE, X_NEXT_RESET_NS

__all__ = ["QuietPath"]

_FAR = 1 << 62


class QuietPath:
    """Quiet steps of one :class:`~bot4.replay.engine.DeterministicReplay` at event-exact
    time. Build with :meth:`of` (None when the topology's shape does not allow it)."""

    @classmethod
    def of(cls, eng, order: list) -> QuietPath | None:
        from bot4.stages.orders import OrdersStage
        from bot4.stages.risk import RiskStage

        v = eng.venue
        if (
            v is None
            or not eng.venue_window
            or eng.vfeed_each
            or eng.feed_each
            or eng.rollout is not None
            or len(eng.window_nodes) != 1
            or len(eng.ahead_nodes) != 1
        ):
            return None
        risk = eng.window_nodes[0]
        ahead = eng.ahead_nodes[0]
        if (
            type(risk.stage) is not RiskStage
            or risk.window_input != 2
            or len(risk.outputs) != 2
            or len(ahead.outputs) != 1
            or risk.inputs[0] is not ahead.outputs[0]
            or order.index(ahead) > order.index(risk)
        ):
            return None
        intents = ahead.outputs[0]
        if any(ch is not intents and not getattr(ch, "delayed", False) for ch in risk.first):
            return None
        out_o, out_d = risk.outputs
        sinks = [n for n in order if n.sink and any(c is out_d for c in n.inputs)]
        if getattr(out_o, "delayed", True) or getattr(out_d, "delayed", True) or len(sinks) != 1:
            return None
        others = [n for n in order if n not in (risk, ahead, v) and not n.sink]
        for n in others:
            if type(n.stage) is not OrdersStage:
                return None
        for ch in eng.channels.values():
            if getattr(ch, "tap", None) is not None:
                return None
        return cls(eng, order, risk, ahead, intents, sinks[0], others)

    def __init__(self, eng, order, risk, ahead, intents, sink, others) -> None:
        self.eng = eng
        self.order = order
        self.risk = risk
        self.ahead = ahead
        self.intents = intents
        self.sink = sink
        self.others = others
        self.after = order[order.index(risk) + 1 :]
        self.io = np.zeros(IO_WORDS, np.int64)
        # the risk stage's fills (a feedback ring read before its market data, its
        # intents after it): in the kernel too when that is its reading order
        firsts = [ch for ch in risk.first if ch is not intents]
        self.fills = None
        if (
            not any(ch is intents for ch in risk.first)
            and len(firsts) == 1
            and firsts[0].model is None
            and firsts[0].stamp is None
            and risk.inputs.index(firsts[0]) == 1
        ):
            self.fills = firsts[0]
        self.bounds = [ch for ch in eng.delays if ch is not intents and ch is not self.fills]
        c = int(eng.latency.compute.ns)
        self.off = {id(n): n.hop * c for n in order}
        self.empty = None
        self._none = None
        self.rst = risk.stage.book.st
        self.others_in = [
            (n.stage, [c for c in n.inputs if not getattr(c, "delayed", True)]) for n in others
        ]
        # the risk stage reads its intents before its market data (else after it, and
        # a window takes the records received at the step's time too)
        self.int_first = any(ch is intents for ch in risk.first)
        self.calls = 0  # kernel calls (perf figures)
        # the kernel's state (bot4.replay.kernels.QuietState): the io words (the scalars
        # that do not change set here), the risk stage's and the venue's state objects
        # and the feed's arrays; built at the first call and when the feed refills
        rs = risk.stage
        self.qs = None
        self._ilim = rs.arrays.ilim
        self.io[IO_OFF] = risk.off
        self.io[IO_STALE_EVERY] = int(rs.stale_every)
        self.io[IO_WINDOW] = WINDOW
        self.io[IO_NEXT_PART] = _FAR
        self.io[IO_INT_FIRST] = int(self.int_first)
        self.io[IO_MO] = int(rs.max_out_per_in)
        self.io[IO_SINK_BATCH] = eng.sink_batch

    def _ready(self) -> bool:
        """Nothing makes every record an event now, and the idle stages are idle."""
        from bot4.stages.orders import RECON_READY

        st = self.risk.stage
        if int(self.rst.acct[X_NEXT_RESET_NS]) <= 0:
            return False  # the stage schedules its reset after its next call
        if getattr(st, "state_log", None) is not None:
            return False
        for s, direct in self.others_in:
            if s.recon != RECON_READY or s.drain_cancel_all:
                return False
            for c in direct:
                if c.n:
                    return False
        return True

    def _bound(self) -> int:
        """The next time something other than a quiet event can happen (module doc)."""
        eng = self.eng
        b = _FAR
        for ch in self.bounds:
            d = ch.next_due()
            if d is not None and d < b:
                b = d
        r = next_release_ns(eng.venue.stage.state)
        if 0 <= r < b:
            b = r
        if len(eng.flag_abs):
            j = int(eng.flag_abs.searchsorted(eng.base + eng.cs))
            if j < len(eng.flag_abs):
                b = min(b, int(eng.recv[int(eng.flag_abs[j]) - eng.base]))
        nxt = int(self.rst.acct[X_NEXT_RESET_NS])
        if nxt > 0:
            x = eng._first_event_at(nxt - self.risk.off)
            if x is not None:
                b = min(b, x)
        if not eng.exhausted:
            b = min(b, eng._horizon())
        return b

    def run(self, T: int, steps: int) -> tuple[int, int]:
        """Quiet steps (and the rest of each step the kernel stops in) until the next
        event is the scheduler's; returns the last step's time and the step count."""
        eng = self.eng
        risk = self.risk
        while self._ready():
            due, recs, i0 = self._head(self.intents)
            fdue, frecs, f0 = self._head(self.fills)
            st = risk.stage
            bound = self._bound()
            # nothing quiet before the bound (the next event is an order's, a report's, ...):
            # the scheduler's, without a kernel call
            head = int(due[i0]) if i0 < len(due) else _FAR
            if f0 < len(fdue):
                head = min(head, max(int(fdue[f0]), T + 1))
            tgt = int(st._stale_due) - risk.off if st.stale_every else _FAR
            rst = self.rst
            if (
                head >= bound
                and tgt >= bound
                and rst.acct[X_FEED_GONE] == 0
                and not rst.inst[:, I_STALE].any()
            ):
                return T, steps
            out_o, out_d = risk.outputs
            v = eng.venue
            io = self.io
            cs0 = eng.cs
            io[IO_CS] = eng.cs
            io[IO_CV] = eng.cv
            io[IO_INT] = i0
            io[IO_FILLS] = f0
            io[IO_ORD_N] = out_o.n
            io[IO_DEC_N] = out_d.n
            io[IO_SEQ] = risk.seq
            io[IO_NOW_R] = risk.now
            io[IO_VNOW] = v.now
            io[IO_STALE_DUE] = st._stale_due
            io[IO_T] = T
            io[IO_STEPS] = steps
            io[IO_CALLS] = risk.calls
            io[IO_IN] = risk.records_in
            io[IO_OUT] = risk.records_out
            sink_base = sum(len(c) for _i, code, c in self.sink.plan if code == 2) - out_d.n
            io[IO_SINK_BASE] = sink_base
            io[IO_BOUND] = bound
            book = st.book
            qs = self.qs
            if qs is None or qs.buf is not eng.buf:  # the feed refilled
                qs = self.qs = QuietState(
                    io, self.rst, self._ilim, v.stage.state, eng.buf, eng.recv, eng.event
                )
            status = int(quiet_steps(qs, due, recs, fdue, frecs, out_o.buf, out_d.buf))
            self.calls += 1
            # what the kernel moved
            self._took(self.intents, i0, int(io[IO_INT]), len(due))
            self._took(self.fills, f0, int(io[IO_FILLS]), len(fdue))
            out_o.n = int(io[IO_ORD_N])
            out_d.n = int(io[IO_DEC_N])
            risk.seq = int(io[IO_SEQ])
            risk.now = int(io[IO_NOW_R])
            risk.calls = int(io[IO_CALLS])
            risk.records_in = int(io[IO_IN])
            risk.records_out = int(io[IO_OUT])
            v.now = int(io[IO_VNOW])
            st._stale_due = int(io[IO_STALE_DUE])
            risk.trigger = (None, None)
            eng.cv = int(io[IO_CV])
            cs1 = int(io[IO_CS])
            s_step = int(io[IO_STEP_S])
            n_steps = int(io[IO_STEPS]) - steps
            Tk = int(io[IO_T])
            if cs1 > cs0:
                eng._marks_over(cs0, cs1)
                eng.delivered += cs1 - cs0
                eng.cs = cs1
            mid = status not in (Q_BOUND, Q_ROOM, Q_VENUE)
            if n_steps:
                # the idle stages' clocks as the steps left them (the step the kernel
                # stopped in: the scheduler moves them as it runs the rest)
                last = Tk
                for n in self.order:
                    if n is risk or n.sink or (mid and n in self.after):
                        continue
                    if n is v:
                        n.now = max(n.now, last)
                    else:
                        n.now = max(n.now, last + self.off[id(n)])
                eng.clock.t = v.now
                T = Tk
                steps += n_steps
            if status == Q_ROOM:
                out_o.room(int(io[IO_NEED_O]) - out_o.n)
                out_d.room(int(io[IO_NEED_D]) - out_d.n)
                continue
            if not mid:
                return T, steps
            # the rest of the step at T: the risk stage's pending, then the stages after it
            eng._pinned = eng._cur
            eng.clock.t = risk.now
            want = 0  # Q_ORDERS, Q_SINK: the kill switch's poll found nothing
            if status == Q_STARTED:
                self.risk.stage.log_stale()  # io[IO_WANT] episodes: the counters say so
                want = book.poll()
            elif status == Q_POLL:
                want = int(io[IO_WANT])
            if want > 0:
                eng._emit(risk, want)
            feed = eng.buf[s_step : eng.cs]
            if self.empty is None:
                self.empty = eng.buf[:0].copy()
            for n in self.after:
                eng._run_node(n, T, eng.hop_const, feed, self.empty)
            if eng.progress is not None:
                eng.progress.update(eng.base + eng.cs)
        return T, steps

    def _head(self, ch):
        """A delay line's records not yet taken, as one part: (due, records, first)."""
        if ch is None or not ch.parts:
            if self._none is None:  # no fills ring in the kernel: an empty one
                self._none = (np.zeros(0, np.int64), np.zeros(0, EXEC_REPORT), 0)
            if ch is None:
                return self._none
            return np.zeros(0, np.int64), ch.scratch[:0], 0
        parts = ch.parts
        if len(parts) > 1:  # one part: the kernel reads one array
            due = np.concatenate([p[0][p[2] :] for p in parts])
            recs = np.concatenate([p[1][p[2] :] for p in parts])
            parts.clear()
            parts.append([due, recs, 0])
        return parts[0][0], parts[0][1], parts[0][2]

    @staticmethod
    def _took(ch, i0: int, i1: int, n: int) -> None:
        """The kernel took ``i0:i1`` of the delay line's head part (``n`` records)."""
        if ch is None or i1 == i0:
            return
        ch.count -= i1 - i0
        if i1 >= n:
            ch.parts.popleft()
        else:
            ch.parts[0][2] = i1
