"""Limits: >4 MiB payloads pass both ways; a membership holds one heartbeat stream."""

from __future__ import annotations

import numpy as np
import pytest
from service_helpers import CALL_TIMEOUT, Code, assert_refused, serving, tiny_config

from protos import serde
from protos.codream.v1 import codream_pb2 as pb

pytestmark = pytest.mark.integration

SIX_MIB = 6 * 2**20


def test_tasks_and_results_larger_than_4_mib_pass(tmp_path):
    with serving(tiny_config(tmp_path / "run")) as served:
        node = served.node("node-0").enter()
        member = served.service.membership.get(node.member_id)
        big = np.arange(SIX_MIB // 4, dtype=np.float32)  # (d,): 6 MiB of float32
        task = pb.Task(task_id="big")
        task.load_parameters.parameters.CopyFrom(serde.tensor_to_proto(big))
        served.service.dispatcher.post(member, task, lambda result: serde.reply_from_proto(result))
        pulled = node.pull(wait=CALL_TIMEOUT)
        assert pulled.ByteSize() > SIX_MIB
        back = serde.task_from_proto(pulled)
        assert np.array_equal(back.parameters, big)
        # up: a 6 MiB result reaches the coordinator and is judged on its content (stale
        # sequence), not refused by the transport
        result = pb.TaskResult(member_id=node.member_id, task_id="other", sequence=10_000)
        result.contribution.weighted_values.CopyFrom(serde.tensor_to_proto(big))
        result.contribution.weight = 1.0
        assert_refused(lambda: node.submit(result), Code.FAILED_PRECONDITION, "no open task")


def test_a_second_heartbeat_stream_for_a_membership_is_refused_and_the_first_kept(tmp_path):
    with serving(tiny_config(tmp_path / "run")) as served:
        node = served.node("node-0").enter()
        stub = served.stub("node-0")
        assert_refused(lambda: stub.Heartbeat(iter([pb.Beat(member_id=node.member_id)]),
                                              timeout=CALL_TIMEOUT),
                       Code.INVALID_ARGUMENT, "already has a heartbeat stream")
        member = served.service.membership.get(node.member_id, "node-0")
        assert member.heartbeat_open and not member.gone
