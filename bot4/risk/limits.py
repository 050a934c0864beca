"""Risk limits: a frozen config with documented defaults, read from the risk stage's params,
turned once into the int64 arrays the kernels read (``LimitArrays``).

Params (the ``params`` table of a ``kind = "risk"`` stage; every key optional)::

    params = {
      max_position = 1000,             # any InstrumentLimits key: default for every instrument
      rate_per_s = 20,                 # any StrategyLimits key: default for every strategy
      daily_loss_limit = "25000",      # any RiskLimits key (money as decimal strings)
      instruments = { AAPL = { max_position = 500 }, "2" = { price_band_bp = 300 } },
      strategies = { "1" = { max_stop_bp = 200 } },
      breakers = [ { name = "venue", min_calls = 20 } ],   # for the launcher (segment)
    }

Units: quantities are shares (int), prices and money are currency amounts written as
decimal strings (or ints), converted exactly with the instrument's ``price_scale``; floats
are refused for money. Account-level money (gross, daily loss) is summed across
instruments, so every instrument must share one ``price_scale``. Times are ns unless the
name says ``_s`` (or ``_ms``).

Stale market data (``stale_after_ms``, per instrument; ``feed_gone_after_ms``, account):
an instrument that has had market data and then none for longer than ``stale_after_ms`` is
HALTED by the risk stage; no market data at all for longer than ``feed_gone_after_ms`` halts
global trading. 0 disables either. See :mod:`bot4.stages.risk`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from bot4.records import DEFAULT_INSTRUMENTS, InstrumentTable, load_instruments, to_fixed
from bot4.records.errors import Bot4Error, Code

# the columns of the limit arrays built here live in bot4.risk.layout (one place for the
# kernels and the config); re-exported
from bot4.risk.layout import (
    A_BREAKER_FROM_EXECS,
    A_BREAKER_HALTS,
    A_DAILY_HALT,
    A_DAILY_LOSS,
    A_FEED_GONE_NS,
    A_INTENT_PRODUCER,
    A_MAX_GROSS,
    A_MAX_OPEN_ORDERS,
    A_REF_MAX_AGE_NS,
    A_RISK_PRODUCER,
    L_BAND_BP,
    L_BOOK_TAKE_PCT,
    L_BREAKER,
    L_KNOWN,
    L_LOT,
    L_MAX_NOTIONAL,
    L_MAX_OPEN_ORDERS,
    L_MAX_ORDER_QTY,
    L_MAX_POSITION,
    L_STALE_NS,
    NA,
    NL,
    NS,
    S_BURST,
    S_INTERVAL_NS,
    S_MAX_STOP_BP,
    S_STOP_REQUIRED,
)
from bot4.shm.breakers import BreakerConfig

#: the database breaker: opens after 3 failed loads (of at least 3 in the window), probes
#: again after 2 s; the persistence stage's loader enters it around every transaction
DB_BREAKER = BreakerConfig(name="db", min_calls=3, cooldown_ns=2_000_000_000, probe_window=3)

__all__ = [
    "InstrumentLimits",
    "LimitArrays",
    "RiskConfigError",
    "RiskLimits",
    "StrategyLimits",
    "build_arrays",
    "next_reset_utc_ns",
]


MONEY_FIELDS = ("max_notional", "max_gross", "daily_loss_limit", "daily_loss_halt")


class RiskConfigError(Bot4Error, ValueError):
    """Risk params that cannot be used; the message names the key and the problem."""

    code = Code.CONFIG_INVALID


@dataclass(frozen=True)
class InstrumentLimits:
    """Per-instrument limits (one default for all, overridable per instrument)."""

    max_order_qty: int = 5_000  # shares per order
    max_notional: Decimal = Decimal("500000")  # currency per order (qty * price)
    max_position: int = 10_000  # shares, worst case counting open orders, long or short
    max_open_orders: int = 20  # orders resting at once in the instrument
    price_band_bp: int = 500  # limit within this many bp of the reference price (0 = off)
    breaker: int = 0  # breaker index guarding the instrument's orders (-1 = none)
    stale_after_ms: int = 2_000  # had market data, then none for this long -> HALTED (0 = off)
    # liquidity: an order may be at most this % of the visible size on the side it trades
    # against (asks for a buy), summed over the levels of the risk stage's book_level input
    # (the md stage's depth); 0 = off. Needs that input: no depth seen yet denies.
    max_book_take_pct: int = 0


@dataclass(frozen=True)
class StrategyLimits:
    """Per-strategy rules (one default for all, overridable per strategy id)."""

    stop_loss_required: bool = True  # orders adding exposure must carry a stop-loss
    max_stop_bp: int = 500  # stop at most this many bp from the entry (0 = no bound)
    rate_per_s: float = 100.0  # sustained orders per second (0 = no rate limit)
    burst: int = 20  # orders that may go back to back (token bucket capacity)


@dataclass(frozen=True)
class RiskLimits:
    """Everything the risk stage enforces. Defaults are conservative for one trader's
    account on the default instruments (prices about $100, scale 10_000)."""

    instrument: InstrumentLimits = InstrumentLimits()  # default for every instrument
    instruments: Mapping[int, InstrumentLimits] = field(default_factory=dict)  # by id
    strategy: StrategyLimits = StrategyLimits()  # default for every strategy
    strategies: Mapping[int, StrategyLimits] = field(default_factory=dict)  # by id
    max_gross: Decimal = Decimal("2000000")  # currency, worst case with open orders
    max_open_orders_total: int = 100  # resting orders at once, account-wide
    daily_loss_limit: Decimal = Decimal("25000")  # currency; reaching it -> REDUCING (0 = off)
    daily_loss_halt: Decimal = Decimal("0")  # currency; reaching it -> HALTED (0 = off)
    daily_reset: str = "17:00"  # local wall time HH:MM at which the daily PnL restarts
    timezone: str = "America/New_York"  # IANA zone of daily_reset
    max_reference_age_s: float = 5.0  # older reference prices do not count (0 = any age)
    feed_gone_after_ms: int = 5_000  # no market data at all for this long -> global HALTED
    breaker_action: str = "deny"  # "deny": refuse while open; "halt": also HALT + cancel all
    breaker_from_execs: bool = True  # first answer to each order feeds its breaker
    intent_producer: int = 0  # producer id of the intents ring (signals stage index)
    max_tracked_orders: int = 1024  # open-order table size (power of two, >= 2x max open)
    instruments_file: str | None = None  # instrument TOML (default: DEFAULT_INSTRUMENTS)
    #: the breaker segment's rows; a "db" row is always present (added when missing): the
    #: persistence stage's database loader runs through it, and no instrument maps to it,
    #: so an open database breaker gates database writes only, never trading
    breakers: tuple[BreakerConfig, ...] = (BreakerConfig(), DB_BREAKER)

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RiskLimits:
        """Parse a stage's params (see the module docstring); RiskConfigError on any problem."""
        return _from_params(params)

    def instrument_table(self) -> InstrumentTable:
        if self.instruments_file:
            return load_instruments(self.instruments_file)
        return DEFAULT_INSTRUMENTS

    def limits_for(self, instrument_id: int) -> InstrumentLimits:
        return self.instruments.get(instrument_id, self.instrument)

    def strategy_for(self, strategy_id: int) -> StrategyLimits:
        return self.strategies.get(strategy_id, self.strategy)

    def reset_hhmm(self) -> tuple[int, int]:
        return _parse_hhmm(self.daily_reset)


def _fail(key: str, problem: str) -> RiskConfigError:
    exc = RiskConfigError(f"risk params: {key}: {problem}")
    exc.key, exc.problem = key, problem  # for the topology's "params.KEY: REASON"
    return exc


def param_keys() -> frozenset[str]:
    """Every key :meth:`RiskLimits.from_params` accepts at the top of the params table."""
    return frozenset(
        {f.name for f in fields(InstrumentLimits)}
        | {f.name for f in fields(StrategyLimits)}
        | ({f.name for f in fields(RiskLimits)} - {"instrument", "strategy"})
    )


def _parse_hhmm(text: str) -> tuple[int, int]:
    try:
        h, m = text.split(":")
        hh, mm = int(h), int(m)
    except (ValueError, AttributeError):
        raise _fail("daily_reset", f"{text!r} is not HH:MM") from None
    if not (0 <= hh < 24 and 0 <= mm < 60):
        raise _fail("daily_reset", f"{text!r} is not a time of day")
    return hh, mm


def _validate(lim: RiskLimits) -> None:
    for where, il in [
        ("", lim.instrument),
        *((f"instruments.{k}.", v) for k, v in lim.instruments.items()),
    ]:
        for name in (
            "max_order_qty",
            "max_position",
            "max_open_orders",
            "max_notional",
            "stale_after_ms",
            "max_book_take_pct",
        ):
            if getattr(il, name) < 0:
                raise _fail(where + name, "must be >= 0")
        if not 0 <= il.price_band_bp <= 100_000:
            raise _fail(where + "price_band_bp", "must be in 0..100000")
        if il.breaker < -1:
            raise _fail(where + "breaker", "must be a breaker index or -1 (none)")
        if il.breaker >= len(lim.breakers):
            raise _fail(where + "breaker", f"{il.breaker} but only {len(lim.breakers)} breakers")
    for where, sl in [
        ("", lim.strategy),
        *((f"strategies.{k}.", v) for k, v in lim.strategies.items()),
    ]:
        if not 0 <= sl.max_stop_bp <= 100_000:
            raise _fail(where + "max_stop_bp", "must be in 0..100000")
        if sl.rate_per_s < 0 or sl.burst < 1:
            raise _fail(where + "rate_per_s/burst", "rate_per_s must be >= 0 and burst >= 1")
    for name in MONEY_FIELDS[1:]:
        if getattr(lim, name) < 0:
            raise _fail(name, "must be >= 0")
    if lim.breaker_action not in ("deny", "halt"):
        raise _fail("breaker_action", f"{lim.breaker_action!r}: use 'deny' or 'halt'")
    cap = lim.max_tracked_orders
    if cap < 2 or cap & (cap - 1) or cap < 2 * lim.max_open_orders_total:
        raise _fail("max_tracked_orders", "must be a power of two >= 2 * max_open_orders_total")
    if lim.max_reference_age_s < 0:
        raise _fail("max_reference_age_s", "must be >= 0")
    if lim.feed_gone_after_ms < 0:
        raise _fail("feed_gone_after_ms", "must be >= 0 (0 = off)")
    _parse_hhmm(lim.daily_reset)
    try:
        ZoneInfo(lim.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail("timezone", f"unknown time zone {lim.timezone!r}") from None


def _money(key: str, value: Any) -> Decimal:
    if isinstance(value, bool | float):
        raise _fail(key, f'{value!r}: write money as a decimal string, e.g. "250000"')
    try:
        return Decimal(str(value)) if isinstance(value, int | str) else Decimal(value)
    except Exception:
        raise _fail(key, f"{value!r} is not a decimal amount") from None


def _typed(cls, key: str, name: str, value: Any) -> Any:
    default = getattr(cls(), name)
    if name in MONEY_FIELDS:
        return _money(key, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _fail(key, f"{value!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, f"{value!r} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, f"{value!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise _fail(key, f"{value!r} must be a string")
    return value


def _overlay(cls, base, key: str, table: Any):
    if not isinstance(table, Mapping):
        raise _fail(key, "must be a table")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise _fail(
            key, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    return replace(base, **{k: _typed(cls, f"{key}.{k}", k, v) for k, v in table.items()})


def _from_params(params: Mapping[str, Any]) -> RiskLimits:
    inst_keys = {f.name for f in fields(InstrumentLimits)}
    strat_keys = {f.name for f in fields(StrategyLimits)}
    nested = {"instrument", "instruments", "strategy", "strategies", "breakers"}
    own_keys = {f.name for f in fields(RiskLimits)} - nested
    allowed = inst_keys | strat_keys | own_keys | {"instruments", "strategies", "breakers"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise _fail(", ".join(unknown), f"unknown key(s); allowed: {', '.join(sorted(allowed))}")
    default_inst = _overlay(
        InstrumentLimits,
        InstrumentLimits(),
        "params",
        {k: v for k, v in params.items() if k in inst_keys},
    )
    default_strat = _overlay(
        StrategyLimits,
        StrategyLimits(),
        "params",
        {k: v for k, v in params.items() if k in strat_keys},
    )
    own = {}
    for k in own_keys & set(params):
        v = params[k]
        if k == "instruments_file":
            if v is not None and not isinstance(v, str):
                raise _fail(k, "must be a path string")
            own[k] = v
        else:
            own[k] = _typed(RiskLimits, k, k, v)
    table = (
        load_instruments(own["instruments_file"])
        if own.get("instruments_file")
        else DEFAULT_INSTRUMENTS
    )
    per_inst = {}
    for key, sub in dict(params.get("instruments", {})).items():
        ident = _instrument_id(table, str(key))
        per_inst[ident] = _overlay(InstrumentLimits, default_inst, f"instruments.{key}", sub)
    per_strat = {}
    for key, sub in dict(params.get("strategies", {})).items():
        try:
            sid = int(key)
        except ValueError:
            raise _fail(f"strategies.{key}", "strategy keys are integer ids") from None
        if not 0 < sid < 1 << 16:
            raise _fail(f"strategies.{key}", "strategy id must be in 1..65535")
        per_strat[sid] = _overlay(StrategyLimits, default_strat, f"strategies.{key}", sub)
    breakers = RiskLimits.breakers
    if "breakers" in params:
        rows = params["breakers"]
        if not isinstance(rows, list | tuple):
            raise _fail("breakers", "must be a list of tables")
        try:
            breakers = tuple(
                _overlay(BreakerConfig, BreakerConfig(name=f"breaker{n}"), f"breakers[{n}]", row)
                for n, row in enumerate(rows)
            )
        except Bot4Error as e:
            raise _fail("breakers", str(e)) from None
        if not any(b.name == DB_BREAKER.name for b in breakers):
            breakers += (DB_BREAKER,)
    return RiskLimits(
        instrument=default_inst,
        instruments=per_inst,
        strategy=default_strat,
        strategies=per_strat,
        breakers=breakers,
        **own,
    )


def _instrument_id(table: InstrumentTable, key: str) -> int:
    if key.isdigit():
        ident = int(key)
        if ident in table:
            return ident
    else:
        try:
            return table.id_of(key)
        except LookupError:
            pass
    raise _fail(f"instruments.{key}", f"not an instrument of {table.source}")


# --- arrays ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LimitArrays:
    """The limits as the kernels read them (see the L_*, S_*, A_* columns)."""

    ilim: np.ndarray  # (max instrument id + 1, NL) int64
    slim: np.ndarray  # (max strategy id + 1, NS) int64
    alim: np.ndarray  # (NA,) int64
    price_scale: int  # units per 1 currency of every instrument
    breaker_scope: np.ndarray  # (n breakers,) int64: 1 guards every instrument, 0 some, -1 none


def build_arrays(lim: RiskLimits, table: InstrumentTable, risk_producer: int = 0) -> LimitArrays:
    """Convert ``lim`` for ``table`` into kernel arrays (money to price units, rates to ns)."""
    scales = {table.price_scale(i) for i in table.ids}
    if len(scales) != 1:
        raise RiskConfigError(
            f"risk: instruments of {table.source} use price scales {sorted(scales)}: account "
            "limits (gross, daily loss) need one scale"
        )
    scale = scales.pop()
    ilim = np.zeros((max(table.ids) + 1, NL), np.int64)
    ilim[:, L_BREAKER] = -1
    for ident in table.ids:
        il = lim.limits_for(ident)
        row = ilim[ident]
        row[L_KNOWN] = 1
        row[L_LOT] = table.lot_size(ident)
        row[L_MAX_ORDER_QTY] = il.max_order_qty
        row[L_MAX_NOTIONAL] = to_fixed(il.max_notional, scale)
        row[L_MAX_POSITION] = il.max_position
        row[L_MAX_OPEN_ORDERS] = il.max_open_orders
        row[L_BAND_BP] = il.price_band_bp
        row[L_BREAKER] = il.breaker
        row[L_STALE_NS] = il.stale_after_ms * 1_000_000
        row[L_BOOK_TAKE_PCT] = il.max_book_take_pct
    n_strat = max([1, *lim.strategies]) + 1
    slim = np.zeros((n_strat, NS), np.int64)
    for sid in range(n_strat):
        sl = lim.strategy_for(sid)
        slim[sid, S_STOP_REQUIRED] = int(sl.stop_loss_required)
        slim[sid, S_MAX_STOP_BP] = sl.max_stop_bp
        slim[sid, S_INTERVAL_NS] = round(1e9 / sl.rate_per_s) if sl.rate_per_s > 0 else 0
        slim[sid, S_BURST] = sl.burst
    alim = np.zeros(NA, np.int64)
    alim[A_MAX_GROSS] = to_fixed(lim.max_gross, scale)
    alim[A_MAX_OPEN_ORDERS] = lim.max_open_orders_total
    alim[A_DAILY_LOSS] = to_fixed(lim.daily_loss_limit, scale)
    alim[A_DAILY_HALT] = to_fixed(lim.daily_loss_halt, scale)
    alim[A_BREAKER_HALTS] = int(lim.breaker_action == "halt")
    alim[A_BREAKER_FROM_EXECS] = int(lim.breaker_from_execs)
    alim[A_REF_MAX_AGE_NS] = round(lim.max_reference_age_s * 1e9)
    alim[A_INTENT_PRODUCER] = lim.intent_producer
    alim[A_RISK_PRODUCER] = risk_producer
    alim[A_FEED_GONE_NS] = lim.feed_gone_after_ms * 1_000_000
    scope = np.full(len(lim.breakers), -1, np.int64)
    for b in range(len(lim.breakers)):
        users = [i for i in table.ids if ilim[i, L_BREAKER] == b]
        if users:
            scope[b] = int(len(users) == len(table.ids))
    return LimitArrays(ilim, slim, alim, scale, scope)


# --- daily reset ----------------------------------------------------------------------------


def next_reset_utc_ns(after_utc_ns: int, timezone: str, hhmm: str) -> int:
    """The first instant strictly after ``after_utc_ns`` (ns since the Unix epoch) at which
    the wall clock in ``timezone`` reads ``hhmm``.

    Days are local days, so consecutive resets are 23 or 25 hours apart across a DST change.
    A wall time skipped by a spring-forward jump is taken with the offset from before the
    jump (PEP 495 ``fold=0``: 02:30 on a 02:00 -> 03:00 night resets at 03:30 local); a wall
    time that occurs twice resets at its first occurrence.
    """
    zone = ZoneInfo(timezone)
    hh, mm = _parse_hhmm(hhmm)
    secs = after_utc_ns // 1_000_000_000
    day = dt.datetime.fromtimestamp(secs, tz=zone).date() - dt.timedelta(days=1)
    for _ in range(4):
        cand = dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone)
        ns = int(cand.timestamp()) * 1_000_000_000
        if ns > after_utc_ns:
            return ns
        day += dt.timedelta(days=1)
    raise AssertionError("no reset within three days")  # unreachable
