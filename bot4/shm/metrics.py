"""The metrics segment ``/bot4.<instance>.metrics``: latency histograms and the order flow
as the journal sees it, written by one stage, read by ``bot4 stats`` and
``bot4 metrics serve`` (``PROT_READ``).

The *recorder* is the stage that journals the OMS's orders, executions and the risk
decisions (the first ``persistence`` or ``count-sink`` with such an input; the creator
writes its index). It records at batch level, in a numba kernel over each input batch it
already reads (``bot4.stages.standins.CountSink``): off the hot path, the rings' and the
trading stages' loops store nothing more. Latencies come from the stamps every NEW order
carries when the OMS sends it (``docs/records.md``):

* ``tick_to_order``  ``ts_order_ns - ts_recv_ns`` (md published the tick -> OMS sent the order)
* ``md_to_signals``  ``ts_signal_ns - ts_recv_ns``
* ``signals_to_risk`` ``ts_risk_ns - ts_signal_ns``
* ``risk_to_orders`` ``ts_order_ns - ts_risk_ns``

A missing stamp (0) is not a latency and is not counted. Each histogram is
``bot4.shm.histogram``'s HdrHistogram layout.

::

    word        owner     field
    0           creator   magic "BOT4METR", layout version, histograms, words per
                          histogram, counts per histogram, significant figures,
                          highest trackable ns, recorder stage index + 1 (0: none),
                          positions tracked, reasons tracked, created ns, risk
                          panel writer stage index + 1 (0: none)  (words 0..11)
    16          recorder  updated ns (monotonic, at each batch it recorded)
    17          recorder  journal: next frame the writer appends (persistence only)
    18          recorder  database: first frame not loaded + 1 (0: no loader, or not
                          known yet); lag = word 17 - (word 18 - 1)
    128         creator   stage names, topology order, for operator tools: MAX_STAGES x
                          48 bytes ASCII, NUL-padded (``bot4 stats --instance`` and the
                          exporter name stages without the topology file)
    512         recorder  flow (FLOW_WORDS words):
      +0                  orders sent by action (ACTION_*)            [16]
      +16                 execution reports by exec type (EXEC_*)     [16]
      +32                 fills (FILL + PARTIAL_FILL), filled qty (shares)
      +48                 decisions accepted, denied
      +64                 denials by reason (errors.Code; >= N_REASONS: last)  [N_REASONS]
      +64+N_REASONS       venue rejects (REJECTED, CANCEL_REJECTED) by reason [N_REASONS]
      +64+2 N_REASONS     net filled position per instrument id, shares, int64 as u64
                          (buys minus sells; ids >= N_POSITIONS not kept)      [N_POSITIONS]
    HIST_BASE   recorder  N_HIST histograms of ``histogram.HIST_WORDS`` words each
    RISK_BASE   risk      the risk panel (``publish_risk``: the risk stage's own figures,
                          copied every ``RISK_PANEL_NS`` at housekeeping, off its kernels):
      +0                  generation: odd while a copy is being written (seqlock)
      +1                  updated ns (monotonic)
      +2                  price scale (price units per currency unit)
      +3                  account (RISK_ACCOUNT_WORDS, int64 as u64; ``RA_*``)
      +16                 per instrument id (< N_POSITIONS) RISK_ROW_WORDS words (``RI_*``)

The risk panel's writer is the first shared risk stage (the creator writes its index); its
amounts are int64 in price units (``price scale`` per currency unit), positions in shares.

Counts only grow within a session (the segments are created per session). A recorder
restarted after a SIGKILL re-reads (and journals again) the batch it had not released, so
across such a restart the flow counts and histograms are at least once: one batch may be
counted twice (the database, not this segment, is exact).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from bot4.records import (
    ACTION_NEW,
    DECISION_ACCEPT,
    DECISION_DENY,
    EXEC_BROKEN,
    EXEC_CANCEL_REJECTED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    SIDE_BUY,
)
from bot4.shm import histogram as H
from bot4.shm.atomics import monotonic_ns
from bot4.shm.segment import attach_checked, create_initialised, segment_name

MAGIC = int.from_bytes(b"BOT4METR", "little")
LAYOUT_VERSION = 2  # 2: the risk panel
METRICS_SEGMENT = "metrics"

HIST_NAMES = ("tick_to_order", "md_to_signals", "signals_to_risk", "risk_to_orders")
HIST_TICK_TO_ORDER, HIST_MD_SIGNALS, HIST_SIGNALS_RISK, HIST_RISK_ORDERS = range(4)
#: (histogram, stage that stamped the start, stage that stamped the end)
HOPS = (
    ("tick_to_order", "md", "orders"),
    ("md_to_signals", "md", "signals"),
    ("signals_to_risk", "signals", "risk"),
    ("risk_to_orders", "risk", "orders"),
)
N_HIST = len(HIST_NAMES)
N_REASONS = 1024
N_POSITIONS = 256

(
    W_MAGIC,
    W_VERSION,
    W_NHIST,
    W_HIST_WORDS,
    W_COUNTS_LEN,
    W_FIGURES,
    W_HIGHEST,
    W_RECORDER,
    W_NPOS,
    W_NREASONS,
    W_CREATED_NS,
    W_RISK_WRITER,
) = range(12)
W_UPDATED_NS = 16
W_JOURNAL_NEXT_FRAME = 17
W_LOADED_FRAME_PLUS1 = 18

NAMES_BASE = 128
MAX_STAGES = 64
NAME_WORDS = 6  # 48 bytes
FLOW_BASE = NAMES_BASE + MAX_STAGES * NAME_WORDS  # 512
F_ORDERS = 0  # by action
F_EXECS = 16  # by exec type
F_FILLS = 32
F_FILLED_QTY = 33
F_ACCEPTED = 48
F_DENIED = 49
F_DENIALS = 64
F_REJECTS = F_DENIALS + N_REASONS
F_POSITION = F_REJECTS + N_REASONS
FLOW_WORDS = F_POSITION + N_POSITIONS
HIST_BASE = FLOW_BASE + FLOW_WORDS + (-(FLOW_BASE + FLOW_WORDS) % 16)  # 128-byte aligned
RISK_BASE = HIST_BASE + N_HIST * H.HIST_WORDS
R_GEN, R_UPDATED_NS, R_SCALE = 0, 1, 2
R_ACCOUNT = 3
#: account words of the risk panel (price units unless said)
RISK_ACCOUNT = (
    "realised",  # realised PnL, fees deducted
    "unrealised",  # position * mark - cost
    "fees",  # fees paid
    "daily_pnl",  # realised + unrealised since the last daily reset
    "daily_loss_limit",  # daily loss at which trading reduces (0: off)
    "daily_halt_limit",  # daily loss at which trading halts (0: off)
    "gross",  # sum over instruments of worst-case |position| * price
    "max_gross",  # limit (0: off)
    "open_orders",  # orders resting, account
    "max_open_orders",  # limit (0: off)
)
RISK_ACCOUNT_WORDS = len(RISK_ACCOUNT)
R_ROWS = 16
#: per-instrument words of the risk panel (shares, orders, price units)
RISK_ROW = (
    "known",  # 1: the instrument is in the risk stage's table
    "position",  # signed, shares
    "open_buy",  # shares in open buy orders
    "open_sell",  # shares in open sell orders
    "open_orders",
    "realised",
    "unrealised",
    "fees",
    "max_position",  # limit: worst case with open orders, either side, shares (0: off)
    "max_open_orders",  # limit (0: off)
)
RISK_ROW_WORDS = len(RISK_ROW)
RISK_WORDS = R_ROWS + N_POSITIONS * RISK_ROW_WORDS
RISK_PANEL_NS = 100_000_000  # the risk stage copies its figures at most this often
TOTAL_WORDS = RISK_BASE + RISK_WORDS
SEGMENT_BYTES = TOTAL_WORDS * 8

_ONE = np.uint64(1)


def init_metrics(
    words: np.ndarray,
    recorder: int | None,
    created_ns: int,
    stage_names=(),
    risk_writer: int | None = None,
) -> np.ndarray:
    """Lay out a zeroed ``TOTAL_WORDS`` u64 array (a new segment or a private array);
    ``recorder``: the recording stage's index (None: no recorder); ``stage_names`` in
    topology order (the first ``MAX_STAGES``, each cut to 48 bytes); ``risk_writer``: the
    index of the stage that publishes the risk panel (None: none)."""
    words[W_VERSION] = LAYOUT_VERSION
    words[W_NHIST] = N_HIST
    words[W_HIST_WORDS] = H.HIST_WORDS
    words[W_COUNTS_LEN] = H.COUNTS_LEN
    words[W_FIGURES] = H.SIGNIFICANT_FIGURES
    words[W_HIGHEST] = H.HIGHEST_NS
    words[W_RECORDER] = 0 if recorder is None else recorder + 1
    words[W_NPOS] = N_POSITIONS
    words[W_NREASONS] = N_REASONS
    words[W_CREATED_NS] = created_ns
    words[W_RISK_WRITER] = 0 if risk_writer is None else risk_writer + 1
    for k in range(N_HIST):
        H.init(hist(words, k))
    for i, name in enumerate(list(stage_names)[:MAX_STAGES]):
        raw = name.encode("ascii", "replace")[: NAME_WORDS * 8].ljust(NAME_WORDS * 8, b"\0")
        off = NAMES_BASE + i * NAME_WORDS
        words[off : off + NAME_WORDS] = np.frombuffer(raw, np.uint64)
    words[W_MAGIC] = MAGIC
    return words


def private_metrics() -> np.ndarray:
    """The layout in process memory (a recorder without the segment: tests, replay, warm)."""
    return init_metrics(np.zeros(TOTAL_WORDS, np.uint64), None, time.monotonic_ns())


def hist(words: np.ndarray, k: int) -> np.ndarray:
    """Histogram ``k`` (``HIST_*``) of a metrics array (a view)."""
    off = HIST_BASE + k * H.HIST_WORDS
    return words[off : off + H.HIST_WORDS]


def flow(words: np.ndarray) -> np.ndarray:
    """The flow counters (a view)."""
    return words[FLOW_BASE : FLOW_BASE + FLOW_WORDS]


def create_metrics(
    instance: str, recorder: int | None, stage_names=(), risk_writer: int | None = None
) -> str:
    """Create ``instance``'s metrics segment (the launcher, with the other segments)."""
    name = segment_name(instance, METRICS_SEGMENT)
    return create_initialised(
        name,
        SEGMENT_BYTES,
        lambda w: init_metrics(w, recorder, time.monotonic_ns(), stage_names, risk_writer),
    )


class Metrics:
    """An attachment to ``instance``'s metrics segment; ``words`` is it as u64.
    ``readonly`` maps it PROT_READ (operator views); the recorder attaches it writable."""

    def __init__(self, instance: str, *, readonly: bool = False) -> None:
        self.segment, self.words = attach_checked(
            segment_name(instance, METRICS_SEGMENT),
            readonly=readonly,
            min_size=SEGMENT_BYTES,
            magic=MAGIC,
            version=LAYOUT_VERSION,
            what="metrics",
            size_for=lambda w: SEGMENT_BYTES,
        )

    @property
    def recorder(self) -> int | None:
        """Index of the recording stage, None when the topology has none."""
        r = int(self.words[W_RECORDER])
        return r - 1 if r else None

    @property
    def risk_writer(self) -> int | None:
        """Index of the stage that publishes the risk panel, None when none does."""
        r = int(self.words[W_RISK_WRITER])
        return r - 1 if r else None

    def close(self) -> None:
        self.words = None  # type: ignore[assignment]
        self.segment.close()


# --- recording (numba, the recorder's process only) -----------------------------------------


@njit(nogil=True, cache=True)
def record_orders(words, batch):
    """Count a batch of ORDER records the OMS sent; latencies of each NEW order."""
    f = FLOW_BASE
    h0 = HIST_BASE
    hw = H.HIST_WORDS
    for i in range(batch.shape[0]):
        o = batch[i]
        a = np.int64(o.action)
        if a < 16:
            words[f + F_ORDERS + a] += _ONE
        if a == ACTION_NEW:
            H.record_latency(words[h0 : h0 + hw], o.ts_order_ns, o.ts_recv_ns)
            H.record_latency(words[h0 + hw : h0 + 2 * hw], o.ts_signal_ns, o.ts_recv_ns)
            H.record_latency(words[h0 + 2 * hw : h0 + 3 * hw], o.ts_risk_ns, o.ts_signal_ns)
            H.record_latency(words[h0 + 3 * hw : h0 + 4 * hw], o.ts_order_ns, o.ts_risk_ns)
    words[W_UPDATED_NS] = monotonic_ns()


@njit(nogil=True, cache=True)
def _reason_slot(reason):
    r = np.int64(reason)
    return r if r < N_REASONS else np.int64(N_REASONS - 1)


@njit(nogil=True, cache=True)
def record_execs(words, batch):
    """Count a batch of EXEC_REPORT records the OMS received: by type, fills, rejects by
    reason, net filled position per instrument."""
    f = FLOW_BASE
    for i in range(batch.shape[0]):
        e = batch[i]
        t = np.int64(e.exec_type)
        if t < 16:
            words[f + F_EXECS + t] += _ONE
        if t in (EXEC_FILL, EXEC_PARTIAL_FILL):
            words[f + F_FILLS] += _ONE
            words[f + F_FILLED_QTY] += np.uint64(abs(e.last_qty))
            if e.instrument < N_POSITIONS:
                k = f + F_POSITION + np.int64(e.instrument)
                d = e.last_qty if e.side == SIDE_BUY else -e.last_qty
                words[k] = np.uint64(np.int64(words[k]) + d)
        elif t == EXEC_BROKEN:  # a trade bust reverses the fill it names
            if e.instrument < N_POSITIONS:
                k = f + F_POSITION + np.int64(e.instrument)
                d = e.last_qty if e.side == SIDE_BUY else -e.last_qty
                words[k] = np.uint64(np.int64(words[k]) - d)
        elif t in (EXEC_REJECTED, EXEC_CANCEL_REJECTED):
            words[f + F_REJECTS + _reason_slot(e.reason)] += _ONE
    words[W_UPDATED_NS] = monotonic_ns()


@njit(nogil=True, cache=True)
def record_decisions(words, batch):
    """Count a batch of RISK_DECISION records: accepted, denied by reason."""
    f = FLOW_BASE
    for i in range(batch.shape[0]):
        d = batch[i]
        if d.decision == DECISION_ACCEPT:
            words[f + F_ACCEPTED] += _ONE
        elif d.decision == DECISION_DENY:
            words[f + F_DENIED] += _ONE
            words[f + F_DENIALS + _reason_slot(d.reason)] += _ONE
    words[W_UPDATED_NS] = monotonic_ns()


# --- the risk panel (the risk stage's housekeeping, Python) ------------------------------------


def publish_risk(words: np.ndarray, scale: int, account: np.ndarray, rows: np.ndarray) -> None:
    """Copy the risk stage's figures into the panel: ``account`` int64[RISK_ACCOUNT_WORDS],
    ``rows`` C-contiguous int64[n, RISK_ROW_WORDS] for instrument ids 0..n-1 (ids >= N_POSITIONS are not
    kept). A seqlock: the generation is odd while the words change (x86 keeps stores in
    program order, and every store here is a separate numpy call), so a reader that sees
    the same even generation before and after its copy has one whole publication."""
    r = words[RISK_BASE : RISK_BASE + RISK_WORDS]
    gen = int(r[R_GEN])
    r[R_GEN] = gen + 1 if gen % 2 == 0 else gen + 2
    r[R_SCALE] = scale
    r[R_ACCOUNT : R_ACCOUNT + RISK_ACCOUNT_WORDS] = account.view(np.uint64)
    n = min(len(rows), N_POSITIONS)
    r[R_ROWS : R_ROWS + n * RISK_ROW_WORDS] = rows[:n].view(np.uint64).reshape(-1)
    r[R_UPDATED_NS] = time.monotonic_ns()
    r[R_GEN] = int(r[R_GEN]) + 1


def risk_panel(words: np.ndarray, tries: int = 100) -> dict | None:
    """The risk panel as one publication: ``{"updated_ns", "price_scale", "account":
    {RISK_ACCOUNT: int}, "instruments": {id: {RISK_ROW: int}}}`` (instruments the risk
    stage knows), amounts in price units; None when no stage publishes it (or it has not
    yet, or no consistent copy was had in ``tries``)."""
    if int(words[W_RISK_WRITER]) == 0:
        return None
    r = words[RISK_BASE : RISK_BASE + RISK_WORDS]
    for _ in range(tries):
        g0 = int(r[R_GEN])
        if g0 == 0:
            return None
        if g0 % 2:
            continue
        copy = r.copy()
        if int(r[R_GEN]) == g0:
            break
    else:
        return None
    v = copy.view(np.int64)
    rows = v[R_ROWS:].reshape(N_POSITIONS, RISK_ROW_WORDS)
    return {
        "updated_ns": int(v[R_UPDATED_NS]),
        "price_scale": int(v[R_SCALE]),
        "account": {
            k: int(x)
            for k, x in zip(
                RISK_ACCOUNT, v[R_ACCOUNT : R_ACCOUNT + RISK_ACCOUNT_WORDS], strict=True
            )
        },
        "instruments": {
            int(i): {k: int(x) for k, x in zip(RISK_ROW[1:], rows[i, 1:], strict=True)}
            for i in np.flatnonzero(rows[:, 0])
        },
    }


# --- reading ---------------------------------------------------------------------------------


def stage_names(words: np.ndarray) -> list[str]:
    """The stage names the creator stored, topology order (up to the first empty one)."""
    out = []
    for i in range(MAX_STAGES):
        off = NAMES_BASE + i * NAME_WORDS
        raw = words[off : off + NAME_WORDS].tobytes().rstrip(b"\0")
        if not raw:
            break
        out.append(raw.decode("ascii", "replace"))
    return out


def loader_lag(words: np.ndarray) -> dict | None:
    """``{"journal_frames", "loaded_frames", "behind_frames"}`` of the recorder's database
    loader; None when it has none (or has not read its position yet)."""
    loaded = int(words[W_LOADED_FRAME_PLUS1])
    if loaded == 0:
        return None
    written = int(words[W_JOURNAL_NEXT_FRAME])
    return {
        "journal_frames": written,
        "loaded_frames": loaded - 1,
        "behind_frames": max(0, written - (loaded - 1)),
    }


def positions(words: np.ndarray) -> dict[int, int]:
    """Net filled position per instrument id (non-zero ones)."""
    p = flow(words)[F_POSITION : F_POSITION + N_POSITIONS].view(np.int64)
    return {int(k): int(p[k]) for k in np.flatnonzero(p)}


def by_slot(counts: np.ndarray) -> dict[int, int]:
    """Non-zero counters of an indexed block (action, exec type, reason code)."""
    return {int(k): int(counts[k]) for k in np.flatnonzero(counts)}
