"""CoDream (Singh et al. 2024): clients optimise shared dreams together and distil what they agree on.

Per round: local training (warm-up in round 0), then for each dream batch S global steps in
which every node returns w_k·Δ_k and the coordinator applies the server optimiser to the mean
change (FedAdam), the summed soft labels on the final dreams, and knowledge acquisition on every
node. The coordinator's server model learns from the dreams only; its test accuracy measures
dream quality.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from codream.conditional_dreams import class_weighted_mean, conditional_update_size
from codream.consensus_dreams import consensus_update_size, split_consensus_total
from codream.dream_buffer import DreamBuffer
from codream.local_dreaming import initial_dreams
from codream.messages import AcquireKnowledge, DreamStep, SoftLabels, TrainLocal
from codream.models import build_seeded_model
from codream.round_protocol import SHARE, WORK, Broadcast, Replies, RoundSteps
from codream.server_optimizer import apply_update, init_state
from codream.soft_labels import aggregated_logits, kept_per_batch, most_confident, soft_label_size
from codream.strategies.base import FederationSetting, Strategy, cpu_copy
from codream.training import evaluate, train_on_dreams

if TYPE_CHECKING:
    from codream.config import RunConfig

log = logging.getLogger(__name__)


def dream_seed(seed: int, round_index: int, batch: int) -> int:
    """Distinct, reproducible x̂⁰ seed per (run, round, batch)."""
    return (seed * 1_000_003 + round_index * 1_009 + batch) % (2**63 - 1)


class CoDream(Strategy):
    name = "codream"
    tasks = (TrainLocal, DreamStep, SoftLabels, AcquireKnowledge)

    def __init__(self, setting: FederationSetting) -> None:
        super().__init__(setting)
        config = setting.config
        if config.server_model.model:
            self.server_model = build_seeded_model(
                config.server_model.model, setting.input_shape, setting.num_classes,
                config.seed + 99_991,
            ).to(setting.device)
        self.server_buffer = DreamBuffer(config.distill.buffer_batches)
        self.generator = torch.Generator().manual_seed(config.seed + 424_242)
        # dream.warm_start: the final dreams of each batch index, where the next round resumes
        self.continued: dict[int, torch.Tensor] = {}

    @classmethod
    def node_needs_student(cls, config: RunConfig) -> bool:
        return config.dream.adaptive > 0

    def round(self, round_index: int) -> RoundSteps:
        r, config = round_index, self.config
        epochs = config.warmup_epochs if r == 0 else config.local_epochs
        if epochs > 0:  # the warm-up reaches as far as what a round shares (sampling_reach)
            yield Broadcast(TrainLocal(f"r{r}/train", r, epochs), audience=SHARE if r == 0 else WORK)
        if r == 0:
            return {}
        fewest: list[int] = []  # clients summed in each dream step
        excluded: dict[str, str] = {}
        labelled: list[tuple[torch.Tensor, torch.Tensor]] = []  # (dreams, z̄) per batch
        for b in range(config.dream.batches_per_round):
            dreams = yield from self._synthesise(r, b, fewest, excluded)
            logits = yield from self._soft_labels(r, b, dreams)
            if logits is not None:
                labelled.append(self._keep_confident(dreams, logits))
        if labelled:
            yield from self._acquire_knowledge(r, labelled)
        extra: dict[str, Any] = {
            "fewest_clients_per_dream_step": int(min(fewest)) if fewest else 0,
            "excluded": excluded,
        }
        extra.update(self._train_server_model())
        return extra

    def _synthesise(self, r: int, b: int, fewest: list[int], excluded: dict[str, str]
                    ) -> Generator[Broadcast, Replies, torch.Tensor]:
        """S global steps on one dream batch; returns the final dreams (B, C, H, W)."""
        config = self.config
        dream_shape = (config.dream.batch_size, *self.setting.input_shape)
        conditional, consensus = config.dream.class_conditional, config.dream.consensus
        classes, mode = self.setting.num_classes, config.distill.soft_labels
        size = (conditional_update_size(dream_shape, classes) if conditional
                else consensus_update_size(dream_shape, classes, mode) if consensus
                else int(np.prod(dream_shape)))
        seed = dream_seed(config.seed, r, b)
        resumed = self.continued.get(b) if config.dream.warm_start else None
        dreams = resumed.clone() if resumed is not None else initial_dreams(seed, dream_shape)
        state = init_state(config.server_optimizer, dreams)  # (B, C, H, W); a fresh Adam a round
        targets: torch.Tensor | None = None  # z̄ of the previous step (dream.consensus)
        for s in range(config.dream.global_steps):
            # Step 0 of fresh dreams sends only their seed; resumed ones travel as dreams.
            sent = None if s == 0 and resumed is None else dreams
            task = DreamStep(f"r{r}/b{b}/s{s}", r, b, s, seed, dream_shape, sent, targets)
            total = (yield Broadcast(task, size)).total
            assert total is not None  # a summed task always comes back summed
            fewest.append(len(total.contributors))
            for node, why in total.excluded.items():  # the first reason is when it dropped
                excluded.setdefault(node, why)
            if total.weight <= 0:
                log.warning("round %d step %d: no usable dream update; step skipped", r, s)
                continue
            if conditional:  # each dream moved by the holders of its class (conditional_dreams)
                summed = torch.from_numpy(total.total.astype(np.float32))
                delta = class_weighted_mean(summed, dream_shape, classes)
            elif consensus:  # the mean change, and z̄ for the next step's targets
                summed, labels = split_consensus_total(
                    torch.from_numpy(total.total.astype(np.float32)), dream_shape)
                delta = summed / total.weight
                targets = aggregated_logits(labels, total.weight, dream_shape[0], classes, mode)
            else:
                delta = torch.from_numpy(total.mean().astype(np.float32)).view(dream_shape)
            dreams, state = apply_update(config.server_optimizer, state, dreams, delta)
        if config.dream.warm_start:
            self.continued[b] = dreams.clone()
        return dreams

    def _soft_labels(self, r: int, b: int, dreams: torch.Tensor
                     ) -> Generator[Broadcast, Replies, torch.Tensor | None]:
        """The summed soft labels z̄ (B, classes) on one batch's final dreams; None if none came."""
        config = self.config
        mode = config.distill.soft_labels
        classes = self.setting.num_classes
        logits_size = soft_label_size(config.dream.batch_size, classes, mode)
        total = (yield Broadcast(SoftLabels(f"r{r}/b{b}/labels", r, dreams), logits_size)).total
        assert total is not None
        if total.weight <= 0:
            log.warning("round %d batch %d: no soft labels aggregated; batch dropped", r, b)
            return None
        return aggregated_logits(torch.from_numpy(total.total.astype(np.float32)), total.weight,
                                 config.dream.batch_size, classes, mode)

    def _keep_confident(self, dreams: torch.Tensor, logits: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's dreams the federation agrees on (`distill.keep_confident`), with their z̄."""
        keep = kept_per_batch(len(dreams), self.config.distill.keep_confident)
        if keep >= len(dreams):
            return dreams, logits
        idx = most_confident(logits, keep)
        return dreams[idx], logits[idx]

    def _acquire_knowledge(self, r: int, labelled: list[tuple[torch.Tensor, torch.Tensor]]
                           ) -> Generator[Broadcast, Replies, None]:
        """One knowledge acquisition per round on every node, over all of the round's batches:
        the buffer then grows by `batches_per_round` batches a round while the distillation
        cost stays that of one (it is a fixed number of epochs over the local data)."""
        dreams = torch.cat([d for d, _ in labelled])  # (batches·B, C, H, W)
        logits = torch.cat([z for _, z in labelled])  # (batches·B, classes)
        yield Broadcast(AcquireKnowledge(f"r{r}/acquire", r, dreams, logits), audience=SHARE)
        device = self.setting.device
        for batch_dreams, batch_logits in labelled:
            self.server_buffer.add(batch_dreams.to(device), batch_logits.to(device))
        self.last_dreams = labelled[-1][0]

    def _train_server_model(self) -> dict[str, Any]:
        """The server model learns from dreams only; its test accuracy measures dream quality."""
        if self.server_model is None or self.server_buffer.num_batches == 0:
            return {}
        server = self.config.server_model
        dreams, logits = self.server_buffer.tensors()
        train_on_dreams(self.server_model, dreams, logits, server.steps, server.optimizer_config(),
                        self.config.distill.temperature, self.generator,
                        self.config.distill.dream_shift)
        x_test, y_test = self.setting.x_test, self.setting.y_test
        if x_test is None or y_test is None:
            return {}
        accuracy, _ = evaluate(self.server_model, x_test, y_test)
        return {"server_accuracy": accuracy}

    # ---- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The server model needs no optimiser state: `train_on_dreams` builds a fresh SGD."""
        return {
            "server_model": ({k: cpu_copy(v) for k, v in self.server_model.state_dict().items()}
                             if self.server_model is not None else None),
            "server_buffer": [[cpu_copy(d), cpu_copy(z)] for d, z in self.server_buffer.state()],
            "generator": self.generator.get_state(),
            "last_dreams": cpu_copy(self.last_dreams) if self.last_dreams is not None else None,
            "continued_dreams": {b: cpu_copy(d) for b, d in self.continued.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state["server_model"] is None) != (self.server_model is None):
            raise ValueError("checkpoint and this coordinator disagree on having a server model")
        if self.server_model is not None:
            self.server_model.load_state_dict(state["server_model"])
        device = self.setting.device
        self.server_buffer.load_state([(d.to(device), z.to(device)) for d, z in state["server_buffer"]])
        self.generator.set_state(state["generator"])
        last = state["last_dreams"]
        self.last_dreams = last.clone() if last is not None else None
        # A checkpoint from before dream.warm_start has none: the next round starts fresh.
        self.continued = {int(b): d.clone() for b, d in state.get("continued_dreams", {}).items()}
