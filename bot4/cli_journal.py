"""``bot4 journal cat | verify | repair``: list, verify or repair a journal directory
(exit 1: damaged or a gap, 3: a torn tail).
"""

from __future__ import annotations

import sys

import orjson

JOURNAL_EXIT_DAMAGED = 1  # corruption, a gap, a damaged tail: nothing past it was read
JOURNAL_EXIT_TORN = 3  # complete up to a torn tail (a crash's trace; the writer truncates it)


def cmd_journal(args) -> int:
    from pathlib import Path

    from bot4.journal import JournalCorrupt, JournalReader
    from bot4.records import RECORD_TYPES
    from bot4.records.errors import Bot4Error, Code

    if not Path(args.dir).is_dir():
        raise Bot4Error(f"{args.dir}: no such journal directory", Code.CONFIG_INVALID)
    _not_a_parent_of_journals(Path(args.dir))
    if args.action == "repair":
        return _journal_repair(args.dir)
    names = {i: n for i, n in enumerate(RECORD_TYPES, start=1)}
    reader = JournalReader(args.dir)
    if args.action == "verify":
        rep = reader.verify()
        print(f"files {rep.files}  frames {rep.frames}  bytes {rep.bytes:,}")
        for name, n in rep.records.items():
            if n:
                print(f"  {name:<16}{n:>12,}")
        if rep.corruption is not None:
            print(f"bot4: error: {rep.corruption}", file=sys.stderr)
            return JOURNAL_EXIT_DAMAGED
        if rep.torn_tail is not None:
            print(f"bot4: error: {rep.torn_tail.describe()}", file=sys.stderr)
            return JOURNAL_EXIT_TORN
        return 0
    try:
        limited = _journal_cat(reader, names, args)
    except JournalCorrupt as exc:
        sys.stdout.flush()
        print(f"bot4: error: {exc}", file=sys.stderr)
        return JOURNAL_EXIT_DAMAGED
    if reader.torn_tail is not None and not limited:
        sys.stdout.flush()
        print(f"bot4: error: {reader.torn_tail.describe()}", file=sys.stderr)
        return JOURNAL_EXIT_TORN
    return 0


def _not_a_parent_of_journals(d) -> None:
    """A directory with no journal file whose subdirectories hold journals (the data
    directory's ``journal/``, one journal per instance) is a wrong path, not an empty
    journal: one line naming them, instead of ``files 0`` and exit 0."""
    from bot4.journal.format import list_segments
    from bot4.records.errors import Bot4Error, Code

    def holds_journal(p) -> bool:
        try:
            return p.is_dir() and bool(list_segments(p))
        except OSError:  # unreadable: not ours to judge here
            return False

    if holds_journal(d):
        return
    try:
        inner = sorted(c.name for c in d.iterdir() if holds_journal(c))
    except OSError:
        return
    if inner:
        raise Bot4Error(
            f"{d}: no journal here; its subdirectories hold journals: {', '.join(inner)}",
            Code.CONFIG_INVALID,
        )


def _journal_repair(directory: str) -> int:
    from pathlib import Path

    from bot4.journal_repair import REPAIR_LOG, RepairRefused, repair

    try:
        rec = repair(directory)
    except RepairRefused as exc:
        print(f"bot4: error: {exc}", file=sys.stderr)
        return JOURNAL_EXIT_DAMAGED
    if rec is None:
        print(f"{directory}: every frame intact, nothing to repair")
        return 0
    print(
        f"cut {rec.bytes} bytes of {rec.file} from offset {rec.offset} (frame {rec.frame} on; "
        f"{rec.action}): {rec.kind}: {rec.reason}"
    )
    where = Path(directory)
    print(f"saved them to {where / rec.saved}; audit record in {where / REPAIR_LOG}")
    return 0


def _journal_cat(reader, names: dict, args) -> bool:
    """Print the frames (or records as JSON lines); True if ``--limit`` stopped it early."""
    for shown, (pos, rtype, recs) in enumerate(reader, start=1):
        if args.json:
            for r in recs:
                row = {"frame": pos, "type": names.get(rtype, rtype)}
                row.update(
                    {
                        f: (r[f].item() if r[f].ndim == 0 else None)
                        for f in recs.dtype.names
                        if not f.startswith("reserved")
                    }
                )
                row = {
                    k: (v.decode(errors="replace").rstrip("\x00") if isinstance(v, bytes) else v)
                    for k, v in row.items()
                }
                sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        else:
            print(
                f"frame {pos:>8}  {names.get(rtype, rtype):<16} {len(recs):>5} records  seq {int(recs['seq'][0])}..{int(recs['seq'][-1])}"
            )
        if args.limit and shown >= args.limit:
            return True
    return False
