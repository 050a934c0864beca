"""bot4 calibrate on a plain price or returns CSV (timestamp,price / timestamp,return) at any
decimal precision: the GARCH fit recovers a simulated process, the two formats give the
same fit, bad rows are counted, unsorted input is refused in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bot4.calibrate import calibrate, detect_source
from tests.seeds import seeded_rng

pytest.importorskip("scipy")


def _garch_prices(rng, n=4000, omega=0.2, alpha=0.08, beta=0.9):
    r = np.empty(n)
    s2 = omega / (1 - alpha - beta)
    for i in range(n):
        r[i] = np.sqrt(s2) * rng.standard_normal()
        s2 = omega + alpha * r[i] ** 2 + beta * s2
    return 0.01234567 * np.exp(np.cumsum(r) / 1e4), r  # an 8-decimal coin price, bp returns


def test_price_and_returns_csv_give_the_same_garch_fit(tmp_path):
    rng, _seed = seeded_rng("calibrate-series")
    px, _r = _garch_prices(rng)
    t0 = 1_700_000_000_000_000_000
    prices = tmp_path / "px.csv"
    lines = ["timestamp,price"] + [f"{t0 + i * 1_000_000},{p:.8f}" for i, p in enumerate(px)]
    lines.insert(100, f"{t0 + 99 * 1_000_000},not-a-price")  # a bad row: counted, left out
    prices.write_text("\n".join(lines) + "\n")
    rounded = np.array([float(f"{p:.8f}") for p in px])
    rets = tmp_path / "ret.csv"
    simple = rounded[1:] / rounded[:-1] - 1.0
    rets.write_text(
        "timestamp,return\n"
        + "".join(f"{t0 + i * 1_000_000},{v:.17g}\n" for i, v in enumerate(simple, start=1))
    )
    assert detect_source(str(prices)) == "prices" and detect_source(str(rets)) == "returns"
    a = calibrate(str(prices), symbol="COIN")
    b = calibrate(str(rets), symbol="COIN")
    ga, gb = a["garch"]["COIN"], b["garch"]["COIN"]
    assert ga["returns"] == gb["returns"] == len(px) - 1
    assert a["source"]["bad"] == {"malformed_row": 1} and a["source"]["kept"] == len(px)
    for k in ("omega", "alpha", "beta"):
        assert ga[k] == pytest.approx(gb[k], rel=1e-6)
    assert 0.7 < ga["beta"] < 0.99 and 0.01 < ga["alpha"] < 0.25  # the simulated 0.9 / 0.08
    W = np.asarray(a["orthogonaliser"]["W"])
    assert W.shape == (8, 8) and np.isfinite(W).all()
    assert a["unobserved_features"] == ["microprice_dev_bp", "spread_bp", "imbalance"]
    assert W[1, 1] == 1.0 and W[1].sum() == 1.0  # the spread passes through unchanged


def test_cli_refuses_unsorted_and_symbolless_series_in_one_line(tmp_path):
    f = tmp_path / "px.csv"
    f.write_text("time,close\n2024-01-02T10:00:01,1.5\n2024-01-02T10:00:00,1.6\n")
    p = subprocess.run(
        [sys.executable, "-m", "bot4.cli", "calibrate", str(f), "--symbol", "X", "-o",
         str(tmp_path / "o.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 1 and p.stderr.startswith("bot4: error:")
    assert "not sorted: line 3" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "bot4.cli", "calibrate", str(f), "-o", str(tmp_path / "o.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 1 and "--symbol" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o.json").exists()
