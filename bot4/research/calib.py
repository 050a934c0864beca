"""Walk-forward calibration: ``bot4 calibrate`` (GARCH(1,1) + orthogonaliser,
``bot4.calibrate``) fitted on each in-sample window, for the signals stage's
``params_file`` of that window's in-sample runs and of the next window's out-of-sample run.

Runs in the driver, before any replay (a fit of a LOBSTER day or a synthetic window takes
well under a second to a few seconds; the replays are the cost). Deterministic: the
parameter file is the calibration's document without its creation time, written with
sorted keys, so the same window gives the same bytes and the same sha256. Cached by
window in ``OUT/calibration/KEY.json`` (``KEY``: 16 hex digits of sha256 over the data's
path and size and the fit's options), so a resumed sweep reads it back instead of fitting
again. A fit that fails (fewer than ``bot4.calibrate.MIN_RETURNS`` returns, unreadable
data) is cached as ``KEY.error`` (one line; ``retry_failed`` fits again) and every run that
needed the file is a failed row carrying that error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bot4.research.runs import _one_line, data_identity

__all__ = ["DIR", "WindowCalibration", "calibrate_window", "calibration_fields"]

DIR = "calibration"
METHOD = "pca"
MEAN = "constant"


@dataclass(frozen=True)
class WindowCalibration:
    """A window's calibration: ``file`` (relative to OUT) and its ``sha256``, or ``error``."""

    data: str
    file: str | None = None
    sha256: str | None = None
    error: str | None = None


def calibration_fields(cal: WindowCalibration | None, error_key: str) -> dict:
    """``params_file``, ``params_sha256`` and the error (named ``error_key``) of ``cal``;
    nothing without a calibration."""
    if cal is None:
        return {}
    return {"params_file": cal.file, "params_sha256": cal.sha256, error_key: cal.error}


def _key(data: str) -> str:
    doc = {"data": data_identity(data), "method": METHOD, "mean": MEAN}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def calibrate_window(out: str | os.PathLike, data: str, *, retry_failed: bool = False):
    """The calibration of window ``data`` into ``out/calibration/`` (or read back from
    there); returns (:class:`WindowCalibration`, whether it was fitted now)."""
    from bot4.calibrate import calibrate

    key = _key(data)
    d = Path(out) / DIR
    rel = f"{DIR}/{key}.json"
    done, failed = Path(out) / rel, d / f"{key}.error"
    if done.is_file():
        return WindowCalibration(data, rel, hashlib.sha256(done.read_bytes()).hexdigest()), False
    if failed.is_file() and not retry_failed:
        return WindowCalibration(data, error=failed.read_text().strip()), False
    d.mkdir(parents=True, exist_ok=True)
    try:
        doc = calibrate(data, method=METHOD, mean=MEAN)
    except Exception as exc:  # noqa: BLE001 - every failure is the window's result
        error = f"calibration of window {data} failed: {_one_line(exc)}"
        _write(failed, error + "\n")
        return WindowCalibration(data, error=error), True
    doc.pop("created_unix", None)  # the only field that differs between two fits
    text = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
    _write(done, text)
    failed.unlink(missing_ok=True)
    return WindowCalibration(data, rel, hashlib.sha256(text.encode()).hexdigest()), True
