"""SecAgg+ over gRPC: `secagg.graph = "auto"` above its (here forced small) switch-over size.

A real CoordinatorService on port 0 and six nodes speaking the wire protocol with the node's own
TaskRunner (its SecAggClient builds the session's sparse graph from SecAggBegin). Sampling takes
five of them a round: every sum of the round is a SecAgg+ session of those five, recorded in
the round's metrics with its degree and threshold, and the sixth node idles through the sums.
"""

from __future__ import annotations

from service_helpers import metrics, serve, serving, tiny_config

from codream.client_sampling import draw_participants

NODES = [f"node-{i}" for i in range(6)]


def test_a_sampled_run_sums_over_secagg_plus_over_grpc(tmp_path):
    config = tiny_config(tmp_path / "run", clients=6, clients_per_round=5,
                         **{"secagg.complete_up_to": 4, "dream.global_steps": 3})
    with serving(config) as served:
        nodes = [served.node(n).enter() for n in NODES]
        served.start_run()
        serve(nodes, done=served.finished)
        served.wait_run()
        pulled_by = {n.node_id: set(n.logic.contributions) for n in nodes}
        registry = served.service.metrics.registry
        scraped = {name: registry.get_sample_value(name)
                   for name in ("codream_round_participants", "codream_secure_degree")}
    rounds = metrics(config.out)["rounds"]
    last = rounds[-1]
    sampled = draw_participants(NODES, config.seed, last["round"], 5, 2)
    assert last["participants"] == list(sampled)
    assert last["secure_graph"] == [{"graph": "secagg+", "degree": 2, "threshold": 2, "clients": 5}]
    assert last["fewest_clients_per_dream_step"] == 5
    assert sorted(last["clients"]) == NODES  # evaluation reached every node
    idle = (set(NODES) - set(sampled)).pop()
    steps = {f"r{last['round']}/b0/s{s}" for s in range(3)}
    assert not pulled_by[idle] & steps  # the unsampled node computed no dream step
    assert all(steps <= pulled_by[n] for n in sampled)
    assert scraped == {"codream_round_participants": 5.0, "codream_secure_degree": 2.0}
