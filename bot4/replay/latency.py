"""Latency models of the deterministic replay: how long market data takes to reach our
stages (feed), and an order to reach the venue or a report to come back (order).

Every model draws int64 nanoseconds from a ``numpy.random.Generator`` the harness owns and
seeds (one independent stream per model use, from the run's ``seed``), so the same seed
gives the same latencies, record for record, in every run and on every host.

Models (:func:`parse_latency` reads the text form the CLI takes):

* :class:`Constant` — ``const:50us``: always the same value.
* :class:`Empirical` — ``empirical:40us,42us,45us,90us``: values drawn uniformly, with
  replacement, from the given sample (e.g. measured latencies);
  ``quantiles:0=30us,0.5=40us,0.99=120us,1=400us``: inverse-CDF sampling, linear between
  the given quantiles (a distribution from its published percentiles).
* :class:`LoadSpike` — ``spike(base=const:40us,window=1ms,threshold=50,per_event=200ns,
  prob=0.01,spike=500us)``: under load the latency grows. ``load`` is the number of market
  data events in the trailing ``window`` before the moment the latency applies to; every
  event above ``threshold`` adds ``per_event`` ns, and each one independently triggers a
  spike with probability ``prob`` (a spike adds an exponential delay of mean ``spike``).
  Below the threshold it is the base model alone. A base with commas goes in parentheses:
  ``spike(base=(empirical:30us,40us),threshold=20)``.

Units: ``ns``, ``us``, ``ms``, ``s`` (a bare number is ns). A latency is never negative.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field

import numpy as np

from bot4.records.errors import Bot4Error, Code

__all__ = [
    "Constant",
    "Empirical",
    "LatencyConfig",
    "LatencyModel",
    "LoadSpike",
    "parse_duration_ns",
    "parse_latency",
]

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ns|us|µs|ms|s)?\s*$")


class LatencyError(Bot4Error, ValueError):
    """A latency specification that cannot be read; the message names the text."""

    code = Code.CONFIG_INVALID


def parse_duration_ns(text: str | int | float) -> int:
    """``"50us"`` -> 50_000 (ns); ints and floats are ns already."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise LatencyError(f"duration {text!r} is negative")
        return int(round(text))
    m = _DURATION.match(str(text))
    if m is None:
        raise LatencyError(f"{text!r} is not a duration (e.g. 250ns, 40us, 1.5ms, 2s)")
    return int(round(float(m.group(1)) * _UNITS[m.group(2) or "ns"]))


class LatencyModel(abc.ABC):
    """A distribution of latencies in ns (the interface of Constant, Empirical, LoadSpike).
    ``needs_load``: ``sample`` uses ``load``."""

    needs_load: bool = False

    @abc.abstractmethod
    def sample(
        self, rng: np.random.Generator, n: int, load: np.ndarray | None = None
    ) -> np.ndarray:
        """``n`` latencies (int64 ns >= 0); ``load[i]``: events in the trailing window of
        the i-th (only read when ``needs_load``)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The model as the ``--latency`` syntax writes it."""


@dataclass(frozen=True)
class Constant(LatencyModel):
    ns: int = 0

    def __post_init__(self) -> None:
        if self.ns < 0:
            raise LatencyError(f"constant latency {self.ns} ns is negative")

    def sample(self, rng, n, load=None):
        return np.full(n, self.ns, np.int64)

    def describe(self) -> str:
        return f"const:{self.ns}ns"


@dataclass(frozen=True)
class Empirical(LatencyModel):
    """Either ``values`` (drawn uniformly with replacement) or ``quantiles`` (probability,
    ns) pairs with probabilities from 0 to 1 (inverse CDF, linear in between)."""

    values: tuple[int, ...] = ()
    quantiles: tuple[tuple[float, int], ...] = ()
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if bool(self.values) == bool(self.quantiles):
            raise LatencyError("empirical latency: give either values or quantiles")
        if self.values:
            t = np.asarray(self.values, np.int64)
            if (t < 0).any():
                raise LatencyError("empirical latency: negative value")
        else:
            q = np.asarray([p for p, _ in self.quantiles], np.float64)
            v = np.asarray([x for _, x in self.quantiles], np.float64)
            if q[0] != 0.0 or q[-1] != 1.0 or (np.diff(q) <= 0).any():
                raise LatencyError(
                    "quantiles: probabilities must rise strictly from 0 to 1 (e.g. 0=..,1=..)"
                )
            if (np.diff(v) < 0).any() or (v < 0).any():
                raise LatencyError("quantiles: latencies must be >= 0 and non-decreasing")
            t = np.stack([q, v])
        object.__setattr__(self, "_table", t)

    def sample(self, rng, n, load=None):
        if self.values:
            return self._table[rng.integers(0, len(self._table), n)]
        u = rng.random(n)
        return np.interp(u, self._table[0], self._table[1]).astype(np.int64)

    def describe(self) -> str:
        if self.values:
            return "empirical:" + ",".join(f"{v}ns" for v in self.values)
        return "quantiles:" + ",".join(f"{p:g}={v}ns" for p, v in self.quantiles)


@dataclass(frozen=True)
class LoadSpike(LatencyModel):
    base: LatencyModel = Constant(0)
    window_ns: int = 1_000_000
    threshold: int = 100
    per_event_ns: int = 0
    prob: float = 0.0
    spike_ns: int = 0
    needs_load = True

    def __post_init__(self) -> None:
        if self.window_ns <= 0 or self.threshold < 0 or self.per_event_ns < 0:
            raise LatencyError("spike: window > 0, threshold >= 0 and per_event >= 0 required")
        if not 0.0 <= self.prob <= 1.0 or self.spike_ns < 0:
            raise LatencyError("spike: prob in 0..1 and spike >= 0 required")

    def sample(self, rng, n, load=None):
        lat = self.base.sample(rng, n)
        if load is None:
            load = np.zeros(n, np.int64)
        excess = np.maximum(np.asarray(load, np.int64) - self.threshold, 0)
        lat = lat + excess * self.per_event_ns
        u = rng.random(n)  # drawn whatever the load: the stream does not depend on it
        e = rng.exponential(1.0, n)
        if self.prob > 0 and self.spike_ns > 0:
            p_any = 1.0 - np.power(1.0 - self.prob, excess.astype(np.float64))
            lat = lat + np.where(u < p_any, (e * self.spike_ns).astype(np.int64), 0)
        return lat

    def describe(self) -> str:
        return (
            f"spike(base={self.base.describe()},window={self.window_ns}ns,"
            f"threshold={self.threshold},per_event={self.per_event_ns}ns,prob={self.prob:g},"
            f"spike={self.spike_ns}ns)"
        )


def _split_top(text: str) -> list[str]:
    """Split ``a=b,c=spike(x,y),d`` on commas outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_latency(text: str) -> LatencyModel:
    """A model from its text form (module docstring); LatencyError naming the problem."""
    t = text.strip()
    if t.startswith("(") and t.endswith(")"):  # a nested model with commas, e.g. a base
        return parse_latency(t[1:-1])
    if t.startswith("spike(") and t.endswith(")"):
        kw: dict[str, str] = {}
        for part in _split_top(t[len("spike(") : -1]):
            k, sep, v = part.partition("=")
            if not sep:
                raise LatencyError(f"{text!r}: {part!r} is not key=value")
            kw[k.strip()] = v.strip()
        unknown = set(kw) - {"base", "window", "threshold", "per_event", "prob", "spike"}
        if unknown:
            raise LatencyError(f"{text!r}: unknown spike keys {sorted(unknown)}")
        try:
            return LoadSpike(
                base=parse_latency(kw.get("base", "const:0")),
                window_ns=parse_duration_ns(kw.get("window", "1ms")),
                threshold=int(kw.get("threshold", "100")),
                per_event_ns=parse_duration_ns(kw.get("per_event", "0")),
                prob=float(kw.get("prob", "0")),
                spike_ns=parse_duration_ns(kw.get("spike", "0")),
            )
        except ValueError as exc:
            if isinstance(exc, LatencyError):
                raise
            raise LatencyError(f"{text!r}: {exc}") from None
    kind, sep, arg = t.partition(":")
    if not sep:
        return Constant(parse_duration_ns(t))  # a bare duration is a constant
    kind = kind.strip().lower()
    if kind in ("const", "constant"):
        return Constant(parse_duration_ns(arg))
    if kind == "empirical":
        vals = tuple(parse_duration_ns(x) for x in arg.split(",") if x.strip())
        if not vals:
            raise LatencyError(f"{text!r}: no values")
        return Empirical(values=vals)
    if kind == "quantiles":
        pairs = []
        for part in arg.split(","):
            p, sep2, v = part.partition("=")
            if not sep2:
                raise LatencyError(f"{text!r}: {part!r} is not probability=duration")
            try:
                pairs.append((float(p), parse_duration_ns(v)))
            except ValueError:
                raise LatencyError(f"{text!r}: {p!r} is not a probability") from None
        return Empirical(quantiles=tuple(pairs))
    raise LatencyError(
        f"{text!r}: unknown latency model {kind!r} (const, empirical, quantiles, spike)"
    )


@dataclass(frozen=True)
class LatencyConfig:
    """The run's latency models. ``feed``: exchange event -> our md receive stamp
    (``ts_recv_ns``); ``order``: orders stage -> venue; ``report``: venue -> orders stage
    (None: the ``order`` model, drawn independently); ``compute``: per stage hop inside our
    pipeline, added to each stage's clock in a step (default 0: stages react at the step
    boundary). Defaults: a colocated feed and order path."""

    feed: LatencyModel = Constant(20_000)
    order: LatencyModel = Constant(50_000)
    report: LatencyModel | None = None
    compute: LatencyModel = Constant(0)

    @property
    def report_model(self) -> LatencyModel:
        return self.report if self.report is not None else self.order

    @classmethod
    def from_specs(cls, specs: list[str] | dict[str, str] | None) -> LatencyConfig:
        """From ``["feed=const:20us", "order=spike(...)"]`` or a mapping of the same."""
        if not specs:
            return cls()
        items = specs.items() if isinstance(specs, dict) else [_kv(s) for s in specs]
        kw: dict[str, LatencyModel] = {}
        for k, v in items:
            if k not in ("feed", "order", "report", "compute"):
                raise LatencyError(f"latency {k!r}: expected feed, order, report or compute")
            kw[k] = parse_latency(v)
        return cls(**kw)

    def describe(self) -> dict[str, str]:
        return {
            "feed": self.feed.describe(),
            "order": self.order.describe(),
            "report": self.report_model.describe(),
            "compute": self.compute.describe(),
        }


def _kv(spec: str) -> tuple[str, str]:
    k, sep, v = spec.partition("=")
    if not sep:
        raise LatencyError(f"--latency {spec!r}: expected NAME=MODEL (e.g. order=const:50us)")
    return k.strip(), v.strip()


def trailing_load(ts: np.ndarray, at: np.ndarray, window_ns: int) -> np.ndarray:
    """Events of the sorted times ``ts`` in ``(at - window_ns, at]``, for each ``at``."""
    hi = np.searchsorted(ts, at, side="right")
    lo = np.searchsorted(ts, at - window_ns, side="right")
    return (hi - lo).astype(np.int64)
