"""``bot4 models``: register (parity, schema), lifecycle, errors as one line with nothing
changed, files only (--no-db)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot4.models.cli import main
from bot4.models.registry import Registry
from bot4.stages import signals as S


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "models")


def cli(root, *args):
    return main([args[0], "--registry", root, *args[1:]])


def wcli(root, *args):
    return cli(root, *args, "--no-db")


def weights(tmp_path, w=None, name="w.npy"):
    p = tmp_path / name
    np.save(p, S.DEFAULT_MODEL if w is None else w)
    return str(p)


def snapshot(root):
    return sorted((str(p), p.read_bytes()) for p in Path(root).rglob("*") if p.is_file())


def test_register_promote_shadow_canary_rollback(tmp_path, root, capsys):
    assert (
        wcli(root, "register", weights(tmp_path), "--name", "base", "--training", '{"days": 5}')
        == 0
    )
    out = capsys.readouterr().out
    assert "registered model 1 'base': linear" in out and "max abs diff" in out
    assert (
        wcli(root, "register", weights(tmp_path, S.DEFAULT_MODEL * 2, "b.npy"), "--name", "x2") == 0
    )
    assert wcli(root, "promote", "1", "--why", "first") == 0
    assert wcli(root, "shadow", "2") == 0
    assert Registry(root).assignment("default").mode == "shadow"
    assert wcli(root, "canary", "2", "--ramp", "5,25,50") == 0
    a = Registry(root).assignment("default")
    assert (a.mode, a.pct, a.ramp) == ("canary", 5.0, (5.0, 25.0, 50.0))
    assert wcli(root, "rollback", "--why", "operator") == 0
    a = Registry(root).assignment("default")
    assert (a.champion, a.challenger, a.mode, a.generation) == (1, 0, "champion", 4)
    capsys.readouterr()
    assert cli(root, "list") == 0
    out = capsys.readouterr().out
    assert "default: champion" in out and "x2" in out
    assert cli(root, "show", "2", "--json", "--verify") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] and [e["event"] for e in doc["events"]] == [
        "registered", "shadow", "canary", "rolled_back"]  # fmt: skip
    assert cli(root, "status") == 0
    assert "generation 4: champion 1" in capsys.readouterr().out


def test_same_content_is_stored_once(tmp_path, root):
    for name in ("a", "b"):
        assert wcli(root, "register", weights(tmp_path), "--name", name) == 0
    reg = Registry(root)
    assert [m["id"] for m in reg.models()] == [1, 2]
    assert len(list((reg.root / "objects").iterdir())) == 1  # content-addressed


@pytest.mark.parametrize(
    "args, message",
    [
        (("show", "7"), "model 7: no such model"),
        (("promote", "7", "--no-db"), "model 7: no such model"),
        (("shadow", "1", "--no-db"), "is the champion"),
        (
            ("register", "{bad}", "--name", "x", "--no-db"),
            "linear weights must be float64 of shape (9,)",
        ),
        (("register", "{nan}", "--name", "x", "--no-db"), "NaN"),
        (("register", "{txt}", "--name", "x", "--no-db"), "neither a .npy"),
        (("register", "{trunc}", "--name", "x", "--no-db"), "not a readable .npy"),
        (("canary", "1", "--pct", "120", "--no-db"), "percentages must be in 0..100"),
        (("rollback", "--no-db"), "nothing to roll back"),
        (("evaluate", "--outcomes", "x.npz"), "no challenger"),
        (("watch", "--journal", "nope", "--no-db", "--once"), "nope: no such journal directory"),
        (("status", "--journal", "nope"), "nope: no such journal directory"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, root, capsys, args, message):
    assert wcli(root, "register", weights(tmp_path), "--name", "base") == 0
    assert wcli(root, "promote", "1") == 0
    files = {
        "{bad}": weights(tmp_path, np.zeros(4), "bad.npy"),
        "{nan}": weights(tmp_path, np.where(np.arange(9) == 2, np.nan, 1.0), "nan.npy"),
        "{txt}": str(tmp_path / "t.txt"),
        "{trunc}": str(tmp_path / "trunc.npy"),
    }
    (tmp_path / "t.txt").write_text("hello\n")
    (tmp_path / "trunc.npy").write_bytes(Path(weights(tmp_path)).read_bytes()[:100])
    before = snapshot(root)
    capsys.readouterr()
    assert cli(root, *[files.get(a, a) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bot4: error: ") and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err
    assert snapshot(root) == before


def test_lightgbm_model_registers_with_parity_and_a_wrong_schema_is_refused(tmp_path, root, capsys):
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(11)
    nf = len(S.FEATURES)
    X = rng.standard_normal((800, nf))
    b = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, X[:, 0]), 20)
    b.save_model(str(tmp_path / "ok.txt"))
    np.save(tmp_path / "val.npy", X[:200])
    assert wcli(root, "register", str(tmp_path / "ok.txt"), "--name", "gbm",
                "--validation", str(tmp_path / "val.npy")) == 0  # fmt: skip
    assert "trees" in capsys.readouterr().out
    named = [f"f{i}" for i in range(nf)]
    b2 = lgb.train({"objective": "regression", "verbose": -1},
                   lgb.Dataset(X, X[:, 0], feature_name=named), 5)  # fmt: skip
    b2.save_model(str(tmp_path / "named.txt"))
    assert wcli(root, "register", str(tmp_path / "named.txt"), "--name", "bad") == 1
    err = capsys.readouterr().err
    assert "the signals feature vector is" in err and err.count("\n") == 1
    assert [m["id"] for m in Registry(root).models()] == [1]


def test_sklearn_hgb_model_registers_with_parity(tmp_path, root, capsys):
    """A HistGradientBoosting regressor saved with joblib registers as a ``trees`` model
    with a zero parity difference; a non-HGB estimator is refused in one line."""
    ens = pytest.importorskip("sklearn.ensemble")
    import joblib

    rng = np.random.default_rng(12)
    X = rng.standard_normal((800, len(S.FEATURES)))
    joblib.dump(ens.HistGradientBoostingRegressor(max_iter=15).fit(X, X[:, 0]), tmp_path / "h.pkl")
    assert wcli(root, "register", str(tmp_path / "h.pkl"), "--name", "hgb") == 0
    out = capsys.readouterr().out
    assert "registered model 1 'hgb': trees" in out and "max abs diff 0" in out, out
    joblib.dump(ens.RandomForestRegressor(n_estimators=2).fit(X, X[:, 0]), tmp_path / "rf.pkl")
    assert wcli(root, "register", str(tmp_path / "rf.pkl"), "--name", "rf") == 1
    err = capsys.readouterr().err
    assert "not a scikit-learn HistGradientBoosting model" in err and err.count("\n") == 1
    assert [m["id"] for m in Registry(root).models()] == [1]
