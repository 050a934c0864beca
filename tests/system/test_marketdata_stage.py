"""The market data stage in a real pipeline: LOBSTER replay and a CSV file with bad rows,
through the signals stage (calibrated by `bot4 calibrate`) into intents."""

from __future__ import annotations

import json
import subprocess

import pytest

from bot4.marketdata.replay import read_lobster_stream
from bot4.shm.segment import instance_segments
from tests.data_paths import lobster_dir
from tests.system.pipeline_util import BOT4

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

TOPO = """
instance = "{instance}"

[[stage]]
name = "md"
kind = "md"
core = 0
params = {{ source = "{source}", path = "{path}" }}

[[stage]]
name = "signals"
kind = "signals"
core = 1
params = {{ {signal_params} }}

[[stage]]
name = "sink"
kind = "count-sink"
core = 0

[[ring]]
name = "ticks"
from = "md"
to = "signals"
type = "market_data"
capacity = 8192

[[ring]]
name = "intents"
from = "signals"
to = "sink"
type = "order_intent"
capacity = 4096
"""


def run(tmp_path, text, duration):
    topo = tmp_path / "t.toml"
    topo.write_text(text)
    report = tmp_path / "report.json"
    out = subprocess.run(
        [*BOT4, "run", str(topo), "--duration", str(duration), "--quiet", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(report.read_text())["stages"], out.stdout + out.stderr


def test_lobster_day_replays_through_calibrated_signals_into_intents(instance, tmp_path):
    z = lobster_dir() / "zips" / "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip"
    params = tmp_path / "params.json"
    cal = subprocess.run(
        [*BOT4, "calibrate", str(z), "-o", str(params)], capture_output=True, text=True, timeout=200
    )
    assert cal.returncode == 0, cal.stderr
    doc = json.loads(params.read_text())
    assert doc["garch"]["AMZN"]["alpha"] + doc["garch"]["AMZN"]["beta"] < 1
    expected = len(read_lobster_stream(z)[0])
    st, _ = run(
        tmp_path,
        TOPO.format(
            instance=instance,
            source="lobster",
            path=z,
            signal_params=f'params_file = "{params}", threshold = 2.0',
        ),
        8,
    )
    assert st["md"]["records_out"] == expected  # the whole day, once
    assert st["signals"]["records_in"] == expected
    assert (
        st["signals"]["records_out"] > 0
        and st["sink"]["records_in"] == st["signals"]["records_out"]
    )
    assert not instance_segments(instance)


def test_bad_rows_in_a_csv_are_counted_logged_and_never_reach_signals(instance, tmp_path):
    rows = ["ts_event_ns,symbol,kind,side,price,qty"]
    good = 0
    for i in range(2000):
        bid, ask = 100.00 + (i % 7) * 0.01, 100.10 + (i % 5) * 0.01
        rows.append(f"{1000 + 2 * i},AAPL,quote,bid,{bid:.2f},{100 + i % 9}")
        rows.append(f"{1001 + 2 * i},AAPL,quote,ask,{ask:.2f},{100 + i % 4}")
        good += 2
    for at, row in (
        (100, "AAPL,quote,bid,abc,100"),  # malformed
        (200, "NOPE,quote,bid,100.00,100"),  # unknown instrument
        (300, "AAPL,quote,bid,1e2,100"),  # malformed too (not decimal)
        (400, "AAPL,quote,bid,-1.00,100"),  # negative price
        (500, "AAPL,quote,bid,150.00,100"),  # crossed
    ):
        rows.insert(at, f"{rows[at - 1].split(',')[0]},{row}")  # in time order
    path = tmp_path / "ticks.csv"
    path.write_text("\n".join(rows) + "\n")
    st, log = run(
        tmp_path,
        TOPO.format(instance=instance, source="file", path=path, signal_params="threshold = 0.5"),
        4,
    )
    assert st["md"]["records_out"] == good
    assert st["signals"]["records_in"] == good
    for reason, n in (
        ("MALFORMED_ROW", 2),
        ("UNKNOWN_INSTRUMENT", 1),
        ("NEGATIVE_PRICE", 1),
        ("CROSSED_QUOTE", 1),
    ):
        assert f"{reason.lower()} {n}" in log, reason
    # said once by the command, before the start, as bot4 replay says it
    assert log.count("bot4: warning: stage md: bad input: ") == 1, log
    assert not instance_segments(instance)
