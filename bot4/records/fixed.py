"""Fixed-point money: exact conversion between Decimal and int64 units.

A price or money amount is an int64 count of units, with ``scale`` units per 1 of currency
(``scale=10_000``: one unit is 0.0001 dollar). Conversion is exact: a value that does not
land on a whole unit raises ``ValueError`` unless the caller names a rounding mode, and a
value outside int64 raises ``OverflowError``. Floats are refused: no float money, not even
at the edges. These helpers are for configuration, reports and the database boundary;
kernels work on the int64 units directly.
"""

from __future__ import annotations

import decimal
import operator
from decimal import Decimal

__all__ = ["INT64_MAX", "INT64_MIN", "ROUNDING_MODES", "from_fixed", "notional", "to_fixed"]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

ROUNDING_MODES = frozenset(
    {
        decimal.ROUND_CEILING,
        decimal.ROUND_DOWN,
        decimal.ROUND_FLOOR,
        decimal.ROUND_HALF_DOWN,
        decimal.ROUND_HALF_EVEN,
        decimal.ROUND_HALF_UP,
        decimal.ROUND_UP,
        decimal.ROUND_05UP,
    }
)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int):
        scale = operator.index(scale)
    if scale <= 0:
        raise ValueError(f"scale must be a positive number of units per 1, got {scale}")
    return scale


def _check_int64(units: int, what: str) -> int:
    if not INT64_MIN <= units <= INT64_MAX:
        raise OverflowError(f"{what} {units} outside int64")
    return units


def _exact_context(precision: int) -> decimal.Context:
    return decimal.Context(
        prec=max(precision, 1),
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow, decimal.DivisionByZero],
    )


def _as_decimal(value: Decimal | str | int) -> Decimal:
    if isinstance(value, bool | float):
        raise TypeError(f"refusing {type(value).__name__} money {value!r}: pass a str or Decimal")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        try:
            d = Decimal(operator.index(value))
        except TypeError:
            raise TypeError(
                f"refusing {type(value).__name__} money {value!r}: pass a str or Decimal"
            ) from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def to_fixed(value: Decimal | str | int, scale: int, *, rounding: str | None = None) -> int:
    """Units of ``value`` at ``scale`` units per 1: ``to_fixed("1.2345", 10_000) == 12345``.

    Exact by default: ``ValueError`` if ``value`` is not a whole number of units (for
    example ``"0.00005"`` at scale 10_000). With ``rounding`` (a ``decimal.ROUND_*`` mode)
    the value is rounded to a whole unit instead. ``OverflowError`` beyond int64,
    ``TypeError`` for float or bool.
    """
    scale = _check_scale(scale)
    if rounding is not None and rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}")
    d = _as_decimal(value)
    ctx = _exact_context(len(d.as_tuple().digits) + len(str(scale)) + 1)
    scaled = ctx.multiply(d, Decimal(scale))
    if scaled.copy_abs() > INT64_MAX + 1:
        raise OverflowError(f"{value!r} at scale {scale} is outside int64")
    whole = scaled.to_integral_value(rounding=rounding or decimal.ROUND_HALF_EVEN, context=ctx)
    if whole != scaled and rounding is None:
        raise ValueError(
            f"{value!r} is not a whole number of units at scale {scale} "
            f"(unit = 1/{scale}); pass rounding= to round"
        )
    return _check_int64(int(whole), f"{value!r} at scale {scale} ->")


def from_fixed(units: int, scale: int) -> Decimal:
    """Decimal value of ``units`` at ``scale`` units per 1: ``from_fixed(12345, 10_000)``
    is ``Decimal("1.2345")``.

    Exact. With a power-of-ten scale the result keeps the scale's decimal places
    (``Decimal("15.0000")`` at 10_000), as a NUMERIC column would. A scale whose units have
    no finite decimal expansion (a factor other than 2 and 5) raises ``ValueError``.
    """
    if isinstance(units, bool):
        raise TypeError("units must be an integer, not bool")
    units = operator.index(units)
    scale = _check_scale(scale)
    digits = len(str(scale)) - 1
    if scale == 10**digits:
        return Decimal(units).scaleb(-digits, context=_exact_context(len(str(abs(units)))))
    ctx = _exact_context(len(str(abs(units))) + scale.bit_length() + 1)
    try:
        return ctx.divide(Decimal(units), Decimal(scale))
    except decimal.Inexact:
        raise ValueError(f"1/{scale} has no finite decimal expansion") from None


def notional(price_units: int, qty: int) -> int:
    """``price_units * qty``, in price units (same scale as the price).

    ``OverflowError`` if the product leaves int64, where a kernel would silently wrap.
    """
    product = operator.index(price_units) * operator.index(qty)
    return _check_int64(product, f"notional {price_units} * {qty} =")
