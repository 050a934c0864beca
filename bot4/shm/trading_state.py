"""Trading states, global and per instrument: ``/bot4.<instance>.trading``.

``ACTIVE`` (0) trades normally, ``REDUCING`` (1) lets only position-reducing orders
through, ``HALTED`` (2) lets nothing through and makes the risk stage cancel our resting
orders (kill switch). An instrument's effective state is the larger of the global state and
its own, so a global HALT covers every instrument and an instrument HALT needs no global one.

Layout (little-endian u64 words; target 0 is the global state, target k >= 1 instrument id k)::

    byte          word          owner        field
    0             0..3          creator      magic "BOT4TRAD", layout version,
                                             instruments (highest id with a slot), created ns
    64            8             any (CAS)    generation: +1 after every state change
    128*(1+t)     16*(1+t)      any (CAS)    state word of target t: state (byte 0),
                                             reason (bits 8..23, errors.Code),
                                             source (bits 24..31, SRC_*), changes (bits 32..62)

Every state word has its own 128-byte block, so a change to one instrument never evicts
the line another instrument's readers poll.

Ownership: the words are multi-writer by design (the operator CLI halts and resumes, the
risk stage reduces on a daily loss and halts on a breaker, the OMS halts an instrument
whose reconciliation failed, md_gateway halts its instruments while a feed gap is open). Every change is a
``compare_exchange`` from the exact word read and bumps the word's change count, so
concurrent writers serialise and none is lost; the generation is bumped after the word,
so a reader that sees a new generation also sees the change that caused it. Readers (the
risk kernels, ``bot4 stats``) compare the generation with the last one they saw and rescan
the words only when it moved: one load per batch. A writer that always writes (``set``)
wins last; ``raise_state`` only ever escalates and ``relax_state`` only undoes a state its
caller set (same state and reason), so automatic rules never override an operator.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from bot4.nbkit.hot import hot
from bot4.records.errors import Bot4Error, Code
from bot4.shm.atomics import compare_exchange, load_acquire
from bot4.shm.segment import attach_checked, create_initialised, segment_name

__all__ = [
    "ACTIVE",
    "HALTED",
    "REDUCING",
    "SOURCE_NAMES",
    "SRC_OPERATOR",
    "SRC_OMS",
    "SRC_MD_GATEWAY",
    "SRC_RISK",
    "STATE_NAMES",
    "TRADING_SEGMENT",
    "TradingState",
    "UnknownTargetError",
    "create_trading_state",
    "effective_state",
    "init_trading_state",
    "raise_state",
    "relax_state",
    "set_state",
    "state_generation",
    "state_of",
    "state_word",
    "trading_bytes",
    "word_reason",
    "word_source",
    "word_state",
]

MAGIC = int.from_bytes(b"BOT4TRAD", "little")
LAYOUT_VERSION = 1
TRADING_SEGMENT = "trading"
BLOCK_BYTES = 128
BLOCK_WORDS = BLOCK_BYTES // 8

W_MAGIC, W_VERSION, W_INSTRUMENTS, W_CREATED_NS = range(4)
W_GENERATION = 8

ACTIVE, REDUCING, HALTED = 0, 1, 2
STATE_NAMES = {ACTIVE: "active", REDUCING: "reducing", HALTED: "halted"}
SRC_NONE, SRC_OPERATOR, SRC_RISK, SRC_OMS, SRC_MD_GATEWAY = 0, 1, 2, 3, 4
SOURCE_NAMES = {SRC_NONE: "-", SRC_OPERATOR: "operator", SRC_RISK: "risk", SRC_OMS: "oms",
                SRC_MD_GATEWAY: "md_gateway"}  # fmt: skip

STATE_MASK = 0xFF
REASON_SHIFT = 8
REASON_MASK = 0xFFFF
SOURCE_SHIFT = 24
SOURCE_MASK = 0xFF
CHANGES_SHIFT = 32
CHANGES_MASK = (1 << 31) - 1


class UnknownTargetError(Bot4Error, IndexError):
    """An instrument id with no slot in the trading-state segment."""

    code = Code.UNKNOWN_INSTRUMENT


def trading_bytes(n_instruments: int) -> int:
    """Segment size for instrument ids 1..n_instruments plus the global word."""
    return BLOCK_BYTES * (2 + n_instruments)


def init_trading_state(words: np.ndarray, n_instruments: int, created_ns: int) -> None:
    """Lay out a zeroed u64 array (a new segment, or a process-local array): all ACTIVE."""
    if words.dtype != np.uint64 or words.size * 8 < trading_bytes(n_instruments):
        raise ValueError(f"need a u64 array of {trading_bytes(n_instruments)} bytes")
    words[W_VERSION] = LAYOUT_VERSION
    words[W_INSTRUMENTS] = n_instruments
    words[W_CREATED_NS] = created_ns
    words[W_MAGIC] = MAGIC


def create_trading_state(instance: str, n_instruments: int) -> str:
    """Create the trading-state segment of ``instance`` (the launcher does this once)."""
    if n_instruments < 1:
        raise ValueError("n_instruments must be >= 1")
    name = segment_name(instance, TRADING_SEGMENT)
    return create_initialised(
        name,
        trading_bytes(n_instruments),
        lambda words: init_trading_state(words, n_instruments, time.monotonic_ns()),
    )


# --- numba ops -------------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def word_state(w):
    """ACTIVE, REDUCING or HALTED: the state byte of a state word."""
    return w & STATE_MASK


@njit(nogil=True, cache=True, inline="always")
def word_reason(w):
    """The errors.Code a state word was set with."""
    return (w >> REASON_SHIFT) & REASON_MASK


@njit(nogil=True, cache=True, inline="always")
def word_source(w):
    """SRC_*: who set a state word."""
    return (w >> SOURCE_SHIFT) & SOURCE_MASK


@hot
def state_word(words, target):
    """Raw state word of ``target`` (0 = global, k = instrument k)."""
    return np.int64(load_acquire(words, BLOCK_WORDS * (1 + target)))


@njit(nogil=True, cache=True)
def state_of(words, target):
    """ACTIVE, REDUCING or HALTED: the state ``target`` itself is in (0 = global)."""
    return state_word(words, target) & STATE_MASK


@hot
def effective_state(words, inst):
    """The state instrument ``inst`` trades under: max(global, its own). Two acquire loads."""
    g = state_word(words, np.int64(0)) & STATE_MASK
    s = state_word(words, inst) & STATE_MASK
    return max(g, s)


@hot
def state_generation(words):
    """Bumped after every change of any state word."""
    return np.int64(load_acquire(words, W_GENERATION))


@hot
def _replace(words, k, old, state, reason, source):
    changes = ((old >> CHANGES_SHIFT) + 1) & CHANGES_MASK
    new = (changes << CHANGES_SHIFT) | (source << SOURCE_SHIFT) | (reason << REASON_SHIFT) | state
    if not compare_exchange(words, k, old, new):
        return False
    while True:
        g = np.int64(load_acquire(words, W_GENERATION))
        if compare_exchange(words, W_GENERATION, g, g + 1):
            return True


@njit(nogil=True, cache=True)
def set_state(words, target, state, reason, source):
    """Set ``target`` (0 = global) to ``state``; returns the previous state.

    Always writes (even the same state): setting HALTED again makes the risk stage send its
    CANCEL_ALL again.
    """
    k = BLOCK_WORDS * (1 + target)
    while True:
        old = np.int64(load_acquire(words, k))
        if _replace(words, k, old, state, reason, source):
            return old & STATE_MASK


@hot
def raise_state(words, target, state, reason, source):
    """Escalate ``target`` to ``state`` if it is below it; returns the previous state.

    Never lowers a state, so an automatic rule cannot undo an operator's HALT.
    """
    k = BLOCK_WORDS * (1 + target)
    while True:
        old = np.int64(load_acquire(words, k))
        if old & STATE_MASK >= state:
            return old & STATE_MASK
        if _replace(words, k, old, state, reason, source):
            return old & STATE_MASK


@hot
def relax_state(words, target, from_state, reason, source, to_state):
    """Move ``target`` from ``from_state`` to ``to_state`` only if it is still in the state
    that ``source`` set for ``reason``; True if it did."""
    k = BLOCK_WORDS * (1 + target)
    while True:
        old = np.int64(load_acquire(words, k))
        if (
            old & STATE_MASK != from_state
            or (old >> REASON_SHIFT) & 0xFFFF != reason
            or (old >> SOURCE_SHIFT) & 0xFF != source
        ):
            return False
        if _replace(words, k, old, to_state, np.int64(0), source):
            return True


# --- Python side -----------------------------------------------------------------------------


class TradingState:
    """An attachment to the trading-state segment of ``instance``; ``words`` is it as u64.

    ``readonly`` maps it PROT_READ (operator views).
    """

    def __init__(self, instance: str, *, readonly: bool = False) -> None:
        self.segment, self.words = attach_checked(
            segment_name(instance, TRADING_SEGMENT),
            readonly=readonly,
            min_size=BLOCK_BYTES * 2,
            magic=MAGIC,
            version=LAYOUT_VERSION,
            what="trading-state",
            size_for=lambda w: trading_bytes(int(w[W_INSTRUMENTS])),
        )
        self.n_instruments = int(self.words[W_INSTRUMENTS])

    def _check(self, target: int) -> int:
        if not 0 <= target <= self.n_instruments:
            raise UnknownTargetError(
                f"instrument {target} outside 1..{self.n_instruments} (0 = global)"
            )
        return target

    def get(self, target: int = 0) -> int:
        return int(state_of(self.words, self._check(target)))

    def effective(self, inst: int) -> int:
        return int(effective_state(self.words, self._check(inst)))

    def set(self, target: int, state: int, reason: int = 0, source: int = SRC_OPERATOR) -> int:
        """Set ``target`` (0 = global) to ``state``; returns the previous state."""
        if state not in STATE_NAMES:
            raise ValueError(f"unknown trading state {state}")
        return int(set_state(self.words, self._check(target), state, int(reason), source))

    def snapshot(self) -> list[dict]:
        """Every target not ACTIVE or ever changed, global first (plain reads)."""
        out = []
        for t in range(self.n_instruments + 1):
            w = int(self.words[BLOCK_WORDS * (1 + t)])
            if w == 0 and t:
                continue
            out.append(
                {
                    "target": t,
                    "state": STATE_NAMES.get(w & STATE_MASK, str(w & STATE_MASK)),
                    "reason": (w >> REASON_SHIFT) & 0xFFFF,
                    "source": SOURCE_NAMES.get((w >> SOURCE_SHIFT) & 0xFF, "?"),
                    "changes": (w >> CHANGES_SHIFT) & CHANGES_MASK,
                }
            )
        return out

    def close(self) -> None:
        self.words = None  # type: ignore[assignment]
        self.segment.close()

    def __enter__(self) -> TradingState:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
