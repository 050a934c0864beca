"""The operator's commands on a running instance: ``bot4 stats`` (read-only view),
``bot4 breaker`` and ``bot4 halt`` / ``reduce`` / ``resume`` (actions, each recorded for
persistence before it is applied, under the kernel's identity of the caller:
docs/security.md).
"""

from __future__ import annotations

import sys
import time

import orjson

from bot4.cli_common import _instance_of, _load, _usage


def cmd_stats(args) -> int:
    from bot4.ops_stats import snapshot, to_json
    from bot4.ops_stats_view import render

    names = group_of = None
    inst = args.instance
    if args.topology or not inst:
        t = _load(args.topology, args.instance)
        inst = t.instance
        names = [s.name for s in t.stages]
        group_of = {m: g.name for g in t.groups for m in g.members}
    first = snapshot(inst, names, group_of)
    if not first["exists"]:
        print(f"bot4: error: instance {inst} has no segments (not running?)", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(to_json(snapshot(inst, names, group_of)) + b"\n")
        return 0
    prev = None
    tty = sys.stdout.isatty()  # piped: no highlighting, no screen clearing, a blank line between
    if args.once and args.interval > 0:  # rates and the last interval need two snapshots
        prev = first
        time.sleep(args.interval)
    while True:
        snap = snapshot(inst, names, group_of)
        if snap["exists"]:
            text = render(snap, prev, names, color=tty)
        elif args.once:
            print(f"bot4: error: instance {inst} stopped (no segments)", file=sys.stderr)
            return 1
        else:  # stopped since: say so, and keep watching for its next start (systemd restarts)
            text = f"instance {inst} has no segments (stopped); waiting for it to start again"
            snap = None
        if args.once:
            print(text)
            return 0
        print(("\033[H\033[J" if tty else "\n") + text, flush=True)
        prev = snap
        time.sleep(args.interval)


def _audited(inst, action, target_kind, target, old, new, note, *, escalates: bool, apply):
    """Record an operator action, then apply it: the OPERATOR_ACTION (``who`` from the
    kernel, ``old`` as read just before) is published in the operator log first, so no
    change is applied without its record already there for persistence. If the record
    cannot be written (no operator log, log full because persistence is not reading), a
    change towards safety (``escalates``: halt, reduce, breaker trip) is still applied with
    a warning — a kill switch never waits for bookkeeping — and any other is refused.
    Returns what ``apply()`` returns."""
    from bot4.records.errors import Bot4Error
    from bot4.shm.operator_log import OperatorLog

    try:
        with OperatorLog(inst) as oplog:
            oplog.append(action, target_kind, target, old, new, 0, note)
    except Bot4Error as exc:
        if not escalates:
            raise Bot4Error(
                f"not applied: its audit record could not be written ({exc})", exc.code
            ) from exc
        print(
            f"bot4: warning: applied without an audit record in the operator log: {exc}",
            file=sys.stderr,
        )
    return apply()


def cmd_breaker(args) -> int:
    from bot4.records import OP_BREAKER_RESET, OP_BREAKER_TRIP, TARGET_BREAKER
    from bot4.shm.breakers import CLOSED, OPEN, STATE_NAMES, Breakers

    inst = _instance_of(args)
    if args.action == "ls":
        with Breakers(inst, readonly=True) as brk:
            rows = brk.snapshot()
        if args.json:
            for r in rows:
                r["config"] = vars(r["config"])
            sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
            return 0
        print(
            f"{'#':>2} {'name':<16}{'state':<11}{'window':>14}{'probes':>8}  {'trips':>5}{'denied':>9}"
        )
        for r in rows:
            state = r["state"] + ("*" if r["forced"] else "")
            window = f"{r['window_failures']}/{r['window_calls']}"
            print(
                f"{r['index']:>2} {r['name']:<16}{state:<11}{window:>14}"
                f"{r['probes_in_flight']:>8}  {r['trips']:>5}{r['denied']:>9}  {r['probe_results']}"
            )
        return 0
    if args.name is None:
        _usage(f"breaker {args.action}: which breaker? (name or index)")
    trip = args.action == "trip"
    by_name = {v: k for k, v in STATE_NAMES.items()}
    with Breakers(inst) as brk:
        i = brk.index_of(args.name)
        before = by_name[brk.snapshot()[i]["state"]]
        old = _audited(
            inst,
            OP_BREAKER_TRIP if trip else OP_BREAKER_RESET,
            TARGET_BREAKER,
            i,
            before,
            OPEN if trip else CLOSED,
            args.note,
            escalates=trip,
            apply=lambda: brk.trip(i) if trip else brk.reset(i),
        )
        new = brk.snapshot()[i]
    print(f"breaker {i} {new['name']}: {STATE_NAMES[old]} -> {new['state']}")
    return 0


def cmd_trading(args) -> int:
    from bot4.records import (
        DEFAULT_INSTRUMENTS,
        OP_HALT,
        OP_REDUCE,
        OP_RESUME,
        TARGET_GLOBAL,
        TARGET_INSTRUMENT,
        load_instruments,
    )
    from bot4.shm.trading_state import (
        ACTIVE,
        HALTED,
        REDUCING,
        SRC_OPERATOR,
        STATE_NAMES,
        TradingState,
    )

    state, action = {
        "halt": (HALTED, OP_HALT),
        "reduce": (REDUCING, OP_REDUCE),
        "resume": (ACTIVE, OP_RESUME),
    }[args.cmd]
    inst = _instance_of(args)
    target, label = 0, "all instruments"
    if args.instrument is not None:
        table = load_instruments(args.instruments) if args.instruments else DEFAULT_INSTRUMENTS
        target = int(args.instrument) if args.instrument.isdigit() else table.id_of(args.instrument)
        label = f"instrument {target}" + (
            f" ({table.symbol_of(target)})" if target in table else ""
        )
    with TradingState(inst) as ts:
        before = ts.get(target)  # also refuses an unknown instrument before anything is recorded
        old = _audited(
            inst,
            action,
            TARGET_INSTRUMENT if target else TARGET_GLOBAL,
            target,
            before,
            state,
            args.note,
            escalates=state != ACTIVE,
            apply=lambda: ts.set(target, state, 0, SRC_OPERATOR),
        )
    print(f"{label}: {STATE_NAMES[old]} -> {STATE_NAMES[state]}")
    if state == HALTED:
        print("the risk stage cancels resting orders (CANCEL_ALL) with its next batch")
    return 0


def add_operator_parsers(sub) -> None:
    b = sub.add_parser("breaker", help="trip, reset or list the instance's circuit breakers")
    b.add_argument("action", choices=["trip", "reset", "ls"])
    b.add_argument("name", nargs="?", help="breaker name or index (trip, reset)")
    b.add_argument("--topology")
    b.add_argument("--instance")
    b.add_argument("--note", default="", help="free text for the audit record (40 bytes)")
    b.add_argument("--json", action="store_true", help="ls: one JSON document")
    b.set_defaults(fn=cmd_breaker)
    for name, text in (
        ("halt", "HALT trading (all, or one instrument): no orders; resting ones cancelled"),
        ("reduce", "REDUCING (all, or one instrument): only position-reducing orders"),
        ("resume", "back to ACTIVE (all, or one instrument)"),
    ):
        h = sub.add_parser(name, help=text)
        h.add_argument("instrument", nargs="?", help="symbol or id (default: every instrument)")
        h.add_argument("--instruments", help="instrument TOML for symbols (default: built-in)")
        h.add_argument("--topology")
        h.add_argument("--instance")
        h.add_argument("--note", default="", help="free text for the audit record (40 bytes)")
        h.set_defaults(fn=cmd_trading)
