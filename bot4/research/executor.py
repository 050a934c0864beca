"""Where a sweep's runs execute: Ray tasks, one CPU each, results back to the driver.

* **Local by default.** With no address, a Ray instance is started on demand in this
  process (``num_cpus`` = the cores to use, default all; no dashboard) and shut down when
  the runs are done, so one machine needs nothing set up. ``address`` (``--ray-address``,
  e.g. ``ray://head:10001`` or ``auto``) joins an existing cluster instead, which is left
  running.
* **Data.** By default a worker opens the data path itself (a path every node sees: local
  disk on one machine, a shared file system on a cluster). ``ship_data`` puts each input's
  files in Ray's object store once (``ray.put``; a LOBSTER file travels with its partner)
  and a worker writes them to its own temporary directory before the replay.
* **Outputs.** Each run writes ``OUT/runs/KEY/`` on the node that ran it: on a cluster,
  ``OUT`` should be a shared path for the reports to be readable from the driver; the
  table's rows (metrics) always come back to the driver through Ray.
* **Environment.** Workers get the driver's ``BOT4_*`` and ``NUMBA_*`` variables
  (``runtime_env``), so they use the same SIMD width and the keyed numba cache; each task
  asks for one CPU and the replay pins nothing. ``warm`` runs ``bot4 warm`` once on every
  node first, so runs do not compile cold (on one machine the cache is already shared).
* **Authentication.** Ray's token authentication (on by default for a cluster started with
  ``ray start`` and for the local Ray): Ray sends its token to an explicit ``address`` only
  with ``RAY_AUTH_MODE=token`` in the environment; without it a refused connection's error
  line says so.
* **Start-up.** A local Ray that does not come up (Ray gives its raylet 30 s, which a
  machine with every core busy can miss) is tried once more, then the sweep stops with one
  ``bot4: error:`` line; the runs already in the table stay.
* **Failures.** A task is never retried (a run is deterministic: it would fail again); a
  worker that dies (out of memory, a signal) gives that run a failed row with Ray's error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

from bot4.records.errors import Bot4Error, Code
from bot4.research.runs import RunSpec, failed_row, pack_data, run_one

__all__ = ["RayExecutor", "run_serial"]


def run_serial(specs: Iterable[RunSpec], out_root: str, on_row: Callable[[dict], None]) -> None:
    """The same runs one after the other in this process (``--executor serial``; the
    baseline the throughput figures compare Ray with)."""
    for s in specs:
        on_row(run_one(s, out_root))


def _warm_node() -> str:
    from bot4.warm import warm

    warm()
    return os.uname().nodename


class RayExecutor:
    """Ray, started on demand (module docstring): at the first run or :meth:`cpus` call, so
    a resumed sweep with nothing left to run starts no Ray. Use as a context manager: Ray
    is shut down on exit when this executor started it."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        ship_data: bool = False,
        warm: bool = False,
    ) -> None:
        import ray  # noqa: F401 - a missing `research` extra is said before any run

        self.address = address
        self.num_cpus = num_cpus
        self.ship_data = ship_data
        self.warm = warm
        self.started = False
        self.entered = False
        self.startup_s = 0.0

    def __enter__(self) -> RayExecutor:
        return self

    def start(self) -> None:
        """Connect to (or start) Ray once; ``startup_s`` is what that took."""
        import time

        import ray

        if self.entered:
            return
        self.entered = True

        t0 = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k.startswith(("BOT4_", "NUMBA_"))}
        if not ray.is_initialized():
            kw = dict(
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": env} if env else None,
            )
            for attempt in (1, 2):
                try:
                    if self.address:
                        ray.init(address=self.address, **kw)
                    else:
                        ray.init(num_cpus=self.num_cpus, **kw)
                    break
                except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception here
                    # Ray gives its raylet 30 s to register (not configurable): a machine
                    # whose cores are all busy can miss that once; try once more, then say so
                    with contextlib.suppress(Exception):
                        ray.shutdown()
                    if attempt == 2 or self.address:
                        raise Bot4Error(self._start_error(exc), Code.INTERNAL_ERROR) from None
            self.started = True
        if self.warm:
            self._warm_nodes()
        self.startup_s = time.perf_counter() - t0

    def _start_error(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        if not self.address:
            return f"could not start a local Ray: {text} (retry, or run with --serial)"
        hint = ""
        if "RAY_AUTH_MODE" not in os.environ:
            # Ray never sends a token to an address given explicitly unless told to; a
            # cluster started with `ray start` (token authentication on by default) refuses
            hint = (
                "; a cluster with Ray's token authentication (the default of `ray start`) "
                "needs RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            )
        return f"could not connect to the Ray cluster at {self.address}: {text}{hint}"

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def cpus(self) -> int:
        import ray

        self.start()
        return int(ray.cluster_resources().get("CPU", 1))

    def _warm_nodes(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(num_cpus=1, max_retries=0)(_warm_node)
        refs = [
            task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote()
            for n in ray.nodes()
            if n.get("Alive")
        ]
        ray.get(refs)

    def run(self, specs: Iterable[RunSpec], out_root: str, on_row: Callable[[dict], None]) -> None:
        """Submit every spec, call ``on_row`` (in this process) as each finishes."""
        import ray

        self.start()
        task = ray.remote(num_cpus=1, max_retries=0)(run_one)
        shipped: dict[str, object] = {}
        pending: dict = {}
        for s in specs:
            arg = None
            if self.ship_data:
                if s.data not in shipped:
                    shipped[s.data] = ray.put(pack_data(s.data))
                arg = shipped[s.data]
            pending[task.remote(s, os.path.abspath(out_root), arg)] = s
        refs = list(pending)
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            for r in done:
                try:
                    row = ray.get(r)
                except Exception as exc:  # noqa: BLE001 - the worker died: the run failed
                    row = failed_row(pending[r], exc)
                on_row(row)
