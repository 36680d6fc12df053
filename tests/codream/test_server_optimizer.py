"""Tests for codream.server_optimizer: FedAvg and FedAdam steps against numbers computed by hand."""

import math

import pytest
import torch

from codream.server_optimizer import ServerOptimizerConfig, apply_update, init_state

PARAMS = torch.tensor([1.0, 2.0], dtype=torch.float64)
DELTA_1 = torch.tensor([0.5, -1.0], dtype=torch.float64)
DELTA_2 = torch.tensor([1.0, 1.0], dtype=torch.float64)


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_fedavg_step():
    config = ServerOptimizerConfig(name="fedavg", lr=0.2)
    state = init_state(config, PARAMS)
    assert state.m is None and state.v is None
    new, state = apply_update(config, state, PARAMS, DELTA_1)
    _close(new, [1.1, 1.8])
    assert state.step == 1
    new, state = apply_update(config, state, new, DELTA_2)
    _close(new, [1.3, 2.0])
    assert state.step == 2


def test_fedavg_lr1_takes_the_full_change():
    config = ServerOptimizerConfig(name="fedavg", lr=1.0)
    new, _ = apply_update(config, init_state(config, PARAMS), PARAMS, DELTA_1)
    _close(new, [1.5, 1.0])


def test_fedadam_first_step_with_bias_correction_is_lr_times_sign():
    # m̂ = Δ and v̂ = Δ², so the step is lr·Δ/(|Δ| + τ).
    config = ServerOptimizerConfig(name="fedadam", lr=0.2, beta1=0.9, beta2=0.999, tau=1e-8)
    state = init_state(config, PARAMS)
    new, state = apply_update(config, state, PARAMS, DELTA_1)
    _close(new, [1.0 + 0.2 * 0.5 / (0.5 + 1e-8), 2.0 - 0.2 * 1.0 / (1.0 + 1e-8)])
    _close(state.m, [0.05, -0.1])
    _close(state.v, [0.00025, 0.001])
    assert state.step == 1


def test_fedadam_two_steps_with_bias_correction():
    # Step 2 by hand: m = 0.9·(0.05, −0.1) + 0.1·(1, 1) = (0.145, 0.01);
    # v = 0.999·(0.00025, 0.001) + 0.001·(1, 1) = (0.00124975, 0.001999);
    # m̂ = m / 0.19 = (0.763158, 0.052632); v̂ = v / 0.001999 = (0.625188, 1.0);
    # step = 0.2·m̂/√v̂ = (0.193036, 0.010526), added to (1.2, 1.8).
    config = ServerOptimizerConfig(name="fedadam", lr=0.2, beta1=0.9, beta2=0.999, tau=1e-8)
    state = init_state(config, PARAMS)
    x, state = apply_update(config, state, PARAMS, DELTA_1)
    x, state = apply_update(config, state, x, DELTA_2)
    _close(state.m, [0.145, 0.01])
    _close(state.v, [0.00124975, 0.001999])
    torch.testing.assert_close(
        x, torch.tensor([1.3930363987, 1.8105263177], dtype=torch.float64), rtol=0, atol=1e-8
    )
    assert state.step == 2


def test_fedadam_without_bias_correction():
    # Step 1: 0.2·0.05/(√0.00025 + τ) = 0.2·0.1/(√0.001 + τ) ≈ 0.632456 along sign(Δ), about 3.16× the
    # bias-corrected step.
    config = ServerOptimizerConfig(name="fedadam", lr=0.2, beta1=0.9, beta2=0.999, tau=1e-8,
                                   bias_correction=False)
    state = init_state(config, PARAMS)
    x, state = apply_update(config, state, PARAMS, DELTA_1)
    step_0 = 0.2 * 0.05 / (math.sqrt(0.00025) + 1e-8)
    step_1 = 0.2 * 0.1 / (math.sqrt(0.001) + 1e-8)
    assert step_0 == pytest.approx(0.632456, abs=1e-6) and step_1 == pytest.approx(0.632456, abs=1e-6)
    torch.testing.assert_close(x, torch.tensor([1.0 + step_0, 2.0 - step_1], dtype=torch.float64),
                               rtol=0, atol=1e-9)
    # Step 2: 0.2·(0.145, 0.01)/√(0.00124975, 0.001999) = (0.820326, 0.044733).
    x, state = apply_update(config, state, x, DELTA_2)
    torch.testing.assert_close(
        x, torch.tensor([2.4527808029, 1.4122772020], dtype=torch.float64), rtol=0, atol=1e-8
    )


def test_fedadam_does_not_mutate_its_inputs():
    config = ServerOptimizerConfig(name="fedadam")
    state = init_state(config, PARAMS)
    params = PARAMS.clone()
    m_before = state.m.clone()
    apply_update(config, state, params, DELTA_1)
    assert torch.equal(params, PARAMS)
    assert torch.equal(state.m, m_before) and state.step == 0


def test_unknown_optimizer_raises_naming_the_field():
    config = ServerOptimizerConfig(name="sgd-ish")
    with pytest.raises(ValueError, match=r"^server_optimizer\.name"):
        apply_update(config, init_state(config, PARAMS), PARAMS, DELTA_1)
