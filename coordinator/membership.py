"""Who is in the federation: node identities, live memberships, readiness and presence.

A node id may hold one live membership at a time. A membership is live from Join until its
heartbeat stream ends (the process died or left) or it shows no sign of life; a node that
comes back joins again under a new member id. Thread-safe; no network here.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coordinator.errors import AlreadyMember, PermissionDenied, StaleMessage

log = logging.getLogger(__name__)


@dataclass
class Member:
    node_id: str
    index: int
    member_id: str = field(repr=False)
    joined_at: float
    weight: float = 0.0
    num_samples: int = 0
    model: str = ""
    device: str = ""
    ready: bool = False
    heartbeat_open: bool = False
    last_seen: float = 0.0
    gone: bool = False


class Membership:
    """The roster is fixed (node ids in order: index = position); memberships come and go."""

    def __init__(self, node_ids: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 liveness_seconds: float = 60.0):
        if len(set(node_ids)) != len(node_ids) or not node_ids:
            raise ValueError(f"node ids must be distinct and non-empty, got {list(node_ids)}")
        self.node_ids = tuple(node_ids)
        self._index = {node: i for i, node in enumerate(node_ids)}
        self._clock = clock
        self._liveness = liveness_seconds
        # live memberships by member id (a retired one is dropped: nothing grows with re-joins),
        # and each node's latest membership
        self._by_member: dict[str, Member] = {}
        self._by_node: dict[str, Member] = {}
        self.joins = 0  # memberships ever granted (a count, not a map)
        self.version = 0  # moves on every join and departure: watchers re-check liveness then
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._departures_expected = False

    def join(self, node_id: str) -> Member:
        with self._lock:
            if node_id not in self._index:
                raise PermissionDenied(f"node {node_id!r} is not on this federation's roster")
            current = self._by_node.get(node_id)
            if current is not None and not current.gone:
                if self._alive(current):
                    raise AlreadyMember(f"node {node_id!r} already has a live membership")
                self._retire(current, "superseded by a new join")
            now = self._clock()
            member = Member(node_id, self._index[node_id], secrets.token_hex(16), now, last_seen=now)
            self._by_member[member.member_id] = member
            self._by_node[node_id] = member
            self.joins += 1
            self.version += 1
            self.changed.notify_all()
            log.info("node %s joined", node_id)
            return member

    def get(self, member_id: str, node_id: str | None = None) -> Member:
        """The live member, or StaleMessage; PermissionDenied if it belongs to another node."""
        with self._lock:
            member = self._by_member.get(member_id)
            if member is None or member.gone:
                raise StaleMessage("unknown or ended membership: join again")
            if node_id is not None and member.node_id != node_id:
                raise PermissionDenied(f"membership belongs to {member.node_id}, not {node_id}")
            member.last_seen = self._clock()
            return member

    def ready(self, member_id: str, node_id: str, weight: float, num_samples: int, model: str,
              device: str) -> Member:
        member = self.get(member_id, node_id)
        with self._lock:
            member.weight, member.num_samples = weight, num_samples
            member.model, member.device, member.ready = model, device, True
            self.changed.notify_all()
        log.info("node %s ready: %d samples, model %s on %s", node_id, num_samples, model, device)
        return member

    def leave(self, member: Member, why: str) -> None:
        """Ends the membership now (the coordinator refused it for good); its node may join again."""
        with self._lock:
            if not member.gone:
                self._retire(member, why)
            self.changed.notify_all()

    def heartbeat(self, member: Member, open_: bool) -> None:
        with self._lock:
            member.last_seen = self._clock()
            if open_:
                member.heartbeat_open = True
            elif member.heartbeat_open and not member.gone:
                member.heartbeat_open = False
                self._retire(member, "heartbeat stream ended")
            self.changed.notify_all()

    def live(self) -> list[Member]:
        """Ready, present members in roster order."""
        with self._lock:
            for member in list(self._by_node.values()):
                if not member.gone and not self._alive(member):
                    self._retire(member, f"no sign of life for {self._liveness:.0f} s")
            return sorted((m for m in self._by_node.values() if not m.gone and m.ready),
                          key=lambda m: m.index)

    def is_live(self, member: Member) -> bool:
        with self._lock:
            return not member.gone and self._alive(member)

    def wait_for(self, count: int, timeout: float, stop: threading.Event | None = None) -> list[Member]:
        """Blocks until `count` members are ready, the timeout passes or `stop` is set."""
        deadline = self._clock() + timeout
        while True:
            members = self.live()
            remaining = deadline - self._clock()
            if len(members) >= count or remaining <= 0 or (stop is not None and stop.is_set()):
                return members
            with self._lock:
                self.changed.wait(min(remaining, 1.0))

    def _alive(self, member: Member) -> bool:
        return self._clock() - member.last_seen <= self._liveness

    def expect_departures(self) -> None:
        """The run is over and the nodes were told so: their leaving is normal from now on."""
        with self._lock:
            self._departures_expected = True

    def memberships(self) -> int:
        """Memberships held in the maps (at most one per roster node)."""
        with self._lock:
            return len(self._by_member)

    def _retire(self, member: Member, why: str) -> None:
        member.gone = True
        self._by_member.pop(member.member_id, None)  # its messages are stale from now on
        self.version += 1
        level = logging.INFO if self._departures_expected else logging.WARNING
        log.log(level, "node %s left the federation: %s", member.node_id, why)
