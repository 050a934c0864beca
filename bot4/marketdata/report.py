"""Bad input, counted by reason: what a market data reader kept out and why.

Readers never raise in the middle of a file for a bad row: they exclude it and count it
here under its ``Code``, with the first few 1-based line numbers, ascending, for the log.
Problems that make the whole input unusable (missing, empty, unsupported columns, a
LOBSTER pair whose files do not match) raise before any work. One class for every reader
(CSV/Parquet, LOBSTER, journal); the policy is in ``docs/inputs.md``.

Input not in event-time order is refused, never thinned: :func:`check_sorted` raises
:class:`UnsortedInputError` naming the first row earlier than a row before it (every
reader calls it on the rows that passed the row checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bot4.records.errors import Bot4Error, Code, describe

KEEP_LINES = 5


@dataclass
class BadInputReport:
    """``rows``: data rows read; ``kept``: records returned; ``counts``: Code -> rows
    excluded for it; ``first_lines``: Code -> the first few line numbers excluded for it."""

    source: str
    rows: int = 0
    kept: int = 0
    counts: dict[Code, int] = field(default_factory=dict)
    first_lines: dict[Code, tuple[int, ...]] = field(default_factory=dict)

    def add_many(self, code: Code, lines, keep: int = KEEP_LINES) -> None:
        n = len(lines)
        if n:
            self.counts[code] = self.counts.get(code, 0) + n
            have = self.first_lines.get(code, ())
            first = tuple(int(x) for x in lines[: max(0, keep - len(have))])
            self.first_lines[code] = tuple(sorted(have + first))

    def add(self, code: Code, line: int | None = None) -> None:
        if line is None:
            self.counts[code] = self.counts.get(code, 0) + 1
        else:
            self.add_many(code, [line])

    @property
    def excluded(self) -> int:
        return sum(self.counts.values())

    total = excluded

    @property
    def clean(self) -> bool:
        return self.excluded == 0

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "rows": self.rows,
            "kept": self.kept,
            "bad": {c.name: n for c, n in sorted(self.counts.items())},
            "first_lines": {c.name: list(v) for c, v in sorted(self.first_lines.items())},
        }

    def summary(self) -> str:
        if self.clean:
            return f"{self.source}: {self.rows} rows, all kept"
        parts = ", ".join(
            f"{c.name.lower()} {n} (lines {list(self.first_lines.get(c, ()))})"
            for c, n in sorted(self.counts.items())
        )
        return f"{self.source}: kept {self.kept} of {self.rows} rows; excluded {parts}"

    def __str__(self) -> str:
        if self.clean:
            return f"{self.source}: {self.rows} rows, all kept"
        parts = [
            f"{code.name} x{n} ({describe(code)}; first at lines {', '.join(map(str, self.first_lines.get(code, ())))})"
            for code, n in sorted(self.counts.items())
        ]
        return f"{self.source}: {self.rows} rows, {self.excluded} excluded: " + "; ".join(parts)


class UnsortedInputError(Bot4Error):
    """Recorded input not in event-time order (``Code.TIME_BACKWARDS``): refused whole.

    ``source``; ``line`` the first row (1-based, in ``what`` units: line, row, record)
    earlier than a row before it, ``prev`` the line of the latest row before it;
    ``count`` how many rows are earlier than the latest row before them."""

    code = Code.TIME_BACKWARDS

    def __init__(self, source: str, line: int, prev: int, count: int, what: str = "line"):
        self.source, self.line, self.prev, self.count, self.what = source, line, prev, count, what
        self.detail = (
            f"timestamps not sorted: {what} {line} is earlier than {what} {prev} "
            f"({count} {what}{'s' if count != 1 else ''} out of order); sort the data by event time"
        )
        super().__init__(f"{source}: {self.detail}")


def check_sorted(
    source: str,
    ts: np.ndarray,
    lines: np.ndarray,
    what: str = "line",
    prev_ts: int | None = None,
    prev_line: int = 0,
) -> None:
    """Refuse rows ``ts`` (event times, their 1-based ``lines``) that are not in
    non-decreasing order, also against ``prev_ts`` at ``prev_line`` (the latest row of an
    earlier chunk of the same input): :class:`UnsortedInputError`. Equal times are in
    order."""
    ts = np.asarray(ts, np.int64)
    if ts.size == 0:
        return
    run = np.maximum.accumulate(ts)
    head = np.int64(-(2**63)) if prev_ts is None else np.int64(prev_ts)
    before = np.concatenate(([head], run[:-1]))
    before = np.maximum(before, head)
    back = np.flatnonzero(ts < before)
    if back.size == 0:
        return
    j = int(back[0])
    if prev_ts is not None and (j == 0 or int(run[j - 1]) < prev_ts):
        prev = prev_line
    else:
        prev = int(lines[int(np.argmax(ts[:j]))])  # first row holding the running maximum
    raise UnsortedInputError(source, int(lines[j]), prev, int(back.size), what)


class BadInputLine(str):
    """The bad-input line, carrying the report it says (``report``), so the commands that
    print it can also put the counts by reason into their JSON reports."""

    report: BadInputReport


def bad_input_line(report: BadInputReport) -> BadInputLine | None:
    """The one line ``bot4 run``, ``bot4 record`` and ``bot4 replay`` print for an input
    that loaded with rows kept out (None when it is clean): source, rows kept of read,
    then each reason with its count and first lines."""
    if report.clean:
        return None
    line = BadInputLine(f"bad input: {report.summary()}")
    line.report = report
    return line
