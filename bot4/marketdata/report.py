"""Bad input, counted by reason: what a market data reader kept out and why.

Readers never raise in the middle of a file for a bad row: they exclude it and count it
here under its ``Code`` (with the first few line numbers, for the log). Problems that make
the whole input unusable (missing, empty, unsupported columns) raise before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot4.records.errors import Code

KEEP_LINES = 5


@dataclass
class BadInputReport:
    source: str
    counts: dict[Code, int] = field(default_factory=dict)
    lines: dict[Code, list[int]] = field(default_factory=dict)
    rows_read: int = 0
    rows_kept: int = 0

    def add(self, code: Code, line: int | None = None, n: int = 1) -> None:
        self.counts[code] = self.counts.get(code, 0) + n
        if line is not None:
            kept = self.lines.setdefault(code, [])
            if len(kept) < KEEP_LINES:
                kept.append(line)

    def add_many(self, code: Code, lines) -> None:
        lines = list(lines)
        if lines:
            self.counts[code] = self.counts.get(code, 0) + len(lines)
            kept = self.lines.setdefault(code, [])
            kept.extend(int(x) for x in lines[: max(0, KEEP_LINES - len(kept))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "bad": {c.name: n for c, n in sorted(self.counts.items())},
            "first_lines": {c.name: v for c, v in sorted(self.lines.items())},
        }

    def summary(self) -> str:
        if not self.counts:
            return f"{self.source}: {self.rows_kept} rows, no bad input"
        parts = ", ".join(
            f"{c.name.lower()} {n} (lines {self.lines.get(c, [])})"
            for c, n in sorted(self.counts.items())
        )
        return f"{self.source}: kept {self.rows_kept} of {self.rows_read} rows; excluded {parts}"
