"""Named POSIX shared-memory segments: create, attach, unlink.

Built on ``posix_ipc`` and ``mmap``, never ``multiprocessing.shared_memory``: the latter's
resource tracker unlinks a segment when any unrelated process that attached it exits.

Names are namespaced per pipeline instance: ``/bot4.<instance>.<name>`` (so two instances on
one host never share a word, and ``bot4 shm ls`` finds an instance's segments by prefix in
``/dev/shm``). Creation reserves the memory with ``posix_fallocate`` so a full ``/dev/shm``
is a clear :class:`ShmFullError` at creation, not a SIGBUS in the middle of a run.

Ownership: the process that creates a segment (launcher or ``bot4 shm create``) owns its
lifetime and unlinks it; attachers only map it. A read-only attach maps it ``PROT_READ``
so an operator tool physically cannot write.

Permissions: a segment is created mode 0640 whatever the umask (owner read-write, group
read: members of the service user's group can run ``bot4 stats``; nobody else can map
it), so only processes running as the pipeline's user (or root) can write its words — see
docs/security.md. A name that already exists and belongs to another user is refused with
:class:`ForeignSegmentError` naming that user: another local user can squat a name (and so
block an instance), never slip a segment of theirs under ours.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
from dataclasses import dataclass

import posix_ipc

from bot4.records.errors import Bot4Error, Code

PREFIX = "bot4."
SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class ShmError(Bot4Error):
    """Base of every shared-memory error; carries the segment name."""

    def __init__(self, code: Code, segment: str, detail: str) -> None:
        super().__init__(f"segment {segment}: {detail}")
        self.code = code
        self.segment = segment


class SegmentMissingError(ShmError):
    def __init__(self, segment: str) -> None:
        super().__init__(
            Code.SEGMENT_MISSING, segment, "does not exist (was `bot4 shm create` run?)"
        )


class SegmentExistsError(ShmError):
    """The name exists and is ours: whether its instance is alive is for the caller to
    judge (``bot4.pipeline.segments`` does, from the control block's owners)."""

    def __init__(self, segment: str) -> None:
        super().__init__(Code.SEGMENT_EXISTS, segment, "already exists")


class ForeignSegmentError(ShmError):
    """The name exists and belongs to another user: never ours to use or to remove."""

    def __init__(self, segment: str, uid: int) -> None:
        super().__init__(
            Code.SEGMENT_EXISTS,
            segment,
            f"already exists and belongs to {user_name(uid)}, not to {user_name(os.geteuid())}"
            " who runs this instance: another user created it (ask root to remove "
            f"{SHM_DIR}{segment}, or pick another --instance)",
        )
        self.uid = uid


def user_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` when the user database has no such uid."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def segment_owner(name: str) -> int | None:
    """Owner uid of POSIX segment ``name`` (``/bot4...``), None if it does not exist."""
    try:
        return os.lstat(SHM_DIR + name).st_uid
    except FileNotFoundError:
        return None


class SegmentAccessError(ShmError):
    """The segment exists but its owner and mode do not let this user map it so (a write
    attach by anyone but the pipeline's user: the permission model, docs/security.md)."""

    def __init__(self, segment: str, readonly: bool) -> None:
        try:
            st = os.lstat(SHM_DIR + segment)
            whose = f"belongs to {user_name(st.st_uid)}, mode {st.st_mode & 0o777:04o}"
        except OSError:
            whose = "is not accessible"
        how = "read" if readonly else "write"
        super().__init__(
            Code.SEGMENT_ACCESS,
            segment,
            f"{whose}: {user_name(os.geteuid())} may not {how} it (run this as the "
            "pipeline's user, e.g. sudo -u bot4 ...)",
        )


class SegmentTooSmallError(ShmError):
    def __init__(self, segment: str, size: int, needed: int) -> None:
        super().__init__(Code.SEGMENT_TOO_SMALL, segment, f"is {size} bytes, layout needs {needed}")


class ShmFullError(ShmError):
    def __init__(self, segment: str, size: int) -> None:
        super().__init__(Code.SHM_FULL, segment, f"cannot reserve {size} bytes: {SHM_DIR} is full")


def attach_checked(
    name: str,
    *,
    readonly: bool,
    min_size: int,
    magic: int,
    version: int,
    what: str,
    size_for,
):
    """Attach a versioned u64-word segment: ``(segment, words)``.

    Word 0 must be ``magic``, word 1 ``version``, and the segment at least
    ``size_for(words)`` bytes; otherwise the segment is unmapped and a :class:`Bot4Error`
    names it and what differs (``what`` says which kind of segment was expected).
    """
    import numpy as np

    seg = Segment.attach(name, readonly=readonly, min_size=min_size)
    words = np.frombuffer(seg.buf, np.uint64)
    problem = None
    if int(words[0]) != magic:
        problem = Bot4Error(f"segment {seg.name}: not a bot4 {what} segment", Code.BAD_MAGIC)
    elif int(words[1]) != version:
        problem = Bot4Error(
            f"segment {seg.name}: {what} layout version {int(words[1])}, this build reads {version}",
            Code.LAYOUT_VERSION_MISMATCH,
        )
    elif seg.size < size_for(words):
        problem = Bot4Error(f"segment {seg.name}: too small", Code.SEGMENT_TOO_SMALL)
    if problem is not None:
        del words
        seg.close()
        raise problem
    return seg, words


def segment_name(instance: str, name: str) -> str:
    """The POSIX name of segment ``name`` of pipeline ``instance`` (validated)."""
    for part, what in ((instance, "instance"), (name, "segment")):
        if not _NAME_RE.match(part):
            raise ValueError(f"{what} name {part!r} must match {_NAME_RE.pattern}")
    return f"/{PREFIX}{instance}.{name}"


def instance_segments(instance: str) -> list[str]:
    """POSIX names of every segment of ``instance`` present in /dev/shm, sorted."""
    prefix = f"{PREFIX}{instance}."
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted("/" + e for e in entries if e.startswith(prefix))


@dataclass
class Segment:
    """A mapped segment. ``buf`` is the mmap; ``size`` its length in bytes."""

    name: str
    buf: mmap.mmap
    size: int
    readonly: bool

    @classmethod
    def create(cls, name: str, size: int) -> Segment:
        """Create ``name`` (must not exist) of ``size`` bytes, mode 0640, zero-filled and
        reserved. :class:`ForeignSegmentError` if the name exists and belongs to another
        user, :class:`SegmentExistsError` if it exists and is ours."""
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o640, size=0)
        except posix_ipc.ExistentialError:
            owner = segment_owner(name)
            if owner is not None and owner != os.geteuid():
                raise ForeignSegmentError(name, owner) from None
            raise SegmentExistsError(name) from None
        try:
            os.fchmod(shm.fd, 0o640)  # not the umask's say: group may read, never write
            try:
                os.posix_fallocate(shm.fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise ShmFullError(name, size) from exc
                raise
            buf = mmap.mmap(shm.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            shm.close_fd()
            posix_ipc.unlink_shared_memory(name)
            raise
        shm.close_fd()
        return cls(name, buf, size, False)

    @classmethod
    def attach(cls, name: str, *, readonly: bool = False, min_size: int = 0) -> Segment:
        """Map an existing segment; ``readonly`` maps it PROT_READ."""
        flags = os.O_RDONLY if readonly else 0
        try:
            shm = posix_ipc.SharedMemory(name, flags, read_only=readonly)
        except posix_ipc.ExistentialError:
            raise SegmentMissingError(name) from None
        except posix_ipc.PermissionsError:
            raise SegmentAccessError(name, readonly) from None
        try:
            size = os.fstat(shm.fd).st_size
            if size < max(min_size, 1):
                raise SegmentTooSmallError(name, size, max(min_size, 1))
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            buf = mmap.mmap(shm.fd, size, mmap.MAP_SHARED, prot)
        finally:
            shm.close_fd()
        if not readonly:
            _populate(buf)
        return cls(name, buf, size, readonly)

    def close(self) -> None:
        """Unmap. Raises BufferError while numpy views of the buffer are alive."""
        if not self.buf.closed:
            self.buf.close()

    @staticmethod
    def unlink(name: str, *, missing_ok: bool = True) -> bool:
        """Remove ``name`` from /dev/shm (mappings stay valid until closed)."""
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            if not missing_ok:
                raise SegmentMissingError(name) from None
            return False
        return True


# MADV_POPULATE_WRITE (Linux 5.14): map every page of a writable mapping now
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _populate(buf: mmap.mmap) -> None:
    """Fault in a writable mapping's page tables at attach (the pages themselves were
    reserved at create): a stage then takes no page fault the first time it touches a
    slot of a ring, which put a few microseconds on records of the first lap of every
    ring, in every process. Best effort: an older kernel or a refusal leaves it lazy."""
    with contextlib.suppress(OSError, ValueError, OverflowError):
        buf.madvise(_POPULATE_WRITE)


def create_initialised(name: str, size: int, init) -> str:
    """Create segment ``name`` of ``size`` bytes and lay it out with ``init(words)`` (its
    bytes as u64, a view closed before return); a failing ``init`` unlinks the segment
    again, so a half-initialised segment is never left for an attacher. Returns ``name``;
    the errors of :meth:`Segment.create`, and whatever ``init`` raises."""
    import numpy as np  # the numpy-free importers of this module never call it

    seg = Segment.create(name, size)
    try:
        words = np.frombuffer(seg.buf, np.uint64)
        init(words)
        del words
    except BaseException:
        seg.close()
        Segment.unlink(name)
        raise
    seg.close()
    return name
