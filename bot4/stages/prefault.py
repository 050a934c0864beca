"""Prefault a stage's private tables before its loop runs.

numpy takes big arrays from the kernel as untouched zero pages (``calloc`` / ``mmap``), so a
table the kernels probe at random (an id hash map, the OMS's order slots) faults in one
page at a time as keys land on new pages: a read fault (the shared zero page) and a write
fault (the page itself) each. The hot group of the default run took 2-30 a second for
minutes (`perf record -e page-faults`: all in the OMS's two 2 MiB id maps, at random
pages), in the risk -> orders hop; none after this. Six interleaved pairs of 30 s runs,
core 1 kept: tick-to-order p99 148 / 137 / 40 / 67 / 30 / 30 µs before, 101 / 57 / 38 /
29 / 24 / 27 µs after, lower in every pair (docs/hotpath.md). Writing every page once at
setup moves that cost to the start.

Only process-private memory is written (numpy's own, ``base`` None, or numba's, a
``MemInfo``): arrays over a segment or a file (``base`` an mmap / memoryview) are the
segments' to map (``bot4.shm.segment`` reserves and populates them), and another process
may be writing them. Each byte is rewritten with its own value, through a copy (numpy
skips an assignment whose source is its destination), so a table's contents are
unchanged; the caller runs it before any other thread of the stage touches the tables.
"""

from __future__ import annotations

import numpy as np

PAGE = 4096


def _private(a: np.ndarray) -> np.ndarray | None:
    """The array owning ``a``'s memory when that memory is process-private, else None."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.base is None or type(root.base).__name__ == "_MemInfo":
        return root
    return None


def prefault(obj) -> int:
    """Write every page of the private numpy arrays reachable from ``obj`` (tuples, named
    tuples, lists, dicts: a kernel's state object) once; returns the bytes covered (each
    array once)."""
    seen: set[int] = set()
    covered = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            root = _private(o)
            if root is None or root.nbytes < PAGE or not root.flags.writeable:
                continue
            if not (root.flags.c_contiguous or root.flags.f_contiguous):
                continue
            if id(root) != id(o):
                if id(root) in seen:
                    continue
                seen.add(id(root))
            u = root.reshape(-1, order="A").view(np.uint8)
            u[::PAGE] = u[::PAGE].copy()
            u[-1:] = u[-1:].copy()
            covered += root.nbytes
        elif isinstance(o, tuple | list):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return covered
