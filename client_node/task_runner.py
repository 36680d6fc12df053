"""Runs one pulled task on the node: pb.Task -> pb.TaskResult, with no network in between.

The daemon only moves messages; everything a node computes for a task happens here, so it can
be tested against a real secagg server in process. A task the node cannot run becomes a Skip
with the reason (the coordinator decides what a skip means); under secure aggregation a node
that cannot contribute still masks zeros with weight 0, so it stays in the session, while a
node that will not take part in the session (its checks of SecAggBegin, the members' identities
or a key directory failed) answers that round with a Skip, its explicit refusal, which makes it
a dropout of that session at once.
"""

from __future__ import annotations

import logging
from typing import Protocol

from client_node.secure_contribution import SecureContribution, SecureTaskError, SessionParams
from codream.messages import TASK_KINDS, Reply, Skip, Task, TaskKind, task_type_for
from protos import serde
from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggConfig, SecAggError

log = logging.getLogger(__name__)

SECAGG_TASKS = frozenset({"secagg_begin", "key_directory", "consistency_request", "unmask_request"})


class TaskLogic(Protocol):
    def handle(self, task: Task) -> Reply: ...


class Snapshots(Protocol):
    def before_task(self, round_index: int, coordinator_run: str) -> bool: ...


def method_kind(body: str | None) -> TaskKind | None:
    """The declaration of the method task in body field `body`, or None (secagg, control)."""
    task_type = task_type_for(body)
    return TASK_KINDS[task_type] if task_type is not None else None


def is_shutdown(task: pb.Task) -> bool:
    return task.WhichOneof("body") == "shutdown"


def session_params(begin: pb.SecAggBegin) -> SessionParams:
    """SecAggBegin -> SessionParams; 0 in threshold, degree or scale means the library's default."""
    config = SecAggConfig(
        n_clients=begin.n_clients, dim=begin.dim, clip=begin.clip, threshold=begin.threshold or None,
        graph=begin.graph, degree=begin.degree or None, scale=begin.scale or None,
        max_weight=begin.max_weight, steps_per_block=begin.steps_per_block,
        authenticated=bool(begin.identity_keys),
    )
    return SessionParams(begin.session_id, begin.client_index, config, begin.weight_unit,
                         tuple(begin.members), tuple(begin.identity_keys),
                         tuple(begin.identity_certificates))


class TaskRunner:
    """One node's tasks: method tasks through its task logic, secagg tasks through its state."""

    def __init__(self, node_id: str, logic: TaskLogic, snapshots: Snapshots,
                 secure: SecureContribution | None = None) -> None:
        self.node_id = node_id
        self.logic = logic
        self.snapshots = snapshots
        self.secure = secure if secure is not None else SecureContribution(node_id)

    def run(self, task: pb.Task, member_id: str) -> pb.TaskResult:
        """The result to submit for `task`; never raises for a task the node cannot run."""
        out = pb.TaskResult(member_id=member_id, task_id=task.task_id, sequence=task.sequence)
        kind = task.WhichOneof("body")
        method = method_kind(kind)
        try:
            if method is not None and task.HasField("secure"):
                self._secure_method_task(task, out)
            elif method is not None and method.summed and self._secure_required():
                # the node's own run config says secure aggregation: never hand out a clear update
                raise SecureTaskError(f"{kind} without secure aggregation, which this run requires; "
                                      "refusing to send a clear update")
            elif method is not None:
                serde.reply_to_proto(self._handle(task), out)
            elif kind in SECAGG_TASKS:
                out.secagg_message = self._secagg_task(task, kind)
            else:
                raise serde.WireError(f"no body the node can run ({kind})")
        except Exception as error:  # a node answers every task; the coordinator decides
            expected = isinstance(error, (SecAggError, SecureTaskError, serde.WireError))
            reason = f"{type(error).__name__}: {error}"
            # Under secure aggregation the Skip is the node's refusal: the coordinator counts it
            # out of the session at once instead of waiting for the round's timeout.
            what = "refusing" if kind in SECAGG_TASKS or task.HasField("secure") else "skipping"
            log.warning("node %s round %d: %s %s task %s: %s", self.node_id, task.round, what,
                        kind, task.task_id, reason, exc_info=not expected)
            out.skip.reason = reason  # replaces whatever body was half set
        return out

    def _secure_required(self) -> bool:
        config = getattr(self.logic, "config", None)
        return bool(config is not None and config.secagg.enabled and config.clients >= 2)

    def _handle(self, task: pb.Task) -> Reply:
        """The task logic's reply; a task it cannot run becomes a Skip naming why."""
        try:
            self.snapshots.before_task(task.round, task.coordinator_run)
            return self.logic.handle(serde.task_from_proto(task))
        except Exception as error:  # under secagg the node must still mask (zeros)
            reason = f"{type(error).__name__}: {error}"
            log.warning("node %s round %d: task %s failed: %s", self.node_id, task.round,
                        task.task_id, reason, exc_info=not isinstance(error, serde.WireError))
            return Skip(reason)

    def _secure_method_task(self, task: pb.Task, out: pb.TaskResult) -> None:
        """A summed task under secure aggregation: (shares,) compute, mask."""
        secure = task.secure
        self.secure.check_session(secure.session_id)  # refuse before doing any work
        if secure.share_delivery:
            self.secure.receive_shares(secure.session_id, secure.share_delivery)
        masked = self.secure.masked(secure.session_id, secure.step, self._handle(task))
        if secure.share_delivery:
            log.info("node %s round %d: block keys in place; masked input for step %d", self.node_id,
                     task.round, secure.step)
        out.masked.masked_input = masked.masked_input
        out.masked.skip_reason = masked.skip_reason
        if masked.skip_reason:
            log.info("node %s round %d: masked zeros for step %d: %s", self.node_id, task.round,
                     secure.step, masked.skip_reason)

    def _secagg_task(self, task: pb.Task, kind: str) -> bytes:
        if kind == "secagg_begin":
            return self.secure.begin(session_params(task.secagg_begin))
        if kind == "key_directory":
            return self.secure.share_keys(task.key_directory)
        if kind == "consistency_request":
            return self.secure.sign_survivors(task.consistency_request)
        return self.secure.unmask(task.unmask_request)
