"""The coordinator's domain service: what each RPC means, independent of gRPC.

The servicer authenticates a call, hands the node id and request here, and maps whatever this
raises to a status code. Holding the membership and the mailboxes, it is also what the round
driver talks to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

from coordinator.data_fit import FederationData, offered_shape
from coordinator.dispatch import Dispatcher
from coordinator.encoded_tasks import EncodedTask
from coordinator.errors import InvalidMessage, Misfit, NotReady
from coordinator.membership import Membership
from protos.codream.v1 import codream_pb2 as pb
from protos.serde import PROTOCOL, printable

log = logging.getLogger(__name__)

MAX_PULL_WAIT = 30.0


class Federation:
    def __init__(self, membership: Membership, dispatcher: Dispatcher, run_config_toml: str,
                 heartbeat_seconds: float, data: FederationData | None = None):
        self.membership = membership
        self.data = data or FederationData()  # none given: the first ready node fixes the shape
        self.dispatcher = dispatcher
        self.run_config_toml = run_config_toml
        self.heartbeat_seconds = heartbeat_seconds
        self.accepting = True
        self.closed_reason = "the coordinator is shutting down"  # what a refused Join is told

    def join(self, node_id: str, request: pb.JoinRequest) -> pb.JoinReply:
        if not self.accepting:
            raise NotReady(self.closed_reason)
        if request.protocol != PROTOCOL:
            raise InvalidMessage(f"protocol {request.protocol!r} is not supported; this coordinator "
                                 f"speaks {PROTOCOL}")
        if request.node_id != node_id:
            raise InvalidMessage(f"join names node {request.node_id!r} but the credential is {node_id!r}")
        member = self.membership.join(node_id)
        return pb.JoinReply(member_id=member.member_id, coordinator_run=self.dispatcher.coordinator_run,
                            run_config_toml=self.run_config_toml, node_index=member.index,
                            heartbeat_seconds=self.heartbeat_seconds)

    def ready(self, node_id: str, request: pb.ReadyRequest) -> pb.ReadyReply:
        if not (math.isfinite(request.weight) and request.weight > 0):
            raise InvalidMessage(f"weight must be finite and > 0, got {request.weight}")
        if request.num_samples < 0:
            raise InvalidMessage(f"num_samples must be >= 0, got {request.num_samples}")
        member = self.membership.get(request.member_id, node_id)  # a stale one: join again
        try:
            self.data.admit(node_id, offered_shape(node_id, request.input_shape, request.num_classes))
        except Misfit as misfit:
            # final: the node stops, and its id is free at once for a node with fitting data
            self.membership.leave(member, f"refused at Ready: {misfit}")
            raise
        # the node's own words go into logs and metrics: no control characters, bounded
        self.membership.ready(request.member_id, node_id, request.weight, request.num_samples,
                              printable(request.model), printable(request.device))
        self.dispatcher.wake()
        return pb.ReadyReply()

    def heartbeat(self, node_id: str, beats: Iterator[pb.Beat]) -> pb.HeartbeatSummary:
        """Held open for the membership's life: its end (even by a crash) means the node left."""
        member = None
        received = 0
        try:
            for beat in beats:
                if member is None:
                    candidate = self.membership.get(beat.member_id, node_id)
                    if candidate.heartbeat_open:  # refused without touching the open one
                        raise InvalidMessage("this membership already has a heartbeat stream")
                    member = candidate
                    self.membership.heartbeat(member, open_=True)
                elif beat.member_id != member.member_id:
                    raise InvalidMessage("one heartbeat stream carries one membership")
                else:
                    self.membership.heartbeat(member, open_=True)
                received += 1
        finally:
            if member is not None:
                self.membership.heartbeat(member, open_=False)
                self.dispatcher.wake()
        return pb.HeartbeatSummary(received=received)

    def pull(self, node_id: str, request: pb.PullTaskRequest) -> pb.Task | EncodedTask:
        member = self.membership.get(request.member_id, node_id)
        wait = min(max(request.wait_seconds, 0.0), MAX_PULL_WAIT)
        task = self.dispatcher.pull(member, wait)
        return task if task is not None else pb.Task(coordinator_run=self.dispatcher.coordinator_run)

    def submit(self, node_id: str, result: pb.TaskResult) -> pb.SubmitReply:
        member = self.membership.get(result.member_id, node_id)
        self.dispatcher.submit(member, result)
        return pb.SubmitReply()

    def exchange(self, node_id: str, request: pb.ExchangeRequest) -> pb.Task | EncodedTask:
        """Submit, then pull: a refused result raises before anything is pulled."""
        if request.HasField("result"):
            if request.result.member_id != request.pull.member_id:
                raise InvalidMessage("an exchange carries one membership")
            self.submit(node_id, request.result)
        return self.pull(node_id, request.pull)
