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


def _train_hgb(rng, kind="regressor", n_rows=3000, iters=40):
    ens = pytest.importorskip("sklearn.ensemble")
    nf = len(S.FEATURES)
    X = rng.standard_normal((n_rows, nf))
    X[rng.random(X.shape) < 0.02] = 0.0
    X[rng.random(X.shape) < 0.03] = np.nan  # learnt missing directions, both ways
    y = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) ** 2 + 0.3 * rng.standard_normal(n_rows)
    seed = int(rng.integers(1 << 30))
    if kind == "classifier":
        est = ens.HistGradientBoostingClassifier(max_iter=iters, random_state=seed)
        return est.fit(X, (y > 0).astype(int))
    return ens.HistGradientBoostingRegressor(max_iter=iters, random_state=seed).fit(X, y)


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_tree_kernel_scores_equal_sklearn_hgb_on_random_inputs(tmp_path, kind):
    """HistGradientBoosting exported to the flat arrays scores bit-equal to scikit-learn's
    own raw prediction (NaN both ways, zeros, wide ranges), through the mapped file."""
    import joblib

    from bot4.models.trees import from_sklearn_file, sklearn_predict

    rng, _seed = seeded_rng(f"hgb parity {kind}")
    est = _train_hgb(rng, kind)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    m = map_model(write(tmp_path, from_sklearn_file(path, S.FEATURES)))
    assert m.kind == "trees" and m.roots.size == est.n_iter_
    Z = rng.standard_normal((5000, len(S.FEATURES))) * rng.choice([0.1, 1.0, 5.0], (5000, 1))
    Z[rng.random(Z.shape) < 0.02] = 0.0
    Z[rng.random(Z.shape) < 0.05] = np.nan
    got = score_matrix(m, Z)
    assert np.array_equal(got, sklearn_predict(path, Z)), np.max(np.abs(got - est.predict(Z)))
    if kind == "regressor":
        assert np.array_equal(got, est.predict(Z))  # squared error: predict is the raw score
    else:
        assert np.array_equal(got, est.decision_function(Z))


def test_sklearn_models_refused_when_unsupported(tmp_path):
    """Multi-class, categorical splits, the wrong feature count, another estimator and a
    damaged file: each a one-line ModelError naming the file."""
    import joblib

    ens = pytest.importorskip("sklearn.ensemble")
    from bot4.models.trees import from_sklearn_file, from_sklearn_hgb

    rng = np.random.default_rng(7)
    nf = len(S.FEATURES)
    X = rng.standard_normal((300, nf))
    multi = ens.HistGradientBoostingClassifier(max_iter=3).fit(X, rng.integers(0, 3, 300))
    with pytest.raises(ModelError, match="multi-class"):
        from_sklearn_hgb(multi, S.FEATURES, "m.joblib")
    Xc = X.copy()
    Xc[:, 2] = rng.integers(0, 4, 300)
    cat = ens.HistGradientBoostingRegressor(max_iter=3, categorical_features=[2]).fit(Xc, X[:, 0])
    with pytest.raises(ModelError, match="categorical"):
        from_sklearn_hgb(cat, S.FEATURES, "c.joblib")
    three = ens.HistGradientBoostingRegressor(max_iter=3).fit(X[:, :3], X[:, 0])
    with pytest.raises(ModelError, match="trained on 3 features"):
        from_sklearn_hgb(three, S.FEATURES, "t.joblib")
    rf = ens.RandomForestRegressor(n_estimators=2).fit(X, X[:, 0])
    with pytest.raises(ModelError, match="not a scikit-learn HistGradientBoosting"):
        from_sklearn_hgb(rf, S.FEATURES, "rf.joblib")
    bad = tmp_path / "bad.joblib"
    joblib.dump(ens.HistGradientBoostingRegressor(max_iter=3).fit(X, X[:, 0]), bad)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ModelError, match="not a readable joblib/pickle file") as e:
        from_sklearn_file(bad, S.FEATURES)
    assert "\n" not in str(e.value)
