"""A source's batch published in one compiled call, stamped as it is published (issue 15).

``StageRunner._publish`` writes a batch's cursor buffer and commits its outputs in the
interpreter: tens of numpy item stores and one numba call per output. For the market data
stage that path sat between the tick's receive stamp (``ts_recv_ns``, taken when the batch
was generated) and the commit the hot path polls for: p50 16 µs of a 28-50 µs
tick-to-order on the 2-core VM. :func:`publish_stamped` does the same steps without
returning to the interpreter and takes the stamp last, so ``ts_recv_ns`` is the instant
md publishes the tick (the issue's definition), a few hundred ns before the consumer can
see it:

1. ``now`` = CLOCK_MONOTONIC; every published record of every output gets
   ``ts_recv_ns = now`` (every output of a source that uses this carries MARKET_DATA, the
   same records on each);
2. the cursor buffer: the source position reached, each output's position after this
   commit (``valid_at``), the next sequence number, then the generation (release store):
   exactly what ``StageRunner._publish`` writes, so ``StageRunner.recover`` resumes a
   killed stage exactly;
3. the commits, in output order (a parked consumer is woken, as ``producer_commit`` does).

Everything the records hold but ``ts_recv_ns`` is what the stage's ``generate`` wrote; the
deterministic replay never comes here (it calls ``generate`` with its simulated clock).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bot4.shm.atomics import monotonic_ns, store_release
from bot4.shm.control import C_CURSOR, C_GEN, C_NEXT_SEQ, C_VALID_AT
from bot4.shm.ring_ops import producer_commit


@njit(nogil=True, cache=True)
def publish_stamped(buf, cursor, hdrs, views, claims, counts, seq, gen):
    """Stamp, seal the cursor buffer ``buf`` (generation ``gen``, release store) and commit
    ``counts[j]`` records claimed at ``claims[j]`` on output ``j``. ``hdrs``/``views``:
    the outputs' headers and the claimed slot views (tuples, one per output). Returns the
    stamp (ns)."""
    now = monotonic_ns()
    for j in range(len(views)):
        v = views[j]
        for r in range(counts[j]):
            v[r].ts_recv_ns = now
    buf[C_CURSOR] = cursor
    for j in range(len(hdrs)):
        buf[C_VALID_AT + j] = claims[j] + np.uint64(counts[j])
    buf[C_NEXT_SEQ] = np.uint64(seq)
    store_release(buf, C_GEN, np.uint64(gen))
    for j in range(len(hdrs)):
        if counts[j] > 0:
            producer_commit(hdrs[j], counts[j])
    return now


def warm(n_outputs: int) -> int:
    """Compile (or load) :func:`publish_stamped` for a source with ``n_outputs``
    MARKET_DATA outputs, on scratch arrays (nothing is committed: every count is 0)."""
    from bot4.records import MARKET_DATA
    from bot4.shm.control import CURSOR_WORDS
    from bot4.shm.ring_layout import HEADER_WORDS

    n = max(1, n_outputs)
    publish_stamped(
        np.zeros(CURSOR_WORDS, np.uint64), np.uint64(0),
        tuple(np.zeros(HEADER_WORDS, np.uint64) for _ in range(n)),
        tuple(np.zeros(8, MARKET_DATA)[:0] for _ in range(n)),
        np.zeros(n, np.uint64), np.zeros(n, np.int64), 0, 0,
    )  # fmt: skip
    return 1
