"""Server optimisers over the aggregated dream change: FedAvg and FedAdam (Reddi et al., ICLR 2021).

Pure (init, apply) pairs over a small state, in the fedjax style, so one FedAdam step can be
checked against numbers computed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """`fedavg`: x̂ ← x̂ + η_g Δ. `fedadam`: Adam moments on the pseudo-gradient −Δ.

    `bias_correction` divides the moments by (1 − βᵗ) as Adam does. Reddi's FedAdam omits it;
    we keep it on by default because with tens of global steps the uncorrected first steps are
    √(1−β₂)/(1−β₁) ≈ 3× too large, and with it M = 1 is exactly DistAdam.
    """

    name: str = "fedadam"
    lr: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.999
    tau: float = 1e-8
    bias_correction: bool = True


@dataclass
class ServerOptimizerState:
    step: int
    m: torch.Tensor | None
    v: torch.Tensor | None


def init_state(config: ServerOptimizerConfig, like: torch.Tensor) -> ServerOptimizerState:
    if config.name == "fedadam":
        return ServerOptimizerState(0, torch.zeros_like(like), torch.zeros_like(like))
    return ServerOptimizerState(0, None, None)


def apply_update(
    config: ServerOptimizerConfig,
    state: ServerOptimizerState,
    params: torch.Tensor,
    delta: torch.Tensor,
) -> tuple[torch.Tensor, ServerOptimizerState]:
    """New parameters and state from the mean client change Δ (a descent direction)."""
    step = state.step + 1
    if config.name == "fedavg":
        return params + config.lr * delta, ServerOptimizerState(step, None, None)
    if config.name != "fedadam":
        raise ValueError(f"server_optimizer.name: unknown {config.name!r}; use 'fedavg' or 'fedadam'")
    assert state.m is not None and state.v is not None
    m = config.beta1 * state.m + (1 - config.beta1) * delta
    v = config.beta2 * state.v + (1 - config.beta2) * delta * delta
    m_hat, v_hat = m, v
    if config.bias_correction:
        m_hat = m / (1 - config.beta1**step)
        v_hat = v / (1 - config.beta2**step)
    new_params = params + config.lr * m_hat / (v_hat.sqrt() + config.tau)
    return new_params, ServerOptimizerState(step, m, v)
