"""Record types: the id (``RT_*``) that names each record dtype of
:mod:`bot4.records.dtypes` in ring headers and the journal, the types by name, the schema
version, and each layout's fingerprint (the journal and the rings check it, so a build
never reads bytes laid out differently).
"""

from __future__ import annotations

import hashlib

import numpy as np

from bot4.records.dtypes import (
    BOOK_LEVEL,
    BOOK_TOP,
    EXEC_REPORT,
    MARKET_DATA,
    OPERATOR_ACTION,
    ORDER,
    ORDER_INTENT,
    RISK_DECISION,
    TXN_DECISION,
)

__all__ = [
    "LEGACY_FINGERPRINTS",
    "RECORDS_VERSION",
    "RECORD_TYPES",
    "RECORD_TYPE_IDS",
    "RT_BOOK_LEVEL",
    "RT_BOOK_TOP",
    "RT_EXEC_REPORT",
    "RT_MARKET_DATA",
    "RT_OPERATOR_ACTION",
    "RT_ORDER",
    "RT_ORDER_INTENT",
    "RT_RISK_DECISION",
    "RT_TXN_DECISION",
    "dtype_by_record_type",
    "dtype_fingerprint",
    "readable_fingerprints",
    "record_type_of",
]
#: version of the record schema as a whole (docs/records.md, "Versions"): 2 added ORDER
#: stp_mode / stp_group / model_id and EXEC_REPORT venue / prevented_qty in bytes v1 kept
#: reserved. A layout's fingerprint (below) changes only when that layout changes.
RECORDS_VERSION = 2
RT_MARKET_DATA = 1
RT_BOOK_TOP = 2
RT_ORDER_INTENT = 3
RT_ORDER = 4
RT_EXEC_REPORT = 5
RT_RISK_DECISION = 6
RT_OPERATOR_ACTION = 7
RT_TXN_DECISION = 8
RT_BOOK_LEVEL = 9  # an addition (issue 18): no earlier layout changed

RECORD_TYPES: dict[str, np.dtype] = {
    "MARKET_DATA": MARKET_DATA,
    "BOOK_TOP": BOOK_TOP,
    "ORDER_INTENT": ORDER_INTENT,
    "ORDER": ORDER,
    "EXEC_REPORT": EXEC_REPORT,
    "RISK_DECISION": RISK_DECISION,
    "OPERATOR_ACTION": OPERATOR_ACTION,
    "TXN_DECISION": TXN_DECISION,
    "BOOK_LEVEL": BOOK_LEVEL,
}

RECORD_TYPE_IDS: dict[str, int] = {
    "MARKET_DATA": RT_MARKET_DATA,
    "BOOK_TOP": RT_BOOK_TOP,
    "ORDER_INTENT": RT_ORDER_INTENT,
    "ORDER": RT_ORDER,
    "EXEC_REPORT": RT_EXEC_REPORT,
    "RISK_DECISION": RT_RISK_DECISION,
    "OPERATOR_ACTION": RT_OPERATOR_ACTION,
    "TXN_DECISION": RT_TXN_DECISION,
    "BOOK_LEVEL": RT_BOOK_LEVEL,
}


def _canonical(dtype: np.dtype) -> str:
    if dtype.names is None:
        if dtype.subdtype is not None:
            base, shape = dtype.subdtype
            return f"{_canonical(base)}{list(shape)}"
        return dtype.str
    parts = []
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        parts.append(f"{name}@{offset}:{_canonical(field_dtype)}")
    return "{" + ",".join(parts) + f"}}#{dtype.itemsize}"


def dtype_fingerprint(dtype: np.dtype) -> int:
    """Stable 64-bit fingerprint of a record layout (unsigned, fits a u64 header word).

    Hashes (blake2b) a canonical text of field names, offsets, formats with byte order and
    the itemsize, so the same layout gives the same value in every process, run and host of
    the same byte order; renaming, retyping or moving any field changes it.
    """
    text = "bot4-record-v1|" + _canonical(np.dtype(dtype))  # v1 of the hashing scheme
    digest = hashlib.blake2b(text.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


#: layouts of earlier record versions still readable as today's (journals outlive builds):
#: fingerprint -> record-type id. v1 -> v2 only named bytes that v1 kept zero in
#: ``reserved``, so a v1 record read with the v2 dtype has every v2 field 0 (= unset).
LEGACY_FINGERPRINTS: dict[int, int] = {
    0x6916464E37833C18: RT_ORDER,  # v1 ORDER
    0x41BE7893DB49B525: RT_EXEC_REPORT,  # v1 EXEC_REPORT
}


def readable_fingerprints(record_type: int) -> set[int]:
    """Fingerprints whose bytes read correctly as this build's ``record_type`` dtype."""
    now = dtype_fingerprint(dtype_by_record_type(record_type))
    return {now} | {fp for fp, rt in LEGACY_FINGERPRINTS.items() if rt == record_type}


_BY_FINGERPRINT = {dtype_fingerprint(RECORD_TYPES[n]): i for n, i in RECORD_TYPE_IDS.items()}
_BY_ID = {RECORD_TYPE_IDS[n]: dt for n, dt in RECORD_TYPES.items()}
if len(_BY_FINGERPRINT) != len(RECORD_TYPES):  # import-time, not stripped by -O
    raise AssertionError("two record types share a layout")


_RT_OF_DTYPE = {RECORD_TYPES[n]: i for n, i in RECORD_TYPE_IDS.items()}


def record_type_of(dtype: np.dtype) -> int:
    """Record-type id (``RT_*``) of a record dtype, matched by layout; ValueError if none."""
    rt = _RT_OF_DTYPE.get(dtype)  # the common case: one of ours (hash + equality, ~100 ns)
    if rt is not None:
        return rt
    try:
        return _BY_FINGERPRINT[dtype_fingerprint(dtype)]
    except KeyError:
        raise ValueError(f"not a bot4 record dtype: {np.dtype(dtype)}") from None


def dtype_by_record_type(record_type: int) -> np.dtype:
    """Record dtype of a record-type id (``RT_*``); ValueError if the id is unknown."""
    try:
        return _BY_ID[record_type]
    except KeyError:
        raise ValueError(f"unknown record type id {record_type}") from None
