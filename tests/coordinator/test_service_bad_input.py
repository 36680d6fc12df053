"""The coordinator service against bad nodes, over real gRPC on loopback.

Each bad input must be refused with the right status code and a message that says what was
wrong, and must leave the round as it was: the task stays open, the good result that follows
is accepted, and the run completes with every well-behaved node in every sum.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading

import grpc
import numpy as np
import pytest
from scipy import stats
from service_helpers import (
    CALL_TIMEOUT,
    DREAM_SIZE,
    Code,
    MetadataInterceptor,
    RawNode,
    SumRecorder,
    assert_refused,
    metrics,
    serve,
    serving,
    tiny_config,
)

from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK, NodeDaemon
from client_node.node_options import NodeOptions
from coordinator.network_transport import Timeouts
from protos.codream.v1 import codream_pb2 as pb
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.serde import PROTOCOL
from secagg import decode
from secagg.messages import MaskedInput, ShareKeys, UnmaskResponse

pytestmark = pytest.mark.integration

FIRST_STEP = "r1/b0/s0"  # the first summed task: dream step 0 of round 1
SECOND_STEP = "r1/b0/s1"  # secure session step 1 (so step 0 is a past step)
LABELS = "r1/b0/labels"  # soft labels: another length, so another secure session


@pytest.fixture
def plain(tmp_path):
    """Two nodes, secure aggregation off: clear contributions."""
    with serving(tiny_config(tmp_path / "run", **{"secagg.enabled": False})) as served:
        yield served


@pytest.fixture
def secure(tmp_path):
    """Three nodes under secure aggregation (the default)."""
    with serving(tiny_config(tmp_path / "run", clients=3)) as served:
        yield served


def enter_all(served) -> list[RawNode]:
    return [served.node(f"node-{i}").enter() for i in range(served.config.clients)]


def finish(served, nodes, intercept=None) -> dict:
    """Runs to the end with `nodes` answering; the last round's metrics."""
    served.start_run()
    serve(nodes, intercept, done=served.finished)
    served.wait_run()
    return metrics(served.config.out)["rounds"][-1]


def assert_round_intact(last: dict, nodes: list[RawNode]) -> None:
    assert last["excluded"] == {}
    assert last["fewest_clients_per_dream_step"] == len(nodes)
    assert sorted(last["clients"]) == sorted(n.node_id for n in nodes)


def copy_result(result: pb.TaskResult) -> pb.TaskResult:
    out = pb.TaskResult()
    out.CopyFrom(result)
    return out


def at(node_id: str, task_id, check):
    """An intercept that runs `check(node, task, good)` once, for `node_id` on `task_id`
    (a task id, or a predicate on the task)."""
    ran = []
    matches = task_id if callable(task_id) else (lambda task: task.task_id == task_id)

    def intercept(node, task, good):
        if node.node_id == node_id and matches(task) and not ran:
            ran.append(True)
            return bool(check(node, task, good))
        return False

    intercept.ran = ran
    return intercept


class GoodResults:
    """The good results of the task under test, by node; a node that has not pulled it yet is
    made to pull and submit it now (broadcasts post to every member at once), so a case can
    always use another node's genuine result, whatever the round-robin order."""

    def __init__(self, nodes: list[RawNode], task_id) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.matches = task_id if callable(task_id) else (lambda task: task.task_id == task_id)
        self.results: dict[str, pb.TaskResult] = {}

    def record(self, node: RawNode, task: pb.Task, good: pb.TaskResult) -> None:
        if self.matches(task):
            self.results.setdefault(node.node_id, good)

    def __getitem__(self, node_id: str) -> pb.TaskResult:
        if node_id not in self.results:
            node = self.nodes[node_id]
            task = node.pull(wait=CALL_TIMEOUT)
            assert self.matches(task), task
            self.results[node_id] = node.answer(task)
            node.submit(self.results[node_id])
        return self.results[node_id]


# ---- credentials ------------------------------------------------------------------------------
def _no_metadata(served):
    return served.bare_channel(), "no node id"


def _no_token(served):
    return served.channel("node-0", token=None), "no bearer token for node 'node-0'"


def _wrong_token(served):
    return served.channel("node-0", token="not-the-token"), "wrong token for node 'node-0'"


def _other_nodes_token(served):
    return served.channel("node-0", token=served.tokens["node-1"]), "wrong token for node 'node-0'"


def _not_bearer(served):
    metadata = [("x-codream-node", "node-0"), ("authorization", f"Basic {served.tokens['node-0']}")]
    return (grpc.intercept_channel(served.bare_channel(), MetadataInterceptor(metadata)),
            "must be 'Bearer <token>'")


def _two_node_ids(served):
    metadata = [("x-codream-node", "node-0"), ("x-codream-node", "node-1"),
                ("authorization", f"Bearer {served.tokens['node-0']}")]
    return (grpc.intercept_channel(served.bare_channel(), MetadataInterceptor(metadata)),
            "'x-codream-node' metadata given 2 times")


def _off_roster_without_token(served):
    return served.channel("mallory", token="guess"), "unknown node 'mallory'"


@pytest.mark.parametrize("bad_channel", [
    _no_metadata, _no_token, _wrong_token, _other_nodes_token, _not_bearer, _two_node_ids,
    _off_roster_without_token,
], ids=lambda f: f.__name__.strip("_"))
def test_bad_credential_is_unauthenticated_on_every_call(plain, bad_channel):
    """Join, and even a PullTask/SubmitResult that knows node-0's member id and open task."""
    nodes = enter_all(plain)
    channel, phrase = bad_channel(plain)
    impostor = pb_grpc.CoordinatorStub(channel)

    def check(node, task, good):
        secrets = tuple(plain.tokens.values())
        calls = [
            lambda: impostor.Join(pb.JoinRequest(node_id="node-0", protocol=PROTOCOL), timeout=CALL_TIMEOUT),
            lambda: impostor.PullTask(pb.PullTaskRequest(member_id=node.member_id), timeout=CALL_TIMEOUT),
            lambda: impostor.SubmitResult(good, timeout=CALL_TIMEOUT),
        ]
        for call in calls:
            error = assert_refused(call, Code.UNAUTHENTICATED, phrase)
            assert not any(secret in error.details() for secret in secrets)  # never echoes a token

    intercept = at("node-0", FIRST_STEP, check)
    assert_round_intact(finish(plain, nodes, intercept), nodes)
    assert intercept.ran


def test_node_with_a_token_but_off_the_roster_is_permission_denied(tmp_path):
    config = tiny_config(tmp_path / "run", **{"secagg.enabled": False})
    with serving(config, extra_tokens=("node-9",)) as served:
        stranger = served.node("node-9")
        assert_refused(stranger.join, Code.PERMISSION_DENIED, "'node-9' is not on this federation's roster")
        nodes = enter_all(served)
        assert_round_intact(finish(served, nodes), nodes)


def test_membership_of_another_node_is_permission_denied(plain):
    """node-1, authenticated as itself, cannot pull or submit under node-0's member id."""
    nodes = enter_all(plain)
    thief = nodes[1]

    def check(node, task, good):
        assert_refused(lambda: thief.stub.PullTask(pb.PullTaskRequest(member_id=node.member_id),
                                                   timeout=CALL_TIMEOUT),
                       Code.PERMISSION_DENIED, "membership belongs to node-0, not node-1")
        assert_refused(lambda: thief.submit(good), Code.PERMISSION_DENIED,
                       "membership belongs to node-0, not node-1")

    intercept = at("node-0", FIRST_STEP, check)
    assert_round_intact(finish(plain, nodes, intercept), nodes)
    assert intercept.ran


def test_join_naming_another_node_is_invalid_argument(plain):
    node = plain.node("node-0")
    assert_refused(lambda: node.join(node_id="node-1"), Code.INVALID_ARGUMENT,
                   "join names node 'node-1' but the credential is 'node-0'")
    nodes = [node.enter(), plain.node("node-1").enter()]
    assert_round_intact(finish(plain, nodes), nodes)


# ---- membership -------------------------------------------------------------------------------
def test_second_join_of_a_live_member_is_already_exists(plain):
    first = plain.node("node-0").enter()
    twin = plain.node("node-0")
    assert_refused(twin.join, Code.ALREADY_EXISTS, "node 'node-0' already has a live membership")
    # The refused join changed nothing: the first membership still works.
    assert first.pull(wait=0).WhichOneof("body") is None
    # Once its heartbeat stream ends the membership is over, and the node may join again.
    first.leave()
    assert_refused(lambda: first.pull(wait=0), Code.FAILED_PRECONDITION, "unknown or ended membership")
    nodes = [twin.enter(), plain.node("node-1").enter()]
    assert twin.member_id != first.member_id
    assert_round_intact(finish(plain, nodes), nodes)


def test_bad_ready_is_invalid_argument(plain):
    node = plain.node("node-0")
    node.join()
    for weight in (0.0, -1.0, math.nan, math.inf):
        phrase = f"got {weight}"
        assert_refused(lambda weight=weight: node.ready(weight=weight), Code.INVALID_ARGUMENT,
                       "weight must be finite and > 0", phrase)
    negative = pb.ReadyRequest(member_id=node.member_id, weight=1.0, num_samples=-1)
    assert_refused(lambda: node.stub.Ready(negative, timeout=CALL_TIMEOUT), Code.INVALID_ARGUMENT,
                   "num_samples must be >= 0, got -1")
    assert_refused(lambda: node.stub.Ready(pb.ReadyRequest(member_id="f" * 32, weight=1.0),
                                           timeout=CALL_TIMEOUT),
                   Code.FAILED_PRECONDITION, "unknown or ended membership")
    node.ready()
    node.start_heartbeat()
    nodes = [node, plain.node("node-1").enter()]
    assert_round_intact(finish(plain, nodes), nodes)


def test_heartbeat_under_another_membership_is_refused_and_ends_nothing(plain):
    victim, thief = plain.node("node-0").enter(), plain.node("node-1").enter()

    def beats(member_id):
        return iter([pb.Beat(member_id=member_id, sequence=0), pb.Beat(member_id=member_id, sequence=1)])

    assert_refused(lambda: thief.stub.Heartbeat(beats(victim.member_id), timeout=CALL_TIMEOUT),
                   Code.PERMISSION_DENIED, "membership belongs to node-0, not node-1")
    assert_refused(lambda: thief.stub.Heartbeat(beats("f" * 32), timeout=CALL_TIMEOUT),
                   Code.FAILED_PRECONDITION, "unknown or ended membership")
    mixed = iter([pb.Beat(member_id=thief.member_id), pb.Beat(member_id=victim.member_id)])
    assert_refused(lambda: thief.stub.Heartbeat(mixed, timeout=CALL_TIMEOUT),
                   Code.INVALID_ARGUMENT, "already has a heartbeat stream")
    # Neither membership is touched: a second stream is refused before it counts for anything.
    assert victim.pull(wait=0).WhichOneof("body") is None
    assert thief.pull(wait=0).WhichOneof("body") is None
    thief.leave()
    nodes = [victim, plain.node("node-1").enter()]
    assert_round_intact(finish(plain, nodes), nodes)


@pytest.mark.parametrize("protocol", ["codream.v0", "", "codream.v1 ", "CODREAM.V1"])
def test_wrong_protocol_is_invalid_argument(plain, protocol):
    node = plain.node("node-0")
    assert_refused(lambda: node.join(protocol=protocol), Code.INVALID_ARGUMENT,
                   f"protocol {protocol!r} is not supported", "codream.v1")
    nodes = [node.enter(), plain.node("node-1").enter()]
    assert_round_intact(finish(plain, nodes), nodes)


# ---- clear contributions (secure aggregation off) ---------------------------------------------
def _values(result: pb.TaskResult) -> pb.Tensor:
    return result.contribution.weighted_values


def _shorter(r):
    _values(r).shape[:] = [DREAM_SIZE - 1]
    _values(r).data = _values(r).data[:-4]


def _two_dimensional(r):
    _values(r).shape[:] = [8, DREAM_SIZE // 8]


def _float64(r):
    t = _values(r)
    t.dtype, t.data = "float64", np.frombuffer(t.data, "<f4").astype("<f8").tobytes()


def _uint32(r):
    _values(r).dtype = "uint32"


def _unknown_dtype(r):
    _values(r).dtype = "bfloat16"


def _bytes_short_of_shape(r):
    _values(r).data = _values(r).data[:-4]


def _poisoned(value):
    def mutate(r):
        values = np.frombuffer(_values(r).data, "<f4").copy()
        values[7] = value
        _values(r).data = values.tobytes()
    return mutate


def _weight(value):
    def mutate(r):
        r.contribution.weight = value
    return mutate


def _eval_report(r):
    r.eval_report.accuracy = 1.0


def _masked(r):
    r.masked.masked_input = b"SA" + bytes(40)


def _no_body(r):
    r.ClearField("contribution")


@pytest.mark.parametrize("mutate, phrase", [
    (_shorter, "shape must be (512,), got (511,)"),
    (_two_dimensional, "shape must be (512,), got (8, 64)"),
    (_float64, "dtype must be float32, got float64"),
    (_uint32, "dtype must be float32, got uint32"),
    (_unknown_dtype, "unknown dtype 'bfloat16'"),
    (_bytes_short_of_shape, "2044 bytes do not hold shape (512,) of float32"),
    (_poisoned(np.nan), "1 non-finite values"),
    (_poisoned(np.inf), "1 non-finite values"),
    (_weight(0.0), "weight must be finite and > 0"),
    (_weight(math.nan), "weight must be finite and > 0"),
    (_eval_report, "expected a contribution, got EvalReport"),
    (_masked, "secure aggregation is off"),
    (_no_body, "no method-level body"),
], ids=["shorter", "2d", "float64", "uint32", "bfloat16", "bytes-short", "nan", "inf",
        "weight-0", "weight-nan", "wrong-kind", "masked", "no-body"])
def test_bad_contribution_is_invalid_argument_and_the_task_stays_open(plain, monkeypatch, mutate, phrase):
    sums = SumRecorder().install(monkeypatch)
    nodes = enter_all(plain)

    def check(node, task, good):
        bad = copy_result(good)
        mutate(bad)
        assert_refused(lambda: node.submit(bad), Code.INVALID_ARGUMENT, phrase)

    intercept = at("node-0", FIRST_STEP, check)
    assert_round_intact(finish(plain, nodes, intercept), nodes)
    assert intercept.ran
    # Only the good contribution reached the sum.
    summed = sums.replies[FIRST_STEP].by_node
    for node in nodes:
        np.testing.assert_array_equal(summed[node.node_id].weighted_values,
                                      node.logic.contributions[FIRST_STEP].weighted_values)
    total = sums.replies[FIRST_STEP].total
    assert total.contributors == ("node-0", "node-1") and total.weight == 2.0


def test_oversized_result_is_resource_exhausted(tmp_path):
    config = tiny_config(tmp_path / "run", **{"secagg.enabled": False})
    with serving(config, max_message_bytes=2**20) as served:
        nodes = enter_all(served)

        def check(node, task, good):
            bad = copy_result(good)
            big = np.ones(300_000, np.float32)  # 1.2 MB > 1 MiB
            _values(bad).shape[:] = [big.size]
            _values(bad).data = big.tobytes()
            assert bad.ByteSize() > 2**20
            assert_refused(lambda: node.submit(bad), Code.RESOURCE_EXHAUSTED, "larger than max")

        intercept = at("node-0", FIRST_STEP, check)
        assert_round_intact(finish(served, nodes, intercept), nodes)
        assert intercept.ran


def test_replayed_late_or_unknown_result_is_failed_precondition(plain):
    nodes = enter_all(plain)
    accepted: dict[str, pb.TaskResult] = {}

    def first(node, task, good):
        node.submit(good)
        accepted["step"] = good
        assert_refused(lambda: node.submit(good), Code.FAILED_PRECONDITION,
                       f"no open task with sequence {good.sequence}", "replayed")
        unknown = copy_result(good)
        unknown.sequence = 10**9
        assert_refused(lambda: node.submit(unknown), Code.FAILED_PRECONDITION,
                       f"no open task with sequence {10**9}")
        return True

    def second(node, task, good):
        # A result for a past task (its gather closed) while the next one is open.
        assert_refused(lambda: node.submit(accepted["step"]), Code.FAILED_PRECONDITION, FIRST_STEP)
        wrong_id = copy_result(good)
        wrong_id.task_id = FIRST_STEP
        assert_refused(lambda: node.submit(wrong_id), Code.INVALID_ARGUMENT,
                       f"sequence {good.sequence} is task '{SECOND_STEP}', not '{FIRST_STEP}'")

    one, two = at("node-0", FIRST_STEP, first), at("node-0", SECOND_STEP, second)
    last = finish(plain, nodes, lambda *a: one(*a) or two(*a))
    assert_round_intact(last, nodes)
    assert one.ran and two.ran


# ---- masked inputs (secure aggregation on) ----------------------------------------------------
def _reencoded(good: pb.TaskResult, masked=None, **header) -> bytes:
    message = decode(good.masked.masked_input, MaskedInput)
    return MaskedInput(dataclasses.replace(message.header, **header),
                       message.masked if masked is None else masked).to_bytes()


def _set_masked(data_of):
    def mutate(bad, good, goods):
        bad.masked.masked_input = data_of(good, goods)
    return mutate


def _clear_contribution(bad, good, goods):
    bad.contribution.weighted_values.CopyFrom(
        pb.Tensor(dtype="float32", shape=[DREAM_SIZE], data=bytes(4 * DREAM_SIZE)))
    bad.contribution.weight = 1.0


MASKED_CASES = {
    "shorter": (_set_masked(lambda g, _: _reencoded(g, decode(g.masked.masked_input).masked[:-1])),
                Code.INVALID_ARGUMENT, "masked input has 513 elements, expected 514"),
    "truncated": (_set_masked(lambda g, _: g.masked.masked_input[:-3]),
                  Code.INVALID_ARGUMENT, "message truncated"),
    "trailing": (_set_masked(lambda g, _: g.masked.masked_input + b"\0"),
                 Code.INVALID_ARGUMENT, "1 trailing bytes"),
    "not-secagg": (_set_masked(lambda g, _: bytes(64)), Code.INVALID_ARGUMENT, "bad magic"),
    "version": (_set_masked(lambda g, _: g.masked.masked_input[:2] + b"\x09" + g.masked.masked_input[3:]),
                Code.INVALID_ARGUMENT, "wire version 9"),
    "clear": (_clear_contribution, Code.INVALID_ARGUMENT,
              "expected a masked result under secure aggregation, got contribution"),
    "other-session": (_set_masked(lambda g, _: _reencoded(g, session_id=os.urandom(16))),
                      Code.FAILED_PRECONDITION, "MaskedInput: message from another session"),
    "past-step": (_set_masked(lambda g, _: _reencoded(g, index=0)),
                  Code.FAILED_PRECONDITION, "MaskedInput: message for 0, expected 1"),
    "another-nodes-input": (_set_masked(lambda g, goods: goods["node-0"].masked.masked_input),
                            Code.PERMISSION_DENIED, "node-1 is client 1 of this session, not 0"),
    "claims-another-index": (_set_masked(lambda g, _: _reencoded(g, client_id=2)),
                             Code.PERMISSION_DENIED, "node-1 is client 1 of this session, not 2"),
}


@pytest.mark.parametrize("case", list(MASKED_CASES))
def test_bad_masked_input_is_refused_and_the_step_stays_open(secure, monkeypatch, case):
    mutate, code, phrase = MASKED_CASES[case]
    sums = SumRecorder().install(monkeypatch)
    nodes = enter_all(secure)
    goods = GoodResults(nodes, SECOND_STEP)

    def intercept(node, task, good):
        goods.record(node, task, good)
        return check_once(node, task, good)

    def check(node, task, good):
        assert task.secure.step == 1
        bad = copy_result(good)
        mutate(bad, good, goods)
        assert_refused(lambda: node.submit(bad), code, phrase)

    check_once = at("node-1", SECOND_STEP, check)
    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert check_once.ran
    assert_secure_sum(sums, SECOND_STEP, nodes)


def test_replayed_masked_input_is_failed_precondition(secure):
    nodes = enter_all(secure)

    def check(node, task, good):
        node.submit(good)
        assert_refused(lambda: node.submit(good), Code.FAILED_PRECONDITION, "replayed")
        return True

    intercept = at("node-1", SECOND_STEP, check)
    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert intercept.ran


def test_a_genuine_masked_input_of_a_past_step_or_session_is_failed_precondition(secure):
    """Replays of the node's own, once-valid masked inputs, re-addressed to the open task."""
    nodes = enter_all(secure)
    own: dict[str, pb.TaskResult] = {}

    def readdressed(old: pb.TaskResult, task: pb.Task) -> pb.TaskResult:
        out = copy_result(old)
        out.task_id, out.sequence = task.task_id, task.sequence
        return out

    def intercept(node, task, good):
        if node.node_id != "node-1":
            return False
        if task.task_id == SECOND_STEP:  # dream session, step 1: replay step 0's input
            assert_refused(lambda: node.submit(readdressed(own[FIRST_STEP], task)),
                           Code.FAILED_PRECONDITION, "MaskedInput: message for 0, expected 1")
        if task.task_id == LABELS:  # a new session (another length): replay the dream session's
            assert_refused(lambda: node.submit(readdressed(own[SECOND_STEP], task)),
                           Code.FAILED_PRECONDITION, "MaskedInput: message from another session")
        own[task.task_id] = good
        return False

    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert {FIRST_STEP, SECOND_STEP, LABELS} <= set(own)


def _advertise_of_node_0(bad, good, goods):
    bad.secagg_message = goods["node-0"].secagg_message


def _share_keys_of_another_session(bad, good, goods):
    message = decode(good.secagg_message, ShareKeys)
    header = dataclasses.replace(message.header, session_id=os.urandom(16))
    bad.secagg_message = ShareKeys(header, message.ciphertexts).to_bytes()


def _masked_for_unmask(bad, good, goods):
    bad.masked.masked_input = good.secagg_message


SECAGG_CASES = {
    "advertise-as-node-0": ("secagg_begin", _advertise_of_node_0, Code.PERMISSION_DENIED,
                            "node-1 is client 1 of this session, not 0"),
    "share-keys-other-session": ("key_directory", _share_keys_of_another_session,
                                 Code.FAILED_PRECONDITION, "ShareKeys: message from another session"),
    "unmask-wrong-body": ("unmask_request", _masked_for_unmask, Code.INVALID_ARGUMENT,
                          "expected a secagg_message result under secure aggregation, got masked"),
}


@pytest.mark.parametrize("case", list(SECAGG_CASES))
def test_bad_key_agreement_or_unmask_message_is_refused_and_the_round_stays_open(secure, monkeypatch,
                                                                                case):
    kind, mutate, code, phrase = SECAGG_CASES[case]
    sums = SumRecorder().install(monkeypatch)
    nodes = enter_all(secure)
    checked: list[str] = []  # the id of the first task of this kind: the one under test

    def is_checked_task(task):
        if task.WhichOneof("body") != kind:
            return False
        if not checked:
            checked.append(task.task_id)
        return task.task_id == checked[0]

    goods = GoodResults(nodes, is_checked_task)

    def check(node, task, good):
        bad = copy_result(good)
        mutate(bad, good, goods)
        assert_refused(lambda: node.submit(bad), code, phrase)

    check_once = at("node-1", is_checked_task, check)

    def intercept(node, task, good):
        goods.record(node, task, good)
        return check_once(node, task, good)

    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert check_once.ran
    assert_secure_sum(sums, FIRST_STEP, nodes)


def test_an_unmask_share_outside_the_field_is_refused_and_the_run_completes(secure, monkeypatch):
    sums = SumRecorder().install(monkeypatch)
    nodes = enter_all(secure)

    def check(node, task, good):
        response = decode(good.secagg_message, UnmaskResponse)
        out_of_field = tuple((peer, kind, b"\xff" * len(share)) for peer, kind, share in response.shares)
        bad = copy_result(good)
        bad.secagg_message = UnmaskResponse(response.header, out_of_field).to_bytes()
        assert_refused(lambda: node.submit(bad), Code.INVALID_ARGUMENT, "outside the field")

    intercept = at("node-1", f"{FIRST_STEP}/unmask", check)
    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert intercept.ran
    assert_secure_sum(sums, FIRST_STEP, nodes)


def assert_secure_sum(sums: SumRecorder, task_id: str, nodes: list[RawNode]) -> None:
    """The coordinator's aggregate is the sum of the nodes' contributions (to quantisation)."""
    (result, unit), = sums.steps[task_id]
    total = sums.replies[task_id].total
    expected = sum(n.logic.contributions[task_id].weighted_values.astype(np.float64) for n in nodes)
    assert total.contributors == tuple(n.node_id for n in nodes)
    assert np.abs(total.total - expected).max() <= result.error_bound * unit + 1e-12
    assert total.weight == pytest.approx(sum(n.logic.weight for n in nodes), rel=1e-6)


# ---- a node that never answers ----------------------------------------------------------------
def _silent(node: RawNode, stop: threading.Event) -> threading.Thread:
    """Pulls every task and answers none; leaves (ends its heartbeat) when told to shut down."""
    def run():
        while not stop.is_set():
            try:
                task = node.pull(wait=0.5)
            except grpc.RpcError:
                return
            if task.WhichOneof("body") == "shutdown":
                node.leave()
                return

    thread = threading.Thread(target=run, name=f"silent-{node.node_id}", daemon=True)
    thread.start()
    return thread


def _daemon(served, node_id: str) -> tuple[NodeDaemon, threading.Thread, list[int]]:
    options = NodeOptions(coordinator=served.target, node_id=node_id, device="cpu", pull_wait=1.0,
                          security=ChannelSecurity(token=served.tokens[node_id]))
    daemon, codes = NodeDaemon(options), []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), name=node_id, daemon=True)
    thread.start()
    return daemon, thread, codes


def _run_with_a_silent_node(out, secagg: bool) -> dict:
    """node-2 joins, heart-beats and pulls but never answers; node-0/1 are real node daemons."""
    config = tiny_config(out, clients=3, **{"secagg.enabled": secagg, "dream.global_steps": 1})
    timeouts = Timeouts(task=2, step=2, secagg_round=2)
    with serving(config, timeouts=timeouts, min_nodes=3) as served:
        silent, stop = served.node("node-2"), threading.Event()
        silent.enter()
        puller = _silent(silent, stop)
        daemons = [_daemon(served, node) for node in ("node-0", "node-1")]
        run: dict = {"error": None}
        try:
            served.start_run()
            run["summary"] = served.wait_run()
            run["rounds"] = metrics(config.out)["rounds"]
        except Exception as error:  # noqa: BLE001 — the tests report it
            run["error"] = error
        finally:
            for daemon, thread, _ in daemons:
                if run["error"] is not None:
                    daemon.stop.set()
                thread.join(CALL_TIMEOUT)
            stop.set()
            puller.join(CALL_TIMEOUT)
        run["exit_codes"] = [codes for _, _, codes in daemons]
        return run


@pytest.fixture(scope="module")
def silent_runs(tmp_path_factory):
    """Both runs at once: they mostly wait out the 2 s deadlines, so they overlap well."""
    runs: dict[str, dict] = {}

    def run(mode: str) -> None:
        out = tmp_path_factory.mktemp(f"silent-{mode}")
        runs[mode] = _run_with_a_silent_node(out, secagg=mode == "secure")

    threads = [threading.Thread(target=run, args=(mode,), name=f"silent-{mode}")
               for mode in ("clear", "secure")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


@pytest.mark.parametrize("mode", ["clear", "secure"])
def test_a_silent_node_is_left_out_and_the_run_completes(silent_runs, mode):
    run = silent_runs[mode]
    if run["error"] is not None:
        raise run["error"]
    assert run["exit_codes"] == [[EXIT_OK], [EXIT_OK]]  # the real nodes were told to shut down
    assert [sorted(r["clients"]) for r in run["rounds"]] == [["node-0", "node-1"]] * 2
    assert sorted(run["summary"]["final_client_accuracy"]) == ["node-0", "node-1"]
    last = run["rounds"][-1]
    assert last["fewest_clients_per_dream_step"] == 2  # both real nodes, in every step
    assert last["bytes"].get("node-2", {"sent": 0})["sent"] == 0  # it never sent anything
    if mode == "clear":
        assert last["excluded"] == {"node-2": "no answer before the deadline"}
    else:
        assert set(last["excluded"]) <= {"node-2"}


def test_a_silent_node_is_reported_excluded_under_secure_aggregation(silent_runs):
    run = silent_runs["secure"]
    if run["error"] is not None:
        raise run["error"]
    assert "node-2" in run["rounds"][-1]["excluded"]


# ---- the coordinator never holds an individual update -----------------------------------------
def _chi_square_p(data: bytes) -> float:
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
    return float(stats.chisquare(counts).pvalue)


def test_the_coordinator_sees_only_uniform_masked_vectors_and_unmasks_only_sums(secure, monkeypatch):
    received: dict[str, dict[str, bytes]] = {}  # node -> task id -> masked input bytes
    dispatcher = secure.service.dispatcher
    submit = dispatcher.submit

    def recording_submit(member, result):
        if result.WhichOneof("body") == "masked":
            received.setdefault(member.node_id, {})[result.task_id] = result.masked.masked_input
        return submit(member, result)

    monkeypatch.setattr(dispatcher, "submit", recording_submit)
    sums = SumRecorder().install(monkeypatch)
    # Far from uniform: every node sends the same small constant at every step.
    nodes = [secure.node(f"node-{i}", weight=1.0 + i, values=lambda task, size, i=i: np.full(
        size, 0.5 * (i + 1), np.float32)).enter() for i in range(3)]
    assert_round_intact(finish(secure, nodes), nodes)

    steps = [FIRST_STEP, SECOND_STEP]
    for node in nodes:
        vectors = [decode(received[node.node_id][step], MaskedInput).masked for step in steps]
        for vector in vectors:
            assert vector.shape == (DREAM_SIZE + 2,)
        # The same input at two steps is masked afresh: nothing in common between the vectors.
        assert np.mean(vectors[0] == vectors[1]) < 0.01
        masked = b"".join(v.astype("<u4").tobytes() for v in vectors)  # 4112 bytes, 16 a bin
        assert _chi_square_p(masked) > 0.001, node.node_id
        clear = b"".join(node.logic.contributions[s].weighted_values.tobytes() for s in steps)
        assert _chi_square_p(clear) < 1e-12  # what an unmasked input would have shown
    # What the coordinator unmasks is the sum alone, equal to the sum of the inputs.
    for step in [*steps, LABELS]:
        assert_secure_sum(sums, step, nodes)
