"""Issue 18's proof, runnable on every LOBSTER sample pair: the books the md stage publishes
in a real pipeline (``bot4 run``: md with ``source = "lobster"`` -> persistence, journal
only) equal LOBSTER's orderbook file on every cell the messages determine.

For each pair (``find_pairs(DATA, recursive=True)``: the six zips, ``amzn_level1/`` and
``aapl_level10_first999/``) it runs the pipeline with ``depth`` = the file's levels, reads
the journal back and checks:

* market data journalled once and in order; one event per message;
* top of book (from the MD_QUOTE records) and every level (from BOOK_LEVEL) after every
  message against the file (``bot4.marketdata.crosscheck``): every determinable cell
  equal; the cells a level slid into (position N of the side a message emptied a level
  on, that row: no message describes them) reported apart, and the md stage's
  ``slide_in`` count equal to the level-emptying messages found from the files alone;
* the md stage's book counters (its ``market data summary`` log line): no gap of any
  reason, no check mismatch, no resync, ``seeded`` = 2 x levels, no ``MDF_BOOK_STALE``;
* the published market data equal, record for record (all fields but the stage's ``seq``,
  ``ts_recv_ns``), to the stream copied from the orderbook file before issue 18
  (``copied_stream``): where the replay's results could have changed.

Then a made-up gap through the default topology (md reading a copy of the 999-row AAPL
pair whose orderbook row 501 has AskSize_1 + 7; signals, risk, orders, venue as shipped):
the md stage counts the check mismatch by reason and re-seeds (``resync``), the records of
that message go out flagged ``MDF_BOOK_STALE`` and no quote is published from the book
meanwhile, and the risk stage halts AAPL for it (``book_stale_episodes`` 1; any intent
meanwhile is denied ``STATE_HALTED``) and holds no instrument stale at the end
(``--no-gap`` skips it).

    .venv/bin/python perf/mdbookcheck.py                  # every pair
    .venv/bin/python perf/mdbookcheck.py --only GOOG-10 AAPL-10-999

Exit 0 when every check of every pair held, 1 otherwise. Minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bot4.marketdata.builder import GAP_STATS
from bot4.marketdata.crosscheck import (
    compare_with_orderbook,
    copied_stream,
    journal_topology,
    journalled,
    logged_summary,
    md_summary,
    message_of,
    published_depth,
    published_top,
)
from bot4.marketdata.lobster import find_pairs, read_pair
from bot4.records import MD_QUOTE, MD_TRADE, MDF_BOOK_STALE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster-2012-06-21"

COMPARED = ("ts_event_ns", "price", "qty", "order_id", "instrument", "kind", "side", "flags")


def key_of(pair) -> str:
    key = f"{pair.ticker}-{pair.levels}"
    if pair.message.member is None:
        key += "-999" if pair.levels == 10 else "-csv"
    return key


def check_pair(pair, work: Path, timeout: float) -> list[str]:
    """Run the pipeline on ``pair``; returns the failed checks (empty: all held)."""
    key = key_of(pair)
    records, book, _ = read_pair(pair)
    levels = book.shape[1] // 4
    journal = work / key / "journal"
    topo = work / key / "t.toml"
    topo.parent.mkdir(parents=True, exist_ok=True)
    instance = f"mdbc{abs(hash((key, time.time()))) % 10**6}"
    topo.write_text(journal_topology(instance, pair.message.path, levels, journal, 65536))
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "bot4.cli", "run", str(topo), "--no-db", "--quiet"]
        + ["--duration", str(int(timeout))],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        start_new_session=True,
        env={**os.environ, "BOT4_DATA_DIR": str(work / key / "bot4-data")},  # reports there
    )
    wall = time.monotonic() - t0
    if run.returncode != 0:
        return [f"bot4 run exited {run.returncode}: {run.stderr.strip()[-400:]}"]
    failed = []
    summary = md_summary(run.stderr)
    counters = summary["book"]
    md, lv = journalled(journal)
    n = len(records)

    if not (np.diff(md["seq"].astype(np.int64)) == 1).all():
        failed.append("market data not journalled once and in order")
    if not (np.diff(lv["seq"].astype(np.int64)) == 1).all():
        failed.append("depth not journalled once and in order")
    events = (md["kind"] != MD_QUOTE) & (md["kind"] != MD_TRADE)
    if int(events.sum()) != n or not (md["order_id"][events] == records["order_id"]).all():
        failed.append(f"{int(events.sum())} events journalled for {n} messages")
        return failed

    rows = book[records["seq"].astype(np.int64) - 1]
    top = published_top(md, n)
    pos = np.searchsorted(md["seq"], lv["parent_seq"])
    pos = np.minimum(pos, len(md) - 1)
    if not (md["seq"][pos] == lv["parent_seq"]).all():
        failed.append("a level update names no journalled event")
    depth = published_depth(md, lv, pos, n, levels)
    if not (depth[:, :4] == top).all():
        failed.append("level 1 of the depth differs from the quotes")
    cmp_top = compare_with_orderbook(records, book, top)
    cmp = compare_with_orderbook(records, book, depth)
    if not cmp_top.ok:
        failed.append(f"top of book: {cmp_top.line()}")
    if not cmp.ok:
        failed.append(f"depth: {cmp.line()}")
    if counters["slide_in"] != cmp.emptying_messages:
        failed.append(
            f"slide_in {counters['slide_in']} != {cmp.emptying_messages} level-emptying messages"
        )
    gaps = {k: counters[k] for k in GAP_STATS if counters[k]}
    if gaps or counters["resync"] or counters["stale_messages"]:
        failed.append(f"gaps {gaps}, resync {counters['resync']}")
    if counters["seeded"] != 2 * levels or counters["checked"] != n:
        failed.append(f"seeded {counters['seeded']}, checked {counters['checked']} of {n}")
    if (md["flags"] & MDF_BOOK_STALE).any():
        failed.append("records flagged MDF_BOOK_STALE")
    copied = copied_stream(records, book)
    same = len(copied) == len(md) and all((md[f] == copied[f]).all() for f in COMPARED)
    if not same:
        failed.append(f"published market data ({len(md)}) differs from the copied ({len(copied)})")
    exact = int((depth == rows).all(axis=1).sum())
    print(
        f"{key:<12} {n:>7} msgs  {len(md):>7} md + {len(lv):>8} level records  {wall:5.1f} s  "
        f"{'ok' if not failed else 'FAILED'}\n"
        f"    top: {cmp_top.line()}\n    depth ({levels} levels): {cmp.line()}\n"
        f"    rows equal in every cell: {exact}/{n}; md book counters: slide_in "
        f"{counters['slide_in']}, seeded {counters['seeded']}, unknown_order "
        f"{counters['unknown_order']}, gaps {gaps or 'none'}, resync {counters['resync']}; "
        f"market data = the copied stream: {same}",
        flush=True,
    )
    for f in failed:
        print(f"    FAILED: {f}", flush=True)
    return failed


def check_gap(work: Path, timeout: float) -> list[str]:
    """The made-up gap (module docstring) through the default topology."""
    src = DATA / "aapl_level10_first999"
    gap = work / "gap" / "data"
    gap.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        text = f.read_text()
        if "orderbook" in f.name:
            rows = text.split("\n")
            cols = rows[500].split(",")
            cols[1] = str(int(cols[1]) + 7)  # AskSize_1 after message 501
            rows[500] = ",".join(cols)
            text = "\n".join(rows)
        (gap / f.name).write_text(text)
    from importlib import resources

    topo = resources.files("bot4.config").joinpath("default.toml").read_text()
    synthetic = 'params = { source = "synthetic", rate = 20000, instruments = 3, seed = 1 }'
    if synthetic not in topo:
        return ["the default topology's md line changed: update check_gap"]
    topo = topo.replace(synthetic, f'params = {{ source = "lobster", path = "{gap}" }}')
    instance = f"mdbg{abs(hash(time.time())) % 10**6}"
    topo = "\n".join(
        f'instance = "{instance}"' if x.startswith("instance =") else x for x in topo.splitlines()
    )
    topo += (  # what md publishes, journalled too
        '\n[[ring]]\nname = "md_journal"\nfrom = "md"\nto = "persistence"\n'
        'type = "market_data"\ncapacity = 8192\n'
    )
    (work / "gap" / "t.toml").write_text(topo)
    data_dir = work / "gap" / "bot4-data"
    run = subprocess.run(
        [sys.executable, "-m", "bot4.cli", "run", str(work / "gap" / "t.toml"), "--no-db"]
        + ["--quiet", "--duration", str(int(timeout))],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        start_new_session=True,
        env={**os.environ, "BOT4_DATA_DIR": str(data_dir)},
    )
    if run.returncode != 0:
        return [f"gap run: bot4 run exited {run.returncode}: {run.stderr.strip()[-400:]}"]
    book = md_summary(run.stderr)["book"]
    risk = logged_summary(run.stderr, "risk summary")
    md, _ = journalled(data_dir / "journal" / instance)
    md = md[md["instrument"] > 0]
    msg = message_of(md)
    flagged = sorted(set(msg[(md["flags"] & MDF_BOOK_STALE) != 0].tolist()))
    quotes_in_gap = int(((md["kind"] == MD_QUOTE) & np.isin(msg, flagged)).sum())
    failed = []
    if not (book["check_mismatch"] >= 1 and book["resync"] == book["check_mismatch"]):
        failed.append(f"gap: md counters {book}")
    if 500 not in flagged or len(flagged) != book["stale_messages"] or quotes_in_gap:
        failed.append(f"gap: flagged messages {flagged}, quotes among them {quotes_in_gap}")
    episodes = risk["stale"]["book_stale_episodes"]
    if episodes != 1 or risk["stale"]["instruments"]:
        failed.append(f"gap: risk stale {risk['stale']}")
    print(
        f"gap (AAPL-10-999, row 501 changed, default topology): md check_mismatch "
        f"{book['check_mismatch']}, resync {book['resync']}, messages flagged MDF_BOOK_STALE "
        f"{flagged} (no quote among them: {quotes_in_gap == 0}); risk book_stale_episodes "
        f"{episodes}, decisions {risk['decisions']}, cancel_all_sent "
        f"{risk.get('cancel_all_sent')}, stale at the end {risk['stale']['instruments']}"
        f"  {'ok' if not failed else 'FAILED'}",
        flush=True,
    )
    for f in failed:
        print(f"    FAILED: {f}", flush=True)
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="pair keys (e.g. GOOG-10 AMZN-1-csv AAPL-10-999)")
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pipeline run")
    ap.add_argument("--no-gap", action="store_true", help="skip the made-up gap run")
    a = ap.parse_args()
    pairs = find_pairs(DATA, recursive=True)
    if a.only:
        pairs = [p for p in pairs if key_of(p) in a.only]
    if not pairs:
        print(f"mdbookcheck: no LOBSTER pair selected under {DATA}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bot4-mdbookcheck-") as tmp:
        work = Path(a.out or tmp)
        bad = {}
        for pair in pairs:
            failed = check_pair(pair, work, a.timeout)
            if failed:
                bad[key_of(pair)] = failed
        if not a.no_gap and check_gap(work, a.timeout):
            bad["gap"] = True
    npairs = len(bad) - ("gap" in bad)
    print(f"{len(pairs) - npairs}/{len(pairs)} pairs: every check held" + (
        f"; failed: {', '.join(bad)}" if bad else ""
    ))  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
