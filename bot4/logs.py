"""One logging configuration for every bot4 process: the CLI, the supervisor, each stage.

Settings, first found wins:

1. the command line: ``bot4 --log-level LEVEL --log-format FORMAT ...`` (also after
   ``run``, ``record`` and ``stage``); the CLI exports what it was given as the two
   environment variables below, so the stages it spawns inherit it;
2. the environment: ``BOT4_LOG_LEVEL`` (``debug``, ``info``, ``warning``, ``error``) and
   ``BOT4_LOG_FORMAT`` (``text``, ``json``) — what a systemd unit sets;
3. the topology's ``[log]`` table: ``level``, ``format``;
4. ``info``, ``text``.

Formats. ``text``: a stage's line is ``<time> <process>[<pid>] <LEVEL> <message>``
followed by the event's fields as ``key=value`` (values that are not plain words as JSON),
the supervisor's and the CLI's are ``bot4: <message>`` (``bot4: error: ...`` at ERROR and
above), as before, their fields in JSON only. ``json``: one object per line (orjson): ``ts`` (UTC, ISO 8601, ms),
``level``, ``process``, ``pid``, ``logger``, ``msg`` (the rendered text), ``event`` (a
stable snake_case name, or null) and the event's fields at top level (a field named like
one of those keys is renamed ``field_<key>``); ``exc`` holds a traceback when one is
logged.

journald. When stderr is the stream systemd connected to the journal (``$JOURNAL_STREAM``
is ``<device>:<inode>`` of our stderr, as systemd documents), every line starts with the
syslog priority ``<N>`` — 3 error, 4 warning, 6 info, 7 debug (2 critical) — which
journald strips and stores as ``PRIORITY``, so ``journalctl -p warning`` shows warnings and
errors; text lines then carry no timestamp of their own (journald stamps them).

Events: :func:`event` logs a message with a name and fields (``log_event(log, WARNING,
"ring_full", "...", ring="orders", waits=3)``); the formatters render the fields, never a
Python repr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import orjson

LEVEL_ENV = "BOT4_LOG_LEVEL"
FORMAT_ENV = "BOT4_LOG_FORMAT"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")
DEFAULT_LEVEL, DEFAULT_FORMAT = "info", "text"
# syslog priorities (RFC 5424) journald reads from a "<N>" line prefix
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_RESERVED = frozenset({"ts", "level", "process", "pid", "logger", "msg", "event", "exc"})
_HANDLER_MARK = "_bot4_handler"


class LogConfigError(ValueError):
    """A level or format that is not one of the documented names."""


@dataclass(frozen=True)
class LogConfig:
    """Resolved settings: ``level`` one of :data:`LEVELS`, ``format`` one of :data:`FORMATS`."""

    level: str = DEFAULT_LEVEL
    format: str = DEFAULT_FORMAT

    @property
    def levelno(self) -> int:
        return LEVELS[self.level]


def check_level(value: str, where: str) -> str:
    v = str(value).lower()
    if v not in LEVELS:
        raise LogConfigError(f"{where}: {value!r}: use one of {', '.join(LEVELS)}")
    return v


def check_format(value: str, where: str) -> str:
    v = str(value).lower()
    if v not in FORMATS:
        raise LogConfigError(f"{where}: {value!r}: use one of {', '.join(FORMATS)}")
    return v


def resolve(level: str | None = None, fmt: str | None = None, topology: Any = None) -> LogConfig:
    """The settings in force: ``level``/``fmt`` (command line) over the environment over
    the topology's ``[log]`` table over the defaults. Raises :class:`LogConfigError`."""
    lv = level or os.environ.get(LEVEL_ENV) or getattr(topology, "log_level", None)
    fm = fmt or os.environ.get(FORMAT_ENV) or getattr(topology, "log_format", None)
    return LogConfig(
        check_level(lv or DEFAULT_LEVEL, LEVEL_ENV if lv and not level else "log level"),
        check_format(fm or DEFAULT_FORMAT, FORMAT_ENV if fm and not fmt else "log format"),
    )


def export(cfg: LogConfig) -> None:
    """Put ``cfg`` in the environment, for the processes this one starts."""
    os.environ[LEVEL_ENV] = cfg.level
    os.environ[FORMAT_ENV] = cfg.format


def under_journald(stream: IO | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd gave this process:
    ``$JOURNAL_STREAM`` names its device and inode (a child whose stderr was redirected
    elsewhere inherits the variable, hence the comparison)."""
    js = os.environ.get("JOURNAL_STREAM")
    if not js:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(x) for x in js.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (7 debug)."""
    for lv, prio in _PRIORITY:
        if levelno >= lv:
            return prio
    return 7


def _word(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return orjson.dumps(v).decode()
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str) and v and not any(c.isspace() or c in '"=' for c in v):
        return v
    return _json(v)


def _json(v: Any) -> str:
    return orjson.dumps(
        v, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    ).decode()


class Bot4Formatter(logging.Formatter):
    """Renders a record as bot4 text or JSON, with the journald prefix when asked.

    ``process``: the name in each line (a stage or group name, ``supervisor``, ``bot4``);
    ``tool``: text lines in the CLI's ``bot4: ...`` convention instead of the stage form."""

    def __init__(self, cfg: LogConfig, process: str, *, journald: bool, tool: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.process = process
        self.journald = journald
        self.tool = tool

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        event_name = getattr(record, "event", None)
        msg = record.getMessage()
        if self.cfg.format == "json":
            doc = {
                "ts": _iso(record.created),
                "level": record.levelname.lower(),
                "process": self.process,
                "pid": record.process,
                "logger": record.name,
                "event": event_name,
                "msg": msg,
            }
            for k, v in fields.items():
                doc[f"field_{k}" if k in _RESERVED else k] = v
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            line = _json(doc)
        else:
            if fields and not self.tool:  # a tool's line says it all in words
                msg += "  " + " ".join(f"{k}={_word(v)}" for k, v in fields.items())
            if record.exc_info:
                msg += "\n" + self.formatException(record.exc_info)
            if self.tool:
                lead = "error: " if record.levelno >= logging.ERROR else ""
                line = f"bot4: {lead}{msg}"
            else:
                stamp = "" if self.journald else f"{self.formatTime(record)} "
                line = f"{stamp}{self.process}[{record.process}] {record.levelname} {msg}"
        if self.journald:
            prefix = f"<{priority(record.levelno)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))
        return line


def _iso(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1000):03d}Z"


def formatter(
    cfg: LogConfig, process: str, *, stream: IO | None = None, tool: bool = False
) -> Bot4Formatter:
    """The formatter for lines written to ``stream`` (default stderr)."""
    return Bot4Formatter(cfg, process, journald=under_journald(stream), tool=tool)


def configure(
    cfg: LogConfig, process: str, *, stream: IO | None = None, tool: bool = False
) -> logging.Handler:
    """Install ``cfg`` on the root logger of this process: one stream handler (stderr by
    default) with :class:`Bot4Formatter`; replaces the handler an earlier call installed
    and leaves any other (a test's capture) alone. Returns the handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
            with contextlib.suppress(Exception):
                h.close()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(formatter(cfg, process, stream=handler.stream, tool=tool))
    root.addHandler(handler)
    root.setLevel(cfg.levelno)
    return handler


def log_event(
    logger: logging.Logger, level: int, event: str, msg: str, *args: Any, **fields: Any
) -> None:
    """Log ``msg % args`` as event ``event`` with ``fields`` (rendered by the formatters
    as ``key=value`` or JSON members). Cheap when ``level`` is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, *args, extra={"event": event, "fields": fields})


def configure_process(topology: Any, process: str) -> LogConfig:
    """A stage's or group's process: the settings from the environment (what ``bot4 run``
    exported, or the unit's) over the topology's ``[log]``; an invalid value is logged as
    an error and the defaults used, so a typo in a unit never keeps a stage from running."""
    try:
        cfg, bad = resolve(topology=topology), None
    except LogConfigError as exc:
        cfg, bad = LogConfig(), exc
    configure(cfg, process)
    if bad is not None:
        logging.getLogger("bot4.stage").error("%s: %s; logging at info, as text", process, bad)
    return cfg
