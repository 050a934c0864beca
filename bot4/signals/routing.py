"""Registry models in the signals kernel: champion/challenger routing in the kernel,
shadow scoring after publication, hot swap at batch boundaries.

Used when a signals stage's params name ``model_slot`` (see docs/models.md); without it
the stage runs :func:`bot4.signals.features.signals_kernel` exactly as before, so replays of
topologies that do not use the registry are unchanged byte for byte.

Routing, per quote that leaves the instrument out of cooldown and warm-up (``route``):

* ``champion`` — the champion decides;
* ``split`` (canary and A/B) — the challenger decides when ``splitmix64(key) % 10000 <
  pct_bp``, ``key`` the instrument (``split = instrument``) or the instrument and the
  quote's sequence number (``split = tick``): a pure function of the record, so a replay
  routes every tick the same way; the other ticks the champion decides. One cooldown per
  instrument, whoever decided (one position);
* ``shadow`` — the champion decides; the challenger is scored on every quote, but later:
  the kernel copies each quote's features into ``shadow_rows`` and :func:`shadow_kernel`
  scores them from the stage's ``pending`` hook, which the loop calls after it committed
  the batch's intents, so shadow scoring adds nothing to tick-to-order. The challenger has
  its own cooldown; its would-be intents go to the stage's shadow log, never to a ring.

Every intent carries the deciding model's registry id in ``model_version`` (risk copies
it into ``ORDER.model_id``).

State: the kernels take one :class:`RoutedState` (the stage's feature arrays and the
router's own), built at setup and again when a swap maps other models or a bigger batch
needs more shadow rows, and borrow it (``bot4.nbkit.unowned``) for the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from bot4.models.scoring import score
from bot4.nbkit import splitmix64, unowned
from bot4.records import MD_QUOTE, ORDER_INTENT
from bot4.signals import features as F

# route words (int64)
R_MODE, R_PCT_BP, R_SPLIT, R_CHAMPION, R_CHALLENGER = range(5)
NROUTE = 5
MODE_CHAMPION, MODE_SHADOW, MODE_SPLIT = 0, 1, 2
SPLIT_TICK, SPLIT_INSTRUMENT = 0, 1
# routed counters (int64)
RC_CHAMPION, RC_CHALLENGER, RC_SHADOW, RC_CHALLENGER_TICKS, RC_DECIDED_TICKS, RC_SHADOW_SCORED = (
    range(6)
)
NRC = 6
# shadow row meta columns (float64, after the NF features)
SM_INST, SM_SEQ, SM_TS_EVENT, SM_TS_RECV, SM_N, SM_BID, SM_ASK, SM_MID = range(8)
NSM = 8


class RoutedState(NamedTuple):
    """Everything the routing kernels read and write, in one object, all in the stage's
    process: the stage's arrays (fixed after its setup; prices in the instrument's price
    units) then the router's (``bot4.stages.signals_models.ModelRouter``, which builds this
    at setup and again when a swap maps other models or a batch needs more shadow rows).

    The kernels take it or ``tuple()`` of it and name it back (``RoutedState(*rs)``, free
    in compiled code). The router passes the plain tuple, built with the state: numba's
    dispatcher takes about 1 us longer to type a named tuple argument than a plain one
    (measured: 16 arrays loose 1.7 us per call, one named tuple 3.0 us, the same as a
    plain tuple 2.0 us), a tenth of an A/B batch of 256 quotes."""

    st: np.ndarray  # float64[n_inst, NSTATE]: per-instrument feature state (features.S_*)
    g: np.ndarray  # float64[n_inst, 4]: GARCH(1,1) parameters per instrument
    mean: np.ndarray  # float64[NF]: the orthogonaliser's feature means
    WT: np.ndarray  # float64[NF, NF]: its rotation, transposed
    cfg: np.ndarray  # float64[13]: the stage's parameters (features.default_cfg's order)
    tick: np.ndarray  # float64[n_inst]: tick size per instrument, price units
    x: np.ndarray  # float64[NF]: scratch, features of one quote
    z: np.ndarray  # float64[NF]: scratch, rotated features
    counters: np.ndarray  # int64[3]: quotes, rejected records, intents
    route: np.ndarray  # int64[NROUTE]: R_* words
    rc: np.ndarray  # int64[NRC]: RC_* counters
    champ: tuple  # the champion's model arrays (bot4.models.artifact)
    chall: tuple  # the challenger's (the champion's when there is none)
    shadow_rows: np.ndarray  # float64[batch, NF + NSM]: features, then the SM_* meta
    cool: np.ndarray  # float64[n_inst]: the shadow challenger's cooldown, quotes
    log: np.ndarray  # ORDER_INTENT[SHADOW_LOG]: its would-be intents, before a flush


@njit(nogil=True, cache=True, inline="always")
def to_challenger(route, inst, tick_seq):
    """True when the challenger decides this quote (split mode only)."""
    if route[R_MODE] != MODE_SPLIT:
        return False
    key = np.uint64(inst)
    if route[R_SPLIT] == SPLIT_TICK:
        key = (key << np.uint64(40)) ^ np.uint64(tick_seq)
    return splitmix64(key) % np.uint64(10000) < np.uint64(route[R_PCT_BP])


@njit(nogil=True, cache=True)
def signals_routed_kernel(inp, out, seq, rs, now):
    """One batch, as ``signals_kernel`` with the decider chosen per quote by the route
    words: ``inp`` market data records, intents into ``out`` numbered from ``seq``,
    stamped ``now`` (ns); ``rs`` the :class:`RoutedState` or ``tuple()`` of it (borrowed
    for the call; see :class:`RoutedState` for why a plain tuple). In shadow mode every
    quote past warm-up is copied to ``rs.shadow_rows`` (features, then the ``SM_*``
    meta). Returns (intents written, shadow rows written)."""
    rs = unowned(RoutedState(*rs))
    st, g, mean, WT, cfg, tick = rs.st, rs.g, rs.mean, rs.WT, rs.cfg, rs.tick
    x, z, counters = rs.x, rs.z, rs.counters
    route, rc, champ, chall, shadow_rows = rs.route, rs.rc, rs.champ, rs.chall, rs.shadow_rows
    n = 0
    ns = 0
    n_inst = st.shape[0]
    nf = x.shape[0]
    shadow = route[R_MODE] == MODE_SHADOW
    for i in range(inp.shape[0]):
        r = inp[i]
        inst = np.int64(r.instrument)
        if r.kind != MD_QUOTE:
            continue
        if inst <= 0 or inst >= n_inst or r.price <= 0 or r.qty < 0:
            counters[1] += 1
            continue
        counters[0] += 1
        if not F.update_state(st, g, inst, float(r.price), float(r.qty), r.side, cfg):
            continue
        if shadow and st[inst, F.S_N] >= cfg[10]:
            F.features_of(st, inst, x)
            row = shadow_rows[ns]
            for k in range(nf):
                row[k] = x[k]
            row[nf + SM_INST] = inst
            row[nf + SM_SEQ] = r.seq
            row[nf + SM_TS_EVENT] = r.ts_event_ns
            row[nf + SM_TS_RECV] = r.ts_recv_ns
            row[nf + SM_N] = st[inst, F.S_N]
            row[nf + SM_BID] = st[inst, F.S_BID]
            row[nf + SM_ASK] = st[inst, F.S_ASK]
            row[nf + SM_MID] = st[inst, F.S_MID]
            ns += 1
        if st[inst, F.S_COOL] > 0.0:
            st[inst, F.S_COOL] -= 1.0
            continue
        if st[inst, F.S_N] < cfg[10]:
            continue
        F.features_of(st, inst, x)
        F.orthogonalise(x, mean, WT, z)
        rc[RC_DECIDED_TICKS] += 1
        if to_challenger(route, inst, r.seq):
            rc[RC_CHALLENGER_TICKS] += 1
            s = score(chall[0], chall[1], chall[2], chall[3], chall[4], z)
            model_id = route[R_CHALLENGER]
        else:
            s = score(champ[0], champ[1], champ[2], champ[3], champ[4], z)
            model_id = route[R_CHAMPION]
        if abs(s) < cfg[4] or not np.isfinite(s):
            continue
        st[inst, F.S_COOL] = cfg[9]
        o = out[n]
        F.intent_stamp(o, seq + n, r.seq, r.ts_event_ns, r.ts_recv_ns, now, r.instrument, model_id)
        F.intent_price(
            o, s, cfg, st[inst, F.S_BID], st[inst, F.S_ASK], st[inst, F.S_MID], tick[inst], x[7]
        )
        if model_id == route[R_CHAMPION]:
            rc[RC_CHAMPION] += 1
        else:
            rc[RC_CHALLENGER] += 1
        n += 1
    counters[2] += n
    return n, ns


@njit(nogil=True, cache=True)
def shadow_kernel(rs, nrows, n_log, now):
    """Score the challenger on the first ``nrows`` shadow rows, in order, with its own
    per-instrument cooldown ``rs.cool``; would-be intents (stamped ``now``, ns) into
    ``rs.log[n_log:]`` (seq: the shadow log's own count). ``rs`` as in
    :func:`signals_routed_kernel`. Returns the new ``n_log`` (stops early when the log is
    full)."""
    rs = unowned(RoutedState(*rs))
    mean, WT, cfg, tick, x, z = rs.mean, rs.WT, rs.cfg, rs.tick, rs.x, rs.z
    rows, chall, cool, log_out, rc = rs.shadow_rows, rs.chall, rs.cool, rs.log, rs.rc
    model_id = rs.route[R_CHALLENGER]
    nf = x.shape[0]
    for i in range(nrows):
        if n_log >= log_out.shape[0]:
            break
        row = rows[i]
        inst = np.int64(row[nf + SM_INST])
        if cool[inst] > 0.0:
            cool[inst] -= 1.0
            continue
        for k in range(nf):
            x[k] = row[k]
        F.orthogonalise(x, mean, WT, z)
        s = score(chall[0], chall[1], chall[2], chall[3], chall[4], z)
        rc[RC_SHADOW_SCORED] += 1
        if abs(s) < cfg[4] or not np.isfinite(s):
            continue
        cool[inst] = cfg[9]
        o = log_out[n_log]
        F.intent_stamp(
            o, n_log + 1, np.uint64(row[nf + SM_SEQ]), np.int64(row[nf + SM_TS_EVENT]),
            np.int64(row[nf + SM_TS_RECV]), now, inst, model_id,
        )  # fmt: skip
        F.intent_price(
            o, s, cfg, row[nf + SM_BID], row[nf + SM_ASK], row[nf + SM_MID], tick[inst], x[7]
        )
        rc[RC_SHADOW] += 1
        n_log += 1
    return n_log


MODE_CODES = {
    "champion": MODE_CHAMPION,
    "shadow": MODE_SHADOW,
    "canary": MODE_SPLIT,
    "ab": MODE_SPLIT,
}
SHADOW_LOG = 8192  # shadow intents buffered before a flush to the shadow file


def read_shadow_log(path: str | Path) -> np.ndarray:
    """The would-be intents a shadow challenger recorded (ORDER_INTENT records)."""
    data = Path(path).read_bytes()
    n = len(data) // ORDER_INTENT.itemsize
    return np.frombuffer(data[: n * ORDER_INTENT.itemsize], ORDER_INTENT).copy()
