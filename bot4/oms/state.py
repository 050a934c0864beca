"""The OMS state: one named object, :data:`Oms`, that every OMS kernel takes.

The orders stage's state (:mod:`bot4.stages.orders`): preallocated by :func:`oms_new`,
read and written by the OMS kernels (:mod:`bot4.oms.from_risk`, :mod:`bot4.oms.from_venue`,
:mod:`bot4.oms.emit`), which take it as one argument::

    Oms field        array                      meaning
    table            [states, events] int8      the order state machine (bot4.oms.states)
    illegal          [events] int64             refused transitions per event
    ctr              [N_CTR] int64              counters C_* (COUNTER_NAMES)
    ids              [4] uint64                 I_NEXT_ORDER_ID, I_NEXT_ALIAS
    book             Book                       our open orders (bot4.oms.book)
    seen             Lru                        client order ids used -> terminal state
    execs            Lru                        venue exec ids -> content hash
    exec_conflicts   Lru                        (exec id ^ content) pairs alarmed
    policy           [65536] int8               client guard policy per strategy
    needs_operator   [instruments] int64        genuine reconciliation disagreements
    plan_*           [stp_max_makers]           the client guard's plan for one order
    zero_order/exec  [1] ORDER / EXEC_REPORT    blank records to start a written one
    stp_where        [1] int64                  STP_AT_VENUE / STP_AT_CLIENT / STP_OFF
    stp_mode         [65536] uint8              the stp_mode a NEW carries, per strategy
    stp_group        [1] uint32                 the stp_group of every order

The counters ``C_*`` (named for ``summary()`` in :data:`COUNTER_NAMES`), the id words
``I_*``, the reasons ``R_*`` and where STP happens (``STP_AT_*``) are declared here,
beside the state they index. Ownership: the state belongs to the one process running the
orders stage (alone, or in the hot group's compiled cycle, ``bot4.stages.hotloop``).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from bot4.oms.book import book_new
from bot4.oms.lru import lru_new
from bot4.oms.states import EVENT_NAMES, TABLE
from bot4.records import EXEC_REPORT, ORDER
from bot4.records.errors import Code

OMS_PRODUCER = 0xFFFF  # intent producer id reserved for ids the OMS makes (replaces)
EXEC_CONFLICT_CAPACITY = 4096  # conflicting (exec_id, content) pairs remembered (repeats)
MAX_STP_MAKERS = 7  # makers the guard may act on per incoming order: max_out_per_in = 1 + this

# where self-trade prevention happens (param stp)
STP_AT_VENUE = 0  # the venue, at match time: orders carry stp_mode / stp_group
STP_AT_CLIENT = 1  # the pre-trade guard (bot4.oms.stp_guard)
STP_OFF = 2
STP_WHERE = {"venue": STP_AT_VENUE, "client": STP_AT_CLIENT, "none": STP_OFF}

# --- counters (int64, index into Oms.ctr; written by this stage only) -----------------------
C_INTENTS = 0  # ORDER records read from risk
C_NEW_SENT = 1  # NEW orders sent to the venue
C_DUPLICATE_INTENT = 2  # NEW with a client order id seen before: refused
C_INVALID = 3  # NEW refused as malformed (qty, side, id, instrument)
C_BOOK_FULL = 4  # NEW refused: open-order book full
C_CANCEL_SENT = 5  # CANCEL sent (risk's or the STP guard's)
C_REPLACE_SENT = 6  # REPLACE sent (STP guard DecrementBoth)
C_CANCEL_ALL = 7  # CANCEL_ALL sent (kill switch, drain)
C_CANCEL_ALL_MARKED = 8  # open orders marked cancel-pending by a CANCEL_ALL
C_BAD_ACTION = 9  # ORDER from risk with an action the OMS does not take
C_STP_EXPIRED = 10  # STP guard: incoming orders expired (policy or fallback)
C_STP_AMENDED = 11  # STP guard: incoming orders reduced by DecrementBoth
C_STP_MAKER_CANCEL = 12  # STP guard: resting orders cancelled
C_STP_MAKER_DECREMENT = 13  # STP guard: resting orders replaced down
C_STP_FALLBACK = 14  # STP guard could not apply the policy: CancelNew instead
C_EXECS = 15  # EXEC_REPORT records read from the venue
C_DUPLICATE_EXEC = 16  # dropped: exec_id seen before
C_BAD_EXEC = 17  # dropped: exec_type unknown
C_UNKNOWN_ORDER = 18  # report / cancel for an order the OMS does not know
C_FORWARDED = 19  # reports sent to risk (fills ring), generated ones included
C_ILLEGAL = 20  # events refused by the state table (per event: Oms.illegal)
C_STATUS = 21  # EXEC_STATUS answers read
C_RECON_MISMATCH = 22  # venue status disagreed with ours
C_RECON_OUTSTANDING = 23  # gauge: queries not yet answered
C_QUERIES_SENT = 24  # ACTION_QUERY sent
C_UNHELD_INTENTS = 25  # intents handed in while reconciling (loop without input_ready)
C_RECON_UNANSWERED = 26  # queries still unanswered at the reconciliation timeout
C_GENERATED = 27  # EXEC_REPORTs the OMS generated (rejects, STP)
C_EXEC_CONFLICT = 28  # exec_id seen before with different content: processed, alarmed
C_VENUE_STP_EXPIRED = 29  # EXEC_STP_EXPIRED reports read: orders the venue's STP expired
C_VENUE_STP_DECREMENTED = 30  # EXEC_STP_DECREMENTED reports read
C_RECON_ADOPTED = 31  # venue status adopted with a correction, no halt (bot4.oms.reconcile)
C_BROKEN_FILLS = 32  # EXEC_BROKEN reports read: fills the venue broke (state unchanged)
N_CTR = 33

COUNTER_NAMES = {
    C_INTENTS: "intents", C_NEW_SENT: "new_sent", C_DUPLICATE_INTENT: "duplicate_intents",
    C_INVALID: "invalid_intents", C_BOOK_FULL: "book_full", C_CANCEL_SENT: "cancels_sent",
    C_REPLACE_SENT: "replaces_sent", C_CANCEL_ALL: "cancel_all_sent",
    C_CANCEL_ALL_MARKED: "cancel_all_marked", C_BAD_ACTION: "bad_actions",
    C_STP_EXPIRED: "guard_expired_incoming", C_STP_AMENDED: "guard_amended_incoming",
    C_STP_MAKER_CANCEL: "guard_cancelled_resting",
    C_STP_MAKER_DECREMENT: "guard_decremented_resting", C_STP_FALLBACK: "guard_fallbacks",
    C_EXECS: "exec_reports", C_DUPLICATE_EXEC: "duplicate_execs",
    C_BAD_EXEC: "bad_execs", C_UNKNOWN_ORDER: "unknown_order", C_FORWARDED: "forwarded_to_risk",
    C_ILLEGAL: "illegal_transitions", C_STATUS: "status_reports",
    C_RECON_MISMATCH: "reconcile_mismatches", C_RECON_OUTSTANDING: "reconcile_outstanding",
    C_QUERIES_SENT: "queries_sent", C_UNHELD_INTENTS: "unheld_intents",
    C_RECON_UNANSWERED: "reconcile_unanswered", C_GENERATED: "generated_reports",
    C_EXEC_CONFLICT: "exec_id_conflicts", C_VENUE_STP_EXPIRED: "venue_stp_expired",
    C_VENUE_STP_DECREMENTED: "venue_stp_decremented", C_RECON_ADOPTED: "reconcile_adopted",
    C_BROKEN_FILLS: "broken_fills",
}  # fmt: skip

I_NEXT_ORDER_ID = 0
I_NEXT_ALIAS = 1

# reasons as plain ints (numba unifies them with 0)
R_INVALID_QTY = int(Code.INVALID_QTY)
R_MALFORMED = int(Code.INTERNAL_ERROR)  # no client order id, or no side: a bug upstream
R_UNKNOWN_INSTRUMENT = int(Code.UNKNOWN_INSTRUMENT)
R_DUPLICATE_ORDER = int(Code.DUPLICATE_ORDER)
R_MAX_OPEN_ORDERS = int(Code.MAX_OPEN_ORDERS)
R_SELF_TRADE = int(Code.SELF_TRADE)
R_RECONCILE_MISMATCH = int(Code.RECONCILE_MISMATCH)

#: the OMS state a kernel takes as one argument (every array preallocated in setup)
Oms = namedtuple(
    "Oms",
    "table illegal ctr ids book seen execs exec_conflicts policy needs_operator "
    "plan_makers plan_actions plan_amounts zero_order zero_exec stp_where stp_mode stp_group",
)


def oms_new(
    *,
    max_open_orders: int = 4096,
    n_instruments: int = 1024,
    seen_capacity: int = 1 << 16,
    exec_capacity: int = 1 << 16,
    stp_max_makers: int = MAX_STP_MAKERS,
    first_order_id: int = 1,
) -> Oms:
    """Preallocate the OMS state: STP at the venue, every strategy's orders with stp_mode 0
    (the venue's default) in group 0; guard policy CancelNew (used with ``stp_where``
    STP_AT_CLIENT)."""
    if not 1 <= stp_max_makers <= MAX_STP_MAKERS:
        raise ValueError(f"stp_max_makers {stp_max_makers} outside 1 .. {MAX_STP_MAKERS}")
    ids = np.zeros(4, np.uint64)
    ids[I_NEXT_ORDER_ID] = max(1, int(first_order_id))
    ids[I_NEXT_ALIAS] = 1
    return Oms(
        TABLE,
        np.zeros(len(EVENT_NAMES), np.int64),
        np.zeros(N_CTR, np.int64),
        ids,
        book_new(max_open_orders, n_instruments),
        lru_new(seen_capacity),
        lru_new(exec_capacity),
        lru_new(EXEC_CONFLICT_CAPACITY),
        np.zeros(1 << 16, np.int8),
        np.zeros(n_instruments, np.int64),
        np.zeros(stp_max_makers, np.int64),
        np.zeros(stp_max_makers, np.int8),
        np.zeros(stp_max_makers, np.int64),
        np.zeros(1, ORDER),
        np.zeros(1, EXEC_REPORT),
        np.zeros(1, np.int64),  # stp_where: STP_AT_*
        np.zeros(1 << 16, np.uint8),  # stp_mode per strategy: what a NEW carries
        np.zeros(1, np.uint32),  # stp_group of every order
    )
