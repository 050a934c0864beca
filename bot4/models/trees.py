"""Tree ensembles trained with LightGBM or scikit-learn's HistGradientBoosting, exported to
the flat arrays of :mod:`bot4.models.artifact` (kind ``trees``).

The export reads the booster's text model (thresholds and leaf values printed to 17
significant digits, so they round-trip exactly) and accepts what the numba scorer
evaluates exactly: one output (``num_class=1``), numerical splits, no linear trees, no
random-forest averaging. The score is the raw margin (``predict(raw_score=True)``; equal to
``predict`` for regression objectives). LightGBM is an optional extra (``models``); it is
imported only here and only when a LightGBM file is read.

HistGradientBoosting (``HistGradientBoostingRegressor`` or a binary
``HistGradientBoostingClassifier``, saved with ``joblib.dump`` or ``pickle``): numerical
splits only; a split sends NaN the way its ``missing_go_to_left`` says and ``x <=
num_threshold`` left otherwise, which is the scorer's missing-type-NaN decision with its
default direction. The score is the raw prediction before the loss's inverse link
(``decision_function`` of a classifier; ``predict`` of a squared-error regressor). The
baseline prediction is added to every leaf of the first tree, so the scorer's sum ``0 +
(baseline + v0) + v1 + ...`` is bit-equal to scikit-learn's ``baseline + v0 + v1 + ...``.
Unpickling runs code from the file: register only models you trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bot4.models.artifact import Model, ModelError

GENERIC_NAME = "Column_"


def _kv(block: list[str]) -> dict[str, str]:
    out = {}
    for line in block:
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _shift(c: np.ndarray, n0: int, l0: int) -> np.ndarray:
    """A tree's child indices offset to the ensemble's node and leaf arrays."""
    return np.where(c >= 0, c + n0, ~(~c + l0))


def from_lightgbm_text(text: str, features, path: str = "model") -> Model:
    """A ``trees`` model from LightGBM's text format (``Booster.save_model``)."""
    head, _, rest = text.partition("\nTree=")
    if not rest:
        raise ModelError(f"{path}: not a LightGBM text model (no trees)")
    h = _kv(head.splitlines())
    if h.get("num_class", "1") != "1" or h.get("num_tree_per_iteration", "1") != "1":
        raise ModelError(f"{path}: multi-class models are not supported (one score per tick)")
    if "average_output" in h or "average_output" in head.split("\n"):
        raise ModelError(f"{path}: random-forest averaging is not supported")
    names = h.get("feature_names", "").split()
    nf = len(features)
    if int(h.get("max_feature_idx", -1)) + 1 != nf:
        raise ModelError(
            f"{path}: trained on {int(h.get('max_feature_idx', -1)) + 1} features, "
            f"the signals feature vector has {nf}"
        )
    generic = all(n == f"{GENERIC_NAME}{i}" for i, n in enumerate(names))
    if not generic and tuple(names) != tuple(features):
        raise ModelError(
            f"{path}: trained on features {names}, the signals feature vector is {list(features)}"
        )
    body = rest.split("\nend of trees", 1)[0]
    roots, nodes, thr, leaf = [], [], [], []
    for block in ("Tree=" + body).split("\nTree="):
        t = _kv(block.splitlines())
        if not t:
            continue
        if t.get("num_cat", "0") != "0":
            raise ModelError(f"{path}: categorical splits are not supported")
        if t.get("is_linear", "0") != "0":
            raise ModelError(f"{path}: linear trees are not supported")
        nl = int(t["num_leaves"])
        lv = np.array(t["leaf_value"].split(), np.float64)
        if lv.size != nl:
            raise ModelError(f"{path}: a tree's leaf count disagrees with its leaf values")
        n0, l0 = sum(len(a) for a in thr), sum(len(a) for a in leaf)
        if nl == 1:
            roots.append(~l0)
        else:
            sf = np.array(t["split_feature"].split(), np.int64)
            th = np.array(t["threshold"].split(), np.float64)
            dt = np.array(t["decision_type"].split(), np.int64)
            lc = np.array(t["left_child"].split(), np.int64)
            rc = np.array(t["right_child"].split(), np.int64)
            if np.any(dt & 1):
                raise ModelError(f"{path}: categorical splits are not supported")

            nodes.append(np.stack([sf, _shift(lc, n0, l0), _shift(rc, n0, l0), dt], axis=1))
            thr.append(th)
            roots.append(n0)
        leaf.append(lv)
    return Model(
        "trees",
        tuple(features),
        np.zeros(0),
        np.array(roots, np.int32),
        np.ascontiguousarray(np.concatenate(nodes) if nodes else np.zeros((0, 4)), np.int32),
        np.concatenate(thr) if thr else np.zeros(0),
        np.concatenate(leaf),
        {"library": "lightgbm", "objective": h.get("objective", ""), "trees": len(roots)},
    )


def from_sklearn_hgb(est, features, path: str = "model") -> Model:
    """A ``trees`` model from a fitted scikit-learn HistGradientBoosting estimator."""
    from bot4.models.scoring import DEFAULT_LEFT, MISSING_NAN

    kind = type(est).__name__
    if kind not in ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier"):
        raise ModelError(f"{path}: a {kind}, not a scikit-learn HistGradientBoosting model")
    if not hasattr(est, "_predictors"):
        raise ModelError(f"{path}: the {kind} is not fitted")
    if est.n_trees_per_iteration_ != 1:
        raise ModelError(f"{path}: multi-class models are not supported (one score per tick)")
    cat = getattr(est, "is_categorical_", None)
    if cat is not None and np.any(cat):
        raise ModelError(f"{path}: categorical splits are not supported")
    nf = len(features)
    if est.n_features_in_ != nf:
        raise ModelError(
            f"{path}: trained on {est.n_features_in_} features, the signals feature vector has {nf}"
        )
    names = getattr(est, "feature_names_in_", None)
    if names is not None and tuple(names) != tuple(features):
        raise ModelError(
            f"{path}: trained on features {list(names)}, the signals feature vector is "
            f"{list(features)}"
        )
    base = float(np.asarray(est._baseline_prediction, np.float64).ravel()[0])
    roots, nodes, thr, leaf = [], [], [], []
    n0 = l0 = 0
    for t, (pred,) in enumerate(est._predictors):
        nd = pred.nodes
        if np.any(nd["is_categorical"][nd["is_leaf"] == 0]):
            raise ModelError(f"{path}: categorical splits are not supported")
        is_leaf = nd["is_leaf"].astype(bool)
        # HGB numbers leaves and splits in one array; ours keep them apart
        split_at = np.cumsum(~is_leaf) - 1 + n0
        leaf_at = np.cumsum(is_leaf) - 1 + l0

        def ref(c, split_at=split_at, leaf_at=leaf_at, is_leaf=is_leaf):
            return np.where(is_leaf[c], ~leaf_at[c], split_at[c])

        v = nd["value"][is_leaf].astype(np.float64)
        if t == 0:
            v = base + v
        sp = nd[~is_leaf]
        dt = MISSING_NAN << 2 | np.where(sp["missing_go_to_left"] != 0, DEFAULT_LEFT, 0)
        nodes.append(
            np.stack(
                [sp["feature_idx"].astype(np.int64), ref(sp["left"]), ref(sp["right"]), dt], axis=1
            )
        )
        thr.append(sp["num_threshold"].astype(np.float64))
        leaf.append(v)
        roots.append(~leaf_at[0] if is_leaf[0] else split_at[0])
        n0 += len(sp)
        l0 += len(v)
    if not roots:
        raise ModelError(f"{path}: the {kind} has no trees")
    return Model(
        "trees",
        tuple(features),
        np.zeros(0),
        np.array(roots, np.int32),
        np.ascontiguousarray(np.concatenate(nodes), np.int32),
        np.concatenate(thr),
        np.concatenate(leaf),
        {"library": "scikit-learn", "estimator": kind, "loss": str(getattr(est, "loss", "")),
         "trees": len(roots)},
    )  # fmt: skip


def load_sklearn_file(path: str | Path):
    """The estimator pickled in ``path`` (``joblib.dump`` or ``pickle.dump``)."""
    try:
        import joblib
    except ImportError:
        raise ModelError("scikit-learn is not installed (pip install 'bot4[models]')") from None
    try:
        return joblib.load(path)
    except Exception as exc:  # a damaged or foreign pickle raises anything
        raise ModelError(f"{path}: not a readable joblib/pickle file: {exc}") from None


def from_sklearn_file(path: str | Path, features) -> Model:
    return from_sklearn_hgb(load_sklearn_file(path), features, str(path))


def sklearn_predict(path: str | Path, Z: np.ndarray) -> np.ndarray:
    """scikit-learn's own raw scores of the rows of ``Z`` (the parity reference):
    ``decision_function`` for a classifier, the raw prediction for a regressor."""
    import warnings

    est = load_sklearn_file(path)
    Z = np.ascontiguousarray(Z, np.float64)
    with warnings.catch_warnings():  # fitted on named columns: the rows are in that order
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if hasattr(est, "decision_function"):
            return np.asarray(est.decision_function(Z), np.float64).ravel()
        return np.asarray(est._raw_predict(Z), np.float64).ravel()


def from_lightgbm_file(path: str | Path, features) -> Model:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read: {exc}") from None
    return from_lightgbm_text(text, features, str(path))


def lightgbm_predict(path: str | Path, Z: np.ndarray) -> np.ndarray:
    """The library's own raw scores of the rows of ``Z`` (the parity reference)."""
    try:
        import lightgbm
    except ImportError:
        raise ModelError("LightGBM is not installed (pip install 'bot4[models]')") from None
    booster = lightgbm.Booster(model_file=str(path))
    return booster.predict(np.ascontiguousarray(Z, np.float64), raw_score=True)
