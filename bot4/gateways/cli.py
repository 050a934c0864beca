"""``bot4 exchange serve``: the exchange simulator (``bot4.gateways.exchange``)."""

from __future__ import annotations

import argparse
import json
import sys


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _numbers(text: str) -> tuple[int, ...]:
    """``"3,7"`` -> (3, 7); ``""`` -> (): a comma list of positive integers."""
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = (0,)
    if any(n <= 0 for n in out):
        raise argparse.ArgumentTypeError(f"expected N[,M...] positive integers, got {text!r}")
    return out


def cmd_exchange(args) -> int:
    from bot4 import logs
    from bot4.gateways.exchange import ExchangeConfig, Faults, serve

    # a server's lines, like a stage's: `<time> exchange[<pid>] <LEVEL> ...` (bot4.logs)
    logs.configure(logs.resolve(), "exchange")
    users = {}
    for u in args.user or []:
        name, _, pw = u.partition(":")
        users[name] = pw
    if bool(args.lobster) == bool(args.synthetic):
        print("bot4: error: exchange serve: give LOBSTER pairs or --synthetic N (one of them)",
              file=sys.stderr)  # fmt: skip
        return 2
    cfg = ExchangeConfig(
        lobster=args.lobster,
        synthetic=args.synthetic,
        synthetic_instruments=args.instruments,
        synthetic_seed=args.synthetic_seed,
        host=args.host,
        md_to=args.md_to or [("127.0.0.1", 31000)],
        rerequest_port=args.rerequest_port,
        ouch_port=args.ouch_port,
        rate=args.rate,
        session=args.session,
        heartbeat_s=args.heartbeat,
        users=users,
        cancel_on_disconnect=not args.no_cancel_on_disconnect,
        stp_profile=args.stp_profile,
        start_on_login=args.start_on_login,
        latency_log=args.latency_log or "",
        faults=Faults(
            drop_every=args.drop_every,
            duplicate_every=args.duplicate_every,
            reorder_every=args.reorder_every,
            delay_ms=args.delay_ms,
            rerequest_delay_ms=args.rerequest_delay_ms,
            disconnect_after=args.disconnect_after,
            disconnect_random=args.disconnect_random,
            seed=args.seed,
            refuse_login=args.refuse_login,
            restart_after=args.restart_after,
            restart_pause=args.restart_pause,
            bust_every=args.bust_every,
            bust_fills=args.bust_fill,
            bust_matches=args.bust_match,
        ),
    )

    def ready(ex) -> None:
        if args.ready_file:
            info = {"ouch_port": ex.ouch_port, "rerequest_port": ex.rerequest_port,
                    "messages": ex.feed.messages, "day": str(ex.feed.day)}  # fmt: skip
            with open(args.ready_file + ".tmp", "w") as f:
                json.dump(info, f)
            import os

            os.replace(args.ready_file + ".tmp", args.ready_file)

    import signal

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        serve(cfg, ready)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"bot4: error: exchange: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_check(args) -> int:
    """Each pair through the simulator into md_gateway (in one process, loopback UDP):
    one JSON line per pair; exit 0 only if every pair's book matched LOBSTER's."""
    from bot4.gateways.bookcheck import check_pair
    from bot4.marketdata.lobster import LobsterError

    failed = 0
    for path in args.lobster:
        try:
            res = check_pair(path, drop_every=args.drop_every, rate=args.rate, store=args.store,
                             timeout_s=args.timeout)  # fmt: skip
        except (OSError, ValueError, LobsterError, TimeoutError) as exc:
            print(f"bot4: error: exchange check: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(res), flush=True)
        failed += not res["ok"]
    if failed:
        print(f"bot4: error: exchange check: {failed} of {len(args.lobster)} pairs failed",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def add_parser(sub) -> None:
    e = sub.add_parser("exchange", help="the exchange simulator (ITCH/MoldUDP64, OUCH/SoupBinTCP)")
    esub = e.add_subparsers(dest="exchange_cmd", required=True)
    s = esub.add_parser("serve", help="serve a LOBSTER day (or the synthetic source) over ITCH "
                        "and OUCH until stopped")  # fmt: skip
    s.add_argument("lobster", nargs="*", help="LOBSTER pairs (file, zip or directory), one day")
    s.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="serve N events of bot4's synthetic source instead of LOBSTER pairs")  # fmt: skip
    s.add_argument("--instruments", type=int, default=3, help="synthetic instruments (3)")
    s.add_argument("--synthetic-seed", type=int, default=1, help="synthetic source seed (1)")
    s.add_argument("--host", default="127.0.0.1", help="address the servers bind (127.0.0.1)")
    s.add_argument("--md-to", type=_addr, action="append",
                   help="HOST:PORT the ITCH feed is sent to (repeatable; 127.0.0.1:31000)")  # fmt: skip
    s.add_argument("--rerequest-port", type=int, default=31001, help="MoldUDP64 re-request (31001)")
    s.add_argument("--ouch-port", type=int, default=31002, help="SoupBinTCP / OUCH (31002)")
    s.add_argument("--rate", type=float, default=20000.0, help="ITCH messages/s (0: at once)")
    s.add_argument("--session", default="BOT4SIM", help="session name (10 chars)")
    s.add_argument("--heartbeat", type=float, default=1.0, help="MoldUDP64 heartbeat period, s")
    s.add_argument("--user", action="append", help="USER:PASSWORD allowed (default: anyone)")
    s.add_argument("--no-cancel-on-disconnect", action="store_true")
    s.add_argument("--stp-profile", default="binance", help="self-trade prevention profile")
    s.add_argument("--drop-every", type=int, default=0, help="fault: drop every k-th packet")
    s.add_argument("--duplicate-every", type=int, default=0, help="fault: send twice")
    s.add_argument("--reorder-every", type=int, default=0, help="fault: swap with the next")
    s.add_argument("--delay-ms", type=float, default=0.0, help="fault: delay every packet")
    s.add_argument("--rerequest-delay-ms", type=float, default=0.0,
                   help="fault: answer every re-request this much later")  # fmt: skip
    s.add_argument("--disconnect-after", type=int, default=0,
                   help="fault: end an OUCH connection after N sequenced messages")  # fmt: skip
    s.add_argument("--disconnect-random", type=int, default=0, metavar="N",
                   help="fault: end each OUCH connection after 1..N sequenced messages, "
                   "drawn from --seed")  # fmt: skip
    s.add_argument("--seed", type=int, default=0, help="seed of the random faults (0)")
    s.add_argument("--refuse-login", action="store_true", help="fault: reject every login")
    s.add_argument("--restart-after", type=float, default=0.0, metavar="S",
                   help="fault: S seconds after serving starts, go down (every OUCH "
                   "connection closed, no feed) and come back with the day intact")  # fmt: skip
    s.add_argument(
        "--restart-pause",
        type=float,
        default=1.0,
        metavar="S",
        help="how long the restart fault stays down (1.0)",
    )
    s.add_argument("--bust-every", type=int, default=0, metavar="K",
                   help="fault: break every K-th execution (an OUCH Broken Trade right "
                   "after its Executed)")  # fmt: skip
    s.add_argument("--bust-fill", type=_numbers, default=(), metavar="N[,M...]",
                   help="fault: break the N-th (1-based, in the day's order) execution(s)")  # fmt: skip
    s.add_argument("--bust-match", type=_numbers, default=(), metavar="N[,M...]",
                   help="fault: break the execution(s) with these match numbers")  # fmt: skip
    s.add_argument("--start-on-login", action="store_true",
                   help="hold the feed (MoldUDP64 heartbeats only) until the first OUCH login")  # fmt: skip
    s.add_argument("--ready-file", help="write the bound ports as JSON here once serving")
    s.add_argument("--latency-log", metavar="FILE",
                   help="at exit, write feed send / OUCH Enter arrival stamps here (.npz)")  # fmt: skip
    s.set_defaults(fn=cmd_exchange)
    c = esub.add_parser(
        "check",
        help="serve each LOBSTER pair over ITCH/MoldUDP64 into md_gateway, dropping packets, "
        "and compare its book with LOBSTER's orderbook file at every row",
    )
    c.add_argument("lobster", nargs="+", help="LOBSTER pairs (directory, zip or file), one each")
    c.add_argument("--drop-every", type=int, default=100, help="drop every k-th packet (100)")
    c.add_argument("--rate", type=float, default=100000.0, help="ITCH messages/s (100000)")
    c.add_argument("--store", type=int, default=65536, help="md_gateway's store (65536)")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds per pair (600)")
    c.set_defaults(fn=cmd_check)
