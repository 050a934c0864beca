"""Execution content hash: the numba kernel and the numpy version agree on every record, and
the hash moves with every content field and with no other field."""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.records import EXEC_REPORT
from bot4.records.identity import EXEC_CONTENT_FIELDS, exec_content_hash, exec_content_hashes

SEED = 20240512


@njit(cache=True)
def _hash_each(records):
    out = np.empty(records.shape[0], np.int64)
    for i in range(records.shape[0]):
        out[i] = exec_content_hash(records[i])
    return out


def _random_reports(rng, n):
    r = np.zeros(n, EXEC_REPORT)
    for name in EXEC_REPORT.names:
        if name in ("reserved",) or r[name].ndim > 1:
            continue
        info = np.iinfo(r[name].dtype)
        r[name] = rng.integers(info.min, info.max, n, dtype=r[name].dtype, endpoint=True)
    return r


def test_numba_and_numpy_hashes_agree_on_random_reports():
    print("seed", SEED)
    r = _random_reports(np.random.default_rng(SEED), 2000)
    got = _hash_each(r)
    assert got.tolist() == exec_content_hashes(r).tolist()
    assert len(set(got.tolist())) == len(r)


def test_hash_moves_with_each_content_field_and_no_other():
    print("seed", SEED)
    base = _random_reports(np.random.default_rng(SEED + 1), 1)
    h0 = int(exec_content_hashes(base)[0])
    for name in EXEC_REPORT.names:
        if base[name].ndim > 1:
            continue
        other = base.copy()
        other[name] = other[name] ^ np.array(1, other[name].dtype)  # flip the lowest bit
        moved = int(exec_content_hashes(other)[0]) != h0
        assert moved == (name in EXEC_CONTENT_FIELDS), name
