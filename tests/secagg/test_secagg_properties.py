"""Hypothesis: for any inputs and any dropout set of at most n - t clients, the result is the
survivors' sum (SecAgg+ may instead abort cleanly when one neighbourhood loses too many)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_helpers import assert_sum

from secagg import InsufficientSurvivors, SecAggConfig, run_aggregation
from secagg.session import PHASES

DIM = 3
floats = st.floats(-3.0, 3.0, allow_nan=False)


@st.composite
def scenarios(draw, graph):
    n = draw(st.integers(2, 7) if graph == "complete" else st.integers(6, 12))
    degree = None if graph == "complete" else 4
    config = SecAggConfig(n_clients=n, dim=DIM, clip=2.0, graph=graph, degree=degree)
    inputs = {i: np.array(draw(st.lists(floats, min_size=DIM, max_size=DIM))) for i in range(n)}
    budget = n - config.threshold
    dropped = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=budget))
    phases = draw(st.lists(st.sampled_from(PHASES), min_size=len(dropped), max_size=len(dropped)))
    dropouts = {}
    for client, phase in zip(dropped, phases, strict=True):
        dropouts.setdefault(phase, set()).add(client)
    return config, inputs, dropouts


@settings(max_examples=25, deadline=None)
@given(scenarios("complete"))
def test_complete_graph_sum_equals_survivors_sum(scenario):
    config, inputs, dropouts = scenario
    result = run_aggregation(config, inputs, dropouts=dropouts)
    gone = set().union(*dropouts.values()) if dropouts else set()
    late = dropouts.get("consistency", set()) | dropouts.get("unmasking", set())
    assert set(result.survivors) == set(range(config.n_clients)) - (gone - late)
    assert_sum(result, inputs, clip=2.0)


@settings(max_examples=15, deadline=None)
@given(scenarios("secagg+"))
def test_secagg_plus_sum_equals_survivors_sum_or_aborts_cleanly(scenario):
    config, inputs, dropouts = scenario
    try:
        result = run_aggregation(config, inputs, dropouts=dropouts)
    except InsufficientSurvivors:
        # only possible when a neighbourhood of degree + 1 lost more than degree + 1 - t
        gone = set().union(*dropouts.values()) if dropouts else set()
        assert len(gone) > config.neighbourhood_size - config.threshold
        return
    assert_sum(result, inputs, clip=2.0)
