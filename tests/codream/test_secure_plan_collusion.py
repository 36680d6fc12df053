"""secagg.colluding_nodes: sessions sized against an active coordinator with c accomplices.

The bound (secagg/README.md): privacy holds while c < 2t - m per neighbourhood of m. The plan
raises t to floor((m + c)/2) + 1 on every graph, `auto`'s SecAgg+ takes a degree that keeps
that t within the surviving neighbours, a session needs c + 2 members, the metrics record the
bound each authenticated session holds, and the config refuses what cannot work.
"""

from __future__ import annotations

import numpy as np
import pytest

from codream.aggregation import Contribution
from codream.config import ConfigError, RunConfig, SecureAggregationConfig, build
from codream.messages import DreamStep
from codream.secure_plan import colluding_tolerated, protocol_of, session_config, session_graph
from codream.secure_summer import InProcessSecureSummer
from secagg.parameters import sparse_parameters

DIM = 8


def _config(n, **settings):
    return session_config(SecureAggregationConfig(**settings), n, DIM, 1.0)


@pytest.mark.parametrize("n", range(2, 30))
def test_the_complete_graph_threshold_is_floor_n_plus_c_over_2_plus_1(n):
    assert _config(n, graph="complete").shares_needed == n // 2 + 1  # c = 0: unchanged
    for c in range(1, n - 1):
        config = _config(n, graph="complete", colluding_nodes=c)
        assert config.shares_needed == (n + c) // 2 + 1
        assert 2 * config.shares_needed - n > c  # c accomplices cannot hold t of both secrets
        assert colluding_tolerated(config) >= c


def test_a_session_needs_two_honest_members_beyond_the_accomplices():
    with pytest.raises(ValueError, match="below the 4 that secagg.colluding_nodes = 2 needs"):
        _config(3, colluding_nodes=2)
    assert _config(4, colluding_nodes=2).shares_needed == 4  # no dropout tolerated at n = c + 2


def test_auto_sizes_secagg_plus_for_the_accomplices():
    settings = SecureAggregationConfig(colluding_nodes=5)
    graph, degree, threshold = session_graph(settings, 512)
    assert (graph, degree, threshold) == ("secagg+", 44, 26)
    assert sparse_parameters(512, 0.05, 0.1, colluding=5).degree == 44
    config = session_config(settings, 512, DIM, 1.0)
    assert 2 * config.shares_needed - config.neighbourhood_size > 5
    assert session_graph(SecureAggregationConfig(), 512) == ("secagg+", 32, 17)  # c = 0: as before


def test_an_explicit_secagg_plus_degree_gets_its_threshold_raised():
    config = _config(100, graph="secagg+", degree=10, colluding_nodes=3)
    assert config.neighbourhood_size == 11 and config.shares_needed == (11 + 3) // 2 + 1
    assert _config(100, graph="secagg+", degree=10).shares_needed == 6  # the strict majority


def test_the_metrics_record_the_bound_of_an_authenticated_session_only():
    import dataclasses

    for n, c, tolerated in ((5, 0, 0), (4, 0, 1), (5, 1, 2), (7, 2, 2), (8, 2, 3)):
        config = dataclasses.replace(_config(n, graph="complete", colluding_nodes=c),
                                     authenticated=True)
        assert protocol_of(config)["colluding_nodes"] == tolerated, (n, c)
    assert "colluding_nodes" not in protocol_of(_config(5))  # unauthenticated: no such bound


@pytest.mark.parametrize(("settings", "phrase"), [
    ({"secagg": {"colluding_nodes": -1}}, "secagg.colluding_nodes: must be an int >= 0"),
    ({"secagg": {"colluding_nodes": 1, "threshold": 3}}, "leave secagg.threshold at 0"),
    ({"clients": 3, "secagg": {"colluding_nodes": 2}}, "2 needs at least 4 clients"),
])
def test_bad_settings_are_refused_naming_the_field(settings, phrase):
    with pytest.raises(ConfigError, match=phrase):
        build(RunConfig, settings)


def test_without_secure_aggregation_the_field_asks_nothing_of_the_clients():
    config = build(RunConfig, {"clients": 2, "secagg": {"enabled": False, "colluding_nodes": 3}})
    assert config.secagg.colluding_nodes == 3


def _step():
    return DreamStep("d0", 0, batch=0, step=0, seed=1, shape=(2, 1, 2, 2))


def test_the_in_process_summer_sums_exactly_with_the_raised_threshold_and_refuses_too_few():
    settings = SecureAggregationConfig(colluding_nodes=1)
    nodes = [f"node-{i}" for i in range(5)]
    summer = InProcessSecureSummer(settings, {n: 1.0 for n in nodes})
    contributions = {n: Contribution(np.full(DIM, i + 1.0, np.float32), 1.0)
                     for i, n in enumerate(nodes)}
    total = summer.sum(contributions, DIM, _step())
    np.testing.assert_allclose(total.total, np.full(DIM, 15.0), atol=1e-4)
    assert dict(total.protocol) == {"graph": "complete", "degree": 4, "threshold": 4, "clients": 5,
                                    "colluding_nodes": 2}  # t = 4 of 5 holds for 2
    few = summer.sum(contributions, DIM, _step(), members=nodes[:2])
    assert few.weight == 0.0 and few.excluded == {"*": "fewer than 3 members for a secure sum"}
