"""The operator log: OPERATOR_ACTION records on their way to persistence,
``/bot4.<instance>.operator``.

Operator tools (``bot4 breaker``, ``bot4 halt|reduce|resume``) are short-lived processes
that may run at the same moment, so this is a multi-producer append-only log with one
reader (persistence), not an SPSC ring.

Layout (little-endian u64 words)::

    byte          word       owner          field
    0             0..3       creator        magic "BOT4OPLG", layout version,
                                            capacity (records, power of two), created ns
    128           16         writers (CAS)  claimed: records claimed so far (monotonic)
    256           32         reader         read: records the reader has consumed
    384 + 128*i   48 + 16*i  claimer        slot i: one OPERATOR_ACTION record (128 bytes)

A writer claims record number k by CAS-incrementing ``claimed`` (refused if
``k - read >= capacity``: the log is full because persistence is not reading), writes the
record into slot ``k & (capacity - 1)`` with ``seq`` 0, then stores ``seq = k + 1`` with
release: a record is complete exactly when its seq equals its number + 1, so the reader
never sees half a record. The reader takes records in order; a slot still incomplete
``stale_ns`` after the reader first met it belongs to a writer that died between claim and
publish, and is skipped (counted). Claimed is multi-writer (CAS only); everything else
has one writer.

Identity (``who``): the kernel's, never the environment's. :func:`operator_identity` is
the name of the process's real uid (``os.getuid()`` -> ``pwd``; ``uid N`` without a
name), followed by ``/login`` when the kernel's audit login uid (``/proc/self/loginuid``,
set at login and kept across ``sudo``/``su``, unchangeable without CAP_AUDIT_CONTROL)
names another user: ``bot4/alice`` is alice acting as the service user through sudo.
``$USER``/``$LOGNAME``/``$SUDO_USER`` are never read: anyone can set them.

Order: an operator tool appends its record (published: the release store of its seq)
*before* it applies the change it records (``bot4.cli``), so no change is ever applied
without a record already in the log; the record carries the state read just before.
Readers: persistence (:meth:`OperatorLog.read`, the one that moves ``read``) and
``bot4 stats`` (:meth:`OperatorLog.last`, a read-only attach).
"""

from __future__ import annotations

import os
import time

import numpy as np
from numba import njit

from bot4.records import OPERATOR_ACTION
from bot4.records.errors import Bot4Error, Code
from bot4.shm.atomics import compare_exchange, load_acquire, store_release
from bot4.shm.segment import Segment, segment_name

MAGIC = int.from_bytes(b"BOT4OPLG", "little")
LAYOUT_VERSION = 1
OPERATOR_SEGMENT = "operator"
W_MAGIC, W_VERSION, W_CAPACITY, W_CREATED_NS = range(4)
W_CLAIMED = 16
W_READ = 32
HEADER_BYTES = 384
RECORD_WORDS = OPERATOR_ACTION.itemsize // 8


def operator_identity(uid: int | None = None, loginuid: int | None = None) -> str:
    """``who`` of an operator record, from the kernel: the real uid's user name, plus
    ``/<login user>`` when the audit login uid differs (see the module doc). ASCII, at most
    32 bytes. ``uid`` and ``loginuid`` default to this process's."""
    import pwd

    def name(u: int) -> str:
        try:
            return pwd.getpwuid(u).pw_name
        except KeyError:
            return f"uid {u}"

    uid = os.getuid() if uid is None else uid
    if loginuid is None:
        try:
            with open("/proc/self/loginuid") as f:
                loginuid = int(f.read().strip() or -1)
        except (OSError, ValueError):
            loginuid = -1
    who = name(uid)
    if 0 <= loginuid < 0xFFFFFFFF and loginuid != uid:
        who += "/" + name(loginuid)
    return who.encode("ascii", "replace")[:32].decode("ascii")


def operator_log_bytes(capacity: int) -> int:
    return HEADER_BYTES + capacity * OPERATOR_ACTION.itemsize


def create_operator_log(instance: str, capacity: int = 1024) -> str:
    """Create the operator log of ``instance`` (the launcher, once)."""
    if capacity < 1 or capacity & (capacity - 1):
        raise ValueError("capacity must be a power of two")
    name = segment_name(instance, OPERATOR_SEGMENT)
    seg = Segment.create(name, operator_log_bytes(capacity))
    w = np.frombuffer(seg.buf, np.uint64)
    w[W_VERSION] = LAYOUT_VERSION
    w[W_CAPACITY] = capacity
    w[W_CREATED_NS] = time.monotonic_ns()
    w[W_MAGIC] = MAGIC
    del w
    seg.close()
    return name


@njit(nogil=True, cache=True)
def _claim(words, capacity):
    """Number of the claimed record, or -1 if the log is full."""
    while True:
        k = np.int64(load_acquire(words, W_CLAIMED))
        if k - np.int64(load_acquire(words, W_READ)) >= capacity:
            return -1
        if compare_exchange(words, W_CLAIMED, k, k + 1):
            return k


@njit(nogil=True, cache=True)
def _load(words, k):
    return np.int64(load_acquire(words, k))


@njit(nogil=True, cache=True)
def _store(words, k, value):
    store_release(words, k, value)


@njit(nogil=True, cache=True)
def _publish(words, k, capacity):
    slot = HEADER_BYTES // 8 + (k & (capacity - 1)) * RECORD_WORDS
    store_release(words, slot, k + 1)


@njit(nogil=True, cache=True)
def _complete(words, k, capacity):
    slot = HEADER_BYTES // 8 + (k & (capacity - 1)) * RECORD_WORDS
    return np.int64(load_acquire(words, slot)) == k + 1


class OperatorLog:
    """An attachment to the operator log of ``instance`` (``readonly``: mapped PROT_READ,
    for :meth:`last` only)."""

    def __init__(self, instance: str, *, readonly: bool = False) -> None:
        self.segment = Segment.attach(
            segment_name(instance, OPERATOR_SEGMENT), readonly=readonly, min_size=HEADER_BYTES
        )
        self.words = np.frombuffer(self.segment.buf, np.uint64)
        if int(self.words[W_MAGIC]) != MAGIC or int(self.words[W_VERSION]) != LAYOUT_VERSION:
            self.close()
            raise Bot4Error(
                f"segment {segment_name(instance, OPERATOR_SEGMENT)}: not a bot4 operator log "
                f"of layout version {LAYOUT_VERSION}",
                Code.LAYOUT_VERSION_MISMATCH,
            )
        self.capacity = int(self.words[W_CAPACITY])
        self.records = np.frombuffer(
            self.segment.buf, OPERATOR_ACTION, self.capacity, offset=HEADER_BYTES
        )
        self._waiting_since: int | None = None
        self._pending: int | None = None  # read position not yet released
        self.skipped = 0

    def append(
        self,
        action: int,
        target_kind: int,
        target: int,
        old_state: int,
        new_state: int,
        reason: int = 0,
        note: str = "",
    ) -> int:
        """Write and publish one OPERATOR_ACTION (``who``: :func:`operator_identity`);
        returns its seq. Bot4Error if the log is full. Once this returns, the record is
        complete in the log: persistence journals it even if this process dies next."""
        k = int(_claim(self.words, self.capacity))
        if k < 0:
            raise Bot4Error(
                "operator log full: persistence is not reading it", Code.RING_FULL_REJECTED
            )
        r = np.zeros((), OPERATOR_ACTION)
        r["ts_ns"] = time.monotonic_ns()
        r["who"] = operator_identity().encode("ascii")
        r["action"], r["target_kind"], r["target"] = action, target_kind, target
        r["old_state"], r["new_state"], r["reason"] = old_state, new_state, reason
        r["note"] = note.encode("ascii", "replace")[:40]
        self.records[k & (self.capacity - 1)] = r  # seq 0: not yet complete
        _publish(self.words, k, self.capacity)
        return k + 1

    def last(self) -> np.ndarray | None:
        """A copy of the newest complete record still in the log (None if there is none):
        for ``bot4 stats``. Plain loads on a possibly live log: a record being overwritten
        meanwhile is detected by its seq and skipped for the one before."""
        claimed = int(_load(self.words, W_CLAIMED))
        for k in range(claimed - 1, max(-1, claimed - 1 - self.capacity), -1):
            if _complete(self.words, k, self.capacity):
                r = self.records[k & (self.capacity - 1)].copy()
                if int(r["seq"]) == k + 1:
                    return r
        return None

    def read(self, out: np.ndarray, stale_ns: int = 5_000_000_000) -> int:
        """Reader (persistence): copy complete records in order into ``out``; returns how many.

        The read position does not move until :meth:`release`: a reader that dies after
        ``read`` and before ``release`` reads the same records again (at-least-once; the
        database absorbs the repeat by the record's identity). Call ``release`` once the
        records are durable (journalled).
        """
        n = 0
        pos = self._pending if self._pending is not None else int(self.words[W_READ])
        claimed = int(_load(self.words, W_CLAIMED))
        while pos < claimed and n < len(out):
            if not _complete(self.words, pos, self.capacity):
                now = time.monotonic_ns()
                if self._waiting_since is None:
                    self._waiting_since = now
                if now - self._waiting_since < stale_ns:
                    break
                self.skipped += 1  # its writer died between claim and publish
            else:
                out[n] = self.records[pos & (self.capacity - 1)]
                n += 1
            self._waiting_since = None
            pos += 1
        self._pending = pos
        return n

    def release(self) -> None:
        """Reader: publish the position reached by the reads so far (records now durable)."""
        if self._pending is not None:
            _store(self.words, W_READ, self._pending)
            self._pending = None

    def close(self) -> None:
        self.records = None  # type: ignore[assignment]
        self.words = None  # type: ignore[assignment]
        self.segment.close()

    def __enter__(self) -> OperatorLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
