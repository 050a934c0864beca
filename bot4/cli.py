"""The ``bot4`` command.

Subcommands: ``run`` (the whole pipeline), ``stage`` (one stage, for systemd), ``shm``
(segment lifecycle), ``stats`` (read-only operator view), ``calibrate`` (fit the signals
stage's parameters), ``warm`` (compile and cache every numba kernel once), ``breaker``
and ``halt`` / ``reduce`` / ``resume`` (operator actions, each recorded for persistence
before it is applied, under the kernel's identity of the caller: docs/security.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import NoReturn

import orjson

from bot4.cli_support import (
    EXIT_USAGE,
    add_log_options,
    run_parsed,
)

_LOG = logging.getLogger("bot4")


def _usage(message: str) -> NoReturn:
    """A bad combination of arguments argparse cannot express: one line, exit 2."""
    print(f"bot4: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _load(path, instance, *, validate: bool = False):
    """The topology; ``validate``: also check the files its stages' params name (the
    commands that start stages do, before any segment exists)."""
    from bot4.pipeline.topology import load_topology, validate_topology

    t = load_topology(path, instance=instance)
    if validate:
        _say_notes(validate_topology(t))
    return t


def _say_notes(notes: list[str]) -> None:
    """What the topology's checks noted (an input loaded with bad rows kept out: the same
    ``bad input:`` line ``bot4 replay`` prints), once, before anything starts."""
    for note in notes:
        print(f"bot4: warning: {note}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from bot4.pipeline.segments import check_not_running
    from bot4.pipeline.supervisor import Supervisor
    from bot4.pipeline.topology import validate_topology

    t = _load(args.topology, args.instance)
    notes = validate_topology(t)  # bad input: said now, counted in the report at the end
    _say_notes(notes)
    check_not_running(t.instance, [s.name for s in t.stages])  # before starting a database
    server = _database_for(t, args)
    try:
        sup = Supervisor(
            t,
            keep_shm=args.keep_shm,
            duration=args.duration,
            live=None if not args.quiet else False,
            max_restarts=args.max_restarts,
            max_backoff=args.max_backoff,
            drain_timeout=args.drain_timeout,
            ignore_stops_after=True,
        )
        code = sup.run()
    finally:
        if server is not None and server.started:
            server.stop()  # we started it: the run's data is in it and in the journal
    report = sup.final
    report["bad_input"] = notes.bad_input  # stage -> rows kept out by reason, as replay's
    if args.report:
        with open(args.report, "wb") as f:
            f.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"{'stage':<14}{'in':>12}{'out':>12}{'restarts':>10}  state")
    for name, s in report.get("stages", {}).items():
        print(
            f"{name:<14}{s['records_in']:>12,}{s['records_out']:>12,}{s['restarts']:>10}  {s['state']}"
        )
    if report.get("halted"):
        _LOG.error("%s", report["halted"])  # again, under the table: the last word
    _trading_report(t, report, args)
    return code


def _database_for(t, args):
    """Point the persistence stages at PostgreSQL: ``--dsn``/``--ledger-dsn``, else
    ``$BOT4_DSN``/``$BOT4_LEDGER_DSN``, else the embedded server under
    ``$BOT4_DATA_DIR/pg`` (started here, stopped when the run ends). The stage processes
    inherit the DSNs through the environment. Returns the embedded server or None."""
    import os

    from bot4.stages import KINDS

    wants = [s for s in t.stages if KINDS[s.kind].uses_database(s.params)]
    if args.no_db or not wants:
        if args.no_db:
            os.environ.pop("BOT4_DSN", None)
            os.environ.pop("BOT4_LEDGER_DSN", None)
            for s in wants:
                s.params["database"] = False
        return None
    from bot4.db.server import resolve_dsns

    dsn, ledger, server = resolve_dsns(args.dsn, args.ledger_dsn)
    os.environ["BOT4_DSN"] = dsn
    if ledger:
        os.environ["BOT4_LEDGER_DSN"] = ledger
    if server is not None:
        _LOG.info("embedded PostgreSQL under %s", server.data_dir)
        if server.adopted_from is not None:
            _LOG.warning(
                "adopted the server left running by a dead run (%s): this run stops it when "
                "it ends",
                server.adopted_from,
            )
    return server


def _trading_report(t, final: dict, args) -> None:
    """End ``bot4 run`` with the replay harness's report of what this session traded, from
    the persistence stage's journal (JSON + HTML next to the journal)."""
    from bot4.paths import data_dir
    from bot4.records.errors import Bot4Error
    from bot4.replay.report import report_from_journal
    from bot4.stages import KINDS

    journals = [KINDS[s.kind].journal_dir(s.params, t.instance) for s in t.stages]
    journals = [d for d in journals if d is not None]
    if not journals or "session" not in final:
        return
    journal = journals[0]
    if not journal.is_dir():
        return
    try:
        # one equity point a second: a run lasts seconds to hours, not days
        rep = report_from_journal(journal, session=final["session"], interval_ns=1_000_000_000)
    except Bot4Error as exc:
        print(f"bot4: warning: no trading report: {exc}", file=sys.stderr)
        return
    out = data_dir() / "reports" / t.instance / f"session-{final['session']}"
    _json, html = rep.write(out)
    for line in rep.summary_lines():
        print(line)
    print(f"trading report: {html}")


def record_topology(args) -> dict:
    """The two-stage pipeline ``bot4 record`` runs: an md stage on the given source, its
    ticks into a persistence stage whose journal is the recording."""
    from pathlib import Path

    from bot4.paths import data_dir

    params: dict = {"source": args.source}
    if args.source == "synthetic":
        params.update(rate=args.rate, instruments=args.instruments, seed=args.seed)
        if args.count:
            params["count"] = args.count
    else:
        if not args.path:
            _usage(f"record: --source {args.source} needs a PATH")
        params.update(path=str(Path(args.path).resolve()), speed=args.speed)
    instance = args.instance or "record"
    out = Path(args.out) if args.out else data_dir() / "recordings" / instance
    return {
        "instance": instance,
        "stage": [
            {"name": "md", "kind": "md", "core": 0, "params": params},
            {
                "name": "recorder",
                "kind": "persistence",
                "core": 1,
                "params": {"dir": str(out.resolve()), "fsync": "batch"},
            },
        ],
        "ring": [
            {
                "name": "ticks",
                "from": "md",
                "to": "recorder",
                "type": "market_data",
                "capacity": 1 << 16,
            }
        ],
    }


def cmd_record(args) -> int:
    from bot4.journal import JournalReader
    from bot4.pipeline.supervisor import Supervisor
    from bot4.pipeline.topology import parse_topology, validate_topology

    doc = record_topology(args)
    out = doc["stage"][1]["params"]["dir"]
    t = parse_topology(doc, "bot4 record")
    _say_notes(validate_topology(t))
    sup = Supervisor(
        t,
        duration=args.duration,
        live=None if not args.quiet else False,
        ignore_stops_after=True,
    )
    code = sup.run()
    if sup.final.get("halted"):
        _LOG.error("%s", sup.final["halted"])
    rep = JournalReader(out).verify()
    print(
        f"recorded {sum(rep.records.values()):,} market data records in {rep.frames} frames: {out}"
    )
    print(f'replay with: bot4 run TOPOLOGY  (md params: source = "journal", path = "{out}")')
    return code


def cmd_stage(args) -> int:
    from bot4.records.errors import Bot4Error, Code
    from bot4.stages.entry import stage_main

    t = _load(args.topology, args.instance)
    if t.group(args.name) is None and args.name not in {s.name for s in t.stages}:
        groups = f"; groups: {', '.join(g.name for g in t.groups)}" if t.groups else ""
        raise Bot4Error(
            f"{t.source}: no stage or group named {args.name!r} "
            f"(stages: {', '.join(s.name for s in t.stages)}{groups})",
            Code.TOPOLOGY_INVALID,
        )
    return stage_main(t, args.name)


def cmd_shm(args) -> int:
    from bot4.pipeline.segments import create_segments, destroy_segments
    from bot4.shm.segment import instance_segments

    if args.action == "ls":
        inst = args.instance or _load(args.topology, None).instance
        for name in instance_segments(inst):
            print(name)
        return 0
    if args.action == "create":
        from bot4.shm import control as C

        t = _load(args.topology, args.instance, validate=True)
        for name in create_segments(t):
            print(f"created {name}")
        # no supervisor under systemd: the pipeline runs as soon as its segments exist
        cb = C.ControlBlock(t.instance)
        cb.words[C.W_PIPE_STATE] = C.PIPE_RUNNING
        cb.close()
        return 0
    from bot4.pipeline.segments import check_not_running

    inst = args.instance or _load(args.topology, None).instance
    if not args.force:
        check_not_running(inst)  # never unlink the rings under a live pipeline
    for name in destroy_segments(inst):
        print(f"unlinked {name}")
    return 0


def cmd_stats(args) -> int:
    from bot4.ops_stats import render, snapshot, to_json

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


def cmd_calibrate(args) -> int:
    from bot4.calibrate import calibrate, write_params

    t0 = time.monotonic()
    from bot4.records.errors import Bot4Error, Code

    try:
        doc = calibrate(
            args.data, source=args.source, method=args.method, mean=args.mean, symbol=args.symbol
        )
    except ValueError as exc:  # unusable input (SeriesError, too few returns): one line
        raise Bot4Error(str(exc), Code.INPUT_MISSING) from None
    write_params(doc, args.output)
    for sym, p in doc["garch"].items():
        print(
            f"{sym}: GARCH omega={p['omega']:.6g} alpha={p['alpha']:.4f} beta={p['beta']:.4f} "
            f"mu={p['mu']:.4g} loglik={p['loglik']:.2f} ({p['returns']} returns)"
        )
    print(
        f"orthogonaliser {args.method} on {doc['fitted_rows']} feature rows -> {args.output} ({time.monotonic() - t0:.1f} s)"
    )
    return 0


JOURNAL_EXIT_DAMAGED = 1  # corruption, a gap, a damaged tail: nothing past it was read
JOURNAL_EXIT_TORN = 3  # complete up to a torn tail (a crash's trace; the writer truncates it)


def cmd_journal(args) -> int:
    from pathlib import Path

    from bot4.journal import JournalCorrupt, JournalReader
    from bot4.records import RECORD_TYPES
    from bot4.records.errors import Bot4Error, Code

    if not Path(args.dir).is_dir():
        raise Bot4Error(f"{args.dir}: no such journal directory", Code.CONFIG_INVALID)
    _not_a_parent_of_journals(Path(args.dir))
    if args.action == "repair":
        return _journal_repair(args.dir)
    names = {i: n for i, n in enumerate(RECORD_TYPES, start=1)}
    reader = JournalReader(args.dir)
    if args.action == "verify":
        rep = reader.verify()
        print(f"files {rep.files}  frames {rep.frames}  bytes {rep.bytes:,}")
        for name, n in rep.records.items():
            if n:
                print(f"  {name:<16}{n:>12,}")
        if rep.corruption is not None:
            print(f"bot4: error: {rep.corruption}", file=sys.stderr)
            return JOURNAL_EXIT_DAMAGED
        if rep.torn_tail is not None:
            print(f"bot4: error: {rep.torn_tail.describe()}", file=sys.stderr)
            return JOURNAL_EXIT_TORN
        return 0
    try:
        limited = _journal_cat(reader, names, args)
    except JournalCorrupt as exc:
        sys.stdout.flush()
        print(f"bot4: error: {exc}", file=sys.stderr)
        return JOURNAL_EXIT_DAMAGED
    if reader.torn_tail is not None and not limited:
        sys.stdout.flush()
        print(f"bot4: error: {reader.torn_tail.describe()}", file=sys.stderr)
        return JOURNAL_EXIT_TORN
    return 0


def _not_a_parent_of_journals(d) -> None:
    """A directory with no journal file whose subdirectories hold journals (the data
    directory's ``journal/``, one journal per instance) is a wrong path, not an empty
    journal: one line naming them, instead of ``files 0`` and exit 0."""
    from bot4.journal.core import list_segments
    from bot4.records.errors import Bot4Error, Code

    def holds_journal(p) -> bool:
        try:
            return p.is_dir() and bool(list_segments(p))
        except OSError:  # unreadable: not ours to judge here
            return False

    if holds_journal(d):
        return
    try:
        inner = sorted(c.name for c in d.iterdir() if holds_journal(c))
    except OSError:
        return
    if inner:
        raise Bot4Error(
            f"{d}: no journal here; its subdirectories hold journals: {', '.join(inner)}",
            Code.CONFIG_INVALID,
        )


def _journal_repair(directory: str) -> int:
    from pathlib import Path

    from bot4.journal_repair import REPAIR_LOG, RepairRefused, repair

    try:
        rec = repair(directory)
    except RepairRefused as exc:
        print(f"bot4: error: {exc}", file=sys.stderr)
        return JOURNAL_EXIT_DAMAGED
    if rec is None:
        print(f"{directory}: every frame intact, nothing to repair")
        return 0
    print(
        f"cut {rec.bytes} bytes of {rec.file} from offset {rec.offset} (frame {rec.frame} on; "
        f"{rec.action}): {rec.kind}: {rec.reason}"
    )
    where = Path(directory)
    print(f"saved them to {where / rec.saved}; audit record in {where / REPAIR_LOG}")
    return 0


def _journal_cat(reader, names: dict, args) -> bool:
    """Print the frames (or records as JSON lines); True if ``--limit`` stopped it early."""
    for shown, (pos, rtype, recs) in enumerate(reader, start=1):
        if args.json:
            for r in recs:
                row = {"frame": pos, "type": names.get(rtype, rtype)}
                row.update(
                    {
                        f: (r[f].item() if r[f].ndim == 0 else None)
                        for f in recs.dtype.names
                        if not f.startswith("reserved")
                    }
                )
                row = {
                    k: (v.decode(errors="replace").rstrip("\x00") if isinstance(v, bytes) else v)
                    for k, v in row.items()
                }
                sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        else:
            print(
                f"frame {pos:>8}  {names.get(rtype, rtype):<16} {len(recs):>5} records  seq {int(recs['seq'][0])}..{int(recs['seq'][-1])}"
            )
        if args.limit and shown >= args.limit:
            return True
    return False


def cmd_warm(args) -> int:
    from bot4 import nbcache
    from bot4.warm import warm_command

    if args.dry_run and not (args.prune or args.prune_only):
        _usage("warm: --dry-run goes with --prune or --prune-only")
    if args.all and args.topology:
        _usage("warm: --all or --topology, not both")
    if args.jobs is not None and args.jobs < 1:
        _usage("warm: --jobs must be at least 1")
    if not args.prune_only:
        t = None if args.all else _load(args.topology, None)
        code = warm_command(t, workers=args.jobs, force=args.force)
        if code:
            return code
    if args.prune or args.prune_only:
        rep = nbcache.prune(dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"prune {rep.root}: {verb} {len(rep.removed)} key directories "
            f"({rep.freed_bytes / 1e6:.1f} MB); kept {len(rep.current)} current, "
            f"{len(rep.other_target)} for another CPU/SIMD setting, "
            f"{len(rep.in_use)} in use by running processes"
        )
        for name in rep.in_use:
            print(f"  in use: {name}")
        if rep.legacy:
            print(
                f"  {len(rep.legacy)} directories of numba's unkeyed layout for this tree "
                "(from before keyed caching) left alone: remove them once no older bot4 runs"
            )
        for err in rep.errors:
            print(f"bot4: error: prune {err}", file=sys.stderr)
        return 1 if rep.errors else 0
    return 0


def _instance_of(args) -> str:
    return args.instance or _load(args.topology, None).instance


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


# --- in build_parser(), before `return p` ------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bot4", description="low-latency trading pipeline")
    p.add_argument("--version", action="version", version=f"bot4 {_version()}")
    add_log_options(p, top=True)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the whole pipeline (default topology without arguments)")
    r.add_argument("topology", nargs="?", help="topology TOML (default: the packaged default)")
    r.add_argument("--duration", type=float, help="run this many seconds, then drain and stop")
    r.add_argument("--keep-shm", action="store_true", help="leave the segments in /dev/shm at exit")
    r.add_argument("--instance", help="override the topology's instance name")
    r.add_argument("--report", help="write the end-of-run figures as JSON here")
    r.add_argument("--quiet", action="store_true", help="no live line")
    r.add_argument("--dsn", help="events database (default: $BOT4_DSN, else embedded)")
    r.add_argument(
        "--ledger-dsn", help="ledger database (default: $BOT4_LEDGER_DSN, else embedded)"
    )
    r.add_argument("--no-db", action="store_true", help="journal only: load no database")
    r.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restarts of one stage within 60 s before the pipeline halts (5)",
    )
    r.add_argument(
        "--max-backoff", type=float, default=5.0, help="longest wait before a restart, s (5)"
    )
    r.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="longest drain after a stop; stages still running then are killed, exit 1 (60)",
    )
    add_log_options(r)
    r.set_defaults(fn=cmd_run)

    rc = sub.add_parser(
        "record", help="capture a market data source into a journal (replayable by the md stage)"
    )
    rc.add_argument("path", nargs="?", help="recorded file / LOBSTER pair (not for synthetic)")
    rc.add_argument("--source", choices=["synthetic", "file", "lobster"], default="synthetic")
    rc.add_argument("--out", help="journal directory (default: $BOT4_DATA_DIR/recordings/INSTANCE)")
    rc.add_argument("--duration", type=float, help="stop after this many seconds")
    rc.add_argument("--speed", type=float, default=0.0, help="file pace: 0 max, 1 recorded")
    rc.add_argument("--rate", type=int, default=20000, help="synthetic ticks/s")
    rc.add_argument("--instruments", type=int, default=3, help="synthetic instruments")
    rc.add_argument("--seed", type=int, default=1)
    rc.add_argument("--count", type=int, default=0, help="synthetic: stop after N ticks")
    rc.add_argument("--instance", help="pipeline instance name (default: record)")
    rc.add_argument("--quiet", action="store_true", help="no live line")
    add_log_options(rc)
    rc.set_defaults(fn=cmd_record)

    s = sub.add_parser("stage", help="run one stage against existing segments (systemd)")
    s.add_argument("name")
    s.add_argument("--topology", help="topology TOML (default: the packaged default)")
    s.add_argument("--instance")
    add_log_options(s)
    s.set_defaults(fn=cmd_stage)

    m = sub.add_parser("shm", help="create, destroy or list an instance's segments")
    m.add_argument("action", choices=["create", "destroy", "ls"])
    m.add_argument("--topology")
    m.add_argument("--instance")
    m.add_argument(
        "--force", action="store_true", help="destroy: even while a process of it is alive"
    )
    m.set_defaults(fn=cmd_shm)

    st = sub.add_parser("stats", help="stages and rings of a running instance (read-only)")
    st.add_argument("--topology")
    st.add_argument("--instance")
    st.add_argument("--json", action="store_true", help="one JSON snapshot (orjson)")
    st.add_argument(
        "--once",
        action="store_true",
        help="print one table and exit (rates over one --interval; --interval 0: none, at once)",
    )
    st.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (1)")
    st.set_defaults(fn=cmd_stats)
    from bot4.metrics_cli import add_parser as add_metrics

    add_metrics(sub)  # bot4 metrics serve

    c = sub.add_parser(
        "calibrate", help="fit GARCH(1,1) and the orthogonalisation from recorded data"
    )
    c.add_argument(
        "data",
        help="CSV/Parquet tick file, a LOBSTER pair (file, zip or directory), or a price or "
        "returns CSV (timestamp,price / timestamp,return; any decimals)",
    )
    c.add_argument(
        "--source",
        choices=["file", "lobster", "prices", "returns"],
        help="default: from the path and the CSV header",
    )
    c.add_argument("--symbol", help="prices / returns CSV without a symbol column: its symbol")
    c.add_argument("--method", choices=["pca", "qr", "ica"], default="pca")
    c.add_argument("--mean", choices=["zero", "constant"], default="constant")
    c.add_argument("-o", "--output", default="bot4-params.json")
    c.set_defaults(fn=cmd_calibrate)

    j = sub.add_parser(
        "journal",
        help="list, verify or repair a journal directory (exit 1: damaged or a gap, 3: torn tail)",
    )
    j.add_argument(
        "action",
        choices=["cat", "verify", "repair"],
        help="repair: cut a damaged or torn tail of the last file, saving it, audited",
    )
    j.add_argument("dir", help="journal directory (e.g. bot4-data/journal/default)")
    j.add_argument("--json", action="store_true", help="cat: one JSON object per record")
    j.add_argument("--limit", type=int, default=0, help="cat: at most this many frames")
    j.set_defaults(fn=cmd_journal)

    from bot4.db.cli import add_parser as add_db
    from bot4.gateways.cli import add_parser as add_exchange
    from bot4.models.cli import add_parser as add_models
    from bot4.replay.cli import add_parser as add_replay
    from bot4.research.cli import add_parser as add_sweep

    add_replay(sub)
    add_sweep(sub)
    add_db(sub)
    add_exchange(sub)
    add_models(sub)

    w = sub.add_parser(
        "warm", help="compile a topology's numba kernels (or all) into the on-disk cache"
    )
    w.add_argument(
        "--topology",
        help="topology TOML whose stages to compile for (default: the packaged default)",
    )
    w.add_argument(
        "--all", action="store_true", help="every kernel of every stage kind and tool (CI, tests)"
    )
    w.add_argument(
        "--jobs", "-j", type=int, help="worker processes (default: the CPUs bot4 may use)"
    )
    w.add_argument("--force", action="store_true", help="run every job, also those already warm")
    w.add_argument(
        "--prune",
        action="store_true",
        help="then remove cache keys this tree does not use and no running process holds",
    )
    w.add_argument("--prune-only", action="store_true", help="prune without compiling")
    w.add_argument("--dry-run", action="store_true", help="prune: only list what would go")
    w.set_defaults(fn=cmd_warm)
    add_operator_parsers(sub)
    return p


def _version() -> str:
    """The installed distribution's version (the package's own when run from a tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bot4")
    except PackageNotFoundError:
        from bot4 import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point (exit codes: :func:`bot4.cli_support.run_parsed`)."""
    return run_parsed(build_parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
