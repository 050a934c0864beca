"""The progress line of a long replay: events/s, percent done, time left, on one stderr
line rewritten at most ``PERIOD_S`` apart (a plain new line per update when the stream is
not a terminal). Reads the wall clock only: never part of a replay's results."""

from __future__ import annotations

import time

__all__ = ["Progress"]

PERIOD_S = 0.5  # at most two updates per second


class Progress:
    """``update(done)`` with records done out of ``total``; ``done(n)`` ends the line."""

    def __init__(self, total: int, stream, period_s: float = PERIOD_S) -> None:
        self.total = max(1, int(total))
        self.stream = stream
        self.period_s = period_s
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.lines = 0

    def line(self, done: int, now: float) -> str:
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        left = (self.total - done) / rate if rate > 0 else float("inf")
        eta = f"{left:,.0f} s left" if left != float("inf") else "-- s left"
        return (
            f"replay {100.0 * done / self.total:5.1f}%  {done:,}/{self.total:,} events  "
            f"{rate / 1e6:,.2f} M events/s  {eta}"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.period_s:
            return
        self.last = now
        self._write(self.line(done, now))

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.lines += 1

    def done(self, done: int) -> None:
        now = time.monotonic()
        text = self.line(done, now).replace(" left", " left (done)")
        if self.tty:
            self.stream.write("\r\033[K" + text + "\n")
            self.stream.flush()
        elif self.lines:
            self._write(text)
