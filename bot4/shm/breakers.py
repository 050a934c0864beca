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

The parts: :mod:`bot4.shm.breaker_layout` holds the segment's layout (word offsets, masks,
states, tickets); :mod:`bot4.shm.breaker_ops` holds the numba ops (``breaker_allow``,
``breaker_enter`` / ``breaker_exit``, ``breaker_record``, the operator's ``breaker_trip`` /
``breaker_reset``, ...) and the word-level ownership rules that make them safe from every
process at once; this module holds the Python side (the thresholds, laying out, creating and
attaching the segment, snapshots, the operator's commands, :func:`guard`) and re-exports
the layout's and the ops' names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bot4.records.errors import Bot4Error, Code
from bot4.shm.breaker_layout import (  # noqa: F401 (re-exported)
    B_BUCKETS,
    B_DENIED,
    B_HALF_OPEN_NS,
    B_OPENED_NS,
    B_PROBE_ACTIVITY_NS,
    B_PROBE_BITS,
    B_PROBES,
    B_STATE,
    B_TRIPS,
    BLOCK_BYTES,
    BLOCK_WORDS,
    BREAKERS_SEGMENT,
    C_BUCKET_NS,
    C_BUCKETS,
    C_CLOSE_PCT,
    C_COOLDOWN_NS,
    C_MAX_PROBES,
    C_MIN_CALLS,
    C_NAME,
    C_OPEN_PCT,
    C_PROBE_TIMEOUT_NS,
    C_PROBE_WINDOW,
    CLOSED,
    CNT_MASK,
    EPOCH_SHIFT,
    F_FORCED,
    FAIL_SHIFT,
    FLAGS_SHIFT,
    HALF_OPEN,
    HEADER_BYTES,
    LAYOUT_VERSION,
    M16,
    MAGIC,
    MAX_BUCKETS,
    MAX_PROBE_WINDOW,
    NAME_BYTES,
    OPEN,
    PTAG_MASK,
    PTAG_SHIFT,
    STATE_MASK,
    STATE_NAMES,
    T_CLOSED,
    T_PROBE,
    TAG_MASK,
    TAG_SHIFT,
    TICKET_ANY,
    W_COUNT,
    W_CREATED_NS,
    W_MAGIC,
    W_VERSION,
)
from bot4.shm.breaker_ops import (
    breaker_allow,
    breaker_enter,
    breaker_exit,
    breaker_record,
    breaker_release,
    breaker_reset,
    breaker_state,
    breaker_state_word,
    breaker_trip,
    breaker_word_epoch,
    breaker_word_state,
)
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
    "local_breakers",
    "snapshot",
]


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


def local_breakers(configs: Sequence[BreakerConfig], created_ns: int) -> np.ndarray:
    """Breakers in a process-local u64 array (a stage without the instance's segment, a
    warm job), laid out as :func:`init_breakers` lays out a segment."""
    words = np.zeros(breakers_bytes(len(configs)) // 8, np.uint64)
    init_breakers(words, configs, created_ns)
    return words


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


# --- guarded calls -------------------------------------------------------------------------


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
