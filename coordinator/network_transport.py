"""The gRPC transport of the round logic: each Broadcast becomes tasks in the members' mailboxes.

The same `CoordinatorRoundLogic` generator that `codream simulate` drives in memory is driven
here; only delivery differs. Byte counts reported to the round logic are payload bytes, as in
memory, so metrics compare across transports; wire bytes are kept beside them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from codream.aggregation import PlainSummer
from codream.config import RunConfig
from codream.messages import Skip, kind_of, payload_bytes
from codream.round_protocol import Broadcast, Replies, RoundReport, run_round_logic
from coordinator.dispatch import Dispatcher
from coordinator.encoded_tasks import SharedBody
from coordinator.errors import InvalidMessage
from coordinator.membership import Membership
from coordinator.run_metrics import CoordinatorMetrics, phase_name
from coordinator.secure_rounds import SecureRounds
from protos import serde
from protos.codream.v1 import codream_pb2 as pb

log = logging.getLogger(__name__)

class Stopped(Exception):
    """The run was stopped (SIGTERM) before it finished; the last checkpoint is intact."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds a phase waits for its members before going on without the silent ones."""

    task: float = 900.0  # local training, distillation, evaluation
    step: float = 300.0  # one summed task (a dream step, soft labels, a FedAvg round)
    secagg_round: float = 60.0  # key agreement and unmasking
    rejoin: float = 0.0  # at a round's start, wait this long for absent roster nodes


class NetworkTransport:
    def __init__(self, config: RunConfig, membership: Membership, dispatcher: Dispatcher,
                 timeouts: Timeouts, metrics: CoordinatorMetrics | None = None,
                 identities: Mapping[str, bytes] | None = None):
        """`identities`: node id -> raw Ed25519 public key, for authenticated secure rounds."""
        self.config = config
        self.metrics = metrics or CoordinatorMetrics()
        self.membership = membership
        self.dispatcher = dispatcher
        self.timeouts = timeouts
        self.secure = SecureRounds(
            dispatcher, config.secagg, membership.live, timeouts.secagg_round, timeouts.step,
            lambda entries: [self._count(e) for e in entries], identities=identities,
        ) if config.secagg.enabled else None
        self.wire_bytes: dict[str, list[int]] = {}  # node: [sent to it, received from it]
        self._round = -1
        self.stopping = threading.Event()

    def drive(self, rounds: Any, on_report: Callable[[RoundReport], None],
              stopping: threading.Event | None = None) -> None:
        """Runs the round logic to the end; a set `stopping` aborts it between (or inside) phases
        and no round that saw the stop is reported, so no half-served round reaches a checkpoint."""
        stopping = self.stopping = stopping or self.stopping

        def check() -> None:
            if stopping.is_set():
                raise Stopped("the coordinator is stopping; the current round is not saved")

        run_round_logic(rounds, self.broadcast, on_report, check)

    def live_nodes(self, round_index: int) -> list[str]:
        """The round logic's view of who is live at a round's start (it samples from them),
        after the round's wait for absent nodes."""
        self._enter_round(round_index)
        return [m.node_id for m in self.membership.live()]

    def _enter_round(self, round_index: int) -> None:
        if round_index != self._round:
            self._round = round_index
            self._wait_for_absent_nodes()

    def broadcast(self, request: Broadcast) -> Replies:
        task = request.task
        self._enter_round(task.round)
        started = time.perf_counter()
        replies, left_out = self._deliver(request)
        contributors = len(replies.total.contributors) if replies.total is not None else None
        dropped = len(replies.total.excluded) if replies.total is not None else left_out
        self.metrics.phase(phase_name(task), time.perf_counter() - started, contributors, dropped)
        if self.secure is not None:
            self.metrics.secure_totals(self.secure.sessions_started, self.secure.clipped)
        return replies

    def _deliver(self, request: Broadcast) -> tuple[Replies, int]:
        """The replies, and how many members gave none or a Skip (for a phase not summed)."""
        task = request.task
        message = serde.task_to_proto(task)
        down = payload_bytes(task)
        if request.summed and self.secure is not None:
            total = self.secure.sum(task, message, request.size, request.to)
            up = {node: payload_bytes_of_contribution(request.size) for node in total.contributors}
            traffic = {node: (down, up.get(node, 0)) for node in self.secure.last_step_members}
            return Replies({}, total, traffic), 0
        members = self.membership.live()
        if request.to is not None:  # a sampled round: the others idle
            chosen = set(request.to)
            members = [m for m in members if m.node_id in chosen]
        entries = []
        body = SharedBody(message)  # encoded once for every member
        for member in members:
            header = pb.Task(task_id=message.task_id, round=message.round)
            entries.append(self.dispatcher.post(member, header, self._acceptor(request), shared=body))
        timeout = self.timeouts.step if request.summed else self.timeouts.task
        done = self.dispatcher.gather(entries, timeout)
        for entry in entries:
            self._count(entry)
        by_node = {entry.member.node_id: entry.value for entry in done}
        silent = {m.node_id for m in members} - set(by_node)
        if silent:
            log.warning("%s: no answer from %s", task.task_id, ", ".join(sorted(silent)))
        traffic = {node: (down, payload_bytes(reply)) for node, reply in by_node.items()}
        total = None
        if request.summed:
            contributions = {k: r for k, r in by_node.items() if not isinstance(r, Skip)}
            total = PlainSummer().sum(contributions, request.size)
            excluded = {**total.excluded, **{k: r.reason for k, r in by_node.items() if isinstance(r, Skip)},
                        **{k: "no answer before the deadline" for k in silent}}
            total = dataclasses.replace(total, excluded=excluded)
        skipped = sum(isinstance(reply, Skip) for reply in by_node.values())
        return Replies(by_node, total, traffic), len(silent) + skipped

    def _wait_for_absent_nodes(self) -> None:
        """A node that crashed and restarted rejoins between rounds; give it the chance."""
        roster = len(self.membership.node_ids)
        if self.timeouts.rejoin > 0 and len(self.membership.live()) < roster:
            present = self.membership.wait_for(roster, self.timeouts.rejoin, self.stopping)
            log.info("round %d starts with %d of %d nodes", self._round, len(present), roster)

    def _acceptor(self, request: Broadcast) -> Callable[[pb.TaskResult], Any]:
        allowed = (*kind_of(request.task).replies, Skip)

        def accept(result: pb.TaskResult) -> Any:
            if request.summed and result.WhichOneof("body") == "masked":
                raise InvalidMessage("secure aggregation is off: send a clear contribution")
            reply = serde.reply_from_proto(result, request.size or None)
            if not isinstance(reply, allowed):
                expected = "a contribution" if request.summed else " or ".join(k.__name__ for k in allowed)
                raise InvalidMessage(f"{request.task.task_id}: expected {expected}, "
                                     f"got {type(reply).__name__}")
            return reply

        return accept

    def _count(self, entry) -> None:
        counts = self.wire_bytes.setdefault(entry.member.node_id, [0, 0])
        counts[0] += entry.sent_bytes
        counts[1] += entry.received_bytes
        self.metrics.wire(entry.member.node_id, entry.sent_bytes, entry.received_bytes)


def payload_bytes_of_contribution(size: int) -> int:
    """A contribution's payload as the in-memory transport counts it: size float32 values."""
    return 4 * size
