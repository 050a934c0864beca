"""numba's cache keyed by dependencies (bot4/nbcache.py): an edit to a module recompiles the
kernels that import it, transitively, and nothing else; pruning never takes a key a running
process holds."""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bot4 import nbcache, nbcache_prune
from bot4.risk import accounting as _acc
from tests.nbcache_copy import copy_package, run_in_copy

#: the module that defines the average-cost kernels (moves as issue 13 splits packages)
_ACCOUNTING = _acc.pro_rata.py_func.__module__

# --- which modules a key covers ------------------------------------------------------------


def test_ring_ops_key_covers_ring_layout_and_its_callees_only():
    files = nbcache.closure_of("bot4.shm.ring_ops")
    assert {"bot4.shm.ring_ops", "bot4.shm.ring_layout", "bot4.shm.atomics"} <= files
    assert "bot4.risk.limits" not in files and "bot4.stages.loop" not in files


def test_risk_checks_key_covers_its_imports_transitively():
    """The risk kernels read column constants and call helpers from other files (their
    names move as the package splits, issue 13): every module checks imports is in its
    key, and so are the modules those import (``records.dtypes`` through ``records``)."""
    files = nbcache.closure_of("bot4.risk.checks")
    direct = nbcache.imports_of("bot4.risk.checks")
    assert len(direct) >= 3 and direct <= files
    assert "bot4.records.dtypes" not in direct and "bot4.records.dtypes" in files
    assert _ACCOUNTING in files


def test_venue_kernel_keys_cover_the_modules_the_venue_was_split_into():
    """The venue's kernels call helpers across its modules (layout, book, reports, match,
    orders, feed: issue 13): an edit of any one recompiles the kernels that reach it and
    no others (the books' helpers do not depend on the feed)."""
    feed = nbcache.closure_of("bot4.venue.feed")
    parts = {f"bot4.venue.{m}" for m in ("layout", "book", "queue_model", "reports", "match")}
    assert parts <= feed
    assert parts - {"bot4.venue.queue_model"} <= nbcache.closure_of("bot4.venue.orders")
    book = nbcache.closure_of("bot4.venue.book")
    assert "bot4.venue.layout" in book and not {"bot4.venue.feed", "bot4.venue.match"} & book


def test_accounting_key_depends_on_nothing_else():
    assert nbcache.closure_of(_ACCOUNTING) == {_ACCOUNTING}


def test_module_names_and_files_round_trip():
    for name in ("bot4", "bot4.shm", "bot4.shm.ring_ops"):
        assert nbcache.module_of(nbcache.module_file(name)) == name
    assert nbcache.module_of(__file__) is None  # tests are not bot4's: numba's own locators


def test_import_bot4_does_not_import_numba_and_the_locator_is_first_either_way():
    code = textwrap.dedent(
        """
        import sys
        if sys.argv[1] == "numba-first":
            import numba.core.caching
        import bot4
        before = "numba" in sys.modules
        import numba.core.caching as c
        impl = getattr(c, "CacheImpl", None) or c._CacheImpl
        print(before, impl._locator_classes[0].__name__,
              sum(getattr(k, "_bot4_keyed", False) for k in impl._locator_classes))
        """
    )
    for order, numba_before in (("bot4-first", "False"), ("numba-first", "True")):
        out = subprocess.run(
            [sys.executable, "-c", code, order], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [numba_before, "KeyedCacheLocator", "1"], order


def _spawned_cache_path(q) -> None:
    from bot4.risk import accounting

    q.put(accounting.pro_rata.stats.cache_path)


def test_a_spawned_process_caches_under_the_keyed_root(tmp_path, monkeypatch):
    """Stage processes are spawned: they import bot4 afresh and must key their cache too."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_spawned_cache_path, args=(q,))
    p.start()
    try:
        path = q.get(timeout=120)
    finally:
        p.join(30)
        if p.is_alive():
            os.kill(p.pid, 9)
            p.join(5)
    assert Path(path).parent == tmp_path
    assert re.fullmatch(rf"{re.escape(_ACCOUNTING)}-[0-9a-f]{{16}}", Path(path).name)


# --- an edit recompiles exactly the kernels that depend on it --------------------------

_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import bot4
    from bot4.risk import accounting
    from bot4.shm import ring_layout, ring_ops

    hdr = np.zeros(ring_layout.HEADER_WORDS, np.uint64)
    ring_ops.count_rejection(hdr, 5)
    part = accounting.pro_rata(10, 1, 3)

    def stats(f):
        s = f.stats
        return {"path": s.cache_path, "hits": sum(s.cache_hits.values()),
                "misses": sum(s.cache_misses.values())}

    print(json.dumps({
        "bot4": bot4.__file__,
        "written": [int(i) for i in np.nonzero(hdr)[0]],
        "pro_rata": int(part),
        "ring_ops": stats(ring_ops.count_rejection),
        "accounting": stats(accounting.pro_rata),
    }))
    """
)


def _run_copy(pkg_parent: Path, cache: Path) -> dict:
    return run_in_copy(pkg_parent, cache, _CHILD)


@pytest.mark.timeout(600)
def test_layout_constant_edit_recompiles_its_readers_and_nothing_else(tmp_path):
    src, cache = copy_package(tmp_path)

    first = _run_copy(src, cache)
    assert Path(first["bot4"]).parent == src / "bot4"  # the copy, not the installed tree
    layout = src / "bot4" / "shm" / "ring_layout.py"
    text = layout.read_text()
    old = int(re.search(r"^W_PRODUCER_REJECTIONS = (\d+)$", text, re.M).group(1))
    assert first["written"] == [old] and first["pro_rata"] == 3
    assert first["ring_ops"]["misses"] == 1 and first["accounting"]["misses"] == 1

    again = _run_copy(src, cache)  # nothing changed: both load from the cache
    assert again["ring_ops"] == {**first["ring_ops"], "hits": 1, "misses": 0}
    assert again["accounting"] == {**first["accounting"], "hits": 1, "misses": 0}

    # move the rejection counter to the last header word (unused by any other W_*)
    new = int(re.search(r"^HEADER_BYTES = (\d+)$", text, re.M).group(1)) // 8 - 1
    assert not re.search(rf"^W_\w+ = {new}\b", text, re.M)
    layout.write_text(
        text.replace(f"W_PRODUCER_REJECTIONS = {old}\n", f"W_PRODUCER_REJECTIONS = {new}\n")
    )

    edited = _run_copy(src, cache)
    # the kernel reading the constant was recompiled under a new key and uses the new word
    assert edited["written"] == [new]
    assert edited["ring_ops"]["misses"] == 1 and edited["ring_ops"]["hits"] == 0
    assert edited["ring_ops"]["path"] != first["ring_ops"]["path"]
    # the kernel that does not import ring_layout kept its key and loaded from the cache
    assert edited["accounting"] == again["accounting"]
    assert edited["pro_rata"] == 3
    keys = sorted(p.name for p in cache.iterdir() if p.name.startswith("bot4.shm.ring_ops-"))
    assert len(keys) == 2


# --- pruning --------------------------------------------------------------------------


def _fake_key(root: Path, name: str, info: dict) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / nbcache.INFO_NAME).write_text(json.dumps(info))
    (d / "k.nbi").write_bytes(b"x" * 100)
    return d


def test_prune_removes_only_unused_keys_and_never_a_held_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    cur = nbcache.key_of("bot4.risk.accounting")
    current = _fake_key(tmp_path, cur.dirname, {})
    other_simd = _fake_key(
        tmp_path,
        "bot4.risk.accounting-00000000000000aa",
        {"module": cur.module, "source": cur.source, "toolchain": cur.toolchain, "target": "x"},
    )
    stale = _fake_key(tmp_path, "bot4.risk.accounting-00000000000000bb", {"source": "old"})
    stale_held = _fake_key(tmp_path, "bot4.shm.ring_ops-00000000000000cc", {"source": "old"})
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    leftover = tmp_path / ".prune-bot4.x-00000000000000dd-1"
    leftover.mkdir()

    held = os.open(stale_held / nbcache.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)  # a running process using the stale key
        dry = nbcache_prune.prune(dry_run=True)
        assert dry.removed == [stale.name] and stale.is_dir()
        rep = nbcache_prune.prune()
    finally:
        os.close(held)
    assert rep.removed == [stale.name] and rep.freed_bytes >= 100
    assert rep.in_use == [stale_held.name]
    assert rep.other_target == [other_simd.name]
    assert rep.current == [current.name]
    assert not stale.exists() and not leftover.exists()
    assert stale_held.is_dir() and current.is_dir() and other_simd.is_dir() and foreign.is_dir()
    assert nbcache_prune.prune().removed == [stale_held.name]  # released: now it goes


def test_a_claim_waiting_on_a_prune_recreates_the_directory(tmp_path):
    """A process that asks for a key while prune holds it exclusively gets it afresh."""
    key = nbcache.key_of("bot4.risk.accounting")
    d = tmp_path / key.dirname
    d.mkdir()
    lock = d / nbcache.LOCK_NAME
    pruner = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(pruner, fcntl.LOCK_EX)
    got: list = []
    t = threading.Thread(target=lambda: got.append(nbcache._claim(d, key)), daemon=True)
    t.start()
    try:
        t.join(0.5)
        assert not got  # blocked behind the exclusive lock
        os.rename(d, tmp_path / ".prune-x")
        shutil.rmtree(tmp_path / ".prune-x")
    finally:
        os.close(pruner)
    t.join(30)
    assert got, "claim did not return"
    fd = got[0]
    try:
        assert (d / nbcache.INFO_NAME).is_file()
        assert os.fstat(fd).st_ino == os.stat(d / nbcache.LOCK_NAME).st_ino
        probe = os.open(d / nbcache.LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    finally:
        os.close(fd)


# --- concurrent writers ------------------------------------------------------------------


def _save_many(d: str, who: int, n: int, barrier, base: bool) -> None:
    import numba.core.caching as caching

    nbcache._keyed_paths.add(d)  # as if this process had claimed the key directory
    cls = caching.IndexDataCacheFile
    if base:
        cls = cls.__mro__[1]  # numba's own, unlocked
    f = cls(cache_path=d, filename_base="f", source_stamp=b"stamp")
    barrier.wait(60)
    for i in range(n):
        f.save(("sig", who, i), ("code", who, i))


def test_concurrent_writers_of_one_function_keep_every_signature_with_its_own_code(tmp_path):
    """Four processes add 40 signatures each to one function's index at the same moment
    (two stage processes compiling ``push_wait`` for two record types): afterwards every
    signature is indexed and loads its own data, never another's. numba's own ``save``
    (``base=True``) loses entries here and can index another signature's data file."""
    import numba.core.caching as caching

    assert getattr(caching.IndexDataCacheFile, "_bot4_locked", False)
    ctx = mp.get_context("spawn")
    workers, n = 4, 40
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_save_many, args=(str(tmp_path), w, n, barrier, False))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, 9)
                p.join(5)
    f = caching.IndexDataCacheFile(
        cache_path=str(tmp_path), filename_base="f", source_stamp=b"stamp"
    )
    index = f._load_index()
    assert len(index) == workers * n and len(set(index.values())) == workers * n
    for w in range(workers):
        for i in range(n):
            assert f.load(("sig", w, i)) == ("code", w, i)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp." in p.name]


# --- kernel files outside the package (benchmarks, test helpers) --------------------------

_EXT_KERNEL = textwrap.dedent(
    """
    from numba import njit

    import neighbour
    from bot4.shm import ring_ops


    @njit(cache=True)
    def bump(hdr, n):
        for _ in range(n):
            ring_ops.count_rejection(hdr, neighbour.STEP)
    """
)

_NEIGHBOUR = textwrap.dedent(
    """
    from numba import njit

    STEP = {step}


    @njit(cache=True)
    def plain(x):
        return x + 1
    """
)

_EXT_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import bot4
    from bot4.shm import ring_layout
    sys.path.insert(0, {bench!r})
    import kern

    hdr = np.zeros(ring_layout.HEADER_WORDS, np.uint64)
    kern.bump(hdr, 2)
    kern.neighbour.plain(1)

    def stats(f):
        s = f.stats
        return {{"path": s.cache_path, "hits": sum(s.cache_hits.values()),
                "misses": sum(s.cache_misses.values())}}

    print(json.dumps({{
        "written": {{int(i): int(hdr[i]) for i in np.nonzero(hdr)[0]}},
        "bump": stats(kern.bump),
        "plain": stats(kern.neighbour.plain),
    }}))
    """
)


@pytest.mark.timeout(600)
def test_a_kernel_file_outside_the_package_recompiles_when_the_bot4_code_it_calls_changes(
    tmp_path,
):
    # numba keys a file's cache on that file alone; perf/riskbench.py's loop kept an old
    # check_intents compiled in after bot4/risk changed (the gate measured the old code)
    src, cache = copy_package(tmp_path)
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "kern.py").write_text(_EXT_KERNEL)
    (bench / "neighbour.py").write_text(_NEIGHBOUR.format(step=5))
    child = _EXT_CHILD.format(bench=str(bench))
    layout = src / "bot4" / "shm" / "ring_layout.py"
    text = layout.read_text()
    old = int(re.search(r"^W_PRODUCER_REJECTIONS = (\d+)$", text, re.M).group(1))

    first = run_in_copy(src, cache, child)
    assert first["written"] == {str(old): 10}
    assert first["bump"]["misses"] == 1
    assert Path(first["bump"]["path"]).parent == cache
    assert Path(first["bump"]["path"]).name.startswith("ext.bench_")
    # a file whose imports reach no bot4 code is left to numba's own locators
    assert first["plain"]["misses"] == 1
    assert not Path(first["plain"]["path"]).name.startswith("ext.")

    again = run_in_copy(src, cache, child)
    assert again["bump"] == {**first["bump"], "hits": 1, "misses": 0}

    new = int(re.search(r"^HEADER_BYTES = (\d+)$", text, re.M).group(1)) // 8 - 1
    layout.write_text(
        text.replace(f"W_PRODUCER_REJECTIONS = {old}\n", f"W_PRODUCER_REJECTIONS = {new}\n")
    )
    edited = run_in_copy(src, cache, child)
    assert edited["written"] == {str(new): 10}  # the bot4 edit reached the outside kernel
    assert edited["bump"]["misses"] == 1 and edited["bump"]["path"] != first["bump"]["path"]

    (bench / "neighbour.py").write_text(
        _NEIGHBOUR.format(step=7)
    )  # a neighbour it imports by plain name
    moved = run_in_copy(src, cache, child)
    assert moved["written"] == {str(new): 14}
    assert moved["bump"]["misses"] == 1 and moved["bump"]["path"] != edited["bump"]["path"]
