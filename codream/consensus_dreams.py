"""Consensus dreams: every client pulls each dream towards the class the federation sees in it.

With the default objective each client minimises its own prediction entropy on the shared
dreams, so four different models pull one dream towards four different classes: under label
skew a client sees mostly the classes it holds in any input. Measured on MNIST with four
architectures, two clients named the same class for a dream on only 12-38% of dreams, and the
summed soft labels then disagree with what the dreams show. Here the confidence term of step
s > 0 is instead CE(f_k(x̂), softmax(z̄_{s−1})): z̄_{s−1} is the federation's soft label of the
dream at the previous step, summed securely in the same sum as the dream changes (each client
appends its soft-label values, `soft_labels.soft_label_values`, to its change), so no extra
round trip and about 1% more bytes per step (B·classes + classes floats beside B·C·H·W). The
coordinator learns the aggregated soft labels at every step instead of only at the end, the
same kind of aggregate; nothing per client. Step 0 has no z̄ yet and keeps the entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from codream.soft_labels import soft_label_size


def consensus_update_size(shape: tuple[int, ...], classes: int, mode: str) -> int:
    """Length of a client's contribution: its dream change, then its soft-label values."""
    return math.prod(shape) + soft_label_size(shape[0], classes, mode)


def consensus_contribution(weighted_delta: torch.Tensor, label_values: torch.Tensor) -> torch.Tensor:
    """[w_k·Δ_k flattened, soft-label values] — one vector, so one secure sum carries both."""
    return torch.cat([weighted_delta.float().reshape(-1), label_values.float().reshape(-1)])


def split_consensus_total(total: torch.Tensor, shape: tuple[int, ...]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ w_k·Δ_k as (B, C, H, W), the summed soft-label values) from one summed contribution."""
    dim = math.prod(shape)
    return total[:dim].view(shape), total[dim:]


def consensus_targets(aggregated: torch.Tensor) -> torch.Tensor:
    """softmax(z̄) (B, classes): the probability targets of the next step's CE term."""
    return F.softmax(aggregated.float(), dim=1)
