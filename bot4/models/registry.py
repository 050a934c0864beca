"""The model registry: immutable versioned models on disk, assignments per slot, lifecycle
events; optionally mirrored into PostgreSQL (:mod:`bot4.db.models`).

Layout under the registry root (default ``$BOT4_DATA_DIR/models``)::

    objects/<sha256>.b4m     the artifacts, content-addressed, read-only (0444)
    models/<id>.json         one per registered model: id, name, kind, sha256, features,
                             fingerprint, training metadata, its ``registered`` event
    events.jsonl             every lifecycle event, one JSON object a line, append-only
    slots/<slot>.json        the slot's assignment: champion, challenger, mode, pct, split,
                             ramp, generation, and the event that made it
    slots/<slot>.gen         64 bytes; u64 word 0 is the generation (the hint a running
                             signals stage polls at batch boundaries)
    .lock                    writers serialise on an exclusive flock of this file

Atomicity: every change has one commit point, a ``rename`` of a complete file
(``models/<id>.json`` for register, ``slots/<slot>.json`` for every assignment change), and
the file carries the event it commits. The events log and the generation word are brought
up to date after the commit, and again by :meth:`Registry.recover` (run by every command):
a process killed anywhere leaves the old assignment or the new one, never a mix, and
afterwards the log says which. Events carry a unique ``id``; the database mirror inserts
them with ``ON CONFLICT DO NOTHING`` and re-sends the whole log on recovery, so each lands
exactly once.

Single writer per file: only the lock holder writes ``models/``, ``slots/`` and the log;
readers (the signals stage, ``list``/``show``/``status``) never write.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import mmap
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot4.models.artifact import (
    Model,
    ModelError,
    feature_fingerprint,
    map_model,
    sha256_file,
    to_bytes,
    write_atomic,
)

MODES = ("champion", "shadow", "canary", "ab")
SPLITS = ("tick", "instrument")
EVENTS = ("registered", "shadow", "canary", "ab", "ramp", "champion", "retired", "rolled_back")
GEN_BYTES = 64
_SLOT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: test hook: SIGKILL this process at the named point of a commit ("before_commit",
#: "after_commit", "after_event") so crash tests kill it exactly there
KILL_ENV = "BOT4_MODELS_KILL_AT"


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def default_root() -> Path:
    from bot4.paths import data_dir

    return data_dir() / "models"


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


@dataclass(frozen=True)
class Assignment:
    """Which model decides in a slot. ``pct`` is the challenger's share of intents
    (0..100; shadow: 0, it is scored but never trades); ``split`` what the A/B and canary
    hash keys on: ``tick`` (instrument and tick sequence) or ``instrument``."""

    slot: str
    generation: int = 0
    champion: int = 0
    challenger: int = 0
    mode: str = "champion"
    pct: float = 0.0
    split: str = "tick"
    ramp: tuple[float, ...] = ()
    ramp_step: int = 0
    previous_champion: int = 0
    event: dict | None = None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["ramp"] = list(self.ramp)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Assignment:
        d = dict(d)
        d["ramp"] = tuple(d.get("ramp", ()))
        return cls(**d)


class Registry:
    """A registry rooted at ``root``; ``mirror`` (optional) receives every model document
    and event after it is committed locally (the PostgreSQL mirror; None: files only)."""

    def __init__(self, root: str | os.PathLike | None = None, mirror=None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.mirror = mirror
        #: the last mirror failure (the files committed; the next command sends it again)
        self.mirror_error: str | None = None
        #: what stamps an event's ``ts_ns`` and ``who``: the wall clock and the OS user;
        #: a replay's own registry uses its simulated clock and ``bot4-replay``
        self.clock: Callable[[], int] = time.time_ns
        self.actor: str | None = None

    # -- paths -----------------------------------------------------------------------
    def object_path(self, sha: str) -> Path:
        return self.root / "objects" / f"{sha}.b4m"

    def _model_doc_path(self, model_id: int) -> Path:
        return self.root / "models" / f"{model_id}.json"

    def slot_path(self, slot: str) -> Path:
        return self.root / "slots" / f"{_check_slot(slot)}.json"

    def gen_path(self, slot: str) -> Path:
        return self.root / "slots" / f"{_check_slot(slot)}.gen"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        for d in ("objects", "models", "slots"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._recover_locked()
            yield
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------
    def models(self) -> list[dict]:
        d = self.root / "models"
        if not d.is_dir():
            return []
        docs = [json.loads(p.read_text()) for p in d.glob("*.json")]
        return sorted(docs, key=lambda m: m["id"])

    def model(self, model_id: int) -> dict:
        p = self._model_doc_path(int(model_id))
        if not p.is_file():
            raise ModelError(f"model {model_id}: no such model in {self.root}")
        return json.loads(p.read_text())

    def load(self, model_id: int, features=None, *, prefault: bool = True) -> Model:
        """Memory-map model ``model_id``; with ``features``, refuse a different schema."""
        doc = self.model(model_id)
        m = map_model(self.object_path(doc["sha256"]), prefault=prefault)
        if features is not None and m.fingerprint != feature_fingerprint(features):
            raise ModelError(
                f"model {model_id}: expects features {list(m.features)} "
                f"(fingerprint {m.fingerprint}), the signals stage computes {list(features)} "
                f"(fingerprint {feature_fingerprint(features)})"
            )
        return m

    def assignment(self, slot: str = "default") -> Assignment:
        p = self.slot_path(slot)
        if not p.is_file():
            return Assignment(slot)
        return Assignment.from_dict(json.loads(p.read_text()))

    def events(self) -> list[dict]:
        p = self.root / "events.jsonl"
        if not p.is_file():
            return []
        out = []
        for line in p.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a torn last line from a kill
                out.append(json.loads(line))
        return out

    def slots(self) -> list[str]:
        d = self.root / "slots"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    # -- writing ---------------------------------------------------------------------
    def register(
        self,
        model: Model,
        *,
        name: str,
        features,
        training: dict | None = None,
        why: str = "",
        parity: dict | None = None,
    ) -> dict:
        """Store ``model`` (refused unless its schema is ``features``) as the next id."""
        if model.fingerprint != feature_fingerprint(features):
            raise ModelError(
                f"{name}: model features {list(model.features)} are not the signals feature "
                f"vector {list(features)}"
            )
        data = to_bytes(model)
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        with self._locked():
            obj = self.object_path(sha)
            if not obj.is_file() or sha256_file(obj) != sha:
                write_atomic(obj, data, 0o444)
            map_model(obj)  # what the stage will map must validate
            model_id = max((m["id"] for m in self.models()), default=0) + 1
            ev = self._event(model_id, "registered", "", 0, why, {"sha256": sha})
            doc = {
                "id": model_id,
                "name": name,
                "kind": model.kind,
                "sha256": sha,
                "bytes": len(data),
                "n_params": model.n_params,
                "features": list(model.features),
                "fingerprint": model.fingerprint,
                "meta": model.meta,
                "training": training or {},
                "parity": parity or {},
                "registered": ev,
            }
            _kill_point("before_commit")
            write_atomic(self._model_doc_path(model_id), json.dumps(doc, indent=1).encode())
            _kill_point("after_commit")
            self._append_event(ev)
            self._mirror_model(doc)
            self._mirror_event(ev)
        return doc

    def change(
        self, slot: str, fn: Callable[[Assignment], tuple[Assignment, int, str, dict]], why: str
    ) -> Assignment:
        """Apply ``fn(current) -> (new, model_id, event, details)`` to the slot atomically."""
        with self._locked():
            cur = self.assignment(slot)
            new, model_id, event, details = fn(cur)
            gen = cur.generation + 1
            ev = self._event(model_id, event, slot, gen, why, details)
            new = Assignment(**{**new.__dict__, "slot": slot, "generation": gen, "event": ev})
            _kill_point("before_commit")
            write_atomic(self.slot_path(slot), json.dumps(new.to_dict(), indent=1).encode())
            _kill_point("after_commit")
            self._append_event(ev)
            _kill_point("after_event")
            self._store_generation(slot, gen)
            self._mirror_event(ev)
            return new

    def recover(self) -> None:
        """Bring the log, the generation words and the mirror up to date with the committed
        files (after a process was killed mid-change); idempotent."""
        if not self.root.is_dir():
            return
        with self._locked():
            pass

    def _recover_locked(self) -> None:
        have = {e["id"] for e in self.events()}
        committed = [m["registered"] for m in self.models()]
        for slot in self.slots():
            a = self.assignment(slot)
            if a.event:
                committed.append(a.event)
            if self._read_generation(slot) < a.generation:
                self._store_generation(slot, a.generation)
        for ev in sorted(committed, key=lambda e: e["ts_ns"]):
            if ev["id"] not in have:
                self._append_event(ev)
        self._sync(self.models(), self.events())

    # -- internals -------------------------------------------------------------------
    def _event(
        self, model_id: int, event: str, slot: str, gen: int, why: str, details: dict
    ) -> dict:
        assert event in EVENTS, event
        return {
            "id": uuid.uuid4().hex,
            "model": int(model_id),
            "event": event,
            "slot": slot,
            "generation": int(gen),
            "ts_ns": int(self.clock()),
            "who": self.actor or who(),
            "why": why,
            "details": details,
        }

    def _append_event(self, ev: dict) -> None:
        p = self.root / "events.jsonl"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # a torn last line (killed mid-write) is skipped by events(); start on a new line
            if os.fstat(fd).st_size and _last_byte(p) != b"\n":
                os.write(fd, b"\n")
            os.write(fd, (json.dumps(ev, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_generation(self, slot: str) -> int:
        p = self.gen_path(slot)
        if not p.is_file() or p.stat().st_size < GEN_BYTES:
            return 0
        return int(np.fromfile(p, np.uint64, 1)[0])

    def _store_generation(self, slot: str, gen: int) -> None:
        p = self.gen_path(slot)
        if not p.is_file() or p.stat().st_size < GEN_BYTES:
            write_atomic(p, bytes(GEN_BYTES))
        fd = os.open(p, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, GEN_BYTES)
            np.frombuffer(mm, np.uint64, 1)[0] = gen  # one aligned 8-byte store
            mm.close()
        finally:
            os.close(fd)

    def _mirror_model(self, doc: dict) -> None:
        self._sync([doc], [])

    def _mirror_event(self, ev: dict) -> None:
        self._sync([], [ev])

    def _sync(self, models: list[dict], events: list[dict]) -> None:
        """Send to the mirror; a failure is kept in ``mirror_error``, never undoes or
        blocks a committed change (the database follows the files)."""
        if self.mirror is None:
            return
        try:
            self.mirror.sync(models, events)
        except Exception as exc:  # noqa: BLE001 - reported by the caller, retried next time
            self.mirror_error = f"{type(exc).__name__}: {exc}".splitlines()[0]


def _last_byte(p: Path) -> bytes:
    with open(p, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _check_slot(slot: str) -> str:
    if not _SLOT_RE.match(slot or ""):
        raise ModelError(f"slot {slot!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return slot


class GenerationWatch:
    """Read-only view of a slot's generation word (the signals stage's poll: one load)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mm = None
        self._word = None

    def read(self) -> int:
        if self._word is None:
            if not self.path.is_file() or self.path.stat().st_size < GEN_BYTES:
                return 0
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._mm = mmap.mmap(fd, GEN_BYTES, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._word = np.frombuffer(self._mm, np.uint64, 1)
        return int(self._word[0])


# -- lifecycle operations ------------------------------------------------------------------
def _require(reg: Registry, model_id: int, features) -> None:
    reg.load(model_id, features, prefault=False)  # exists, maps, validates, same schema


def set_challenger(
    reg: Registry,
    slot: str,
    model_id: int,
    mode: str,
    *,
    pct: float = 0.0,
    split: str = "tick",
    ramp: tuple[float, ...] = (),
    features=None,
    why: str = "",
) -> Assignment:
    """Put ``model_id`` beside the slot's champion: ``shadow`` (scored, never trades),
    ``canary`` (``pct`` % of intents, ramping through ``ramp``) or ``ab`` (``pct`` %)."""
    if mode not in ("shadow", "canary", "ab"):
        raise ModelError(f"mode {mode!r}: expected shadow, canary or ab")
    if split not in SPLITS:
        raise ModelError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if not 0.0 <= pct <= 100.0 or any(not 0.0 < r <= 100.0 for r in ramp):
        raise ModelError(f"percentages must be in 0..100, got {pct} and ramp {list(ramp)}")
    _require(reg, model_id, features)

    def fn(cur: Assignment):
        if not cur.champion:
            raise ModelError(f"slot {slot}: no champion yet (bot4 models promote ID first)")
        if cur.champion == model_id:
            raise ModelError(f"model {model_id} is the champion of slot {slot}")
        share = 0.0 if mode == "shadow" else (ramp[0] if ramp and mode == "canary" else pct)
        new = Assignment(
            slot, champion=cur.champion, challenger=model_id, mode=mode, pct=share,
            split=split, ramp=tuple(ramp) if mode == "canary" else (), ramp_step=0,
            previous_champion=cur.previous_champion,
        )  # fmt: skip
        return (
            new,
            model_id,
            mode,
            {
                "pct": share,
                "split": split,
                "ramp": list(ramp),
                "replaces_challenger": cur.challenger,
            },
        )

    return reg.change(slot, fn, why)


def promote(reg: Registry, slot: str, model_id: int, *, features=None, why: str = "") -> Assignment:
    """Make ``model_id`` the slot's champion (the old one is retired; no challenger)."""
    _require(reg, model_id, features)

    def fn(cur: Assignment):
        if cur.champion == model_id and not cur.challenger:
            raise ModelError(f"model {model_id} is already the champion of slot {slot}")
        new = Assignment(slot, champion=model_id, previous_champion=cur.champion)
        return (
            new,
            model_id,
            "champion",
            {"previous_champion": cur.champion, "previous_challenger": cur.challenger},
        )

    return reg.change(slot, fn, why)


def rollback(reg: Registry, slot: str, *, why: str = "", details: dict | None = None) -> Assignment:
    """Take the challenger out (to 0 %), or with no challenger restore the previous
    champion."""

    def fn(cur: Assignment):
        if cur.challenger:
            new = Assignment(slot, champion=cur.champion, previous_champion=cur.previous_champion)
            return (
                new,
                cur.challenger,
                "rolled_back",
                {**(details or {}), "mode": cur.mode, "pct": cur.pct},
            )
        if not cur.previous_champion:
            raise ModelError(
                f"slot {slot}: nothing to roll back (no challenger, no previous champion)"
            )
        new = Assignment(slot, champion=cur.previous_champion)
        return (
            new,
            cur.champion,
            "rolled_back",
            {**(details or {}), "restored": cur.previous_champion},
        )

    return reg.change(slot, fn, why)


def advance_ramp(reg: Registry, slot: str, *, why: str = "") -> Assignment:
    """The next canary step (the evaluator calls it at a passed checkpoint); after the last
    step the challenger becomes champion."""

    def fn(cur: Assignment):
        if cur.mode != "canary" or not cur.challenger:
            raise ModelError(f"slot {slot}: no canary running")
        step = cur.ramp_step + 1
        if step >= len(cur.ramp):
            new = Assignment(slot, champion=cur.challenger, previous_champion=cur.champion)
            return (
                new,
                cur.challenger,
                "champion",
                {"ramp_completed": list(cur.ramp), "previous_champion": cur.champion},
            )
        new = Assignment(**{**cur.__dict__, "pct": cur.ramp[step], "ramp_step": step})
        return new, cur.challenger, "ramp", {"pct": cur.ramp[step], "step": step}

    return reg.change(slot, fn, why)
