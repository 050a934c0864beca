"""One run of a sweep: its specification, its key, and the function a worker executes.

A run is the deterministic replay (``bot4.replay.runner.replay``) of one data file with one
parameter point: same data, topology, latency models, step and seed give byte-identical
journals (docs/replay.md), so a run's result is a pure function of its :class:`RunSpec`.
The run key is a hash of exactly what determines the result (not of the code version,
which is recorded beside it: a sweep resumed after a code change says so), and names the
run's directory ``OUT/runs/KEY/`` (``topology.toml``, ``journal/``, ``report.json``,
``report.html``, ``trades.csv``, ``run.json``).

:func:`run_one` never raises: a run that fails (a bad parameter the topology refuses, an
unreadable file, a crash inside the replay) returns a row with ``status = "failed"`` and
its error on one line. The driver, not the worker, writes rows to the table and the
database (a worker cannot reach an embedded database).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bot4.replay.notebook import metrics_of

__all__ = [
    "METRICS",
    "RunSpec",
    "code_version",
    "data_identity",
    "failed_row",
    "metrics_of",
    "pack_data",
    "run_one",
    "version_of_checkout",
]

#: metric columns of the results table, in order (None where undefined)
METRICS = (
    "total_pnl", "realised", "unrealised", "fees", "turnover", "max_drawdown",
    "fills", "partial_fills", "orders", "shares_traded", "round_trips", "winning_round_trips",
    "hit_rate", "profit_factor", "sharpe", "sortino", "sharpe_annualised", "intervals",
    "denials", "events", "tick_to_order_p50_ns", "tick_to_order_p99_ns",
)  # fmt: skip

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # numba colours its errors
DEFAULT_INTERVAL_NS = 60_000_000_000


def data_identity(path: str) -> dict:
    """What identifies a data input in a run key: the path as given and its size in bytes
    (a directory: the sum of its files), so a replaced file is a new run."""
    p = Path(path)
    if p.is_dir():
        size = sum(f.stat().st_size for f in sorted(p.iterdir()) if f.is_file())
    elif p.exists():
        size = p.stat().st_size
    else:
        size = -1
    return {"path": str(path), "bytes": size}


@dataclass(frozen=True)
class RunSpec:
    """One run: ``data`` (path as given), ``point`` (parameter key -> value; see
    ``bot4.research.space``), the base topology TOML and fixed latency models, and the
    equity ``interval_ns``. ``index`` is the run's place in the plan (the table's order)."""

    index: int
    data: str
    point: dict
    topology_toml: str
    latency: dict = field(default_factory=dict)  # fixed models, NAME -> text
    interval_ns: int = DEFAULT_INTERVAL_NS
    data_bytes: int = -1
    #: walk-forward calibration: the params file (relative to OUT) for ``signals.params_file``
    #: and its content's sha256, or the calibration's error (the run fails with it)
    params_file: str | None = None
    params_sha256: str | None = None
    params_error: str | None = None

    @property
    def seed(self) -> int:
        return int(self.point.get("seed", 1))

    @property
    def step_ns(self) -> int | None:
        """The ``step`` key in ns; None: the replay's own default step."""
        from bot4.replay.latency import parse_duration_ns

        v = self.point.get("step")
        if v is None:
            return None
        return int(v) if isinstance(v, int) else parse_duration_ns(str(v))

    def latency_specs(self) -> dict[str, str]:
        """Latency models of this run: the fixed ones, overridden by ``latency.NAME`` keys."""
        out = dict(self.latency)
        for k, v in self.point.items():
            if k.startswith("latency."):
                out[k.split(".", 1)[1]] = str(v)
        return out

    @property
    def key(self) -> str:
        """16 hex digits of sha256 over what determines the run's result."""
        doc = {
            "data": {"path": self.data, "bytes": self.data_bytes},
            "point": self.point,
            "topology": hashlib.sha256(self.topology_toml.encode()).hexdigest(),
            "latency": self.latency_specs(),
            "interval_ns": self.interval_ns,
        }
        if self.params_file is not None or self.params_error is not None:
            doc["params_file"] = [self.params_file, self.params_sha256, self.params_error]
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def command(self, run_dir: str) -> str:
        """The ``bot4 replay`` command giving this run's report (its metrics are equal)."""
        parts = ["bot4 replay", _q(self.data), "--topology", _q(f"{run_dir}/topology.toml")]
        parts += ["--seed", str(self.seed)]
        if self.step_ns is not None:
            parts += ["--step", f"{self.step_ns}ns"]
        for name, model in sorted(self.latency_specs().items()):
            parts += ["--latency", _q(f"{name}={model}")]
        if self.interval_ns != DEFAULT_INTERVAL_NS:
            parts += ["--interval", f"{self.interval_ns}ns"]
        return " ".join(parts)

    def base_row(self) -> dict:
        return {
            "run": self.index,
            "key": self.key,
            "data": self.data,
            "params": json.dumps(self.point, sort_keys=True),
            "seed": self.seed,
            "status": "pending",
            "error": None,
            **{m: None for m in METRICS},
            "report_html": None,
            "report_json": None,
            "trades_csv": None,
            "journal_sha256": None,
            "command": None,
            "params_file": self.params_file,
            "params_sha256": self.params_sha256,
            "code_version": code_version(),
            "wall_s": None,
            "worker": None,
        }


def _q(text: str) -> str:
    safe = all(c.isalnum() or c in "/._-=:,+" for c in text)
    return text if safe else "'" + text.replace("'", "'\\''") + "'"


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``<version>+g<commit>`` naming the code that ran (:func:`version_of_checkout`); the
    version alone for an installed package."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from bot4.version import __version__

        root = Path(__file__).resolve().parents[2]  # the checkout holding bot4/
        _CODE_VERSION = version_of_checkout(root, __version__)
    return _CODE_VERSION


def version_of_checkout(root: Path, version: str) -> str:
    """``version+g<commit>``: the last commit that changed ``root/bot4`` (commits elsewhere
    in the repository, docs or tests, do not change it), then ``-dirty.<8 hex>`` when bot4/
    has uncommitted changes (sha256 of the diff and of the untracked files, so two different
    edits never share a version); ``version`` alone outside a git checkout."""

    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("log", "-1", "--format=%h", "--abbrev=12", "--", "bot4").decode().strip()
        if not commit:
            return version
        h = hashlib.sha256(git("diff", "HEAD", "--", "bot4"))
        untracked = git("ls-files", "-z", "--others", "--exclude-standard", "--", "bot4")
        for name in sorted(n for n in untracked.decode().split("\0") if n):
            h.update(name.encode())
            h.update((root / name).read_bytes())
    except (OSError, subprocess.SubprocessError):
        return version
    clean = h.digest() == hashlib.sha256(b"").digest()
    return f"{version}+g{commit}" + ("" if clean else f"-dirty.{h.hexdigest()[:8]}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


def failed_row(spec: RunSpec, exc: BaseException | str) -> dict:
    """The row of a run that raised (or whose worker died) with its error on one line."""
    row = spec.base_row()
    row["status"] = "failed"
    row["error"] = exc if isinstance(exc, str) else _one_line(exc)
    return row


def pack_data(path: str) -> dict[str, bytes]:
    """The files a data input needs, by name, to ship through Ray's object store: a file
    (and a LOBSTER message/orderbook file's partner beside it) or a directory's files."""
    p = Path(path)
    if p.is_dir():
        return {f.name: f.read_bytes() for f in sorted(p.iterdir()) if f.is_file()}
    files = {p.name: p.read_bytes()}
    for a, b in (("_message_", "_orderbook_"), ("_orderbook_", "_message_")):
        if a in p.name:
            partner = p.with_name(p.name.replace(a, b))
            if partner.exists():
                files[partner.name] = partner.read_bytes()
    return files


def _materialise(spec: RunSpec, files: dict[str, bytes], tmp: Path) -> str:
    """Write shipped files under ``tmp`` (the worker's disk); the path to replay."""
    for name, blob in files.items():
        (tmp / name).write_bytes(blob)
    p = Path(spec.data)
    return str(tmp) if p.suffix == "" and len(files) > 1 else str(tmp / p.name)


def _journal_sha(journal: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(journal.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _portable(error: str, out_root: str, given: str, used: str, tmp: Path | None) -> str:
    """``error`` without this execution's own paths, so two executions of a run give the
    same text (the table's reproducibility): the sweep directory's prefix goes (paths read
    relative to OUT, as the table's other paths do), and a shipped file's temporary copy
    reads as the path given."""
    for root in {str(Path(out_root).resolve()), str(out_root)}:
        error = error.replace(root.rstrip("/") + "/", "")
    if tmp is not None:
        error = error.replace(used, given).replace(str(tmp), str(Path(given).parent))
    return error


def _with_params_file(spec: RunSpec, out_root: str) -> str:
    """The run's topology, with ``signals.params_file`` set to the calibration's file (an
    absolute path, so ``command`` works from anywhere) when the run has one."""
    if spec.params_file is None:
        return spec.topology_toml
    from bot4.research.space import topology_text

    path = str((Path(out_root) / spec.params_file).resolve())
    return topology_text(spec.topology_toml, {"signals.params_file": path})


def run_one(spec: RunSpec, out_root: str, shipped: dict[str, bytes] | None = None) -> dict:
    """Run ``spec`` into ``out_root/runs/KEY`` (a previous, unfinished attempt there is
    replaced) and return its table row; never raises. ``shipped``: the data's files when
    they travel through the object store instead of a shared path."""
    from bot4.pipeline.topology import load_topology
    from bot4.replay.latency import LatencyConfig
    from bot4.replay.runner import replay

    t0 = time.perf_counter()
    row = spec.base_row()
    rel = f"runs/{spec.key}"
    run_dir = Path(out_root) / rel
    tmp = None
    data = spec.data
    try:
        if spec.params_error is not None:  # its window's calibration failed: so does the run
            row.update(failed_row(spec, spec.params_error))
            return row
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "topology.toml").write_text(_with_params_file(spec, out_root))
        topo = load_topology(run_dir / "topology.toml")
        latency = LatencyConfig.from_specs(spec.latency_specs())
        if shipped is not None:
            tmp = Path(tempfile.mkdtemp(prefix="bot4-sweep-data-"))
            data = _materialise(spec, shipped, tmp)
        step = {} if spec.step_ns is None else {"step_ns": spec.step_ns}
        out = replay(
            data,
            run_dir,
            topology=topo,
            latency=latency,
            seed=spec.seed,
            interval_ns=spec.interval_ns,
            progress=None,
            **step,
        )
        row.update(metrics_of(out.report.doc))
        row["status"] = "ok"
        row["report_html"] = f"{rel}/report.html"
        row["report_json"] = f"{rel}/report.json"
        if (run_dir / "trades.csv").exists():
            row["trades_csv"] = f"{rel}/trades.csv"
        row["journal_sha256"] = _journal_sha(run_dir / "journal")
        row["command"] = spec.command(rel)
    except Exception as exc:  # noqa: BLE001 - every failure is the run's result
        row.update(failed_row(spec, exc))
        row["error"] = _portable(row["error"], out_root, spec.data, data, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        row["wall_s"] = time.perf_counter() - t0
        row["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    return row
