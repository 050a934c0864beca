"""The hot path group's compiled code, and the venue's, count no references
(bot4.nbkit.hot).

Every numba function the compiled cycle reaches (``hotloop.hot_cycle`` and, through it,
the member steps, the stage kernels and their helpers, every wiring's depth steps
included) is compiled with ``_nrt=False``: one callee with numba's reference counting
puts its ``NRT_incref`` / ``NRT_decref`` calls back on every array it receives, which is
what made the in-group hops about twice as long (docs/hotpath.md). Functions inlined at
numba's IR level (``inline="always"``) are lowered in their caller and take its flags;
their own callees are still checked. The venue's entry kernels (market data, orders,
releases) are held to the same rule: they run per record at every md rate (the venue's
quote path 0.62x its time without counting). The walk is static (each function's source, names
resolved in its module), so it needs no compiled code.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from numba.core.dispatcher import Dispatcher

from bot4.stages import hotloop
from bot4.venue import feed, orders, reports

ROOTS = (
    hotloop.hot_cycle,
    feed.venue_md_kernel,
    feed.venue_md_event_time_kernel,
    feed.venue_md_release_kernel,
    orders.venue_order_kernel,
    reports.venue_release_kernel,
)


def _callees(d: Dispatcher) -> set[Dispatcher]:
    fn = d.py_func
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        chain, f = [], node.func
        while isinstance(f, ast.Attribute):
            chain.append(f.attr)
            f = f.value
        if not isinstance(f, ast.Name) or f.id not in fn.__globals__:
            continue
        obj = fn.__globals__[f.id]
        for attr in reversed(chain):
            obj = getattr(obj, attr, None)
        if isinstance(obj, Dispatcher):
            out.add(obj)
    return out


def _reached() -> dict[str, Dispatcher]:
    seen: dict[str, Dispatcher] = {}
    todo = list(ROOTS)
    while todo:
        d = todo.pop()
        name = f"{d.py_func.__module__}.{d.py_func.__qualname__}"
        if name in seen:
            continue
        seen[name] = d
        todo.extend(_callees(d))
    return seen


def test_the_walk_reaches_the_members_kernels():
    names = set(_reached())
    for must in (
        "bot4.stages.hotsteps.orders_step",
        "bot4.oms.from_risk.orders_kernel",
        "bot4.oms.from_venue.execs_kernel",
        "bot4.risk.checks.check_intents",
        "bot4.signals.features.signals_kernel",
        "bot4.signals.features.depth_kernel",
        "bot4.shm.ring_ops.producer_claim",
        "bot4.venue.feed._md_batch",
        "bot4.venue.match._take",
    ):
        assert must in names, f"the static walk lost {must}"


def test_every_function_the_hot_kernels_reach_counts_no_references():
    counted = [
        name
        for name, d in _reached().items()
        if d.targetoptions.get("inline", "never") != "always"
        and d.targetoptions.get("_nrt", True) is not False
    ]
    assert not counted, (
        "compiled with numba's reference counting, reached from a hot kernel (decorate with "
        f"bot4.nbkit.hot / inner(_nrt=False)): {sorted(counted)}"
    )
