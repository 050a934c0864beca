"""``bot4 db``: the database from the command line.

    bot4 db migrate                 apply pending migrations (events and ledger databases)
    bot4 db status [--json] [--journal DIR]   migrations, load positions, row counts,
                                    in-doubt txns, conflicts, journal reconciliation
    bot4 db locks [--json] [--all]  who waits for whom (wait-for graph), cycles flagged
    bot4 db load DIR [--follow]     load a journal directory now, exactly once, then
                                    reconcile it with the database
    bot4 db recover DIR             resolve the journal's in-doubt two-phase transactions
    bot4 db server start|stop|status   the embedded server under the data directory

Every action takes ``--dsn`` / ``--ledger-dsn`` (else ``BOT4_DSN`` / ``BOT4_LEDGER_DSN``,
else the embedded server under ``--data-dir``, default ``$BOT4_DATA_DIR/pg``). Read-only
actions (status, locks) never start the embedded server; the others start it when it is
not running and stop it again when they are done.

:func:`add_parser` registers ``db`` on the ``bot4`` command's subparsers; :func:`main`
runs the same actions as ``python -m bot4.db.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator

__all__ = ["add_parser", "cmd_db", "main"]

EVENT_TABLES = (
    "orders",
    "order_actions",
    "exec_reports",
    "risk_decisions",
    "operator_actions",
    "positions",
    "model_events",
    "rejected_rows",
    "exec_conflicts",
)
LEDGER_TABLES = ("ledger_entries", "ledger_conflicts")
LOAD_EXIT_DIFFER = 4  # loaded, but the journal and the database disagree (reconciliation)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``db`` (with its actions) to a ``bot4`` subparsers object; returns its parser."""
    p = subparsers.add_parser("db", help="PostgreSQL: migrate, status, locks, load, recover")
    _fill(p)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="events database (default: $BOT4_DSN, else embedded)")
    p.add_argument("--ledger-dsn", help="ledger database (default: $BOT4_LEDGER_DSN)")
    p.add_argument("--data-dir", help="embedded server data directory (default: $BOT4_DATA_DIR/pg)")


def _fill(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="db_action", required=True)
    m = sub.add_parser("migrate", help="apply pending migrations to both databases")
    _common(m)
    s = sub.add_parser("status", help="migrations, load positions, row counts, in-doubt txns")
    _common(s)
    s.add_argument("--json", action="store_true", help="one JSON document")
    s.add_argument(
        "--journal", action="append", metavar="DIR",
        help="reconcile this journal directory with the database (repeatable; default: the "
        "journals of load_positions found under $BOT4_DATA_DIR/journal)",
    )  # fmt: skip
    k = sub.add_parser("locks", help="who waits for whom; cycles (deadlocks in the making)")
    _common(k)
    k.add_argument("--json", action="store_true", help="one JSON document")
    k.add_argument("--all", action="store_true", help="also list every session")
    k.add_argument("--watch", type=float, metavar="S", help="repeat every S seconds")
    for name, text in (
        ("load", "load a journal directory into the database, exactly once"),
        ("recover", "resolve in-doubt two-phase transactions of a journal"),
    ):
        j = sub.add_parser(name, help=text)
        _common(j)
        j.add_argument("journal", help="journal directory (e.g. bot4-data/journal/default)")
        j.add_argument(
            "--journal-id", help="name of the journal in the database (default: dir name)"
        )
        if name == "load":
            j.add_argument("--batch-records", type=int, default=4096)
            j.add_argument("--instruments", help="instrument TOML (default: built-in table)")
            j.add_argument("--no-fast-path", action="store_true", help="always stage + ON CONFLICT")
            j.add_argument(
                "--small-batch", type=int, default=128,
                help="batches of at most this many records take the pipelined path (0: never)",
            )  # fmt: skip
            j.add_argument(
                "--follow", action="store_true", help="keep loading as the journal grows"
            )
            j.add_argument("--interval", type=float, default=0.2, help="--follow poll, seconds")
    v = sub.add_parser("server", help="start, stop or describe the embedded server")
    v.add_argument("server_action", choices=["start", "stop", "status"])
    v.add_argument("--data-dir", help="data directory (default: $BOT4_DATA_DIR/pg)")
    p.set_defaults(fn=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    """Run one ``bot4 db`` action; the exit status."""
    return {
        "migrate": _migrate,
        "status": _status,
        "locks": _locks,
        "load": _load,
        "recover": _recover,
        "server": _server,
    }[args.db_action](args)


@contextlib.contextmanager
def _dsns(args, start: bool) -> Iterator[tuple[str, str | None]]:
    from bot4.db.server import resolve_dsns
    from bot4.records.errors import Bot4Error, Code

    dsn, ledger, server = resolve_dsns(args.dsn, args.ledger_dsn, args.data_dir, start=start)
    if server is not None and not start and not server.running:
        raise Bot4Error(
            f"embedded PostgreSQL under {server.data_dir} is not running "
            "(bot4 db server start, or pass --dsn)",
            Code.DB_UNAVAILABLE,
        )
    try:
        yield dsn, ledger
    finally:
        if server is not None and server.started:
            server.stop()


def _connect(dsn: str):
    import psycopg

    from bot4.db.pool import db_errors

    with db_errors("connect"):
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def _migrate(args) -> int:
    from bot4.db.migrate import migrate

    with _dsns(args, start=True) as (dsn, ledger):
        targets = [("events", dsn, ("events",) if ledger else ("events", "ledger"))]
        if ledger:
            targets.append(("ledger", ledger, ("ledger",)))
        for label, target, scopes in targets:
            done = migrate(target, scopes)
            print(f"{label}: applied {len(done)}: {', '.join(map(str, done)) or 'up to date'}")
    return 0


def _table_exists(conn, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def _db_status(dsn: str, tables: tuple[str, ...]) -> dict:
    from bot4.db.migrate import applied_migrations

    with _connect(dsn) as conn:
        out: dict = {
            "database": conn.info.dbname,
            "migrations": [
                {
                    "scope": a.scope,
                    "version": a.version,
                    "name": a.name,
                    "applied_at": str(a.applied_at),
                }
                for a in applied_migrations(conn)
            ],
            "rows": {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in tables
                if _table_exists(conn, t)
            },
            "in_doubt": [
                {"gid": g, "prepared": str(p), "owner": o}
                for g, p, o in conn.execute(
                    "SELECT gid, prepared, owner FROM pg_prepared_xacts "
                    "WHERE database = current_database() ORDER BY prepared"
                ).fetchall()
            ],
        }
        if _table_exists(conn, "load_positions"):
            out["load_positions"] = [
                {"journal": j, "next_frame": f, "records": r, "batches": b, "updated_at": str(u)}
                for j, f, r, b, u in conn.execute(
                    "SELECT journal_id, next_frame, records, batches, updated_at "
                    "FROM load_positions ORDER BY journal_id"
                ).fetchall()
            ]
        if _table_exists(conn, "ledger_entries"):
            key = "exec_id"  # a fill: its execution identity (ledger migration 0003)
            if conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
                "'ledger_entries'::regclass AND attname = 'exec_session' AND NOT attisdropped)"
            ).fetchone()[0]:
                key = "venue, exec_session, exec_id"
            fills, unbalanced = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE d <> c) FROM (SELECT "
                f"sum(debit) d, sum(credit) c FROM ledger_entries GROUP BY {key}) x"
            ).fetchone()
            out["ledger"] = {"fills": fills, "unbalanced_fills": unbalanced}
        return out


def _print_status(label: str, st: dict) -> None:
    print(f"{label} database {st['database']}")
    migs = ", ".join(f"{m['scope']} {m['version']:04d}_{m['name']}" for m in st["migrations"])
    print(f"  migrations: {migs or 'none applied'}")
    for lp in st.get("load_positions", []):
        print(
            f"  journal {lp['journal']}: next frame {lp['next_frame']:,}, {lp['records']:,} "
            f"records in {lp['batches']:,} batches, updated {lp['updated_at']}"
        )
    if st["rows"]:
        print("  rows: " + ", ".join(f"{t} {n:,}" for t, n in st["rows"].items()))
    if "ledger" in st:
        led = st["ledger"]
        print(f"  ledger: {led['fills']:,} fills, {led['unbalanced_fills']} unbalanced")
    if st["in_doubt"]:
        print(f"  IN DOUBT ({len(st['in_doubt'])}): " + ", ".join(x["gid"] for x in st["in_doubt"]))
    else:
        print("  in doubt: none")


def _status(args) -> int:
    import orjson

    with _dsns(args, start=False) as (dsn, ledger):
        report = {"events": _db_status(dsn, EVENT_TABLES + (() if ledger else LEDGER_TABLES))}
        if ledger:
            report["ledger"] = _db_status(ledger, LEDGER_TABLES)
        recs, unchecked = _reconcile_journals(args, dsn, ledger, report["events"])
    doubt = sum(len(st["in_doubt"]) for st in report.values())
    bad = sum(st.get("ledger", {}).get("unbalanced_fills", 0) for st in report.values())
    kept = sum(st["rows"].get(t, 0) for st in report.values() for t in _CONFLICT_TABLES)
    differ = sum(not r.ok for r in recs)
    status = 1 if doubt or bad or kept or differ else 0
    if args.json:
        report["reconciliation"] = [r.as_dict() for r in recs]
        report["not_reconciled"] = unchecked
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        return status
    for label, st in report.items():
        _print_status(label, st)
    for r in recs:
        print(f"  {r.summary()}")
    for j in unchecked:
        print(f"  journal {j}: not reconciled (no directory {_journal_dir(j)}; pass --journal)")
    if kept:
        print(f"  IDENTITY CONFLICTS: {kept} rows kept in exec_conflicts / ledger_conflicts")
    return status


_CONFLICT_TABLES = ("exec_conflicts", "ledger_conflicts")


def _journal_dir(journal_id: str):
    from bot4.paths import data_dir

    return data_dir() / "journal" / journal_id


def _reconcile_journals(args, dsn: str, ledger: str | None, events: dict) -> tuple[list, list]:
    """Reconcile the journals of ``--journal``, else those of ``load_positions`` that have a
    directory under the data directory: (reconciliations, journal ids not reconciled)."""
    from pathlib import Path

    from bot4.db.reconcile import reconcile

    dirs, unchecked = [Path(d) for d in args.journal or ()], []
    if not dirs:
        for lp in events.get("load_positions", []):
            d = _journal_dir(lp["journal"])
            if d.is_dir():
                dirs.append(d)
            else:
                unchecked.append(lp["journal"])
    return [reconcile(d, dsn, ledger) for d in dirs], unchecked


def _same_server(a: str, b: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    da, db = conninfo_to_dict(a), conninfo_to_dict(b)
    return (da.get("host"), da.get("port")) == (db.get("host"), db.get("port"))


def _locks(args) -> int:
    import orjson

    from bot4.db.locks import render, wait_graph

    with _dsns(args, start=False) as (dsn, ledger):
        servers = [("events", dsn)]
        if ledger and not _same_server(dsn, ledger):
            servers.append(("ledger", ledger))
        conns = [(label, _connect(d)) for label, d in servers]
        try:
            while True:
                graphs = {label: wait_graph(conn) for label, conn in conns}
                if args.json:
                    doc = {label: g.to_dict() for label, g in graphs.items()}
                    sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
                else:
                    for label, g in graphs.items():
                        head = f"[{label} server]" if len(graphs) > 1 else ""
                        print("\n".join(x for x in (head, render(g, args.all)) if x))
                sys.stdout.flush()
                if not args.watch:
                    break
                time.sleep(args.watch)
        finally:
            for _label, conn in conns:
                conn.close()
    return 1 if any(g.cycles for g in graphs.values()) else 0


def _loader(args, dsn: str, ledger: str | None, **kwargs):
    from bot4.db.loader import Loader

    return Loader(args.journal, dsn, ledger, journal_id=args.journal_id, **kwargs)


LOAD_EXIT_DAMAGED = 1  # the journal is damaged or has a gap: loaded up to it, no further
LOAD_EXIT_TORN = 3  # loaded every intact frame; the journal ends in a torn (or unfinished) frame


def _load(args) -> int:
    from bot4.journal import JournalCorrupt
    from bot4.records.instruments import load_instruments

    instruments = load_instruments(args.instruments) if args.instruments else None
    with _dsns(args, start=True) as (dsn, ledger):
        loader = _loader(
            args, dsn, ledger, instruments=instruments, batch_records=args.batch_records,
            fast_path=not args.no_fast_path, small_batch=args.small_batch,
        )  # fmt: skip
        t0 = time.monotonic()
        damage = torn = None
        try:
            if args.follow:
                import threading

                stop = threading.Event()
                from bot4.db.reconcile import LiveReconciler

                live = LiveReconciler(args.journal, dsn, ledger, loader.journal_id, every_s=10.0)

                def caught_up() -> None:
                    rec = live.maybe_check()
                    if rec is not None:
                        print(rec.summary(), file=sys.stdout if rec.ok else sys.stderr)

                try:
                    loader.follow(stop, poll_s=args.interval, caught_up=caught_up)
                except KeyboardInterrupt:
                    stop.set()
                finally:
                    live.close()
            else:
                loader.load_available()
                torn = loader.torn_tail
        except JournalCorrupt as exc:  # damage or a gap: what precedes it is loaded, no more
            damage = exc
        finally:
            loader.close()
        s = loader.stats
        dt = time.monotonic() - t0
        print(
            f"{s.records:,} records in {s.batches:,} batches ({dt:.2f} s): {s.inserted:,} rows "
            f"inserted, {s.duplicates:,} duplicates, {s.rejected:,} rejected, {s.fills:,} fills, "
            f"{s.ledger_rows:,} ledger legs, {s.retries} retries"
        )
        if s.conflicts or s.ledger_conflicts:
            print(
                f"bot4: error: {s.conflicts:,} executions and {s.ledger_conflicts:,} ledger legs "
                "reuse an id that holds another execution: kept in exec_conflicts / "
                "ledger_conflicts, not loaded",
                file=sys.stderr,
            )
        from bot4.db.reconcile import reconcile

        rec = reconcile(args.journal, dsn, ledger, loader.journal_id)
        print(rec.summary())
    if damage is not None:
        print(f"bot4: error: loaded up to the damage, nothing after it: {damage}", file=sys.stderr)
        return LOAD_EXIT_DAMAGED
    if torn is not None:
        print(f"bot4: error: {torn.describe()}", file=sys.stderr)
        return LOAD_EXIT_TORN
    if not rec.ok or s.conflicts or s.ledger_conflicts:
        print("bot4: error: the journal and the database disagree (see above)", file=sys.stderr)
        return LOAD_EXIT_DIFFER
    return 0


def _recover(args) -> int:
    with _dsns(args, start=True) as (dsn, ledger):
        loader = _loader(args, dsn, ledger)
        try:
            done = loader.recover()
        finally:
            loader.close()
    print(f"committed {len(done['committed'])}: {', '.join(done['committed']) or '-'}")
    print(f"rolled back {len(done['rolled_back'])}: {', '.join(done['rolled_back']) or '-'}")
    return 0


def _server(args) -> int:
    from bot4.db.server import EVENTS_DB, LEDGER_DB, EmbeddedPostgres

    server = EmbeddedPostgres(args.data_dir)
    if args.server_action == "start":
        server.start(own=False)  # nobody's: it runs until `bot4 db server stop`
        print(f"running (pid {server.pid}) under {server.data_dir}")
    elif args.server_action == "stop":
        server.stop()
        print(f"stopped: {server.data_dir}")
    else:
        state = f"running (pid {server.pid})" if server.running else "stopped"
        print(f"{server.data_dir}: {state}; log {server.log_path}")
    if server.running:
        print(f"  events dsn: {server.dsn(EVENTS_DB)}")
        print(f"  ledger dsn: {server.dsn(LEDGER_DB)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bot4.db.cli ACTION ...`` (the same as ``bot4 db ACTION ...``)."""
    from bot4.cli_support import run_parsed, sub_parser

    args = ["db", *(sys.argv[1:] if argv is None else argv)]
    return run_parsed(lambda: sub_parser(add_parser), args)


if __name__ == "__main__":
    sys.exit(main())
