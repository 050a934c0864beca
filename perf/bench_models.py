"""Model registry benchmarks (pyperf), each against a baseline measured in the same run:

* model load: ``map_model`` (open + mmap + validate + prefault) of a ~10 k-parameter tree
  ensemble vs ``np.load`` of the same five arrays from ``.npy`` files (read whole), and vs
  ``np.load(mmap_mode="r")`` of them;
* routing: the per-quote decision (``to_challenger``: splitmix64 of instrument and tick
  sequence, modulo 10 000, compare) in a numba loop vs the same loop without it; reports
  the difference per decision and the ratio;
* tree scoring: the numba scorer per tick (a loop over rows, as the kernel calls it) vs
  LightGBM's ``predict`` on one row and on a batch of 256 (per row), when lightgbm is
  installed (``.[models]``).

    .venv/bin/python perf/bench_models.py --fast
    .venv/bin/python perf/bench_models.py -o perf/results/models.json
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402
from numba import njit  # noqa: E402

from bot4.models.artifact import Model, map_model, to_bytes  # noqa: E402
from bot4.models.scoring import score_rows  # noqa: E402
from bot4.stages import signals as S  # noqa: E402
from bot4.stages.signals_models import MODE_SPLIT, NROUTE, R_MODE, R_PCT_BP, to_challenger  # noqa: E402

N_ROUTE = 10_000_000
N_ROWS = 100_000
TREES, LEAVES = 100, 50  # 100 x (49 thresholds + 50 leaves) = 9,900 parameters


def random_trees(rng, trees: int = TREES, leaves: int = LEAVES) -> Model:
    """A random ensemble of ``trees`` trees with ``leaves`` leaves each (random splits)."""
    nf = len(S.FEATURES)
    roots, nodes, thr, leaf = [], [], [], []
    n0 = l0 = 0
    for _ in range(trees):
        # grow by splitting a random leaf: node k's children are later nodes or leaves
        kids = [[~0, ~0]]  # node 0 with two leaf placeholders
        open_slots = [(0, 0), (0, 1)]
        n_leaves = 2
        while n_leaves < leaves:
            node, side = open_slots.pop(int(rng.integers(len(open_slots))))
            kids[node][side] = len(kids)
            kids.append([~0, ~0])
            open_slots += [(len(kids) - 1, 0), (len(kids) - 1, 1)]
            n_leaves += 1
        for i, (node, side) in enumerate(sorted(open_slots)):
            kids[node][side] = ~(l0 + i)
        for k in kids:
            nodes.append(
                [int(rng.integers(nf)), k[0] + n0 if k[0] >= 0 else k[0],
                 k[1] + n0 if k[1] >= 0 else k[1], 2]
            )  # fmt: skip
        thr.extend(rng.normal(size=len(kids)))
        leaf.extend(rng.normal(scale=0.1, size=leaves))
        roots.append(n0)
        n0 += len(kids)
        l0 += leaves
    return Model(
        "trees", S.FEATURES, np.zeros(0), np.array(roots, np.int32), np.array(nodes, np.int32),
        np.array(thr), np.array(leaf), {},
    )  # fmt: skip


@njit(nogil=True, cache=False)
def empty_loop(route, n):
    acc = np.uint64(0)
    for i in range(n):
        acc += np.uint64(i & 7)
    return acc


@njit(nogil=True, cache=False)
def routed_loop(route, n):
    acc = np.uint64(0)
    for i in range(n):
        acc += np.uint64(i & 7) + np.uint64(to_challenger(route, 1 + (i & 7), i))
    return acc


def _time(loops: int, fn) -> float:
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        fn()
    return pyperf.perf_counter() - t0


def prepare(tmp: Path) -> None:
    """The model files, made once for the parent and every pyperf worker (training
    LightGBM in each worker would cost more than the benchmarks)."""
    if (tmp / "done").is_file():
        return
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    model = random_trees(rng)
    (tmp / "m.b4m").write_bytes(to_bytes(model))
    for name, a in zip(ARRAY_NAMES, model.arrays, strict=True):
        np.save(tmp / f"{name}.npy", a)
    np.save(tmp / "Z.npy", rng.standard_normal((N_ROWS, len(S.FEATURES))))
    try:
        import lightgbm as lgb

        X = rng.standard_normal((5000, len(S.FEATURES)))
        booster = lgb.train(
            {"objective": "regression", "num_leaves": LEAVES, "min_data_in_leaf": 5, "verbose": -1,
             "num_threads": 1},
            lgb.Dataset(X, X[:, 0] - X[:, 1] ** 2), num_boost_round=TREES,
        )  # fmt: skip
        booster.save_model(str(tmp / "lgb.txt"))
    except ImportError:
        pass
    (tmp / "done").write_text("ok")


ARRAY_NAMES = ("lin", "roots", "nodes", "thr", "leaf")


def main() -> None:
    runner = pyperf.Runner()
    runner.parse_args()
    tmp = Path(tempfile.gettempdir()) / f"bot4-bench-models-{os.getuid()}"
    if not runner.args.worker:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    prepare(tmp)
    path = tmp / "m.b4m"
    model = map_model(path)
    npy = [tmp / f"{name}.npy" for name in ARRAY_NAMES]
    route = np.zeros(NROUTE, np.int64)
    route[R_MODE], route[R_PCT_BP] = MODE_SPLIT, 500
    empty_loop(route, 10)
    routed_loop(route, 10)
    Z = np.load(tmp / "Z.npy")
    out = np.empty(N_ROWS)
    score_rows(*model.arrays, Z[:10], out[:10])

    res = {}
    res["load_mmap"] = runner.bench_time_func(
        "model load: mmap + validate + prefault", _time, lambda: map_model(path)
    )
    res["load_np"] = runner.bench_time_func(
        "model load: np.load of the 5 arrays", _time, lambda: [np.load(p) for p in npy]
    )
    res["load_np_mmap"] = runner.bench_time_func(
        "model load: np.load(mmap_mode='r') of the 5 arrays", _time,
        lambda: [np.load(p, mmap_mode="r") for p in npy],
    )  # fmt: skip
    res["empty"] = runner.bench_time_func(
        "routing: empty loop (10 M)", _time, lambda: empty_loop(route, N_ROUTE)
    )
    res["routed"] = runner.bench_time_func(
        "routing: decision loop (10 M)", _time, lambda: routed_loop(route, N_ROUTE)
    )
    res["score"] = runner.bench_time_func(
        "trees: numba score per row (100 k rows)", _time, lambda: score_rows(*model.arrays, Z, out)
    )
    if (tmp / "lgb.txt").is_file():
        import lightgbm as lgb

        from bot4.models.trees import from_lightgbm_file

        booster = lgb.Booster(model_file=str(tmp / "lgb.txt"))
        lm = from_lightgbm_file(tmp / "lgb.txt", S.FEATURES)
        score_rows(*lm.arrays, Z[:10], out[:10])
        res["lgb_numba"] = runner.bench_time_func(
            "trees (LightGBM-trained): numba score per row (100 k rows)", _time,
            lambda: score_rows(*lm.arrays, Z, out),
        )  # fmt: skip
        one = np.ascontiguousarray(Z[:1])
        b256 = np.ascontiguousarray(Z[:256])
        res["lgb_one"] = runner.bench_time_func(
            "trees: lightgbm predict, one row", _time,
            lambda: booster.predict(one, num_threads=1),
        )  # fmt: skip
        res["lgb_256"] = runner.bench_time_func(
            "trees: lightgbm predict, batch of 256", _time,
            lambda: booster.predict(b256, num_threads=1),
        )  # fmt: skip
    if runner.args.worker or any(v is None for v in res.values()):
        return
    t = {k: v.median() for k, v in res.items()}
    print()
    print(
        f"model: {model.n_params:,} parameters ({TREES} trees x {LEAVES} leaves), {path.stat().st_size:,} bytes"
    )
    print(f"  load mmap+validate+prefault  {t['load_mmap'] * 1e6:8.1f} us")
    print(
        f"  np.load (read whole)         {t['load_np'] * 1e6:8.1f} us   mmap load is {t['load_np'] / t['load_mmap']:.2f}x faster"
    )
    print(
        f"  np.load(mmap_mode='r')       {t['load_np_mmap'] * 1e6:8.1f} us   mmap load is {t['load_np_mmap'] / t['load_mmap']:.2f}x faster"
    )
    d = (t["routed"] - t["empty"]) / N_ROUTE * 1e9
    print(f"routing decision: {t['routed'] / N_ROUTE * 1e9:.2f} ns/iter vs empty {t['empty'] / N_ROUTE * 1e9:.2f} ns/iter: "
          f"+{d:.2f} ns per decision ({t['routed'] / t['empty']:.2f}x the empty loop)")  # fmt: skip
    print(f"tree scoring (random {TREES}x{LEAVES}): {t['score'] / N_ROWS * 1e9:.0f} ns/row")
    if "lgb_one" in t:
        per = t["lgb_numba"] / N_ROWS * 1e9
        print(f"tree scoring (LightGBM-trained {TREES} trees): numba {per:.0f} ns/row; lightgbm predict "
              f"one row {t['lgb_one'] * 1e9:,.0f} ns ({t['lgb_one'] * 1e9 / per:.0f}x), batch of 256 "
              f"{t['lgb_256'] / 256 * 1e9:,.0f} ns/row ({t['lgb_256'] / 256 * 1e9 / per:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
