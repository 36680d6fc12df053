"""Tests for codream.partition: coverage, determinism, measured label skew and bad inputs."""

import numpy as np
import pytest

from codream.partition import class_histogram, format_histogram, label_skew, partition

# 1,440 labels, 10 balanced classes in shuffled order: digits-sized.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 144))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:100"])
@pytest.mark.parametrize("num_clients", [1, 3, 10])
def test_parts_are_sorted_disjoint_cover_all_and_respect_min_size(scheme, num_clients):
    parts = partition(LABELS, num_clients, scheme, seed=1, min_size=20)
    assert len(parts) == num_clients
    assert sum(len(p) for p in parts) == len(LABELS)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    for p in parts:
        assert len(p) >= 20
        assert np.all(np.diff(p) > 0)


def test_iid_sizes_are_balanced_and_skew_small():
    parts = partition(LABELS, 10, "iid", seed=0)
    assert {len(p) for p in parts} == {144}
    assert label_skew(class_histogram(LABELS, parts, 10)) < 0.15


def test_small_alpha_is_clearly_more_skewed_than_large_alpha():
    def skew(scheme):
        return np.mean(
            [
                label_skew(class_histogram(LABELS, partition(LABELS, 10, scheme, seed=s), 10))
                for s in range(5)
            ]
        )

    low, high = skew("dirichlet:0.1"), skew("dirichlet:100")
    assert high < 0.1
    assert low > 0.5
    assert low > 5 * high


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.3"])
def test_deterministic_for_a_seed_and_different_across_seeds(scheme):
    a = partition(LABELS, 5, scheme, seed=7)
    b = partition(LABELS, 5, scheme, seed=7)
    c = partition(LABELS, 5, scheme, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.5"])
def test_impossible_min_size_raises(scheme):
    with pytest.raises(ValueError, match="min_size=200"):
        partition(LABELS, 10, scheme, seed=0, min_size=200)


def test_unreachable_min_size_raises_after_bounded_attempts():
    # Possible on paper (10 x 143 <= 1440) but Dirichlet draws essentially never balance exactly.
    with pytest.raises(ValueError, match="draws"):
        partition(LABELS, 10, "dirichlet:0.05", seed=0, min_size=143)


@pytest.mark.parametrize(
    "scheme",
    ["IID", "dirichlet", "dirichlet:", "dirichlet:0", "dirichlet:-1", "dirichlet:x", "dir:1"],
)
def test_bad_scheme_names_allowed_forms(scheme):
    with pytest.raises(ValueError, match="allowed: iid, dirichlet:ALPHA"):
        partition(LABELS, 4, scheme, seed=0)


@pytest.mark.parametrize(
    "labels, num_clients, min_size, message",
    [
        (LABELS.astype(float), 4, 10, "1-D integer"),
        (LABELS.reshape(-1, 2), 4, 10, "1-D integer"),
        (LABELS, 0, 10, "num_clients"),
        (LABELS, 4, -1, "min_size"),
    ],
)
def test_bad_arguments(labels, num_clients, min_size, message):
    with pytest.raises(ValueError, match=message):
        partition(labels, num_clients, "iid", seed=0, min_size=min_size)


def test_histogram_and_skew_hand_computed():
    labels = np.array([0, 0, 1, 1, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    hist = class_histogram(labels, parts, 3)
    assert hist.tolist() == [[2, 0, 0], [0, 2, 2]]
    # Global (1/3, 1/3, 1/3); client 0 TV = 2/3, client 1 TV = 1/3; mean 1/2.
    assert label_skew(hist) == pytest.approx(0.5)
    assert label_skew(np.array([[1, 2, 3], [2, 4, 6]])) == pytest.approx(0.0)
    assert label_skew(np.array([[1, 1], [0, 0]])) == pytest.approx(0.0)  # empty client skipped


def test_format_histogram_is_a_table():
    text = format_histogram(np.array([[2, 0, 0], [0, 2, 2]]))
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["client", "c0", "c1", "c2", "total"]
    assert lines[2].split() == ["1", "0", "2", "2", "4"]
