"""Mailboxes and membership without a network: who may join, what is open, what is stale."""

from __future__ import annotations

import logging

import pytest

from coordinator.dispatch import Dispatcher
from coordinator.errors import AlreadyMember, InvalidMessage, PermissionDenied, StaleMessage
from coordinator.membership import Membership
from protos.codream.v1 import codream_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ready(membership: Membership, node: str):
    member = membership.join(node)
    membership.ready(member.member_id, node, 1.0, 10, "mlp", "cpu")
    membership.heartbeat(member, open_=True)
    return member


def test_roster_duplicates_and_rejoin_after_the_heartbeat_ends():
    membership = Membership(["a", "b"])
    with pytest.raises(PermissionDenied):
        membership.join("z")
    first = _ready(membership, "a")
    with pytest.raises(AlreadyMember):
        membership.join("a")
    membership.heartbeat(first, open_=False)  # the process died
    second = membership.join("a")
    assert second.member_id != first.member_id
    with pytest.raises(StaleMessage):
        membership.get(first.member_id)
    with pytest.raises(PermissionDenied):
        membership.get(second.member_id, "b")


def test_a_silent_member_is_retired_after_the_liveness_window():
    clock = Clock()
    membership = Membership(["a", "b"], clock=clock, liveness_seconds=10)
    _ready(membership, "a")
    _ready(membership, "b")
    clock.now = 11
    assert membership.live() == []
    assert membership.join("a").index == 0  # and may join again


def _accept_ack(result: pb.TaskResult) -> str:
    if result.WhichOneof("body") != "ack":
        raise InvalidMessage("expected an ack")
    return "ok"


def test_a_refused_result_leaves_the_task_open_and_a_replay_is_stale():
    clock = Clock()
    membership = Membership(["a"], clock=clock)
    member = _ready(membership, "a")
    dispatcher = Dispatcher(membership, "run-1", clock)
    entry = dispatcher.post(member, pb.Task(task_id="t1"), _accept_ack)
    task = dispatcher.pull(member, 0)
    assert task.task_id == "t1" and task.coordinator_run == "run-1"
    bad = pb.TaskResult(member_id=member.member_id, task_id="t1", sequence=task.sequence)
    bad.skip.reason = "no"
    with pytest.raises(InvalidMessage):
        dispatcher.submit(member, bad)
    with pytest.raises(InvalidMessage):  # right sequence, wrong task id
        dispatcher.submit(member, pb.TaskResult(task_id="t2", sequence=task.sequence, ack=pb.Ack()))
    good = pb.TaskResult(task_id="t1", sequence=task.sequence, ack=pb.Ack())
    dispatcher.submit(member, good)
    assert [e.value for e in dispatcher.gather([entry], 0)] == ["ok"]
    with pytest.raises(StaleMessage):
        dispatcher.submit(member, good)  # a replay
    with pytest.raises(StaleMessage):
        dispatcher.submit(member, pb.TaskResult(task_id="t9", sequence=999, ack=pb.Ack()))


def test_gather_closes_at_the_deadline_and_late_results_are_stale():
    clock = Clock()
    membership = Membership(["a", "b"], clock=clock, liveness_seconds=1e9)
    a, b = _ready(membership, "a"), _ready(membership, "b")
    dispatcher = Dispatcher(membership, "run-1", clock)
    entries = [dispatcher.post(m, pb.Task(task_id="t"), _accept_ack) for m in (a, b)]
    task_a = dispatcher.pull(a, 0)
    dispatcher.submit(a, pb.TaskResult(task_id="t", sequence=task_a.sequence, ack=pb.Ack()))
    done = dispatcher.gather(entries, 0)  # the deadline has passed: b never answered
    assert [e.member.node_id for e in done] == ["a"]
    assert dispatcher.pull(b, 0) is None  # its undelivered task was withdrawn
    with pytest.raises(StaleMessage):
        dispatcher.submit(b, pb.TaskResult(task_id="t", sequence=entries[1].task.sequence, ack=pb.Ack()))


def test_gather_stops_waiting_for_a_member_that_left():
    membership = Membership(["a", "b"])
    a, b = _ready(membership, "a"), _ready(membership, "b")
    dispatcher = Dispatcher(membership, "run-1")
    entries = [dispatcher.post(m, pb.Task(task_id="t"), _accept_ack) for m in (a, b)]
    task_a = dispatcher.pull(a, 0)
    dispatcher.submit(a, pb.TaskResult(task_id="t", sequence=task_a.sequence, ack=pb.Ack()))
    membership.heartbeat(b, open_=False)
    assert [e.member.node_id for e in dispatcher.gather(entries, 3600)] == ["a"]


def test_a_newer_long_poll_ends_the_older_one():
    import threading
    import time

    membership = Membership(["a"])
    member = _ready(membership, "a")
    dispatcher = Dispatcher(membership, "run-1")
    results = []
    older = threading.Thread(target=lambda: results.append(dispatcher.pull(member, 3600)), daemon=True)
    older.start()
    deadline = time.monotonic() + 10
    while dispatcher._polls.get(member.member_id) != 1:  # the older poll is registered
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert dispatcher.pull(member, 0) is None  # the newer poll...
    older.join(5)
    assert not older.is_alive() and results == [None]  # ...ended the older one at once
    dispatcher.post(member, pb.Task(task_id="t"), _accept_ack)
    assert dispatcher.pull(member, 0).task_id == "t"


def test_leaving_is_a_warning_during_the_run_and_info_once_departures_are_expected(caplog):
    membership = Membership(("node-0", "node-1"), liveness_seconds=30.0)
    first = membership.join("node-0")
    second = membership.join("node-1")
    for member in (first, second):
        membership.heartbeat(member, open_=True)
    with caplog.at_level(logging.INFO, logger="coordinator.membership"):
        membership.heartbeat(first, open_=False)
        membership.expect_departures()
        membership.heartbeat(second, open_=False)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records
              if "left the federation" in r.getMessage()]
    assert levels == [("WARNING", "node node-0 left the federation: heartbeat stream ended"),
                      ("INFO", "node node-1 left the federation: heartbeat stream ended")]
