"""The package layering (README "Packages", issue 13), read from the imports themselves.

Every ``bot4`` module belongs to one layer; a module imports its own layer and the layers
below it, never one above — function-local imports included, so a cycle cannot hide in a
function body. The module import graph has no cycle. No module outside ``bot4/stages``
switches on a stage kind's name (stage classes declare capabilities: ``source``,
``journal_dir``, ``uses_database``, ``create_shared_segments``). ``bot4.db`` does not
import the risk package.

The exceptions are listed with their reasons: each is work another issue or engineer
owns. Remove an entry when its import goes; the test fails on any new violation.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import bot4

ROOT = Path(bot4.__file__).parent

#: top -> bottom; a module matches its longest prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the package root is the notebook facade (bot4.replay(...), bot4.sweep(...)), not a
    # foundation: what it does at import is simd's and nbcache's; no lower module imports it
    ("tools", ("bot4", "bot4.__main__", "bot4.cli", "bot4.cli_common", "bot4.cli_pipeline", "bot4.cli_ops",
               "bot4.cli_journal", "bot4.warm", "bot4.calibrate", "bot4.metrics_cli",
               "bot4.research", "bot4.db.cli", "bot4.replay.cli", "bot4.models.cli",
               "bot4.gateways.cli")),
    ("harness", ("bot4.replay",)),
    ("pipeline", ("bot4.pipeline",)),
    ("gateway servers", ("bot4.gateways.exchange", "bot4.gateways.feed",
                         "bot4.gateways.bookcheck", "bot4.gateways.faults",
                         "bot4.gateways.md_publisher", "bot4.gateways.order_entry",
                         "bot4.gateways.ouch_server")),
    ("stages", ("bot4.stages",)),
    ("services", ("bot4.db", "bot4.gateways", "bot4.ops_stats", "bot4.ops_stats_view",
                  "bot4.ops_metrics", "bot4.ops_metrics_collector")),
    ("domain", ("bot4.oms", "bot4.risk", "bot4.venue", "bot4.marketdata", "bot4.models",
                "bot4.signals")),
    ("journal", ("bot4.journal", "bot4.journal_repair")),
    ("specs", ("bot4.spec", "bot4.cli_support")),
    ("shm", ("bot4.shm",)),
    # below shm: it imports numpy, numba and records only, and shm's kernels borrow with it
    ("numba kit", ("bot4.nbkit",)),
    ("records", ("bot4.records",)),
    ("foundation", ("bot4.version", "bot4.logs", "bot4.paths", "bot4.extras", "bot4.simd",
                    "bot4.nbcache", "bot4.nbcache_keys", "bot4.nbcache_prune", "bot4.nbpatch",
                    "bot4.config", "bot4.interrupts")),
]  # fmt: skip

#: (importer, imported) -> why it is still there
EXCEPTIONS: dict[tuple[str, str], str] = {}
#: edges left out of the cycle check: (importer, imported) -> why
CYCLE_EXCEPTIONS: dict[tuple[str, str], str] = {}
#: modules still switching on stage kind names: module -> why
KIND_SWITCH_EXCEPTIONS: dict[str, str] = {}
#: db may not import risk: exceptions
DB_RISK_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    mod = ".".join(parts)
    return mod.removesuffix(".__init__")


@cache
def _modules() -> dict[str, Path]:
    return {_module_of(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(mod: str) -> int | None:
    best = None
    for i, (_name, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None or (best[1] == len("bot4") and mod != "bot4"):
        return None  # "bot4" itself is a layer's member, not a catch-all
    return best[0]


@cache
def _imports() -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported bot4 module, line)], function-local imports included; ``from
    pkg import sub`` counts as importing ``pkg.sub`` when that is a module."""
    mods = _modules()
    out: dict[str, list[tuple[str, int]]] = {}
    for mod, path in mods.items():
        found = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] != "bot4":
                    continue
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.append((sub if sub in mods else node.module, node.lineno))
            elif isinstance(node, ast.Import):
                found += [(a.name, node.lineno) for a in node.names if a.name.startswith("bot4")]
        out[mod] = [(t, ln) for t, ln in found if t != mod]
    return out


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if _layer(m) is None]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    bad = []
    for mod, imps in _imports().items():
        me = _layer(mod)
        for target, line in imps:
            lt = _layer(target)
            if lt is not None and me is not None and lt < me and (mod, target) not in EXCEPTIONS:
                bad.append(
                    f"{_modules()[mod].relative_to(ROOT.parent)}:{line}: {mod} "
                    f"({LAYERS[me][0]}) imports {target} ({LAYERS[lt][0]})"
                )
    assert not bad, "\n".join(bad)


def test_the_exceptions_are_still_needed():
    edges = {(m, t) for m, imps in _imports().items() for t, _ in imps}
    for table in (EXCEPTIONS, CYCLE_EXCEPTIONS, DB_RISK_EXCEPTIONS):
        # an entry for work in progress elsewhere may name an import not committed yet
        stale = [e for e, why in table.items() if e not in edges and "in progress" not in why]
        assert not stale, f"these imports are gone: drop their exceptions: {stale}"


def test_the_module_import_graph_has_no_cycle():
    mods = _modules()
    allowed = CYCLE_EXCEPTIONS.keys() | EXCEPTIONS.keys()
    graph = {
        m: sorted({t for t, _ in imps if t in mods and (m, t) not in allowed} - {m})
        for m, imps in _imports().items()
    }
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def _kind_names() -> set[str]:
    names = set()
    for path in (ROOT / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for st in node.body:
                    if (
                        isinstance(st, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "kind" for t in st.targets)
                        and isinstance(st.value, ast.Constant)
                        and isinstance(st.value.value, str)
                    ):
                        names.add(st.value.value)
    return names


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
        isinstance(node, ast.Name) and node.id == "kind"
    )


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def test_no_module_outside_stages_switches_on_a_kind_name():
    kinds = _kind_names()
    assert {"md", "risk", "persistence", "synthetic-md"} <= kinds
    bad = []
    for mod, path in _modules().items():
        if mod.startswith("bot4.stages") or mod in KIND_SWITCH_EXCEPTIONS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            if any(_is_kind(s) for s in sides):
                hit = set().union(*(_strings(s) for s in sides)) & kinds
                if hit:
                    bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {sorted(hit)}")
    assert not bad, "ask the stage class (a capability) instead:\n" + "\n".join(bad)


def test_db_does_not_import_risk():
    bad = [
        (m, t)
        for m, imps in _imports().items()
        if m.startswith("bot4.db")
        for t, _ in imps
        if t.startswith("bot4.risk") and (m, t) not in DB_RISK_EXCEPTIONS
    ]
    assert not bad, bad
