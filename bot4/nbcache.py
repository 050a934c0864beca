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
reach no bot4 module are left to numba's own locators. :func:`prune` does not touch the
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
or writes anything there and holds it until it exits. :func:`prune` deletes a key
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
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported either
if TYPE_CHECKING:  # pathlib is imported on first use: `import bot4` stays cheap
    from pathlib import Path

PACKAGE = "bot4"
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
LOCK_NAME = ".in-use"
WRITE_LOCK_NAME = ".write-lock"
INFO_NAME = "key.json"
KEY_HEX = 16
_TRASH_PREFIX = ".prune-"

#: set by :func:`_patch` once numba's caching module is patched (numba may load it by
#: name through ``NUMBA_CACHE_LOCATOR_CLASSES``)
KeyedCacheLocator = None


# --- keys ---------------------------------------------------------------------------


def package_dir() -> Path:
    """The directory of this bot4 package (symlinks resolved)."""
    from pathlib import Path

    return Path(_PACKAGE_DIR)


class ModuleKey:
    """The cache key of one bot4 module; ``dirname`` is its directory under the root.

    ``source``: sha256 hex over (name, content) of the module and its bot4 imports, which
    ``files`` lists; ``toolchain`` and ``target``: sha256 hex of :func:`toolchain_info`
    and :func:`target_info`.
    """

    __slots__ = ("module", "source", "toolchain", "target", "files")

    def __init__(
        self, module: str, source: str, toolchain: str, target: str, files: tuple[str, ...]
    ) -> None:
        self.module = module
        self.source = source
        self.toolchain = toolchain
        self.target = target
        self.files = files

    @property
    def dirname(self) -> str:
        import hashlib

        h = hashlib.sha256(
            "\0".join((self.module, self.source, self.toolchain, self.target)).encode()
        )
        return f"{self.module}-{h.hexdigest()[:KEY_HEX]}"


_file_of: dict[str, Path | None] = {}
_digest_of: dict[str, bytes] = {}
_deps_of: dict[str, frozenset[str]] = {}
_closure_of: dict[str, frozenset[str]] = {}
_key_of: dict[str, ModuleKey] = {}
_env: dict[str, tuple[dict, str]] = {}


def module_file(name: str) -> Path | None:
    """The source file of bot4 module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    if name in _file_of:
        return _file_of[name]
    parts = name.split(".")
    path = None
    if parts[0] == PACKAGE and all(p.isidentifier() for p in parts):
        base = package_dir().joinpath(*parts[1:])
        if (base / "__init__.py").is_file():
            path = base / "__init__.py"
        elif len(parts) > 1 and base.with_suffix(".py").is_file():
            path = base.with_suffix(".py")
    _file_of[name] = path
    return path


def module_of(py_file: str | os.PathLike) -> str | None:
    """The dotted bot4 module name of a source file, or None for a file outside bot4."""
    from pathlib import Path

    p = Path(py_file).resolve()
    if p.suffix != ".py":
        return None
    try:
        rel = p.relative_to(_PACKAGE_DIR)
    except ValueError:
        return None
    parts = [PACKAGE, *rel.with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    name = ".".join(parts)
    return name if module_file(name) == p else None


#: ``ext.<dir>_<hash>.<stem>`` -> the file, for kernel files outside the package
#: (benchmarks, test helpers) whose imports reach bot4: see :func:`external_module`
_ext_files: dict[str, Path] = {}
EXT_PREFIX = "ext."


def _ident(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", text) or "_"


def external_module(py_file: str | os.PathLike) -> str | None:
    """A module name for a ``.py`` file outside the bot4 package, so that its cached kernels
    are keyed like bot4's (``ext.<dir>_<8 hex of its directory's path>.<stem>``); None if
    it is not a source file.

    numba keys such a file's cache on its own source only, yet its kernels compile bot4's
    kernels into themselves: ``perf/riskbench.py``'s ``loop_risk`` kept an old
    ``check_intents`` (6.5x slower) after ``bot4/risk`` changed, and the gate failed on it.
    The directory's hash keeps two checkouts apart (same stem, different neighbours).
    """
    import hashlib
    from pathlib import Path

    p = Path(py_file).resolve()
    if p.suffix != ".py" or not p.is_file():
        return None
    tag = hashlib.sha256(str(p.parent).encode()).hexdigest()[:8]
    name = f"{EXT_PREFIX}{_ident(p.parent.name)}_{tag}.{_ident(p.stem)}"
    _ext_files[name] = p
    _file_of[name] = p
    return name


def _sibling(name: str, dotted: str | None) -> str | None:
    """The file beside external module ``name`` that ``import dotted`` loads (scripts run
    from their own directory import their neighbours by plain name), as a module name."""
    if not dotted:
        return None
    here = _ext_files[name].parent
    first = dotted.split(".")[0]
    path = here / f"{first}.py"
    return external_module(path) if path.is_file() else None


def _existing(dotted: str | None) -> str | None:
    """The longest prefix of ``dotted`` that is a bot4 module (``bot4.x.Name`` -> ``bot4.x``)."""
    if not dotted or dotted.split(".")[0] != PACKAGE:
        return None
    parts = dotted.split(".")
    while parts:
        if module_file(".".join(parts)) is not None:
            return ".".join(parts)
        parts.pop()
    return None


def _digest(name: str) -> bytes:
    if name not in _digest_of:
        import hashlib

        _digest_of[name] = hashlib.sha256(module_file(name).read_bytes()).digest()
    return _digest_of[name]


def _statements(tree):
    """Every statement of a module, nested ones included (imports are never expressions)."""
    todo = [tree] if tree is not None else []
    while todo:
        node = todo.pop()
        yield node
        for attr in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(node, attr, ()))


_memo: dict | None = None  # "<module>:<sha256 of its source>" -> its import statements
_memo_changed = False
MEMO_NAME = ".imports.json"


def _load_memo() -> dict:
    global _memo
    if _memo is None:
        import json

        try:
            _memo = json.loads((cache_root() / MEMO_NAME).read_text())
        except (OSError, ValueError):
            _memo = {}
        if not isinstance(_memo, dict):
            _memo = {}
    return _memo


def _save_memo(keep: set[str] | None = None) -> None:
    """Write the import memo to the root (atomically; best effort: a lost write costs a parse)."""
    global _memo_changed
    memo = _load_memo()
    if keep is not None:
        memo = {k: v for k, v in memo.items() if k in keep}
    elif not _memo_changed:
        return
    import json

    _memo_changed = False
    root = cache_root()
    tmp = root / f"{MEMO_NAME}.{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo, separators=(",", ":")))
        os.replace(tmp, root / MEMO_NAME)
    except OSError:
        tmp.unlink(missing_ok=True)


def _import_statements(name: str) -> list:
    """The import statements of module ``name``: ``[level, module, names]`` each (``names``
    None for ``import module``), anywhere in the file, in file order.

    Parsing every module costs ~5 ms each; the result depends on the file's bytes alone, so
    it is memoised under the cache root by content digest (``.imports.json``).
    """
    global _memo_changed
    memo = _load_memo()
    key = f"{name}:{_digest(name).hex()}"
    raw = memo.get(key)
    if isinstance(raw, list):
        return raw
    import ast

    path = module_file(name)
    raw = []
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        tree = None  # Python will refuse to import it anyway; its bytes are still hashed
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            raw.extend([0, alias.name, None] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raw.append([node.level, node.module, [alias.name for alias in node.names]])
    memo[key] = raw
    _memo_changed = True
    return raw


def imports_of(name: str) -> frozenset[str]:
    """The bot4 modules ``name`` imports directly (anywhere in the file), itself excluded.

    ``import bot4.a.b`` and ``from bot4.a import b`` (``b`` a module) name ``bot4.a.b``;
    ``from bot4.a import x`` (``x`` defined in ``a/__init__.py``) names ``bot4.a``; relative
    imports are resolved against the module's package. Parent packages that Python runs on
    the way are not counted unless names are taken from them.
    """
    if name in _deps_of:
        return _deps_of[name]
    is_pkg = module_file(name).name == "__init__.py"
    deps: set[str | None] = set()
    external = name in _ext_files
    for level, module, names in _import_statements(name):
        if external and not level and _existing(module) is None:
            deps.add(_sibling(name, module))
            continue
        if names is None:
            deps.add(_existing(module))
            continue
        if level:
            pkg = name if is_pkg else name.rpartition(".")[0]
            for _ in range(level - 1):
                pkg = pkg.rpartition(".")[0]
            base = f"{pkg}.{module}" if module else pkg
        else:
            base = module
        mod = _existing(base)
        deps.add(mod)
        if mod is not None and mod == base:
            for n in names:
                if n != "*" and module_file(f"{base}.{n}") is not None:
                    deps.add(f"{base}.{n}")
    deps.discard(None)
    deps.discard(name)
    _deps_of[name] = frozenset(deps)
    return _deps_of[name]


def closure_of(name: str) -> frozenset[str]:
    """``name`` and every bot4 module it imports, transitively."""
    if name not in _closure_of:
        seen = {name}
        todo = [name]
        while todo:
            for dep in imports_of(todo.pop()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        _closure_of[name] = frozenset(seen)
    return _closure_of[name]


def source_digest(name: str) -> str:
    """sha256 hex over the names and contents of ``closure_of(name)``, in name order."""
    import hashlib

    h = hashlib.sha256()
    for mod in sorted(closure_of(name)):
        h.update(mod.encode() + b"\0" + _digest(mod))
    return h.hexdigest()


def _digest_json(info: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()


def toolchain_info() -> dict:
    """What compiled the code: numba, llvmlite, numpy, Python, machine, numba's codegen knobs."""
    if "toolchain" not in _env:
        import platform

        import llvmlite
        import numba
        import numpy
        from numba.core import config

        info = {
            "numba": numba.__version__,
            "llvmlite": llvmlite.__version__,
            "numpy": numpy.__version__,
            "python": sys.version,
            "cache_tag": sys.implementation.cache_tag,
            "machine": platform.machine(),
            "opt": str(getattr(config, "OPT", "")),
            "boundscheck": str(getattr(config, "BOUNDSCHECK", "")),
            "debuginfo": str(getattr(config, "DEBUGINFO_DEFAULT", "")),
        }
        _env["toolchain"] = (info, _digest_json(info))
    return _env["toolchain"][0]


def target_info() -> dict:
    """What the code was compiled for: numba's CPU name and features, and ``BOT4_SIMD``.

    Mirrors numba's own choice (``numba.core.codegen.CPUCodegen``): ``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES`` when set (``bot4.simd`` sets them for ``512``/``256``), else the
    host's.
    """
    if "target" not in _env:
        import llvmlite.binding as ll
        from numba.core import codegen, config

        name = config.CPU_NAME if config.CPU_NAME is not None else ll.get_host_cpu_name()
        feats = (
            config.CPU_FEATURES
            if config.CPU_FEATURES is not None
            else codegen.get_host_cpu_features()
        )
        simd = getattr(sys.modules.get(PACKAGE), "SIMD_MODE", None) or os.environ.get(
            "BOT4_SIMD", "auto"
        )
        info = {"cpu_name": name, "cpu_features": feats, "simd": simd}
        _env["target"] = (info, _digest_json(info))
    return _env["target"][0]


def key_of(name: str) -> ModuleKey:
    """The cache key of bot4 module ``name`` (computed once per process)."""
    if name not in _key_of:
        toolchain_info()
        target_info()
        _key_of[name] = ModuleKey(
            module=name,
            source=source_digest(name),
            toolchain=_env["toolchain"][1],
            target=_env["target"][1],
            files=tuple(sorted(closure_of(name))),
        )
        _save_memo()
    return _key_of[name]


def all_modules() -> list[str]:
    """Every module of this bot4 tree, by dotted name."""
    names = []
    for p in sorted(package_dir().rglob("*.py")):
        name = module_of(p)
        if name is not None:
            names.append(name)
    return names


# --- roots and claims -----------------------------------------------------------------


def cache_root() -> Path:
    """``$NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/bot4/numba``, else ``~/.cache/bot4/numba``."""
    from pathlib import Path

    d = os.environ.get("NUMBA_CACHE_DIR")
    if d:
        return Path(d).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).absolute() / "bot4" / "numba"


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
        _patch(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _NumbaCachingHook)]

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _NumbaCachingHook:
    """A meta path finder for ``numba.core.caching`` only; everything else passes by."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "numba.core.caching":
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
    """Key bot4's numba cache from now on in this process (idempotent, cheap).

    Must run before the first bot4 kernel module is imported; ``bot4/__init__.py`` does.
    """
    caching = sys.modules.get("numba.core.caching")
    if caching is not None:
        _patch(caching)
    elif not any(isinstance(f, _NumbaCachingHook) for f in sys.meta_path):
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
        _save_memo(keep={f"{m}:{_digest(m).hex()}" for m in keys})
    current = {k.dirname for k in keys.values()}
    toolchain = _env["toolchain"][1]
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
