"""The deterministic replay's feed (``bot4.replay.engine``): the source's chunks in a
buffer, numbered and stamped with their receive times, the cursors of the strategy (by
receive time) and of the venue (by event time), and the marks sampled from the quotes
delivered. A mixin of :class:`~bot4.replay.engine.DeterministicReplay`."""

from __future__ import annotations

import time

import numpy as np

from bot4.records import MARKET_DATA, MDF_BOOK_STALE
from bot4.replay.kernels import _stamp_chunk, _track_quotes
from bot4.replay.latency import trailing_load
from bot4.replay.sources import CHUNK

__all__ = ["FeedMixin"]


class FeedMixin:
    """The feed buffer and the marks (see the module doc)."""

    # -- the feed -----------------------------------------------------------------------------
    def _feed_init(self) -> None:
        self._chunks = self.source.chunks(CHUNK)
        # the feed buffer: two record stores used in turn (a chunk is appended to what is
        # left of the buffer in the other store, so the views of the current step stay
        # valid), receive and event times in one store each; buf / recv / event are views
        self._stores = [np.zeros(0, MARKET_DATA), np.zeros(0, MARKET_DATA)]
        self._cur = 0
        self._pinned = -1  # store holding views handed out in this step (-1: none)
        self._rstore = np.zeros(0, np.int64)
        self._estore = np.zeros(0, np.int64)
        self.buf = self._stores[0][:0]
        self.recv = self._rstore[:0]
        self.event = self._estore[:0]
        self.cs = 0  # strategy cursor (by ts_recv_ns) into buf
        self.cv = 0  # venue cursor (by ts_event_ns) into buf
        self.base = 0  # position of buf[0] in the stream
        self.exhausted = False
        self.last_recv = -(1 << 62)
        self.load_tail = np.zeros(0, np.int64)  # event times before buf, for load windows
        self.source_s = 0.0
        self.flush_sinks = False
        n_inst = 1 << 10
        self.last_bid = np.zeros(n_inst, np.int64)
        self.last_ask = np.zeros(n_inst, np.int64)
        self.quoted = np.zeros(n_inst, np.bool_)

    def _more(self) -> bool:
        """Append the next chunk to the buffer (dropping what both cursors passed)."""
        if self.exhausted:
            return False
        t0 = time.perf_counter()
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.exhausted = True
            return False
        finally:
            self.source_s += time.perf_counter() - t0
        if chunk.dtype != MARKET_DATA:
            chunk = np.array(chunk, MARKET_DATA)
        k = len(chunk)
        if k == 0:
            return True
        n_old = len(self.buf)
        load = None
        if self.latency.feed.needs_load:
            ev = chunk["ts_event_ns"].astype(np.int64)
            hist = np.concatenate([self.load_tail, self.event, ev])
            load = trailing_load(hist, ev, self.latency.feed.window_ns)
        lat = np.ascontiguousarray(self.latency.feed.sample(self.rng_feed, k, load), np.int64)
        drop = min(self.cs, self.cv)
        if drop:
            self.load_tail = self.event[max(0, drop - 4096) : drop].copy()
        keep = n_old - drop
        need = keep + k
        # records: into the other store (the views of this step's feed stay valid), or
        # a new one when that store holds views of this step too, or is too small
        tgt = 1 - self._cur
        dst = self._stores[tgt]
        if tgt == self._pinned or len(dst) < need:
            dst = np.zeros(max(need, 2 * k), MARKET_DATA)
            self._stores[tgt] = dst
        dst[:keep] = self.buf[drop:]
        if len(self._rstore) < need:
            rs = np.zeros(max(need, 2 * k), np.int64)
            es = np.zeros(max(need, 2 * k), np.int64)
            rs[:keep] = self.recv[drop:]
            es[:keep] = self.event[drop:]
            self._rstore, self._estore = rs, es
        elif drop:
            self._rstore[:keep] = self._rstore[drop:n_old]  # numpy copes with the overlap
            self._estore[:keep] = self._estore[drop:n_old]
        self.last_recv = int(
            _stamp_chunk(
                dst[keep:need],
                chunk,
                lat,
                self.base + n_old + 1,
                self.last_recv,
                self._rstore[keep:need],
                self._estore[keep:need],
            )
        )
        self._cur = tgt
        self.buf = dst[:need]
        self.recv = self._rstore[:need]
        self.event = self._estore[:need]
        self.cs -= drop
        self.cv -= drop
        self.base += drop
        if self.exact:
            self.ca = max(0, self.ca - drop)
            if self.window_nodes:
                flags = self.buf["flags"] & MDF_BOOK_STALE
                self.flag_abs = self.base + np.flatnonzero(flags).astype(np.int64)
        return True

    def _load_at(self, at: np.ndarray) -> np.ndarray:
        """Market data events in the trailing load window before each time of ``at``."""
        model = self.latency.order
        window = getattr(model, "window_ns", 1_000_000)
        hist = np.concatenate([self.load_tail, self.event])
        return trailing_load(hist, at, window)

    def _next_feed_times(self) -> tuple[int | None, int | None]:
        while self.cs >= len(self.buf) or self.cv >= len(self.buf):
            if not self._more():
                break
        r = int(self.recv[self.cs]) if self.cs < len(self.buf) else None
        v = int(self.event[self.cv]) if self.cv < len(self.buf) else None
        return r, v

    def _feed_upto(self, t: int, cursor: str) -> tuple[int, int]:
        """[start, end) of the buffer delivered by ``t`` for a cursor, loading chunks
        (loading may drop a consumed prefix: indices are read after it)."""
        while True:
            times = self.recv if cursor == "cs" else self.event
            end = int(np.searchsorted(times, t, side="right"))
            if end < len(self.buf) or not self._more():
                break
        return getattr(self, cursor), end

    def _step_feeds(self, s0: int, e0: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """A step's feeds: the strategy's records ``buf[s0:e0]`` (its cursor moves to
        ``e0``) and the venue's, by event time up to ``t`` (none without a venue: its
        cursor follows the strategy's); the marks sampled and quotes tracked up to them."""
        feed = self.buf[s0:e0]
        self._pinned = self._cur
        self.cs = e0
        if self.venue is not None:
            v0, v1 = self._feed_upto(t, "cv")
            vfeed = self.buf[v0:v1]
            self.cv = v1
        else:
            self.cv = self.cs
            vfeed = feed[:0]
        if len(feed):
            self._sample_marks(int(feed["ts_recv_ns"][0]) - 1)
            self._track_quotes(feed)
        return feed, vfeed

    def _sample_marks(self, upto: int) -> None:
        """Last bid / ask per instrument from the strategy feed delivered so far; a mark
        (mid, price units) per instrument at every interval boundary passed."""
        while self.next_mark <= upto:
            mids = {}
            for inst in self.mark_insts:
                b, a = int(self.last_bid[inst]), int(self.last_ask[inst])
                mids[inst] = (b + a) // 2 if b > 0 and a > b else 0
            self.mark_t.append(self.next_mark)
            for inst in self.mark_insts:
                self.mark_v[inst].append(mids[inst])
            self.next_mark += self.interval_ns

    def _marks_over(self, s: int, e: int) -> None:
        """The marks over the feed records ``buf[s:e]`` delivered in order: a boundary b
        samples the quotes received by b."""
        recv = self.recv
        j = s
        while j < e:
            self._sample_marks(int(recv[j]) - 1)
            k = min(e, int(recv[j:e].searchsorted(self.next_mark, side="right")) + j)
            self._track_quotes(self.buf[j:k])
            j = k

    def _track_quotes(self, feed: np.ndarray) -> None:
        if _track_quotes(feed, self.last_bid, self.last_ask, self.quoted):
            new = set(np.flatnonzero(self.quoted).tolist()) - set(self.mark_insts)
            self.mark_insts = sorted(set(self.mark_insts) | new)
            for i in new:  # no mark before its first quote
                self.mark_v[i] = [0] * len(self.mark_t)
