"""Tree ensembles trained with LightGBM, exported to the flat arrays of
:mod:`bot4.models.artifact` (kind ``trees``).

The export reads the booster's text model (thresholds and leaf values printed to 17
significant digits, so they round-trip exactly) and accepts what the numba scorer
evaluates exactly: one output (``num_class=1``), numerical splits, no linear trees, no
random-forest averaging. The score is the raw margin (``predict(raw_score=True)``; equal to
``predict`` for regression objectives). LightGBM is an optional extra (``models``); it is
imported only here and only when a LightGBM file is read.
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
