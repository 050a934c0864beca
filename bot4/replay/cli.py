"""``bot4 replay DATA``: recorded market data through the trading stages, with a report.

Register it from ``bot4.cli.build_parser`` with ``add_parser(sub)``; the handler is
:func:`cmd_replay` (set as the subcommand's ``fn``). Exit codes: 0 done, 2 a bot4 error
(input problems come before any work, with the problem named).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "cmd_replay"]


def _speed(text: str) -> float:
    if text.strip().lower() == "max":
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed {text!r}: a number or 'max'") from None
    if v < 0:
        raise argparse.ArgumentTypeError("--speed must be >= 0 (or 'max')")
    return v


def _duration(text: str) -> int:
    from bot4.replay.latency import LatencyError, parse_duration_ns

    try:
        v = parse_duration_ns(text)
    except LatencyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def _step(text: str) -> int:
    """``exact`` -> 0 (event-exact time), else a duration > 0 in ns."""
    return 0 if text.strip().lower() == "exact" else _duration(text)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``replay`` to ``bot4``'s subparsers; returns the new parser."""
    r = subparsers.add_parser(
        "replay",
        help="replay recorded market data through the trading stages and report",
        description=(
            "Replay DATA (a LOBSTER message file, zip or directory; a CSV/Parquet tick file; "
            "or a journal directory of market data) through a topology's stages against the "
            "simulated venue, then write report.json and report.html."
        ),
    )
    r.add_argument("data", help="LOBSTER pair, CSV/Parquet tick file, or journal directory")
    r.add_argument(
        "--mode",
        choices=["deterministic", "full"],
        default="deterministic",
        help="deterministic: one process on a simulated clock (default); full: the real "
        "multi-process pipeline, latencies measured",
    )
    r.add_argument("--topology", help="topology TOML (default: the packaged default)")
    r.add_argument(
        "--speed",
        type=_speed,
        default=0.0,
        help="full mode: 1 = recorded pace, 10 = ten times faster, max = as fast as it goes",
    )
    r.add_argument("--out", default="bot4-replay", help="output directory (default bot4-replay)")
    r.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="deterministic mode, repeatable: feed|order|report|compute = const:50us | "
        "empirical:40us,45us,90us | quantiles:0=30us,0.5=40us,1=200us | "
        "spike(base=const:40us,window=1ms,threshold=50,per_event=200ns,prob=0.01,spike=500us)",
    )
    r.add_argument("--seed", type=int, default=1, help="latency RNG seed (default 1)")
    r.add_argument(
        "--step",
        type=_step,
        default=0,
        help="deterministic mode: 'exact' (default: every order, cancel, fill and report at "
        "its modelled time) or a duration: a stepped run whose stages react on that grid",
    )
    r.add_argument(
        "--interval",
        type=_duration,
        default=60_000_000_000,
        help="equity sampling interval for the returns, Sharpe and Sortino (default 60s)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(fn=cmd_replay)
    return r


def cmd_replay(args) -> int:
    """Run one replay from parsed arguments; prints a short summary and the paths."""
    from bot4.marketdata.report import bad_input_line
    from bot4.replay.latency import LatencyConfig
    from bot4.replay.runner import replay
    from bot4.replay.sources import open_source

    latency = LatencyConfig.from_specs(args.latency)
    source = open_source(args.data)  # input problems: before any work
    if source.report is not None and bad_input_line(source.report):
        print(f"bot4: warning: {bad_input_line(source.report)}", file=sys.stderr, flush=True)
    out = replay(
        source,
        args.out,
        mode=args.mode,
        topology=args.topology,
        latency=latency,
        seed=args.seed,
        speed=args.speed,
        step_ns=args.step,
        interval_ns=args.interval,
        progress=None if args.quiet else sys.stderr,
    )
    print(
        f"replayed {out.run.get('events', 0):,} events ({args.mode}) in {out.run['wall_s']:.1f} s"
    )
    for line in out.report.summary_lines():
        print(line)
    print(f"report: {out.json_path}  {out.html_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bot4.replay.cli DATA ...``: the same as ``bot4 replay DATA ...``."""
    from bot4.cli_support import run_parsed, sub_parser

    args = ["replay", *(sys.argv[1:] if argv is None else argv)]
    return run_parsed(lambda: sub_parser(add_parser), args)


if __name__ == "__main__":
    sys.exit(main())
