"""``bot4 run --report`` carries the recorded input's bad rows by reason (issue 12), as
``bot4 replay``'s report does (``run.source.bad_input``): the same counts, the same keys,
from the same check that prints the ``bad input:`` warning before anything starts."""

from __future__ import annotations

import orjson

from bot4 import cli, cli_pipeline
from bot4.marketdata.files import read_table
from bot4.pipeline.topology import parse_topology
from bot4.pipeline.validate import validate_topology
from tests.damage import CLEAN_CSV

BAD_LINES = (3, 6)  # 1-based lines of CLEAN_CSV made unusable: a malformed row, a negative price


def bad_csv(tmp_path):
    lines = CLEAN_CSV.splitlines(keepends=True)
    lines[BAD_LINES[0] - 1] = b"not,a,row\n"
    fields = lines[BAD_LINES[1] - 1].split(b",")
    fields[4] = b"-" + fields[4]
    lines[BAD_LINES[1] - 1] = b",".join(fields)
    p = tmp_path / "ticks.csv"
    p.write_bytes(b"".join(lines))
    return p


def topology_doc(path, out) -> dict:
    return {
        "instance": "badrows",
        "stage": [
            {
                "name": "md",
                "kind": "md",
                "core": 0,
                "params": {"source": "file", "path": str(path)},
            },
            {"name": "rec", "kind": "persistence", "core": 0, "params": {"dir": str(out)}},
        ],
        "ring": [
            {"name": "ticks", "from": "md", "to": "rec", "type": "market_data", "capacity": 1024}
        ],
    }


def test_validate_topology_returns_the_counts_by_reason_of_each_recorded_input(tmp_path):
    p = bad_csv(tmp_path)
    notes = validate_topology(parse_topology(topology_doc(p, tmp_path / "j"), "t.toml"))
    _recs, report = read_table(p)  # what replay reports for the same file
    assert notes.bad_input == {"md": report.as_dict()}
    assert sum(notes.bad_input["md"]["bad"].values()) == len(BAD_LINES)
    assert notes == [f"stage md: bad input: {report.summary()}"]


def test_run_report_has_the_bad_rows_by_reason(tmp_path, monkeypatch, capsys):
    """cmd_run with the supervisor stubbed (no process started): the JSON written by
    --report has ``bad_input`` per stage, the warning line was printed once."""
    p = bad_csv(tmp_path)
    topo = tmp_path / "t.toml"
    doc = topology_doc(p, tmp_path / "j")
    lines = [f'instance = "{doc["instance"]}"']
    for s in doc["stage"]:
        lines += ["[[stage]]", f'name = "{s["name"]}"', f'kind = "{s["kind"]}"', "core = 0"]
        lines += ["[stage.params]"] + [f'{k} = "{v}"' for k, v in s["params"].items()]
    r = doc["ring"][0]
    lines += ["[[ring]]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in r.items()]
    topo.write_text("\n".join(lines) + "\n")

    class FakeSupervisor:
        def __init__(self, t, **kw):
            self.final = {"instance": t.instance, "session": 1, "stages": {}, "halted": None}

        def run(self):
            return 0

    monkeypatch.setattr("bot4.pipeline.supervisor.Supervisor", FakeSupervisor)
    monkeypatch.setattr("bot4.pipeline.segments.check_not_running", lambda *a, **k: None)
    monkeypatch.setattr(cli_pipeline, "_trading_report", lambda *a, **k: None)
    out = tmp_path / "report.json"
    assert cli.main(["run", str(topo), "--no-db", "--quiet", "--report", str(out)]) == 0
    rep = orjson.loads(out.read_bytes())
    _recs, report = read_table(p)
    assert rep["bad_input"] == {"md": report.as_dict()}
    assert set(rep["bad_input"]["md"]) == {"source", "rows", "kept", "bad", "first_lines"}
    err = capsys.readouterr().err
    assert err.count("bad input:") == 1
