"""The secure-aggregation session ids a node has begun, kept across restarts in its state dir.

A node never begins a session id twice: a fresh client of an old id would sign (session, step 0)
a second time with the same identity key, an honest node endorsing two survivor lists of one
step (secagg/README.md). Remembering the ids in memory alone forgets them when the process
restarts, so with `--state-dir` they are also kept in `STATE_DIR/<node id>.sessions`, and each
new id is on disk (atomically, fsynced, the rename too) before the node answers the SecAggBegin
that starts it. The newest `USED_SESSIONS` are kept, the oldest forgotten first.

The file: a 16-byte header (`MAGIC`), 16 bytes per id oldest first, then the SHA-256 of all
before it. A file that cannot be read back exactly is never taken for an empty one: the node
refuses to start (`UsedSessionsError`), since it can no longer tell which ids it has begun.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from client_node.node_options import NodeOptions
from codream.atomic_files import atomic_write
from secagg.messages import SESSION_ID_BYTES

log = logging.getLogger(__name__)

USED_SESSIONS = 4096  # ids remembered, 16 bytes each: 64 KiB of file at most
SUFFIX = ".sessions"  # STATE_DIR/<node id>.sessions, beside the round-start snapshot
MAGIC = b"codream.sessid/1"  # the file's header: its format and version (16 bytes)
_DIGEST = 32  # SHA-256 trailer


class UsedSessionsError(Exception):
    """The node's file of begun session ids cannot be read back: the node must not start."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} {reason}: the node cannot tell which secure-aggregation sessions it has "
            "begun, so it does not start; restore the file, or delete it only if you know that no "
            "secure session of this coordinator is in flight (else the node could begin one of "
            "them again)")
        self.path, self.reason = path, reason


# -- pure: the bound and the file format ------------------------------------------------------
def remembered(ids: Sequence[bytes], session_id: bytes, bound: int = USED_SESSIONS) -> tuple[bytes, ...]:
    """`ids` (oldest first) with `session_id` added as the newest, the oldest dropped beyond
    `bound`; ValueError for an id the file could not hold (not 16 bytes)."""
    if len(session_id) != SESSION_ID_BYTES:
        raise ValueError(f"a secure session id is {SESSION_ID_BYTES} bytes, got {len(session_id)}")
    kept = [known for known in ids if known != session_id] + [session_id]
    return newest(kept, bound)


def newest(ids: Sequence[bytes], bound: int = USED_SESSIONS) -> tuple[bytes, ...]:
    """The last `bound` of `ids` (oldest first): what a node keeps once it has begun more."""
    return tuple(ids[-bound:]) if bound > 0 else ()


def encode_ids(ids: Iterable[bytes]) -> bytes:
    """The file's bytes for `ids`, oldest first: header, ids, SHA-256 of both."""
    body = MAGIC + b"".join(ids)
    return body + hashlib.sha256(body).digest()


def decode_ids(data: bytes) -> tuple[bytes, ...]:
    """The ids `encode_ids` wrote, oldest first; ValueError saying what is wrong with `data`
    (cut short, another format, a failed checksum): a guess here could forget a begun id."""
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if len(data) < len(MAGIC) + _DIGEST or (len(body) - len(MAGIC)) % SESSION_ID_BYTES:
        raise ValueError(f"is not a whole list of session ids ({len(data)} bytes)")
    if not body.startswith(MAGIC):
        raise ValueError(f"is not a session-id file of this version (no {MAGIC.decode()} header)")
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("fails its checksum (corrupt)")
    ids = body[len(MAGIC):]
    return tuple(ids[i:i + SESSION_ID_BYTES] for i in range(0, len(ids), SESSION_ID_BYTES))


# -- the node's record ------------------------------------------------------------------------
class UsedSessions:
    """The ids of the secure sessions a node began (the newest `bound`); with `path`, `record`
    puts each new one on disk before it returns, so a restarted node still refuses it."""

    def __init__(self, ids: Iterable[bytes] = (), *, path: Path | None = None,
                 bound: int = USED_SESSIONS, in_memory_warning: str | None = None) -> None:
        """`in_memory_warning`: logged once, at the first id recorded without a path (a node
        that never runs a secure session, or stops at a start-up error, is not told)."""
        self.path = path
        self.bound = bound
        self._in_memory_warning = in_memory_warning
        self._ids = dict.fromkeys(newest(tuple(ids), bound))  # insertion order: oldest first

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[bytes, ...]:
        """Oldest first."""
        return tuple(self._ids)

    def record(self, session_id: bytes) -> None:
        """Remembers `session_id`, on disk first when there is a path. OSError when it cannot be
        written, and then it is not remembered either: the caller must not begin the session,
        since a restart would forget it."""
        ids = remembered(self.ids, session_id, self.bound)
        if self.path is not None:
            write_ids(self.path, ids)
        elif self._in_memory_warning:
            log.warning("%s", self._in_memory_warning)
            self._in_memory_warning = None
        self._ids = dict.fromkeys(ids)


def write_ids(path: Path, ids: Sequence[bytes]) -> None:
    """Atomically and durably (the file and its rename fsynced): once this returns, a crash or
    power cut leaves the new list on disk, never the old one or half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_ids(ids)
    atomic_write(path, lambda stream: stream.write(data), private=True, durable=True)


def load_used_sessions(path: Path, bound: int = USED_SESSIONS) -> UsedSessions:
    """The ids recorded at `path` (none if there is no file yet: a node's first start);
    UsedSessionsError when the file is there but cannot be read back exactly."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return UsedSessions(path=path, bound=bound)
    except OSError as error:
        raise UsedSessionsError(path, f"cannot be read ({error.strerror or error})") from None
    try:
        ids = decode_ids(data)
    except ValueError as error:
        raise UsedSessionsError(path, str(error)) from None
    return UsedSessions(ids, path=path, bound=bound)


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
