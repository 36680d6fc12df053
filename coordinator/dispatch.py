"""Task mailboxes: the coordinator posts tasks to members, nodes pull them and submit results.

Nodes dial out, so the coordinator never pushes: each member has a queue that its long-poll
PullTask drains. Every posted task is open until its result is accepted or its gather closes
(deadline, or the member left); a result for anything not open is stale (late or replayed).
Each open task has an `accept` function that validates the result and turns it into a domain
value while the submitting node waits, so a bad result is refused with a status right there
and never reaches a sum. No network here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator.encoded_tasks import EncodedTask, SharedBody
from coordinator.errors import InvalidMessage, NotReady, StaleMessage
from coordinator.membership import Member, Membership
from protos.codream.v1 import codream_pb2 as pb


@dataclass
class OpenTask:
    member: Member
    task: pb.Task = field(repr=False)  # this member's task, or just its header with `shared`
    accept: Callable[[pb.TaskResult], Any] = field(repr=False)
    shared: SharedBody | None = field(default=None, repr=False)  # the body every member gets
    value: Any = None
    done: bool = False
    closed: bool = False
    sent_bytes: int = 0  # wire bytes of the task as the member pulled it (0: never pulled)
    received_bytes: int = 0


class Dispatcher:
    def __init__(self, membership: Membership, coordinator_run: str,
                 clock: Callable[[], float] = time.monotonic):
        self.membership = membership
        self.coordinator_run = coordinator_run
        self._clock = clock
        self._lock = threading.Lock()
        # Gathers wait on `_changed`; each member's long poll on its own condition, so a post
        # wakes one node's thread, not every waiting poll (no thundering herd at n nodes).
        self._changed = threading.Condition(self._lock)
        self._mail: dict[str, threading.Condition] = {}
        self._polls: dict[str, int] = {}  # member id -> number of its newest long poll
        self._poll_deadlines: dict[str, float] = {}  # member id -> when its newest poll ends
        self._accepting = threading.RLock()  # accept functions and closing never interleave
        self._queues: dict[str, deque[OpenTask]] = {}
        self._open: dict[tuple[str, int], OpenTask] = {}
        # Per-membership state (mail, polls, queues) of members that have left is dropped by a
        # sweep whenever the members seen have doubled since the last, so it never grows with
        # re-joins (amortised O(1) per new membership).
        self._members: dict[str, Member] = {}
        self._sweep_at = 64
        self._sequence = 0
        self._stopped = False

    # ---- coordinator side ----------------------------------------------------------------
    def post(self, member: Member, task: pb.Task, accept: Callable[[pb.TaskResult], Any],
             shared: SharedBody | pb.Task | None = None) -> OpenTask:
        """`shared`: a body posted to many members is held (and encoded) once, and this
        member's `task` (its header: ids, sequence, secure step) is appended to its encoding
        when the member pulls it."""
        if isinstance(shared, pb.Task):
            shared = SharedBody(shared)
        with self._lock:
            self._sequence += 1
            task.sequence = self._sequence
            task.coordinator_run = self.coordinator_run
            entry = OpenTask(member, task, accept, shared)
            self._open[(member.member_id, task.sequence)] = entry
            self._queues.setdefault(member.member_id, deque()).append(entry)
            self._mailbox(member).notify()
            return entry

    def gather(self, entries: Iterable[OpenTask], timeout: float) -> list[OpenTask]:
        """Waits until every entry is done, its member gone, or the timeout; closes the rest."""
        entries = list(entries)
        deadline = self._clock() + timeout
        with self._lock:
            # Each submit wakes the gather: only the entries still waiting are looked at, and
            # their members' liveness only when the membership changed or a wait timed out
            # (liveness also lapses with time), so a phase of n members costs O(n) checks per
            # change, not O(n) per result (O(n^2) a phase at hundreds of nodes).
            waiting, seen_version, timed_out = entries, None, True
            while True:
                waiting = [e for e in waiting if not e.done]
                version = self.membership.version
                if timed_out or version != seen_version:
                    waiting = [e for e in waiting if self.membership.is_live(e.member)]
                    seen_version = version
                remaining = deadline - self._clock()
                if not waiting or remaining <= 0 or self._stopped:
                    break
                timed_out = not self._changed.wait(min(remaining, 0.25))
        with self._accepting, self._lock:
            for entry in entries:
                entry.closed = True
                self._open.pop((entry.member.member_id, entry.task.sequence), None)
                queue = self._queues.get(entry.member.member_id)
                if queue is not None and entry in queue:
                    queue.remove(entry)
        return [e for e in entries if e.done]

    def wake(self) -> None:
        """Gathers re-check their members; a long poll wakes only if it has something to see
        (its member gone, or its deadline passed on the dispatcher's clock). Every Ready and
        every departure calls this: waking all n polls each time cost O(n) thread wake-ups
        per join, O(n^2) while hundreds of nodes join or re-join."""
        with self._lock:
            self._changed.notify_all()
            now = self._clock()
            for member_id, mail in self._mail.items():
                member = self._members.get(member_id)
                if (member is None or member.gone
                        or self._poll_deadlines.get(member_id, now) <= now):
                    mail.notify_all()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._changed.notify_all()
            for mail in self._mail.values():
                mail.notify_all()

    def _mailbox(self, member: Member) -> threading.Condition:
        mail = self._mail.get(member.member_id)
        if mail is None:
            mail = self._mail[member.member_id] = threading.Condition(self._lock)
            self._members[member.member_id] = member
            if len(self._members) > self._sweep_at:
                self._sweep()
        return mail

    def _sweep(self) -> None:
        """Forgets members that have left (under the lock). A long poll still waiting on a
        forgotten mailbox sees its member gone and returns; open tasks stay with their gathers."""
        for member_id, member in list(self._members.items()):
            if member.gone:
                del self._members[member_id]
                self._mail.pop(member_id, None)
                self._polls.pop(member_id, None)
                self._poll_deadlines.pop(member_id, None)
                self._queues.pop(member_id, None)
        self._sweep_at = max(64, 2 * len(self._members))

    def tracked_members(self) -> int:
        """Memberships the dispatcher holds state for (bounded: see `_sweep`)."""
        with self._lock:
            return len(self._mail)

    # ---- node side -----------------------------------------------------------------------
    def pull(self, member: Member, wait_seconds: float) -> pb.Task | EncodedTask | None:
        """The member's next task, waiting up to `wait_seconds`. One long poll per member: a
        newer one ends the older (empty), so no node can hold many server threads."""
        deadline = self._clock() + max(0.0, wait_seconds)
        with self._lock:
            queue = self._queues.setdefault(member.member_id, deque())
            mail = self._mailbox(member)
            self._polls[member.member_id] = poll = self._polls.get(member.member_id, 0) + 1
            self._poll_deadlines[member.member_id] = deadline
            mail.notify_all()  # an older poll of this member sees it is superseded
            while not queue:
                remaining = deadline - self._clock()
                superseded = self._polls.get(member.member_id) != poll
                if remaining <= 0 or self._stopped or member.gone or superseded:
                    return None
                mail.wait(min(remaining, 1.0))
            entry = queue.popleft()
        if entry.shared is None:
            task: pb.Task | EncodedTask = entry.task
        else:  # outside the lock: the body's bytes, encoded once, and this member's header
            task = EncodedTask(entry.shared.data + entry.task.SerializeToString())
        entry.sent_bytes = task.ByteSize()  # what the member is handed, header and body merged
        return task

    def submit(self, member: Member, result: pb.TaskResult) -> None:
        with self._accepting:
            with self._lock:
                if self._stopped:
                    raise NotReady("the coordinator is shutting down")
                entry = self._open.get((member.member_id, result.sequence))
                if entry is None or entry.closed:
                    raise StaleMessage(
                        f"no open task with sequence {result.sequence} for this member "
                        f"(late, replayed or never sent): {result.task_id!r}"
                    )
                if entry.task.task_id != result.task_id:
                    raise InvalidMessage(f"sequence {result.sequence} is task {entry.task.task_id!r}, "
                                         f"not {result.task_id!r}")
            value = entry.accept(result)  # raises to refuse; the task stays open for a retry
            with self._lock:
                entry.value, entry.done = value, True
                entry.received_bytes = result.ByteSize()
                self._open.pop((member.member_id, result.sequence), None)
                self._changed.notify_all()
