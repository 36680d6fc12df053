"""Class-conditional dreams: targets, the class-weighted sum and its mean, by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codream.aggregation import Contribution
from codream.conditional_dreams import (
    class_weighted_mean,
    class_weighted_update,
    conditional_update_size,
    dream_targets,
)
from codream.config import DreamConfig, RunConfig
from codream.dream_objective import DreamLossWeights, dream_loss
from codream.messages import DreamStep
from codream.node_logic import LocalData, NodeTaskLogic


def test_every_class_is_targeted_equally_often_and_the_same_for_everyone():
    assert dream_targets(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert torch.equal(dream_targets(256, 10), dream_targets(256, 10))


def test_each_dream_moves_by_the_count_weighted_mean_of_its_class_holders():
    # Dream 0 has class 0, dream 1 class 1. A holds 3 of class 0 and none of class 1; B 1 and 2.
    shape = (2, 1, 1, 1)
    targets = dream_targets(2, 2)
    delta_a = torch.tensor([1.0, 5.0]).view(shape)
    delta_b = torch.tensor([3.0, 7.0]).view(shape)
    total = (class_weighted_update(delta_a, targets, torch.tensor([3, 0]))
             + class_weighted_update(delta_b, targets, torch.tensor([1, 2])))
    assert total.shape == (conditional_update_size(shape, 2),)
    assert total.tolist() == [6.0, 14.0, 4.0, 2.0]  # 3·1 + 1·3, 0·5 + 2·7, then Σ n_k
    mean = class_weighted_mean(total, shape, 2)
    assert mean.view(-1).tolist() == [1.5, 7.0]  # 6 / 4; A, lacking class 1, moves dream 1 not at all


def test_a_class_nobody_holds_keeps_its_dreams_where_they_are():
    shape = (2, 1, 2, 2)
    total = class_weighted_update(torch.ones(shape), dream_targets(2, 2), torch.tensor([4, 0]))
    mean = class_weighted_mean(total, shape, 2)
    assert torch.equal(mean[0], torch.ones(1, 2, 2))
    assert torch.equal(mean[1], torch.zeros(1, 2, 2))


def test_with_targets_the_confidence_term_is_the_cross_entropy_to_each_dreams_class():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = dream_targets(5, 3)
    weights = DreamLossWeights(entropy=1.0, bn=0.0, tv=0.0, l2=0.0)
    parts = dream_loss(model, x, weights, targets=y)
    assert parts.entropy.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


def test_a_node_sends_nothing_for_the_dreams_of_a_class_it_lacks():
    x = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 0, 0, 2, 2, 0, 2, 0])  # no class 1
    config = RunConfig(dataset="digits", models=("mlp",), dream=DreamConfig(class_conditional=True))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    logic = NodeTaskLogic("node-0", model, LocalData(x, y, x, y), config, torch.device("cpu"), 0,
                          num_classes=3)
    shape = (6, 1, 2, 2)
    reply = logic.handle(DreamStep("t", 1, 0, 0, 5, shape))
    assert isinstance(reply, Contribution)
    values = reply.weighted_values
    assert values.shape == (conditional_update_size(shape, 3),)
    changes = values[:24].reshape(shape)
    assert np.all(changes[[1, 4]] == 0)  # dreams 1 and 4 have class 1
    assert np.any(changes[[0, 2, 3, 5]] != 0)
    assert values[24:].tolist() == [5.0, 0.0, 3.0]
