"""The ``bot4`` command.

Subcommands: ``run`` (the whole pipeline), ``stage`` (one stage, for systemd), ``shm``
(segment lifecycle), ``stats`` (read-only operator view), ``calibrate`` (fit the signals
stage's parameters), ``warm`` (compile and cache every numba kernel once), ``breaker``
and ``halt`` / ``reduce`` / ``resume`` (operator actions, each recorded for persistence
before it is applied, under the kernel's identity of the caller: docs/security.md).

This module builds the parser and keeps ``calibrate`` and ``warm``; the other handlers
live beside it: :mod:`bot4.cli_pipeline` (run, record, stage, shm), :mod:`bot4.cli_ops`
(stats, breaker, halt / reduce / resume), :mod:`bot4.cli_journal` (journal), with what
they share in :mod:`bot4.cli_common`; the sub-CLIs in their packages (``db/cli.py``, ...).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # ``python -m bot4.cli``: a Ctrl-C during the imports below is counted, not raised
    # (bot4.interrupts); the ``bot4`` script does this in bot4.__main__
    from bot4.interrupts import defer

    defer()

import argparse
import time

from bot4.cli_common import _load, _usage
from bot4.cli_journal import cmd_journal
from bot4.cli_ops import add_operator_parsers, cmd_stats
from bot4.cli_pipeline import cmd_record, cmd_run, cmd_shm, cmd_stage
from bot4.cli_support import (
    add_log_options,
    run_parsed,
)


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


def cmd_warm(args) -> int:
    from bot4 import nbcache_prune
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
        rep = nbcache_prune.prune(dry_run=args.dry_run)
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
    """Entry point (exit codes: :func:`bot4.cli_support.run_parsed`). A Ctrl-C is deferred
    before this is imported (``bot4.__main__``, or the top of this module for
    ``python -m bot4.cli``: :mod:`bot4.interrupts`); called in-process, it is not."""
    argv = sys.argv[1:] if argv is None else argv
    if _runs_pipeline(argv):
        from bot4.pipeline.zygote import start_early

        # the stage processes' zygote imports numba beside this process's own imports (the
        # parser's modules, the supervisor's): bot4.pipeline.zygote
        start_early()
    return run_parsed(build_parser, argv)


def _runs_pipeline(argv: list[str]) -> bool:
    """``bot4 run ...`` or ``bot4 record ...`` (not their help): the commands that start a
    supervisor."""
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] in ("run", "record") and not {"-h", "--help"} & set(argv)


if __name__ == "__main__":
    sys.exit(main())
