"""Hostile input over real gRPC on loopback: deeply nested secagg bytes, non-finite evaluation
reports, strings that would forge log lines, and inputs of any size echoed back.

Each is refused with INVALID_ARGUMENT and a short one-line message (or cleaned before it reaches
a log or a metric), and the run then completes with every node in every sum.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest
from service_helpers import Code, assert_refused, metrics, serve, serving, tiny_config
from test_service_bad_input import assert_round_intact, at, copy_result, enter_all

from protos import serde
from protos.codream.v1 import codream_pb2 as pb
from secagg.messages import Header, KeyDirectory

pytestmark = pytest.mark.integration

DEPTH = 5000  # levels: several stack frames each for a recursive decoder, far past the limit


@pytest.fixture
def secure(tmp_path):
    with serving(tiny_config(tmp_path / "run", clients=3)) as served:
        yield served


def finish(served, nodes, intercept=None) -> dict:
    served.start_run()
    serve(nodes, intercept, done=served.finished)
    served.wait_run()
    return metrics(served.config.out)["rounds"][-1]


def nested_directory(depth: int) -> bytes:
    """A KeyDirectory whose one entry is a KeyDirectory whose one entry is ... `depth` deep."""
    empty = KeyDirectory(Header(bytes(16), 0, 0), ()).to_bytes()
    data = empty
    for _ in range(depth):
        data = empty[:-4] + (1).to_bytes(4, "big") + len(data).to_bytes(4, "big") + data
    return data


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (and RFC 8259) do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# ---- (g) nesting ---------------------------------------------------------------------------------
def test_a_key_directory_nested_thousands_deep_is_invalid_argument_with_a_short_message(secure):
    assert DEPTH > sys.getrecursionlimit()
    nodes = enter_all(secure)

    def check(node, task, good):
        bad = copy_result(good)
        bad.secagg_message = nested_directory(DEPTH)
        error = assert_refused(lambda: node.submit(bad), Code.INVALID_ARGUMENT,
                               "expected ShareKeys, got KeyDirectory")
        assert len(error.details()) < 200 and "\n" not in error.details()

    intercept = at("node-1", lambda task: task.WhichOneof("body") == "key_directory", check)
    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert intercept.ran


# ---- (i) evaluation reports ------------------------------------------------------------------
BAD_REPORTS = {
    "nan-accuracy": (dict(accuracy=math.nan, loss=1.0, num_samples=10), "accuracy must be in [0, 1]"),
    "accuracy-above-1": (dict(accuracy=1.5, loss=1.0, num_samples=10), "accuracy must be in [0, 1]"),
    "infinite-loss": (dict(accuracy=0.5, loss=math.inf, num_samples=10), "loss must be finite"),
    "negative-samples": (dict(accuracy=0.5, loss=1.0, num_samples=-1), "num_samples must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD_REPORTS))
def test_a_bad_evaluation_report_is_refused_and_metrics_json_stays_strict(secure, case):
    fields, phrase = BAD_REPORTS[case]
    nodes = enter_all(secure)

    def check(node, task, good):
        bad = copy_result(good)
        bad.eval_report.CopyFrom(pb.EvalReport(**fields))
        assert_refused(lambda: node.submit(bad), Code.INVALID_ARGUMENT, phrase)

    intercept = at("node-2", lambda task: task.WhichOneof("body") == "evaluate", check)
    assert_round_intact(finish(secure, nodes, intercept), nodes)
    assert intercept.ran
    strict_json((Path(secure.config.out) / "metrics.json").read_text())


def test_the_bare_report_would_have_put_nan_into_metrics_json():
    """The unpatched path: json.dumps writes NaN, which a strict parser refuses."""
    with pytest.raises(ValueError, match="NaN"):
        strict_json(json.dumps({"accuracy": math.nan}))
    with pytest.raises(serde.WireError, match="accuracy"):
        serde.reply_from_proto(pb.TaskResult(eval_report=pb.EvalReport(accuracy=math.nan)))


# ---- node-provided strings --------------------------------------------------------------------
def test_a_model_name_with_a_newline_cannot_forge_a_log_line(secure, caplog):
    forged = "mlp\n2030-01-01 INFO coordinator: node node-9 ready" + "\u202e" + "x" * 5000
    node = secure.node("node-0")
    node.join()
    with caplog.at_level(logging.INFO):
        secure.service.federation.ready(  # what the servicer hands on for the Ready call
            "node-0", pb.ReadyRequest(member_id=node.member_id, weight=1.0, num_samples=1,
                                      model=forged, device="cpu\r\nforged",
                                      input_shape=(1, 8, 8), num_classes=10))
    member = secure.service.membership.get(node.member_id)
    assert "\n" not in member.model and "\u202e" not in member.model
    assert len(member.model) < 300 and member.model.startswith("mlp2030-01-01")
    assert member.device == "cpuforged"
    for record in caplog.records:
        assert "\n" not in record.getMessage()


def test_a_huge_string_is_not_echoed_back_in_a_status(secure):
    node = secure.node("node-0").enter()
    result = pb.TaskResult(member_id=node.member_id, task_id="t" * 100_000 + "\nforged", sequence=7)
    result.ack.SetInParent()
    error = assert_refused(lambda: node.submit(result), Code.FAILED_PRECONDITION, "no open task")
    assert len(error.details()) < 500 and "\n" not in error.details()


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"), ("a\nb\r\x00c\x1b[31m", "abc[31m"),
    ("\u2028line\u2029", "line"), ("x" * 201, "x" * 200 + "… (201 characters)"),
])
def test_printable_strips_controls_and_caps(text, expected):
    assert serde.printable(text) == expected
