"""The node's secure-aggregation state: skips stay in the session, sessions are checked and kept."""

import numpy as np
import pytest
from node_helpers import NoSnapshots, SecureCoordinator, begin_message

from client_node import secure_contribution
from client_node.secure_contribution import SecureContribution, SecureTaskError, SessionParams
from client_node.task_runner import TaskRunner, session_params
from client_node.used_sessions import UsedSessions, load_used_sessions
from codream.aggregation import Contribution
from codream.messages import Skip, TrainReport
from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggConfig

DIM = 6
CONFIG = SecAggConfig(n_clients=3, dim=DIM, clip=10.0)
TASK = {"dream_step": pb.DreamStep(shape=[1, 1, 1, DIM], seed=1)}


class FixedLogic:
    """Answers every task with the reply it was given (or raises it)."""

    def __init__(self, reply):
        self.reply, self.calls = reply, 0

    def handle(self, task):
        self.calls += 1
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def contribution(values, weight):
    return Contribution(np.asarray(values, dtype=np.float32), weight)


def runners_for(replies):
    return {i: TaskRunner(f"node-{i}", FixedLogic(r), NoSnapshots()) for i, r in enumerate(replies)}


def test_weighted_values_are_divided_by_the_weight_unit():
    secure = SecureContribution("node-0")
    secure.begin(SessionParams(b"s" * 16, 0, CONFIG, weight_unit=4.0))
    x, weight, reason = secure.masking_input(contribution([4, -8, 2, 0, 1, 3], 2.0))
    assert x.dtype == np.float64 and reason == ""
    np.testing.assert_array_equal(x, [1, -2, 0.5, 0, 0.25, 0.75])
    assert weight == 0.5


@pytest.mark.parametrize("reply, why", [
    (Skip("nan in update"), "nan in update"),
    (TrainReport(3, 0.1), "not a contribution"),
    (contribution([1, 2], 1.0), "shape"),
    (contribution([np.inf, 0, 0, 0, 0, 0], 1.0), "non-finite"),
    (contribution([0] * DIM, 9.0), "weight"),  # w / W above max_weight
])
def test_an_unusable_reply_masks_zeros_with_weight_zero(reply, why):
    secure = SecureContribution("node-0")
    secure.begin(SessionParams(b"s" * 16, 0, CONFIG, weight_unit=4.0))
    x, weight, reason = secure.masking_input(reply)
    assert why in reason and weight == 0.0
    np.testing.assert_array_equal(x, np.zeros(DIM))


def test_a_skip_stays_in_the_session_with_weight_zero():
    values = {0: [1, 2, 3, 4, 5, 6], 1: [-1, 0.5, 0, 2, 2, 2]}
    replies = [contribution(values[0], 2.0), contribution(values[1], 1.0), Skip("nan in update")]
    coordinator = SecureCoordinator(CONFIG, runners_for(replies), weight_unit=4.0)
    result, masked = coordinator.step(lambda i: TASK)
    assert result.survivors == (0, 1, 2) and result.dropped == ()
    expected = (np.array(values[0]) + np.array(values[1])) / 4.0
    assert np.abs(result.total - expected).max() <= result.error_bound
    assert result.weight == pytest.approx(3.0 / 4.0, abs=1e-6)
    assert masked[2].masked.skip_reason == "nan in update"


def test_a_failing_task_masks_zeros_instead_of_dropping_out():
    replies = [contribution([1] * DIM, 1.0), contribution([2] * DIM, 1.0), RuntimeError("boom")]
    coordinator = SecureCoordinator(CONFIG, runners_for(replies), weight_unit=2.0)
    result, masked = coordinator.step(lambda i: TASK)
    assert result.survivors == (0, 1, 2)
    np.testing.assert_allclose(result.total, np.full(DIM, 1.5), atol=result.error_bound)
    assert "RuntimeError: boom" in masked[2].masked.skip_reason


def test_begin_with_the_same_session_keeps_the_client_for_the_next_block():
    runners = runners_for([contribution([i] * DIM, 1.0) for i in range(3)])
    coordinator = SecureCoordinator(CONFIG, runners, weight_unit=1.0)  # one step per block
    coordinator.step(lambda i: TASK)
    clients = {i: runner.secure.client for i, runner in runners.items()}
    result, _ = coordinator.step(lambda i: TASK)  # second block: SecAggBegin again
    assert all(runners[i].secure.client is clients[i] for i in runners)
    assert result.step == 1 and runners[0].secure.client.block == 1
    np.testing.assert_allclose(result.total, np.full(DIM, 3.0), atol=result.error_bound)


def test_begin_with_a_new_session_replaces_the_client():
    secure = SecureContribution("node-0")
    secure.begin(SessionParams(b"a" * 16, 0, CONFIG, 1.0))
    first = secure.client
    secure.begin(SessionParams(b"b" * 16, 0, CONFIG, 1.0))
    assert secure.client is not first and secure.session_id == b"b" * 16


def test_a_session_id_once_left_is_never_begun_again():
    """begin(A), begin(B), begin(A): a fresh client of A would sign (A, step 0) a second time
    with the node's identity key (two lists of one step endorsed by an honest node). The node
    refuses with a Skip, the refusal the coordinator counts; B runs on, and a new id still begins."""
    runner = TaskRunner("node-0", FixedLogic(contribution([1] * DIM, 1.0)), NoSnapshots())

    def begin(sid, task_id):
        return runner.run(pb.Task(task_id=task_id, secagg_begin=begin_message(CONFIG, sid, 0, 1.0)),
                          "m")

    assert begin(b"a" * 16, "1").WhichOneof("body") == "secagg_message"
    assert begin(b"b" * 16, "2").WhichOneof("body") == "secagg_message"
    b_client = runner.secure.client
    again = begin(b"a" * 16, "3")
    assert again.WhichOneof("body") == "skip"
    assert "SecureTaskError" in again.skip.reason and "already started" in again.skip.reason
    assert runner.secure.client is b_client and runner.secure.session_id == b"b" * 16
    assert begin(b"c" * 16, "4").WhichOneof("body") == "secagg_message"


def test_the_used_session_ids_are_all_kept():
    used = UsedSessions()
    secure = SecureContribution("node-0", used_sessions=used)
    for sid in (b"a" * 16, b"b" * 16, b"c" * 16):
        secure.begin(SessionParams(sid, 0, CONFIG, 1.0))
    assert used.ids == (b"a" * 16, b"b" * 16, b"c" * 16)  # none forgotten (client_node.used_sessions)
    with pytest.raises(SecureTaskError, match="already started"):
        secure.begin(SessionParams(b"a" * 16, 0, CONFIG, 1.0))


def test_a_node_rebuilt_from_its_state_dir_refuses_a_session_its_previous_process_began(tmp_path):
    """The restart hole: a node process that began A and is restarted (a new SecureContribution
    from the same state dir) must still refuse A, with the same Skip as in one process."""
    path = tmp_path / "node-0.sessions"

    def begin(runner, sid, task_id):
        return runner.run(pb.Task(task_id=task_id, secagg_begin=begin_message(CONFIG, sid, 0, 1.0)),
                          "m")

    def incarnation():
        secure = SecureContribution("node-0", used_sessions=load_used_sessions(path))
        return TaskRunner("node-0", FixedLogic(contribution([1] * DIM, 1.0)), NoSnapshots(), secure)

    first = incarnation()
    assert begin(first, b"a" * 16, "1").WhichOneof("body") == "secagg_message"
    restarted = incarnation()
    again = begin(restarted, b"a" * 16, "2")
    assert again.WhichOneof("body") == "skip" and "already started" in again.skip.reason
    assert restarted.secure.client is None  # nothing of A was begun or signed again
    assert begin(restarted, b"b" * 16, "3").WhichOneof("body") == "secagg_message"
    assert load_used_sessions(path).ids == (b"a" * 16, b"b" * 16)


def test_the_session_id_is_on_disk_before_the_begin_is_answered(tmp_path, monkeypatch):
    """The AdvertiseKeys answer is made only once the id is recorded: a crash after the answer
    left must not leave a restarted node that forgot it."""
    path = tmp_path / "node-0.sessions"
    secure = SecureContribution("node-0", used_sessions=load_used_sessions(path))
    on_disk_when_answered = []
    advertise = secure_contribution.SecAggClient.advertise_keys

    def recording_advertise(client):
        on_disk_when_answered.append(load_used_sessions(path).ids)
        return advertise(client)

    monkeypatch.setattr(secure_contribution.SecAggClient, "advertise_keys", recording_advertise)
    secure.begin(SessionParams(b"a" * 16, 0, CONFIG, 1.0))
    assert on_disk_when_answered == [(b"a" * 16,)]


def test_a_session_that_cannot_be_recorded_is_refused_not_begun(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state dir should be")
    used = UsedSessions(path=blocker / "node-0.sessions")
    runner = TaskRunner("node-0", FixedLogic(contribution([1] * DIM, 1.0)), NoSnapshots(),
                        SecureContribution("node-0", used_sessions=used))
    reply = runner.run(pb.Task(task_id="1", secagg_begin=begin_message(CONFIG, b"a" * 16, 0, 1.0)), "m")
    assert reply.WhichOneof("body") == "skip" and "cannot record secure session" in reply.skip.reason
    assert runner.secure.client is None and b"a" * 16 not in used


def test_a_session_id_of_the_wrong_length_is_refused():
    with pytest.raises(SecureTaskError, match="16 bytes"):
        SecureContribution("node-0").begin(SessionParams(b"short", 0, CONFIG, 1.0))


def test_begin_may_not_change_a_running_sessions_parameters():
    secure = SecureContribution("node-0")
    secure.begin(SessionParams(b"a" * 16, 0, CONFIG, 1.0))
    with pytest.raises(SecureTaskError, match="changed the parameters"):
        secure.begin(SessionParams(b"a" * 16, 0, CONFIG, 2.0))


def test_a_task_for_another_session_is_refused_before_any_work():
    logic = FixedLogic(contribution([1] * DIM, 1.0))
    runner = TaskRunner("node-0", logic, NoSnapshots())
    runner.run(pb.Task(task_id="b", secagg_begin=begin_message(CONFIG, b"a" * 16, 0, 1.0)), "m")
    secure = pb.SecureStep(session_id=b"z" * 16, step=0)
    result = runner.run(pb.Task(task_id="t", sequence=5, secure=secure, **TASK), "m")
    assert result.WhichOneof("body") == "skip" and result.sequence == 5
    assert "SecureTaskError" in result.skip.reason and logic.calls == 0


def test_a_secure_task_before_any_session_is_a_skip():
    runner = TaskRunner("node-0", FixedLogic(contribution([1] * DIM, 1.0)), NoSnapshots())
    secure = pb.SecureStep(session_id=b"z" * 16, step=0)
    result = runner.run(pb.Task(task_id="t", secure=secure, **TASK), "m")
    assert "no secure session" in result.skip.reason


def test_a_secagg_protocol_error_is_a_skip():
    runner = TaskRunner("node-0", FixedLogic(None), NoSnapshots())
    runner.run(pb.Task(task_id="b", secagg_begin=begin_message(CONFIG, b"a" * 16, 0, 1.0)), "m")
    result = runner.run(pb.Task(task_id="k", key_directory=b"\x00garbage"), "m")
    assert result.WhichOneof("body") == "skip" and "Malformed" in result.skip.reason


def test_a_session_listing_another_node_at_this_index_is_refused():
    runner = TaskRunner("node-0", FixedLogic(None), NoSnapshots())
    begin = begin_message(CONFIG, b"a" * 16, 1, 1.0, members=("node-0", "node-9", "node-2"))
    result = runner.run(pb.Task(task_id="b", secagg_begin=begin), "m")
    assert "node-9" in result.skip.reason and runner.secure.client is None


def test_zero_degree_and_scale_mean_the_library_defaults():
    params = session_params(begin_message(CONFIG, b"a" * 16, 2, 3.0, members=("a", "b", "c")))
    assert params.config == CONFIG and params.client_index == 2
    assert params.weight_unit == 3.0 and params.members == ("a", "b", "c")


def test_a_plain_task_logic_failure_is_a_skip_and_an_empty_task_too():
    runner = TaskRunner("node-0", FixedLogic(ValueError("bad")), NoSnapshots())
    result = runner.run(pb.Task(task_id="t", **TASK), "m")
    assert result.skip.reason == "ValueError: bad"
    assert runner.run(pb.Task(task_id="e"), "m").WhichOneof("body") == "skip"
