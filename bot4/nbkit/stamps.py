"""``copy_stamps(dst, src)``: a derived record takes the stamps of the record it came from.

Every record carries the host stamps it picked up on the way (``ts_recv_ns`` at the md
stage, ``ts_signal_ns``, ``ts_risk_ns``, ``ts_order_ns``, ...) and the source time
``ts_event_ns`` (bot4.records.dtypes). A record derived from another — a decision or an
order from an intent, a report from an order, a quote from a book event — copies every
``ts_*_ns`` field the two record types share, then stamps its own. ``copy_stamps`` is
that copy, generated per pair of record types at compile time (numba ``@overload``), so
it costs exactly the stores it makes. ``seq`` / ``parent_seq`` are the caller's: a
derived record numbers itself, a passed-through one keeps both.

The caller stamps after the copy: a field both records have but the derived one owns
(an EXEC_REPORT's ``ts_order_ns`` made from an ORDER that had none yet) is overwritten.

``copy_terms(dst, src)`` is the same copy for an order's terms (``TERM_FIELDS``: quantity,
prices, instrument, strategy, side, type, time in force), the fields an ORDER takes from
its intent, the OMS's book slot from risk's ORDER and a venue message from the slot; a
caller that changes one (the slot's ``qty`` after the client guard) sets it after.
"""

from __future__ import annotations

from numba import types
from numba.extending import overload

from bot4.records import RECORD_TYPES

__all__ = ["STAMP_FIELDS", "TERM_FIELDS", "copy_stamps", "copy_terms", "stamp_fields"]

#: every stamp field a record type declares, in declaration order
STAMP_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        f
        for dt in RECORD_TYPES.values()
        for f in dt.names
        if f.startswith("ts_") and f.endswith("_ns")
    )
)


#: an order's terms, as ORDER_INTENT, ORDER and the OMS's book slot name them
TERM_FIELDS: tuple[str, ...] = (
    "qty", "limit_price", "price", "stop_price", "instrument", "strategy", "side", "order_type",
    "tif",
)  # fmt: skip


def _shared(fields, dst_names, src_names) -> tuple[str, ...]:
    return tuple(f for f in fields if f in dst_names and f in src_names)


def stamp_fields(dst_names, src_names) -> tuple[str, ...]:
    """The stamps ``copy_stamps`` copies between records with these field names."""
    return _shared(STAMP_FIELDS, dst_names, src_names)


def copy_stamps(dst, src) -> None:
    """Copy the ``ts_*_ns`` fields ``dst`` and ``src`` share (numpy record scalars here;
    inside a kernel the compiled overload below)."""
    for f in stamp_fields(dst.dtype.names, src.dtype.names):
        dst[f] = src[f]


def copy_terms(dst, src) -> None:
    """Copy the order terms (``TERM_FIELDS``) ``dst`` and ``src`` share (numpy record
    scalars here; inside a kernel the compiled overload below)."""
    for f in _shared(TERM_FIELDS, dst.dtype.names, src.dtype.names):
        dst[f] = src[f]


def _copier(fields, dst, src):
    """The compiled copy of ``fields`` that record types ``dst`` and ``src`` share."""
    if not isinstance(dst, types.Record) or not isinstance(src, types.Record):
        return None
    names = _shared(fields, dst.fields, src.fields)
    body = "".join(f"    dst.{f} = src.{f}\n" for f in names) or "    pass\n"
    scope: dict = {}
    exec(f"def impl(dst, src):\n{body}", scope)  # noqa: S102 - field names from the dtypes
    return scope["impl"]


@overload(copy_stamps, inline="always")
def _copy_stamps_overload(dst, src):
    return _copier(STAMP_FIELDS, dst, src)


@overload(copy_terms, inline="always")
def _copy_terms_overload(dst, src):
    return _copier(TERM_FIELDS, dst, src)
