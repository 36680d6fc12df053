"""Consensus dreams: the combined contribution, its split, the soft-target CE, by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from codream.aggregation import Contribution
from codream.config import DreamConfig, RunConfig
from codream.consensus_dreams import (
    consensus_contribution,
    consensus_targets,
    consensus_update_size,
    split_consensus_total,
)
from codream.dream_objective import DreamLossWeights, dream_loss
from codream.local_dreaming import initial_dreams, local_dream_update
from codream.messages import DreamStep
from codream.nested_config import ConfigError, build
from codream.node_logic import LocalData, NodeTaskLogic
from codream.soft_labels import aggregated_logits, soft_label_values
from codream.training import predict_logits


def test_one_sum_carries_the_dream_changes_and_the_soft_labels():
    shape = (2, 1, 1, 2)  # 4 dream values, then 2·3 scores + 3 counts (class_counts)
    assert consensus_update_size(shape, 3, "class_counts") == 4 + 6 + 3
    assert consensus_update_size(shape, 3, "samples") == 4 + 6
    a = consensus_contribution(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(shape), torch.arange(9.0))
    b = consensus_contribution(torch.full(shape, 10.0), torch.ones(9))
    changes, labels = split_consensus_total(a + b, shape)
    assert changes.shape == shape and changes.reshape(-1).tolist() == [11.0, 12.0, 13.0, 14.0]
    assert labels.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


def test_the_targets_are_the_softmax_of_the_summed_soft_labels():
    z = torch.tensor([[0.0, math.log(3.0)]])
    assert consensus_targets(z)[0].tolist() == pytest.approx([0.25, 0.75])


def test_with_probability_targets_the_confidence_term_is_their_cross_entropy():
    # One dream, two classes, a linear model with logits (2, 0): log softmax = (−log(1+e^−2),
    # −2 − log(1+e^−2)); against targets (0.25, 0.75): CE = log(1+e^−2) + 0.75·2.
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[2.0], [0.0]]))
    x = torch.ones(1, 1, 1, 1)
    weights = DreamLossWeights(entropy=1.0, bn=0.0, tv=0.0, l2=0.0)
    parts = dream_loss(model, x, weights, targets=torch.tensor([[0.25, 0.75]]))
    assert parts.entropy.item() == pytest.approx(math.log1p(math.exp(-2.0)) + 1.5, rel=1e-6)


def _node(consensus: bool = True) -> NodeTaskLogic:
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 0, 0, 2, 2, 0, 2, 0])
    config = RunConfig(dataset="digits", models=("mlp",), dream=DreamConfig(consensus=consensus))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return NodeTaskLogic("node-0", model, LocalData(x, y, x, y), config, torch.device("cpu"), 0,
                         num_classes=3)


def test_a_node_sends_its_change_towards_the_consensus_and_its_soft_labels_on_the_dreams():
    node = _node()
    shape = (4, 1, 2, 2)
    dreams = initial_dreams(5, shape)
    z = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    reply = node.handle(DreamStep("t", 1, 0, 1, 5, shape, dreams, z))
    assert isinstance(reply, Contribution) and reply.weight == 8.0
    values = torch.from_numpy(reply.weighted_values)
    assert values.shape == (consensus_update_size(shape, 3, "class_counts"),)
    changes, labels = split_consensus_total(values, shape)
    expected = local_dream_update(node.model, dreams, node.config.dream.local(), None,
                                  consensus_targets(z))
    assert torch.allclose(changes, 8.0 * expected, atol=1e-6)
    counts = torch.tensor([5, 0, 3])
    assert torch.allclose(labels, soft_label_values(predict_logits(node.model, dreams), 8.0, counts,
                                                    "class_counts"), atol=1e-6)
    # the summed labels of this one node give back its own log-probabilities for held classes
    out = aggregated_logits(labels, 8.0, 4, 3, "class_counts")
    log_p = torch.log_softmax(predict_logits(node.model, dreams), dim=1)
    assert torch.allclose(out[:, [0, 2]], log_p[:, [0, 2]], atol=1e-5)


def test_the_first_step_has_no_consensus_yet_and_keeps_the_entropy():
    node = _node()
    shape = (4, 1, 2, 2)
    reply = node.handle(DreamStep("t", 1, 0, 0, 5, shape))
    changes, _ = split_consensus_total(torch.from_numpy(reply.weighted_values), shape)
    expected = local_dream_update(node.model, initial_dreams(5, shape), node.config.dream.local())
    assert torch.allclose(changes, 8.0 * expected, atol=1e-6)


@pytest.mark.parametrize("targets", [torch.zeros(4, 5), torch.full((4, 3), float("nan"))])
def test_targets_of_another_class_count_or_not_finite_are_refused(targets):
    shape = (4, 1, 2, 2)
    with pytest.raises(ValueError, match="targets: must be finite of shape"):
        _node().handle(DreamStep("t", 1, 0, 1, 5, shape, initial_dreams(5, shape), targets))


def test_targets_for_another_number_of_dreams_are_refused_on_construction():
    with pytest.raises(ValueError, match=r"targets: shape must be \(4, classes\)"):
        DreamStep("t", 1, 0, 1, 5, (4, 1, 2, 2), None, torch.zeros(3, 3))


def test_consensus_and_class_conditional_cannot_both_be_on():
    with pytest.raises(ConfigError, match="^dream.consensus:"):
        build(RunConfig, {"dream": {"consensus": True, "class_conditional": True}})


def test_without_consensus_the_contribution_is_the_change_alone():
    shape = (4, 1, 2, 2)
    reply = _node(consensus=False).handle(DreamStep("t", 1, 0, 0, 5, shape))
    assert np.asarray(reply.weighted_values).shape == (16,)
