"""Shared helpers for the secagg tests: deterministic inputs and the expected sums."""

import numpy as np


def make_inputs(n: int, dim: int, seed: int = 0, scale: float = 1.0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-scale, scale, dim) for i in range(n)}


def assert_sum(result, inputs, clip=1.0, weights=None):
    expected = sum(np.clip(inputs[i], -clip, clip) for i in result.survivors)
    err = np.abs(result.total - expected).max()
    assert err <= result.error_bound, (err, result.error_bound)
    want_weight = len(result.survivors) if weights is None else sum(weights[i] for i in result.survivors)
    assert abs(result.weight - want_weight) <= 1e-6 * max(1.0, want_weight)


def wire_round_trip(message):
    """The message as a peer decodes it: encoded to bytes and decoded again (type checked)."""
    from secagg.messages import decode

    return decode(message.to_bytes(), type(message))
