"""A node binds what SecAggBegin told it (weight unit, members) into its signed parameter digest."""

import numpy as np
from node_helpers import NoSnapshots, SecureCoordinator, begin_message

from client_node.task_runner import TaskRunner
from codream.aggregation import Contribution
from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggClient, SecAggConfig, decode
from secagg.messages import AdvertiseKeys, ShareKeys

DIM = 6
CONFIG = SecAggConfig(n_clients=3, dim=DIM, clip=10.0)
TASK = {"dream_step": pb.DreamStep(shape=[1, 1, 1, DIM], seed=1)}
UPDATES = {0: [1.0, -2.0, 3.0, 0.5, 0.0, 4.0], 1: [2.0] * DIM, 2: [-3.0] * DIM}


class Logic:
    def __init__(self, values):
        self.values = values

    def handle(self, task):
        return Contribution(np.asarray(self.values, dtype=np.float32), 1.0)


class SplitCoordinator(SecureCoordinator):
    """Tells each node its own weight unit and member list."""

    def __init__(self, units, members, **kw):
        runners = {i: TaskRunner(f"node-{i}", Logic(UPDATES[i]), NoSnapshots()) for i in units}
        super().__init__(CONFIG, runners, weight_unit=1.0, **kw)
        self.units, self.member_lists = units, members
        self.last_share_replies = {}

    def setup_block(self):
        sid = self.server.session_id
        for i in self.runners:
            begin = begin_message(self.config, sid, i, self.units[i], self.member_lists[i])
            self.server.receive_advertise(decode(self.send(i, secagg_begin=begin).secagg_message,
                                                 AdvertiseKeys))
        for i in self.runners:
            reply = self.send(i, key_directory=self.server.key_directory(i).to_bytes())
            self.last_share_replies[i] = reply
            if reply.WhichOneof("body") == "secagg_message":
                self.server.receive_share_keys(decode(reply.secagg_message, ShareKeys))


MEMBERS = ("node-0", "node-1", "node-2")


def test_unchecked_a_coordinator_giving_the_others_a_huge_unit_learns_one_update(monkeypatch):
    monkeypatch.setattr(SecAggClient, "_check_params", lambda self, entry: None)
    coordinator = SplitCoordinator({0: 1.0, 1: 1e7, 2: 1e7}, {i: MEMBERS for i in range(3)})
    result, _ = coordinator.step(lambda i: TASK)
    assert np.abs(result.total - np.array(UPDATES[0])).max() < 1e-4


def test_nodes_told_different_weight_units_refuse_to_share_keys():
    coordinator = SplitCoordinator({0: 1.0, 1: 1e7, 2: 1e7}, {i: MEMBERS for i in range(3)})
    coordinator.setup_block()
    for i, reply in coordinator.last_share_replies.items():
        assert reply.WhichOneof("body") == "skip" and "ParameterMismatch" in reply.skip.reason, i


def test_nodes_told_different_member_lists_refuse_to_share_keys():
    lists = {0: MEMBERS, 1: MEMBERS, 2: MEMBERS + ("node-9",)}  # node 2 is told of another member
    coordinator = SplitCoordinator({i: 1.0 for i in range(3)}, lists)
    coordinator.setup_block()
    for i, reply in coordinator.last_share_replies.items():
        assert "ParameterMismatch" in reply.skip.reason, i


def test_nodes_told_the_same_parameters_sum_as_before():
    coordinator = SplitCoordinator({i: 2.0 for i in range(3)}, {i: MEMBERS for i in range(3)})
    result, _ = coordinator.step(lambda i: TASK)
    expected = sum(np.array(v) for v in UPDATES.values()) / 2.0
    assert np.abs(result.total - expected).max() <= result.error_bound


def test_a_node_refuses_a_session_of_fewer_than_two_members():
    runner = TaskRunner("node-0", Logic(UPDATES[0]), NoSnapshots())
    begin = begin_message(CONFIG, b"S" * 16, 0, 1.0, ("node-0",))
    begin.n_clients = 1
    task = pb.Task(task_id="b", secagg_begin=begin)
    result = runner.run(task, "member-0")
    assert "n_clients must be an int >= 2" in result.skip.reason
