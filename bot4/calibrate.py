"""``bot4 calibrate DATA``: fit what the signals stage loads, from recorded market data.

1. Mid returns per instrument (basis points, tick time — exactly the series the signals
   kernel feeds its GARCH recursion) -> GARCH(1,1) by maximum likelihood
   (``bot4.models.garch``: likelihood in numba, scipy's optimiser, arch's backcast), with a
   zero or constant mean.
2. The feature vectors, computed by the signals kernel's own code with the fitted GARCH
   -> the orthogonalisation transform (PCA, QR or ICA; ``bot4.models.orthogonal``).
3. A versioned JSON parameter file: ``bot4_params_version``, the feature names, per-symbol
   GARCH parameters, the orthogonaliser, and where it came from.

Besides bot4's tick files and LOBSTER, a plain **price** or **returns** CSV is read (the
format quants have), at any decimal precision (parsed as float64, never through the tick
format's fixed point): a header naming a time column (``timestamp``, ``time``, ``ts``,
``ts_ns``, ``date``, ``datetime``; optional), one value column, and optionally ``symbol``:

* prices: ``price``, ``close``, ``mid`` or ``last`` -> mid log returns in bp, tick time;
* returns: ``return`` / ``returns`` / ``ret`` (simple, fractional: 0.0012 = 12 bp),
  ``log_return`` (fractional), ``return_bp`` or ``log_return_bp`` -> the same series.

Rows must be in time order (numeric or ISO times; an earlier row after a later one refuses
the file, as everywhere); a row whose value does not parse, is not finite, or is a price
<= 0 is left out and counted (``source.bad``). Without a ``symbol`` column, ``symbol``
(``--symbol``) names the instrument. Such a series has no book: the GARCH fit and the
return features (EWMA returns, realised and GARCH volatility) come from it; the book
features (microprice deviation, spread, imbalance) were not observed, so the
orthogonaliser is fitted on the return features and passes the book features through
unchanged (identity rows, mean 0), and the file lists them under ``unobserved_features``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
from numba import njit

from bot4.signals import features as S

MIN_RETURNS = 100

TIME_COLUMNS = ("timestamp", "time", "ts", "ts_ns", "ts_event_ns", "date", "datetime")
PRICE_COLUMNS = ("price", "close", "mid", "last")
#: returns column -> how to turn a value into a log return in bp
RETURN_COLUMNS = {
    "return": lambda v: math.log1p(v) * 1e4,
    "returns": lambda v: math.log1p(v) * 1e4,
    "ret": lambda v: math.log1p(v) * 1e4,
    "log_return": lambda v: v * 1e4,
    "return_bp": lambda v: math.log1p(v / 1e4) * 1e4,
    "log_return_bp": lambda v: v,
}
TICK_COLUMNS = {"kind", "side", "qty"}  # a bot4 tick file (bot4.marketdata.files)


class SeriesError(ValueError):
    """A price / returns CSV that cannot be used (said in one line)."""


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            row = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError):
        return []
    return [c.strip().lower() for c in row]


def detect_source(path: str) -> str:
    """``lobster``, ``prices``, ``returns`` or ``file`` (a bot4 tick file)."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir() or name.endswith(".zip") or "_message_" in name or "_orderbook_" in name:
        return "lobster"
    if name.endswith(".csv"):
        cols = set(_header(p))
        if not cols & TICK_COLUMNS:
            if cols & set(RETURN_COLUMNS):
                return "returns"
            if cols & set(PRICE_COLUMNS):
                return "prices"
    return "file"


def read_series(path: str, kind: str, symbol: str | None) -> tuple[dict, dict]:
    """``{symbol: log returns in bp (float64, tick time)}`` and the source facts (rows,
    kept, bad by reason) of a price or returns CSV (module docstring)."""
    p = Path(path)
    cols = _header(p)
    if not cols:
        raise SeriesError(f"{path}: no header row (expected e.g. timestamp,price)")
    names = PRICE_COLUMNS if kind == "prices" else tuple(RETURN_COLUMNS)
    vcol = next((c for c in names if c in cols), None)
    if vcol is None:
        raise SeriesError(f"{path}: no {kind} column (one of {', '.join(names)}; have {cols})")
    vi = cols.index(vcol)
    ti = next((cols.index(c) for c in TIME_COLUMNS if c in cols), None)
    si = cols.index("symbol") if "symbol" in cols else None
    if si is None and not symbol:
        raise SeriesError(f"{path}: no symbol column: give the instrument with --symbol")
    conv = RETURN_COLUMNS.get(vcol)
    values: dict[str, list[float]] = {}
    last_t: dict[str, object] = {}
    bad: dict[str, int] = {}
    rows = 0
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for line, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            rows += 1
            try:
                v = float(row[vi])
                sym = row[si].strip() if si is not None else symbol
            except (ValueError, IndexError):
                bad["malformed_row"] = bad.get("malformed_row", 0) + 1
                continue
            if not math.isfinite(v) or (kind == "prices" and v <= 0):
                bad["bad_value"] = bad.get("bad_value", 0) + 1
                continue
            if ti is not None and ti < len(row):
                t = row[ti].strip()
                with contextlib.suppress(ValueError):  # ISO text stays text: one format sorts
                    t = float(t)
                prev = last_t.get(sym)
                if prev is not None and type(prev) is type(t) and t < prev:
                    raise SeriesError(
                        f"{path}: timestamps not sorted: line {line} is earlier than the "
                        "line before it; sort the data by time"
                    )
                last_t[sym] = t
            values.setdefault(sym, []).append(v)
    out = {}
    for sym, vals in values.items():
        a = np.asarray(vals, np.float64)
        out[sym] = (
            np.diff(np.log(a)) * 1e4 if kind == "prices" else np.array([conv(v) for v in vals])
        )
    kept = sum(len(v) for v in values.values())
    return out, {"rows": rows, "kept": kept, "bad": bad}


@njit(nogil=True, cache=True)
def series_features(r_bp, st, g, cfg, X, inst):
    """Feature rows of a return series (bp): the signals kernel's own state update on a
    mid that moves by each return (bid and ask a hair either side, one share each, so the
    mid is the series' price). Returns the number of rows written."""
    x = np.empty(X.shape[1])
    px = 100.0
    n = 0
    for i in range(r_bp.shape[0] + 1):
        if i > 0:
            px *= np.exp(r_bp[i - 1] / 1e4)
        st[inst, S.S_ASK] = px * (1.0 + 1e-7)
        st[inst, S.S_ASKQ] = 1.0
        if S.update_features(st, g, inst, px * (1.0 - 1e-7), 1.0, 1, cfg, x):
            X[n, :] = x
            n += 1
    return n


#: features a price series does not observe (no book)
BOOK_FEATURES = ("microprice_dev_bp", "spread_bp", "imbalance")


def calibrate_series(
    path: str, kind: str, *, symbol: str | None = None, method: str = "pca",
    mean: str = "constant",
) -> dict:  # fmt: skip
    """:func:`calibrate` for a price or returns CSV (module docstring)."""
    from bot4.models.garch import fit_garch
    from bot4.models.orthogonal import Orthogonaliser, fit_orthogonaliser

    series, facts = read_series(path, kind, symbol)
    garch = {}
    rows = []
    for sym in sorted(series):
        r = series[sym]
        if len(r) < MIN_RETURNS:
            continue
        fit = fit_garch(r, mean=mean)
        garch[sym] = {**fit.to_dict(), "returns": int(len(r))}
        g = S.default_garch(2)
        g[1] = (fit.omega, fit.alpha, fit.beta, fit.mu)
        X = np.zeros((len(r) + 1, S.NF))
        m = series_features(r, np.zeros((2, S.NSTATE)), g, S.default_cfg(), X, 1)
        rows.append(X[int(S.HALF_LIVES[-1]) : m])  # drop the warm-up rows
    if not garch:
        raise SeriesError(
            f"{path}: fewer than {MIN_RETURNS} returns for every symbol; nothing to fit"
        )
    X = np.concatenate(rows)
    obs = [i for i, f in enumerate(S.FEATURES) if f not in BOOK_FEATURES]
    part = fit_orthogonaliser(X[:, obs], method)
    W = np.eye(S.NF)
    mu = np.zeros(S.NF)
    W[np.ix_(obs, obs)] = part.W
    mu[obs] = part.mean
    return {
        "bot4_params_version": S.PARAMS_VERSION,
        "features": list(S.FEATURES),
        "returns_unit": "basis points of mid, tick time",
        "garch": garch,
        "orthogonaliser": Orthogonaliser(method, mu, W).to_dict(),
        "unobserved_features": list(BOOK_FEATURES),
        "fitted_rows": int(len(X)),
        "source": {"path": str(path), "kind": kind, **facts},
        "created_unix": int(time.time()),
    }


def calibrate(
    path: str,
    *,
    source: str | None = None,
    method: str = "pca",
    mean: str = "constant",
    instruments=None,
    symbol: str | None = None,
) -> dict:
    from bot4.models.garch import fit_garch
    from bot4.models.orthogonal import fit_orthogonaliser
    from bot4.records import DEFAULT_INSTRUMENTS
    from bot4.stages.marketdata import load_recorded

    table = instruments or DEFAULT_INSTRUMENTS
    src = source or detect_source(path)
    if src in ("prices", "returns"):
        return calibrate_series(path, src, symbol=symbol, method=method, mean=mean)
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
