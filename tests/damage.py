"""Damaged input files, generated from a seed: the corpus of the input fuzz tests.

Each damage is a pure function of (clean bytes, generator): the kinds a chaos campaign
met in real files — bytes that are not UTF-8, NULs, numbers too large for int64, lines cut
short or joined, fields added or lost, lines swapped (time order), an empty or cut file,
digits that are not ASCII. ``python -m tests.damage SEED DIR`` writes a corpus to look at.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

Damage = Callable[[bytes, np.random.Generator], bytes]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _pick(rng: np.random.Generator, n: int, lo: int = 0) -> int:
    return int(rng.integers(lo, max(lo + 1, n)))


def flip_byte(data: bytes, rng) -> bytes:
    """One byte replaced by a byte that is not UTF-8 on its own, a NUL or a comma."""
    if not data:
        return data
    i = _pick(rng, len(data))
    b = bytes([int(rng.choice([0x00, 0xFF, 0xC3, 0x80, 0x2C, 0x0A, 0x22]))])
    return data[:i] + b + data[i + 1 :]


def huge_number(data: bytes, rng) -> bytes:
    """A field of one line replaced by a number far beyond int64 (or just beyond)."""
    lines = _lines(data)
    k = _pick(rng, len(lines) - 1, 1) if len(lines) > 2 else 0
    fields = lines[k].split(b",")
    j = _pick(rng, len(fields))
    big = rng.choice([b"9" * 40, b"9223372036854775808", b"-9223372036854775809", b"1e400"])
    fields[j] = bytes(big)
    lines[k] = b",".join(fields)
    return b"\n".join(lines)


def truncate(data: bytes, rng) -> bytes:
    """The file cut at a random byte (a copy that did not finish)."""
    return data[: _pick(rng, len(data))]


def drop_field(data: bytes, rng) -> bytes:
    """A comma removed from one line (a field lost) or doubled (a field added)."""
    commas = [i for i, c in enumerate(data) if c == 0x2C]
    if not commas:
        return data
    i = commas[_pick(rng, len(commas))]
    return data[:i] + (b"" if rng.random() < 0.5 else b",,") + data[i + 1 :]


def join_lines(data: bytes, rng) -> bytes:
    """A newline removed: two rows run together."""
    nls = [i for i, c in enumerate(data) if c == 0x0A]
    if not nls:
        return data
    i = nls[_pick(rng, len(nls))]
    return data[:i] + data[i + 1 :]


def swap_lines(data: bytes, rng) -> bytes:
    """Two data lines exchanged: time order broken (or not, when equal times)."""
    lines = _lines(data)
    if len(lines) < 4:
        return data
    a, b = sorted(rng.choice(np.arange(1, len(lines) - 1), 2, replace=False).tolist())
    lines[a], lines[b] = lines[b], lines[a]
    return b"\n".join(lines)


def unicode_digits(data: bytes, rng) -> bytes:
    """An ASCII digit replaced by an Arabic-Indic one (Python's int() would accept it)."""
    digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
    if not digits:
        return data
    i = digits[_pick(rng, len(digits))]
    return data[:i] + chr(0x0660 + data[i] - 0x30).encode() + data[i + 1 :]


def garbage_line(data: bytes, rng) -> bytes:
    """A line of random bytes inserted."""
    lines = _lines(data)
    k = _pick(rng, len(lines))
    lines.insert(k, rng.integers(0, 256, _pick(rng, 80, 1), dtype=np.uint8).tobytes())
    return b"\n".join(lines)


def empty(data: bytes, rng) -> bytes:
    return b"" if rng.random() < 0.5 else b"\n" * _pick(rng, 4, 1)


DAMAGES: dict[str, Damage] = {
    f.__name__: f
    for f in (
        flip_byte,
        huge_number,
        truncate,
        drop_field,
        join_lines,
        swap_lines,
        unicode_digits,
        garbage_line,
        empty,
    )
}


def damaged(data: bytes, rng: np.random.Generator, n: int = 1) -> tuple[bytes, list[str]]:
    """``data`` with ``n`` damages drawn from ``rng``: (bytes, names of the damages)."""
    names = []
    for _ in range(n):
        name = list(DAMAGES)[_pick(rng, len(DAMAGES))]
        if name == "empty" and rng.random() < 0.8:
            name = "flip_byte"  # an empty file says one thing; keep most cases richer
        data = DAMAGES[name](data, rng)
        names.append(name)
    return data, names


CLEAN_CSV = b"ts_event_ns,symbol,kind,side,price,qty\n" + b"".join(
    b"%d,%s,quote,%s,%s,%d\n"
    % (
        1000 + i,
        (b"AAPL", b"AMZN")[i % 2],
        (b"bid", b"ask")[(i // 2) % 2],
        (b"585.%02d" % (30 - i % 7) if (i // 2) % 2 == 0 else b"585.%02d" % (40 + i % 5))
        if i % 2 == 0
        else (b"220.%02d" % (1 + i % 7) if (i // 2) % 2 == 0 else b"220.%02d" % (20 + i % 5)),
        100 + i,
    )
    for i in range(40)
)


def main(argv: list[str]) -> int:
    seed, out = int(argv[0]), Path(argv[1])
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(int(argv[2]) if len(argv) > 2 else 50):
        data, names = damaged(CLEAN_CSV, rng, 1 + k % 3)
        (out / f"{k:03d}-{'+'.join(names)}.csv").write_bytes(data)
    print(f"seed {seed}: corpus in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
