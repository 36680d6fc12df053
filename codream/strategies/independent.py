"""Independent: every client trains on its own data only, the baseline collaboration must beat."""

from __future__ import annotations

from codream.messages import TrainLocal
from codream.round_protocol import Broadcast, RoundSteps
from codream.strategies.base import Strategy


class Independent(Strategy):
    name = "independent"
    tasks = (TrainLocal,)

    def round(self, round_index: int) -> RoundSteps:
        config = self.config
        epochs = config.warmup_epochs if round_index == 0 else config.local_epochs
        yield Broadcast(TrainLocal(f"r{round_index}/train", round_index, epochs))
        return {}
