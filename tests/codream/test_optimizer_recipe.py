"""The local-training optimiser is a validated setting: SGD with momentum or Adam, by name."""

import pytest
import torch

from codream.config import ConfigError, RunConfig, build
from codream.training import OptimizerConfig, make_optimizer


def _model() -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


def test_sgd_and_adam_get_their_hyperparameters():
    sgd = make_optimizer(_model(), OptimizerConfig(0.05, 0.9, 5e-4, 64, "sgd"))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.05 and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 5e-4
    adam = make_optimizer(_model(), OptimizerConfig(1e-3, 0.9, 0.0, 64, "adam"))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 1e-3


def test_one_adam_step_matches_the_formula():
    """Adam's first step moves each weight by lr·g/(|g| + eps) ≈ lr·sign(g), whatever g's scale."""
    model = _model()
    before = model.weight.detach().clone()
    optimizer = make_optimizer(model, OptimizerConfig(1e-3, 0.9, 0.0, 64, "adam"))
    (1000.0 * model.weight.sum()).backward()  # g = 1000 for every weight
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), before - 1e-3, rtol=0, atol=1e-9)


def test_an_unknown_optimizer_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="train.optimizer: must be one of sgd, adam"):
        build(RunConfig, {"train": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match="distill.optimizer: must be one of sgd, adam"):
        build(RunConfig, {"distill": {"optimizer": "lbfgs"}})
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(_model(), OptimizerConfig(name="rmsprop"))


def test_the_run_config_hands_the_recipe_to_training():
    config = build(RunConfig, {"train": {"optimizer": "adam", "lr": 0.002}})
    recipe = config.train.optimizer_config()
    assert (recipe.name, recipe.lr, recipe.batch_size) == ("adam", 0.002, 64)
