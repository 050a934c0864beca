"""Issue 20's proof, runnable: a 2 x 3 grid over two LOBSTER files on a local Ray, twice;
the two results tables are identical modulo wall times (and the runs' journals byte for
byte), and every run's metrics equal a plain ``bot4 replay`` of its ``command`` column.

    python perf/sweepcheck.py                      # GOOG and AMZN level 1, 2 CPUs
    python perf/sweepcheck.py --cpus 2 A.zip B.zip --out /tmp/sweepcheck

Minutes on a 2-core machine (12 runs of a LOBSTER day, twice, then 12 plain replays).
Exit 0 when everything matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZIPS = ROOT.parent / "shared/data/lobster-2012-06-21/zips"
DEFAULT = [
    str(ZIPS / "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip"),
    str(ZIPS / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="*", default=DEFAULT)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default=None, help="work directory (default: a new temporary one)")
    a = ap.parse_args()
    import pandas as pd

    from bot4.research.runs import metrics_of
    from bot4.research.table import VOLATILE

    work = Path(a.out or tempfile.mkdtemp(prefix="bot4-sweepcheck-"))
    grid = ["--grid", "signals.threshold=0.5,1,2", "--grid", "latency.order=const:30us|const:120us"]
    tables = []
    for name in ("a", "b"):
        p = subprocess.run(
            [sys.executable, "-m", "bot4.cli", "sweep", *a.data, *grid, "--cpus", str(a.cpus),
             "--out", str(work / name), "--quiet"],
            capture_output=True, text=True,
        )  # fmt: skip
        print(f"sweep {name}: {p.stdout.strip().splitlines()[0] if p.stdout else p.stderr}")
        if p.returncode:
            return 1
        tables.append(pd.read_parquet(work / name / "results.parquet"))
    ta, tb = tables
    cols = [c for c in ta.columns if c not in VOLATILE]
    same_table = ta[cols].equals(tb[cols])
    same_journals = bool((ta["journal_sha256"] == tb["journal_sha256"]).all())
    for c in cols:
        if not ta[c].equals(tb[c]):
            print(f"column {c} differs: {list(ta[c][:2])} vs {list(tb[c][:2])}")
    print(f"{len(ta)} runs, {int((ta['status'] == 'ok').sum())} ok; tables identical "
          f"(modulo {', '.join(VOLATILE)}): {same_table}; journals identical: {same_journals}")  # fmt: skip
    differ = 0
    for _, r in ta.iterrows():
        out = work / "plain" / r["key"]
        cmd = shlex.split(r["command"])[1:]  # "bot4 replay ...", run from the sweep dir
        p = subprocess.run(
            [sys.executable, "-m", "bot4.cli", *cmd, "--out", str(out), "--quiet"],
            cwd=work / "a", capture_output=True, text=True,
        )  # fmt: skip
        if p.returncode:
            print(f"{r['key']}: plain replay failed: {p.stderr.strip()}")
            differ += 1
            continue
        m = metrics_of(json.loads((out / "report.json").read_text()))
        same = all(m[k] == r[k] or (m[k] is None and pd.isna(r[k])) for k in m)
        differ += not same
        print(f"{r['key']} {Path(r['data']).name} {r['params']} total_pnl {r['total_pnl']} "
              f"plain {m['total_pnl']}: {'equal' if same else 'DIFFERENT'}")  # fmt: skip
    ok = same_table and same_journals and differ == 0
    print("every run equals a plain bot4 replay" if differ == 0 else f"{differ} runs differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
