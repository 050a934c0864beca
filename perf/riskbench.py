"""Risk-path kernel costs: pre-trade risk check, breaker check, STP check, order creation.

Every figure is nanoseconds per operation amortised over one ``@njit`` loop that calls the
operation ``n`` times (the loop is itself a kernel, so the ~µs of Python-to-numba dispatch
is paid once per measurement, not per operation), against a baseline loop of the same
shape measured in the same run:

==========  =========================================================================  =====
name        one loop iteration                                                         ops
==========  =========================================================================  =====
``empty``   only the loop-carried dependency, ``acc += 1 + (acc & zero)``: the          1
            baseline of ``breaker`` and ``stp``
``clock``   the dependency and two ``monotonic_ns()`` stamps, summing the time          1
            between them: the baseline of ``risk`` and ``order``
``risk``    ``check_intents`` on a batch of 64 intents over 5 instruments and 4         64
            strategies: 40 accepted, 24 denied, 4 each by UNKNOWN_INSTRUMENT,
            MAX_ORDER_QTY, PRICE_BAND, MAX_NOTIONAL, STOP_LOSS_TOO_FAR and
            DUPLICATE_ORDER (a replayed intent, the 13th of 15 checks); every
            intent also gets its RISK_DECISION and every accepted one its ORDER
``breaker`` ``breaker_allow`` on a CLOSED breaker in a real shared segment              1
``stp``     ``guard_plan`` (DecrementBoth) of an incoming order against our 8 resting     1
            orders on the instrument; four incoming orders in rotation crossing 0,
            1, 2 and 3 of them
``order``   ``orders_kernel`` on 64 ACTION_NEW orders exactly as risk emits them       64
            (fresh client order ids every batch): duplicate check against the
            seen-ids LRU (65536, full and evicting in steady state) and the book,
            order id, STP against our open orders, book insert, venue ORDER written
``load``    reference of ``breaker``: the dependency and one acquire load of the        1
            breaker's state word (the load ``breaker_allow`` makes on a CLOSED
            breaker), fed back into the dependency
``py_risk`` reference of ``risk``: the same batch checked by plain Python over           64
            dicts and tuples (instrument and strategy limits, quote, price band,
            notional, stop distance, position, token bucket, duplicate key, a
            decision tuple per intent and an order tuple per accepted one); must
            reach the same 40 accepted / 24 denied
``py_order`` reference of ``order``: the same 64 orders created by plain Python: seen-ids  64
            LRU (an ``OrderedDict`` of 65536, full and evicting), book dict, order id,
            STP scan of our resting orders on the other side, book insert, venue
            order tuple
==========  =========================================================================  =====

The references make the figures machine-independent: a gate that compares ns with a
constant passes on one machine and fails on a slower or busier one, while the ratio of an
operation to a reference of comparable work, measured in the same run on the same core
(the breaker's load-to-use latency against a bare dependent load, the compiled kernels
against the same steps in CPython), moves much less from machine to machine and with load.
``py_risk`` and ``py_order`` stamp ``perf_counter_ns`` around each batch, like ``risk`` and
``order``, so their put-back is not counted either.

The loop-carried dependency: ``zero`` is a runtime 0 the compiler cannot see through;
``acc & zero`` is added to an argument the operation really uses (the breaker index, which
STP order, ``now_ns`` / ``seq`` of the batch kernels) and the operation's result is added
to ``acc``. So no call is hoisted out of the loop or overlapped with the next: the figures
are latencies of back-to-back dependent calls (for the breaker, the load-to-use latency of
its state word), not throughputs.

``risk`` and ``order`` change state, so after every batch the loop puts it back (risk: the
per-instrument and account arrays, token buckets and the open-order table as before the
batch; orders: the 64 orders taken out of the book with ``book_find`` + ``book_remove``).
The put-back is not what is measured: those loops stamp the clock around the kernel call
and return the time between the stamps, and their baseline is the same pair of stamps
(``clock``). The whole-loop time (put-back included) is reported too.

``net = timed - baseline / ops`` is the cost of the operation itself. Every run checks its
outputs afterwards (the same decisions as the first batch, the breaker still CLOSED, the
expected STP plans, every order sent and the book empty again) and raises
:class:`MeasureError` if the loop did not take the path it claims to measure.

Shared segments (breakers, trading state) are created under the instance ``rb<pid>`` and
unlinked by :meth:`RiskBench.close` (also when setup fails); :func:`sweep_stale_segments`
removes those of dead processes. Standalone: ``.venv/bin/python perf/riskbench.py [n_ops]``.
"""

# ruff: noqa: I001  (numba is imported after bot4, which sets its CPU features first)
from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
import os
import re
import statistics
import sys
import time

import numpy as np

import bot4  # noqa: F401  (configures numba's CPU features before numba is imported)
from bot4.oms.book import book_add, book_find, book_new, book_remove, open_order
from bot4.oms.states import ST_ACKNOWLEDGED, TABLE
from bot4.oms.stp_guard import GUARD_DECREMENT_BOTH, guard_plan
from bot4.records import (
    DECISION_ACCEPT,
    EXEC_REPORT,
    MARKET_DATA,
    MD_QUOTE,
    ORDER,
    ORDER_INTENT,
    OT_LIMIT,
    OT_MARKET,
    RISK_DECISION,
    SIDE_BUY,
    SIDE_SELL,
    TIF_DAY,
)
from bot4.records.errors import Code
from bot4.risk import create_risk_segments
from bot4.risk.book import RiskBook
from bot4.risk.checks import check_intents
from bot4.risk.limits import RiskLimits, build_arrays
from bot4.shm.breakers import (
    B_STATE,
    BLOCK_WORDS,
    CLOSED,
    W_COUNT,
    Breakers,
    breaker_allow,
    breaker_state,
)
from bot4.shm.atomics import load_acquire, monotonic_ns
from bot4.shm.segment import PREFIX, SHM_DIR, Segment, instance_segments
from bot4.shm.trading_state import TradingState
from bot4.oms.from_risk import orders_kernel
from bot4.oms.state import C_NEW_SENT, oms_new

from numba import njit  # noqa: E402  (after bot4)

BATCH = 64  # intents / orders per kernel call (ops per loop iteration of risk, order)
N_INST = 5  # DEFAULT_INSTRUMENTS: ids 1..5, price scale 10_000
BID, ASK = 1_000_000, 1_000_200  # $100.00 / $100.02 on every instrument
MID = (BID + ASK) // 2
T0 = 10**12  # the kernels' clock (ns); quotes are stamped T0, checks run at T0 + 1 ms
INTENT_PRODUCER = 3
RISK_PRODUCER = 4
OPS = ("empty", "clock", "risk", "breaker", "stp", "order", "load", "py_risk", "py_order")
PER_ITER = {
    "empty": 1,
    "clock": 1,
    "risk": BATCH,
    "breaker": 1,
    "stp": 1,
    "order": BATCH,
    "load": 1,
    "py_risk": BATCH,
    "py_order": BATCH,
}
# what each operation's net figure is measured against (same run, same loop shape)
BASELINE = {"risk": "clock", "breaker": "empty", "stp": "empty", "order": "clock"}
# the reference of comparable work each operation's machine-independent ratio is taken
# against (same run, same core): reference ns / operation ns, "how many times faster"
REFERENCE = {"risk": "py_risk", "breaker": "load", "order": "py_order"}

# The figures a comparable system advertises (ns per operation) and this aim: 100x.
ADVERTISED_NS = {"risk": 10_000.0, "breaker": 100.0, "order": 100_000.0}
AIM_FACTOR = 100.0

# Risk limits: the defaults (RiskLimits()), with one row per strategy so that each has its
# own token bucket (default 100/s, burst 20); the batch keeps every strategy within burst.
RISK_PARAMS = {
    "strategies": {str(s): {} for s in (1, 2, 3, 4)},
    "breakers": [{"name": "venue"}],
}


class MeasureError(RuntimeError):
    """A measurement did not take the path it claims to measure (or its setup failed)."""


# ----------------------------------------------------------------------------------------
# the timed loops


@njit(nogil=True, cache=True)
def loop_empty(n, zero):
    acc = np.int64(0)
    for _ in range(n):
        acc += 1 + (acc & zero)
    return acc


@njit(nogil=True, cache=True)
def loop_clock(n, zero):
    """The stamps of the batch loops alone: (acc, ns between the two stamps, summed)."""
    acc = np.int64(0)
    inside = np.int64(0)
    for _ in range(n):
        t0 = monotonic_ns()
        t1 = monotonic_ns()
        inside += t1 - t0
        acc += 1 + (acc & zero)
    return acc, inside


@njit(nogil=True, cache=True)
def _restore_risk(st, inst0, acct0, tat0):
    st.inst[:, :] = inst0
    st.acct[:] = acct0
    st.tat[:] = tat0
    st.orders[:, 0] = 0  # every row empty (a claimed row's values are zeroed on claim)


@njit(nogil=True, cache=True)
def loop_risk(n, zero, intents, out_o, out_d, seq, now, st, inst0, acct0, tat0):
    acc = np.int64(0)
    inside = np.int64(0)
    for _ in range(n):
        t0 = monotonic_ns()
        n_o, n_d = check_intents(st, intents, out_o, out_d, seq, now + (acc & zero))
        t1 = monotonic_ns()
        inside += t1 - t0
        acc += n_o + n_d
        seq += n_o + n_d
        _restore_risk(st, inst0, acct0, tat0)
    return acc, inside


@njit(nogil=True, cache=True)
def loop_breaker(n, zero, words, index, now):
    acc = np.int64(0)
    for _ in range(n):
        acc += np.int64(breaker_allow(words, index + (acc & zero), now))
    return acc


@njit(nogil=True, cache=True)
def loop_stp(n, zero, book, table, incoming, policy, plan):
    acc = np.int64(0)
    for i in range(n):
        j = (i + (acc & zero)) & 3
        n_act, after, outcome = guard_plan(book, table, incoming[j], policy, plan)
        acc += n_act + after + outcome
    return acc


@njit(nogil=True, cache=True)
def loop_order(n, zero, batch, venue, fills, seq, st, prefix, first):
    acc = np.int64(0)
    inside = np.int64(0)
    nxt = first
    b = batch.shape[0]
    for _ in range(n):
        for k in range(b):
            batch[k].client_order_id = prefix | np.uint64(nxt + k)
        t0 = monotonic_ns()
        nv, nf, seq = orders_kernel(batch, venue, fills, seq + (acc & zero), st, t0)
        t1 = monotonic_ns()
        inside += t1 - t0
        acc += nv + 2 * nf
        nxt += b
        for k in range(b):
            s = book_find(st.book, batch[k].client_order_id)
            if s >= 0:
                book_remove(st.book, s)
    return acc, inside, nxt, seq


@njit(nogil=True, cache=True)
def loop_load(n, zero, words, index):
    """Reference of ``loop_breaker``: the dependency through one acquire load of ``words``."""
    acc = np.int64(0)
    for _ in range(n):
        acc += 1 + (np.int64(load_acquire(words, index + (acc & zero))) & zero)
    return acc


# ----------------------------------------------------------------------------------------
# references of comparable work in plain Python (the same steps, no numba)


class PyRisk:
    """``check_intents``' work on the benchmark's batch in plain Python: per intent the
    instrument's limits and quote (dicts), order size, price band, notional, stop distance,
    strategy token bucket, worst-case position, duplicate key; a decision tuple for every
    intent and an order tuple for every accepted one. ``check`` returns the accepted flags
    (the plan must match numba's); ``restore`` puts the state back between batches."""

    def __init__(self, limits: RiskLimits, specs: list[dict], scale: int = 10_000) -> None:
        il, sl = limits.instrument, limits.strategy
        self.ilim = {
            i: (il.max_order_qty, int(il.max_notional * scale), il.max_position, il.price_band_bp)
            for i in range(1, N_INST + 1)
        }
        interval = int(1e9 / sl.rate_per_s)
        self.slim = {s: (sl.max_stop_bp, interval, sl.burst * interval) for s in (1, 2, 3, 4)}
        self.quotes = {i: (BID, ASK) for i in range(1, N_INST + 1)}
        fields = ("_seq", "instrument", "side", "qty", "limit_price", "stop_price", "strategy")
        self.intents = [tuple(spec[f] for f in fields) for spec in specs]
        self.key_base = INTENT_PRODUCER << 48
        self.restore()

    def restore(self) -> None:
        self.position = dict.fromkeys(self.ilim, 0)
        self.tat = dict.fromkeys(self.slim, 0)
        self.seen: set[int] = set()

    def check(self, now: int) -> tuple[list, list]:
        decisions = []
        orders = []
        ilim, slim, quotes, position, tat, seen = (
            self.ilim, self.slim, self.quotes, self.position, self.tat, self.seen,
        )  # fmt: skip
        for seq, inst, side, qty, px, stop, strat in self.intents:
            reason = 0
            lim = ilim.get(inst)
            if lim is None:
                reason = Code.UNKNOWN_INSTRUMENT
            else:
                max_qty, max_notional, max_pos, band_bp = lim
                bid, ask = quotes[inst]
                mid = (bid + ask) // 2
                max_stop_bp, interval, burst = slim[strat]
                signed = qty if side == SIDE_BUY else -qty
                t = max(tat[strat], now - burst) + interval
                key = self.key_base | seq
                if qty > max_qty:
                    reason = Code.MAX_ORDER_QTY
                elif band_bp and abs(px - mid) * 10_000 > band_bp * mid:
                    reason = Code.PRICE_BAND
                elif qty * px > max_notional:
                    reason = Code.MAX_NOTIONAL
                elif max_stop_bp and abs(px - stop) * 10_000 > max_stop_bp * px:
                    reason = Code.STOP_LOSS_TOO_FAR
                elif abs(position[inst] + signed) > max_pos:
                    reason = Code.POSITION_LIMIT
                elif t > now + interval:
                    reason = Code.RATE_LIMIT
                elif key in seen:
                    reason = Code.DUPLICATE_ORDER
                else:
                    seen.add(key)
                    tat[strat] = t
                    position[inst] += signed
                    orders.append((seq, inst, side, qty, px, stop, strat, now))
            decisions.append((seq, inst, strat, int(reason), now))
        return decisions, orders


class PyOrders:
    """``orders_kernel``'s work on the benchmark's 64 NEW orders in plain Python: duplicate
    check against a seen-ids LRU (``OrderedDict`` of 65536, full and evicting) and the book,
    order id, STP scan of our resting orders on the other side of the instrument, book insert
    (dict) and per-instrument open list, venue order tuple. ``remove`` takes the batch back
    out of the book between batches (not timed)."""

    LRU = 65_536

    def __init__(self, batch: np.ndarray) -> None:
        self.orders = [
            (int(r["instrument"]), int(r["side"]), int(r["qty"]), int(r["limit_price"]))
            for r in batch
        ]
        self.seen: OrderedDict[int, None] = OrderedDict((-k, None) for k in range(self.LRU))
        self.book: dict[int, list] = {}
        self.open = {(i, s): [] for i in range(N_INST + 1) for s in (SIDE_BUY, SIDE_SELL)}
        self.next_oid = 1

    def create(self, prefix: int, first: int, seq: int, now: int) -> tuple[list, int]:
        venue = []
        seen, book, opened = self.seen, self.book, self.open
        for k, (inst, side, qty, px) in enumerate(self.orders):
            cl = prefix | (first + k)
            if cl in seen or cl in book:
                continue
            seen[cl] = None
            if len(seen) > self.LRU:
                seen.popitem(last=False)
            other = SIDE_SELL if side == SIDE_BUY else SIDE_BUY
            crossed = 0
            for o in opened[(inst, other)]:
                rest = book[o]
                if (side == SIDE_BUY and rest[5] <= px) or (side == SIDE_SELL and rest[5] >= px):
                    crossed += 1
            if crossed:
                continue
            oid = self.next_oid
            self.next_oid += 1
            book[cl] = [oid, cl, inst, side, qty, px, qty, 0, ST_ACKNOWLEDGED, now]
            opened[(inst, side)].append(cl)
            venue.append((seq, oid, cl, inst, side, qty, px, now))
            seq += 1
        return venue, seq

    def remove(self, venue: list) -> None:
        for v in venue:
            rec = self.book.pop(v[2])
            self.open[(rec[2], rec[3])].remove(v[2])


# ----------------------------------------------------------------------------------------
# fixtures


def _intent_specs() -> list[dict]:
    """64 intents: 40 accepted (8 per instrument, 4 strategies) and 24 denied, 4 each by
    UNKNOWN_INSTRUMENT, MAX_ORDER_QTY, PRICE_BAND, MAX_NOTIONAL, STOP_LOSS_TOO_FAR and
    DUPLICATE_ORDER (a replay of an accepted intent: denied by the 13th check of 15)."""
    accepted = []
    for j in range(40):
        inst = 1 + j % N_INST
        buy = (j // N_INST) % 2 == 0
        px = BID - 100 * (j // 10) if buy else ASK + 100 * (j // 10)
        accepted.append(
            {
                "instrument": inst,
                "side": SIDE_BUY if buy else SIDE_SELL,
                "qty": 100 * (1 + j % 3),
                "limit_price": px,
                "stop_price": px - 20_000 if buy else px + 20_000,
                "strategy": 1 + j % 4,
            }
        )
    a = accepted[0]
    denied_kinds = [
        {**a, "instrument": 99},  # UNKNOWN_INSTRUMENT
        {**a, "qty": 6_000},  # MAX_ORDER_QTY (5000)
        {**a, "limit_price": MID - 60_000, "stop_price": MID - 70_000},  # PRICE_BAND 500 bp
        {**a, "side": SIDE_SELL, "qty": 5_000, "limit_price": ASK, "stop_price": ASK + 20_000},
        {**a, "stop_price": BID - 60_000},  # STOP_LOSS_TOO_FAR (500 bp)
        "dup",  # DUPLICATE_ORDER
    ]
    specs: list[dict] = []
    acc_iter = iter(accepted)
    d = 0
    for k in range(BATCH):
        if k % 8 in (2, 5, 7):
            kind = denied_kinds[d % len(denied_kinds)]
            d += 1
            if kind == "dup":
                # a replay of the last accepted intent (same seq, same fields)
                prev = next(s for s in reversed(specs) if s.get("_accept"))
                specs.append({**prev, "_accept": False, "_dup_of": prev["_seq"]})
            else:
                specs.append({**kind, "_accept": False})
        else:
            specs.append({**next(acc_iter), "_accept": True})
        specs[-1]["_seq"] = specs[-1].get("_dup_of", k + 1)
    return specs


def _intents(specs: list[dict]) -> np.ndarray:
    it = np.zeros(len(specs), ORDER_INTENT)
    for k, spec in enumerate(specs):
        it[k]["seq"] = spec["_seq"]
        it[k]["ts_event_ns"] = T0 - 3_000
        it[k]["ts_recv_ns"] = T0 - 2_000
        it[k]["ts_signal_ns"] = T0 - 1_000
        it[k]["order_type"] = OT_MARKET if spec["limit_price"] == 0 else OT_LIMIT
        it[k]["tif"] = TIF_DAY
        for f in ("instrument", "side", "qty", "limit_price", "stop_price", "strategy"):
            it[k][f] = spec[f]
    return it


_instances = itertools.count()
_OUR_SEGMENT = re.compile(rf"^{re.escape(PREFIX)}rb(\d+)(?:n\d+)?\.")


def sweep_stale_segments() -> list[str]:
    """Unlink ``bot4.rb<pid>.*`` segments whose creating process is gone."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    removed = []
    for entry in sorted(entries):
        m = _OUR_SEGMENT.match(entry)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            Segment.unlink("/" + entry)
            removed.append("/" + entry)
    return removed


class RiskBench:
    """The four subjects and the two baselines, set up once; ``run(name, iters)`` times
    one loop of ``iters`` iterations (``PER_ITER[name]`` operations each)."""

    def __init__(self, instance: str | None = None) -> None:
        k = next(_instances)
        self.instance = instance or (f"rb{os.getpid()}" + (f"n{k}" if k else ""))
        self.names: list[str] = []
        self._attached: list = []
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- setup ------------------------------------------------------------------------
    def _setup(self) -> None:
        self.zero = np.int64(0)
        self.now = np.int64(T0 + 1_000_000)
        limits = RiskLimits.from_params({**RISK_PARAMS, "intent_producer": INTENT_PRODUCER})
        table = limits.instrument_table()
        if sorted(table.ids) != list(range(1, N_INST + 1)):
            raise MeasureError(f"expected instruments 1..{N_INST}, got {sorted(table.ids)}")
        self.names = create_risk_segments(
            self.instance, len(limits.breakers), N_INST, list(limits.breakers)
        )
        brk_seg = Breakers(self.instance)
        ts_seg = TradingState(self.instance)
        self._attached = [brk_seg, ts_seg]
        self.brk, self.trading = brk_seg.words, ts_seg.words
        arrays = build_arrays(limits, table, risk_producer=RISK_PRODUCER)

        # (a) risk: a book with fresh quotes on every instrument, then the mixed batch
        self.risk = self._risk_book(limits, arrays)
        self.specs = _intent_specs()
        self.intents = _intents(self.specs)
        self.out_o = np.zeros(2 * BATCH, ORDER)
        self.out_d = np.zeros(BATCH, RISK_DECISION)
        rb = self.risk
        self.inst0, self.acct0, self.tat0 = rb.inst.copy(), rb.acct.copy(), rb.tat.copy()
        self.seq = 1
        self.want_reasons = None
        self.run("risk", 1)  # compiles / loads, and fixes the decisions every batch must repeat
        self.want_reasons = self.out_d["reason"][:BATCH].copy()
        planned = [s["_accept"] for s in self.specs]
        if list(self.out_d["decision"][:BATCH] == DECISION_ACCEPT) != planned:
            raise MeasureError(f"risk batch decisions differ from the plan: {self.decisions()}")

        # (b) breaker 0 of the shared segment, CLOSED
        self.brk_index = np.int64(0)
        if breaker_state(self.brk, 0) != CLOSED:
            raise MeasureError("breaker 0 is not CLOSED")

        # (c) STP: our 4 resting sells above and 4 resting buys below BID on instrument 1
        self.book = book_new(64, N_INST + 1)
        for j in range(4):
            for side, px in ((SIDE_SELL, BID + 100 * (j + 1)), (SIDE_BUY, BID - 100 * (j + 1))):
                cl = np.uint64(1000 + 2 * j + (side == SIDE_BUY))
                book_add(
                    self.book,
                    open_order(
                        client_order_id=cl, risk_client_order_id=cl, order_id=cl, instrument=1,
                        side=side, price=px, qty=100, leaves_qty=100, strategy=1,
                        order_type=OT_LIMIT, tif=TIF_DAY, state=ST_ACKNOWLEDGED, ts_order_ns=T0,
                    ),
                )  # fmt: skip
        # incoming: buy @BID (crosses none), buy 50 @+100 (1), buy 150 @+200 (2),
        # sell 250 @-300 (3)
        self.stp_side = np.array([SIDE_BUY, SIDE_BUY, SIDE_BUY, SIDE_SELL], np.int8)
        self.stp_px = np.array([BID, BID + 100, BID + 200, BID - 300], np.int64)
        self.stp_qty = np.array([50, 50, 150, 250], np.int64)
        self.makers = np.zeros(7, np.int64)
        self.actions = np.zeros(7, np.int8)
        self.amounts = np.zeros(7, np.int64)
        self.plan = (self.makers, self.actions, self.amounts)
        self.stp_in = np.zeros(4, ORDER)  # the incoming orders, limit on instrument 1
        self.stp_in["instrument"] = 1
        self.stp_in["order_type"] = OT_LIMIT
        self.stp_in["side"], self.stp_in["limit_price"] = self.stp_side, self.stp_px
        self.stp_in["qty"] = self.stp_qty
        self.stp_each = [self._stp_one(j) for j in range(4)]
        if [p[0] for p in self.stp_each] != [0, 1, 2, 3]:
            raise MeasureError(f"STP plans cross {[p[0] for p in self.stp_each]} makers")

        # (d) orders: 64 accepted ORDERs exactly as risk emits them, into a default OMS
        self.order_batch = self._accepted_orders(limits, arrays)
        self.oms = oms_new()
        self.venue = np.zeros(BATCH * 8, ORDER)
        self.fills = np.zeros(BATCH * 8, EXEC_REPORT)
        self.order_seq = 1
        self.prefix = np.uint64(INTENT_PRODUCER << 48)
        self.next_id = 1
        # (e) the references: the breaker's state word; the same batches in plain Python
        self.brk_state_word = np.int64(BLOCK_WORDS * (1 + int(self.brk[W_COUNT])) + B_STATE)
        self.py_risk = PyRisk(limits, self.specs)
        self.py_orders = PyOrders(self.order_batch)
        self.py_seq = 1
        self.py_next = 1
        for name in OPS:
            self.run(name, 1)
        # steady state: the seen-ids LRU full, each new order evicting the oldest id
        self.run("order", len(self.oms.seen.keys) // BATCH)

    def _risk_book(self, limits, arrays) -> RiskBook:
        rb = RiskBook(arrays, self.brk, self.trading, limits.max_tracked_orders)
        md = np.zeros(2 * N_INST, MARKET_DATA)
        md["instrument"] = np.repeat(np.arange(1, N_INST + 1), 2)
        md["kind"] = MD_QUOTE
        md["side"] = [SIDE_BUY, SIDE_SELL] * N_INST
        md["price"] = [BID, ASK] * N_INST
        md["qty"] = 100
        md["ts_recv_ns"] = T0
        n = rb.market_data(md, np.zeros(8, ORDER), 1, T0)
        if n:
            raise MeasureError("market data queued cancels")
        # an empty batch: the book has now seen the trading-state generation, as a running
        # risk stage has (otherwise every restored batch would re-scan the state words)
        rb.check(np.zeros(0, ORDER_INTENT), np.zeros(1, ORDER), np.zeros(1, RISK_DECISION), 1, T0)
        return rb

    def _accepted_orders(self, limits, arrays) -> np.ndarray:
        """Run a scratch risk book on 64 accepted intents; its ORDER output is the batch."""
        rb = self._risk_book(limits, arrays)
        specs = []
        for j in range(BATCH):
            inst = 1 + j % N_INST
            buy = j % 2 == 0
            px = BID - 100 * (j // 10) if buy else ASK + 100 * (j // 10)
            specs.append(
                {
                    "instrument": inst,
                    "side": SIDE_BUY if buy else SIDE_SELL,
                    "qty": 100,
                    "limit_price": px,
                    "stop_price": px - 20_000 if buy else px + 20_000,
                    "strategy": 1 + j % 4,
                    "_seq": j + 1,
                }
            )
        out = np.zeros(2 * BATCH, ORDER)
        dec = np.zeros(BATCH, RISK_DECISION)
        n_o, n_d = rb.check(_intents(specs), out, dec, 1, int(self.now))
        if n_o != BATCH or (dec["decision"] != DECISION_ACCEPT).any():
            raise MeasureError(f"scratch risk book accepted {n_o} of {BATCH}")
        return out[:BATCH].copy()

    def _stp_one(self, j: int) -> tuple[int, int, int]:
        n, after, outcome = guard_plan(
            self.book, TABLE, self.stp_in[j], GUARD_DECREMENT_BOTH, self.plan
        )
        return int(n), int(after), int(outcome)

    # -- measuring ----------------------------------------------------------------------
    def run(self, name: str, iters: int) -> tuple[float, float]:
        """One loop of ``iters`` iterations of ``name``: ``(timed s, whole loop s)``.

        ``timed`` is the whole loop for ``empty``, ``breaker``, ``stp``, ``load``; for
        ``clock``, ``risk``, ``order``, ``py_risk`` and ``py_order`` it is the sum of the
        stamped windows (the batch calls, without the put-back). Checked afterwards:
        MeasureError if the path was not taken."""
        n = np.int64(iters)
        z = self.zero
        inside = None
        t = time.perf_counter()
        if name == "empty":
            acc = loop_empty(n, z)
            wall = time.perf_counter() - t
            ok = acc == iters
        elif name == "clock":
            acc, inside = loop_clock(n, z)
            wall = time.perf_counter() - t
            ok = acc == iters
        elif name == "risk":
            rb = self.risk
            acc, inside = loop_risk(
                n, z, self.intents, self.out_o, self.out_d, np.int64(self.seq), self.now,
                rb.st, self.inst0, self.acct0, self.tat0,
            )  # fmt: skip
            wall = time.perf_counter() - t
            self.seq += int(acc)
            per = BATCH + sum(s["_accept"] for s in self.specs)  # decisions + orders
            ok = acc == iters * per
            if self.want_reasons is not None:
                ok = ok and np.array_equal(self.out_d["reason"][:BATCH], self.want_reasons)
        elif name == "breaker":
            acc = loop_breaker(n, z, self.brk, self.brk_index, self.now)
            wall = time.perf_counter() - t
            ok = acc == iters and breaker_state(self.brk, 0) == CLOSED
        elif name == "stp":
            acc = loop_stp(
                n, z, self.book, TABLE, self.stp_in, np.int64(GUARD_DECREMENT_BOTH), self.plan
            )
            wall = time.perf_counter() - t
            each = [sum(p) for p in self.stp_each]
            ok = acc == sum(each[i] for i in range(iters % 4)) + (iters // 4) * sum(each)
        elif name == "order":
            sent0 = int(self.oms.ctr[C_NEW_SENT])
            acc, inside, nxt, seq = loop_order(
                n, z, self.order_batch, self.venue, self.fills, np.int64(self.order_seq),
                self.oms, self.prefix, np.int64(self.next_id),
            )  # fmt: skip
            wall = time.perf_counter() - t
            self.next_id, self.order_seq = int(nxt), int(seq)
            ok = (
                acc == iters * BATCH
                and int(self.oms.ctr[C_NEW_SENT]) - sent0 == iters * BATCH
                and int(self.oms.book.meta[2]) == 0
            )
        elif name == "load":
            acc = loop_load(n, z, self.brk, self.brk_state_word)
            wall = time.perf_counter() - t
            ok = acc == iters
        elif name == "py_risk":
            pr, now, inside = self.py_risk, int(self.now), 0
            decisions: list = []
            orders: list = []
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                decisions, orders = pr.check(now)
                inside += time.perf_counter_ns() - t0
                pr.restore()
            wall = time.perf_counter() - t
            acc = len(orders)
            ok = [d[3] == 0 for d in decisions] == [s["_accept"] for s in self.specs]
        elif name == "py_order":
            po, now, inside, acc = self.py_orders, int(self.now), 0, 0
            prefix = int(self.prefix)
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                venue, self.py_seq = po.create(prefix, self.py_next, self.py_seq, now)
                inside += time.perf_counter_ns() - t0
                self.py_next += BATCH
                acc += len(venue)
                po.remove(venue)
            wall = time.perf_counter() - t
            ok = acc == iters * BATCH and not po.book
        else:
            raise KeyError(name)
        if not ok:
            raise MeasureError(f"{name}: the loop did not take the measured path (acc={acc})")
        return (wall if inside is None else int(inside) * 1e-9), wall

    def ns_per_op(self, name: str, n_ops: int) -> tuple[float, float]:
        """One loop of about ``n_ops`` operations: ``(timed, whole loop)`` ns per operation."""
        iters = max(1, n_ops // PER_ITER[name])
        timed, wall = self.run(name, iters)
        ops = iters * PER_ITER[name]
        return timed * 1e9 / ops, wall * 1e9 / ops

    def decisions(self) -> dict[str, int]:
        """Decision counts of one risk batch, by reason."""
        out: dict[str, int] = {}
        for r in self.out_d["reason"][:BATCH]:
            key = "ACCEPTED" if r == 0 else Code(int(r)).name
            out[key] = out.get(key, 0) + 1
        return out

    def close(self) -> None:
        """Drop the attachments and unlink this instance's segments (idempotent)."""
        self.brk = self.trading = None
        self.risk = None
        for seg in self._attached:
            with contextlib.suppress(BufferError):  # a numpy view alive: unmapped at exit
                seg.close()
        self._attached = []
        for name in {*self.names, *instance_segments(self.instance)}:
            Segment.unlink(name)
        self.names = []

    def __enter__(self) -> RiskBench:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------
# figures


def net_ns(timed: dict[str, float]) -> dict[str, float]:
    """ns per operation over the baseline: timed - baseline / ops per iteration."""
    return {k: timed[k] - timed[BASELINE[k]] / PER_ITER[k] for k in timed if k in BASELINE}


def measure(
    bench: RiskBench, n_ops: int = 1_000_000, rounds: int = 3
) -> tuple[dict[str, float], dict[str, float]]:
    """``rounds`` interleaved rounds of one loop per name; medians of ``(timed, whole loop)``
    ns per operation."""
    timed: dict[str, list[float]] = {k: [] for k in OPS}
    wall: dict[str, list[float]] = {k: [] for k in OPS}
    for _ in range(rounds):
        for k in OPS:
            a, b = bench.ns_per_op(k, n_ops)
            timed[k].append(a)
            wall[k].append(b)
    med = statistics.median
    return {k: med(v) for k, v in timed.items()}, {k: med(v) for k, v in wall.items()}


def reference_ratios(timed: dict[str, float]) -> dict[str, float]:
    """How many times faster than its reference of comparable work (same run): reference
    ns / operation ns, for each operation in ``REFERENCE`` measured with its reference."""
    return {
        k: timed[r] / timed[k]
        for k, r in REFERENCE.items()
        if k in timed and r in timed and timed[k] > 0
    }


LABELS = {
    "empty": "empty loop (per iteration)",
    "clock": "clock stamp pair (per iteration)",
    "risk": "risk check, per intent (check_intents x64)",
    "breaker": "breaker check (breaker_allow, CLOSED)",
    "stp": "STP check (guard_plan, 8 resting)",
    "order": "order creation, per order (orders_kernel x64)",
    "load": "dependent load (reference of breaker)",
    "py_risk": "risk check in Python, per intent (reference)",
    "py_order": "order creation in Python, per order (reference)",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    n_ops = int(float(args[0])) if args else 1_000_000
    sweep_stale_segments()
    t = time.perf_counter()
    with RiskBench() as bench:
        print(f"kernels ready in {time.perf_counter() - t:.1f} s; risk batch: {bench.decisions()}")
        timed, wall = measure(bench, n_ops)
    net = net_ns(timed)
    ref = reference_ratios(timed)
    print(
        f"{'operation':<48}{'timed ns/op':>12}{'net ns/op':>11}{'baseline':>10}"
        f"{'whole loop ns/op':>18}{'x faster than reference':>25}"
    )
    for k in OPS:
        n = f"{net[k]:.2f}" if k in net else "-"
        r = f"{ref[k]:.2f}x ({REFERENCE[k]})" if k in ref else "-"
        print(
            f"{LABELS[k]:<48}{timed[k]:>12.2f}{n:>11}{BASELINE.get(k, '-'):>10}"
            f"{wall[k]:>18.2f}{r:>25}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
