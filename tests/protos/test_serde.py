"""The wire converters round-trip every domain message and refuse what does not fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codream.aggregation import Contribution
from codream.messages import (
    Ack,
    AcquireKnowledge,
    DreamStep,
    EvalReport,
    Evaluate,
    FedAvgTrain,
    LoadParameters,
    Skip,
    SoftLabels,
    TrainLocal,
    TrainReport,
)
from protos import serde
from protos.codream.v1 import codream_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


TASKS = [
    TrainLocal("r0/train", 0, 3),
    DreamStep("r1/b0/s0", 1, 0, 0, 12345, (2, 1, 8, 8)),
    DreamStep("r1/b0/s1", 1, 0, 1, 12345, (2, 1, 8, 8), torch.randn(2, 1, 8, 8)),
    DreamStep("r1/b0/s2", 1, 0, 2, 12345, (2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.randn(2, 10)),
    SoftLabels("r1/b0/labels", 1, torch.randn(2, 1, 8, 8)),
    AcquireKnowledge("r1/b0/acquire", 1, torch.randn(2, 1, 8, 8), torch.randn(2, 10)),
    FedAvgTrain("r1/fedavg", 1, 1, None),
    FedAvgTrain("r2/fedavg", 2, 1, np.arange(7, dtype=np.float32)),
    LoadParameters("r1/load", 1, np.arange(7, dtype=np.float32)),
    Evaluate("r1/eval", 1),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.task_id)
def test_tasks_round_trip(task):
    wire = pb.Task.FromString(serde.task_to_proto(task).SerializeToString())
    back = serde.task_from_proto(wire)
    assert type(back) is type(task)
    for name, value in vars(task).items():
        assert _equal(value, getattr(back, name)), name


REPLIES = [TrainReport(10, 0.5), EvalReport(0.9, 0.1, 100), Ack(), Skip("non-finite"),
           Contribution(np.linspace(-1, 1, 5, dtype=np.float32), 3.0)]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_replies_round_trip(reply):
    wire = serde.reply_to_proto(reply, pb.TaskResult(task_id="t", sequence=1))
    back = serde.reply_from_proto(pb.TaskResult.FromString(wire.SerializeToString()), 5)
    assert type(back) is type(reply)
    for name, value in vars(reply).items():
        assert _equal(value, getattr(back, name)), name


def _contribution(values: np.ndarray, weight: float = 1.0) -> pb.TaskResult:
    result = pb.TaskResult(task_id="t", sequence=1)
    result.contribution.weighted_values.CopyFrom(serde.tensor_to_proto(values))
    result.contribution.weight = weight
    return result


@pytest.mark.parametrize(("values", "weight", "match"), [
    (np.zeros(4, np.float32), 1.0, "shape must be"),
    (np.zeros(5, np.float64), 1.0, "dtype must be float32"),
    (np.array([0, 1, np.nan, 0, 0], np.float32), 1.0, "non-finite"),
    (np.array([0, 1, np.inf, 0, 0], np.float32), 1.0, "non-finite"),
    (np.zeros(5, np.float32), float("nan"), "weight"),
    (np.zeros(5, np.float32), -1.0, "weight"),
])
def test_bad_contributions_are_refused_with_the_reason(values, weight, match):
    with pytest.raises(serde.WireError, match=match):
        serde.reply_from_proto(_contribution(values, weight), 5)


def test_a_tensor_whose_bytes_do_not_match_its_shape_is_refused():
    message = serde.tensor_to_proto(np.zeros((2, 3), np.float32))
    message.data = message.data[:-1]
    with pytest.raises(serde.WireError, match="do not hold"):
        serde.tensor_from_proto(message, "x")
    message = pb.Tensor(dtype="complex64", shape=[1], data=b"\0" * 8)
    with pytest.raises(serde.WireError, match="unknown dtype"):
        serde.tensor_from_proto(message, "x")


def test_dreams_of_another_shape_than_the_task_says_are_refused():
    message = serde.task_to_proto(DreamStep("s", 1, 0, 1, 1, (2, 1, 8, 8), torch.zeros(2, 1, 8, 8)))
    message.dream_step.shape[0] = 3
    with pytest.raises(serde.WireError, match="shape must be"):
        serde.task_from_proto(message)


def test_generated_code_matches_the_proto():
    """The committed generated code is what scripts/gen_protos.py makes from protos/."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
