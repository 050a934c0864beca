"""Risk-path benchmark (pyperf): pre-trade risk check, breaker check, STP check and order
creation, in ns per operation, against the figures a comparable system advertises and
against references of comparable work measured in the same run (``riskbench.REFERENCE``).

    .venv/bin/python perf/bench_risk.py --fast               # ~2 min (default ~4 min), one table
    .venv/bin/python perf/bench_risk.py -o perf/results/risk.json
    .venv/bin/python perf/bench_risk.py --fast --only order  # a subset (+ its baseline)
    .venv/bin/python -m pyperf compare_to perf/results/old.json perf/results/risk.json

One pyperf benchmark per loop of ``riskbench`` (see its docstring for what each loop does):
the two baselines (``empty``: the loop-carried dependency alone; ``clock``: the pair of
clock stamps the batch loops put around each kernel call) and the four operations. pyperf
calibrates ``loops`` (iterations of the ``@njit`` loop; one loop call per value, so numba
dispatch is paid once per value) and reports time per operation (``inner_loops`` = the
batch size for the batch kernels). For the risk check and order creation the value is the
time inside the stamped kernel calls, so the put-back of their state between batches is not
counted; the breaker and STP values are whole loops.

The table (parent process only): pyperf's median ns/op, the same minus its baseline
measured in the same run (``net``), the advertised figure of a comparable system, how many
times faster the net figure is, and PASS/FAIL against this issue's aim: 100x the advertised
figure (risk check <= 100 ns, breaker check <= 1 ns, order creation <= 1 us).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyperf  # noqa: E402
import riskbench as rkb  # noqa: E402

TITLES = {
    "empty": "risk: empty loop (baseline)",
    "clock": "risk: clock stamp pair (baseline)",
    "risk": "risk: pre-trade check per intent (check_intents x64)",
    "breaker": "risk: breaker check (breaker_allow, closed)",
    "stp": "risk: STP check (guard_plan, 8 resting orders)",
    "order": "risk: order creation per order (orders_kernel x64)",
    "load": "risk: dependent load (reference of the breaker check)",
    "py_risk": "risk: pre-trade check per intent in Python (reference)",
    "py_order": "risk: order creation per order in Python (reference)",
}
ROWS = {
    "empty": "empty loop, per iteration",
    "clock": "clock stamp pair, per iteration",
    "risk": "risk check, per intent",
    "breaker": "breaker check",
    "stp": "STP check",
    "order": "order creation, per order",
    "load": "dependent load (reference)",
    "py_risk": "risk check in Python (reference)",
    "py_order": "order creation in Python (ref.)",
}

_bench: rkb.RiskBench | None = None


def _fixture() -> rkb.RiskBench:
    global _bench
    if _bench is None:
        _bench = rkb.RiskBench()
    return _bench


def _time(loops: int, name: str) -> float:
    timed, _wall = _fixture().run(name, loops)
    return timed


def _ns(value: float) -> str:
    return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"


def print_table(ns: dict[str, float]) -> None:
    net = rkb.net_ns(ns)
    head = (
        f"{'operation':<34}{'ns/op':>10}{'baseline':>10}{'net ns/op':>11}"
        f"{'advertised':>12}{'x faster':>10}{'aim (100x)':>12}  result"
    )
    print()
    print(head)
    print("-" * len(head))
    for k in (k for k in rkb.OPS if k in ns):
        if k not in net:
            print(f"{ROWS[k]:<34}{_ns(ns[k]):>10}{'-':>10}{'-':>11}")
            continue
        adv = rkb.ADVERTISED_NS.get(k)
        if adv is None:
            print(f"{ROWS[k]:<34}{_ns(ns[k]):>10}{rkb.BASELINE[k]:>10}{_ns(net[k]):>11}{'-':>12}")
            continue
        aim = adv / rkb.AIM_FACTOR
        ratio = adv / net[k] if net[k] > 0 else float("inf")
        verdict = "PASS" if net[k] <= aim else "FAIL"
        print(
            f"{ROWS[k]:<34}{_ns(ns[k]):>10}{rkb.BASELINE[k]:>10}{_ns(net[k]):>11}"
            f"{_ns(adv):>12}{ratio:>9.1f}x{'<= ' + _ns(aim):>12}  {verdict}"
        )
    print()
    print("ns/op: pyperf median; net: minus the baseline per operation (same run);")
    print("advertised: a comparable system's figure; x faster: advertised / net;")
    print("aim: advertised / 100, judged on net.")
    ref = rkb.reference_ratios(ns)
    if ref:
        print()
        print("against a reference of comparable work in the same run (what the gate bounds):")
        for k, r in ref.items():
            print(f"  {ROWS[k]:<32} {r:6.2f}x faster than {ROWS[rkb.REFERENCE[k]]}")


def _add_worker_args(cmd: list[str], args) -> None:
    for s in args.only or ():
        cmd.extend(("--only", s))


def selected(only: list[str] | None) -> list[str]:
    """Operations whose key (empty, clock, risk, breaker, stp, order) contains one of
    ``only`` (all if none), with the baselines their net figures need."""
    if not only:
        return list(rkb.OPS)
    pick = {k for k in rkb.OPS if any(s in k for s in only)}
    pick |= {rkb.BASELINE[k] for k in pick if k in rkb.BASELINE}
    pick |= {rkb.REFERENCE[k] for k in pick if k in rkb.REFERENCE}
    return [k for k in rkb.OPS if k in pick]


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_add_worker_args)
    runner.argparser.add_argument(
        "--only",
        action="append",
        help="run only operations whose key contains this: empty, clock, risk, breaker, stp, order "
        "(repeatable)",
    )
    runner.metadata["risk_batch"] = rkb.BATCH
    args = runner.parse_args()
    decisions = None
    if not args.worker:
        rkb.sweep_stale_segments()
        with rkb.RiskBench() as warm:  # compile or load the kernels once, before any worker
            decisions = warm.decisions()
    results = {}
    try:
        for k in selected(args.only):
            results[k] = runner.bench_time_func(TITLES[k], _time, k, inner_loops=rkb.PER_ITER[k])
    finally:
        if _bench is not None:
            _bench.close()
    if args.worker or any(b is None for b in results.values()):
        return
    print_table({k: b.median() * 1e9 for k, b in results.items()})
    print(f"risk batch of {rkb.BATCH} intents: {decisions}")


if __name__ == "__main__":
    main()
