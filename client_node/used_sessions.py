"""The secure-aggregation session ids a node has begun, kept across restarts in its state dir.

A node never begins a session id twice: a fresh client of an old id would sign (session, step 0)
a second time with the same identity key, an honest node endorsing two survivor lists of one
step (secagg/README.md). Remembering the ids in memory alone forgets them when the process
restarts, so with `--state-dir` they are also kept in `STATE_DIR/<node id>.sessions`, and each
new id is on disk (appended and fsynced) before the node answers the SecAggBegin that starts it.
Every id is kept, none is ever forgotten: a bound would let a coordinator that cycles a node
through more sessions than it push an old id out and have the node begin it again. The cost is
`RECORD` (24) bytes of file, and a set entry of memory, per session: a node that begins 1,000
sessions a day grows its file by about 9 MB a year.

The file, append-only: a 16-byte header (`MAGIC`, format and version), then one 24-byte record
per id, oldest first: the 16-byte id and the first 8 bytes of SHA-256(index, id), the index
being the record's position (0, 1, ...) as 8 bytes big-endian. The index is in the checksum so
that a record copied, moved or cut out of the middle fails it (the ids after a gap all sit at the
wrong index), which a checksum of the id alone would pass; it depends on nothing but the record's
place, so each record is written once and never rewritten. 8 bytes make a corrupt record that
passes by chance a 2^-64 event; the checksum guards against accidents, not against one who can
write the state dir (who could forge any record, or delete the file).

Reading it back: a file that is not exactly that (another header, shorter than one, a complete
record that fails its checksum, an id twice) is never taken for an empty or shorter list: the
node refuses to start (`UsedSessionsError`), since it can no longer tell which ids it has begun.
The one exception is a torn *last* record, fewer than 24 bytes after the last whole one: a crash
in the middle of an append, before `record` returned and so before the node answered that
session's SecAggBegin, which it therefore never began; it is cut off (fsynced) with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from client_node.node_options import NodeOptions
from codream.atomic_files import atomic_write
from secagg.messages import SESSION_ID_BYTES

log = logging.getLogger(__name__)

SUFFIX = ".sessions"  # STATE_DIR/<node id>.sessions, beside the round-start snapshot
MAGIC = b"codream.sessid/2"  # the file's header: its format and version (16 bytes)
_CHECK = 8  # bytes of SHA-256(index, id) after each id
_INDEX = 8  # bytes of the big-endian record index the checksum covers
RECORD = SESSION_ID_BYTES + _CHECK  # one id on disk: 24 bytes


class UsedSessionsError(Exception):
    """The node's file of begun session ids cannot be read back: the node must not start."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} {reason}: the node cannot tell which secure-aggregation sessions it has "
            "begun, so it does not start; restore the file, or delete it only if you know that no "
            "secure session of this coordinator is in flight (else the node could begin one of "
            "them again)")
        self.path, self.reason = path, reason


# -- pure: the file format --------------------------------------------------------------------
def _checked(session_id: bytes) -> bytes:
    if len(session_id) != SESSION_ID_BYTES:
        raise ValueError(f"a secure session id is {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    return session_id


def checksum(index: int, session_id: bytes) -> bytes:
    """The 8 bytes that follow `session_id` as the file's record number `index` (from 0)."""
    return hashlib.sha256(index.to_bytes(_INDEX, "big") + session_id).digest()[:_CHECK]


def encode_record(index: int, session_id: bytes) -> bytes:
    """Record number `index` of the file: the id and its checksum (`RECORD` bytes); ValueError
    for an id the file could not hold (not 16 bytes)."""
    return _checked(session_id) + checksum(index, session_id)


def encode_ids(ids: Iterable[bytes]) -> bytes:
    """The whole file's bytes for `ids`, oldest first: the header, then a record each."""
    return MAGIC + b"".join(encode_record(index, sid) for index, sid in enumerate(ids))


def decode_ids(data: bytes) -> tuple[tuple[bytes, ...], int]:
    """The ids `encode_ids` (or appended records) wrote, oldest first, and the length of a torn
    last record after them (0 when the file ends on a whole record); ValueError saying what is
    wrong with `data` (shorter than the header, another format, a record that fails its
    checksum, an id twice): a guess here could forget a begun id."""
    if len(data) < len(MAGIC):
        raise ValueError(f"is shorter than its {len(MAGIC)}-byte header ({len(data)} bytes)")
    if not data.startswith(MAGIC):
        raise ValueError(f"is not a session-id file of this version (no {MAGIC.decode()} header)")
    whole, torn = divmod(len(data) - len(MAGIC), RECORD)
    ids: dict[bytes, None] = {}
    for index in range(whole):
        start = len(MAGIC) + index * RECORD
        session_id = data[start:start + SESSION_ID_BYTES]
        check = data[start + SESSION_ID_BYTES:start + RECORD]
        if check != checksum(index, session_id):
            raise ValueError(f"fails its checksum at record {index} of {whole} (corrupt)")
        if session_id in ids:
            raise ValueError(f"holds session id {session_id.hex()} twice (record {index}: corrupt)")
        ids[session_id] = None
    return tuple(ids), torn


# -- the node's record ------------------------------------------------------------------------
class UsedSessions:
    """The ids of the secure sessions a node began, all of them; with `path`, `record` appends
    each new one to the file and fsyncs it before it returns, so a restarted node still refuses it."""

    def __init__(self, ids: Iterable[bytes] = (), *, path: Path | None = None,
                 file_size: int | None = None, in_memory_warning: str | None = None) -> None:
        """`ids`, with `path`: those the file holds, `file_size` its length as read
        (`load_used_sessions`); no ids and None for a file not created yet. `in_memory_warning`:
        logged once, at the first id recorded without a path (a node that never runs a secure
        session, or stops at a start-up error, is not told)."""
        self.path = path
        self._in_memory_warning = in_memory_warning
        self._ids = dict.fromkeys(_checked(sid) for sid in ids)  # insertion order: oldest first
        whole = None if file_size is None and not self._ids else len(MAGIC) + RECORD * len(self._ids)
        if path is not None and file_size != whole:
            raise ValueError(f"{file_size} bytes cannot be a file of {len(self._ids)} session ids")
        self._size = file_size  # what this object last read or wrote; None: no file yet

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[bytes, ...]:
        """Oldest first."""
        return tuple(self._ids)

    def record(self, session_id: bytes) -> None:
        """Remembers `session_id` (nothing to do for one already remembered), on disk first when
        there is a path: appended and fsynced before this returns. OSError when it cannot be
        written, and then it is not remembered either: the caller must not begin the session,
        since a restart would forget it. A failed append may leave part of a record behind:
        the next one cuts the file back to its last whole record first."""
        _checked(session_id)
        if session_id in self._ids:
            return
        if self.path is not None:
            self._append(session_id)
        elif self._in_memory_warning:
            log.warning("%s", self._in_memory_warning)
            self._in_memory_warning = None
        self._ids[session_id] = None

    def _append(self, session_id: bytes) -> None:
        assert self.path is not None
        if self._size is None:  # the node's first session: the file starts with its header
            if _holds_more_than_a_header(self.path):  # never put an empty list over ids not read
                raise FileExistsError(f"{self.path} appeared after the node loaded its session ids")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda stream: stream.write(MAGIC), private=True, durable=True)
            self._size = len(MAGIC)
        data = encode_record(len(self._ids), session_id)
        with open(self.path, "ab") as stream:  # no new folder entry: the header's rename made it
            size = os.fstat(stream.fileno()).st_size
            if size < self._size:
                raise OSError(f"{self.path} is shorter ({size} bytes) than the {len(self._ids)} "
                              f"session ids this node wrote ({self._size}): changed under it")
            if size > self._size:  # the tail a failed append left: the new record goes after
                stream.truncate(self._size)  # the last whole one, never after garbage
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        self._size += len(data)


def _holds_more_than_a_header(path: Path) -> bool:
    """Whether `path` is there with anything but an empty list (which a header write that failed
    only at its folder's fsync leaves, and writing it again is harmless)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(len(MAGIC) + 1) != MAGIC
    except FileNotFoundError:
        return False


def load_used_sessions(path: Path) -> UsedSessions:
    """The ids recorded at `path` (none if there is no file yet: a node's first start);
    UsedSessionsError when the file is there but cannot be read back exactly. A torn last record
    (a crash in the middle of an append, before that session was answered) is cut off, fsynced,
    with a warning."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return UsedSessions(path=path)
    except OSError as error:
        raise UsedSessionsError(path, f"cannot be read ({error.strerror or error})") from None
    try:
        ids, torn = decode_ids(data)
    except ValueError as error:
        raise UsedSessionsError(path, str(error)) from None
    size = len(data) - torn
    if torn:
        try:
            with open(path, "r+b") as stream:
                stream.truncate(size)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            raise UsedSessionsError(path, f"ends in a torn record ({torn} bytes) that cannot be "
                                    f"cut off ({error.strerror or error})") from None
        log.warning("%s: dropped the torn last record (%d of %d bytes) that a crash in the middle "
                    "of writing it left; the node never answered that session, so never began it",
                    path, torn, RECORD)
    return UsedSessions(ids, path=path, file_size=size)


def used_sessions_path(options: NodeOptions) -> Path | None:
    """Where the node keeps its begun session ids: in --state-dir, or nowhere without one."""
    if not options.state_dir:
        return None
    return Path(options.state_dir) / f"{options.node_id}{SUFFIX}"


def open_used_sessions(options: NodeOptions) -> UsedSessions:
    """The node's record for its whole process (shared by every run config it builds, so a
    rebuild forgets nothing either): loaded from --state-dir (UsedSessionsError if unreadable),
    or in memory only, which is said once, at the first session, as a restart then forgets them."""
    path = used_sessions_path(options)
    if path is None:
        return UsedSessions(in_memory_warning=(
            f"node {options.node_id}: without --state-dir the secure-aggregation sessions it "
            "begins are remembered in memory only: a restarted node forgets them and could be "
            "made to begin one again"))
    used = load_used_sessions(path)
    log.info("node %s: remembers %d secure sessions it began, in %s", options.node_id, len(used),
             path)
    return used
