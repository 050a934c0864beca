"""The numba cache key follows a kernel's callees into the files they moved to (issue 13):
``bot4.oms.lru``'s kernels call the kit map (``bot4/nbkit/u64map.py``) and its hash
(``bot4/nbkit/hash.py``); an edit there must recompile them, and leave a kernel that does
not use the kit loading from the cache (keyed by bot4/nbcache.py, which this test only
exercises)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot4 import nbcache
from tests.nbcache_copy import copy_package, run_in_copy

_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import bot4
    from bot4.nbkit import hash as kit_hash
    from bot4.oms import lru
    from bot4.risk import accounting

    m = lru.lru_new(4)  # 8 rows
    lru.lru_put(m, np.uint64(12345), 7)
    part = accounting.pro_rata(10, 1, 3)

    def stats(f):
        s = f.stats
        return {"path": s.cache_path, "hits": sum(s.cache_hits.values()),
                "misses": sum(s.cache_misses.values())}

    print(json.dumps({
        "bot4": bot4.__file__,
        "row": [int(i) for i in np.nonzero(m.tab[:, 0])[0]],
        "golden": int(kit_hash.GOLDEN),
        "pro_rata": int(part),
        "lru_put": stats(lru.lru_put),
        "accounting": stats(accounting.pro_rata),
    }))
    """
)


def _home(key: int, golden: int, rows: int) -> int:
    """splitmix64's finaliser in Python, with the increment ``golden``."""
    m = (1 << 64) - 1
    z = (key + golden) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return (z ^ (z >> 31)) & (rows - 1)


def _run_copy(pkg_parent: Path, cache: Path) -> dict:
    return run_in_copy(pkg_parent, cache, _CHILD)


def test_the_lru_key_covers_the_kit_files_it_calls_into():
    files = nbcache.closure_of("bot4.oms.lru")
    assert {"bot4.nbkit.u64map", "bot4.nbkit.hash"} <= files
    assert "bot4.nbkit.u64map" not in nbcache.closure_of("bot4.risk.accounting")


@pytest.mark.timeout(600)
def test_an_edit_in_the_kit_recompiles_the_kernels_that_call_it_and_nothing_else(tmp_path):
    src, cache = copy_package(tmp_path)
    first = _run_copy(src, cache)
    assert Path(first["bot4"]).parent == src / "bot4"  # the copy, not the working tree
    assert first["row"] == [_home(12345, first["golden"], 8)]
    assert first["lru_put"]["misses"] == 1 and first["accounting"]["misses"] == 1

    again = _run_copy(src, cache)  # nothing changed: both load from the cache
    assert again["lru_put"] == {**first["lru_put"], "hits": 1, "misses": 0}
    assert again["accounting"] == {**first["accounting"], "hits": 1, "misses": 0}

    # another increment in the hash module: every probe of the map starts elsewhere
    hash_py = src / "bot4" / "nbkit" / "hash.py"
    text = hash_py.read_text()
    old = "GOLDEN = np.uint64(0x9E3779B97F4A7C15)"
    assert old in text
    hash_py.write_text(text.replace(old, "GOLDEN = np.uint64(0x9E3779B97F4A7C17)"))

    edited = _run_copy(src, cache)
    assert edited["golden"] == 0x9E3779B97F4A7C17
    # the LRU kernel, two files away from the edit, was recompiled under a new key and
    # stores the key in the row the new hash gives (the old machine code would not)
    assert edited["lru_put"]["misses"] == 1 and edited["lru_put"]["hits"] == 0
    assert edited["lru_put"]["path"] != first["lru_put"]["path"]
    assert edited["row"] == [_home(12345, edited["golden"], 8)]
    assert _home(12345, edited["golden"], 8) != _home(12345, first["golden"], 8)
    # the kernel that does not reach the kit kept its key and loaded from the cache
    assert edited["accounting"] == again["accounting"]
    assert edited["pro_rata"] == 3
