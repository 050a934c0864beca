"""Array parameters in PostgreSQL's binary array format, built with numpy.

The pipelined paths send a batch's rows as ``unnest`` of one array parameter per column
(:meth:`bot4.db.rows.StageLayout.unnest_params`). Dumping a Python list element by element
costs the client more than the statement costs the server at 128 rows; these wrappers carry
the array's wire bytes, built in one numpy pass per column, and psycopg sends them as they
are (binary parameters, no per-element Python).

Wire format (``array_send``): ndim, has-nulls flag, element type oid, then per dimension
its length and lower bound (1), then each element as its int32 length and its bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = ["BigintArray", "ByteaArray", "bigint_array", "bytea_array"]

_INT8_OID = 20
_INT8_ARRAY_OID = 1016
_BYTEA_OID = 17
_BYTEA_ARRAY_OID = 1001


class _Wire:
    """An array parameter's binary wire bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class BigintArray(_Wire):
    """A ``bigint[]`` parameter (see :func:`bigint_array`)."""


class ByteaArray(_Wire):
    """A ``bytea[]`` parameter (see :func:`bytea_array`)."""


def _header(n: int, oid: int) -> bytes:
    if n == 0:
        return struct.pack("!iii", 0, 0, oid)
    return struct.pack("!iiiii", 1, 0, oid, n, 1)


def bigint_array(values: np.ndarray) -> BigintArray:
    """``values`` (any integer dtype; uint64 by bit pattern, as the staging tables store
    it) as a one-dimensional ``bigint[]`` without NULLs."""
    values = np.asarray(values)
    if values.dtype == np.uint64:
        values = values.view(np.int64)
    wire = np.empty(len(values), dtype=[("len", ">i4"), ("v", ">i8")])
    wire["len"] = 8
    wire["v"] = values
    return BigintArray(_header(len(values), _INT8_OID) + wire.tobytes())


def bytea_array(values: np.ndarray) -> ByteaArray:
    """A fixed-width bytes column (``S<w>``) as ``bytea[]``, every element its full
    ``w`` bytes (NUL padding included, as the staging tables' COPY stores them)."""
    values = np.asarray(values)
    width = values.dtype.itemsize
    wire = np.empty(len(values), dtype=[("len", ">i4"), ("v", f"S{width}")])
    wire["len"] = width
    wire["v"] = values
    return ByteaArray(_header(len(values), _BYTEA_OID) + wire.tobytes())


class _BigintArrayDumper(Dumper):
    format = Format.BINARY
    oid = _INT8_ARRAY_OID

    def dump(self, obj: BigintArray) -> bytes:
        return obj.data


class _ByteaArrayDumper(Dumper):
    format = Format.BINARY
    oid = _BYTEA_ARRAY_OID

    def dump(self, obj: ByteaArray) -> bytes:
        return obj.data


psycopg.adapters.register_dumper(BigintArray, _BigintArrayDumper)
psycopg.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
