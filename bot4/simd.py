"""Vector width of numba kernels: a setting, applied before numba is imported.

On AVX-512 hosts LLVM prefers 256-bit vectors on many recent Intel cores (its
``prefer-256-bit`` tuning); 512-bit vectors need the CPU features numba compiles for to
carry ``-prefer-256-bit``. ``BOT4_SIMD`` chooses:

* ``auto`` (default) — leave numba's choice (the host's tuning);
* ``512`` — host features plus ``-prefer-256-bit`` (on hosts with ``avx512f``);
* ``256`` — host features plus ``+prefer-256-bit``.

It sets ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` from the host's own name and features,
so it must run before the first ``import numba`` — ``bot4/__init__.py`` calls
:func:`configure` first thing. An explicit ``NUMBA_CPU_FEATURES`` is left alone. numba's
on-disk cache is keyed by CPU name and features, so the settings never share entries.
"""

from __future__ import annotations

import os


def host_features() -> str:
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_features().flatten()


def has_avx512() -> bool:
    try:
        return "+avx512f" in host_features()
    except Exception:
        return False


def configure(mode: str | None = None) -> str:
    """Apply ``mode`` (or ``$BOT4_SIMD``); returns the mode in force."""
    mode = (mode or os.environ.get("BOT4_SIMD", "auto")).strip().lower()
    if mode not in ("auto", "512", "256"):
        raise ValueError(f"BOT4_SIMD={mode!r}: expected auto, 512 or 256")
    if mode == "auto" or "NUMBA_CPU_FEATURES" in os.environ:
        return mode
    import llvmlite.binding as llvm

    feats = host_features()
    if mode == "512" and "+avx512f" not in feats:
        return "auto"
    os.environ["NUMBA_CPU_NAME"] = llvm.get_host_cpu_name()
    os.environ["NUMBA_CPU_FEATURES"] = feats + (
        ",-prefer-256-bit" if mode == "512" else ",+prefer-256-bit"
    )
    return mode
