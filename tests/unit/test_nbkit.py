"""The numba kit (bot4.nbkit): the u64 map against a dict, the hash, saturating maths,
the stamp copy."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from numba import njit

from bot4.nbkit import (
    STAMP_FIELDS,
    add_sat,
    copy_stamps,
    map_capacity_for,
    map_delete,
    map_find,
    map_home,
    map_new,
    map_put,
    map_rehash,
    mul_sat,
    splitmix64,
    unowned,
)
from bot4.nbkit.prefetch import prefetch
from bot4.records import EXEC_REPORT, MARKET_DATA, ORDER, ORDER_INTENT, RISK_DECISION
from tests.seeds import seeded_rng

INT64_MAX = 2**63 - 1


def _as_i64(key: int) -> int:
    return key - (1 << 64) if key >= 1 << 63 else key


def _check_table(tab: np.ndarray, ref: dict[int, int]) -> None:
    """Every reference key is found with its value; nothing else is stored; every entry
    sits in an unbroken probe run from its home (what backward-shift deletion keeps)."""
    mask = tab.shape[0] - 1
    stored = {int(k) for k in tab[:, 0] if k != 0}
    assert stored == {_as_i64(k) for k in ref}
    for key, value in ref.items():
        s = map_find(tab, np.uint64(key))
        assert s >= 0 and tab[s, 1] == value and tab[s, 2] == ~value
    for s in np.nonzero(tab[:, 0])[0]:
        i = int(map_home(tab[s, 0], mask))
        while i != s:
            assert tab[i, 0] != 0, "an empty row inside a probe run"
            i = (i + 1) & mask


@pytest.mark.parametrize("rows", [8, 64])
def test_u64_map_matches_a_dict_under_random_puts_finds_and_deletes(rows):
    rng, _seed = seeded_rng(f"u64 map, {rows} rows")
    # a small pool forces collisions, re-puts and deletes of absent keys; both ends of u64
    pool = [int(k) for k in rng.integers(1, 1 << 63, rows * 2, dtype=np.uint64)]
    pool += [1, 2, 3, (1 << 64) - 1, 1 << 63, (7 << 48) | 5]
    tab = map_new(rows, 3)
    ref: dict[int, int] = {}
    for step in range(4000):
        key = pool[int(rng.integers(len(pool)))]
        op = rng.random()
        if op < 0.5:
            s = map_put(tab, np.uint64(key))
            if len(ref) == rows and key not in ref:
                assert s == -1  # full: no row, nothing changed
            else:
                assert s >= 0 and tab[s, 0] == _as_i64(key)
                if key not in ref:
                    assert tab[s, 1] == 0 and tab[s, 2] == 0  # a claimed row is zeroed
                tab[s, 1], tab[s, 2] = step, ~step
                ref[key] = step
        elif op < 0.8:
            s = map_find(tab, np.uint64(key))
            if key in ref:
                map_delete(tab, s)
                del ref[key]
            else:
                assert s == -1
        else:
            assert (map_find(tab, np.uint64(key)) >= 0) == (key in ref)
        if step % 97 == 0 or len(ref) >= rows - 1:
            _check_table(tab, ref)
    _check_table(tab, ref)


def test_key_zero_is_the_empty_mark_and_never_stored():
    tab = map_new(8, 2)
    assert map_put(tab, 0) == -1 and map_find(tab, 0) == -1
    assert not tab.any()


def test_rehash_moves_every_entry_and_reports_a_table_too_small():
    rng, _seed = seeded_rng("u64 map rehash")
    tab = map_new(64, 3)
    ref = {}
    for key in rng.integers(1, 1 << 62, 40, dtype=np.int64):
        s = map_put(tab, key)
        tab[s, 1], tab[s, 2] = key // 3, ~(key // 3)
        ref[int(key)] = int(key) // 3
    big = map_new(128, 3)
    assert map_rehash(tab, big) == len(ref)
    _check_table(big, ref)
    assert map_rehash(tab, map_new(32, 3)) == -1


def test_map_sizes():
    assert map_capacity_for(0) == 8 and map_capacity_for(6) == 8 and map_capacity_for(7) == 16
    assert map_capacity_for(3000) == 4096  # 3000 / 4096 = 0.73
    with pytest.raises(ValueError):
        map_new(12, 2)


def test_splitmix64_is_the_reference_generator():
    # the first outputs of splitmix64 seeded with 0 (Vigna's reference implementation)
    state, out = 0, []
    gamma = 0x9E3779B97F4A7C15
    for _ in range(3):
        out.append(int(splitmix64(np.uint64(state))))
        state = (state + gamma) % (1 << 64)
    assert out == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_saturating_arithmetic_matches_clamped_big_integers():
    rng, _seed = seeded_rng("saturating arithmetic")
    edge = [0, 1, -1, 2, -2, INT64_MAX, -INT64_MAX, -(2**63), 2**32, -(2**32), 3037000499]
    vals = edge + [int(v) for v in rng.integers(-(2**63), 2**63 - 1, 200, dtype=np.int64)]
    vals += [int(v) for v in rng.integers(-(2**33), 2**33, 200)]

    def clamp(x: int) -> int:
        return max(-INT64_MAX, min(INT64_MAX, x))

    for _ in range(3000):
        a = vals[int(rng.integers(len(vals)))]
        b = vals[int(rng.integers(len(vals)))]
        assert mul_sat(np.int64(a), np.int64(b)) == clamp(a * b), (a, b)
        if a != -(2**63) and b != -(2**63):
            assert add_sat(np.int64(a), np.int64(b)) == clamp(a + b), (a, b)


@njit(nogil=True, cache=True)
def _stamp_all(dst, src):
    for i in range(dst.shape[0]):
        copy_stamps(dst[i], src[i])


@pytest.mark.parametrize(
    "dst_t, src_t",
    [
        (RISK_DECISION, ORDER_INTENT),
        (ORDER, ORDER_INTENT),
        (EXEC_REPORT, ORDER),
        (ORDER, ORDER),
        (MARKET_DATA, MARKET_DATA),
    ],
)
def test_copy_stamps_copies_exactly_the_shared_stamp_fields(dst_t, src_t):
    rng, _seed = seeded_rng("copy_stamps")
    src = np.zeros(3, src_t)
    for f in src_t.names:
        if src_t[f].kind in "iu" and src_t[f].shape == ():
            src[f] = rng.integers(1, 1 << 40, 3)
    dst = np.zeros(3, dst_t)
    _stamp_all(dst, src)
    shared = [f for f in STAMP_FIELDS if f in dst_t.names and f in src_t.names]
    assert shared and "ts_event_ns" in shared
    for f in dst_t.names:
        if f in shared:
            assert (dst[f] == src[f]).all(), f
        else:
            assert not np.asarray(dst[f]).any(), f  # nothing else written: seq is the caller's
    py = np.zeros(1, dst_t)
    copy_stamps(py[0], src[0])  # the Python version agrees
    assert py[0] == dst[0]


@njit(cache=True)
def _borrowed_sum_and_bump(a):
    b = unowned(a)
    s = 0
    for i in range(b.shape[0]):
        b[i] += 1
        s += b[i]
    return s


@njit(cache=True)
def _prefetched_sum(a, ahead):
    s = 0
    for i in range(a.shape[0]):
        prefetch(a, i + ahead, 0)  # beyond the last row and below 0: clamped
        prefetch(a, i - ahead, a.shape[1] - 1)
        s += a[i, 0]
    return s


def test_unowned_view_shares_the_array_and_prefetch_changes_nothing():
    a = np.arange(10, dtype=np.int64)
    assert _borrowed_sum_and_bump(a) == sum(range(1, 11))
    assert (a == np.arange(1, 11)).all()  # the borrowed view wrote the caller's array
    m = np.arange(12, dtype=np.int64).reshape(6, 2)
    for ahead in (0, 1, 4, 100):
        assert _prefetched_sum(m, ahead) == int(m[:, 0].sum())
    assert _prefetched_sum(np.zeros((0, 3), np.int64), 4) == 0  # empty: nothing fetched


_Inner = namedtuple("_Inner", "x y")
_State = namedtuple("_State", "a inner")


@njit(cache=True)
def _borrowed_state_bump(st):
    b = unowned(st)  # a state object: every array in it, nested ones too, borrowed
    b.a[0] += 1
    b.inner.x[1] += 2
    b.inner.y[2] += 3
    return b.a.sum() + b.inner.x.sum() + b.inner.y.sum()


def test_unowned_state_object_borrows_every_array_and_writes_through():
    st = _State(np.zeros(3, np.int64), _Inner(np.zeros(3, np.int64), np.zeros(3, np.int64)))
    assert _borrowed_state_bump(st) == 6
    assert st.a.tolist() == [1, 0, 0]
    assert st.inner.x.tolist() == [0, 2, 0] and st.inner.y.tolist() == [0, 0, 3]
