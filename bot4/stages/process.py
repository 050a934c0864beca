"""Process-wide settings of a stage process (dedicated or group): the core pin, opt-in
SCHED_FIFO and mlockall (``apply_process_settings``, also the gateways' runner's), and the
garbage collector's freeze after setup (``quiet_gc``)."""

from __future__ import annotations

import gc
import os


def quiet_gc() -> None:
    """After setup: collect once and move every object alive (modules, numba's dispatchers
    and types, the stage's state: ~300 k objects in a stage process) to the permanent
    generation (``gc.freeze``), so the collector's later passes scan only what the loop
    allocates since. Before, a full collection of a stage process took 100-280 ms on this
    VM, a pause no record could cross; the young generations stay collected as usual."""
    gc.collect()
    gc.freeze()


def apply_process_settings(spec) -> list[str]:
    """Pin to the stage's core; opt-in SCHED_FIFO and mlockall. Returns warnings."""
    warnings = []
    os.sched_setaffinity(0, {spec.core})
    if spec.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(spec.priority))
        except (PermissionError, OSError) as exc:
            warnings.append(
                f"stage {spec.name}: SCHED_FIFO priority {spec.priority} not permitted ({exc}); running SCHED_OTHER"
            )
    if spec.mlock:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(3) != 0:  # MCL_CURRENT | MCL_FUTURE
            err = ctypes.get_errno()
            warnings.append(
                f"stage {spec.name}: mlockall not permitted ({os.strerror(err)}); raise LimitMEMLOCK"
            )
    return warnings
