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
"""

from __future__ import annotations

from numba import types
from numba.extending import overload

from bot4.records import RECORD_TYPES

__all__ = ["STAMP_FIELDS", "copy_stamps", "stamp_fields"]

#: every stamp field a record type declares, in declaration order
STAMP_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        f
        for dt in RECORD_TYPES.values()
        for f in dt.names
        if f.startswith("ts_") and f.endswith("_ns")
    )
)


def stamp_fields(dst_names, src_names) -> tuple[str, ...]:
    """The stamps ``copy_stamps`` copies between records with these field names."""
    return tuple(f for f in STAMP_FIELDS if f in dst_names and f in src_names)


def copy_stamps(dst, src) -> None:
    """Copy the ``ts_*_ns`` fields ``dst`` and ``src`` share (numpy record scalars here;
    inside a kernel the compiled overload below)."""
    for f in stamp_fields(dst.dtype.names, src.dtype.names):
        dst[f] = src[f]


@overload(copy_stamps, inline="always")
def _copy_stamps_overload(dst, src):
    if not isinstance(dst, types.Record) or not isinstance(src, types.Record):
        return None
    names = stamp_fields(dst.fields, src.fields)
    body = "".join(f"    dst.{f} = src.{f}\n" for f in names) or "    pass\n"
    scope: dict = {}
    exec(f"def impl(dst, src):\n{body}", scope)  # noqa: S102 - field names from the dtypes
    return scope["impl"]
