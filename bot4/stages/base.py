"""The stage interface: setup in Python, a numba kernel per batch.

A stage kind is a subclass of :class:`Stage`. The loop (``bot4.stages.loop``) owns the
rings, the cursors and the control block; the stage owns only its state arrays and its
kernels. Per batch the loop hands the stage:

* ``process(i, batch, outs, counts, seq)`` — ``batch`` is a view of input ring ``i``'s
  slots (read it, do not keep it), ``outs[j]`` a writable view of output ring ``j`` with
  room for ``len(batch) * max_out_per_in`` records (claimed ring slots, or scratch when
  that output is muted during a resume). The stage writes ``counts[j]`` records to
  ``outs[j][:counts[j]]``, numbering them from ``seq``, and returns the next sequence
  number. It must not allocate in steady state.
* sources instead implement ``generate(position, n, outs, counts, seq)``, producing the
  records for source positions ``position .. position + k - 1`` (k <= n, returned with the
  next sequence number as ``(k, seq)``). A source must be a pure function of its
  position so a restarted source re-derives what it already emitted.

Restart semantics are the loop's: nothing skipped, nothing emitted twice. A stage
documents in ``restart_state`` what it cannot rebuild (state built from inputs that
were consumed before the restart).

Clocks: every timestamp a stage writes (``ts_signal_ns``, ``ts_risk_ns``, ``ts_order_ns``,
``ts_venue_ns``, arrival stamps, deadlines) comes from ``self.clock()`` — host
``CLOCK_MONOTONIC`` ns live (``time.monotonic_ns``) — and is handed to the kernels as their
``now`` argument; no kernel reads a clock itself. ``self.wall_clock()`` (``time.time_ns``,
ns since the Unix epoch) is read only to place wall-clock instants (a daily reset) on the
``clock`` axis. The replay harness substitutes one simulated clock for both before
``setup`` (``bot4.replay``), so a backtest is a function of its data and parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bot4.records import RECORD_TYPES


class ParamError(ValueError):
    """A stage's ``params`` cannot be used. ``key`` names the parameter (dotted below
    ``params``), ``reason`` says why; the topology loader adds the file and the stage:
    ``FILE: stage NAME: params.KEY: REASON``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"params.{key}: {reason}")
        self.key, self.reason = key, reason


def check_number(
    params: Mapping[str, Any],
    key: str,
    *,
    integer: bool = False,
    lo: float | None = None,
    hi: float | None = None,
) -> None:
    """``params[key]``, when present, is a finite number (an int if ``integer``) in
    [``lo``, ``hi``]; ParamError otherwise."""
    if key not in params:
        return
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise ParamError(key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ParamError(key, f"must be finite, got {v!r}")
    if lo is not None and v < lo:
        raise ParamError(key, f"must be >= {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise ParamError(key, f"must be <= {hi:g}, got {v!r}")


def check_choice(params: Mapping[str, Any], key: str, choices: Iterable[str]) -> None:
    """``params[key]``, when present, is one of ``choices``; ParamError otherwise."""
    choices = list(choices)
    if key in params and params[key] not in choices:
        raise ParamError(key, f"{params[key]!r} is not one of {', '.join(choices)}")


def check_type(params: Mapping[str, Any], key: str, typ: type | tuple, what: str) -> None:
    """``params[key]``, when present, is a ``typ`` (``what`` names it in the error)."""
    if key in params and not isinstance(params[key], typ):
        raise ParamError(key, f"expected {what}, got {params[key]!r}")


class Stage:
    """A stage kind: its class attributes and classmethods are the kind's capabilities,
    which the layers above (topology, segments, supervisor, CLI) ask instead of switching
    on ``kind`` names."""

    kind: str = ""
    #: produces records from outside the pipeline (a feed, a file, a generator): it has no
    #: input rings, the loop drives it without input, and its rate is its records out
    source: bool = False
    #: runs its own asyncio event loop (a network gateway): its process is
    #: ``bot4.stages.loop_async``'s, never a ``[[group]]`` member's
    event_loop: bool = False
    max_out_per_in: int = 1
    restart_state: str = "stateless: nothing is lost on restart"
    #: (min inputs, max inputs, min outputs, max outputs)
    arity: tuple[int, int, int, int] = (1, 1, 1, 1)
    #: required record types per input/output position, or None for any
    input_types: tuple[str, ...] | None = None
    output_types: tuple[str, ...] | None = None
    #: every key of ``params`` the kind reads; any other key is refused when the topology
    #: is loaded (a misspelt ``rat = 20000`` would otherwise run silently at the default)
    params_keys: frozenset[str] = frozenset()
    #: the stage's own live figures (at most ``control.MAX_COUNTERS`` names of at most 16
    #: ASCII bytes): the loop copies :meth:`counter_values` into the stage's control block
    #: at every housekeeping, ``bot4 stats`` and the exporter show them
    counter_names: tuple[str, ...] = ()

    # what the tools ask (the replay harness, ``bot4.warm``), instead of the kind's name:
    #: a market data source the deterministic replay stands in for with its feed of the
    #: recorded data (``md_gateway`` is a source of the network's records: not one)
    replay_feed: bool = False
    #: reads recorded market data itself (params ``source``, ``path``): a full replay runs
    #: it on the data
    reads_recorded: bool = False
    #: the exchange, across the network from the pipeline (the simulated venue): a replay
    #: delays the orders to it and its reports by its latency models and feeds it the
    #: market data on the exchange's side
    exchange: bool = False
    #: journals what the other stages emit: a run drains it last, then closes its journal
    drains_last: bool = False
    #: warm: the expected cold-compile seconds of its job, for longest-first scheduling
    #: (measured with perf/bench_warm.py on a 2-core VM, lightly loaded)
    warm_seconds: float = 2.0
    #: warm: its kernel trees per input are independent and long, so each compiles as a
    #: job of its own after one running ``setup`` alone
    warm_split_inputs: bool = False
    #: warm: the kind whose jobs compile this kind's kernels (None: its own)
    warm_as: str | None = None

    def __init__(self, spec, inputs, outputs, instance: str = "default", topology=None) -> None:
        self.spec = spec
        self.instance = instance
        self.topology = topology  # the whole Topology when run by the loop (None in tests)
        self.session = 0  # the instance's session (control block), set by the loop at attach
        self.params = dict(spec.params)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.in_dtypes = [RECORD_TYPES[r.type] for r in self.inputs]
        self.out_dtypes = [RECORD_TYPES[r.type] for r in self.outputs]
        #: monotonic ns of "now" (live: host CLOCK_MONOTONIC; replay: the simulated clock)
        self.clock: Callable[[], int] = time.monotonic_ns
        #: ns since the Unix epoch on the same instant as ``clock()`` (live: time.time_ns)
        self.wall_clock: Callable[[], int] = time.time_ns

    @classmethod
    def check_arity(
        cls, n_in: int, n_out: int, in_types: list[str], out_types: list[str]
    ) -> str | None:
        lo_i, hi_i, lo_o, hi_o = cls.arity
        if not lo_i <= n_in <= hi_i:
            return f"kind {cls.kind!r} takes {lo_i}..{hi_i} input rings, topology gives {n_in}"
        if not lo_o <= n_out <= hi_o:
            return f"kind {cls.kind!r} takes {lo_o}..{hi_o} output rings, topology gives {n_out}"
        for what, want, got in (
            ("input", cls.input_types, in_types),
            ("output", cls.output_types, out_types),
        ):
            if want is None:
                continue
            for k, t in enumerate(got):
                w = want[min(k, len(want) - 1)]
                if w != "*" and t != w:
                    return f"kind {cls.kind!r} {what} {k} must carry {w.lower()}, topology gives {t.lower()}"
        return None

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Refuse unknown keys and values of the wrong type or range, reading no file
        (called when a topology is loaded: ParamError). Kinds extend it for their keys."""
        unknown = sorted(set(params) - cls.params_keys)
        if unknown:
            accepted = ", ".join(sorted(cls.params_keys)) or "none"
            raise ParamError(
                unknown[0], f"unknown parameter of kind {cls.kind!r} (accepted: {accepted})"
            )

    @classmethod
    def journal_dir(cls, params: Mapping[str, Any], instance: str) -> Path | None:
        """The journal a stage of this kind built with ``params`` appends its input records
        to (None: it writes none). Lets the pipeline find where another stage's records
        are journalled without knowing which kind journals."""
        return None

    @classmethod
    def uses_database(cls, params: Mapping[str, Any]) -> bool:
        """A stage built with ``params`` loads into PostgreSQL (the CLI starts or points at
        a server before it runs)."""
        return False

    @classmethod
    def create_shared_segments(cls, params: Mapping[str, Any], instance: str) -> list[str]:
        """Create the instance-wide segments this kind needs beyond its rings (the launcher
        calls it for the first stage whose kind makes any); returns their names, all or
        nothing."""
        return []

    @classmethod
    def publishes_risk_panel(cls, params: Mapping[str, Any]) -> bool:
        """A stage built with ``params`` publishes the metrics segment's risk panel (PnL,
        positions, limit use: ``bot4.shm.metrics``); the launcher names the first such
        stage in the segment."""
        return False

    @classmethod
    def check_in_topology(cls, params: Mapping[str, Any], topology: Any) -> str | None:
        """What ``params`` say about other stages (an index, a name), checked against the
        loaded ``topology`` after every stage and ring is known: the problem in one line,
        or None. Called at topology load, like :meth:`check_params`."""
        return None

    @classmethod
    def validate(cls, params: Mapping[str, Any]) -> None:
        """Check what ``params`` point at (data files, parameter files) before any segment
        exists: ``bot4 run``, ``bot4 record``, ``bot4 stage`` and ``bot4 shm create`` call
        it once per stage, so a missing file is one line at start, not a crash per restart.
        ParamError on a problem; :meth:`check_params` has already passed."""

    @classmethod
    def replay_params(
        cls, params: dict[str, Any], journal_dir: str, deterministic: bool
    ) -> dict[str, Any]:
        """The params a stage built with ``params`` runs with in a backtest whose journal is
        ``journal_dir`` (``deterministic``: the one-process replay on a simulated clock;
        else the full multi-process one). Default: unchanged."""
        return params

    @classmethod
    def routes_models(cls, params: Mapping[str, Any]) -> bool:
        """A stage built with ``params`` decides with a model registry slot
        (``model_slot``): a replay runs it on its own copy of the registry."""
        return False

    @classmethod
    def warm_params(cls, params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The params of a stage built with ``params`` that choose which kernels it calls,
        as ``(key, value)`` pairs for its warm job; the others stay at their defaults (a
        warm job must not read files or attach segments a param names)."""
        return ()

    @classmethod
    def warm_parts(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The warm jobs a stage built with ``params`` needs besides its own, by the name
        ``bot4.warm`` gives them (``"operator log"``, ``"market data readers"``)."""
        return ()

    @classmethod
    def warm_shapes(cls, ring_types) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """The (input, output) record types its warm jobs compile for without a topology
        (``bot4 warm --all``; ``ring_types``: every type a ring carries): one shape, from
        the arity and the declared types."""
        lo_i, hi_i, lo_o, hi_o = cls.arity
        ins = list(cls.input_types or ())[: max(hi_i, 0)] if hi_i else []
        outs = (list(cls.output_types or ()) * max(lo_o, 1))[: max(lo_o, 1)] if hi_o else []
        return [(tuple(ins), tuple(outs))]

    @classmethod
    def warm_alone(cls) -> int:
        """For a kind whose ``setup`` needs what another process creates: run its kernels
        on small inputs without building a stage; how many ran (0: build it as usual)."""
        return 0

    def warm_live(self) -> None:
        """In a warm job, after ``setup`` on process-local rings: give the stage what it
        has live and the job does not, so the job compiles the live kernels."""

    @classmethod
    def out_per_in(cls, params: Mapping[str, Any]) -> int:
        """Output slots one input record may need on each output (``max_out_per_in`` of a
        stage built with ``params``): the room the liveness check requires before it calls
        a stage with pending input stuck rather than blocked."""
        return cls.max_out_per_in

    def setup(self) -> None:
        """Allocate state (numpy arrays) and warm kernels. Called once per process."""

    def hot_tables(self) -> Any:
        """The state the kernels probe at random, to prefault after :meth:`setup`
        (``bot4.stages.prefault``: every page written once, not at the first record that
        reaches it); None (the default) for none. Only tables no other thread of the stage
        touches yet: the runner rewrites their bytes in place."""
        return None

    def process(
        self, i: int, batch: np.ndarray, outs: list[np.ndarray], counts: np.ndarray, seq: int
    ) -> int:
        raise TypeError(f"stage kind {self.kind!r} has inputs but defines no process()")

    def generate(
        self, position: int, n: int, outs: list[np.ndarray], counts: np.ndarray, seq: int
    ) -> tuple[int, int]:
        raise TypeError(f"stage kind {self.kind!r} is a source but defines no generate()")

    def source_done(self, position: int) -> bool:
        """A finite source says it has produced everything (then it stops and exits)."""
        return False

    def source_ready(self, position: int, now_ns: int) -> int:
        """How many positions a rate-limited source may emit now (default: unlimited)."""
        return 1 << 30

    def input_ready(self, i: int, now_ns: int) -> bool:
        """False leaves input ``i``'s records in their ring for now (e.g. new intents while
        a restarted OMS reconciles with the venue)."""
        return True

    def pending(self, now_ns: int) -> int:
        """How many records the stage wants to send on its own, outside any input batch."""
        return 0

    def observe(self, now_ns: int) -> None:
        """Reporting that only reads the stage's state (logs from counters, panels): part
        of ``pending``'s work, and in a compiled group run by its housekeeping thread
        (``bot4.stages.hotkeeper``) while the kernels write that state: read only, and
        tolerate values one batch old. Default: nothing."""

    def emit(self, outs: list[np.ndarray], counts: np.ndarray, seq: int) -> int:
        """Write up to ``len(outs[j])`` pending records to each output (``counts[j]``);
        returns the next sequence number. Called by the loop when ``pending`` > 0."""
        return seq

    def on_drain(self) -> None:
        """Called once when the stage stops, after its inputs are drained (shutdown policy)."""

    def awaiting_replies(self) -> bool:
        """True while the stage, draining, waits for answers to its shutdown records on a
        feedback input (the loop keeps reading them, at most ``loop_drain.DRAIN_REPLY_S``)."""
        return False

    def counter_values(self) -> list[int]:
        """The current values of ``counter_names``, in that order (housekeeping; cheap)."""
        return []

    def summary(self) -> dict:
        """Figures for the end-of-run report."""
        return {}


class DepthSource:
    """Mixin of the market data sources that can publish depth (``md``, ``md_gateway``):
    outputs of type market_data or book_level (at least one market_data), split into
    ``md_outs`` / ``level_outs`` (indices); with a book_level output every output gets
    ``out_per_in(params)`` slots an input (the most one position can write on any of
    them), which the kind defines. List it before :class:`Stage`."""

    DEFAULT_DEPTH = 5  # BOOK_LEVEL positions a side, with a book_level output

    def __init__(self, spec, inputs, outputs, instance="default", topology=None) -> None:
        super().__init__(spec, inputs, outputs, instance, topology)
        self.level_outs = [j for j, r in enumerate(self.outputs) if r.type == "BOOK_LEVEL"]
        self.md_outs = [j for j in range(len(self.outputs)) if j not in self.level_outs]
        if self.level_outs:
            self.max_out_per_in = self.out_per_in(self.params)

    @classmethod
    def check_arity(cls, n_in, n_out, in_types, out_types):
        err = super().check_arity(n_in, n_out, in_types, out_types)
        if err:
            return err
        for k, t in enumerate(out_types):
            if t not in ("MARKET_DATA", "BOOK_LEVEL"):
                return (
                    f"kind {cls.kind!r} output {k} must carry market_data or book_level, "
                    f"topology gives {t.lower()}"
                )
        if "MARKET_DATA" not in out_types:
            return f"kind {cls.kind!r} needs a market_data output"
        return None
