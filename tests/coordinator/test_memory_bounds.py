"""The coordinator's per-membership state stays bounded however often nodes re-join, and a
broadcast body is encoded once for all members.

Grpc-free first (Membership and Dispatcher, hundreds of re-joins), then over gRPC against a
real CoordinatorService on port 0 (nodes that join, heartbeat, pull and leave again and again).
"""

from __future__ import annotations

import numpy as np
from service_helpers import serving, tiny_config

from coordinator.dispatch import Dispatcher
from coordinator.encoded_tasks import EncodedTask, SharedBody
from coordinator.membership import Membership
from protos.codream.v1 import codream_pb2 as pb

REJOINS = 500


def _ack(result: pb.TaskResult) -> str:
    return "ok"


def _present(membership: Membership, node: str):
    member = membership.join(node)
    membership.ready(member.member_id, node, 1.0, 10, "mlp", "cpu")
    membership.heartbeat(member, open_=True)
    return member


def test_hundreds_of_rejoins_leave_the_maps_bounded():
    membership = Membership(["a", "b"])
    dispatcher = Dispatcher(membership, "run")
    steady = _present(membership, "b")
    largest = 0
    for i in range(REJOINS):
        member = _present(membership, "a")
        body = SharedBody(pb.Task(dream_step=pb.DreamStep(step=i)))
        entries = [dispatcher.post(m, pb.Task(task_id=f"t{i}"), _ack, shared=body)
                   for m in (member, steady)]
        for m in (member, steady):
            task = dispatcher.pull(m, 0)
            dispatcher.submit(m, pb.TaskResult(task_id=task.task_id, sequence=task.sequence,
                                               ack=pb.Ack()))
        assert [e.value for e in dispatcher.gather(entries, 0)] == ["ok", "ok"]
        membership.heartbeat(member, open_=False)  # the process died; it will join again
        largest = max(largest, dispatcher.tracked_members())
    assert membership.joins == REJOINS + 1
    assert membership.memberships() == 1  # only b's is live
    assert largest <= 65  # swept whenever the members seen pass max(64, 2 x live)
    assert len(dispatcher._open) == 0 and sum(map(len, dispatcher._queues.values())) == 0


def test_a_shared_body_is_encoded_once_and_each_member_gets_exactly_body_merged_with_header():
    membership = Membership(["a", "b", "c"])
    members = [_present(membership, n) for n in "abc"]
    dispatcher = Dispatcher(membership, "run")
    dreams = np.arange(4096, dtype=np.float32).tobytes()
    message = pb.Task(task_id="r1/s0", round=1)
    message.dream_step.step = 1
    message.dream_step.dreams.data = dreams
    body = SharedBody(message)
    for i, m in enumerate(members):
        header = pb.Task(task_id="r1/s0", round=1)
        header.secure.step = i
        dispatcher.post(m, header, _ack, shared=body)
    pulled = [dispatcher.pull(m, 0) for m in members]
    encoded = body.data
    assert body.data is encoded  # encoded once, the same bytes object for every member
    for i, task in enumerate(pulled):
        assert isinstance(task, EncodedTask) and task.data.startswith(encoded)
        expected = pb.Task()
        expected.CopyFrom(message)
        header = pb.Task(task_id="r1/s0", round=1, sequence=task.sequence, coordinator_run="run")
        header.secure.step = i
        expected.MergeFrom(header)
        assert pb.Task.FromString(task.data) == expected
        assert task.secure.step == i and task.dream_step.dreams.data == dreams  # reads as a Task


def test_nodes_rejoining_over_grpc_leave_no_trace_in_the_coordinator(tmp_path):
    config = tiny_config(tmp_path / "run", clients=2, **{"secagg.enabled": False})
    with serving(config, liveness_seconds=30.0) as served:
        service = served.service
        steady = served.node("node-1").enter()
        for _ in range(40):
            node = served.node("node-0").enter()
            assert node.pull(wait=0).WhichOneof("body") is None
            node.leave()  # its heartbeat stream ends: the membership is retired
            for channel in served.channels[2:]:
                channel.close()
            del served.channels[2:]
            served.nodes.remove(node)
        assert service.membership.joins == 41
        assert service.membership.memberships() == 1  # node-1's; node-0's 40 are gone
        assert service.dispatcher.tracked_members() <= 65
        assert sum(service.admission.open_calls().values()) <= 2  # steady's heartbeat (+ a poll)
        assert steady.pull(wait=0).WhichOneof("body") is None
