"""Tests for codream.aggregation: the weighted mean, and bad contributions excluded, never summed."""

import numpy as np
import pytest

from codream.aggregation import BadContribution, Contribution, PlainSummer, check_contribution


def _c(values, weight: float) -> Contribution:
    return Contribution(np.asarray(values, dtype=np.float32), weight)


def test_weighted_mean_by_hand():
    # Client a: v = (1, 2), w = 1; client b: v = (4, -1), w = 3 → mean = (1 + 12, 2 − 3) / 4.
    contributions = {"a": _c([1.0, 2.0], 1.0), "b": _c([12.0, -3.0], 3.0)}
    total = PlainSummer().sum(contributions, 2)
    np.testing.assert_allclose(total.total, [13.0, -1.0])
    assert total.total.dtype == np.float64
    assert total.weight == 4.0
    np.testing.assert_allclose(total.mean(), [3.25, -0.25])
    assert total.contributors == ("a", "b")
    assert dict(total.excluded) == {}


@pytest.mark.parametrize(
    "bad, reason",
    [
        (Contribution(np.zeros(3, dtype=np.float32), 1.0), "shape"),
        (Contribution(np.zeros((2, 1), dtype=np.float32), 1.0), "shape"),
        (Contribution(np.zeros(2, dtype=np.float64), 1.0), "float32"),
        (Contribution(np.zeros(2, dtype=np.int32), 1.0), "float32"),
        (Contribution([0.0, 0.0], 1.0), "float32"),  # a list, not an array
        (Contribution(np.array([np.nan, 1.0], dtype=np.float32), 1.0), "non-finite"),
        (Contribution(np.array([np.inf, 1.0], dtype=np.float32), 1.0), "non-finite"),
        (Contribution(np.array([1.0, -np.inf], dtype=np.float32), 1.0), "non-finite"),
        (Contribution(np.ones(2, dtype=np.float32), 0.0), "weight"),
        (Contribution(np.ones(2, dtype=np.float32), -2.0), "weight"),
        (Contribution(np.ones(2, dtype=np.float32), float("nan")), "weight"),
        (Contribution(np.ones(2, dtype=np.float32), float("inf")), "weight"),
    ],
)
def test_bad_contribution_is_excluded_and_reported_never_summed(bad, reason):
    with pytest.raises(BadContribution, match=reason):
        check_contribution(bad, 2)
    good = {"a": _c([2.0, 4.0], 2.0), "b": _c([1.0, 1.0], 1.0)}
    total = PlainSummer().sum({**good, "bad": bad}, 2)
    assert "bad" in total.excluded and reason in total.excluded["bad"]
    assert total.contributors == ("a", "b")
    assert total.weight == 3.0
    np.testing.assert_allclose(total.total, [3.0, 5.0])
    assert np.isfinite(total.mean()).all()


def test_good_contribution_passes_the_check():
    check_contribution(_c([1.0, -1.0, 0.0], 0.5), 3)


def test_all_excluded_mean_raises():
    total = PlainSummer().sum({"a": _c([np.nan], 1.0), "b": _c([1.0], 0.0)}, 1)
    assert total.contributors == ()
    assert set(total.excluded) == {"a", "b"}
    assert total.weight == 0.0
    with pytest.raises(ValueError, match="excluded"):
        total.mean()


def test_empty_sum_mean_raises():
    total = PlainSummer().sum({}, 4)
    assert total.total.shape == (4,)
    with pytest.raises(ValueError):
        total.mean()
