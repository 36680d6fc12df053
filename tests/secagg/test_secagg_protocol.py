"""End-to-end sums: both graphs, several n, dropouts at every phase, sessions, abort below t."""

import numpy as np
import pytest
from secagg_helpers import assert_sum, make_inputs

from secagg import (
    InProcessSession,
    InsufficientSurvivors,
    Phase,
    PhaseError,
    SecAggConfig,
    ServerPhase,
    run_aggregation,
)

DIM = 16


@pytest.mark.parametrize("graph", ["complete", "secagg+"])
@pytest.mark.parametrize("n", [2, 3, 5, 20])
def test_exact_sum_without_dropouts(graph, n):
    config = SecAggConfig(n_clients=n, dim=DIM, clip=1.0, graph=graph)
    inputs = make_inputs(n, DIM, seed=n)
    result = run_aggregation(config, inputs)
    assert result.survivors == tuple(range(n)) and result.dropped == ()
    assert_sum(result, inputs)
    assert result.clipped == 0
    assert result.error_bound <= n * 0.5 / config.values.scale


def test_sum_is_exact_to_the_quantisation_grid():
    config = SecAggConfig(n_clients=4, dim=3, clip=8.0, scale=2.0**10)
    inputs = {i: np.array([0.5, -1.25, 2.0 + i]) for i in range(4)}  # on the grid
    result = run_aggregation(config, inputs)
    assert result.total.tolist() == [2.0, -5.0, 14.0]


def test_weighted_sum_and_clipped_count_are_aggregated():
    config = SecAggConfig(n_clients=5, dim=DIM, clip=0.5, max_weight=100.0)
    inputs = make_inputs(5, DIM, seed=3)
    weights = {i: 10.0 * (i + 1) for i in range(5)}
    result = run_aggregation(config, inputs, weights)
    assert_sum(result, inputs, clip=0.5, weights=weights)
    assert result.clipped == sum(int(np.sum(np.abs(x) > 0.5)) for x in inputs.values())


@pytest.mark.parametrize("graph", ["complete", "secagg+"])
@pytest.mark.parametrize("phase", ["advertise", "share_keys", "masked_input", "consistency", "unmasking"])
def test_dropouts_at_every_phase(graph, phase):
    n = 20
    config = SecAggConfig(n_clients=n, dim=DIM, graph=graph, authenticated=True)
    inputs = make_inputs(n, DIM, seed=7)
    dropped = {2, 11, 17}
    result = run_aggregation(config, inputs, dropouts={phase: dropped})
    assert_sum(result, inputs)
    if phase in ("consistency", "unmasking"):  # inputs were already in: they count
        assert result.survivors == tuple(range(n))
    else:
        assert set(result.survivors) == set(range(n)) - dropped
    assert result.dropped == (tuple(sorted(dropped)) if phase == "masked_input" else ())


def test_dropouts_at_several_phases_at_once():
    n = 20
    config = SecAggConfig(n_clients=n, dim=DIM, threshold=11)
    inputs = make_inputs(n, DIM, seed=8)
    drops = {"advertise": {0}, "share_keys": {1, 2}, "masked_input": {3, 4, 5}, "unmasking": {6}}
    result = run_aggregation(config, inputs, dropouts=drops)
    assert set(result.survivors) == set(range(n)) - {0, 1, 2, 3, 4, 5}
    assert result.dropped == (3, 4, 5)
    assert_sum(result, inputs)


@pytest.mark.parametrize("phase", ["advertise", "share_keys", "masked_input"])
def test_fewer_than_threshold_survivors_aborts_before_any_share_is_asked(phase):
    n = 6
    config = SecAggConfig(n_clients=n, dim=DIM, threshold=4)
    session = InProcessSession.create(config)
    inputs = make_inputs(n, DIM)
    with pytest.raises(InsufficientSurvivors):
        if phase in ("advertise", "share_keys"):
            session.setup_block({phase: {0, 1, 2}})
        else:
            session.step(inputs, dropouts={phase: {0, 1, 2}})
    # nothing was revealed by any client
    assert all(not c._revealed for c in session.clients.values())
    assert session.server.phase is ServerPhase.ABORTED
    with pytest.raises(Exception):  # noqa: B017 - the session is over whatever is asked
        session.server.finish_step()


def test_server_phase_follows_the_rounds_and_is_named_in_phase_errors():
    config = SecAggConfig(n_clients=4, dim=DIM, threshold=3, authenticated=True, steps_per_block=2)
    session = InProcessSession.create(config)
    server = session.server
    assert server.phase is ServerPhase.ADVERTISE
    with pytest.raises(PhaseError, match="finish_step called in phase advertise, needs unmask"):
        server.finish_step()
    session.setup_block()
    assert server.phase is ServerPhase.INPUT
    session.step(make_inputs(4, DIM))
    assert server.phase is ServerPhase.INPUT  # the block's second step needs no new keys
    session.step(make_inputs(4, DIM))
    assert server.phase is ServerPhase.ADVERTISE


def test_fewer_than_threshold_responders_at_unmasking_aborts():
    n = 6
    config = SecAggConfig(n_clients=n, dim=DIM, threshold=4)
    session = InProcessSession.create(config)
    with pytest.raises(InsufficientSurvivors):
        session.step(make_inputs(n, DIM), dropouts={"unmasking": {0, 1, 2}})


def test_client_refuses_to_unmask_with_fewer_than_threshold_survivors():
    n = 5
    config = SecAggConfig(n_clients=n, dim=DIM, threshold=3)
    session = InProcessSession.create(config)
    session.setup_block()
    server, clients = session.server, session.clients
    for i in range(n):
        server.receive_masked_input(clients[i].masked_input(0, np.zeros(DIM)))
    request = server.unmask_request(0)
    forged = type(request)(request.header, (0, 1), (2, 3, 4))
    with pytest.raises(InsufficientSurvivors):
        clients[0].unmask(forged)
    assert clients[0].phase is Phase.OUT


@pytest.mark.parametrize("graph", ["complete", "secagg+"])
def test_multi_step_session_with_blocks_and_dropouts(graph):
    n = 20
    config = SecAggConfig(n_clients=n, dim=DIM, graph=graph, steps_per_block=3)
    session = InProcessSession.create(config)
    plan = {1: {"masked_input": {4}}, 3: {"masked_input": {9}}, 4: {"unmasking": {12}}}
    out = set()
    for step in range(7):
        inputs = make_inputs(n, DIM, seed=100 + step)
        result = session.step(inputs, dropouts=plan.get(step))
        assert result.step == step
        assert_sum(result, inputs)
        out |= set(result.dropped)
        assert not out & set(result.survivors)  # a dropped client is out for good
    assert out >= {4, 9}
    assert session.server.block == 2  # three blocks: steps 0-2, 3-5, 6


def test_thousands_of_clients_secagg_plus_graph_setup_is_cheap():
    config = SecAggConfig(n_clients=2000, dim=4, graph="secagg+")
    assert config.neighbourhood_size <= 2 * 17 + 1
    from secagg.common import session_graph

    g = session_graph(config, bytes(16))
    assert all(len(v) == config.neighbourhood_size - 1 for v in g.values())


@pytest.mark.parametrize("block_words", [4, 5, 17, 18, 19])
def test_sum_is_exact_across_mask_blocks(monkeypatch, block_words):
    # Clients encode and mask, and the server unmasks, block by block; with dim = 16 the weight
    # and clipped-count words (indices 16, 17) fall inside, across and after block boundaries.
    monkeypatch.setattr("secagg.prg.BLOCK_WORDS", block_words)
    config = SecAggConfig(n_clients=6, dim=DIM, clip=0.5, max_weight=10.0)
    inputs = make_inputs(6, DIM, seed=block_words)
    weights = {i: float(i + 1) for i in range(6)}
    session = InProcessSession.create(config)
    for step in range(2):  # the second step reuses each client's scratch buffers
        result = session.step(inputs, weights, dropouts={"masked_input": {2}} if step else None)
        assert_sum(result, inputs, clip=0.5, weights=weights)
        assert result.clipped == sum(int(np.sum(np.abs(inputs[i]) > 0.5)) for i in result.survivors)
