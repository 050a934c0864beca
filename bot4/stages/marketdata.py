"""Market data stage: a source of MARKET_DATA records — synthetic, recorded files, LOBSTER.

params:

* ``source`` — ``synthetic`` (default), ``file`` (CSV or Parquet, see
  ``bot4.marketdata.files``) or ``lobster`` (a LOBSTER message/orderbook pair, plain or
  zipped, see ``bot4.marketdata.lobster``);
* ``path`` — the file (file, lobster);
* ``speed`` — replay pace: 0 = as fast as the pipeline takes it (default), 1 = the
  recorded pace, 10 = ten times faster;
* synthetic: ``rate`` (ticks/s), ``instruments``, ``seed``, ``count``.

Recorded data is read, validated and normalised once at start-up: bad rows are counted by
reason, logged, and never reach signals (``summary()`` carries the counts). Each record
is stamped with this stage's sequence number and its receive time (``ts_recv_ns``) as it is
published, in batches. A restarted stage resumes at the position its cursors say: the
records of a file are a pure function of their position.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from numba import njit

from bot4.stages.base import Stage
from bot4.stages.standins import SyntheticMarketData

log = logging.getLogger("bot4.stage")


@njit(nogil=True, cache=True)
def _emit(data, out, position, k, seq, now):
    for i in range(k):
        out[i] = data[position + i]
        out[i].seq = seq + i
        out[i].parent_seq = 0
        out[i].ts_recv_ns = now
    return seq + k


def load_recorded(source: str, path: str):
    """(records, bad-input report) for a recorded source."""
    if source == "file":
        from bot4.marketdata.files import read_table

        return read_table(path)
    if source == "lobster":
        from bot4.marketdata.replay import read_lobster_stream

        return read_lobster_stream(path)
    raise ValueError(f"unknown market data source {source!r} (synthetic, file, lobster)")


class MarketDataStage(Stage):
    kind = "md"
    source = True
    arity = (0, 0, 1, 4)
    output_types = ("MARKET_DATA",)
    restart_state = (
        "recorded sources: none (records are a function of position); synthetic: the mid walk"
    )

    def setup(self) -> None:
        p = self.params
        self.mode = p.get("source", "synthetic")
        if self.mode == "synthetic":
            self.synth = SyntheticMarketData(self.spec, self.inputs, self.outputs, self.instance)
            self.synth.setup()
            self.report = None
            return
        self.data, self.report = load_recorded(self.mode, p["path"])
        log.info("market data %s", self.report.summary())
        self.speed = float(p.get("speed", 0))
        self.t0: int | None = None
        self.ev0 = int(self.data["ts_event_ns"][0]) if len(self.data) else 0

    def source_done(self, position: int) -> bool:
        if self.mode == "synthetic":
            return self.synth.source_done(position)
        return position >= len(self.data)

    def source_ready(self, position: int, now_ns: int) -> int:
        if self.mode == "synthetic":
            return self.synth.source_ready(position, now_ns)
        left = len(self.data) - position
        if self.speed <= 0:
            return left
        if self.t0 is None:
            self.t0 = now_ns - int(
                (int(self.data["ts_event_ns"][position]) - self.ev0) / self.speed
            )
        due_ev = self.ev0 + (now_ns - self.t0) * self.speed
        return int(np.searchsorted(self.data["ts_event_ns"], due_ev, side="right")) - position

    def generate(self, position, n, outs, counts, seq):
        if self.mode == "synthetic":
            return self.synth.generate(position, n, outs, counts, seq)
        nxt = _emit(self.data, outs[0], position, n, seq, time.monotonic_ns())
        for j in range(1, len(outs)):
            outs[j][:n] = outs[0][:n]
        counts[: len(outs)] = n
        return n, nxt

    def summary(self) -> dict:
        if self.report is None:
            return {"source": "synthetic"}
        return {"source": self.mode, **self.report.as_dict()}

    def on_drain(self) -> None:
        if self.report is not None:
            log.info("market data summary %s", self.summary())
