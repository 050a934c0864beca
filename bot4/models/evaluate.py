"""Rollout evaluation: is the challenger worse than the champion? Four triggers, fixed
checkpoints, a false-rollback budget.

Inputs are per-trade outcomes of each model over the same window, in time order: the
return of a trade (a fill's markout: ``side * (mark - price) / price``, ``mark`` the
instrument's fill price ``horizon`` fills later, see :func:`outcomes_from_journal`) and
whether its direction was right (``mark != price``; ties are not counted for accuracy).

The challenger is looked at only at fixed checkpoints, every ``checkpoint_trades`` of its
trades, at most ``max_checkpoints`` times. Each trigger at each look is tested one-sided
("the challenger is worse") at ``alpha / max_checkpoints`` (Bonferroni alpha spending:
the chance that an equal challenger is rolled back by one trigger over the whole rollout
is at most ``alpha``; by any of the four at most ``4 alpha``, measured far lower because
they are correlated — tests/unit/test_model_evaluate.py). A trigger needs both its stated
point condition and that significance:

* ``sharpe``: per-trade Sharpe (mean / sd) below the champion's minus 20 % of its
  magnitude, ``S_c - 0.2 |S_c|`` (for a champion at or below zero this asks for a Sharpe
  lower still); z-test with the Sharpe estimates' asymptotic variance ``(1 + S^2/2) / n``;
* ``accuracy``: direction accuracy below 85 % of the champion's (a relative drop of
  15 %, not points); two-proportion z-test against that bar;
* ``profit_factor``: gross profit / gross loss below 1.0 (with no losing trade it is
  infinite and never fires) and the mean return below zero, one-sample t-test;
* ``welch``: Welch's t-test of mean returns, ``alternative='less'`` (a two-sided test would
  roll back a significantly *better* challenger).

Nothing is tested before both models have ``min_trades`` trades in the window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class EvalConfig:
    """Rollback thresholds and sampling (defaults: the specification's numbers)."""

    sharpe_drop: float = 0.20  # relative to |champion Sharpe|
    accuracy_drop: float = 0.15  # relative to the champion's accuracy
    profit_factor_floor: float = 1.0
    alpha: float = 0.05  # family-wise, per trigger, over the whole rollout
    min_trades: int = 100  # per model, in the window, before anything is tested
    checkpoint_trades: int = 100  # challenger trades between looks
    max_checkpoints: int = 10

    @property
    def alpha_per_look(self) -> float:
        return self.alpha / self.max_checkpoints


@dataclass
class Verdict:
    """The outcome of one checkpoint: ``rollback`` with the triggers that fired, or a pass
    (``passed``: enough trades and nothing fired)."""

    checkpoint: int
    n_champion: int
    n_challenger: int
    metrics: dict = field(default_factory=dict)
    triggers: list = field(default_factory=list)
    rollback: bool = False
    passed: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def reason(self) -> str:
        return "; ".join(
            f"{t['test']}: {t['value']:.4g} vs {t['threshold']:.4g} (p={t['p']:.3g})"
            for t in self.triggers
        )


def _sharpe(r: np.ndarray) -> float:
    sd = r.std(ddof=1) if r.size > 1 else 0.0
    return float(r.mean() / sd) if sd > 0 else 0.0


def _profit_factor(r: np.ndarray) -> float:
    loss = -r[r < 0].sum()
    gain = r[r > 0].sum()
    if loss == 0:
        return math.inf if gain > 0 else 1.0
    return float(gain / loss)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def welch_less(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Welch p-value of mean(a) < mean(b): ``scipy.stats.ttest_ind(a, b,
    equal_var=False, alternative='less')`` computed directly (the wrapper costs ~10 ms)."""
    from scipy import stats

    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 <= 0:
        return 1.0
    t = (a.mean() - b.mean()) / math.sqrt(se2)
    df = se2 * se2 / (va * va / (a.size - 1) + vb * vb / (b.size - 1))
    return float(stats.t.cdf(t, df))


def metrics(r: np.ndarray, hits: np.ndarray) -> dict:
    h = hits[hits >= 0]
    return {
        "trades": int(r.size),
        "mean_return": float(r.mean()) if r.size else 0.0,
        "sharpe": _sharpe(r),
        "accuracy": float(h.mean()) if h.size else 0.0,
        "profit_factor": _profit_factor(r),
    }


def evaluate_checkpoint(
    champ_r: np.ndarray,
    champ_hits: np.ndarray,
    chall_r: np.ndarray,
    chall_hits: np.ndarray,
    checkpoint: int,
    cfg: EvalConfig = EvalConfig(),
) -> Verdict:
    """Test the challenger against the champion on the given windows. ``*_hits``: 1 right,
    0 wrong, -1 no move (not counted)."""
    from scipy import stats

    cr, hr = np.asarray(champ_r, float), np.asarray(chall_r, float)
    ch, hh = np.asarray(champ_hits), np.asarray(chall_hits)
    v = Verdict(checkpoint, int(cr.size), int(hr.size))
    mc, mh = metrics(cr, ch), metrics(hr, hh)
    v.metrics = {"champion": mc, "challenger": mh, "alpha_per_look": cfg.alpha_per_look}
    if cr.size < cfg.min_trades or hr.size < cfg.min_trades:
        return v
    a = cfg.alpha_per_look

    def fire(test: str, value: float, threshold: float, p: float) -> None:
        if p < a:
            v.triggers.append({"test": test, "value": value, "threshold": threshold, "p": p})

    sc, sh = mc["sharpe"], mh["sharpe"]
    if cr.std() > 0 and hr.std() > 0:
        bar = sc - cfg.sharpe_drop * abs(sc)
        if sh < bar:
            keep = 1.0 - cfg.sharpe_drop
            se = math.sqrt((1 + sh * sh / 2) / hr.size + keep**2 * (1 + sc * sc / 2) / cr.size)
            fire("sharpe", sh, bar, _norm_sf((bar - sh) / se))
    hc, hh2 = ch[ch >= 0], hh[hh >= 0]
    if hc.size >= cfg.min_trades and hh2.size >= cfg.min_trades:
        ac, ah = float(hc.mean()), float(hh2.mean())
        bar = ac * (1.0 - cfg.accuracy_drop)
        if ah < bar:
            keep = 1.0 - cfg.accuracy_drop
            var = ah * (1 - ah) / hh2.size + keep**2 * ac * (1 - ac) / hc.size
            p = _norm_sf((bar - ah) / math.sqrt(var)) if var > 0 else 0.0
            fire("accuracy", ah, bar, p)
    pf = mh["profit_factor"]
    if pf < cfg.profit_factor_floor and hr.std() > 0:
        t = hr.mean() / (hr.std(ddof=1) / math.sqrt(hr.size))
        fire("profit_factor", pf, cfg.profit_factor_floor, float(stats.t.cdf(t, hr.size - 1)))
    if cr.std() > 0 or hr.std() > 0:
        fire("welch", mh["mean_return"], mc["mean_return"], welch_less(hr, cr))
    v.rollback = bool(v.triggers)
    v.passed = not v.rollback
    return v


def evaluate_stream(
    champ_r, champ_hits, chall_r, chall_hits, cfg: EvalConfig = EvalConfig()
) -> list[Verdict]:
    """Every checkpoint reached by the challenger's trades, in order, stopping at the first
    rollback. The champion's window at a checkpoint is its trades up to the same fraction
    of the period (both streams are in time order and cover the same period)."""
    out = []
    n_h, n_c = len(chall_r), len(champ_r)
    for k in range(1, cfg.max_checkpoints + 1):
        m = k * cfg.checkpoint_trades
        if m > n_h:
            break
        mc = n_c if m == n_h else int(round(n_c * m / n_h))
        v = evaluate_checkpoint(champ_r[:mc], champ_hits[:mc], chall_r[:m], chall_hits[:m], k, cfg)
        out.append(v)
        if v.rollback:
            break
    return out
