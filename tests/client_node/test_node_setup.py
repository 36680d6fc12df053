"""Building a node from the run config of its Join: overrides, whole data set or partition, errors."""

import pytest
import torch
from torch import nn

from client_node.channel import ChannelSecurity
from client_node.node_options import NodeOptions
from client_node.node_setup import SetupError, build_from_join, node_config, uses_whole_dataset
from codream.config import ConfigError, RunConfig, to_toml
from codream.node_logic import LocalData, NodeTaskLogic

CONFIG = RunConfig(dataset="digits", clients=2, models=("mlp",), weighting="equal")


def options(**overrides):
    return NodeOptions("127.0.0.1:1", "node-a", ChannelSecurity(), device="cpu", **overrides)


def tiny_logic(config, index, device):
    x, y = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(index)), torch.arange(12) % 10
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return NodeTaskLogic(f"node-{index}", model, LocalData(x, y, x, y), config, device, seed=index)


@pytest.mark.parametrize("partition, dataset, whole", [
    ("auto", None, False), ("auto", "npz:/data/own.npz", True),
    ("all", None, True), ("index", "npz:/data/own.npz", False),
])
def test_whole_dataset_or_partition(partition, dataset, whole):
    assert uses_whole_dataset(options(partition=partition, dataset=dataset)) is whole


def test_the_node_overrides_device_and_dataset_and_the_index_must_be_in_range():
    config = node_config(options(dataset="mnist"), to_toml(CONFIG), 1)
    assert (config.device, config.dataset, config.clients) == ("cpu", "mnist", 2)
    assert node_config(options(), to_toml(CONFIG), 0).dataset == "digits"
    with pytest.raises(ConfigError, match="node_index 2"):
        node_config(options(), to_toml(CONFIG), 2)


def test_a_bad_run_config_is_a_setup_error():
    with pytest.raises(SetupError, match="cannot build from the run config"):
        build_from_join(options(), "clients = [", 0, tiny_logic)
    with pytest.raises(SetupError, match="node_index"):
        build_from_join(options(), to_toml(CONFIG), 5, tiny_logic)


def test_built_with_the_injected_logic_and_a_snapshot_file_in_the_state_dir(tmp_path):
    calls = []

    def build(config, index, device, whole_dataset=False):
        calls.append((index, whole_dataset))
        return tiny_logic(config, index, device)

    built = build_from_join(options(state_dir=str(tmp_path), dataset="digits"), to_toml(CONFIG), 1, build)
    assert calls == [(1, True)]
    assert built.key == (to_toml(CONFIG), 1) and built.config.device == "cpu"
    assert built.snapshots.persist_to == tmp_path / "node-a.snapshot.pt"
    assert built.runner is not None and built.logic.node_id == "node-1"
