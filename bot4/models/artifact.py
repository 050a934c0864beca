"""A scoring model as one flat, memory-mappable file (``.b4m``): what the registry stores.

Every kind (``linear``, ``trees``) is the same five arrays, so one numba scorer
(:func:`bot4.models.scoring.score`) serves both and a champion and a challenger of any
kinds pass through the signals kernel with the same types:

* ``lin``    float64 (F + 1,) or (0,): bias then one weight per signal (linear part);
* ``roots``  int32 (T,): tree t's first node (>= 0) or, for a one-leaf tree, ``~leaf``;
* ``nodes``  int32 (N, 4): split feature, left child, right child, LightGBM decision type
  (bit 1 default-left, bits 2-3 missing type); a child < 0 is the leaf ``~child``;
* ``thr``    float64 (N,): split threshold (go left when ``x <= thr``);
* ``leaf``   float64 (L,): leaf values (shrinkage applied).

The score is ``lin[0] + lin[1:] . z + sum_t leaf(tree t)``, trees summed in order from 0.0
as LightGBM's ``predict(raw_score=True)`` does; ``z`` is the signals stage's orthogonalised
signal vector (``bot4.signals.features.FEATURES`` order).

File layout (little endian)::

    0   8  magic b"BOT4MDL\\x01"
    8   4  u32 header length H
    12  4  u32 reserved (0)
    16  H  JSON header: kind, features, fingerprint, arrays {name: [dtype, shape, offset]}
    ...    arrays, each at a 64-byte aligned offset, C order

The file's sha256 is its registry address. :func:`map_model` opens, memory-maps read-only
and validates (bounds, shapes, finite values, child indices in range) without copying;
the sha256 is checked at register and by ``bot4 models show --verify``, not at every load
(it costs more than the load itself).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from bot4.records.errors import Bot4Error, Code

MAGIC = b"BOT4MDL\x01"
HEADER_FIXED = 16
ALIGN = 64
KINDS = ("linear", "trees")
ARRAYS = (
    ("lin", "<f8", 1),
    ("roots", "<i4", 1),
    ("nodes", "<i4", 2),
    ("thr", "<f8", 1),
    ("leaf", "<f8", 1),
)
_PAGE = mmap.PAGESIZE


class ModelError(Bot4Error):
    """A model file or registry operation cannot be used (one line, names the file/model)."""

    code = Code.CONFIG_INVALID


def feature_fingerprint(features: tuple[str, ...] | list[str]) -> str:
    """16 hex digits of sha256 over the feature names in order, one per line: the schema a
    model expects. Derived from the names in code, so it follows the feature vector."""
    return hashlib.sha256("\n".join(features).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Model:
    """One model's arrays (views of a mapping, or owned arrays) and its header."""

    kind: str
    features: tuple[str, ...]
    lin: np.ndarray
    roots: np.ndarray
    nodes: np.ndarray
    thr: np.ndarray
    leaf: np.ndarray
    meta: dict

    @property
    def fingerprint(self) -> str:
        return feature_fingerprint(self.features)

    @property
    def arrays(self) -> tuple:
        """The tuple the numba scorer takes: (lin, roots, nodes, thr, leaf)."""
        return (self.lin, self.roots, self.nodes, self.thr, self.leaf)

    @property
    def n_params(self) -> int:
        return int(self.lin.size + self.thr.size + self.leaf.size)


def linear_model(weights: np.ndarray, features, meta: dict | None = None) -> Model:
    w = np.ascontiguousarray(weights, np.float64)
    return Model(
        "linear", tuple(features), w, np.zeros(0, np.int32), np.zeros((0, 4), np.int32),
        np.zeros(0), np.zeros(0), dict(meta or {}),
    )  # fmt: skip


def to_bytes(m: Model) -> bytes:
    """The ``.b4m`` bytes of ``m`` (deterministic: same arrays, same bytes)."""
    arrs = {name: np.ascontiguousarray(getattr(m, name), dtype) for name, dtype, _ in ARRAYS}
    desc: dict = {}
    header = {
        "kind": m.kind,
        "features": list(m.features),
        "fingerprint": feature_fingerprint(m.features),
        "meta": m.meta,
        "arrays": desc,
    }
    # offsets depend on the header's length: fix the header size with a padded guess
    for _ in range(3):
        hdr = json.dumps(header, sort_keys=True).encode()
        off = _align(HEADER_FIXED + len(hdr) + 64)
        for name, _dt, _nd in ARRAYS:
            a = arrs[name]
            desc[name] = [a.dtype.str, list(a.shape), off]
            off = _align(off + a.nbytes)
    hdr = json.dumps(header, sort_keys=True).encode()
    start = min(d[2] for d in desc.values())
    if HEADER_FIXED + len(hdr) > start:
        raise ModelError("model header does not fit its reserved space")
    buf = bytearray(off)
    buf[0:16] = MAGIC + struct.pack("<II", len(hdr), 0)
    buf[16 : 16 + len(hdr)] = hdr
    for name, _dt, _nd in ARRAYS:
        a = arrs[name]
        o = desc[name][2]
        buf[o : o + a.nbytes] = a.tobytes()
    return bytes(buf)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def map_model(path: str | os.PathLike, *, prefault: bool = True) -> Model:
    """Open, memory-map read-only and validate a ``.b4m`` file; ModelError naming the file
    on anything wrong. The arrays are read-only views of the mapping (no copy); with
    ``prefault`` every page is touched once so the first score after a swap does not
    page-fault."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_FIXED:
            raise ModelError(f"{path}: truncated ({size} bytes)")
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return model_from_buffer(mm, path, prefault=prefault)


def model_from_buffer(buf, path: str, *, prefault: bool = False) -> Model:
    size = len(buf)
    if bytes(buf[0:8]) != MAGIC:
        raise ModelError(f"{path}: not a bot4 model file (bad magic)")
    (hlen, _res) = struct.unpack_from("<II", buf, 8)
    if HEADER_FIXED + hlen > size:
        raise ModelError(f"{path}: truncated header")
    try:
        header = json.loads(bytes(buf[HEADER_FIXED : HEADER_FIXED + hlen]))
        kind = header["kind"]
        features = tuple(header["features"])
        desc = header["arrays"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: unreadable header") from None
    if kind not in KINDS:
        raise ModelError(f"{path}: unknown model kind {kind!r}")
    if header.get("fingerprint") != feature_fingerprint(features):
        raise ModelError(f"{path}: feature fingerprint does not match its feature names")
    arrs = {}
    for name, dtype, ndim in ARRAYS:
        try:
            dt, shape, off = desc[name]
        except (KeyError, ValueError):
            raise ModelError(f"{path}: array {name!r} missing") from None
        if dt != dtype or len(shape) != ndim or off % ALIGN or min(shape, default=0) < 0:
            raise ModelError(f"{path}: array {name!r} has dtype {dt} shape {shape}")
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if off + n > size:
            raise ModelError(
                f"{path}: truncated: array {name!r} ends at {off + n}, file has {size} bytes"
            )
        arrs[name] = np.frombuffer(
            buf, dtype, count=n // np.dtype(dtype).itemsize, offset=off
        ).reshape(shape)
    m = Model(
        kind,
        features,
        arrs["lin"],
        arrs["roots"],
        arrs["nodes"],
        arrs["thr"],
        arrs["leaf"],
        header.get("meta", {}),
    )
    validate(m, path)
    if prefault:
        _touch(buf)
    return m


def _touch(buf) -> None:
    """Read one byte per page (off the hot path: a swap happens between batches)."""
    a = np.frombuffer(buf, np.uint8)
    int(a[::_PAGE].sum())


def validate(m: Model, path: str = "model") -> None:
    """Shapes agree, every float is finite, every child index is in range; ModelError."""
    nf = len(m.features)
    if m.lin.size not in (0, nf + 1):
        raise ModelError(
            f"{path}: linear part has {m.lin.size} weights, expected {nf + 1} (bias + {nf} features)"
        )
    if m.kind == "linear" and (m.lin.size == 0 or m.roots.size):
        raise ModelError(f"{path}: a linear model has weights and no trees")
    if m.kind == "trees" and m.roots.size == 0:
        raise ModelError(f"{path}: a tree model without trees")
    n_nodes, n_leaves = m.thr.shape[0], m.leaf.shape[0]
    if m.nodes.shape != (n_nodes, 4):
        raise ModelError(f"{path}: nodes has shape {m.nodes.shape}, expected ({n_nodes}, 4)")
    for name in ("lin", "leaf"):
        a = getattr(m, name)
        if a.size and not np.isfinite(a).all():
            raise ModelError(f"{path}: {name} holds NaN or infinite values")
    problem = _check_indices(m.nodes, m.roots, m.thr, n_leaves, nf)
    if problem:
        raise ModelError(f"{path}: {_INDEX_PROBLEMS[problem]}")


_INDEX_PROBLEMS = {
    1: "a split names a feature outside the feature vector",
    2: "a child index is out of range",
    3: "a tree root is out of range",
    4: "thr holds NaN values",
}


@njit(nogil=True, cache=True)
def _check_indices(nodes, roots, thr, n_leaves, nf):
    """0, or which structural check failed: features in range, every child a later node
    (so every walk ends) or an existing leaf, roots in range, no NaN threshold (an
    infinite one is LightGBM's "every number one way, missing the other")."""
    n_nodes = nodes.shape[0]
    for k in range(n_nodes):
        if nodes[k, 0] < 0 or nodes[k, 0] >= nf:
            return 1
        for j in (1, 2):
            c = nodes[k, j]
            if (c >= 0 and (c <= k or c >= n_nodes)) or (c < 0 and ~c >= n_leaves):
                return 2
        if np.isnan(thr[k]):
            return 4
    for t in range(roots.shape[0]):
        r = roots[t]
        if (r >= 0 and r >= n_nodes) or (r < 0 and ~r >= n_leaves):
            return 3
    return 0


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` at ``path`` by write + fsync + rename (+ fsync of the directory): a reader
    or a crash sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
