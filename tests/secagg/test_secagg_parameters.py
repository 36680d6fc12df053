"""Bell et al.'s SecAgg+ parameters (secagg.parameters): the smallest degree meeting the bounds."""

import math

import pytest

from secagg import SecAggConfig
from secagg.parameters import (
    SparseParameters,
    _hypergeometric_pmf,
    _log_disconnected,
    collusion_threshold,
    sparse_parameters,
    threshold_for,
)


@pytest.mark.parametrize("n", [65, 100, 128, 256, 512, 1000, 5000])
def test_the_degree_is_even_sparse_and_the_threshold_a_valid_majority(n):
    p = sparse_parameters(n)
    assert p is not None and p.degree % 2 == 0 and 2 <= p.degree < n - 1
    m = p.degree + 1
    assert m < 2 * p.threshold <= 2 * m  # a strict majority of the neighbourhood
    # the library takes it as a session's parameters
    config = SecAggConfig(n_clients=n, dim=4, graph="secagg+", degree=p.degree, threshold=p.threshold)
    assert config.neighbourhood_size == m


def test_the_degree_grows_like_log_n_not_n():
    degrees = {n: sparse_parameters(n).degree for n in (128, 256, 512, 1000, 10000)}
    assert degrees == {128: 22, 256: 28, 512: 32, 1000: 36, 10000: 42}  # pinned: a change shows
    assert degrees[10000] < 3 * math.log2(10000) + 4


def test_the_degree_is_the_smallest_that_keeps_the_graph_connected_and_unmaskable():
    for n in (100, 512, 1000):
        p = sparse_parameters(n)
        assert threshold_for(n, p.degree, 0.05, 0.1) == p.threshold
        assert all(threshold_for(n, k, 0.05, 0.1) is None for k in range(2, p.degree, 2))
        bad = math.floor(0.05 * n) + math.floor(0.1 * n)
        assert _log_disconnected(n, p.degree, bad) < -41 * math.log(2)


def test_few_clients_need_no_sparse_graph_below_their_rates():
    assert sparse_parameters(3) is None  # only the complete graph (k = n - 1) is left
    assert sparse_parameters(6) == SparseParameters(2, 2)  # 6 x 5% rounds to no corrupt client


def test_more_dropouts_or_corruption_need_more_neighbours():
    base = sparse_parameters(512)
    assert sparse_parameters(512, 0.05, 0.2).degree > base.degree
    assert sparse_parameters(512, 0.15, 0.1).degree > base.degree


def test_a_threshold_tolerates_the_expected_dropouts_with_margin():
    p = sparse_parameters(512, 0.05, 0.1)
    survivors = _hypergeometric_pmf(512, math.ceil(0.9 * 512), p.degree)
    assert sum(survivors[: p.threshold]) <= 2**-20 / 512


@pytest.mark.parametrize(("corrupt", "dropout"), [(-0.1, 0.1), (0.5, 0.5), (0.1, 1.0)])
def test_bad_rates_are_refused(corrupt, dropout):
    with pytest.raises(ValueError, match="rates must lie in"):
        sparse_parameters(100, corrupt, dropout)


def test_hypergeometric_sums_to_one():
    assert sum(_hypergeometric_pmf(100, 30, 12)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("m", range(2, 40))
def test_the_collusion_threshold_is_the_smallest_t_with_2t_minus_m_above_the_accomplices(m):
    for c in range(0, m):
        t = collusion_threshold(m, c)
        assert 2 * t - m > min(c, m - 1) and t <= m
        assert t - 1 <= m // 2 or 2 * (t - 1) - m <= min(c, m - 1)  # and no smaller t does
    assert collusion_threshold(m, 0) == m // 2 + 1  # the strict majority


@pytest.mark.parametrize("c", [1, 2, 5, 10])
def test_an_active_coordinator_with_accomplices_needs_more_neighbours_and_a_larger_threshold(c):
    for n in (65, 128, 512, 1000):
        base, active = sparse_parameters(n), sparse_parameters(n, colluding=c)
        assert active.degree >= base.degree and active.threshold > base.threshold
        m = active.degree + 1
        assert 2 * active.threshold - m > c  # every accomplice next to the victim: still short
        assert threshold_for(n, active.degree, 0.05, 0.1, colluding=c) == active.threshold
        assert all(threshold_for(n, k, 0.05, 0.1, colluding=c) is None
                   for k in range(2, active.degree, 2))  # the smallest degree that allows it
        survivors = _hypergeometric_pmf(n, math.ceil(0.9 * n), active.degree)
        assert sum(survivors[: active.threshold]) <= 2**-20 / n  # still unmaskable


def test_the_active_parameters_are_pinned():
    assert sparse_parameters(512, colluding=1) == SparseParameters(36, 20)
    assert sparse_parameters(512, colluding=5) == SparseParameters(44, 26)
