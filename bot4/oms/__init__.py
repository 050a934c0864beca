"""Order management: the pieces the orders stage (``bot4.stages.orders``) is built from.

Modules, one idea each:

* ``states`` — the order state machine as a transition table, ``transition`` kernels
* ``lru``    — bounded LRU map of u64 keys (seen client order ids, exec ids, order index)
* ``book``   — our own open orders by instrument / side / price / time
* ``stp``    — self-trade prevention: plan what an incoming order does to our makers

Everything is preallocated numpy arrays grouped in namedtuples; the per-record work is
numba kernels. All of it is owned by the one orders stage process.
"""

from bot4.oms.book import OPEN_ORDER, Book, book_new
from bot4.oms.lru import Lru, lru_new
from bot4.oms.states import TABLE, transition, transition_counted
from bot4.oms.stp import parse_policy, stp_plan

__all__ = [
    "OPEN_ORDER",
    "TABLE",
    "Book",
    "Lru",
    "book_new",
    "lru_new",
    "parse_policy",
    "stp_plan",
    "transition",
    "transition_counted",
]
