"""The cache keys of :mod:`bot4.nbcache`: which files a kernel module's machine code depends
on (its bot4 imports, transitively, read with :mod:`ast`), the toolchain and target it is
compiled with, and the root the key directories live under.

:mod:`bot4.nbcache` describes the key and re-exports these names; this module holds the
per-process memos (``_file_of``, ``_ext_files``, ``_memo``, ``_env``, ...), once. It imports
``os`` and ``sys`` only at module level: ``import bot4`` loads it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported either
if TYPE_CHECKING:  # pathlib is imported on first use: `import bot4` stays cheap
    from pathlib import Path

PACKAGE = "bot4"
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
KEY_HEX = 16


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


# --- the root --------------------------------------------------------------------------


def cache_root() -> Path:
    """``$NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/bot4/numba``, else ``~/.cache/bot4/numba``."""
    from pathlib import Path

    d = os.environ.get("NUMBA_CACHE_DIR")
    if d:
        return Path(d).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).absolute() / "bot4" / "numba"
