"""What every bot4 command line shares: exit codes, the logging options, and the run
wrapper that turns errors into one ``bot4: error:`` line.

Below :mod:`bot4.cli` and the sub-CLIs (``bot4.db.cli``, ``bot4.replay.cli``, ...), so a
sub-CLI run on its own (``python -m bot4.db.cli``) behaves as ``bot4 db`` without
importing the main command back.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from bot4.interrupts import arm

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "add_log_options",
    "configure_logging",
    "run_parsed",
    "stdout_gone",
    "sub_parser",
]

EXIT_FAILURE = 1  # a runtime failure: one `bot4: error:` line
EXIT_USAGE = 2  # argparse's code for a bad command line; our own usage errors use it too
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool SIGPIPE killed


def add_log_options(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--log-level`` / ``--log-format`` (bot4.logs): on the top parser and again on the
    commands that start processes, so they may follow the subcommand too."""
    from bot4.logs import FORMATS, LEVELS

    extra = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument(
        "--log-level",
        choices=list(LEVELS),
        help="debug|info|warning|error (default: $BOT4_LOG_LEVEL, topology [log], info)",
        **extra,
    )
    p.add_argument(
        "--log-format",
        choices=list(FORMATS),
        help="text or JSON lines (default: $BOT4_LOG_FORMAT, topology [log], text)",
        **extra,
    )


def configure_logging(args) -> None:
    """This process's logging (bot4.logs), and the settings given on the command line
    exported for the processes it starts (stages inherit the environment)."""
    import os

    from bot4 import logs

    try:
        cfg = logs.resolve(args.log_level, args.log_format)
    except logs.LogConfigError as exc:  # from the environment: argparse checked ours
        print(f"bot4: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE) from None
    if args.log_level:
        os.environ[logs.LEVEL_ENV] = cfg.level
    if args.log_format:
        os.environ[logs.FORMAT_ENV] = cfg.format
    logs.configure(cfg, "bot4", tool=True)


def stdout_gone() -> int:
    """The reader of our stdout went away (``bot4 journal cat --json | head``): stop quietly
    as a tool killed by SIGPIPE would (exit 141), and point stdout at /dev/null so the
    interpreter's final flush does not raise again."""
    import os

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def run_parsed(build_parser, argv: list[str]) -> int:
    """Parse ``argv`` with ``build_parser()`` (a parser whose subcommands set ``fn``) and
    run the command. Exit codes (README "Exit codes"): 0 success; 1 a runtime failure (one
    ``bot4: error:`` line); 2 a usage error (argparse); 3 ``bot4 run``/``record``: the
    restart policy halted the pipeline (``bot4 journal verify``/``db load``: a torn
    tail); 130 interrupted; 141 stdout closed by its reader."""
    try:
        from bot4.records.errors import Bot4Error

        args = build_parser().parse_args(argv)
        configure_logging(args)
        # a SIGINT counted while the modules imported (bot4.interrupts) is raised
        # here, and later ones as usual
        arm()
        try:
            return args.fn(args) or 0
        except Bot4Error as exc:
            print(f"bot4: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    except KeyboardInterrupt:
        # Ctrl-C outside the supervisor (which takes SIGINT over while stages run): during
        # the imports or the database's start a `bot4 run` stops as asked, nothing to
        # drain yet; any other command ends the conventional way
        print("bot4: interrupted", file=sys.stderr)
        return 0 if argv[:1] == ["run"] else 130
    except BrokenPipeError:
        return stdout_gone()
    except ModuleNotFoundError as exc:
        from bot4.extras import missing_extra

        line = missing_extra(exc)  # an optional part not installed: say which extra
        if line is None:
            raise
        print(f"bot4: error: {line}", file=sys.stderr)
        return EXIT_FAILURE


def sub_parser(add_parser) -> argparse.ArgumentParser:
    """A ``bot4`` parser with the one subcommand ``add_parser`` registers (a sub-CLI run
    on its own: the same options, help and errors as through ``bot4``)."""
    p = argparse.ArgumentParser(prog="bot4", description="low-latency trading pipeline")
    add_log_options(p, top=True)
    add_parser(p.add_subparsers(dest="cmd", required=True))
    return p
