"""Book kernel A/B (issue 18): ``bot4.marketdata.builder.build_kernel`` as committed against a
variant of it generated from its source at run time, on the same LOBSTER messages in the
same process, rounds interleaved, medians of CPU time (``thread_time``). The variant
rewrites both modules the kernel is made of, ``bot4/marketdata/book_step.py`` (the one
book step and its level helpers) and ``bot4/marketdata/builder.py``.

Variants (``--variant``):

* ``interleaved`` — one level array (instrument, side, level, 3) instead of the three
  (instrument, side, level) arrays ``px``, ``qty``, ``cnt``: each (price, size, count) in
  one 24-byte run (every ``px[...]``, ``qty[...]``, ``cnt[...]`` gets a fourth index 0/1/2,
  the kernel is handed the same 4-D array three times). Outputs (records, levels,
  counters) asserted byte-identical;
* ``tree:DIR`` — the two modules as they are in another checkout (e.g. ``git worktree add
  /tmp/old <commit>``): the committed kernel against an older or newer one, outputs
  asserted byte-identical;
* ablations, to see where the time goes (outputs differ, not compared): ``no-apply`` (no
  ``apply_event``: the book stays as seeded), ``no-map`` (no order map: adds not stored,
  reductions applied by the message's price), ``no-slide-in``, ``no-publish``,
  ``no-prefetch``.

::

    .venv/bin/python perf/booklayout_ab.py                 # interleaved, GOOG-10 and AMZN-5
    .venv/bin/python perf/booklayout_ab.py --variant no-apply --rounds 9
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bot4.marketdata import book_step as step
from bot4.marketdata import builder as old
from bot4.marketdata.lobster import find_pairs, read_pair
from bot4.records import BOOK_LEVEL, MARKET_DATA

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lobster-2012-06-21"


ABLATIONS = {
    "no-apply": (
        "gap = apply_event(b, window, i, r)",
        "gap = False",
    ),
    "no-map": (
        ("k = map_find(otab, oid)", "k = np.int64(-1)"),
        ("k = map_put(otab, oid)", "k = np.int64(-1)"),
        ("live[0] += 1", "pass"),
    ),
    "no-slide-in": (
        "stats[B_SLIDE_IN] += _slide_in(px, qty, cnt, n, window, i, ref, row)",
        "pass",
    ),
    "no-publish": (
        "nm, nl = _publish(st, r, flags, out, nm, lv, nl, ev)",
        "pass",
    ),
    "no-prefetch": ("if m + PREFETCH < msgs.shape[0]:", "if m + PREFETCH < 0:"),
}


def load_variant(tmp: Path, variant: str):
    """The book step and builder modules rewritten as ``variant``, imported from ``tmp``
    (the builder variant imports the step variant); returns the builder variant."""
    srcs = {"book_step": Path(step.__file__).read_text(), "builder": Path(old.__file__).read_text()}
    if variant == "interleaved":
        srcs = {k: interleave(v) for k, v in srcs.items()}
    elif variant.startswith("tree:"):
        root = Path(variant[5:]) / "bot4" / "marketdata"
        srcs = {k: (root / f"{k}.py").read_text() for k in srcs}
    else:
        edits = ABLATIONS[variant]
        for a, b in edits if isinstance(edits[0], tuple) else (edits,):
            assert any(a in v for v in srcs.values()), (
                f"{variant}: {a!r} not in book_step.py or builder.py (changed?)"
            )
            srcs = {k: v.replace(a, b) for k, v in srcs.items()}
    imp = "from bot4.marketdata.book_step import"
    assert imp in srcs["builder"], "builder.py no longer imports the book step (changed?)"
    srcs["builder"] = srcs["builder"].replace(imp, "from book_step_variant import")
    mod = None
    for name in ("book_step", "builder"):
        path = tmp / f"{name}_variant.py"
        path.write_text(srcs[name])
        mod = load_module(f"{name}_variant", path)
    return mod


def load_module(name: str, path) -> object:
    """Import the source file ``path`` as module ``name`` (registered in ``sys.modules``,
    so a later variant file can import it by that name); the perf A/B scripts' loader."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def interleave(src: str) -> str:
    """px/qty/cnt as columns 0/1/2 of one interleaved array."""
    for col, name in enumerate(("px", "qty", "cnt")):
        pat = r"(?<![A-Za-z_])" + name + r"\[(i, (?:s|BID|ASK), [^\]]+)\]"
        src = re.sub(pat, lambda m, c=col, nm=name: f"{nm}[{m.group(1)}, {c}]", src)
    # one array moved once: the level shifts' memmoves of qty and cnt would move it again
    for name in ("qty", "cnt"):
        move = f"_move({name}, i, s, dst, src, count)"
        assert move in src or "_move(" not in src, "book_step's _shift changed?"
        src = src.replace(move, "pass")
    left = re.findall(r"(?<![A-Za-z_])(?:px|qty|cnt)\[i, [^\]]*\]", src)
    assert all(x.count(",") == 3 for x in left), left
    return src


def state_args(mod, b, px, qty, cnt) -> tuple:
    """``build_kernel``'s arguments between ``ref`` and ``out``: its state object
    (``BuildState``, issue 13), or the loose arrays a tree from before it takes."""
    if hasattr(mod, "BuildState"):
        bk = mod.BookArrays(px, qty, cnt, b.n, b.stats, b.otab, b.live)
        return (mod.BuildState(bk, b.cfg, b.seeded, b.stale, b.qpx, b.qqty, b.ppx, b.pqty,
                               b.pcnt),)  # fmt: skip
    return (b.cfg, px, qty, cnt, b.n, b.seeded, b.stale, b.qpx, b.qqty, b.ppx, b.pqty, b.pcnt,
            b.otab, b.live, b.stats)  # fmt: skip


def run(mod, rec, book, n_inst, window, depth, check, interleaved):
    b = mod.BookBuilder(n_inst, window, depth, check=check)  # each its own order-map size
    if mod is old or not interleaved:
        px, qty, cnt = b.px, b.qty, b.cnt
    else:
        px = qty = cnt = np.zeros((n_inst, 2, window, 3), np.int64)
    out = np.zeros(4 * len(rec) + 8, MARKET_DATA)
    lv = np.zeros(max(8, 2 * depth * len(rec) + 8), BOOK_LEVEL)
    counts = np.zeros(2, np.int64)
    t = time.thread_time()
    done = 0
    while True:
        st = state_args(mod, b, px, qty, cnt)  # again after the order map grew
        done = mod.build_kernel(rec, done, book, *st, out, counts, lv)
        if done == len(rec):
            break
        assert b.live[0] + 1 > b.otab.shape[0] * 3 // 4, "outputs too small"
        b.reserve(1)  # the order map filled: doubled and rehashed, as build() does (timed)
    dt = time.thread_time() - t
    return dt, (out[: counts[0]].tobytes(), lv[: counts[1]].tobytes(), b.stats.tolist())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--pairs",
        nargs="*",
        default=[
            "GOOG_2012-06-21_34200000_57600000_message_10",
            "AMZN_2012-06-21_34200000_57600000_message_5",
        ],
    )
    ap.add_argument(
        "--variant", default="interleaved", help=f"interleaved, tree:DIR or one of {[*ABLATIONS]}"
    )
    args = ap.parse_args()
    if args.variant not in ("interleaved", *ABLATIONS) and not args.variant.startswith("tree:"):
        ap.error(f"unknown variant {args.variant!r}")
    inter = args.variant == "interleaved"
    same = inter or args.variant.startswith("tree:")  # outputs must be byte-identical
    with tempfile.TemporaryDirectory() as tmp:
        new = load_variant(Path(tmp), args.variant)
        pairs = [
            p for p in find_pairs(DATA, recursive=True) if p.message.filename[:-4] in args.pairs
        ]
        for pair in pairs:
            rec, book, _ = read_pair(pair)
            window = pair.levels
            n_inst = int(rec["instrument"].max()) + 1
            for mod in (old, new):
                run(mod, rec[:100], book, n_inst, window, window, True, inter)  # compile
            for label, depth, check in (("kernel", 0, False), ("depth+check", window, True)):
                times: dict[str, list[float]] = {"old": [], "new": []}
                want = None
                for _ in range(args.rounds):
                    for name, mod in (("old", old), ("new", new)):
                        dt, got = run(mod, rec, book, n_inst, window, depth, check, inter)
                        times[name].append(dt)
                        want = got if want is None else want
                        assert got == want or not same, f"{name} output differs"
                a, b = (statistics.median(times[k]) for k in ("old", "new"))
                print(
                    f"{pair.ticker}-{window:<3} {label:<12} committed {len(rec) / a:>12,.0f} msg/s"
                    f"  {args.variant} {len(rec) / b:>12,.0f} msg/s  {args.variant}/committed "
                    f"{a / b:.2f}x" + ("  (outputs identical)" if same else ""),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
