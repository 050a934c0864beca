"""Circuit breakers shared by every process of an instance: ``/bot4.<instance>.breakers``.

A breaker guards a path that can fail (the venue order path, a gateway): callers ask it
before using the path and tell it how the call went. It is shared memory, not a per-process
object, because the processes that see failures (the OMS, risk reading execution reports)
are not the ones that must stop sending.

States: ``CLOSED`` (calls pass), ``OPEN`` (calls refused), ``HALF_OPEN`` (a bounded number
of probe calls pass). Hysteresis, every threshold per breaker:

* CLOSED -> OPEN when the rolling window holds at least ``min_calls`` calls and the failure
  rate reaches ``open_failure_pct`` (calls and failures both counted, so successes can bring
  the count up to ``min_calls`` with the rate still at or above the threshold).
* OPEN -> HALF_OPEN at the first ``allow`` once ``cooldown_ns`` has passed since opening.
  An operator trip (``breaker_trip``) sets the FORCED flag: the breaker then stays OPEN
  until ``breaker_reset``.
* HALF_OPEN admits probes while fewer than ``max_probes`` are in flight and fewer than
  ``probe_window`` (N) have been admitted in the episode. Once the N probe results are in,
  it closes if at most ``close_failure_pct`` of them failed, else it reopens. It reopens
  as soon as the failures exceed ``close_failure_pct`` of N (the outcome is then decided),
  and also when probes stop reporting for ``probe_timeout_ns`` (a caller died holding one).
* HALF_OPEN -> CLOSED clears the rolling window first, so the failures that tripped it
  cannot trip it again.

Layout (little-endian u64 words; ``count`` breakers, breaker ``i``)::

    byte                    word               owner      field
    0                       0..3               creator    magic "BOT4BRKR", layout version,
                                                          count, created ns
    128 + 128*i             16*(1+i)           creator    config row of breaker i, read-only:
      +0 .. +8                                            min_calls, open_failure_pct,
                                                          close_failure_pct, cooldown_ns,
                                                          max_probes, probe_window,
                                                          bucket_ns, buckets, probe_timeout_ns
      +96 (words +12..+15)                                name, ASCII, NUL padded (32 bytes)
    128*(1+count+i)         16*(1+count+i)     any (CAS)  state block of breaker i:
      line 0  +0                                          state word: state (byte 0),
                                                          flags (byte 1: FORCED), epoch (bits 16..62)
              +1                                          opened_at ns        (CAS max)
              +2                                          half_open_at ns     (CAS max)
              +3                                          probe word: failures (bits 32..47),
                                                          results (16..31), in flight (0..15),
                                                          episode tag (48..62)
              +4                                          probe outcome bits: bit k = probe k
                                                          of the episode failed
              +5                                          last probe activity ns (CAS max)
              +6, +7                                      trips, calls denied (CAS counters)
      line 1  +8 .. +15                                   rolling window, one word per bucket:
                                                          slot tag (bits 40..62), failures
                                                          (20..39), calls (0..19)

Ownership. The config rows are written once by the creator (``create_breakers``) and only
read afterwards. Every word of a state block is multi-writer: all processes of the instance
record into the same breaker, by design, since no single process sees every failure. It is
safe because no state-block word is ever updated by a plain read-modify-write:

* the state word changes only by ``compare_exchange`` from the exact word read, and the
  epoch grows with every transition, so each transition is made by exactly one process and
  a process acting on a stale read fails its CAS instead of undoing a newer transition;
* the probe word packs in-flight, results, failures and the episode tag (the low bits of the
  HALF_OPEN epoch) into one word changed by CAS, so admissions and results are neither lost
  nor counted twice, and a word left from an older episode reads as zero;
* a bucket word packs its time-slot tag with its counts, so rotating a bucket to a new slot
  and counting into it is one CAS;
* the timestamps only move forward (CAS max) and are stamped *before* the transition that
  uses them, so whoever sees a state also sees its time;
* counters are CAS increments.

A process killed at any point leaves each word either before or after its CAS: there is no
lock and nothing half-written. A probe whose caller died is recovered by the probe timeout.
The one plain store is the window clear on closing; it happens before the closing CAS, and
racing it can only drop counts from a window that is being cleared anyway.

Hot path: ``breaker_allow`` on a CLOSED breaker is one acquire load of the state word,
which changes only on transitions (line 0); results in the CLOSED state write the window
buckets (line 1), so recording does not evict the word every ``allow`` reads.

Numba ops take ``words`` (the segment as u64) and the breaker index. ``breaker_allow`` /
``breaker_record`` judge a result by the state when it arrives; ``breaker_enter`` /
``breaker_exit`` carry a ticket from admission to result, so a late result of a call admitted
while CLOSED is never counted as a probe, and a probe from an older episode is ignored.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from bot4.nbkit.borrow import unowned
from bot4.records.errors import Bot4Error, Code
from bot4.shm.atomics import compare_exchange, load_acquire, store_relaxed
from bot4.shm.segment import attach_checked, create_initialised, segment_name

__all__ = [
    "BREAKERS_SEGMENT",
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "STATE_NAMES",
    "TICKET_ANY",
    "BreakerConfig",
    "BreakerHandle",
    "BreakerOpenError",
    "Breakers",
    "UnknownBreakerError",
    "breaker_allow",
    "breaker_enter",
    "breaker_exit",
    "breaker_record",
    "breaker_release",
    "breaker_reset",
    "breaker_state",
    "breaker_word_epoch",
    "breaker_word_state",
    "breaker_state_word",
    "breaker_trip",
    "breakers_bytes",
    "create_breakers",
    "guard",
    "init_breakers",
    "snapshot",
]

MAGIC = int.from_bytes(b"BOT4BRKR", "little")
LAYOUT_VERSION = 1
BREAKERS_SEGMENT = "breakers"
HEADER_BYTES = 128
BLOCK_BYTES = 128
BLOCK_WORDS = BLOCK_BYTES // 8

W_MAGIC, W_VERSION, W_COUNT, W_CREATED_NS = range(4)

# config row, words from 16 * (1 + i)
C_MIN_CALLS = 0
C_OPEN_PCT = 1
C_CLOSE_PCT = 2
C_COOLDOWN_NS = 3
C_MAX_PROBES = 4
C_PROBE_WINDOW = 5
C_BUCKET_NS = 6
C_BUCKETS = 7
C_PROBE_TIMEOUT_NS = 8
C_NAME = 12
NAME_BYTES = 32

# state block, words from 16 * (1 + count + i)
B_STATE = 0
B_OPENED_NS = 1
B_HALF_OPEN_NS = 2
B_PROBES = 3
B_PROBE_BITS = 4
B_PROBE_ACTIVITY_NS = 5
B_TRIPS = 6
B_DENIED = 7
B_BUCKETS = 8
MAX_BUCKETS = 8
MAX_PROBE_WINDOW = 64

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}
F_FORCED = 1  # flags byte: opened by an operator, stays open until reset

STATE_MASK = 0xFF
FLAGS_SHIFT = 8
EPOCH_SHIFT = 16
M16 = 0xFFFF
PTAG_SHIFT = 48
PTAG_MASK = 0x7FFF
CNT_MASK = (1 << 20) - 1
FAIL_SHIFT = 20
TAG_SHIFT = 40
TAG_MASK = (1 << 23) - 1

# tickets from breaker_enter: (epoch << 2) | kind; 0 = refused
T_CLOSED = 1
T_PROBE = 2
TICKET_ANY = 3  # breaker_record: judge the result by the state when it arrives


class BreakerOpenError(Bot4Error):
    """A guarded call was refused: its breaker is open (or half-open with no probe room)."""

    code = Code.BREAKER_OPEN


class UnknownBreakerError(Bot4Error, LookupError):
    """No breaker of that name or index in the segment."""

    code = Code.CONFIG_INVALID


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds of one breaker (written into its config row once, at creation)."""

    name: str = "venue"  # ASCII, at most 32 bytes; `bot4 breaker` finds breakers by name
    min_calls: int = 20  # calls in the window before the failure rate can open it
    open_failure_pct: int = 50  # opens when failures reach this share of the window's calls
    close_failure_pct: int = 35  # closes when at most this share of the N probes failed
    cooldown_ns: int = 5_000_000_000  # OPEN this long before the first probe
    max_probes: int = 1  # probes in flight at once while HALF_OPEN
    probe_window: int = 10  # N: probe results that decide HALF_OPEN -> CLOSED or OPEN
    bucket_ns: int = 1_000_000_000  # width of one window bucket
    buckets: int = 8  # window = the current bucket and the buckets - 1 before it
    probe_timeout_ns: int = 10_000_000_000  # HALF_OPEN with no probe activity: reopen

    def __post_init__(self) -> None:
        problems = []
        name = self.name.encode("ascii", "replace")
        if not self.name or len(name) > NAME_BYTES or not self.name.isprintable():
            problems.append(f"name must be 1..{NAME_BYTES} printable ASCII bytes")
        if self.min_calls < 1:
            problems.append("min_calls must be >= 1")
        if not 0 < self.open_failure_pct <= 100:
            problems.append("open_failure_pct must be in 1..100")
        if not 0 <= self.close_failure_pct < self.open_failure_pct:
            problems.append("close_failure_pct must be in 0..open_failure_pct - 1 (hysteresis)")
        if self.cooldown_ns <= 0 or self.bucket_ns <= 0 or self.probe_timeout_ns <= 0:
            problems.append("cooldown_ns, bucket_ns and probe_timeout_ns must be > 0")
        if not 1 <= self.probe_window <= MAX_PROBE_WINDOW:
            problems.append(f"probe_window must be in 1..{MAX_PROBE_WINDOW}")
        if not 1 <= self.max_probes <= self.probe_window:
            problems.append("max_probes must be in 1..probe_window")
        if not 1 <= self.buckets <= MAX_BUCKETS:
            problems.append(f"buckets must be in 1..{MAX_BUCKETS}")
        if problems:
            raise Bot4Error(f"breaker {self.name!r}: " + "; ".join(problems), Code.CONFIG_INVALID)


def breakers_bytes(count: int) -> int:
    """Segment size for ``count`` breakers: header, config rows, state blocks."""
    return HEADER_BYTES + 2 * count * BLOCK_BYTES


def init_breakers(words: np.ndarray, configs: Sequence[BreakerConfig], created_ns: int) -> None:
    """Lay out a zeroed u64 array (a new segment, or a process-local array) as breakers."""
    n = len(configs)
    if words.dtype != np.uint64 or words.size * 8 < breakers_bytes(n):
        raise ValueError(f"need a u64 array of {breakers_bytes(n)} bytes for {n} breakers")
    names = [c.name for c in configs]
    if len(set(names)) != n:
        raise Bot4Error(f"duplicate breaker names in {names}", Code.CONFIG_INVALID)
    words[W_VERSION] = LAYOUT_VERSION
    words[W_COUNT] = n
    words[W_CREATED_NS] = created_ns
    for i, c in enumerate(configs):
        r = BLOCK_WORDS * (1 + i)
        words[r + C_MIN_CALLS] = c.min_calls
        words[r + C_OPEN_PCT] = c.open_failure_pct
        words[r + C_CLOSE_PCT] = c.close_failure_pct
        words[r + C_COOLDOWN_NS] = c.cooldown_ns
        words[r + C_MAX_PROBES] = c.max_probes
        words[r + C_PROBE_WINDOW] = c.probe_window
        words[r + C_BUCKET_NS] = c.bucket_ns
        words[r + C_BUCKETS] = c.buckets
        words[r + C_PROBE_TIMEOUT_NS] = c.probe_timeout_ns
        raw = c.name.encode("ascii").ljust(NAME_BYTES, b"\0")
        words[r + C_NAME : r + C_NAME + NAME_BYTES // 8] = np.frombuffer(raw, np.uint64)
    words[W_MAGIC] = MAGIC


def create_breakers(instance: str, configs: Sequence[BreakerConfig]) -> str:
    """Create and lay out the breaker segment of ``instance`` (the launcher does this once).

    Returns the segment name; SegmentExistsError if it exists.
    """
    name = segment_name(instance, BREAKERS_SEGMENT)
    return create_initialised(
        name,
        breakers_bytes(len(configs)),
        lambda words: init_breakers(words, configs, time.monotonic_ns()),
    )


def _config_of(words: np.ndarray, i: int) -> BreakerConfig:
    r = BLOCK_WORDS * (1 + i)
    name = words[r + C_NAME : r + C_NAME + NAME_BYTES // 8].tobytes().rstrip(b"\0")
    return BreakerConfig(
        name=name.decode("ascii", "replace"),
        min_calls=int(words[r + C_MIN_CALLS]),
        open_failure_pct=int(words[r + C_OPEN_PCT]),
        close_failure_pct=int(words[r + C_CLOSE_PCT]),
        cooldown_ns=int(words[r + C_COOLDOWN_NS]),
        max_probes=int(words[r + C_MAX_PROBES]),
        probe_window=int(words[r + C_PROBE_WINDOW]),
        bucket_ns=int(words[r + C_BUCKET_NS]),
        buckets=int(words[r + C_BUCKETS]),
        probe_timeout_ns=int(words[r + C_PROBE_TIMEOUT_NS]),
    )


class Breakers:
    """An attachment to the breaker segment of ``instance``; ``words`` is it as u64.

    ``readonly`` maps it PROT_READ (``bot4 breaker ls``): snapshots only.
    """

    def __init__(self, instance: str, *, readonly: bool = False) -> None:
        self.segment, self.words = attach_checked(
            segment_name(instance, BREAKERS_SEGMENT),
            readonly=readonly,
            min_size=HEADER_BYTES,
            magic=MAGIC,
            version=LAYOUT_VERSION,
            what="breaker",
            size_for=lambda w: breakers_bytes(int(w[W_COUNT])),
        )
        self.count = int(self.words[W_COUNT])
        self.configs = [_config_of(self.words, i) for i in range(self.count)]

    def index_of(self, name_or_index: str | int) -> int:
        """Index of a breaker given by name or by index (as text or int)."""
        for i, c in enumerate(self.configs):
            if c.name == name_or_index:
                return i
        try:
            i = int(name_or_index)
        except ValueError:
            i = -1
        if 0 <= i < self.count:
            return i
        known = ", ".join(f"{i}={c.name}" for i, c in enumerate(self.configs))
        raise UnknownBreakerError(f"no breaker {name_or_index!r} (have {known or 'none'})")

    def handle(self, name_or_index: str | int) -> BreakerHandle:
        return BreakerHandle(self.words, self.index_of(name_or_index))

    def trip(self, name_or_index: str | int, now_ns: int | None = None) -> int:
        """Operator trip: force OPEN until reset. Returns the previous state."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return int(breaker_trip(self.words, self.index_of(name_or_index), now))

    def reset(self, name_or_index: str | int, now_ns: int | None = None) -> int:
        """Operator reset: force CLOSED with the window cleared. Returns the previous state."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return int(breaker_reset(self.words, self.index_of(name_or_index), now))

    def snapshot(self, now_ns: int | None = None) -> list[dict]:
        return snapshot(self.words, now_ns)

    def close(self) -> None:
        self.words = None  # type: ignore[assignment]
        self.segment.close()

    def __enter__(self) -> Breakers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def snapshot(words: np.ndarray, now_ns: int | None = None) -> list[dict]:
    """Plain reads of every breaker (operator view; may be a moment inconsistent)."""
    now = time.monotonic_ns() if now_ns is None else now_ns
    n = int(words[W_COUNT])
    out = []
    for i in range(n):
        c = _config_of(words, i)
        b = BLOCK_WORDS * (1 + n + i)
        st = int(words[b + B_STATE])
        probes = int(words[b + B_PROBES])
        epoch = st >> EPOCH_SHIFT
        this_episode = (probes >> PTAG_SHIFT) == (epoch & PTAG_MASK)
        calls = fails = 0
        cur = (now // c.bucket_ns) & TAG_MASK
        for j in range(c.buckets):
            w = int(words[b + B_BUCKETS + j])
            if (cur - (w >> TAG_SHIFT)) & TAG_MASK < c.buckets:
                calls += w & CNT_MASK
                fails += (w >> FAIL_SHIFT) & CNT_MASK
        results = (probes >> 16) & M16 if this_episode else 0
        bits = int(words[b + B_PROBE_BITS])
        out.append(
            {
                "index": i,
                "name": c.name,
                "state": STATE_NAMES.get(st & STATE_MASK, str(st & STATE_MASK)),
                "forced": bool((st >> FLAGS_SHIFT) & F_FORCED),
                "epoch": epoch,
                "window_calls": calls,
                "window_failures": fails,
                "opened_at_ns": int(words[b + B_OPENED_NS]),
                "half_open_at_ns": int(words[b + B_HALF_OPEN_NS]),
                "probes_in_flight": probes & M16 if this_episode else 0,
                "probe_results": "".join(
                    "F" if bits >> k & 1 else "." for k in range(min(results, MAX_PROBE_WINDOW))
                ),
                "trips": int(words[b + B_TRIPS]),
                "denied": int(words[b + B_DENIED]),
                "config": c,
            }
        )
    return out


# --- numba ops -------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _block(words, i):
    return BLOCK_WORDS * (1 + np.int64(words[W_COUNT]) + i)


@njit(nogil=True, cache=True)
def _load(words, k):
    return np.int64(load_acquire(words, k))


@njit(nogil=True, cache=True)
def _add(words, k, n):
    while True:
        old = _load(words, k)
        if compare_exchange(words, k, old, old + n):
            return


@njit(nogil=True, cache=True)
def _store_max(words, k, value):
    while True:
        old = _load(words, k)
        if old >= value or compare_exchange(words, k, old, value):
            return


@njit(nogil=True, cache=True)
def _next_word(st, state, flags):
    return (((st >> EPOCH_SHIFT) + 1) << EPOCH_SHIFT) | (flags << FLAGS_SHIFT) | state


@njit(nogil=True, cache=True)
def _to_open(words, b, st, now_ns, flags):
    """CAS from exactly ``st`` to OPEN; opened_at is stamped first. True if this call did it."""
    _store_max(words, b + B_OPENED_NS, now_ns)
    if compare_exchange(words, b + B_STATE, st, _next_word(st, OPEN, flags)):
        if st & STATE_MASK != OPEN:
            _add(words, b + B_TRIPS, 1)
        return True
    return False


@njit(nogil=True, cache=True)
def _to_half_open(words, b, st, now_ns):
    _store_max(words, b + B_HALF_OPEN_NS, now_ns)
    _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
    return compare_exchange(words, b + B_STATE, st, _next_word(st, HALF_OPEN, 0))


@njit(nogil=True, cache=True)
def _to_closed(words, b, st):
    for j in range(MAX_BUCKETS):
        store_relaxed(words, b + B_BUCKETS + j, 0)
    return compare_exchange(words, b + B_STATE, st, _next_word(st, CLOSED, 0))


@njit(nogil=True, cache=True)
def _window_add(words, b, r, ok, now_ns):
    nb = np.int64(words[r + C_BUCKETS])
    slot = now_ns // np.int64(words[r + C_BUCKET_NS])
    tag = slot & TAG_MASK
    k = b + B_BUCKETS + slot % nb
    fail = 0 if ok else 1
    while True:
        old = _load(words, k)
        calls = 0
        fails = 0
        if (old >> TAG_SHIFT) == tag:
            calls = old & CNT_MASK
            fails = (old >> FAIL_SHIFT) & CNT_MASK
            if calls >= CNT_MASK:
                return  # saturated: the bucket keeps the rate of its first 2^20 - 1 calls
        new = (tag << TAG_SHIFT) | ((fails + fail) << FAIL_SHIFT) | (calls + 1)
        if compare_exchange(words, k, old, new):
            return


@njit(nogil=True, cache=True)
def _window_sum(words, b, r, now_ns):
    nb = np.int64(words[r + C_BUCKETS])
    cur = (now_ns // np.int64(words[r + C_BUCKET_NS])) & TAG_MASK
    calls = 0
    fails = 0
    for j in range(nb):
        w = _load(words, b + B_BUCKETS + j)
        if ((cur - (w >> TAG_SHIFT)) & TAG_MASK) < nb:
            calls += w & CNT_MASK
            fails += (w >> FAIL_SHIFT) & CNT_MASK
    return calls, fails


@njit(nogil=True, cache=True)
def _decide(words, b, r, st, results, fails, now_ns):
    """HALF_OPEN episode ``st`` with these probe counts: reopen, close, or keep probing."""
    n = np.int64(words[r + C_PROBE_WINDOW])
    allowed = np.int64(words[r + C_CLOSE_PCT]) * n // 100
    if fails > allowed:
        _to_open(words, b, st, now_ns, 0)
    elif results >= n:
        _to_closed(words, b, st)


@njit(nogil=True, cache=True)
def _admit_probe(words, b, r, st, now_ns):
    """1 admitted, 0 refused, -1 the state changed under us (caller re-reads it)."""
    tag = (st >> EPOCH_SHIFT) & PTAG_MASK
    k_max = np.int64(words[r + C_MAX_PROBES])
    n = np.int64(words[r + C_PROBE_WINDOW])
    while True:
        old = _load(words, b + B_PROBES)
        inflight = 0
        results = 0
        fails = 0
        if (old >> PTAG_SHIFT) == tag:
            inflight = old & M16
            results = (old >> 16) & M16
            fails = (old >> 32) & M16
        if inflight >= k_max or inflight + results >= n:
            _decide(words, b, r, st, results, fails, now_ns)
            timeout = np.int64(words[r + C_PROBE_TIMEOUT_NS])
            if now_ns - _load(words, b + B_PROBE_ACTIVITY_NS) >= timeout:
                _to_open(words, b, st, now_ns, 0)
            return 0
        new = (tag << PTAG_SHIFT) | (fails << 32) | (results << 16) | (inflight + 1)
        if compare_exchange(words, b + B_PROBES, old, new):
            _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
            return 1
        if _load(words, b + B_STATE) != st:
            return -1


@njit(nogil=True, cache=True)
def _probe_result(words, b, r, st, ok, now_ns):
    tag = (st >> EPOCH_SHIFT) & PTAG_MASK
    while True:
        old = _load(words, b + B_PROBES)
        inflight = 0
        results = 0
        fails = 0
        if (old >> PTAG_SHIFT) == tag:
            inflight = old & M16
            results = (old >> 16) & M16
            fails = (old >> 32) & M16
        k = results
        if inflight > 0:
            inflight -= 1
        if results < M16:
            results += 1
        if not ok:
            fails = min(fails + 1, M16)
        new = (tag << PTAG_SHIFT) | (fails << 32) | (results << 16) | inflight
        if compare_exchange(words, b + B_PROBES, old, new):
            break
        if _load(words, b + B_STATE) != st:
            return  # the episode ended while we tried: the result belongs to no episode
    _store_max(words, b + B_PROBE_ACTIVITY_NS, now_ns)
    if k < MAX_PROBE_WINDOW:
        bit = np.uint64(1) << np.uint64(k)
        while True:
            w = load_acquire(words, b + B_PROBE_BITS)
            nw = w & ~bit
            if not ok:
                nw |= bit
            if compare_exchange(words, b + B_PROBE_BITS, w, nw):
                break
    _decide(words, b, r, st, results, fails, now_ns)


@njit(nogil=True, cache=True)
def _enter_slow(words, i, b, st, now_ns):
    r = BLOCK_WORDS * (1 + i)
    while True:
        s = st & STATE_MASK
        if s == CLOSED:
            return ((st >> EPOCH_SHIFT) << 2) | T_CLOSED
        if s == OPEN:
            forced = (st >> FLAGS_SHIFT) & F_FORCED
            cooldown = np.int64(words[r + C_COOLDOWN_NS])
            if forced or now_ns - _load(words, b + B_OPENED_NS) < cooldown:
                _add(words, b + B_DENIED, 1)
                return 0
            _to_half_open(words, b, st, now_ns)
        else:
            got = _admit_probe(words, b, r, st, now_ns)
            if got > 0:
                return ((st >> EPOCH_SHIFT) << 2) | T_PROBE
            if got == 0:
                _add(words, b + B_DENIED, 1)
                return 0
        st = _load(words, b + B_STATE)


@njit(nogil=True, cache=True)
def breaker_enter(words, i, now_ns):
    """Ask breaker ``i`` to admit a call. Returns a ticket for ``breaker_exit`` (0 = refused).

    CLOSED: admitted. OPEN: refused until the cool-down is over, then the breaker goes
    HALF_OPEN and this call may be its first probe. HALF_OPEN: admitted as a probe while
    there is probe room. An admitted probe must be followed by ``breaker_exit`` (or
    ``breaker_release`` if the call is not made after all).
    """
    b = _block(words, i)
    st = _load(words, b + B_STATE)
    if st & STATE_MASK == CLOSED:
        return ((st >> EPOCH_SHIFT) << 2) | T_CLOSED
    return _enter_slow(words, i, b, st, now_ns)


@njit(nogil=True, cache=True)
def breaker_allow(words, i, now_ns):
    """True if a call may go through breaker ``i`` now (one acquire load when CLOSED).

    In HALF_OPEN a True admits a probe: the caller must report its outcome with
    ``breaker_record``.
    """
    w = unowned(words)  # borrowed: no NRT incref/decref (a lock add each) per call
    b = _block(w, i)
    st = _load(w, b + B_STATE)
    if st & STATE_MASK == CLOSED:
        return True
    return _enter_slow(w, i, b, st, now_ns) != 0


@njit(nogil=True, cache=True)
def breaker_exit(words, i, ticket, ok, now_ns):
    """Record the outcome of a call admitted with ``ticket`` (``TICKET_ANY``: no ticket).

    CLOSED now: counted into the window, which may open the breaker. HALF_OPEN now: a
    probe result if the ticket is a probe of this episode (or ``TICKET_ANY``), which may
    close or reopen it; otherwise ignored. OPEN now: ignored (a call admitted before the
    breaker opened).
    """
    if ticket == 0:
        return
    b = _block(words, i)
    r = BLOCK_WORDS * (1 + i)
    st = _load(words, b + B_STATE)
    s = st & STATE_MASK
    if s == CLOSED:
        _window_add(words, b, r, ok, now_ns)
        calls, fails = _window_sum(words, b, r, now_ns)
        if (
            calls >= np.int64(words[r + C_MIN_CALLS])
            and fails * 100 >= np.int64(words[r + C_OPEN_PCT]) * calls
        ):
            _to_open(words, b, st, now_ns, 0)
    elif s == HALF_OPEN:
        kind = ticket & 3
        if kind == TICKET_ANY or (kind == T_PROBE and (ticket >> 2) == (st >> EPOCH_SHIFT)):
            _probe_result(words, b, r, st, ok, now_ns)


@njit(nogil=True, cache=True)
def breaker_record(words, i, ok, now_ns):
    """Record the outcome of a call through breaker ``i``, judged by the state now."""
    breaker_exit(words, i, TICKET_ANY, ok, now_ns)


@njit(nogil=True, cache=True)
def breaker_release(words, i, ticket):
    """Give back a probe admitted with ``ticket`` whose call was not made (no result)."""
    if ticket & 3 != T_PROBE:
        return
    b = _block(words, i)
    tag = (ticket >> 2) & PTAG_MASK
    while True:
        old = _load(words, b + B_PROBES)
        if (old >> PTAG_SHIFT) != tag or old & M16 == 0:
            return
        if compare_exchange(words, b + B_PROBES, old, old - 1):
            return


@njit(nogil=True, cache=True)
def breaker_state_word(words, i):
    """The raw state word: state (byte 0), flags (byte 1), epoch (bits 16..62)."""
    return _load(words, _block(words, i) + B_STATE)


@njit(nogil=True, cache=True, inline="always")
def breaker_word_state(w):
    """CLOSED, OPEN or HALF_OPEN: the state byte of a breaker state word."""
    return w & STATE_MASK


@njit(nogil=True, cache=True, inline="always")
def breaker_word_epoch(w):
    """The epoch of a breaker state word: it moves at every transition, so an OPEN seen
    with a new epoch is a new trip."""
    return w >> EPOCH_SHIFT


@njit(nogil=True, cache=True)
def breaker_state(words, i):
    """CLOSED, OPEN or HALF_OPEN."""
    return breaker_state_word(words, i) & STATE_MASK


@njit(nogil=True, cache=True)
def breaker_trip(words, i, now_ns):
    """Operator trip: OPEN with the FORCED flag (no half-open until reset). Returns the
    previous state."""
    b = _block(words, i)
    while True:
        st = _load(words, b + B_STATE)
        if st & STATE_MASK == OPEN and (st >> FLAGS_SHIFT) & F_FORCED:
            return OPEN
        if _to_open(words, b, st, now_ns, F_FORCED):
            return st & STATE_MASK


@njit(nogil=True, cache=True)
def breaker_reset(words, i, now_ns):
    """Operator reset: CLOSED, FORCED cleared, window cleared. Returns the previous state."""
    b = _block(words, i)
    while True:
        st = _load(words, b + B_STATE)
        if _to_closed(words, b, st):
            return st & STATE_MASK


# --- Python side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerHandle:
    """One breaker of an attached segment (``words``, ``index``), for :func:`guard`."""

    words: np.ndarray
    index: int


@contextlib.contextmanager
def guard(breaker: BreakerHandle, clock: Callable[[], int] = time.monotonic_ns) -> Iterator[int]:
    """Run the ``with`` body through ``breaker``; yields the ticket.

    Raises :class:`BreakerOpenError` (before the body runs) if the breaker refuses. The body
    counts as a success if it completes and as a failure if any exception escapes it; the
    exception propagates unchanged.
    """
    ticket = int(breaker_enter(breaker.words, breaker.index, clock()))
    if ticket == 0:
        raise BreakerOpenError(f"breaker {breaker.index} refused the call")
    try:
        yield ticket
    except BaseException:
        breaker_exit(breaker.words, breaker.index, ticket, False, clock())
        raise
    breaker_exit(breaker.words, breaker.index, ticket, True, clock())
