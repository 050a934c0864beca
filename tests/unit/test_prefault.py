"""bot4.stages.prefault: a stage's private tables have every page written once at setup
(contents unchanged), shared memory is never written, and the hot-path stages name
their tables."""

from __future__ import annotations

import mmap
import resource
from collections import namedtuple

import numba
import numpy as np

from bot4.stages.prefault import PAGE, prefault
from tests.seeds import seeded_rng

State = namedtuple("State", "table ids")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_pages_are_mapped_and_contents_unchanged():
    rng, _seed = seeded_rng("prefault contents")
    table = np.zeros((1 << 17, 2), np.int64)  # 2 MiB of fresh zero pages
    ids = rng.integers(0, 1 << 62, 1 << 16).astype(np.uint64)  # 512 KiB, written
    before = ids.copy()
    covered = prefault(State(table, [ids, {"view": table[10:20]}]))
    assert covered == table.nbytes + ids.nbytes  # each array once, the view not again
    assert not table.any() and np.array_equal(ids, before)
    f0 = _faults()
    table.view(np.uint8).reshape(-1)[::PAGE] = 1  # the kernels' first writes
    assert _faults() - f0 < 8  # 512 pages, each mapped already


@numba.njit(cache=False)
def _numba_table(n):
    return np.zeros(n, np.int64)


def test_numbas_arrays_are_covered_and_shared_memory_is_not():
    nb = _numba_table(1 << 16)
    assert type(nb.base).__name__ == "_MemInfo"
    shared = mmap.mmap(-1, 16 * PAGE)  # stands for a segment: another process's to write
    seg = np.frombuffer(shared, np.uint8)
    ro = np.zeros(4 * PAGE, np.uint8)
    ro.flags.writeable = False
    assert prefault((nb, seg, ro, 3, "x", None)) == nb.nbytes
    del seg
    shared.close()


def test_the_hot_path_stages_name_their_tables():
    from bot4.stages.hotpath import _bench_members

    members, _rings = _bench_members()
    covered = {m.spec.name: prefault(m.stage.hot_tables()) for m in members}
    # signals' state is a few small arrays (under a page each); the OMS's id maps (2 MiB
    # each) are the ones that faulted live
    assert covered["risk"] > 0 and covered["orders"] > 1 << 20, covered
