"""Bad input, counted by reason: what a market data reader kept out and why.

Readers never raise in the middle of a file for a bad row: they exclude it and count it
here under its ``Code``, with the first few 1-based line numbers, ascending, for the log.
Problems that make the whole input unusable (missing, empty, unsupported columns) raise
before any work. One class for every reader (CSV/Parquet, LOBSTER).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot4.records.errors import Code, describe

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
        lines = [int(x) for x in lines]
        if lines:
            self.counts[code] = self.counts.get(code, 0) + len(lines)
            have = self.first_lines.get(code, ())
            self.first_lines[code] = tuple(sorted(have + tuple(lines[: max(0, keep - len(have))])))

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
