"""Client sampling: the seeded draw, its config fields, and sampled rounds of CoDream and FedAvg
run through `simulate` (in-memory transport, the real in-process secure summer)."""

import pytest
import torch

from codream.client_sampling import draw_participants, sample_size
from codream.config import ConfigError, RunConfig, build, dotted, merge
from codream.simulation import simulate

NODES = [f"node-{i}" for i in range(12)]


def test_the_draw_is_a_pure_function_of_seed_round_and_live_nodes():
    first = draw_participants(NODES, 7, 3, 5, 2)
    assert first == draw_participants(list(NODES), 7, 3, 5, 2)  # same inputs, same nodes
    assert len(first) == 5 and len(set(first)) == 5 and set(first) <= set(NODES)
    assert list(first) == [n for n in NODES if n in first]  # in roster order
    others = {draw_participants(NODES, 7, r, 5, 2) for r in range(20)}
    assert len(others) > 10  # rounds draw differently
    assert draw_participants(NODES, 8, 3, 5, 2) != first or draw_participants(NODES, 9, 3, 5, 2) != first


@pytest.mark.parametrize(("live", "per_round", "minimum", "expected"), [
    (12, 0, 2, 12), (12, 1.0, 2, 12),  # 0 and 1.0: every node
    (12, 0.25, 2, 3), (12, 0.1, 2, 2),  # a fraction, rounded up, at least min_clients
    (12, 5, 2, 5), (12, 5, 8, 8),  # a count, at least min_clients
    (3, 5, 2, 3), (1, 0.5, 2, 1),  # never more than are live
])
def test_sample_size(live, per_round, minimum, expected):
    assert sample_size(live, per_round, minimum) == expected


def test_every_node_when_sampling_is_off_or_takes_them_all():
    assert draw_participants(NODES, 0, 1, 0, 2) == tuple(NODES)
    assert draw_participants(NODES[:3], 0, 1, 5, 2) == tuple(NODES[:3])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"clients_per_round": -0.5}, "clients_per_round: must be 0 (every node)"),
    ({"clients_per_round": 2.5}, "clients_per_round: a count must be a whole number <= clients (4)"),
    ({"clients_per_round": 9}, "clients_per_round: a count must be a whole number <= clients (4)"),
    ({"clients_per_round": float("nan")}, "clients_per_round: must be 0"),
    ({"min_clients": 0}, "min_clients: must be >= 1"),
    ({"clients_per_round": 0.5, "min_clients": 5}, "min_clients: must be <= clients (4)"),
    ({"clients_per_round": 0.5, "min_clients": 1}, "min_clients: must be >= 2 under secure aggregation"),
    ({"clients_per_round": 0.5, "secagg.colluding_nodes": 1},  # min_clients 2 < c + 2
     "min_clients: must be >= secagg.colluding_nodes + 2 = 3 while sampling"),
    ({"clients_per_round": 2, "min_clients": 3, "secagg.colluding_nodes": 2},
     "min_clients: must be >= secagg.colluding_nodes + 2 = 4 while sampling"),
    ({"sampling_reach": "some"}, "sampling_reach: must be 'all' or 'sampled'"),
    ({"secagg.graph": "sparse"}, "secagg.graph: must be 'auto', 'complete' or 'secagg+'"),
    ({"secagg.complete_up_to": 1}, "secagg.complete_up_to: must be >= 2"),
])
def test_bad_sampling_fields_are_one_line_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as raised:
        build(RunConfig, merge({"clients": 4}, dotted(overrides)))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_sampling_with_colluding_nodes_takes_at_least_c_plus_two_and_says_how_to_fix_it():
    with pytest.raises(ConfigError) as raised:
        build(RunConfig, dotted({"clients": 6, "clients_per_round": 3, "min_clients": 2,
                                 "secagg.colluding_nodes": 2}))
    assert "got 2" in str(raised.value) and "--set min_clients=4" in str(raised.value)
    assert "secagg.colluding_nodes" in str(raised.value)
    config = build(RunConfig, dotted({"clients": 6, "clients_per_round": 3, "min_clients": 4,
                                      "secagg.colluding_nodes": 2}))
    assert sample_size(6, config.clients_per_round, config.min_clients) == 4  # never below c + 2
    # without sampling, or without secure aggregation, min_clients is not consulted
    build(RunConfig, dotted({"clients": 6, "min_clients": 2, "secagg.colluding_nodes": 2}))
    build(RunConfig, dotted({"clients": 6, "clients_per_round": 3, "min_clients": 2,
                             "secagg.colluding_nodes": 2, "secagg.enabled": False}))


def test_a_plain_sum_of_one_sampled_node_is_allowed_without_secure_aggregation():
    config = build(RunConfig, dotted({"clients": 4, "clients_per_round": 0.25, "min_clients": 1,
                                      "secagg.enabled": False}))
    assert config.min_clients == 1


BASE = {
    "dataset": "digits", "clients": 5, "rounds": 2, "warmup_epochs": 1, "local_epochs": 1,
    "partition": "iid", "device": "cpu", "seed": 3, "models": ["mlp"],
    "dream": {"batch_size": 16, "global_steps": 2},
    "server_model": {"steps": 5, "batch_size": 16},
    "distill": {"dream_batch_size": 16, "buffer_batches": 1, "epochs": 1},
    "clients_per_round": 3,
}


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(**overrides):
    return simulate(build(RunConfig, merge(BASE, dotted(overrides))))


def _expected(config_round: int) -> tuple[str, ...]:
    return draw_participants([f"node-{i}" for i in range(5)], 3, config_round, 3, 2)


def test_codream_sums_only_among_the_sampled_nodes_and_reaches_all_with_what_it_learned(one_thread):
    result = _run()
    for metrics in result.history:
        r = metrics["round"]
        assert metrics["participants"] == list(_expected(r))
        assert sorted(metrics["clients"]) == [f"node-{i}" for i in range(5)]  # reach: all evaluated
        if r == 0:
            assert set(metrics["bytes"]) == {f"node-{i}" for i in range(5)}  # everyone warms up
            continue
        assert metrics["fewest_clients_per_dream_step"] == 3
        assert metrics["secure_graph"] == [{"graph": "complete", "degree": 2, "threshold": 2,
                                            "clients": 3, "colluding_nodes": 0}]
        idle = set(metrics["bytes"]) - set(_expected(r))
        for node in idle:  # received knowledge acquisition and evaluation, sent no dream update
            assert metrics["bytes"][node]["sent"] < 1000, metrics["bytes"][node]


def test_sampled_reach_leaves_the_other_nodes_idle(one_thread):
    result = _run(sampling_reach="sampled")
    for metrics in result.history:
        sampled = list(_expected(metrics["round"]))
        assert sorted(metrics["clients"]) == sorted(sampled)
        assert sorted(metrics["bytes"]) == sorted(sampled)


def test_fedavg_averages_the_sampled_nodes_only(one_thread):
    result = _run(strategy="fedavg", clients_per_round=0.5)  # ceil(2.5) = 3 of 5
    for metrics in result.history:
        assert metrics["clients_summed"] == 3
        assert len(metrics["participants"]) == 3
        assert len(metrics["clients"]) == 5  # every node loaded the new parameters, was evaluated
