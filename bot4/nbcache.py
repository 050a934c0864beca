"""numba's on-disk cache, keyed by everything a kernel module's machine code depends on.

numba (``cache=True``) keys a cached function on its own file only, so a constant or a
callee in *another* module (``ring_ops`` reads ``W_*`` from ``ring_layout``; ``checks``
reads ``L_*`` from ``limits``) can change while the cached machine code, with the old
offsets compiled in, is still loaded. Here every bot4 module that defines cached kernels
gets a directory of its own::

    <root>/<module>-<key>/        e.g. bot4.shm.ring_ops-3f0c9a1e27b4d815/
        key.json                  what went into the key (for operators and pruning)
        .in-use                   flock'ed LOCK_SH by every process using this key
        .write-lock               flock'ed LOCK_EX while a process adds a cache entry
        ring_ops.count_rejection-244.py311.nbi, ...   numba's own index and data files

``key`` = sha256 (first 16 hex digits) of

* the source of the module and of every bot4 module it imports, transitively (imports are
  read with :mod:`ast`, resolved inside the ``bot4`` package only; an import inside a
  function counts too): the *source digest*;
* numba, llvmlite, numpy and Python versions, the machine, numba's ``OPT``,
  ``BOUNDSCHECK`` and ``DEBUGINFO`` settings: the *toolchain digest*;
* the CPU name and features numba compiles for and ``BOT4_SIMD``: the *target digest*.

An edit therefore recompiles exactly the modules that (transitively) import the edited
file; everything else keeps loading from its unchanged directory.

A kernel file *outside* the package whose imports reach bot4 (``perf/riskbench.py``, a test
helper) is keyed the same way, as ``ext.<dir>_<8 hex of the directory>.<stem>``: its own
source, the bot4 modules it imports transitively and the neighbours in its directory it
imports by plain name. numba compiles the bot4 kernels it calls into its machine code, so
keyed on its own file alone it ran the old bot4 code after an edit. Files whose imports
reach no bot4 module are left to numba's own locators. :func:`bot4.nbcache_prune.prune` does not touch the
``ext.*`` directories (it cannot know those files); deleting them costs a recompile.

Root: ``$NUMBA_CACHE_DIR`` if set (the systemd units set ``/var/cache/bot4/numba``), else
``$XDG_CACHE_HOME/bot4/numba``, else ``~/.cache/bot4/numba``. If the root cannot be
written, ``$TMPDIR/bot4-numba-<uid>`` (mode 0700, owned by the user) is used, with one
warning on stderr.

:func:`install` is called by ``bot4/__init__.py``, so it is in force in every process that
imports any part of bot4 — the CLI, spawned stage processes (they import ``bot4`` to
unpickle their entry point), pytest, replay workers — before any kernel module is
imported. It costs nothing at ``import bot4``: it adds an import hook that puts
:class:`KeyedCacheLocator` first in numba's locator list when ``numba.core.caching`` is
imported (or at once, if numba already was). Keys are computed on first lookup, per
module, and remembered for the life of the process.

In use: a process takes a shared ``flock`` on ``<key dir>/.in-use`` before numba reads
or writes anything there and holds it until it exits. :func:`~bot4.nbcache_prune.prune` deletes a key
directory only while holding the exclusive lock (non-blocking: a directory whose lock is
held is skipped), renames it away before deleting, and a process that was waiting for its
shared lock meanwhile notices (the lock file's inode changed) and creates the directory
afresh. So a key a running process uses is never deleted.

Concurrent writers: numba writes each cache file atomically (a unique temporary name,
then ``os.replace``), but adding an entry to a function's index is read-modify-write
without a lock: two processes compiling *different* signatures of one function at once
(``push_wait`` for two record types, in two stage processes or two ``bot4 warm``
workers) can both take data file ``N``, and the index can end up naming the other
signature's machine code (numba/numba#10128 is the same race on gufuncs). In a key
directory an index update here runs under an exclusive ``flock`` on ``.write-lock``:
the index is re-read inside the lock, the data file is written before the index entry
that names it, and a number is never given to two keys. Readers take no lock (every file
they open is whole, and a number, once indexed, always holds that key's code).

numba 0.68 stamps an index with the sha256 of the source file, not its mtime, so a
reinstall or a fresh clone of unchanged files keeps its cache; with the key directories,
an upgrade recompiles exactly the modules whose sources (or imports') changed. The target
digest ties a prebuilt cache to the CPU: copied to a machine with another CPU name or
feature set, its keys are simply not looked up there (numba's own index checks the same
``magic_tuple``).

:func:`notice_cold` makes a process say, once, when it compiles instead of loading (the
stage processes use it: a cold cache is named in the log, not a silent stall).

``NUMBA_CACHE_LOCATOR_CLASSES`` (recent numba, e.g. 0.68) replaces numba's locator list;
if it is set without ``bot4.nbcache.KeyedCacheLocator``, bot4's kernels are not keyed and
a warning says so.

The parts: :mod:`bot4.nbcache_keys` computes the keys (re-exported here: ``key_of``,
``closure_of``, ``cache_root``, ...); this module claims key directories and hooks numba;
:mod:`bot4.nbcache_prune` removes unused keys (``bot4 warm --prune``).
"""

from __future__ import annotations

import os
import sys

from bot4.nbcache_keys import (
    EXT_PREFIX,
    KEY_HEX,
    MEMO_NAME,
    PACKAGE,
    ModuleKey,
    all_modules,
    cache_root,
    closure_of,
    external_module,
    imports_of,
    key_of,
    module_file,
    module_of,
    package_dir,
    source_digest,
    target_info,
    toolchain_info,
)

TYPE_CHECKING = False  # typing itself is not imported either
if TYPE_CHECKING:  # pathlib is imported on first use: `import bot4` stays cheap
    from pathlib import Path

__all__ = [
    "EXT_PREFIX",
    "INFO_NAME",
    "KEY_HEX",
    "LOCK_NAME",
    "MEMO_NAME",
    "PACKAGE",
    "WRITE_LOCK_NAME",
    "KeyedCacheLocator",
    "ModuleKey",
    "all_modules",
    "cache_root",
    "closure_of",
    "compiled_name",
    "external_module",
    "imports_of",
    "install",
    "key_dir",
    "key_of",
    "module_file",
    "module_of",
    "notice_cold",
    "package_dir",
    "source_digest",
    "target_info",
    "toolchain_info",
    "used_paths",
]

LOCK_NAME = ".in-use"
WRITE_LOCK_NAME = ".write-lock"
INFO_NAME = "key.json"

#: set by :func:`_patch` once numba's caching module is patched (numba may load it by
#: name through ``NUMBA_CACHE_LOCATOR_CLASSES``)
KeyedCacheLocator = None


# --- roots and claims -----------------------------------------------------------------


def _fallback_root() -> Path:
    """A private per-user root under the temp dir: never one another user could plant in."""
    import stat
    import tempfile
    from pathlib import Path

    root = Path(tempfile.gettempdir()) / f"bot4-numba-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{root}: not a private directory of uid {os.getuid()}")
    return root


_claimed: dict[Path, int] = {}  # key dir -> fd holding LOCK_SH until the process exits
_keyed_paths: set[str] = set()  # the same directories, as numba names them
#: key directories this process looked a kernel up in or saved one to (``bot4.warm``'s
#: manifests: claims happen at import, for every kernel module imported, used or not)
used_paths: set[str] = set()
_warned: set[str] = set()


def _warn_once(what: str, msg: str) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"bot4: warning: {msg}", file=sys.stderr)


def _write_info(d: Path, key: ModuleKey) -> None:
    import json

    path = d / INFO_NAME
    if path.exists():
        return
    info = {
        "module": key.module,
        "source": key.source,
        "toolchain": key.toolchain,
        "target": key.target,
        "files": list(key.files),
        "toolchain_info": toolchain_info(),
        "target_info": target_info(),
    }
    tmp = d / f".{INFO_NAME}.{os.getpid()}"
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _claim(d: Path, key: ModuleKey) -> int:
    """Create ``d`` if needed and hold a shared lock on its ``.in-use``; returns the fd."""
    import fcntl
    import tempfile

    for _ in range(20):
        d.mkdir(parents=True, exist_ok=True)
        lock = d / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            continue  # pruned between mkdir and open
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _same_file(fd, lock):
                os.utime(fd)  # "last used", for operators
                _write_info(d, key)
                tempfile.TemporaryFile(dir=d).close()  # writable, as numba checks
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # pruned while we waited for the lock: start again
    raise OSError(f"{d}: removed repeatedly while claiming it")


def key_dir(name: str) -> Path | None:
    """The claimed cache directory of bot4 module ``name``; None if no root is writable."""
    key = key_of(name)
    for attempt in ("root", "fallback"):
        try:
            root = cache_root() if attempt == "root" else _fallback_root()
            d = root / key.dirname
            if d not in _claimed:
                _claimed[d] = _claim(d, key)
                _keyed_paths.add(str(d))
            return d
        except OSError as exc:
            _warn_once(attempt, f"numba cache {attempt} not usable: {exc}")
    return None


# --- numba hook -------------------------------------------------------------------------


def _make_locator(caching):
    class KeyedCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Caches a bot4 function under ``<root>/<module>-<key>``; other files: not ours."""

        _bot4_keyed = True

        def __init__(self, py_func, py_file, cache_path: str):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = cache_path

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            name = module_of(py_file)
            if name is None:
                name = external_module(py_file)
                if name is None or not any(not m.startswith(EXT_PREFIX) for m in closure_of(name)):
                    return None  # reaches no bot4 module: numba's own locators
            d = key_dir(name)
            return None if d is None else cls(py_func, py_file, str(d))

    KeyedCacheLocator.__module__ = __name__
    return KeyedCacheLocator


def _make_index_file(caching):
    base = caching.IndexDataCacheFile

    class LockedIndexDataCacheFile(base):
        """numba's index and data files; in a bot4 key directory, one writer at a time.

        ``save`` takes ``.write-lock`` exclusively, re-reads the index, writes the data file
        and then the index entry naming it; a number already indexed keeps its key. Outside
        bot4's key directories it is numba's own ``save``.
        """

        _bot4_locked = True

        def load(self, key):
            if self._cache_path in _keyed_paths:
                used_paths.add(self._cache_path)
            return super().load(key)

        def save(self, key, data):
            if self._cache_path not in _keyed_paths:
                return super().save(key, data)
            used_paths.add(self._cache_path)
            import fcntl

            fd = os.open(
                os.path.join(self._cache_path, WRITE_LOCK_NAME),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o666,
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                overloads = self._load_index()
                name = overloads.get(key)
                if name is None:
                    taken = set(overloads.values())
                    number = 1
                    while self._data_name(number) in taken:
                        number += 1
                    name = self._data_name(number)
                self._save_data(name, data)  # before the index names it
                if overloads.get(key) != name:
                    overloads[key] = name
                    self._save_index(overloads)
            finally:
                os.close(fd)

    LockedIndexDataCacheFile.__module__ = __name__
    return LockedIndexDataCacheFile


def _patch(caching) -> None:
    global KeyedCacheLocator
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if classes is None or not hasattr(caching, "_SourceFileBackedLocatorMixin"):
        raise RuntimeError(
            "bot4: this numba's caching module has no CacheImpl._locator_classes; "
            "bot4.nbcache cannot key the kernel cache (update bot4/nbcache.py)"
        )
    if not any(getattr(c, "_bot4_keyed", False) for c in classes):
        KeyedCacheLocator = _make_locator(caching)
        classes.insert(0, KeyedCacheLocator)
    if not getattr(caching.IndexDataCacheFile, "_bot4_locked", False):
        caching.IndexDataCacheFile = _make_index_file(caching)  # Cache() looks it up by name
    override = os.environ.get("NUMBA_CACHE_LOCATOR_CLASSES", "")
    if override and f"{__name__}.KeyedCacheLocator" not in override:
        _warn_once(
            "override",
            "NUMBA_CACHE_LOCATOR_CLASSES is set: bot4's kernels are cached without "
            "bot4's dependency keys (stale code after an edit is possible)",
        )


class _PatchingLoader:
    """Runs numba's caching module, then puts bot4's locator in front of its list."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        _PATCHES[module.__name__](module)
        if all(name in sys.modules for name in _PATCHES):
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _NumbaCachingHook)]

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _patch_inliner(module) -> None:
    from bot4 import nbpatch

    nbpatch.apply(module)


#: numba modules patched as they are imported: the cache (keys, locked index writes) and
#: the ``inline='always'`` inliner's IR copy (:mod:`bot4.nbpatch`: same IR, less work)
_PATCHES = {"numba.core.caching": _patch, "numba.core.inline_closurecall": _patch_inliner}


class _NumbaCachingHook:
    """A meta path finder for the numba modules of ``_PATCHES``; everything else passes by."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader)
        return spec

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Key bot4's numba cache from now on in this process (idempotent, cheap), and patch
    numba's inliner's IR copy (:mod:`bot4.nbpatch`).

    Must run before the first bot4 kernel module is imported; ``bot4/__init__.py`` does.
    """
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
    missing = any(name not in sys.modules for name in _PATCHES)
    if missing and not any(isinstance(f, _NumbaCachingHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _NumbaCachingHook())


# --- cold compiles ------------------------------------------------------------------------


def compiled_name(dispatcher) -> str:
    """``module.qualname`` of a numba dispatcher's Python function."""
    f = dispatcher.py_func
    return f"{f.__module__}.{f.__qualname__}"


def notice_cold(say) -> None:
    """Call ``say(message)`` once, at this process's first numba compile (a cache miss):
    the message names the function being compiled and the cache root. Loads from the
    cache are not compiles and say nothing. Imports numba."""
    from numba.core import event

    said = []

    class _Cold(event.Listener):
        def on_start(self, ev) -> None:
            if not said:
                said.append(True)
                say(
                    f"numba cache cold: compiling {compiled_name(ev.data['dispatcher'])} "
                    f"and the kernels it calls (cache {cache_root()}; `bot4 warm` fills it "
                    "ahead of time)"
                )

        def on_end(self, ev) -> None:
            pass

    event.register("numba:compile", _Cold())
