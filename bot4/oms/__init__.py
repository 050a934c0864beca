"""Order management: the orders stage's (``bot4.stages.orders``) state and kernels.

Modules, one idea each:

* ``states`` — the order state machine as a transition table, ``transition`` kernels
* ``lru``    — bounded LRU map of u64 keys (seen client order ids, exec ids, order index)
* ``book``   — our own open orders by instrument / side / price / time
* ``stp_guard`` — the client-side, pre-trade self-trade prevention guard (for venues
  without STP; the simulated venue applies the exchanges' STP at match time)
* ``recovery`` — what a restarted OMS had done: rebuilt from the journal and its rings
* ``reconcile`` — the rule for the venue's answers to a restarted OMS's status queries
* ``state``   — ``Oms``, the one state object the OMS kernels take (``oms_new``), its
  counters, id words and reasons
* ``from_risk`` — the per-record work of input 0: ``orders_kernel`` (risk's orders),
  ``mark_cancel_all``
* ``from_venue`` — the per-record work of input 1: ``execs_kernel`` (the venue's reports,
  busts, restart reconciliation's status answers)
* ``emit``    — records sent outside an input batch: ``emit_queries``, ``emit_cancel_all``
* ``helpers`` — what those share: the record writers

Everything is preallocated numpy arrays grouped in namedtuples; the per-record work is
numba kernels. All of it is owned by the one orders stage process.
"""

from bot4.oms.book import OPEN_ORDER, Book, book_new
from bot4.oms.lru import Lru, lru_new
from bot4.oms.states import TABLE, transition, transition_counted
from bot4.oms.stp_guard import guard_plan, parse_guard_policy

__all__ = [
    "OPEN_ORDER",
    "TABLE",
    "Book",
    "Lru",
    "book_new",
    "guard_plan",
    "lru_new",
    "parse_guard_policy",
    "transition",
    "transition_counted",
]
