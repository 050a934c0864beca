"""Event-exact time in the deterministic replay (``bot4.replay.engine``, its module doc):
market data a window at a time between events, a step at each event's own time, the quiet
steps in one kernel call (``bot4.replay.quiet``). A mixin of
:class:`~bot4.replay.engine.DeterministicReplay`."""

from __future__ import annotations

import numpy as np

from bot4.replay.channels import _Delay, _Direct
from bot4.replay.kernels import WINDOW, _restamp_arrivals
from bot4.replay.quiet import QuietPath
from bot4.venue.matching import next_release_ns, venue_md_until_report_kernel

try:  # the risk state's layout (its own module since issue 13)
    from bot4.risk.layout import I_STALE, X_FEED_GONE, X_LAST_MD_NS, X_NEXT_RESET_NS
except ImportError:  # pragma: no cover - before the split
    from bot4.risk.checks import I_STALE, X_FEED_GONE, X_LAST_MD_NS, X_NEXT_RESET_NS

__all__ = ["WINDOW", "ExactMixin"]

_FAR = 1 << 62  # "no time" on the simulated axis (ns)


class ExactMixin:
    """The event-exact loop (see the module doc)."""

    # -- event-exact time ---------------------------------------------------------------------
    def _exact_setup(self, order: list) -> None:
        """Which stages read market data a window at a time (module doc, event-exact time):
        a signals stage without a model router reads the whole feed ahead (its clock is
        only the ``ts_signal_ns`` stamp, set per record; its intents wait in a delay line
        until their own time); the risk stage applies the market data between two events
        in one call (arrival stamps set per record afterwards); the venue applies it on
        the exchange's clock, stopping at a record that fills one of ours. Any other
        consumer of the feed makes every feed record an event of its own."""
        from bot4.stages.risk import RiskStage
        from bot4.stages.signals import SignalsStage

        c = int(self.latency.compute.ns)
        self.hop_const = np.full(len(self.nodes) + 1, c, np.int64) if c else None
        self.ahead_nodes: list = []
        self.window_nodes: list = []
        self.feed_each = False
        for node in order:
            feeds = [i for i, ch in enumerate(node.inputs) if ch == "feed"]
            if not feeds:
                continue
            node.off = node.hop * c
            st = node.stage
            if (
                isinstance(st, SignalsStage)
                and len(node.inputs) == 1
                and getattr(st, "router", 1) is None
                and all(isinstance(ch, _Direct) for ch in node.outputs)
                and all("ts_signal_ns" in (ch.buf.dtype.names or ()) for ch in node.outputs)
            ):
                node.ahead = True
                self.ahead_nodes.append(node)
                for old in list(node.outputs):
                    self._retime(old, _Delay(old.buf.dtype, None, None, "ts_recv_ns", 0))
            elif isinstance(st, RiskStage) and len(feeds) == 1:
                node.window_input = feeds[0]
                k = next(j for j, (i, _c, _ch) in enumerate(node.plan) if i == feeds[0])
                node.first = [ch for _i, code, ch in node.plan[:k] if code == 2]
                self.window_nodes.append(node)
            else:
                self.feed_each = True
        v = self.venue
        self.venue_window = (
            v is not None
            and v.venue_inputs[1] is not None
            and getattr(v.stage, "heartbeat", 0) is None
            and getattr(v.stage, "md_time", "") == "event"
        )
        self.vfeed_each = v is not None and v.venue_inputs[1] is not None and not self.venue_window
        self.ca = 0  # the read-ahead cursor into buf (>= cs)
        self.flag_abs = np.zeros(0, np.int64)  # stream positions of MDF_BOOK_STALE records

    def _retime(self, old, new) -> None:
        """Replace channel ``old`` by ``new`` everywhere (a same-step ring becomes a delay
        line keyed by each record's own time)."""
        for n in self.nodes.values():
            n.inputs = [new if ch is old else ch for ch in n.inputs]
            n.outputs = [new if ch is old else ch for ch in n.outputs]
            n.plan = [(i, code, new if ch is old else ch) for i, code, ch in n.plan]
        new.tap = getattr(old, "tap", None)
        for k, ch in list(self.channels.items()):
            if ch is old:
                self.channels[k] = new
        self.delays.append(new)

    def _ahead_all(self) -> None:
        """The read-ahead stages over every feed record buffered and not yet read."""
        n = len(self.buf)
        if self.ca >= n:
            return
        for node in self.ahead_nodes:
            s = self.ca
            while s < n:
                e = min(n, s + WINDOW)
                node.now = max(node.now, int(self.recv[e - 1]) + node.off)
                self.clock.t = node.now
                self._call(node, 0, self.buf[s:e], restamp=node.off)
                s = e
        self.ca = n

    def _first_event_at(self, t: int) -> int | None:
        """The first time >= ``t`` at which a record is delivered (to the strategy or,
        by event time, to the venue) among those not yet delivered; None past the buffer."""
        best = None
        r = self.recv[self.cs :]
        j = int(r.searchsorted(t))
        if j < len(r):
            best = int(r[j])
        if self.venue is not None:
            e = self.event[self.cv :]
            j = int(e.searchsorted(t))
            if j < len(e) and (best is None or int(e[j]) < best):
                best = int(e[j])
        return best

    def _next_exact(self, T: int) -> int | None:
        """The next time after ``T`` at which something other than market data reaching
        the windowed stages happens: a record due in a delay line (intents at their
        market data's receive time, orders at the venue, reports back, feedback), a venue
        report's release, the risk stage's next staleness check or daily reset, a feed
        record flagged ``MDF_BOOK_STALE`` or, while an instrument is in a stale episode,
        every feed record; every feed record when a stage that is not windowed reads it.
        A time not after ``T`` becomes ``T + 1`` (a feedback ring: 1 ns later, as a 1 ns
        step has it)."""
        cands = []
        for ch in self.delays:
            d = ch.next_due()
            if d is not None:
                cands.append(d)
        if self.venue is not None:
            d = next_release_ns(self.venue.stage.state)
            if d >= 0:
                cands.append(d)
        n = len(self.buf)
        every = self.feed_each
        for node in self.window_nodes:
            st = node.stage
            book = st.book
            due = _FAR
            if getattr(st, "stale_every", 0):
                due = int(st._stale_due)
            nxt = int(book.acct[X_NEXT_RESET_NS])
            if nxt > 0:
                due = min(due, nxt)
            if due < _FAR:
                target, x = node.trigger
                if target != due - node.off or x is None or x <= T:
                    # the first event time at or after the target among undelivered
                    # records: unchanged while the target is and that time is ahead
                    x = self._first_event_at(due - node.off)
                    node.trigger = (due - node.off, x)
                if x is not None:
                    cands.append(x)
            if book.acct[X_FEED_GONE] != 0 or book.inst[:, I_STALE].any():
                every = True  # the next record ends the episode: at its own time
        if every and self.cs < n:
            cands.append(int(self.recv[self.cs]))
        if self.vfeed_each and self.cv < n:
            cands.append(int(self.event[self.cv]))
        if self.window_nodes and len(self.flag_abs):
            j = int(self.flag_abs.searchsorted(self.base + self.cs))
            if j < len(self.flag_abs):
                cands.append(int(self.recv[int(self.flag_abs[j]) - self.base]))
        if not cands:
            return None
        t = min(cands)
        return t if t > T else T + 1

    def _horizon(self) -> int | None:
        """Records not yet buffered are delivered no earlier than this (None: the source
        is exhausted, everything is buffered)."""
        if self.exhausted:
            return None
        if not len(self.buf):
            return -_FAR
        return min(int(self.recv[-1]), int(self.event[-1]))

    def _window(self, W: int) -> int:
        """Market data delivered strictly before ``W`` to the windowed stages: the venue
        first (it stops at a record that queued a report: ``W`` becomes that report's
        release time, when something may next reach the rest of the pipeline), then the
        risk stage and the marks. Returns ``W``."""
        v = self.venue
        if self.venue_window:
            st = v.stage.state
            n = len(self.buf)
            while self.cv < n:
                # records at W itself too: the step at W applies them before its orders
                # and its release all the same
                e = int(self.event[self.cv :].searchsorted(W, side="right")) + self.cv
                if e <= self.cv:
                    break
                e = min(e, self.cv + WINDOW)
                k = int(venue_md_until_report_kernel(st, self.buf[self.cv : e], v.now))
                t = int(self.event[self.cv + k - 1])
                if t > v.now:
                    v.now = t
                self.cv += k
                r = next_release_ns(st)
                if 0 <= r < W:
                    W = r
        elif v is not None and not self.vfeed_each:  # a venue without market data
            self.cv = max(self.cv, int(self.event[self.cv :].searchsorted(W)) + self.cv)
        s = self.cs
        # records received at W itself too, unless a windowed stage reads a delay line
        # due by W (a step reads those first) or another stage reads the feed
        at_w = not self.feed_each and all(
            ch.next_due() is None or ch.next_due() > W
            for node in self.window_nodes
            for ch in node.first
        )
        e = int(self.recv[s:].searchsorted(W, side="right" if at_w else "left")) + s
        if e <= s:
            return W
        recv = self.recv
        self._marks_over(s, e)
        for node in self.window_nodes:
            book = node.stage.book
            ilim = node.stage.arrays.ilim
            a = s
            while a < e:
                b = min(e, a + WINDOW)
                batch = self.buf[a:b]
                last = int(book.acct[X_LAST_MD_NS])
                node.now = max(node.now, int(recv[b - 1]) + node.off)
                self.clock.t = node.now
                self._call(node, node.window_input, batch)
                _restamp_arrivals(batch, node.off, book.inst, book.acct, ilim, last)
                a = b
        self.delivered += e - s
        self.cs = e
        if v is None:
            self.cv = self.cs
        return W

    def _run_exact(self, order: list) -> tuple[int, int]:
        """Event-exact time (module doc): windows of market data between events, and a
        step at each event's own time. Returns the last step's time and the steps."""
        self._exact_setup(order)
        hop = self.hop_const
        T = -_FAR
        steps = 0
        quiet = QuietPath.of(self, order) if self.quiet_steps else None
        self.quiet = quiet
        while True:
            self._pinned = -1
            self._ahead_all()
            if quiet is not None:
                T, steps = quiet.run(T, steps)
                self._pinned = -1
            W = self._next_exact(T)
            H = self._horizon()
            if H is not None and (W is None or W >= H):
                W2 = self._window(H)
                if W2 >= H:  # the buffer is used up to H: read on
                    self._more()
                    if self.progress is not None:
                        self.progress.update(self.base + self.cs)
                    continue
                W = W2
            elif W is None:
                W = self._window(_FAR)
                if W >= _FAR:
                    break
            else:
                W = self._window(W)
            T = W
            s0, e0 = self._feed_upto(T, "cs")
            if e0 > self.ca:
                self._ahead_all()
            steps = self._run_step(order, T, hop, self._step_feeds(s0, e0, T), steps)
        if len(self.buf):  # the last record's time ends the run, as a 1 ns step has it
            T = max(T, int(self.recv[-1]))
            if self.venue is not None:
                T = max(T, int(self.event[-1]))
        for node in order:  # each stage's clock as that last step leaves it
            if node is self.venue:
                node.now = max(node.now, T)
            elif not node.sink:
                node.now = max(node.now, T + node.hop * int(self.latency.compute.ns))
        return T, steps
