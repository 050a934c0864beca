"""Array parameters in PostgreSQL's binary array format, built with numpy.

The pipelined paths send a batch's rows of one record type as one two-dimensional array
parameter, field by row (:meth:`bot4.db.rows.StageLayout.array_params`), instead of one
list per field: dumping Python lists element by element, and one parameter per field, cost
the client more than the statement costs the server at 128 rows. These wrappers carry the
array's wire bytes, built with one numpy pass per column, and psycopg sends them as they
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

__all__ = ["BigintArray", "ByteaArray", "bigint_matrix", "bytea_matrix"]

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


_INT8_WIRE = np.dtype([("len", ">i4"), ("v", ">i8")])


def _header(shape: tuple[int, ...], oid: int) -> bytes:
    if 0 in shape:
        return struct.pack("!iii", 0, 0, oid)
    dims = b"".join(struct.pack("!ii", n, 1) for n in shape)
    return struct.pack("!iii", len(shape), 0, oid) + dims


def _ints(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.view(np.int64) if values.dtype == np.uint64 else values


def bigint_matrix(columns: list[np.ndarray], n: int) -> BigintArray:
    """``len(columns)`` integer columns of ``n`` values each as one two-dimensional
    ``bigint[]``, ``m[k][i]`` the ``i``-th value of column ``k`` (both from 1); uint64 by
    bit pattern. One numpy pass per column: the wire elements of a column are contiguous."""
    wire = np.empty((len(columns), n), _INT8_WIRE)
    wire["len"] = 8
    v = wire["v"]
    for k, col in enumerate(columns):
        v[k] = _ints(col)
    return BigintArray(_header((len(columns), n), _INT8_OID) + wire.tobytes())


def bytea_matrix(columns: list[np.ndarray], n: int) -> ByteaArray:
    """Fixed-width bytes columns (``S<w>``, widths may differ) of ``n`` values each as one
    two-dimensional ``bytea[]``, every element its full ``w`` bytes (NUL padding included,
    as the staging tables' COPY stores them)."""
    chunks = [_header((len(columns), n), _BYTEA_OID)]
    for col in columns:
        col = np.asarray(col)
        width = col.dtype.itemsize
        wire = np.empty(n, dtype=[("len", ">i4"), ("v", f"S{width}")])
        wire["len"] = width
        wire["v"] = col
        chunks.append(wire.tobytes())
    return ByteaArray(b"".join(chunks))


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
