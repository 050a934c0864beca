"""``bot4 sweep DATA... --grid KEY=V1,V2 ...``: many deterministic replays on Ray, one table,
one comparison report (docs/research.md).

Registered from ``bot4.cli.build_parser`` with :func:`add_parser`. Exit codes: 0 the sweep
finished (failed runs are in the table and the report, and counted on stdout), 1 a sweep
that cannot start (one ``bot4: error:`` line: a missing file, an unknown parameter key, a
malformed value), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

__all__ = ["add_parser", "cmd_sweep"]


def _duration(text: str) -> int:
    from bot4.replay.latency import LatencyError, parse_duration_ns

    try:
        v = parse_duration_ns(text)
    except LatencyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep`` to ``bot4``'s subparsers; returns the new parser."""
    s = subparsers.add_parser(
        "sweep",
        help="grid / random / Bayesian parameter sweep of replays on Ray, with a comparison",
        description=(
            "Replay every DATA file (days x instruments) for every parameter point, on a "
            "local Ray started on demand or an existing cluster, into OUT/results.parquet "
            "and OUT/report.html. A second start with the same OUT runs only what is "
            "missing. Parameter keys: STAGE.PARAM (topology), latency.NAME (feed, order, "
            "report, compute), seed, step."
        ),
    )
    s.add_argument("data", nargs="+", help="data files as bot4 replay reads them")
    s.add_argument("--out", default="bot4-sweep", help="output directory (default bot4-sweep)")
    s.add_argument(
        "--search", choices=["grid", "random", "bayes"], default="grid", help="default grid"
    )
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid axis, repeatable; values split on '|' when there is one, else ','",
    )
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=DIST",
        help="random / bayes: uniform:LO:HI | loguniform:LO:HI | int:LO:HI | choice:A|B",
    )
    s.add_argument("--trials", type=int, default=20, help="random / bayes: points (default 20)")
    s.add_argument("--sample-seed", type=int, default=0, help="seed of the random / bayes sampler")
    s.add_argument("--batch", type=int, help="bayes: points asked at a time (default: the CPUs)")
    s.add_argument("--topology", help="base topology TOML (default: the packaged one)")
    s.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="fixed latency model for every run (as bot4 replay --latency)",
    )
    s.add_argument(
        "--interval", type=_duration, default=60_000_000_000, help="equity sampling interval"
    )
    s.add_argument(
        "--walk-forward",
        action="store_true",
        help="DATA are consecutive windows: the best point on window k trades window k+1",
    )
    s.add_argument(
        "--walk-forward-calibrate",
        action="store_true",
        help="with --walk-forward: fit bot4 calibrate on window k and use it as "
        "signals.params_file for k's in-sample runs and k+1's out-of-sample run",
    )
    s.add_argument("--objective", default="total_pnl", help="metric to rank by (total_pnl)")
    s.add_argument("--minimize", action="store_true", help="smaller objective is better")
    s.add_argument(
        "--ray-address", help="join this Ray cluster (default: start a local Ray on demand)"
    )
    s.add_argument("--cpus", type=int, help="local Ray: CPUs to use (default: all)")
    s.add_argument(
        "--ship-data",
        action="store_true",
        help="send data files through Ray's object store (default: workers read the path)",
    )
    s.add_argument("--warm", action="store_true", help="run bot4 warm on every node first")
    s.add_argument(
        "--serial", action="store_true", help="no Ray: run one after the other in this process"
    )
    s.add_argument("--retry-failed", action="store_true", help="rerun runs that failed before")
    s.add_argument("--heat", metavar="X,Y", help="heat map parameters (default: first two)")
    s.add_argument("--best", type=int, default=10, help="points in the best-N table")
    s.add_argument(
        "--dsn",
        default=os.environ.get("BOT4_DSN"),
        help="also write the rows into this PostgreSQL database (default: $BOT4_DSN)",
    )
    s.add_argument("--quiet", action="store_true", help="no line per finished run")
    s.set_defaults(fn=cmd_sweep)
    return s


def config_from_args(args):
    """A :class:`bot4.research.sweep.SweepConfig` from parsed arguments."""
    from bot4.research.space import SpaceError, parse_dist, parse_grid
    from bot4.research.sweep import SweepConfig

    latency = {}
    for spec in args.latency:
        name, eq, model = spec.partition("=")
        if not eq:
            raise SpaceError(f"--latency {spec!r}: expected NAME=MODEL")
        latency[name.strip()] = model.strip()
    heat = None
    if args.heat:
        x, comma, y = args.heat.partition(",")
        if not comma:
            raise SpaceError("--heat: expected X,Y (two parameter keys)")
        heat = (x.strip(), y.strip())
    return SweepConfig(
        data=list(args.data),
        out=args.out,
        search=args.search,
        grid=[parse_grid(g) for g in args.grid],
        dists=[parse_dist(p) for p in args.param],
        trials=args.trials,
        sample_seed=args.sample_seed,
        batch=args.batch,
        topology=args.topology,
        latency=latency,
        interval_ns=args.interval,
        walk_forward=args.walk_forward,
        walk_forward_calibrate=args.walk_forward_calibrate,
        objective=args.objective,
        direction="min" if args.minimize else "max",
        executor="serial" if args.serial else "ray",
        ray_address=args.ray_address,
        num_cpus=args.cpus,
        ship_data=args.ship_data,
        warm=args.warm,
        retry_failed=args.retry_failed,
        heat=heat,
        best=args.best,
        dsn=args.dsn,
        progress=None if args.quiet else sys.stderr,
    )


def cmd_sweep(args) -> int:
    from bot4.records.errors import Bot4Error, Code
    from bot4.replay.latency import LatencyConfig, LatencyError
    from bot4.research.space import SpaceError
    from bot4.research.sweep import run_sweep

    # SIGTERM ends the sweep as Ctrl-C does: through the finally blocks, so a Ray this
    # sweep started is shut down (a SIGKILLed driver leaves Ray's two agent processes behind)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cfg = config_from_args(args)
        LatencyConfig.from_specs(cfg.latency)  # a malformed fixed model: before any run
        out = run_sweep(cfg)
    except (SpaceError, LatencyError) as exc:
        raise Bot4Error(str(exc), Code.CONFIG_INVALID) from None
    t = out.table
    n_ok = int((t["status"] == "ok").sum()) if len(t) else 0
    print(
        f"sweep: {len(t)} runs ({n_ok} ok, {len(t) - n_ok} failed); ran {out.ran} now, "
        f"{out.skipped} already done; {out.wall_s:.1f} s"
        + (f" (Ray start {out.startup_s:.1f} s)" if out.startup_s else "")
    )
    best = out.best(1)
    if len(best) and best[cfg.objective].notna().iloc[0]:
        print(
            f"best {cfg.objective} {best[cfg.objective].iloc[0]:.4f} of {out.trials} trials: "
            f"{best['params'].iloc[0]}"
        )
    print(f"table: {out.table_path}  report: {out.report_path}")
    return 0
