"""The one latency histogram: HdrHistogram's log-linear layout in a flat ``uint64`` array.

Used for every latency bot4 reports — live in shared memory (``bot4.shm.metrics``, read by
``bot4 stats`` and ``bot4 metrics serve``), in the replay report, the persistence summary
and perf — so they all bucket and rank a value the same way.

Layout of the counts (HdrHistogram's, so a counts array here *is* an HdrHistogram counts
array with ``lowest_trackable_value = 1``, ``highest_trackable_value = HIGHEST_NS``,
``significant_figures = SIGNIFICANT_FIGURES``; ``tests/unit/test_histogram.py`` checks it
against the ``hdrhistogram`` package value by value and through its encoding)::

    sub-bucket count S = 2^ceil(log2(2 * 10^figures)) = 256, half H = 128
    bucket b covers [S/2 * 2^b, S * 2^b) with S/2 sub-buckets of width 2^b (bucket 0: [0, S))
    index(v) = (b + 1) * H + (v >> b) - H,  b = bit_length(v | (S - 1)) - log2(S)

so a value is kept to within 1/128 (0.8 %) of itself; 1 ns to 1 hour takes ``COUNTS_LEN``
(4608) words.

One histogram is ``HIST_WORDS`` words::

    word  field (every word written by the histogram's one writer)
    0     count: values recorded into the counts
    1     min value recorded (ns; INT64_MAX while empty)
    2     max value recorded (ns)
    3     sum of the values recorded (ns, wraps past 2^64: mean = sum / count)
    4     overflow: values above HIGHEST_NS (not in the counts)
    5     negative: end stamp before start stamp (not in the counts)
    6, 7  reserved
    8..   counts[COUNTS_LEN]

Missing stamps (a 0 in either stamp: a cancel report, a CANCEL_ALL, a record no source
stamped) are not latencies and are not counted anywhere (:func:`record_latency`).

Readers (another process, PROT_READ) read the words while the writer records: a snapshot
may be a few values apart between ``count`` and the counts, so quantiles are ranked on the
counts alone (:func:`summary`); each counts word only grows, so the difference of two
snapshots is the interval between them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOWEST_NS = 1
HIGHEST_NS = 3_600_000_000_000  # one hour
SIGNIFICANT_FIGURES = 2

SUB_BUCKET_COUNT_MAG = math.ceil(math.log2(2 * 10**SIGNIFICANT_FIGURES))  # 8
SUB_BUCKET_HALF_COUNT_MAG = SUB_BUCKET_COUNT_MAG - 1  # 7
SUB_BUCKET_COUNT = 1 << SUB_BUCKET_COUNT_MAG  # 256
SUB_BUCKET_HALF_COUNT = SUB_BUCKET_COUNT // 2  # 128
SUB_BUCKET_MASK = SUB_BUCKET_COUNT - 1  # unit magnitude 0 (lowest 1 ns)


def _bucket_count(highest: int) -> int:
    smallest_untrackable = SUB_BUCKET_COUNT
    n = 1
    while smallest_untrackable <= highest:
        smallest_untrackable <<= 1
        n += 1
    return n


BUCKET_COUNT = _bucket_count(HIGHEST_NS)  # 35
COUNTS_LEN = (BUCKET_COUNT + 1) * SUB_BUCKET_HALF_COUNT  # 4608

H_COUNT, H_MIN, H_MAX, H_SUM, H_OVERFLOW, H_NEGATIVE = range(6)
H_COUNTS = 8
HIST_WORDS = H_COUNTS + COUNTS_LEN
INT64_MAX = (1 << 63) - 1

_HALF_MAG = np.int64(SUB_BUCKET_HALF_COUNT_MAG)
_HALF = np.int64(SUB_BUCKET_HALF_COUNT)
_MASK = np.int64(SUB_BUCKET_MASK)
_COUNT_MAG = np.int64(SUB_BUCKET_COUNT_MAG)
_HIGHEST = np.int64(HIGHEST_NS)
_ONE = np.uint64(1)


@njit(nogil=True, cache=True, inline="always")
def _bit_length(v):
    n = np.int64(0)
    if v >= np.int64(1) << np.int64(32):
        v >>= np.int64(32)
        n += np.int64(32)
    if v >= np.int64(1) << np.int64(16):
        v >>= np.int64(16)
        n += np.int64(16)
    if v >= np.int64(1) << np.int64(8):
        v >>= np.int64(8)
        n += np.int64(8)
    while v > 0:
        v >>= np.int64(1)
        n += np.int64(1)
    return n


@njit(nogil=True, cache=True, inline="always")
def counts_index(v):
    """HdrHistogram's counts index of value ``v`` (0 <= v <= HIGHEST_NS)."""
    b = _bit_length(v | _MASK) - _COUNT_MAG
    return ((b + np.int64(1)) << _HALF_MAG) + (v >> b) - _HALF


@njit(nogil=True, cache=True)
def record(h, v):
    """Record value ``v`` (ns, int64) into histogram ``h`` (a ``HIST_WORDS`` uint64 view
    this process alone writes). Negative values and values above ``HIGHEST_NS`` are only
    counted in their own words."""
    if v < 0:
        h[H_NEGATIVE] += _ONE
        return
    if v > _HIGHEST:
        h[H_OVERFLOW] += _ONE
        return
    u = np.uint64(v)
    h[H_COUNTS + counts_index(v)] += _ONE
    h[H_COUNT] += _ONE
    h[H_SUM] += u
    if u < h[H_MIN]:
        h[H_MIN] = u
    if u > h[H_MAX]:
        h[H_MAX] = u


@njit(nogil=True, cache=True)
def record_latency(h, end_ns, start_ns):
    """Record ``end_ns - start_ns`` unless a stamp is missing (0): returns 1 if counted."""
    if end_ns == 0 or start_ns == 0:
        return 0
    record(h, end_ns - start_ns)
    return 1


@njit(nogil=True, cache=True)
def record_many(h, values):
    """Record every value of an int64 array."""
    for i in range(values.shape[0]):
        record(h, values[i])


@njit(nogil=True, cache=True)
def record_many_latency(h, end_ns, start_ns):
    """Record ``end_ns[i] - start_ns[i]`` for every i with both stamps set; returns how many."""
    n = 0
    for i in range(end_ns.shape[0]):
        n += record_latency(h, end_ns[i], start_ns[i])
    return n


def init(h: np.ndarray) -> np.ndarray:
    """Reset ``h`` (a ``HIST_WORDS`` uint64 array) to empty; returns it."""
    h[:] = 0
    h[H_MIN] = INT64_MAX
    return h


def new() -> np.ndarray:
    """An empty histogram in process memory."""
    return init(np.zeros(HIST_WORDS, np.uint64))


def counts_of(h: np.ndarray) -> np.ndarray:
    """The counts (a view)."""
    return h[H_COUNTS : H_COUNTS + COUNTS_LEN]


# --- reading: the values HdrHistogram gives for an index ---------------------------------

_IDX = np.arange(COUNTS_LEN, dtype=np.int64)
_BUCKET = (_IDX >> SUB_BUCKET_HALF_COUNT_MAG) - 1
_SUB = (_IDX & (SUB_BUCKET_HALF_COUNT - 1)) + SUB_BUCKET_HALF_COUNT
_SUB = np.where(_BUCKET < 0, _SUB - SUB_BUCKET_HALF_COUNT, _SUB)
_BUCKET = np.maximum(_BUCKET, 0)
#: lowest value counted at each index
LOWEST_AT = _SUB << _BUCKET
#: highest value counted at each index (HdrHistogram's highest equivalent value)
HIGHEST_AT = LOWEST_AT + (np.int64(1) << _BUCKET) - 1


def index_of(v: int) -> int:
    """Counts index of value ``v`` (Python; same as the kernel)."""
    b = (int(v) | SUB_BUCKET_MASK).bit_length() - SUB_BUCKET_COUNT_MAG
    return ((b + 1) << SUB_BUCKET_HALF_COUNT_MAG) + (int(v) >> b) - SUB_BUCKET_HALF_COUNT


def value_at_percentile(counts: np.ndarray, p: float) -> int:
    """HdrHistogram's value at percentile ``p`` (0..100): the highest value equivalent to
    the value of the first index whose cumulative count reaches ``round(p * total / 100)``
    (at least 1); 0 for an empty histogram."""
    return int(values_at_percentiles(counts, [p])[0])


def values_at_percentiles(counts: np.ndarray, ps) -> np.ndarray:
    """:func:`value_at_percentile` for each of ``ps`` (one cumulative sum)."""
    cum = np.cumsum(counts.astype(np.int64))
    total = int(cum[-1]) if cum.size else 0
    out = np.zeros(len(ps), np.int64)
    if total == 0:
        return out
    for k, p in enumerate(ps):
        target = max(int(min(p, 100.0) * total / 100 + 0.5), 1)
        i = int(np.searchsorted(cum, target))
        out[k] = HIGHEST_AT[i] if p > 0 else LOWEST_AT[i]
    return out


PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def summary(h: np.ndarray, prev: np.ndarray | None = None) -> dict:
    """Count, mean, p50/p90/p99/p99.9 and max in ns of ``h`` — or of the interval since
    the snapshot ``prev`` of the same histogram (counts differenced; min and max then from
    the counts, to the histogram's precision). Ranks on the counts (see the module doc)."""
    counts = counts_of(h).astype(np.int64)
    if prev is not None:
        counts = counts - counts_of(prev).astype(np.int64)
    n = int(counts.sum())
    out: dict = {"count": n}
    if n == 0:
        return {**out, "mean_ns": None, "min_ns": None, "max_ns": None}
    nz = np.flatnonzero(counts)
    if prev is None:
        total = int(h[H_COUNT])
        mean = int(h[H_SUM]) / total if total else None
        lo, hi = int(h[H_MIN]), int(HIGHEST_AT[index_of(int(h[H_MAX]))])
    else:
        mean = float((counts * ((LOWEST_AT + HIGHEST_AT) // 2)).sum()) / n
        lo, hi = int(LOWEST_AT[nz[0]]), int(HIGHEST_AT[nz[-1]])
    out["mean_ns"] = None if mean is None else round(mean, 1)
    out["min_ns"] = lo
    for p, v in zip(PERCENTILES, values_at_percentiles(counts, PERCENTILES), strict=True):
        out[f"p{p:g}_ns".replace(".", "")] = int(v)
    out["max_ns"] = hi
    return out


def log2_buckets(counts: np.ndarray) -> list[dict]:
    """The counts regrouped into ``[2^k, 2^(k+1))`` ns buckets (``[0, 1)`` for 0), from the
    lowest to the highest non-empty one. Exact: every index lies in one power of two (the
    upper half of each HdrHistogram bucket spans one), so a value's log2 bucket is known."""
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return []
    lo = LOWEST_AT[nz]
    k = np.where(lo > 0, np.floor(np.log2(np.maximum(lo, 1))).astype(np.int64), -1)
    by = {}
    for kk, c in zip(k.tolist(), counts[nz].tolist(), strict=True):
        by[kk] = by.get(kk, 0) + int(c)
    return [
        {
            "lo_ns": 0 if b < 0 else 1 << b,
            "hi_ns": 1 if b < 0 else 1 << (b + 1),
            "count": by.get(b, 0),
        }
        for b in range(min(by), max(by) + 1)
    ]


def percentiles_of(values_ns) -> dict[str, float]:
    """``p50_ns``, ``p99_ns``, ``p999_ns`` of an array of latencies (ns) through this
    histogram (NaN when empty; negative values left out): what perf reports, so a
    benchmark's figure is the one ``bot4 stats`` would show for the same values."""
    v = np.asarray(values_ns, np.int64)
    h = new()
    record_many(h, v[v >= 0])
    if int(h[H_COUNT]) == 0:
        return {"p50_ns": math.nan, "p99_ns": math.nan, "p999_ns": math.nan}
    p50, p99, p999 = values_at_percentiles(counts_of(h), (50.0, 99.0, 99.9))
    return {"p50_ns": float(p50), "p99_ns": float(p99), "p999_ns": float(p999)}


def cumulative_at(counts: np.ndarray, bounds_ns) -> list[int]:
    """Values ``<= b`` for each bound ``b`` (ns), counted by index: an index whose highest
    value is <= b. For Prometheus' ``le`` buckets; the last bucket is ``+Inf`` = total."""
    cum = np.cumsum(counts.astype(np.int64))
    out = []
    for b in bounds_ns:
        i = int(np.searchsorted(HIGHEST_AT, int(b), side="right")) - 1
        out.append(int(cum[i]) if i >= 0 else 0)
    return out


def to_hdrh(h: np.ndarray):
    """An ``hdrh.histogram.HdrHistogram`` with the same counts (for its encoding, its
    iterators or merging with other HdrHistogram tools). Needs the ``hdrhistogram`` package."""
    from hdrh.histogram import HdrHistogram

    out = HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)
    counts = counts_of(h)
    nz = np.flatnonzero(counts)
    for i in nz:
        out.counts[int(i)] = int(counts[i])
    if nz.size:
        out.set_internal_tacking_values(int(nz[0]), int(nz[-1]), int(counts.sum()))
    return out


def from_hdrh(other) -> np.ndarray:
    """A histogram (process memory) with the counts of an ``HdrHistogram`` of the same
    parameters (``ValueError`` otherwise)."""
    if (
        other.lowest_trackable_value != LOWEST_NS
        or other.sub_bucket_count != SUB_BUCKET_COUNT
        or other.counts_len != COUNTS_LEN
    ):
        raise ValueError("HdrHistogram parameters differ from bot4's (1 ns, 1 h, 2 figures)")
    h = new()
    c = np.ctypeslib.as_array(other.counts)[:COUNTS_LEN].astype(np.uint64)
    counts_of(h)[:] = c
    nz = np.flatnonzero(c)
    if nz.size:
        h[H_COUNT] = np.uint64(int(c.sum()))
        h[H_MIN] = np.uint64(int(LOWEST_AT[nz[0]]))
        h[H_MAX] = np.uint64(int(HIGHEST_AT[nz[-1]]))
        h[H_SUM] = np.uint64(int((c.astype(np.int64) * LOWEST_AT).sum()))
    return h
