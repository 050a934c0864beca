"""List numba kernels in bot4/ whose signature takes more than N parameters.

Issue 13 asks for no kernel signature over ~8 parameters: kernels take one named state
object (a namedtuple of arrays, as ``bot4/oms/book.py`` does) instead of loose arrays.
This walks every module under ``bot4/`` with ``ast`` (nothing is imported or compiled) and
prints each function decorated with ``njit`` / ``numba.njit`` / ``jit`` / bot4.nbkit's ``hot`` and ``inner`` (bare or called)
whose positional + keyword parameter count exceeds the limit, widest first.

    python tools/kernel_params.py            # limit 8
    python tools/kernel_params.py --limit 10 --fail   # exit 1 when any is found
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
JIT_NAMES = {"njit", "jit", "generated_jit", "hot", "inner"}  # bot4.nbkit.hot, .inner


def _is_jit(dec: ast.expr) -> bool:
    if isinstance(dec, ast.Call):
        dec = dec.func
    if isinstance(dec, ast.Name):
        return dec.id in JIT_NAMES
    if isinstance(dec, ast.Attribute):
        return dec.attr in JIT_NAMES
    return False


def _n_params(fn: ast.FunctionDef) -> int:
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    return n + (a.vararg is not None) + (a.kwarg is not None)


def wide_kernels(root: pathlib.Path, limit: int) -> list[tuple[int, str, int, str]]:
    found = []
    for path in sorted((root / "bot4").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(_is_jit(d) for d in node.decorator_list):
                n = _n_params(node)
                if n > limit:
                    found.append((n, str(path.relative_to(root)), node.lineno, node.name))
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=8, help="largest allowed parameter count")
    p.add_argument("--fail", action="store_true", help="exit 1 when any kernel is wider")
    args = p.parse_args(argv)
    found = wide_kernels(ROOT, args.limit)
    for n, path, line, name in found:
        print(f"{n:3d}  {path}:{line}  {name}")
    print(f"{len(found)} kernel(s) over {args.limit} parameters")
    return 1 if (found and args.fail) else 0


if __name__ == "__main__":
    sys.exit(main())
