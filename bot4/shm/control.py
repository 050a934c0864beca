"""Layout of the control block: one segment per pipeline instance, ``/bot4.<instance>.control``.

Stages use it through this module alone (they never import the runtime). All words are
little-endian u64; every field has exactly one writing process.

::

    byte              owner        field
    0                 creator      magic "BOT4CTRL", layout version, stage count,
                                   max inputs, max outputs, created ns,
                                   session (``bot4.paths``), creator pid,
                                   creator start                            (words 0..8)
    128               supervisor   pipeline state (PIPE_*), supervisor pid,
                                   pipeline stuck since ns, supervisor start   (words 16..19)
    1024 + 1024*i     stage i block:
      +0              supervisor   pid, core, restarts, started ns             (words 0..3)
      +32             supervisor   liveness (LIVE_*), stuck since ns, records in
                                   the liveness ring, its name (48 bytes)      (words 4..13)
                      supervisor   pid start                                   (word 15)
      +128            stage        state (STAGE_*), heartbeat ns, last error code,
                                   batches, records in, records out, pid seen,
                                   alarms, last alarm code                     (words 16..24)
                      stage        pid seen start                              (word 31)
      +256            stage        cursor buffer A (see below)
      +512            stage        cursor buffer B
      +672            stage        named counters: how many (word 84), their names
                                   (16 bytes ASCII each, words 86..109), values
                                   (u64, words 110..121)

Alarms (``S_ALARMS``, ``S_ALARM_CODE``): integrity errors a stage detected that trading
goes on through but an operator must look at — an execution id carrying two different
executions (OMS, loader), journal and database disagreeing (the persistence stage's
reconciliation). ``S_ALARMS`` counts them for the session (a restarted stage continues the
count), ``S_ALARM_CODE`` holds the ``errors.Code`` of the latest; written by the stage's
process only (:func:`raise_alarm`), shown by ``bot4 stats``.

Owners (``W_CREATOR_*``, ``W_SUPERVISOR_*``, ``S_PID*``): every process that writes an
instance's segments is recorded as a pid *and* its start (``/proc/<pid>/stat`` field 22,
:mod:`bot4.shm.owners`), each pair by the process that knows it first-hand: the creator
its own, the supervisor its own and each stage process it started, a stage its own (under
systemd, with no supervisor, that is the only record). :func:`owners` lists them; an
instance none of whose owners is alive is dead, and its segments are replaced by the next
creation (``bot4.pipeline.segments``). A pid alone never decides: pids are reused.

Named counters (``S_COUNTERS_N``, ``S_COUNTER_NAMES``, ``S_COUNTER_VALUES``): a stage's own
figures beyond records and batches (a gateway's gaps, re-requests, reconnects, ...), at most
``MAX_COUNTERS``. The stage's process writes the names once at start, then the count (so a
reader that sees ``n`` sees ``n`` names), and the values at every housekeeping; each value
is one aligned word (never torn), the set is not one atomic snapshot. Values count from the
stage process's start (a restarted stage starts again from 0). Words 82..127 were unused
in layout 2: a block without counters reads ``n = 0``, so the layout version is unchanged.

A cursor buffer is how a restarted stage neither skips an input nor emits a duplicate. It
holds ``gen`` (written last), ``next_seq`` (the stage's next output sequence number),
``valid_at[j]`` (output ring j's producer position once this batch's outputs are
committed) and ``cursor[i]`` (the input ring i position up to which inputs are fully
reflected in the outputs). A stage writes the *other* buffer before committing a batch's
outputs, then commits, then releases its input. On restart, for each output j the
effective buffer is the highest-``gen`` one whose ``valid_at[j]`` the ring's producer
position has reached: inputs below its ``cursor`` were already emitted on j and are
re-read with j muted, never emitted again; inputs at or beyond it are processed normally.
"""

from __future__ import annotations

import os

import numpy as np

from bot4.shm.owners import Owner, self_start
from bot4.shm.segment import Segment, segment_name

MAGIC = int.from_bytes(b"BOT4CTRL", "little")
LAYOUT_VERSION = 2  # 2: owner start times (creator, supervisor, stage pids)
HEADER_BYTES = 1024
STAGE_BYTES = 1024
STAGE_WORDS = STAGE_BYTES // 8
MAX_INPUTS = 8
MAX_OUTPUTS = 8

W_MAGIC, W_VERSION, W_NSTAGES, W_MAX_IN, W_MAX_OUT, W_CREATED_NS, W_SESSION = range(7)
W_CREATOR_PID = 7  # creator: the process that created the segments (bot4 run, bot4 shm create)
W_CREATOR_START = 8  # creator: its start, clock ticks after boot (bot4.shm.owners)
W_PIPE_STATE = 16
W_SUPERVISOR_PID = 17
W_PIPE_STUCK_SINCE_NS = 18  # no ring moved since (monotonic ns) while some hold records; 0 = moving
W_SUPERVISOR_START = 19  # supervisor: its own start, clock ticks after boot

# offsets inside a stage block, in words
S_PID, S_CORE, S_RESTARTS, S_STARTED_NS = 0, 1, 2, 3  # supervisor-owned
# liveness judged by the supervisor from ring cursors (bot4.pipeline.liveness); 0 = unknown
S_LIVENESS = 4  # LIVE_*
S_STUCK_SINCE_NS = 5  # monotonic ns since the stage is LIVE_STUCK on S_LIVE_RING (else 0)
S_LIVE_RECORDS = 6  # records in that ring when observed
S_LIVE_RING = 8  # .. 13: the ring's name, ASCII, NUL-padded (stuck on / blocked by / reading)
LIVE_RING_WORDS = 6
S_PID_START = 15  # supervisor: start of the process S_PID names, clock ticks after boot
S_STATE = 16  # stage-owned from here
S_HEARTBEAT_NS = 17
S_LAST_ERROR = 18
S_BATCHES = 19
S_RECORDS_IN = 20
S_RECORDS_OUT = 21
S_PID_SEEN = 22
S_ALARMS = 23  # integrity alarms raised by the stage this session (only grows)
S_ALARM_CODE = 24  # errors.Code of the latest alarm (0: none)
S_PID_SEEN_START = 31  # stage: its own start (with S_PID_SEEN), clock ticks after boot
S_CURSOR_A = 32
S_COUNTERS_N = 84  # stage: named counters in use (written after their names)
S_COUNTER_NAMES = 86  # stage: .. + 2 * MAX_COUNTERS, 16 bytes ASCII each, NUL-padded
S_COUNTER_VALUES = 110  # stage: .. + MAX_COUNTERS, u64
MAX_COUNTERS = 12
COUNTER_NAME_BYTES = 16
S_CURSOR_B = 64
# inside a cursor buffer
C_GEN = 0
C_NEXT_SEQ = 1
C_VALID_AT = 2  # .. 2 + MAX_OUTPUTS
C_CURSOR = 2 + MAX_OUTPUTS  # .. + MAX_INPUTS
CURSOR_WORDS = C_CURSOR + MAX_INPUTS

PIPE_STARTING, PIPE_RUNNING, PIPE_DRAINING, PIPE_STOPPED = 1, 2, 3, 4
PIPE_NAMES = {0: "none", 1: "starting", 2: "running", 3: "draining", 4: "stopped"}

STAGE_NONE, STAGE_STARTING, STAGE_RUNNING, STAGE_DRAINING, STAGE_STOPPED, STAGE_FAILED = range(6)
STAGE_NAMES = {0: "none", 1: "starting", 2: "running", 3: "draining", 4: "stopped", 5: "failed"}

#: idle: inputs empty; moving: positions advanced since the last look; blocked: a blocking
#: output it needs is full (backpressure, never a stall); stuck: an input has records, every
#: output has room, and the input's position has not moved (killed after ``stall_timeout``)
LIVE_UNKNOWN, LIVE_IDLE, LIVE_MOVING, LIVE_BLOCKED, LIVE_STUCK = range(5)
LIVE_NAMES = {0: "-", 1: "idle", 2: "moving", 3: "blocked", 4: "stuck"}

CONTROL_SEGMENT = "control"


def raise_alarm(block: np.ndarray, code: int, n: int = 1) -> int:
    """Count ``n`` alarms of ``errors.Code`` ``code`` in a stage's ``block`` (its own: the
    caller must be that stage's process, the words' only writer). Returns the new count."""
    block[S_ALARM_CODE] = int(code)
    block[S_ALARMS] = int(block[S_ALARMS]) + int(n)
    return int(block[S_ALARMS])


def write_live_ring(block: np.ndarray, name: str) -> None:
    """Store ``name`` (at most 48 ASCII bytes) in a stage block's liveness ring words
    (supervisor only: the words' one writer)."""
    raw = name.encode("ascii", "replace")[: LIVE_RING_WORDS * 8].ljust(LIVE_RING_WORDS * 8, b"\0")
    block[S_LIVE_RING : S_LIVE_RING + LIVE_RING_WORDS] = np.frombuffer(raw, np.uint64)


def read_live_ring(block: np.ndarray) -> str:
    """The ring name stored by :func:`write_live_ring` ("" when none)."""
    raw = block[S_LIVE_RING : S_LIVE_RING + LIVE_RING_WORDS].tobytes()
    return raw.rstrip(b"\0").decode("ascii", "replace")


def write_counter_names(block: np.ndarray, names) -> None:
    """Declare a stage's named counters in its own ``block`` (its process only; at most
    ``MAX_COUNTERS`` names of at most 16 ASCII bytes)."""
    names = list(names)
    if len(names) > MAX_COUNTERS:
        raise ValueError(f"{len(names)} named counters, at most {MAX_COUNTERS}")
    block[S_COUNTERS_N] = 0
    for i, name in enumerate(names):
        raw = name.encode("ascii")
        if len(raw) > COUNTER_NAME_BYTES:
            raise ValueError(f"counter name {name!r} longer than {COUNTER_NAME_BYTES} bytes")
        off = S_COUNTER_NAMES + 2 * i
        block[off : off + 2] = np.frombuffer(raw.ljust(COUNTER_NAME_BYTES, b"\0"), np.uint64)
        block[S_COUNTER_VALUES + i] = 0
    block[S_COUNTERS_N] = len(names)


def write_counter_values(block: np.ndarray, values) -> None:
    """Store the values of the counters :func:`write_counter_names` declared, in order."""
    n = len(values)
    block[S_COUNTER_VALUES : S_COUNTER_VALUES + n] = np.asarray(values, np.int64).view(np.uint64)


def read_counters(block: np.ndarray) -> dict[str, int]:
    """A stage block's named counters (``{}`` when it declares none); read-only."""
    n = min(int(block[S_COUNTERS_N]), MAX_COUNTERS)
    raw = block[S_COUNTER_NAMES : S_COUNTER_NAMES + 2 * n].tobytes()
    vals = block[S_COUNTER_VALUES : S_COUNTER_VALUES + n].view(np.int64)
    return {
        raw[16 * i : 16 * i + 16].rstrip(b"\0").decode("ascii", "replace"): int(vals[i])
        for i in range(n)
    }


def owners(words: np.ndarray, stage_names: list[str] | None = None) -> list[Owner]:
    """Every process recorded in a control block (``words``: the whole segment as u64):
    creator, supervisor, and per stage the pid its supervisor started and the pid the
    stage saw itself as; pid 0 entries are left out. Plain loads: the caller judges
    liveness (:attr:`Owner.alive`), which a racing write can only make more conservative."""
    out = [  # a supervisor that created its segments is listed once, as the supervisor
        Owner("supervisor", int(words[W_SUPERVISOR_PID]), int(words[W_SUPERVISOR_START])),
        Owner("creator", int(words[W_CREATOR_PID]), int(words[W_CREATOR_START])),
    ]
    n = int(words[W_NSTAGES])
    for i in range(min(n, (words.size * 8 - HEADER_BYTES) // STAGE_BYTES)):
        b = words[(HEADER_BYTES + i * STAGE_BYTES) // 8 :][:STAGE_WORDS]
        name = stage_names[i] if stage_names and i < len(stage_names) else f"#{i}"
        out.append(Owner(f"stage {name}", int(b[S_PID]), int(b[S_PID_START])))
        out.append(Owner(f"stage {name}", int(b[S_PID_SEEN]), int(b[S_PID_SEEN_START])))
    seen: set[tuple[int, int]] = set()
    uniq = []
    for o in out:
        if o.pid and (o.pid, o.start) not in seen:
            seen.add((o.pid, o.start))
            uniq.append(o)
    return uniq


def control_bytes(n_stages: int) -> int:
    return HEADER_BYTES + n_stages * STAGE_BYTES


def create_control(instance: str, n_stages: int, created_ns: int, session: int = 0) -> None:
    """Create and initialise the control block of ``instance`` (the launcher does this once,
    per session: ``session`` numbers the stages' sequences, see ``bot4.paths``)."""
    seg = Segment.create(segment_name(instance, CONTROL_SEGMENT), control_bytes(n_stages))
    w = np.frombuffer(seg.buf, np.uint64)
    w[W_VERSION] = LAYOUT_VERSION
    w[W_NSTAGES] = n_stages
    w[W_MAX_IN] = MAX_INPUTS
    w[W_MAX_OUT] = MAX_OUTPUTS
    w[W_CREATED_NS] = created_ns
    w[W_SESSION] = session
    w[W_CREATOR_PID] = os.getpid()
    w[W_CREATOR_START] = self_start()
    w[W_PIPE_STATE] = PIPE_STARTING
    w[W_MAGIC] = MAGIC
    del w
    seg.close()


class ControlBlock:
    """An attachment to the control block. ``words`` is the whole segment as u64.

    ``stage(i)`` gives stage i's block as a u64 view (writable unless ``readonly``).
    """

    def __init__(self, instance: str, *, readonly: bool = False) -> None:
        self.segment = Segment.attach(
            segment_name(instance, CONTROL_SEGMENT), readonly=readonly, min_size=HEADER_BYTES
        )
        self.words = np.frombuffer(self.segment.buf, np.uint64)
        name = self.segment.name
        if int(self.words[W_MAGIC]) != MAGIC:
            self.close()
            raise ValueError(f"segment {name}: not a bot4 control block (bad magic)")
        if int(self.words[W_VERSION]) != LAYOUT_VERSION:
            v = int(self.words[W_VERSION])
            self.close()
            raise ValueError(
                f"segment {name}: control layout version {v}, this build reads {LAYOUT_VERSION}"
            )
        self.n_stages = int(self.words[W_NSTAGES])
        if self.segment.size < control_bytes(self.n_stages):
            n = self.n_stages
            self.close()
            raise ValueError(f"segment {name}: too small for {n} stages")

    def stage(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_stages:
            raise IndexError(f"stage index {i} outside 0..{self.n_stages - 1}")
        off = (HEADER_BYTES + i * STAGE_BYTES) // 8
        return self.words[off : off + STAGE_WORDS]

    @property
    def pipeline_state(self) -> int:
        return int(self.words[W_PIPE_STATE])

    def close(self) -> None:
        self.words = None  # type: ignore[assignment]
        self.segment.close()
