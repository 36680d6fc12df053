"""A node's task logic: one client's data, model and device, driven by domain messages.

No network here: the in-memory transport calls `handle` directly and the gRPC daemon calls it
for each task it pulls, so both compute the same thing. Each handler says which task type it
handles (`@handles`); that is the node's whole dispatch table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from codream.aggregation import Contribution
from codream.conditional_dreams import class_weighted_update, dream_targets
from codream.config import RunConfig
from codream.consensus_dreams import consensus_contribution, consensus_targets
from codream.dream_buffer import DreamBuffer
from codream.local_dreaming import initial_dreams, local_dream_update
from codream.messages import (
    Ack,
    AcquireKnowledge,
    DreamStep,
    EvalReport,
    Evaluate,
    FedAvgTrain,
    LoadParameters,
    Reply,
    Skip,
    SoftLabels,
    Task,
    TrainLocal,
    TrainReport,
)
from codream.parameters import flatten_state, load_flat_state
from codream.soft_labels import kept_per_batch, soft_label_values
from codream.training import (
    OptimizerConfig,
    evaluate,
    knowledge_acquisition,
    log_class_prior,
    predict_logits,
    train_on_dreams,
    train_supervised,
)

log = logging.getLogger(__name__)

_HANDLERS: dict[type, Callable[[Any, Any], Reply]] = {}
_Handler = TypeVar("_Handler", bound=Callable[..., Reply])


def handles(task_type: type) -> Callable[[_Handler], _Handler]:
    """Marks a NodeTaskLogic method as the handler of `task_type` (one handler per type)."""

    def register(method: _Handler) -> _Handler:
        if task_type in _HANDLERS:
            raise ValueError(f"{task_type.__name__} already has a handler")
        _HANDLERS[task_type] = method
        return method

    return register


@dataclass(frozen=True)
class LocalData:
    """A client's private training split and the shared test set its accuracy is reported on."""

    x_train: torch.Tensor  # (n_k, C, H, W)
    y_train: torch.Tensor  # (n_k,)
    x_test: torch.Tensor
    y_test: torch.Tensor


class NodeTaskLogic:
    def __init__(
        self,
        node_id: str,
        model: nn.Module,
        data: LocalData,
        config: RunConfig,
        device: torch.device,
        seed: int,
        student: nn.Module | None = None,
        num_classes: int = 0,
    ):
        self.node_id = node_id
        self.num_classes = num_classes  # its data set's (0: not known), reported at Ready
        self.config = config
        self.device = device
        self.model = model.to(device)
        self.student = student.to(device) if student is not None else None
        self.x_train = data.x_train.to(device)
        self.y_train = data.y_train.to(device)
        self.x_test = data.x_test.to(device)
        self.y_test = data.y_test.to(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer = DreamBuffer(config.distill.buffer_batches)
        self.weight = float(len(data.x_train)) if config.weighting == "samples" else 1.0

    def handle(self, task: Task) -> Reply:
        handler = _HANDLERS.get(type(task))
        if handler is None:
            raise TypeError(f"node {self.node_id}: unknown task type {type(task).__name__}")
        return handler(self, task)

    def _contribution(self, values: torch.Tensor, what: str, round_index: int,
                      already_weighted: bool = False) -> Reply:
        """w_k·v_k as float32, or a Skip if anything is non-finite: it must never be summed."""
        weighted = values.detach().float() * (1.0 if already_weighted else self.weight)
        flat = weighted.reshape(-1).cpu().numpy()
        flat = np.ascontiguousarray(flat, dtype=np.float32)
        if not np.isfinite(flat).all():
            bad = int((~np.isfinite(flat)).sum())
            log.warning("node %s round %d: %d non-finite values in %s; skipping", self.node_id,
                        round_index, bad, what)
            return Skip(f"{bad} non-finite values in {what}")
        return Contribution(flat, self.weight)

    @handles(TrainLocal)
    def _train_local(self, task: TrainLocal) -> Reply:
        loss = train_supervised(
            self.model, self.x_train, self.y_train, task.epochs, self.config.train.optimizer_config(),
            self.generator, log_prior=self._train_log_prior(),
        )
        return TrainReport(len(self.x_train), loss)

    @handles(DreamStep)
    def _dream_step(self, task: DreamStep) -> Reply:
        # (B, C, H, W); a DreamStep's dreams always have its shape (checked on construction)
        dreams = task.dreams if task.dreams is not None else initial_dreams(task.seed, task.shape)
        dream_config = self.config.dream
        use_student = (
            self.student is not None
            and dream_config.adaptive > 0
            and task.round >= dream_config.adaptive_from_round
        )
        student = self.student if use_student else None
        if dream_config.consensus:
            return self._consensus_dream_step(task, dreams.to(self.device), student)
        if not dream_config.class_conditional:
            delta = local_dream_update(self.model, dreams.to(self.device), dream_config.local(),
                                       student)
            return self._contribution(delta, "dream update", task.round)
        counts = self._class_counts(self._classes())
        targets = dream_targets(len(dreams), len(counts), self.device)
        delta = local_dream_update(self.model, dreams.to(self.device), dream_config.local(),
                                   student, targets)
        values = class_weighted_update(delta, targets, counts)
        return self._contribution(values, "dream update", task.round, already_weighted=True)

    def _consensus_dream_step(self, task: DreamStep, dreams: torch.Tensor,
                              student: nn.Module | None) -> Reply:
        """[w_k·Δ_k, soft-label values on the dreams as received] (`consensus_dreams`); Δ_k
        minimises CE to softmax(z̄) of the previous step where the task carries z̄."""
        logits = predict_logits(self.model, dreams)  # (B, classes)
        targets = None
        if task.targets is not None:
            if task.targets.shape[1] != logits.shape[1] or not torch.isfinite(task.targets).all():
                raise ValueError(f"targets: must be finite of shape ({len(dreams)}, "
                                 f"{logits.shape[1]}), got {tuple(task.targets.shape)}")
            targets = consensus_targets(task.targets.to(self.device))
        delta = local_dream_update(self.model, dreams, self.config.dream.local(), student, targets)
        labels = soft_label_values(logits, self.weight, self._class_counts(logits.shape[1]),
                                   self.config.distill.soft_labels)
        values = consensus_contribution(delta * self.weight, labels)
        return self._contribution(values, "dream update", task.round, already_weighted=True)

    def _classes(self) -> int:
        """The data set's class count, or (not known) one past the largest local label."""
        return self.num_classes or int(self.y_train.max().item()) + 1

    def _train_log_prior(self) -> torch.Tensor | None:
        """log π_k for a logit-adjusted local loss (`train.local_loss = "balanced"`), else None."""
        if self.config.train.local_loss != "balanced":
            return None
        return log_class_prior(self.y_train, self._classes())

    def _class_counts(self, classes: int) -> torch.Tensor:
        """n_k (classes,): how many samples of each class this node holds."""
        return torch.bincount(self.y_train.cpu(), minlength=classes)

    @handles(SoftLabels)
    def _soft_labels(self, task: SoftLabels) -> Reply:
        logits = predict_logits(self.model, task.dreams.to(self.device))  # (B, classes)
        counts = self._class_counts(logits.shape[1])
        values = soft_label_values(logits, self.weight, counts, self.config.distill.soft_labels)
        return self._contribution(values, "soft labels", task.round, already_weighted=True)

    @handles(AcquireKnowledge)
    def _acquire_knowledge(self, task: AcquireKnowledge) -> Reply:
        distill = self.config.distill
        # A round's batches arrive together; the buffer counts dream batches, as the server's
        # (each of the dreams the coordinator kept of it, `distill.keep_confident`).
        batch = kept_per_batch(self.config.dream.batch_size, distill.keep_confident)
        for dreams, logits in zip(task.dreams.split(batch), task.logits.split(batch), strict=True):
            self.buffer.add(dreams.to(self.device), logits.to(self.device))
        dreams, logits = self.buffer.tensors()
        train = self.config.train
        recipe = OptimizerConfig(distill.lr, train.momentum, train.weight_decay, train.batch_size,
                                 distill.optimizer)
        loss = knowledge_acquisition(
            self.model, self.x_train, self.y_train, dreams, logits, distill.epochs, recipe,
            distill.kd_weight, distill.temperature, distill.dream_batch_size, self.generator,
            distill.dream_bn,
            log_class_prior(self.y_train, logits.shape[1]) if distill.local_loss == "balanced" else None,
            distill.dream_shift, distill.schedule == "cosine",
        )
        if self.student is not None and self.config.dream.adaptive > 0:
            # The adaptive-teaching student learns from dreams only, like the server model,
            # so it marks what the dreams have not yet taught.
            server = self.config.server_model
            train_on_dreams(self.student, dreams, logits, server.steps,
                            server.optimizer_config(),
                            distill.temperature, self.generator, distill.dream_shift)
        return TrainReport(len(self.x_train), loss)

    @handles(FedAvgTrain)
    def _fedavg_train(self, task: FedAvgTrain) -> Reply:
        if task.parameters is not None:
            load_flat_state(self.model, task.parameters)
        train_supervised(
            self.model, self.x_train, self.y_train, task.epochs, self.config.train.optimizer_config(),
            self.generator, cosine=False, log_prior=self._train_log_prior(),
        )
        return self._contribution(torch.from_numpy(flatten_state(self.model)), "parameters",
                                  task.round)

    @handles(LoadParameters)
    def _load_parameters(self, task: LoadParameters) -> Reply:
        load_flat_state(self.model, task.parameters)
        return Ack()

    @handles(Evaluate)
    def _evaluate(self, task: Evaluate) -> Reply:
        accuracy, loss = evaluate(self.model, self.x_test, self.y_test)
        return EvalReport(accuracy, loss, len(self.x_test))
