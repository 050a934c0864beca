"""The order state machine as data: a transition table indexed ``[state, event]``.

``TABLE[state, event]`` is the next state, or ``-1`` when the event is not allowed in that
state. An illegal event is refused (the order keeps its state) and counted per event type
(:func:`transition_counted`). The table is built once at import from ``LEGAL`` below, the
one place the rules are written; tests compare every cell against their own copy.

States and the ``OS_*`` status reported for them (``EXEC_REPORT.status``):

    id  state                      OS_* reported         meaning
    0   ST_NONE                    OS_NONE               free slot / unknown order
    1   ST_PENDING                 OS_PENDING_NEW        sent to the venue, no answer yet
    2   ST_ACKNOWLEDGED            OS_NEW                working at the venue, nothing filled
    3   ST_PARTIALLY_FILLED        OS_PARTIALLY_FILLED   working, part filled
    4   ST_FILLED                  OS_FILLED             terminal
    5   ST_CANCEL_PENDING          OS_PENDING_CANCEL     cancel sent, nothing filled
    6   ST_CANCELLED               OS_CANCELLED          terminal
    7   ST_REPLACE_PENDING         OS_PENDING_REPLACE    replace sent, nothing filled
    8   ST_REJECTED                OS_REJECTED           terminal
    9   ST_EXPIRED                 OS_EXPIRED            terminal (time in force, the venue's
                                                         STP, or our pre-trade STP guard)
    10  ST_NEW                     OS_PENDING_NEW        created by the OMS, not yet sent
    11  ST_CANCEL_PENDING_PARTIAL  OS_PENDING_CANCEL     cancel sent, part filled
    12  ST_REPLACE_PENDING_PARTIAL OS_PENDING_REPLACE    replace sent, part filled

State ids 0-9 equal the ``OS_*`` constant of the same status; ``ST_NEW`` (no ``OS_*``:
the venue never sees it) and the two ``*_PARTIAL`` pending states are ours. The partial
variants exist so that the table alone knows where a refused cancel / replace returns
(``CANCEL_REJECTED``: to ACKNOWLEDGED or PARTIALLY_FILLED) without a remembered state.

Events: ``EV_SEND``, ``EV_ACK``, ``EV_PARTIAL_FILL``, ``EV_FILL``, ``EV_CANCEL_REQUEST``,
``EV_CANCELLED``, ``EV_REJECT``, ``EV_EXPIRE``, ``EV_CANCEL_REJECTED``,
``EV_REPLACE_REQUEST``, ``EV_REPLACED``, ``EV_STP_DECREMENT``. Requests (send, cancel,
replace) are ours; the
others come from venue execution reports (``EVENT_OF_EXEC``); ``EXEC_STATUS`` is not an
event (reconciliation compares it, see ``bot4.stages.orders_restart``).

Rules worth stating:

* one request in flight per order: a cancel or replace on an order with a cancel or
  replace pending is illegal; a cancel of a sent but unacknowledged order is allowed
  (the venue handles the NEW first), a replace of one is not;
* a fill before the acknowledgement is an implicit acknowledgement (PENDING -> fills);
* the venue may cancel or expire a working order unasked (kill switch, time in force,
  self-trade prevention: ``EXEC_STP_EXPIRED`` is an expiry);
* a self-trade prevention decrement (``EXEC_STP_DECREMENTED``: the venue took
  ``prevented_qty`` off a working order, nothing filled) leaves the state as it is, pending
  requests included; on an unacknowledged order it is an implicit acknowledgement;
* ``CANCEL_REJECTED`` on a terminal order is legal and changes nothing: it is the normal
  answer to a cancel that crossed the fill / cancel / expiry / reject on the wire.
"""

from __future__ import annotations

import numpy as np

from bot4.nbkit.hot import hot
from bot4.records import (
    EXEC_ACK,
    EXEC_CANCEL_REJECTED,
    EXEC_CANCELLED,
    EXEC_EXPIRED,
    EXEC_FILL,
    EXEC_PARTIAL_FILL,
    EXEC_REJECTED,
    EXEC_REPLACED,
    EXEC_STP_DECREMENTED,
    EXEC_STP_EXPIRED,
    OS_CANCELLED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_NONE,
    OS_PARTIALLY_FILLED,
    OS_PENDING_CANCEL,
    OS_PENDING_NEW,
    OS_PENDING_REPLACE,
    OS_REJECTED,
)

__all__ = [
    "EVENT_NAMES",
    "EVENT_OF_EXEC",
    "IS_OPEN",
    "IS_TERMINAL",
    "LEGAL",
    "N_EVENTS",
    "N_STATES",
    "STATE_NAMES",
    "STATUS_OF",
    "TABLE",
    "build_table",
    "state_from_status",
    "transition",
    "transition_counted",
]

# --- states (uint8); 0-9 equal the OS_* of the same status ----------------------------------
ST_NONE = OS_NONE
ST_PENDING = OS_PENDING_NEW
ST_ACKNOWLEDGED = OS_NEW
ST_PARTIALLY_FILLED = OS_PARTIALLY_FILLED
ST_FILLED = OS_FILLED
ST_CANCEL_PENDING = OS_PENDING_CANCEL
ST_CANCELLED = OS_CANCELLED
ST_REPLACE_PENDING = OS_PENDING_REPLACE
ST_REJECTED = OS_REJECTED
ST_EXPIRED = OS_EXPIRED
ST_NEW = 10
ST_CANCEL_PENDING_PARTIAL = 11
ST_REPLACE_PENDING_PARTIAL = 12
N_STATES = 13

STATE_NAMES = (
    "NONE", "PENDING", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCEL_PENDING",
    "CANCELLED", "REPLACE_PENDING", "REJECTED", "EXPIRED", "NEW", "CANCEL_PENDING_PARTIAL",
    "REPLACE_PENDING_PARTIAL",
)  # fmt: skip

# --- events -----------------------------------------------------------------------------------
EV_SEND = 0
EV_ACK = 1
EV_PARTIAL_FILL = 2
EV_FILL = 3
EV_CANCEL_REQUEST = 4
EV_CANCELLED = 5
EV_REJECT = 6
EV_EXPIRE = 7
EV_CANCEL_REJECTED = 8
EV_REPLACE_REQUEST = 9
EV_REPLACED = 10
EV_STP_DECREMENT = 11  # the venue's self-trade prevention reduced a working order
N_EVENTS = 12

EVENT_NAMES = (
    "SEND", "ACK", "PARTIAL_FILL", "FILL", "CANCEL_REQUEST", "CANCELLED", "REJECT", "EXPIRE",
    "CANCEL_REJECTED", "REPLACE_REQUEST", "REPLACED", "STP_DECREMENT",
)  # fmt: skip

_NEW, _PEN, _ACK, _PF = ST_NEW, ST_PENDING, ST_ACKNOWLEDGED, ST_PARTIALLY_FILLED
_CP, _CPP, _RP, _RPP = (
    ST_CANCEL_PENDING,
    ST_CANCEL_PENDING_PARTIAL,
    ST_REPLACE_PENDING,
    ST_REPLACE_PENDING_PARTIAL,
)
_FIL, _CAN, _REJ, _EXP = ST_FILLED, ST_CANCELLED, ST_REJECTED, ST_EXPIRED

#: every legal (state, event) -> next state; everything else is illegal
LEGAL: dict[tuple[int, int], int] = {
    (_NEW, EV_SEND): _PEN,
    (_NEW, EV_REJECT): _REJ,  # refused by the OMS before sending (invalid, book full)
    (_NEW, EV_EXPIRE): _EXP,  # self-trade prevention expired it before sending
    (_PEN, EV_ACK): _ACK,
    (_PEN, EV_PARTIAL_FILL): _PF,
    (_PEN, EV_FILL): _FIL,
    (_PEN, EV_CANCEL_REQUEST): _CP,
    (_PEN, EV_REJECT): _REJ,
    (_PEN, EV_EXPIRE): _EXP,  # IOC / FOK with nothing to trade against
    (_ACK, EV_PARTIAL_FILL): _PF,
    (_ACK, EV_FILL): _FIL,
    (_ACK, EV_CANCEL_REQUEST): _CP,
    (_ACK, EV_CANCELLED): _CAN,
    (_ACK, EV_EXPIRE): _EXP,
    (_ACK, EV_REPLACE_REQUEST): _RP,
    (_PF, EV_PARTIAL_FILL): _PF,
    (_PF, EV_FILL): _FIL,
    (_PF, EV_CANCEL_REQUEST): _CPP,
    (_PF, EV_CANCELLED): _CAN,
    (_PF, EV_EXPIRE): _EXP,
    (_PF, EV_REPLACE_REQUEST): _RPP,
    (_CP, EV_ACK): _CP,  # the NEW's ack, when the cancel was sent before it
    (_CP, EV_PARTIAL_FILL): _CPP,
    (_CP, EV_FILL): _FIL,
    (_CP, EV_CANCELLED): _CAN,
    (_CP, EV_REJECT): _REJ,  # the NEW was rejected; the cancel will be too
    (_CP, EV_EXPIRE): _EXP,
    (_CP, EV_CANCEL_REJECTED): _ACK,
    (_CPP, EV_PARTIAL_FILL): _CPP,
    (_CPP, EV_FILL): _FIL,
    (_CPP, EV_CANCELLED): _CAN,
    (_CPP, EV_EXPIRE): _EXP,
    (_CPP, EV_CANCEL_REJECTED): _PF,
    (_RP, EV_PARTIAL_FILL): _RPP,
    (_RP, EV_FILL): _FIL,
    (_RP, EV_CANCELLED): _CAN,
    (_RP, EV_EXPIRE): _EXP,
    (_RP, EV_CANCEL_REJECTED): _ACK,
    (_RP, EV_REPLACED): _ACK,
    (_RPP, EV_PARTIAL_FILL): _RPP,
    (_RPP, EV_FILL): _FIL,
    (_RPP, EV_CANCELLED): _CAN,
    (_RPP, EV_EXPIRE): _EXP,
    (_RPP, EV_CANCEL_REJECTED): _PF,
    (_RPP, EV_REPLACED): _PF,
    (_FIL, EV_CANCEL_REJECTED): _FIL,
    (_CAN, EV_CANCEL_REJECTED): _CAN,
    (_REJ, EV_CANCEL_REJECTED): _REJ,
    (_EXP, EV_CANCEL_REJECTED): _EXP,
    # the venue's STP took shares off a working order: state unchanged (PENDING: implicit ack)
    (_PEN, EV_STP_DECREMENT): _ACK,
    (_ACK, EV_STP_DECREMENT): _ACK,
    (_PF, EV_STP_DECREMENT): _PF,
    (_CP, EV_STP_DECREMENT): _CP,
    (_CPP, EV_STP_DECREMENT): _CPP,
    (_RP, EV_STP_DECREMENT): _RP,
    (_RPP, EV_STP_DECREMENT): _RPP,
}


def build_table(legal: dict[tuple[int, int], int] = LEGAL) -> np.ndarray:
    """int8 ``[N_STATES, N_EVENTS]`` table: next state, -1 where illegal."""
    t = np.full((N_STATES, N_EVENTS), -1, np.int8)
    for (s, e), nxt in legal.items():
        t[s, e] = nxt
    t.setflags(write=False)
    return t


TABLE = build_table()

#: terminal states: the order is closed, no fill can follow
IS_TERMINAL = np.zeros(N_STATES, np.bool_)
IS_TERMINAL[[ST_FILLED, ST_CANCELLED, ST_REJECTED, ST_EXPIRED]] = True
#: open states: the order is (or may be) working at the venue
IS_OPEN = np.ones(N_STATES, np.bool_)
IS_OPEN[[ST_NONE, ST_NEW]] = False
IS_OPEN[IS_TERMINAL] = False

#: EXEC_REPORT.status for each state
STATUS_OF = np.array(
    [
        OS_NONE, OS_PENDING_NEW, OS_NEW, OS_PARTIALLY_FILLED, OS_FILLED, OS_PENDING_CANCEL,
        OS_CANCELLED, OS_PENDING_REPLACE, OS_REJECTED, OS_EXPIRED, OS_PENDING_NEW,
        OS_PENDING_CANCEL, OS_PENDING_REPLACE,
    ],
    np.uint8,
)  # fmt: skip

#: event of each EXEC_* (index exec_type); -1: not a state event (NONE, STATUS, unknown)
EVENT_OF_EXEC = np.full(16, -1, np.int8)
EVENT_OF_EXEC[EXEC_ACK] = EV_ACK
EVENT_OF_EXEC[EXEC_PARTIAL_FILL] = EV_PARTIAL_FILL
EVENT_OF_EXEC[EXEC_FILL] = EV_FILL
EVENT_OF_EXEC[EXEC_CANCELLED] = EV_CANCELLED
EVENT_OF_EXEC[EXEC_REJECTED] = EV_REJECT
EVENT_OF_EXEC[EXEC_EXPIRED] = EV_EXPIRE
EVENT_OF_EXEC[EXEC_REPLACED] = EV_REPLACED
EVENT_OF_EXEC[EXEC_CANCEL_REJECTED] = EV_CANCEL_REJECTED
EVENT_OF_EXEC[EXEC_STP_EXPIRED] = EV_EXPIRE
EVENT_OF_EXEC[EXEC_STP_DECREMENTED] = EV_STP_DECREMENT

for _a in (TABLE, IS_TERMINAL, IS_OPEN, STATUS_OF, EVENT_OF_EXEC):
    _a.setflags(write=False)


@hot
def transition(table, state, event):
    """Next state of ``state`` on ``event``, or -1 if the event is illegal there."""
    if state < 0 or state >= table.shape[0] or event < 0 or event >= table.shape[1]:
        return -1
    return np.int64(table[state, event])


@hot
def transition_counted(table, state, event, illegal):
    """:func:`transition`, counting a refusal in ``illegal[event]`` (int64 per event)."""
    nxt = transition(table, state, event)
    if nxt < 0 and 0 <= event < illegal.shape[0]:
        illegal[event] += 1
    return nxt


@hot
def state_from_status(status, cum_qty):
    """The state a venue status (``OS_*``) stands for, -1 for ``OS_NONE`` / unknown.

    The pending statuses map to their ``*_PARTIAL`` variant when ``cum_qty > 0``."""
    if status == OS_PENDING_CANCEL:
        return ST_CANCEL_PENDING_PARTIAL if cum_qty > 0 else ST_CANCEL_PENDING
    if status == OS_PENDING_REPLACE:
        return ST_REPLACE_PENDING_PARTIAL if cum_qty > 0 else ST_REPLACE_PENDING
    if status == OS_NONE or status > OS_EXPIRED:
        return -1
    return np.int64(status)
