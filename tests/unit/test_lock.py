"""The hashed lock files cover what pyproject.toml asks for: every dependency of bot4 and of
the extras the test suite installs is pinned (``==``) at a version its specifier allows, with
hashes. A dependency added without running ``bash .ci/lock`` fails here, by name, instead of
as an import error somewhere in the suite (``.ci/run`` installs the lock, then bot4 with
``--no-deps``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(lock: Path) -> dict[str, str]:
    """name -> pinned version of a ``uv pip compile --generate-hashes`` file; each pin has
    at least one sha256 hash."""
    text = lock.read_text()
    pins = {}
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)",
                         text, re.M):  # fmt: skip
        pins[canonicalize_name(m.group(1))] = m.group(2)
    names = re.findall(r"^([A-Za-z0-9_.\-]+)==", text, re.M)
    assert len(names) == len(pins), f"{lock.name}: a pin without hashes"
    return pins


def _requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if canonicalize_name(r.name) == "bot4":
                todo.extend(r.extras)  # the test extra pulls parquet, calibrate, embedded-db
            else:
                out.append(r)
    return out


def _check(lock: str, extras: list[str]) -> None:
    pins = _pins(ROOT / lock)
    for req in _requirements(extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock}: {req} not pinned: regenerate with `bash .ci/lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock}: {name}=={pins[name]} does not satisfy {req}: regenerate with `bash .ci/lock`"
        )


def test_the_lock_ci_installs_covers_bot4_and_everything_the_tests_need():
    _check("requirements.lock", ["test"])


def test_the_core_lock_covers_bot4_at_the_same_versions():
    _check("requirements-core.lock", [])
    full, core = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-core.lock")
    assert {n: full.get(n) for n in core} == core
