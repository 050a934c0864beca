"""The synthetic market data source emits its configured rate even when the runner takes
fewer ticks than it offers (a batch of 256, an output's room): the token bucket is spent
by what ``generate`` emits, not by what ``source_ready`` offers."""

from __future__ import annotations

import numpy as np

from bot4.records import MARKET_DATA
from bot4.spec import StageSpec
from bot4.stages.standins import SyntheticMarketData


def _source(rate: float) -> SyntheticMarketData:
    spec = StageSpec(name="md", kind="synthetic-md", core=0, index=0,
                     params={"seed": 1, "rate": rate})  # fmt: skip
    md = SyntheticMarketData(spec, [], [], "t")
    md.setup()
    return md


def test_a_batch_cut_short_keeps_the_rest_of_its_tokens():
    rate, batch = 1_000_000.0, 256
    md = _source(rate)
    out = np.zeros(batch, MARKET_DATA)
    counts = np.zeros(1, np.int64)
    t0 = 150_000_000  # outside the 5x burst slot (the first 100 ms of each second)
    md.t_last = t0
    pos = 0
    for ms in range(1, 21):  # 20 ms, the runner calling in batches until nothing is due
        now = t0 + ms * 1_000_000
        while (k := md.source_ready(pos, now)) > 0:
            n = min(batch, k)
            md.generate(pos, n, [out[:n]], counts, pos + 1)
            pos += n
    assert pos == int(rate * 0.020), pos  # 1,000 ticks a millisecond, none lost


def test_ticks_offered_but_not_taken_are_offered_again():
    md = _source(100_000.0)
    md.t_last = 150_000_000
    first = md.source_ready(0, 151_000_000)  # 1 ms: 100 ticks due
    assert first == 100
    out = np.zeros(10, MARKET_DATA)
    md.generate(0, 10, [out], np.zeros(1, np.int64), 1)
    assert md.source_ready(10, 151_000_000) == 90
