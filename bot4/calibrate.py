"""``bot4 calibrate DATA``: fit what the signals stage loads, from recorded market data.

1. Mid returns per instrument (basis points, tick time — exactly the series the signals
   kernel feeds its GARCH recursion) -> GARCH(1,1) by maximum likelihood
   (``bot4.models.garch``: likelihood in numba, scipy's optimiser, arch's backcast), with a
   zero or constant mean.
2. The feature vectors, computed by the signals kernel's own code with the fitted GARCH
   -> the orthogonalisation transform (PCA, QR or ICA; ``bot4.models.orthogonal``).
3. A versioned JSON parameter file: ``bot4_params_version``, the feature names, per-symbol
   GARCH parameters, the orthogonaliser, and where it came from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bot4.stages import signals as S

MIN_RETURNS = 100


def detect_source(path: str) -> str:
    p = Path(path)
    name = p.name.lower()
    if p.is_dir() or name.endswith(".zip") or "_message_" in name or "_orderbook_" in name:
        return "lobster"
    return "file"


def calibrate(
    path: str,
    *,
    source: str | None = None,
    method: str = "pca",
    mean: str = "constant",
    instruments=None,
) -> dict:
    from bot4.models.garch import fit_garch
    from bot4.models.orthogonal import fit_orthogonaliser
    from bot4.records import DEFAULT_INSTRUMENTS
    from bot4.stages.marketdata import load_recorded

    table = instruments or DEFAULT_INSTRUMENTS
    src = source or detect_source(path)
    recs, report = load_recorded(src, path)
    if len(recs) == 0:
        raise ValueError(f"{path}: no usable market data ({report.summary()})")
    n_inst = int(max(table.ids)) + 1
    R = np.zeros(len(recs))
    insts = np.zeros(len(recs), np.int64)
    n = S.returns_kernel(recs, np.zeros((n_inst, 3)), R, insts)
    R, insts = R[:n], insts[:n]
    g = S.default_garch(n_inst)
    garch = {}
    for iid in np.unique(insts):
        r = R[insts == iid]
        if len(r) < MIN_RETURNS:
            continue
        fit = fit_garch(r, mean=mean)
        sym = table.symbol_of(int(iid))
        garch[sym] = {**fit.to_dict(), "returns": int(len(r))}
        g[iid] = (fit.omega, fit.alpha, fit.beta, fit.mu)
    if not garch:
        raise ValueError(
            f"{path}: fewer than {MIN_RETURNS} mid returns for every instrument; nothing to fit"
        )
    X = np.zeros((len(recs), S.NF))
    rows = np.zeros(len(recs), np.int64)
    m = S.features_kernel(recs, np.zeros((n_inst, S.NSTATE)), g, S.default_cfg(), X, rows)
    warm = int(S.HALF_LIVES[-1])  # drop each instrument's warm-up rows
    keep = np.zeros(m, bool)
    for iid in np.unique(rows[:m]):
        idx = np.flatnonzero(rows[:m] == iid)
        keep[idx[warm:]] = True
    ortho = fit_orthogonaliser(X[:m][keep], method)
    return {
        "bot4_params_version": S.PARAMS_VERSION,
        "features": list(S.FEATURES),
        "returns_unit": "basis points of mid, tick time",
        "garch": garch,
        "orthogonaliser": ortho.to_dict(),
        "fitted_rows": int(keep.sum()),
        "source": {"path": str(path), "kind": src, **report.as_dict()},
        "created_unix": int(time.time()),
    }


def write_params(doc: dict, out: str) -> None:
    Path(out).write_text(json.dumps(doc, indent=2, default=str))
