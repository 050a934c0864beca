"""``bot4 run``, ``bot4 record``, ``bot4 stage`` and ``bot4 shm``: the commands that start a
pipeline (the supervisor, or one stage under systemd) and manage its segments.
"""

from __future__ import annotations

import logging
import sys

import orjson

from bot4.cli_common import _load, _say_notes, _usage

_LOG = logging.getLogger("bot4")


def cmd_run(args) -> int:
    from bot4.pipeline.segments import check_not_running
    from bot4.pipeline.supervisor import Supervisor
    from bot4.pipeline.validate import validate_topology

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
            cores=service_cores(t),
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

    cores = service_cores(t)
    allowed = os.sched_getaffinity(0)
    if cores:  # the server started now inherits it (pg_ctl -> postmaster -> backends)
        os.sched_setaffinity(0, cores)
    try:
        dsn, ledger, server = resolve_dsns(args.dsn, args.ledger_dsn)
    finally:
        os.sched_setaffinity(0, allowed)
    os.environ["BOT4_DSN"] = dsn
    if ledger:
        os.environ["BOT4_LEDGER_DSN"] = ledger
    if server is not None:
        where = f" on cores {','.join(map(str, sorted(cores)))}" if server.started and cores else ""
        _LOG.info("embedded PostgreSQL under %s%s", server.data_dir, where)
        if server.adopted_from is not None:
            _LOG.warning(
                "adopted the server left running by a dead run (%s): this run stops it when "
                "it ends",
                server.adopted_from,
            )
    return server


def service_cores(t) -> set[int] | None:
    """Where ``bot4 run``'s own processes run for topology ``t``: the embedded PostgreSQL
    it starts and the supervisor (this process, once the kernels are warm). The cores this
    process may use that no stage is pinned to; else those not running a stage of the
    tick-to-order path (``bot4.stages.hotpath.HOT_KINDS``: signals, risk, orders); else
    None (anywhere). On the hot group's core, PostgreSQL's bursts of COPY work were the
    default run's tick-to-order tail (p99 7.4 ms with the database, 2.2 ms without, the
    same 2-core machine), and the supervisor's liveness rounds (50 Hz, ~0.2 ms each)
    about 1 % of that core's time."""
    import os

    from bot4.stages.hotpath import HOT_KINDS

    allowed = os.sched_getaffinity(0)
    hot = {
        t.unit_core(name)
        for name, members in t.units()
        if any(t.stage(m).kind in HOT_KINDS for m in members)
    }
    return (allowed - t.pinned_cores()) or (allowed - hot) or None


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
    from bot4.pipeline.topology import parse_topology
    from bot4.pipeline.validate import validate_topology

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
