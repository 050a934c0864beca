"""``bot4 metrics serve``: the read-only Prometheus exporter of one instance
(:mod:`bot4.ops_metrics`; metric names and endpoints in docs/operations.md)."""

from __future__ import annotations

import argparse
import os


def cmd_metrics(args) -> int:
    from bot4.ops_metrics import serve

    names = None
    inst = args.instance
    if args.topology or not inst:
        from bot4.pipeline.topology import load_topology

        t = load_topology(args.topology, instance=args.instance)
        inst, names = t.instance, [s.name for s in t.stages]
    return serve(
        inst,
        names,
        host=args.host,
        port=args.port,
        dsn=None if args.no_db else (args.dsn or os.environ.get("BOT4_DSN") or None),
        stale_after_s=args.stale_after,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    from bot4.ops_metrics import DEFAULT_HOST, DEFAULT_PORT, STALE_AFTER_S

    m = sub.add_parser(
        "metrics",
        help="serve an instance's metrics to Prometheus, with /healthz and /readyz (read-only)",
    )
    m.add_argument("action", choices=["serve"])
    m.add_argument("--topology", help="topology TOML (names; default: the packaged default)")
    m.add_argument("--instance", help="instance name (stage names then come from its segments)")
    m.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind ({DEFAULT_HOST})")
    m.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0: any free one)"
    )
    m.add_argument("--dsn", help="database /readyz checks (default: $BOT4_DSN; none: no check)")
    m.add_argument("--no-db", action="store_true", help="/readyz does not check a database")
    m.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        help=f"/readyz: a stage heartbeat older than this many seconds is stale ({STALE_AFTER_S:g})",
    )
    m.set_defaults(fn=cmd_metrics)
