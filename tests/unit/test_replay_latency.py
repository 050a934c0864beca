"""Latency models of the deterministic replay: distribution properties under a seed,
reproducibility, the load-driven spikes, and the text form's errors."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.replay.latency import (
    Constant,
    Empirical,
    LatencyConfig,
    LatencyError,
    LoadSpike,
    parse_duration_ns,
    parse_latency,
    trailing_load,
)

N = 200_000


def rng(seed=7):
    return np.random.Generator(np.random.PCG64(seed))


def test_durations_parse_with_units():
    assert parse_duration_ns("250ns") == 250
    assert parse_duration_ns("40us") == 40_000
    assert parse_duration_ns("1.5ms") == 1_500_000
    assert parse_duration_ns("2s") == 2_000_000_000
    assert parse_duration_ns("17") == 17
    with pytest.raises(LatencyError, match="not a duration"):
        parse_duration_ns("fast")


def test_constant_is_constant():
    lat = parse_latency("const:50us").sample(rng(), 1000)
    assert lat.dtype == np.int64 and (lat == 50_000).all()


def test_empirical_values_draw_only_given_values_uniformly():
    m = parse_latency("empirical:10us,20us,30us,100us")
    lat = m.sample(rng(), N)
    assert set(np.unique(lat).tolist()) == {10_000, 20_000, 30_000, 100_000}
    shares = np.unique(lat, return_counts=True)[1] / N
    assert np.allclose(shares, 0.25, atol=0.01)
    assert abs(lat.mean() - 40_000) < 500


def test_quantiles_reproduce_the_given_percentiles():
    m = parse_latency("quantiles:0=30us,0.5=40us,0.9=60us,0.99=120us,1=400us")
    lat = m.sample(rng(), N)
    assert lat.min() >= 30_000 and lat.max() <= 400_000
    for p, want in ((50, 40_000), (90, 60_000), (99, 120_000)):
        assert abs(np.percentile(lat, p) - want) / want < 0.02


def test_same_seed_same_draws_other_seed_other_draws():
    m = parse_latency("quantiles:0=30us,0.5=40us,1=400us")
    a, b, c = m.sample(rng(1), 1000), m.sample(rng(1), 1000), m.sample(rng(2), 1000)
    assert (a == b).all() and not (a == c).all()


def test_spikes_grow_with_load_and_vanish_below_the_threshold():
    m = parse_latency(
        "spike(base=const:40us,window=1ms,threshold=50,per_event=200ns,prob=0.01,spike=500us)"
    )
    assert isinstance(m, LoadSpike) and m.needs_load
    quiet = m.sample(rng(), N, np.full(N, 50))
    assert (quiet == 40_000).all()
    busy = m.sample(rng(), N, np.full(N, 150))  # 100 events above the threshold
    base = 40_000 + 100 * 200
    assert busy.min() == base
    p_spike = 1 - 0.99**100  # each event above the threshold may trigger one
    spiked = busy > base
    assert abs(spiked.mean() - p_spike) < 0.01
    assert abs((busy[spiked] - base).mean() - 500_000) / 500_000 < 0.02


def test_trailing_load_counts_events_in_the_window():
    ts = np.array([0, 10, 20, 30, 40, 50], np.int64)
    assert trailing_load(ts, np.array([30, 50, 100]), 25).tolist() == [3, 3, 0]


def test_config_from_specs_and_errors():
    cfg = LatencyConfig.from_specs(["feed=const:5us", "order=empirical:1us,2us"])
    assert cfg.feed == Constant(5_000) and isinstance(cfg.order, Empirical)
    assert cfg.report_model is cfg.order
    with pytest.raises(LatencyError, match="expected feed, order, report or compute"):
        LatencyConfig.from_specs(["wire=const:1us"])
    with pytest.raises(LatencyError, match="unknown latency model"):
        parse_latency("gauss:1us")
    with pytest.raises(LatencyError, match="rise strictly from 0 to 1"):
        parse_latency("quantiles:0.1=1us,1=2us")
    with pytest.raises(LatencyError, match="unknown spike keys"):
        parse_latency("spike(base=const:1us,jitter=3)")
