"""Model artifacts: the flat file round-trips and is refused when damaged; the numba scorer
equals LightGBM's own predict on random inputs (zeros and NaN included)."""

from __future__ import annotations

import numpy as np
import pytest

from bot4.models.artifact import ModelError, linear_model, map_model, to_bytes
from bot4.models.scoring import score_matrix
from bot4.stages import signals as S
from tests.seeds import seeded_rng


def write(tmp_path, model, name="m.b4m"):
    p = tmp_path / name
    p.write_bytes(to_bytes(model))
    return p


def test_linear_model_round_trips_through_the_mapped_file(tmp_path):
    m = map_model(write(tmp_path, linear_model(S.DEFAULT_MODEL, S.FEATURES)))
    assert m.kind == "linear" and m.features == S.FEATURES
    assert not m.lin.flags.writeable  # a read-only view of the mapping
    assert np.array_equal(m.lin, S.DEFAULT_MODEL)
    Z = np.random.default_rng(0).standard_normal((100, len(S.FEATURES)))
    # the kernel's own order of operations: bias, then each weight in turn
    ref = np.array(
        [S.DEFAULT_MODEL[0] + sum(S.DEFAULT_MODEL[k + 1] * z[k] for k in range(len(z))) for z in Z]
    )
    assert np.array_equal(score_matrix(m, Z), ref)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) - 8], "truncated"),
        (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
        (lambda b: b[:10], "truncated"),
    ],
)
def test_damaged_files_are_refused_with_one_line(tmp_path, damage, message):
    p = tmp_path / "bad.b4m"
    p.write_bytes(damage(to_bytes(linear_model(S.DEFAULT_MODEL, S.FEATURES))))
    with pytest.raises(ModelError, match=message) as e:
        map_model(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_nan_weights_are_refused(tmp_path):
    w = S.DEFAULT_MODEL.copy()
    w[3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        map_model(write(tmp_path, linear_model(w, S.FEATURES)))


def test_wrong_weight_count_is_refused(tmp_path):
    with pytest.raises(ModelError, match="expected 9"):
        map_model(write(tmp_path, linear_model(np.zeros(5), S.FEATURES)))


def _train(rng, n_rows=3000, rounds=60, leaves=31, objective="regression"):
    lgb = pytest.importorskip("lightgbm")
    nf = len(S.FEATURES)
    X = rng.standard_normal((n_rows, nf))
    X[rng.random(X.shape) < 0.02] = 0.0
    X[rng.random(X.shape) < 0.01] = np.nan  # missing values take the default direction
    y = X[:, 0] - np.nan_to_num(X[:, 1]) ** 2 + 0.3 * rng.standard_normal(n_rows)
    if objective == "binary":
        y = (y > 0).astype(float)
    params = {"objective": objective, "num_leaves": leaves, "verbose": -1, "min_data_in_leaf": 5,
              "seed": int(rng.integers(1 << 30)), "deterministic": True}  # fmt: skip
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_tree_kernel_scores_equal_lightgbm_predict_on_random_inputs(tmp_path, objective):
    from bot4.models.trees import from_lightgbm_file, lightgbm_predict

    rng, _seed = seeded_rng(f"lightgbm parity {objective}")
    booster = _train(rng, objective=objective)
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    m = map_model(write(tmp_path, from_lightgbm_file(path, S.FEATURES)))
    assert m.kind == "trees" and m.roots.size == 60
    Z = rng.standard_normal((5000, len(S.FEATURES))) * rng.choice([0.1, 1.0, 5.0], (5000, 1))
    Z[rng.random(Z.shape) < 0.02] = 0.0
    Z[rng.random(Z.shape) < 0.02] = np.nan
    got = score_matrix(m, Z)
    ref = lightgbm_predict(path, Z)
    assert np.array_equal(got, ref), np.max(np.abs(got - ref))
    if objective == "regression":
        assert np.array_equal(got, booster.predict(Z))  # predict itself, no transform


def test_one_leaf_trees_and_wrong_feature_count(tmp_path):
    from bot4.models.trees import from_lightgbm_file, lightgbm_predict

    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, len(S.FEATURES)))
    b = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 40},
                  lgb.Dataset(X, np.zeros(50) + 1.5), num_boost_round=3)  # fmt: skip
    p = tmp_path / "flat.txt"
    b.save_model(str(p))
    m = from_lightgbm_file(p, S.FEATURES)
    assert m.thr.size == 0
    assert np.array_equal(score_matrix(m, X), lightgbm_predict(p, X))
    b2 = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X[:, :3], X[:, 0]), 2)
    p2 = tmp_path / "three.txt"
    b2.save_model(str(p2))
    with pytest.raises(ModelError, match="trained on 3 features"):
        from_lightgbm_file(p2, S.FEATURES)
