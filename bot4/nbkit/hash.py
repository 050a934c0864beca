"""``splitmix64``: the one 64-bit mixer of bot4's kernels.

It is splitmix64's output function (Steele, Lea, Flood 2014; Vigna's constants): a
bijection of uint64 whose every output bit depends on every input bit, so the low bits
of sequential keys (order ids, sequence numbers) spread evenly over a power-of-two table.
Two multiplies and three shifts, a few ns at most.

``bot4.records.identity`` keeps its own copy of the same round: records sit below this
kit and may not import it (the execution content hash is a record-level contract).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["GOLDEN", "splitmix64"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: splitmix64's increment
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(nogil=True, cache=True, inline="always")
def splitmix64(x):
    """The splitmix64 finaliser of ``x`` (any integer, taken as its uint64 bit pattern);
    returns uint64 (wrapping arithmetic)."""
    z = np.uint64(x) + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))
