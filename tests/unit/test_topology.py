"""Every invalid topology is rejected with the file, the key and the reason."""

from __future__ import annotations

import pytest

from bot4.pipeline.topology import TopologyError, load_topology, parse_topology
from bot4.pipeline.validate import validate_topology
from bot4.records import Code

GOOD = {
    "instance": "t",
    "stage": [
        {"name": "src", "kind": "test-source", "core": 0},
        {"name": "mid", "kind": "relay", "core": 1},
        {"name": "sink", "kind": "count-sink", "core": 0},
    ],
    "ring": [
        {"name": "r1", "from": "src", "to": "mid", "type": "market_data", "capacity": 1024},
        {"name": "r2", "from": "mid", "to": "sink", "type": "market_data", "capacity": 1024},
    ],
}


def variant(**changes):
    import copy

    d = copy.deepcopy(GOOD)
    for path, value in changes.items():
        where, _, key = path.partition("__")
        if where == "top":
            d[key] = value
        else:
            kind, idx = where[:-1], int(where[-1])
            d[kind][idx][key] = value
    return d


def parse(d):
    return parse_topology(d, "topo.toml", cpu_count=2)


def test_good_topology_loads_in_order():
    t = parse(GOOD)
    assert t.order() == ["src", "mid", "sink"]
    assert [r.name for r in t.inputs_of("mid")] == ["r1"]


@pytest.mark.parametrize(
    "doc, key, reason",
    [
        (variant(top__colour="blue"), "colour", "unknown key"),
        (variant(stage1__colour="blue"), "stage[1] (mid).colour", "unknown key"),
        (variant(ring0__colour="blue"), "ring[0] (r1).colour", "unknown key"),
        (variant(ring0__to="nowhere"), "ring[0] (r1).to", "stage 'nowhere' does not exist"),
        (variant(ring0__from=["src", "sink"]), "ring[0] (r1).from", "exactly one producer"),
        (variant(ring0__to=["mid", "sink"]), "ring[0] (r1).to", "exactly one consumer"),
        (variant(stage1__core=7), "stage[1] (mid).core", "core 7 does not exist on this machine"),
        (variant(ring1__capacity=1000), "ring[1] (r2).capacity", "1000 is not a power of two"),
        (
            variant(stage0__kind="teleporter"),
            "stage[0] (src).kind",
            "unknown stage kind 'teleporter'",
        ),
        (variant(ring0__type="pizza"), "ring[0] (r1).type", "unknown record type 'pizza'"),
        (variant(ring0__wait="sometimes"), "ring[0] (r1).wait", "'sometimes' is not one of"),
        (variant(ring0__backpressure="drop"), "ring[0] (r1).backpressure", "'drop' is not one of"),
        (variant(stage2__name="mid"), "stage[2] (mid).name", "declared twice"),
        (variant(ring1__name="r1"), "ring[1] (r1).name", "declared twice"),
        (variant(ring1__type="order"), "stage[1] (mid)", "passes records through"),
    ],
)
def test_invalid_topology_names_file_key_and_reason(doc, key, reason):
    with pytest.raises(TopologyError) as ei:
        parse(doc)
    e = ei.value
    assert e.source == "topo.toml" and e.key == key and reason in e.reason, str(e)
    assert str(e).startswith(f"topo.toml: {key}: ")
    assert e.code == Code.TOPOLOGY_INVALID


def test_two_rings_into_one_single_input_stage_is_rejected():
    d = variant()
    d["stage"].append({"name": "src2", "kind": "test-source", "core": 0})
    d["ring"].append(
        {"name": "r3", "from": "src2", "to": "mid", "type": "market_data", "capacity": 64}
    )
    with pytest.raises(
        TopologyError,
        match=r"stage\[1\] \(mid\): kind 'relay' takes 1..1 input rings, topology gives 2",
    ):
        parse(d)


def cyclic(feedback):
    return {
        "stage": [
            {"name": "src", "kind": "synthetic-md", "core": 0},
            {"name": "sig", "kind": "signals-standin", "core": 0},
            {"name": "risk", "kind": "risk-standin", "core": 1},
            {"name": "ord", "kind": "orders-standin", "core": 1},
        ],
        "ring": [
            {"name": "ticks", "from": "src", "to": "sig", "type": "market_data", "capacity": 64},
            {
                "name": "intents",
                "from": "sig",
                "to": "risk",
                "type": "order_intent",
                "capacity": 64,
            },
            {"name": "orders", "from": "risk", "to": "ord", "type": "order", "capacity": 64},
            {
                "name": "fills",
                "from": "ord",
                "to": "risk",
                "type": "exec_report",
                "capacity": 64,
                "feedback": feedback,
            },
        ],
    }


def test_cycle_not_declared_as_feedback_is_rejected():
    with pytest.raises(TopologyError) as ei:
        parse(cyclic(False))
    assert ei.value.key == "ring"
    assert (
        "cycle through stages ['ord', 'risk']" in ei.value.reason
        and "feedback = true" in ei.value.reason
    )


def test_cycle_declared_as_feedback_is_accepted():
    t = parse(cyclic(True))
    assert t.order() == ["src", "sig", "risk", "ord"]


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("instance = [unclosed")
    with pytest.raises(TopologyError, match=r"bad.toml: -: not valid TOML"):
        load_topology(bad)
    with pytest.raises(TopologyError, match=r"missing.toml: -: cannot read"):
        load_topology(tmp_path / "missing.toml")


def test_default_topology_is_valid_and_parks():
    t = load_topology()
    assert [s.name for s in t.stages] == ["md", "signals", "risk", "orders", "venue", "persistence"]
    assert all(r.wait == 2 for r in t.rings)  # park: never busy-spin on a small machine
    assert all(not s.realtime and not s.mlock for s in t.stages)
    assert [r.name for r in t.rings if r.feedback] == ["fills", "venue_execs"]


# --- stage params: unknown keys and bad values at load, missing files before the start ---


def md_topology(params: dict, signals: dict | None = None) -> dict:
    return {
        "instance": "t",
        "stage": [
            {"name": "md", "kind": "md", "core": 0, "params": params},
            {"name": "signals", "kind": "signals", "core": 1, "params": signals or {}},
            {"name": "sink", "kind": "count-sink", "core": 0},
        ],
        "ring": [
            {"name": "ticks", "from": "md", "to": "signals", "type": "market_data", "capacity": 64},
            {
                "name": "intents",
                "from": "signals",
                "to": "sink",
                "type": "order_intent",
                "capacity": 64,
            },
        ],
    }


@pytest.mark.parametrize(
    "doc, key, reason",
    [
        (md_topology({"rat": 20000}), "stage md: params.rat", "unknown parameter of kind 'md'"),
        (
            md_topology({"source": "lobster"}),
            "stage md: params.path",
            'missing: source = "lobster"',
        ),
        (md_topology({"source": "ftp"}), "stage md: params.source", "unknown market data source"),
        (md_topology({"rate": "fast"}), "stage md: params.rate", "expected a number"),
        (md_topology({}, {"treshold": 2}), "stage signals: params.treshold", "unknown parameter"),
        (variant(stage1__params={"spin_us": -1}), "stage mid: params.spin_us", "must be >= 0"),
        (variant(stage2__params={"x": 1}), "stage sink: params.x", "(accepted: none)"),
    ],
)
def test_bad_stage_params_are_refused_at_load_naming_file_stage_and_key(doc, key, reason):
    with pytest.raises(TopologyError) as ei:
        parse(doc)
    assert ei.value.key == key and reason in ei.value.reason, str(ei.value)
    assert str(ei.value).startswith(f"topo.toml: {key}: ")


def test_missing_data_and_parameter_files_are_one_line_before_the_start(tmp_path):
    cases = [
        (md_topology({"source": "lobster", "path": str(tmp_path / "no")}), "stage md: params.path"),
        (
            md_topology({"source": "file", "path": str(tmp_path / "no.csv")}),
            "stage md: params.path",
        ),
        # a directory, but no market data in it: read at the check, refused there
        (md_topology({"source": "journal", "path": str(tmp_path)}), "stage md: params.path"),
        (
            md_topology({}, {"params_file": str(tmp_path / "p.json")}),
            "stage signals: params.params_file",
        ),
        (
            md_topology({}, {"model_file": str(tmp_path / "w.npy")}),
            "stage signals: params.model_file",
        ),
    ]
    for doc, key in cases:
        t = parse(doc)  # the file is not read when the topology is loaded
        if key is None:
            validate_topology(t)
            continue
        with pytest.raises(TopologyError) as ei:
            validate_topology(t)
        assert ei.value.key == key and str(tmp_path) in ei.value.reason, str(ei.value)
        assert "\n" not in str(ei.value)


def test_risk_params_errors_name_the_key():
    from bot4.stages.base import ParamError
    from bot4.stages.risk import RiskStage

    with pytest.raises(ParamError) as ei:
        RiskStage.check_params({"max_positon": 5})
    assert ei.value.key == "max_positon" and "unknown parameter of kind 'risk'" in ei.value.reason
    with pytest.raises(ParamError) as ei:
        RiskStage.validate({"max_position": "x", "shared": False, "recover": False})
    assert ei.value.key == "max_position" and "integer" in ei.value.reason
    RiskStage.check_params({"max_position": 5, "shared": False, "recover": False})


def _params_read(module) -> set[str]:
    """Constant keys a module reads from a stage's own params: ``self.params.get("K")``,
    ``self.params["K"]``, and the same on a local bound to ``self.params`` or
    ``dict(self.params)`` in the same function."""
    import ast
    import inspect

    def is_own_params(node) -> bool:
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" and node.args:
            node = node.args[0]
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "params"
            and getattr(node.value, "id", None) == "self"
        )

    keys: set[str] = set()
    for fn in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(fn, ast.FunctionDef):
            continue
        local = {
            t.id
            for a in ast.walk(fn)
            if isinstance(a, ast.Assign) and is_own_params(a.value)
            for t in a.targets
            if isinstance(t, ast.Name)
        }

        def own(node, local=local) -> bool:
            return is_own_params(node) or (isinstance(node, ast.Name) and node.id in local)

        for n in ast.walk(fn):
            target = None
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
                if n.func.attr in ("get", "pop") and own(n.func.value) and n.args:
                    target = n.args[0]
            elif isinstance(n, ast.Subscript) and own(n.value):
                target = n.slice
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                keys.add(target.value)
    return keys


def test_every_param_a_kind_reads_is_accepted():
    """Every key a stage module reads from a stage's own params is declared by a kind of
    that module, so a valid topology is never refused as having an unknown key."""
    import sys

    from bot4.stages import KINDS

    declared: dict[str, set[str]] = {}
    for cls in KINDS.values():
        declared.setdefault(cls.__module__, set()).update(cls.params_keys)
    assert len(declared) >= 8
    for module, accepted in declared.items():
        read = _params_read(sys.modules[module])
        assert read, f"{module}: no params read? the scan is broken"
        assert read <= accepted, f"{module} reads undeclared params {sorted(read - accepted)}"
