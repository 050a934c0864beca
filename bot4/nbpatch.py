"""A compile-time fix to numba's ``inline='always'`` inliner (issue 17): same code, less work.

numba inlines a callee marked ``inline='always'`` at the IR level
(``numba.core.inline_closurecall.InlineWorker.inline_ir``). It first copies the callee's
IR, and it copies it block by block, each block with its *own* ``copy.deepcopy`` memo.
Every variable of a block refers to the function's one ``Scope``, which holds every
variable of the function, so each block's copy copies the whole scope again: a callee of
``B`` blocks and ``V`` variables costs ``B * V`` copies instead of ``B + V``, twice per
inlined call (the copy it inlines and an unmutated one it returns), and then
``_get_all_scopes`` compares those ``B`` equal-but-distinct scopes to each other field by
field. On bot4's kernels, whose fast paths inline large helpers that inline others, this
was ~40 % of the venue market data job's compile (``perf/compile_profile.py``, cProfile:
2.3 M ``Var.__deepcopy__`` calls for one ``_md_batch``).

:func:`apply` recompiles ``inline_ir`` from numba's own source with one memo per IR copy,
so the copied blocks share one copied scope, as the blocks of the original do. The IR that
comes out is the same (same variables, labels and statements; the machine code of every
default-topology kernel was compared: ``tests/unit/test_nbpatch.py``), so cached machine
code does not depend on it and it is not part of the cache key. If numba's source is not
the one expected (another numba version), nothing is patched and numba runs as it is.

:func:`bot4.nbcache.install` applies it when numba's ``inline_closurecall`` module is
imported (``bot4/__init__.py``); ``BOT4_NUMBA_PATCH=0`` turns it off.
"""

from __future__ import annotations

import os

#: numba's per-block copy (numba 0.60 - 0.68) and its replacement, one memo per IR copy
_PER_BLOCK = """\
    for block_label, block in the_ir.blocks.items():
        new_block = copy.deepcopy(the_ir.blocks[block_label])
        kernel_copy.blocks[block_label] = new_block
"""
_ONE_MEMO = """\
    memo = {}  # bot4.nbpatch: one memo, so the blocks share one copied scope
    for block_label, block in the_ir.blocks.items():
        new_block = copy.deepcopy(the_ir.blocks[block_label], memo)
        kernel_copy.blocks[block_label] = new_block
"""

#: whether :func:`apply` patched numba in this process
applied = False


def enabled() -> bool:
    return os.environ.get("BOT4_NUMBA_PATCH", "1") != "0"


def apply(module) -> bool:
    """Patch ``module`` (``numba.core.inline_closurecall``) in place; True if patched."""
    global applied
    if applied or not enabled():
        return applied
    import inspect
    import textwrap

    worker = getattr(module, "InlineWorker", None)
    original = getattr(worker, "inline_ir", None)
    if original is None or getattr(original, "_bot4_patched", False):
        return applied
    try:
        src = textwrap.dedent(inspect.getsource(original))
    except (OSError, TypeError):
        return False
    # copy_ir is nested in the method: its loop is 8 deep in the dedented source
    old = textwrap.indent(_PER_BLOCK, " " * 4)
    if src.count(old) != 1:
        return False
    namespace: dict = {}
    code = compile(src.replace(old, textwrap.indent(_ONE_MEMO, " " * 4)), module.__file__, "exec")
    exec(code, module.__dict__, namespace)  # noqa: S102 - numba's own source, one line changed
    patched = namespace["inline_ir"]
    patched.__qualname__ = original.__qualname__
    patched._bot4_patched = True
    worker.inline_ir = patched
    applied = True
    return True
