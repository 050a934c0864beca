"""Breaker transitions and trading-state changes in the log.

The words change by compare-and-swap, mostly inside numba kernels (the risk checks trip a
breaker on rejected executions, raise a trading state on a daily loss or stale data), in
other processes (persistence's ``db`` breaker, the operator's ``bot4 breaker`` and ``bot4
halt|reduce|resume``) and on time (an open breaker goes half-open at its next use after the
cool-down). Logging at the CAS would put I/O in a hot loop and miss the time-driven ones, so
one process, the risk stage that owns the shared segments, compares the words with what it
saw last, at batch level (``RiskStage.pending``, at most every ``POLL_NS``), and logs each
change once, whoever made it: the trading-state word records its source (risk, operator,
OMS) and reason, a breaker's epoch counts its transitions (``transitions`` > 1 when several
happened between two looks).

Levels: a breaker opening, and a trading state leaving ``active``, are WARNING (events
``breaker_transition``, ``trading_state``); going half-open, closing, and back to ``active``
are INFO.
"""

from __future__ import annotations

import logging

import numpy as np

from bot4.logs import log_event
from bot4.records.errors import Code
from bot4.shm import breakers as B
from bot4.shm import trading_state as T

log = logging.getLogger("bot4.stage")
POLL_NS = 20_000_000  # looked at this often (one load of the trading generation, n breakers)


def _reason(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code) if code else "-"


class SharedStateLog:
    """Watches the breaker words ``brk`` and trading-state words ``ts`` (u64 views of the
    shared segments); ``symbol_of`` names instrument ids."""

    def __init__(self, brk: np.ndarray, ts: np.ndarray, symbol_of) -> None:
        self.brk = brk
        self.ts = ts
        self.symbol_of = symbol_of
        self.names = [row["name"] for row in B.snapshot(brk)]
        self.n_breakers = len(self.names)
        self.brk_words = [self._breaker_word(i) for i in range(self.n_breakers)]
        self.n_targets = int(ts[T.W_INSTRUMENTS]) + 1
        self.ts_gen = int(ts[T.W_GENERATION])
        self.ts_words = [self._target_word(t) for t in range(self.n_targets)]
        self.due = 0

    def _breaker_word(self, i: int) -> int:
        return int(self.brk[B.BLOCK_WORDS * (1 + self.n_breakers + i) + B.B_STATE])

    def _target_word(self, t: int) -> int:
        return int(self.ts[T.BLOCK_WORDS * (1 + t)])

    def poll(self, now_ns: int) -> None:
        """Log what changed since the last look (at most every ``POLL_NS``)."""
        if now_ns < self.due:
            return
        self.due = now_ns + POLL_NS
        for i in range(self.n_breakers):
            w = self._breaker_word(i)
            if w != self.brk_words[i]:
                self._breaker(i, self.brk_words[i], w)
                self.brk_words[i] = w
        gen = int(self.ts[T.W_GENERATION])
        if gen != self.ts_gen:
            self.ts_gen = gen
            for t in range(self.n_targets):
                w = self._target_word(t)
                if w != self.ts_words[t]:
                    self._trading(t, self.ts_words[t], w)
                    self.ts_words[t] = w

    def _breaker(self, i: int, old: int, new: int) -> None:
        st_old, st_new = old & B.STATE_MASK, new & B.STATE_MASK
        forced = bool((new >> B.FLAGS_SHIFT) & B.F_FORCED)
        n = ((new >> B.EPOCH_SHIFT) - (old >> B.EPOCH_SHIFT)) & ((1 << 47) - 1)
        name_old = B.STATE_NAMES.get(st_old, str(st_old))
        name_new = B.STATE_NAMES.get(st_new, str(st_new))
        level = logging.WARNING if st_new == B.OPEN else logging.INFO
        log_event(
            log,
            level,
            "breaker_transition",
            "breaker %s: %s -> %s%s%s",
            self.names[i],
            name_old,
            name_new,
            " (operator trip: open until reset)" if forced and st_new == B.OPEN else "",
            f" ({n} transitions since the last look)" if n > 1 else "",
            breaker=self.names[i],
            index=i,
            old=name_old,
            new=name_new,
            forced=forced,
            transitions=n,
            epoch=new >> B.EPOCH_SHIFT,
        )

    def _trading(self, t: int, old: int, new: int) -> None:
        st_old, st_new = old & T.STATE_MASK, new & T.STATE_MASK
        source = T.SOURCE_NAMES.get((new >> T.SOURCE_SHIFT) & 0xFF, "?")
        reason = _reason((new >> T.REASON_SHIFT) & 0xFFFF)
        n = ((new >> T.CHANGES_SHIFT) - (old >> T.CHANGES_SHIFT)) & T.CHANGES_MASK
        target = "global" if t == 0 else f"instrument {t} ({self.symbol_of(t)})"
        name_old = T.STATE_NAMES.get(st_old, str(st_old))
        name_new = T.STATE_NAMES.get(st_new, str(st_new))
        level = logging.INFO if st_new == T.ACTIVE else logging.WARNING
        log_event(
            log,
            level,
            "trading_state",
            "trading %s: %s -> %s by %s (%s)%s",
            target,
            name_old,
            name_new,
            source,
            reason,
            f" ({n} changes since the last look)" if n > 1 else "",
            target=t,
            symbol=self.symbol_of(t) if t else None,
            old=name_old,
            new=name_new,
            source=source,
            reason=reason,
            changes=n,
        )
