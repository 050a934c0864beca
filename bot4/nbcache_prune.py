"""Pruning :mod:`bot4.nbcache`'s root: remove the key directories this source tree does
not use and no running process holds (``bot4 warm --prune``).

A directory is deleted only under its exclusive ``.in-use`` lock and renamed away first, so
a process claiming the key meanwhile creates it afresh (see :mod:`bot4.nbcache`).
"""

from __future__ import annotations

import os

from bot4 import nbcache_keys
from bot4.nbcache import INFO_NAME, LOCK_NAME, _same_file
from bot4.nbcache_keys import KEY_HEX, PACKAGE, all_modules, cache_root, key_of, package_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

_TRASH_PREFIX = ".prune-"


# --- pruning ----------------------------------------------------------------------------


class PruneReport:
    """What :func:`prune` did under ``root``: directory names by outcome, bytes freed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.removed: list[str] = []
        self.freed_bytes = 0
        self.current: list[str] = []  # keys of this tree and setting
        self.other_target: list[str] = []  # this tree and toolchain, another CPU/SIMD
        self.in_use: list[str] = []  # stale, but a running process holds its lock
        self.legacy: list[str] = []  # numba's unkeyed directories of this tree
        self.errors: list[str] = []


def _tree_size(d: Path) -> int:
    total = 0
    for p in d.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def _legacy_names() -> set[str]:
    """numba's own (unkeyed) directory names for this tree's package directories."""
    import hashlib

    names = set()
    pkg = package_dir()
    for d in {pkg, *(p.parent for p in pkg.rglob("*.py"))}:
        sub = os.path.abspath(d)
        names.add(f"{os.path.basename(sub)}_{hashlib.sha1(sub.encode()).hexdigest()}")
    return names


def prune(root: Path | None = None, dry_run: bool = False) -> PruneReport:
    """Remove key directories under ``root`` that this tree does not use and no process holds.

    Kept: every key of this source tree with this toolchain and target; keys of this tree
    and toolchain for another CPU/SIMD setting (``key.json`` says so); any directory whose
    ``.in-use`` lock a process holds. Removed (unless ``dry_run``): the other
    ``bot4.*-<key>`` directories, each while holding its exclusive lock, renamed away
    first. Entries not named like a key are never touched; numba's unkeyed directories of
    this tree (from before keyed caching) are listed in ``legacy`` for the operator.
    """
    import fcntl
    import json
    import re
    import shutil
    from pathlib import Path

    root = cache_root() if root is None else Path(root)
    rep = PruneReport(root=root)
    if not root.is_dir():
        return rep
    pattern = re.compile(rf"^{PACKAGE}(?:\.[A-Za-z_][A-Za-z0-9_]*)*-[0-9a-f]{{{KEY_HEX}}}$")
    keys = {m: key_of(m) for m in all_modules()}
    if not dry_run and root == cache_root():  # forget imports of files this tree no longer has
        nbcache_keys._save_memo(keep={f"{m}:{nbcache_keys._digest(m).hex()}" for m in keys})
    current = {k.dirname for k in keys.values()}
    toolchain = nbcache_keys._env["toolchain"][1]
    legacy = _legacy_names()
    for d in sorted(root.iterdir()):
        name = d.name
        if name.startswith(_TRASH_PREFIX) and d.is_dir():  # an interrupted prune's leftover
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            continue
        if name in legacy:
            rep.legacy.append(name)
            continue
        if not pattern.match(name) or not d.is_dir():
            continue
        if name in current:
            rep.current.append(name)
            continue
        try:
            info = json.loads((d / INFO_NAME).read_text())
        except (OSError, ValueError):
            info = {}
        mod = info.get("module")
        if (
            mod in keys
            and info.get("source") == keys[mod].source
            and info.get("toolchain") == toolchain
        ):
            rep.other_target.append(name)
            continue
        try:
            fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            continue  # another prune took it
        except OSError as exc:
            rep.errors.append(f"{name}: {exc}")
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                rep.in_use.append(name)
                continue
            if not _same_file(fd, d / LOCK_NAME):
                continue  # removed and recreated since we opened it: leave it to the next prune
            size = _tree_size(d)
            if not dry_run:
                trash = root / f"{_TRASH_PREFIX}{name}-{os.getpid()}"
                try:
                    os.rename(d, trash)  # new users recreate `d`; nobody opens `trash`
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    rep.errors.append(f"{name}: {exc}")
                    continue
                shutil.rmtree(trash, ignore_errors=True)
            rep.removed.append(name)
            rep.freed_bytes += size
        finally:
            os.close(fd)  # after the rmtree: a waiting claimer then sees the inode is gone
    return rep
