"""A sliding window of recent dream batches and their aggregated soft labels.

Knowledge acquisition draws from several recent batches rather than the newest alone, so a
client does not overfit one batch of dreams (and forget what earlier ones carried).
"""

from __future__ import annotations

from collections import deque

import torch


class DreamBuffer:
    def __init__(self, capacity_batches: int):
        if capacity_batches < 1:
            raise ValueError(f"dream buffer capacity must be >= 1, got {capacity_batches}")
        self._batches: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=capacity_batches)

    def add(self, dreams: torch.Tensor, logits: torch.Tensor) -> None:
        """dreams (B, C, H, W) and aggregated logits z̄ (B, classes), detached."""
        if len(dreams) != len(logits):
            raise ValueError(f"{len(dreams)} dreams but {len(logits)} soft labels")
        self._batches.append((dreams.detach(), logits.detach()))

    def __len__(self) -> int:
        return sum(len(d) for d, _ in self._batches)

    @property
    def num_batches(self) -> int:
        return len(self._batches)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All buffered dreams and logits, concatenated: (D, C, H, W), (D, classes)."""
        if not self._batches:
            raise ValueError("the dream buffer is empty")
        return (
            torch.cat([d for d, _ in self._batches]),
            torch.cat([z for _, z in self._batches]),
        )

    def state(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(self._batches)

    def load_state(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._batches.clear()
        for dreams, logits in batches:
            self.add(dreams, logits)
