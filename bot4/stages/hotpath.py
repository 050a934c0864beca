"""The Python side of the hot path group's compiled duty cycle (``bot4.stages.hotloop``):
which groups qualify (``HOT_KINDS``, :meth:`HotPath.of`), packing the members' state for
:func:`~bot4.stages.hotloop.hot_cycle`, copying each member's cursors and sequence numbers
into its loop-state words and back (:class:`HotPath`), the process-local members the warm-up,
the benchmarks and the tests drive it with (``_bench_members``) and :func:`warm`."""

from __future__ import annotations

import numpy as np

from bot4.oms.state import C_EXEC_CONFLICT, C_RECON_MISMATCH
from bot4.shm.breakers import breaker_state_word
from bot4.shm.control import PIPE_RUNNING, W_PIPE_STATE
from bot4.shm.ring_layout import W_CAPACITY
from bot4.shm.trading_state import state_generation
from bot4.shm.waitv import signal_address
from bot4.stages.hotloop import (
    HOUSEKEEP_NS,
    R_PENDING,
    T_BEAT_DUE,
    T_BRK,
    T_CONFLICT,
    T_GEN,
    T_POKE,
    T_RECON,
    T_STALE_EVERY,
    hot_cycle,
)
from bot4.stages.hotsteps import (
    L_BATCHES,
    L_CUR,
    L_GEN,
    L_NEXT_BUF,
    L_NEXT_SEQ,
    L_REC_IN,
    L_REC_OUT,
    LS_WORDS,
    _risk_state,
)
from bot4.stages.prefault import prefault

HOT_KINDS = ("signals", "risk", "orders")
#: (inputs, outputs) of each member the compiled cycle takes: the default wiring, and
#: signals and risk each with or without its depth input (BOOK_LEVEL, the last input)
HOT_SHAPES = (((1, 1), (2, 1)), ((3, 2), (4, 2)), ((2, 4),))
#: the default wiring's input count per member (a depth input comes after them)
BASE_INPUTS = (1, 3, 2)


def _rings(runner, n_in: int) -> tuple:
    """(header, slots) of the member's first ``n_in`` inputs and its outputs, flat."""
    out = []
    for side in (*runner.ins[:n_in], *runner.outs):
        out += [side.hdr, side.slots]
    return tuple(out)


def depth_wiring(members: list) -> tuple[bool, bool]:
    """Whether signals and risk read a depth input (one more than ``BASE_INPUTS``)."""
    return len(members[0].ins) > BASE_INPUTS[0], len(members[1].ins) > BASE_INPUTS[1]


class HotPath:
    """The compiled cycle bound to one group's three members (built by :meth:`of`).

    Signals' and risk's depth inputs, where wired, are passed apart from the members'
    tuples (``sdep``, ``rdep``; None otherwise), so the default wiring's tuples and
    compiled cycle stay as they were. ``run`` copies each member's cursors and sequence number into its loop-state words,
    runs :func:`hot_cycle`, copies them back and adds the batches and records done; then
    the stages' Python follow-ups their ``process`` makes after a batch (risk: schedule
    the next daily reset once one was applied; orders: ``after_reports``).
    """

    def __init__(self, members: list, group_names: set[str]) -> None:
        self.members = members
        sig, risk, oms = members
        self.ls = [np.zeros(LS_WORDS, np.uint64) for _ in members]
        args = []
        for m, ls, n_in in zip(members, self.ls, BASE_INPUTS, strict=True):
            wake_in = np.array([r.producer not in group_names for r in m.in_specs], np.uint8)
            wake_out = np.array([r.consumer not in group_names for r in m.out_specs], np.uint8)
            args.append([ls, m.blk, wake_in, wake_out, _rings(m, n_in)])
        s = sig.stage
        args[0].append(s.kernel_state())
        args[1].append(_risk_state(risk.stage.book))
        args[2].append(oms.stage.oms)
        self.words = sig.cb.words
        self.batches = np.array([m.spec.batch for m in members], np.int64)
        self.oms_mo = int(oms.stage.max_out_per_in)
        # each member's scratch, one array per output: where a batch's records go
        # near the wrap point before they are copied across it (hotsteps._claim)
        for k, m, mo in ((0, sig, 1), (1, risk, 2), (2, oms, self.oms_mo)):
            n = int(self.batches[k]) * mo
            args[k].append(tuple(np.zeros(n, o.slots.dtype) for o in m.outs))
        self.args = tuple(tuple(a) for a in args)
        self.in_words = False  # the loop-state words, not the members, hold the truth
        self.calls = 0  # run calls, and the records they read (the group's closing log line)
        self.records = 0
        self.reasons = [0] * 5  # calls by return reason (hotloop.R_*)
        self.addrs = np.zeros(6, np.uint64)
        for k, (m, i) in enumerate(((sig, 0), (risk, 0), (risk, 1), (risk, 2), (oms, 0), (oms, 1))):
            self.addrs[k] = signal_address(m.ins[i].hdr)
        s_depth, r_depth = self.depth = depth_wiring(members)
        self.waiters = np.zeros(3 * (6 + s_depth + r_depth), np.uint64)
        # the cycle's timers and seen counters (hotloop.hot_cycle, the T_* offsets)
        ctr = oms.stage.oms.ctr
        rs = risk.stage.book.st
        n_brk = rs.brk_scope.shape[0]
        self.timers = np.zeros(T_BRK + n_brk, np.int64)
        self.timers[T_STALE_EVERY] = int(risk.stage.stale_every)
        self.timers[T_RECON] = int(ctr[C_RECON_MISMATCH])
        self.timers[T_CONFLICT] = int(ctr[C_EXEC_CONFLICT])
        self.timers[T_GEN] = int(state_generation(rs.trading))
        for b in range(n_brk):
            self.timers[T_BRK + b] = np.uint64(breaker_state_word(rs.brk, b)).view(np.int64)
        self.poke = self.timers[T_POKE : T_POKE + 1]  # the housekeeping thread's word
        # hot_cycle's own arrays, in its order (one argument: hotloop.hot_cycle)
        self.arrays = (self.words, self.batches, self.waiters, self.addrs, self.timers)
        # the members' tables were prefaulted by their runners: the group's own arrays
        prefault((tuple(a[-1] for a in self.args), self.arrays))
        self.keeper = None  # bot4.stages.hotkeeper.Keeper, when the group runs one
        # without a keeper the Python round pings systemd's watchdog: it comes at least
        # at half its interval
        notifier = getattr(members[0], "notifier", None)
        wd = int(getattr(notifier, "watchdog_interval_ns", 0) or 0)
        self.round_ns = min(HOUSEKEEP_NS, wd) if wd else HOUSEKEEP_NS
        # signals' depth: the ring, its feature state (dq; the imbalance goes to s.st),
        # whether the feature is on (imbalance_levels > 1), the records applied (added to
        # the stage's depth_updates by to_python) and the ring's park address
        self.depth_applied = np.zeros(1, np.int64)
        self.sdep = None
        if s_depth:
            d = sig.ins[1]
            self.sdep = (d.hdr, d.slots, s.dq, np.bool_(s.depth_on), self.depth_applied,
                         np.uint64(signal_address(d.hdr)))  # fmt: skip
        self.rdep = None
        if r_depth:
            d = risk.ins[3]
            self.rdep = (d.hdr, d.slots, np.uint64(signal_address(d.hdr)))

    @classmethod
    def of(cls, members: list, group_names: set[str]) -> HotPath | None:
        """A HotPath when the started members are exactly signals, risk and orders wired as
        in the default topology (signals 1 -> 1 ring, risk 3 -> 2, orders 2 -> 4), signals
        and risk each optionally with a depth input (BOOK_LEVEL, the md stage's
        ``book_level`` ring: signals 2 -> 1, risk 4 -> 2), else None (the group runs its
        members' Python duty cycles)."""
        if [m.stage.kind for m in members] != list(HOT_KINDS):
            return None
        sig, risk, oms = members
        for m, shapes, n_in in zip(members, HOT_SHAPES, BASE_INPUTS, strict=True):
            if (len(m.ins), len(m.outs)) not in shapes:
                return None
            if any(r.type != "BOOK_LEVEL" for r in m.in_specs[n_in:]):
                return None
        if sig.stage.router is not None:
            return None
        return cls(members, group_names)

    def describe(self) -> str:
        """The wiring in a few words (the group's log line)."""
        s_depth, r_depth = self.depth
        parts = [f"signals {'ticks, depth' if s_depth else 'ticks'}"]
        parts.append(f"risk intents, fills, market data{', depth' if r_depth else ''}")
        parts.append("orders orders, venue reports")
        return "; ".join(parts)

    def ready(self) -> bool:
        """Every member on its steady path: no output muted after a restart, the OMS not
        reconciling, no test stall."""
        for m in self.members:
            if m.test_stall:
                return False
            for row in m.mute_until:
                for x in row:
                    if x is not None:
                        return False
        return not self.members[2].stage.reconciling

    def prime(self) -> None:
        """Load (or compile) :func:`hot_cycle` for these members' types: one round with
        batch sizes 0 and a deadline in the past reads, writes and commits nothing."""
        sig, risk, oms = self.args
        quiet = self.timers.copy()  # no stale check, no beat: the round writes nothing
        quiet[T_STALE_EVERY] = 0
        quiet[T_BEAT_DUE] = np.iinfo(np.int64).max
        quiet[T_POKE] = 0
        arrays = (self.words, np.zeros(3, np.int64), self.waiters, self.addrs, quiet)
        hot_cycle(sig, risk, oms, arrays, (0, 0, False, True, self.oms_mo), self.sdep, self.rdep)

    def run(
        self, spin_ns: int, yield_idle: bool, now_ns: int, park: bool = False
    ) -> tuple[int, int]:
        """One call of :func:`hot_cycle` (at most ``HOUSEKEEP_NS`` from ``now_ns``);
        returns ``(reason, records read)``. The members' Python mirrors (cursors,
        sequence numbers, counters) are brought up to date by :meth:`to_python`, which
        the caller calls before it runs a member's Python cycle; until then the loop-state
        words are the truth and the next call starts from them."""
        if not self.in_words:
            for m, ls in zip(self.members, self.ls, strict=True):
                ls[L_GEN] = m.gen
                ls[L_NEXT_BUF] = m.next_buf
                ls[L_NEXT_SEQ] = m.next_seq
                for i, c in enumerate(m.cur):
                    ls[L_CUR + i] = c
                ls[L_BATCHES] = ls[L_REC_IN] = ls[L_REC_OUT] = 0
            self.in_words = True
        sig, risk, oms = self.args
        risk_stage = self.members[1].stage
        keeper = self.keeper
        round_ns = HOUSEKEEP_NS if keeper is not None else self.round_ns
        if keeper is not None:
            keeper.lock.release()  # the members' Python objects: the keeper's meanwhile
        try:
            how = (now_ns + round_ns, spin_ns, yield_idle, park, self.oms_mo)
            reason, n = hot_cycle(sig, risk, oms, self.arrays, how, self.sdep, self.rdep)
        finally:
            if keeper is not None:
                keeper.lock.acquire()
        if self.poke[0]:
            self.poke[0] = 0
            if keeper is not None:
                keeper.check()
        self.calls += 1
        self.records += int(n)
        self.reasons[int(reason)] += 1
        if n or reason == R_PENDING:
            if risk_stage.book.reset_due:
                risk_stage._schedule_reset()
            self.members[2].stage.after_reports()
        return int(reason), int(n)

    def to_python(self) -> None:
        """Copy the loop-state words back into the members (before their Python cycle)."""
        if not self.in_words:
            return
        for m, ls in zip(self.members, self.ls, strict=True):
            m.gen = int(ls[L_GEN])
            m.next_buf = int(ls[L_NEXT_BUF])
            m.next_seq = int(ls[L_NEXT_SEQ])
            m.cur = [int(ls[L_CUR + i]) for i in range(len(m.cur))]
            m.batches += int(ls[L_BATCHES])
            m.records_in += int(ls[L_REC_IN])
            m.records_out += int(ls[L_REC_OUT])
        if self.depth_applied[0]:
            self.members[0].stage.depth_updates += int(self.depth_applied[0])
            self.depth_applied[0] = 0
        self.in_words = False


def _bench_members(
    capacity: int = 4096, signals_depth: bool = False, risk_depth: bool = False, levels: int = 5
):
    """The three members on process-local rings and state (``warm``, ``perf``, tests): stand-ins
    for ``StageRunner`` with what :class:`HotPath` reads. ``signals_depth``, ``risk_depth``:
    the md stage's depth wired into signals (ring ``depth``, input 1, ``imbalance_levels =
    levels``) and / or risk (ring ``risk_depth``, input 3). Returns ``(members, rings)``,
    rings by name as ``(hdr, slots)``."""
    from types import SimpleNamespace

    from bot4.records import RECORD_TYPES
    from bot4.shm.ring_layout import HEADER_WORDS
    from bot4.spec import RingSpec, StageSpec
    from bot4.stages.orders import OrdersStage
    from bot4.stages.risk import RiskStage
    from bot4.stages.signals import SignalsStage

    wiring = {
        "ticks": ("md", "signals", "MARKET_DATA"),
        "intents": ("signals", "risk", "ORDER_INTENT"),
        "fills": ("orders", "risk", "EXEC_REPORT"),
        "risk_md": ("md", "risk", "MARKET_DATA"),
        "orders": ("risk", "orders", "ORDER"),
        "decisions": ("risk", "persistence", "RISK_DECISION"),
        "venue_execs": ("venue", "orders", "EXEC_REPORT"),
        "venue_orders": ("orders", "venue", "ORDER"),
        "order_events": ("orders", "persistence", "ORDER"),
        "exec_events": ("orders", "persistence", "EXEC_REPORT"),
        "depth": ("md", "signals", "BOOK_LEVEL"),
        "risk_depth": ("md", "risk", "BOOK_LEVEL"),
    }
    specs = {n: RingSpec(n, a, b, t, capacity, 0, 0, False) for n, (a, b, t) in wiring.items()}
    rings = {}
    for n, (_a, _b, t) in wiring.items():
        hdr = np.zeros(HEADER_WORDS, np.uint64)
        hdr[W_CAPACITY] = capacity
        rings[n] = SimpleNamespace(hdr=hdr, slots=np.zeros(capacity, RECORD_TYPES[t]))
    words = np.zeros(64, np.uint64)
    words[W_PIPE_STATE] = PIPE_RUNNING
    sig_params = {"imbalance_levels": levels} if signals_depth else {}
    layout = (
        (SignalsStage, "signals", ["ticks"] + ["depth"] * signals_depth, ["intents"],
         sig_params),
        (RiskStage, "risk", ["intents", "fills", "risk_md"] + ["risk_depth"] * risk_depth,
         ["orders", "decisions"], {"shared": False}),
        (OrdersStage, "orders", ["orders", "venue_execs"],
         ["venue_orders", "fills", "order_events", "exec_events"], {}),
    )  # fmt: skip
    members = []
    for k, (cls, name, ins, outs, params) in enumerate(layout):
        spec = StageSpec(name=name, kind=name, core=0, index=k, params=params)
        stage = cls(spec, [specs[r] for r in ins], [specs[r] for r in outs], "warm")
        stage.setup()
        members.append(
            SimpleNamespace(
                stage=stage, spec=spec, ins=[rings[r] for r in ins],
                outs=[rings[r] for r in outs], in_specs=[specs[r] for r in ins],
                out_specs=[specs[r] for r in outs], blk=np.zeros(128, np.uint64),
                cb=SimpleNamespace(words=words), gen=0, next_buf=0, next_seq=1,
                cur=[0] * len(ins), batches=0, records_in=0, records_out=0,
                test_stall=False, mute_until=[[None] * len(ins) for _ in outs],
            )
        )  # fmt: skip
    return members, {n: (r.hdr, r.slots) for n, r in rings.items()}


def warm(signals_depth: bool = False, risk_depth: bool = False) -> int:
    """Compile (or load from numba's cache) :func:`hot_cycle` for one wiring: the default,
    or with the depth input of signals and / or risk (one specialisation each)."""
    members, _rings = _bench_members(64, signals_depth, risk_depth)
    HotPath(members, {"signals", "risk", "orders"}).prime()
    return 1
