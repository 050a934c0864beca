"""bot4's latency histogram is HdrHistogram's layout: same index for every value, same
percentiles, and its counts round-trip through the ``hdrhistogram`` package's encoding."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from bot4.shm import histogram as H
from tests.seeds import seeded_rng

PCTS = (0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Latencies across the whole range: sub-µs, µs, ms, seconds, and the edges."""
    parts = [
        rng.integers(0, 300, n // 4),
        np.exp(rng.uniform(np.log(300), np.log(5e6), n // 4)).astype(np.int64),
        np.exp(rng.uniform(np.log(5e6), np.log(H.HIGHEST_NS), n // 4)).astype(np.int64),
        rng.integers(0, 1 << 20, n // 4),
        np.array([0, 1, 127, 128, 255, 256, 257, 511, 512, H.HIGHEST_NS - 1, H.HIGHEST_NS]),
    ]
    return np.concatenate(parts).astype(np.int64)


def _reference(values: np.ndarray) -> HdrHistogram:
    ref = HdrHistogram(H.LOWEST_NS, H.HIGHEST_NS, H.SIGNIFICANT_FIGURES)
    for v in values:
        assert ref.record_value(int(v))
    return ref


def test_layout_parameters_are_hdrhistograms():
    ref = HdrHistogram(H.LOWEST_NS, H.HIGHEST_NS, H.SIGNIFICANT_FIGURES)
    assert ref.counts_len == H.COUNTS_LEN
    assert ref.sub_bucket_count == H.SUB_BUCKET_COUNT
    assert ref.bucket_count == H.BUCKET_COUNT
    for i in range(H.COUNTS_LEN):
        lo = ref.get_value_from_index(i)
        assert H.LOWEST_AT[i] == ref.get_lowest_equivalent_value(lo), i
        assert H.HIGHEST_AT[i] == ref.get_highest_equivalent_value(lo), i
        assert H.index_of(lo) == i


def test_every_value_lands_in_hdrhistograms_index_and_percentiles_agree():
    rng, _ = seeded_rng("histogram vs hdrhistogram")
    values = _values(rng, 20_000)
    h = H.new()
    H.record_many(h, values)
    ref = _reference(values)
    ref_counts = np.ctypeslib.as_array(ref.counts)[: H.COUNTS_LEN]
    assert np.array_equal(H.counts_of(h).astype(np.int64), ref_counts.astype(np.int64))
    assert int(h[H.H_COUNT]) == ref.get_total_count() == values.size
    assert int(h[H.H_MIN]) == values.min() and int(h[H.H_MAX]) == values.max()
    assert int(h[H.H_SUM]) == int(values.sum())
    for p in PCTS:
        assert H.value_at_percentile(H.counts_of(h), p) == ref.get_value_at_percentile(p), p
    s = H.summary(h)
    assert s["p99_ns"] == ref.get_value_at_percentile(99.0)
    assert s["p999_ns"] == ref.get_value_at_percentile(99.9)
    assert s["max_ns"] == ref.get_max_value()


def test_counts_round_trip_through_hdrhistogram_encoding():
    rng, _ = seeded_rng("histogram encode/decode")
    values = _values(rng, 4_000)
    h = H.new()
    H.record_many(h, values)
    blob = H.to_hdrh(h).encode()
    back = HdrHistogram.decode(blob)
    assert back.get_total_count() == values.size
    for p in PCTS:
        assert back.get_value_at_percentile(p) == H.value_at_percentile(H.counts_of(h), p)
    h2 = H.from_hdrh(back)
    assert np.array_equal(H.counts_of(h2), H.counts_of(h))
    # and the other way: what the package recorded and encoded reads back here unchanged
    ref = _reference(values)
    h3 = H.from_hdrh(HdrHistogram.decode(ref.encode()))
    assert np.array_equal(H.counts_of(h3), H.counts_of(h))


def test_missing_stamps_are_not_counted_and_negative_or_huge_only_in_their_words():
    h = H.new()
    end = np.array([5_000, 7_000, 0, 9_000, 1_000, H.HIGHEST_NS + 10], np.int64)
    start = np.array([1_000, 0, 3_000, 4_000, 2_000, 1], np.int64)
    # counted: 4000, 5000; missing: two; negative: one; overflow: one
    assert H.record_many_latency(h, end, start) == 4
    assert int(h[H.H_COUNT]) == 2 and int(H.counts_of(h).sum()) == 2
    assert int(h[H.H_NEGATIVE]) == 1 and int(h[H.H_OVERFLOW]) == 1
    assert H.summary(h)["max_ns"] == H.HIGHEST_AT[H.index_of(5_000)]


def test_interval_summary_is_the_difference_of_two_snapshots():
    h = H.new()
    H.record_many(h, np.full(100, 1_000, np.int64))
    before = h.copy()
    H.record_many(h, np.full(10, 50_000, np.int64))
    iv = H.summary(h, before)
    assert iv["count"] == 10 and iv["p50_ns"] == H.HIGHEST_AT[H.index_of(50_000)]
    assert H.summary(h)["count"] == 110


@pytest.mark.parametrize("bound", [0, 999, 1_000, 1_007, 10**9])
def test_cumulative_buckets_count_indexes_wholly_below_the_bound(bound):
    values = np.array([0, 500, 1_000, 1_003, 1_008, 2_000, 10**9], np.int64)
    h = H.new()
    H.record_many(h, values)
    got = H.cumulative_at(H.counts_of(h), [bound])[0]
    # an index counts as <= bound when its whole range is
    want = sum(1 for v in values if H.HIGHEST_AT[H.index_of(int(v))] <= bound)
    assert got == want


def test_log2_buckets_are_exactly_the_values_powers_of_two():
    rng, _ = seeded_rng("histogram log2 buckets")
    values = _values(rng, 4_000)
    h = H.new()
    H.record_many(h, values)
    got = {b["lo_ns"]: b["count"] for b in H.log2_buckets(H.counts_of(h))}
    k = np.where(values > 0, np.floor(np.log2(np.maximum(values, 1))).astype(np.int64), -1)
    want: dict[int, int] = {}
    for kk in k.tolist():
        lo = 0 if kk < 0 else 1 << kk
        want[lo] = want.get(lo, 0) + 1
    assert {lo: c for lo, c in got.items() if c} == want
