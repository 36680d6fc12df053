"""The run config's `threads` reaches torch in every kind of process of a run: `simulate`, the
coordinator's run and a node built from the run config of its Join; the cluster launcher leaves
the thread count to them instead of forcing one through the environment."""

from __future__ import annotations

import pytest
import torch

from codream.config import RunConfig, build, dotted, merge, to_toml

# Round 0 without training: only the evaluation (two threads on a busy 2-core machine are slow).
TINY = {"strategy": "independent", "dataset": "digits", "clients": 2, "rounds": 0,
        "warmup_epochs": 0, "partition": "iid", "models": ["mlp"], "device": "cpu"}


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _config(**overrides) -> RunConfig:
    return build(RunConfig, merge(TINY, dotted(overrides)))


def test_simulate_computes_on_the_configured_threads_and_puts_the_count_back(restore_threads):
    from codream.simulation import simulate

    torch.set_num_threads(1)
    seen = []
    simulate(_config(threads=2), on_round=lambda metrics: seen.append(torch.get_num_threads()))
    assert seen == [2]
    assert torch.get_num_threads() == 1


def test_the_coordinators_run_sets_the_configured_threads(restore_threads, monkeypatch, tmp_path):
    import coordinator.service as service
    from coordinator.service import CoordinatorService, CoordinatorSettings

    class Reached(Exception):
        pass

    seen = []

    def load_dataset(spec):  # the run's first step after applying the config: stop there
        seen.append(torch.get_num_threads())
        raise Reached

    torch.set_num_threads(1)
    monkeypatch.setattr(service, "load_dataset", load_dataset)
    coordinator = CoordinatorService(_config(threads=2, out=str(tmp_path)), CoordinatorSettings())
    with pytest.raises(Reached):
        coordinator.run()
    assert seen == [2]


def test_a_node_built_from_its_run_config_sets_the_configured_threads(restore_threads):
    from client_node.channel import ChannelSecurity
    from client_node.node_options import NodeOptions
    from client_node.node_setup import build_from_join, build_logic

    seen = []

    def build(config, index, device, whole_dataset=False):
        seen.append(torch.get_num_threads())
        return build_logic(config, index, device, whole_dataset)

    torch.set_num_threads(1)
    options = NodeOptions("127.0.0.1:1", "node-0", ChannelSecurity(), device="cpu")
    build_from_join(options, to_toml(_config(threads=2)), 0, build)
    assert seen == [2]
    assert torch.get_num_threads() == 2  # the node's process keeps it for the whole run


def test_the_cluster_launcher_forces_no_thread_count_by_environment(tmp_path, monkeypatch):
    from codream.cli.local_cluster import LocalCluster

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    environment = LocalCluster(tmp_path, 2).environment()
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"} & set(environment)
    assert environment["PYTHONUNBUFFERED"] == "1"
