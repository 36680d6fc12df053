"""The coordinator's round logic for CoDream, FedAvg and Independent, as a message-driven generator.

The generator yields `Broadcast` requests and receives `Replies`; it never touches a network.
The in-memory transport and the gRPC coordinator drive the very same object, so a local
simulation and a real cluster compute the same thing for the same seeds.

Everything that carries from one round to the next is in `state_dict()`; a driver that saves it
after each `RoundReport` can restart a killed coordinator at the next round (mid-round state is
never saved: an interrupted round is re-run from its start).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from codream.aggregation import AggregateSum
from codream.config import RunConfig
from codream.dream_buffer import DreamBuffer
from codream.local_dreaming import initial_dreams
from codream.messages import (
    AcquireKnowledge,
    DreamStep,
    EvalReport,
    Evaluate,
    FedAvgTrain,
    LoadParameters,
    Reply,
    SoftLabels,
    Task,
    TrainLocal,
)
from codream.models import build_model
from codream.parameters import state_size
from codream.server_optimizer import apply_update, init_state
from codream.soft_labels import aggregated_logits, soft_label_size
from codream.training import evaluate, train_on_dreams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Broadcast:
    """Send one task to every live node; summed tasks come back as one AggregateSum."""

    task: Task
    summed: bool = False
    size: int = 0  # length of each summed vector


@dataclass
class Replies:
    by_node: Mapping[str, Reply]
    total: AggregateSum | None = None
    traffic: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # node: (down, up) bytes


@dataclass(frozen=True)
class RoundReport:
    """Yielded after each round so drivers can show progress and write checkpoints."""

    round: int
    metrics: dict[str, Any]


Request = Broadcast | RoundReport


def run_round_logic(
    rounds: Generator[Request, Replies | None, None],
    broadcast: Callable[[Broadcast], Replies],
    on_report: Callable[[RoundReport], None] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Every transport's loop: deliver each Broadcast, pass each RoundReport on. `check` runs
    before and after each delivery and may raise to abandon the run (a stopping service)."""
    check = check or (lambda: None)

    def advance(value: Replies | None) -> Request | None:
        try:
            return rounds.send(value)
        except StopIteration:
            return None

    request = advance(None)
    while request is not None:
        check()
        if isinstance(request, RoundReport):
            if on_report is not None:
                on_report(request)
            request = advance(None)
            continue
        replies = broadcast(request)
        check()
        request = advance(replies)


def dream_seed(seed: int, round_index: int, batch: int) -> int:
    """Distinct, reproducible x̂⁰ seed per (run, round, batch)."""
    return (seed * 1_000_003 + round_index * 1_009 + batch) % (2**63 - 1)


class CoordinatorRoundLogic:
    def __init__(
        self,
        config: RunConfig,
        input_shape: tuple[int, int, int],
        num_classes: int,
        server_model: nn.Module | None,
        x_test: torch.Tensor | None,
        y_test: torch.Tensor | None,
        device: torch.device | None = None,
    ):
        self.config = config
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.device = device or torch.device("cpu")
        self.server_model = server_model.to(self.device) if server_model is not None else None
        self.x_test = x_test.to(self.device) if x_test is not None else None
        self.y_test = y_test.to(self.device) if y_test is not None else None
        self.server_buffer = DreamBuffer(config.distill.buffer_batches)
        self.generator = torch.Generator().manual_seed(config.seed + 424_242)
        self.history: list[dict[str, Any]] = []
        self.last_dreams: torch.Tensor | None = None
        # FedAvg's global parameter vector θ (None until the first round has averaged one).
        self.global_parameters: np.ndarray | None = None
        # The round `run()` starts at: FedAvg has no warm-up round 0.
        self.next_round = 1 if config.strategy == "fedavg" else 0
        self._traffic: dict[str, list[int]] = {}

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What carries across rounds, as CPU tensors and plain values (weights_only-loadable).

        Valid between rounds, i.e. right after a RoundReport. The server model needs no
        optimiser state: `train_on_dreams` builds a fresh SGD every round.
        """
        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True)

        return {
            "strategy": self.config.strategy,
            "next_round": self.next_round,
            "history": copy.deepcopy(self.history),
            "server_model": (
                {k: cpu(v) for k, v in self.server_model.state_dict().items()}
                if self.server_model is not None else None
            ),
            "server_buffer": [[cpu(d), cpu(z)] for d, z in self.server_buffer.state()],
            "generator": self.generator.get_state(),
            "last_dreams": cpu(self.last_dreams) if self.last_dreams is not None else None,
            "global_parameters": (
                torch.from_numpy(self.global_parameters.copy())
                if self.global_parameters is not None else None
            ),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a `state_dict()`; `run()` then starts at the round after the last completed one."""
        if state["strategy"] != self.config.strategy:
            raise ValueError(
                f"checkpoint is of strategy {state['strategy']!r}, this run is {self.config.strategy!r}"
            )
        if (state["server_model"] is None) != (self.server_model is None):
            raise ValueError("checkpoint and this coordinator disagree on having a server model")
        self.next_round = int(state["next_round"])
        self.history = copy.deepcopy(list(state["history"]))
        if self.server_model is not None:
            self.server_model.load_state_dict(state["server_model"])
        self.server_buffer.load_state(
            [(d.to(self.device), z.to(self.device)) for d, z in state["server_buffer"]]
        )
        self.generator.set_state(state["generator"])
        last = state["last_dreams"]
        self.last_dreams = last.clone() if last is not None else None
        parameters = state["global_parameters"]
        self.global_parameters = parameters.numpy().copy() if parameters is not None else None
        self._traffic = {}

    # ---- helpers -------------------------------------------------------------------------
    def _send(self, task: Task, size: int = 0, summed: bool = False):
        replies: Replies = yield Broadcast(task, summed, size)
        for node, (down, up) in replies.traffic.items():
            acc = self._traffic.setdefault(node, [0, 0])
            acc[0] += down
            acc[1] += up
        return replies

    def _evaluate_round(self, round_index: int, started: float, extra: dict[str, Any]):
        replies = yield from self._send(Evaluate(f"r{round_index}/eval", round_index))
        clients = {
            node: {"accuracy": r.accuracy, "loss": r.loss}
            for node, r in sorted(replies.by_node.items())
            if isinstance(r, EvalReport)
        }
        accuracies = [c["accuracy"] for c in clients.values()]
        metrics: dict[str, Any] = {
            "round": round_index,
            "clients": clients,
            "mean_client_accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
            "bytes": {
                node: {"received": down, "sent": up}
                for node, (down, up) in sorted(self._traffic.items())
            },
            "seconds": time.perf_counter() - started,
            **extra,
        }
        self._traffic = {}
        self.history.append(metrics)
        self.next_round = round_index + 1  # before the report: a checkpoint taken on it is complete
        log.info("round %d: mean client accuracy %.4f", round_index, metrics["mean_client_accuracy"])
        yield RoundReport(round_index, metrics)

    # ---- strategies ----------------------------------------------------------------------
    def run(self) -> Generator[Request, Replies | None, None]:
        strategy = self.config.strategy
        if strategy == "codream":
            yield from self._run_codream()
        elif strategy == "fedavg":
            yield from self._run_fedavg()
        elif strategy == "independent":
            yield from self._run_independent()
        else:
            raise ValueError(f"strategy {strategy!r} has no federated round logic")

    def _run_independent(self):
        config = self.config
        for r in range(self.next_round, config.rounds + 1):
            started = time.perf_counter()
            epochs = config.warmup_epochs if r == 0 else config.local_epochs
            yield from self._send(TrainLocal(f"r{r}/train", r, epochs))
            yield from self._evaluate_round(r, started, {})

    def _run_fedavg(self):
        config = self.config
        for r in range(self.next_round, config.rounds + 1):
            started = time.perf_counter()
            parameters = self.global_parameters
            size = self._parameter_count() if parameters is None else len(parameters)
            task = FedAvgTrain(f"r{r}/fedavg", r, config.local_epochs, parameters)
            replies = yield from self._send_required_sum(task, size)
            parameters = replies.total.mean().astype(np.float32)
            yield from self._send(LoadParameters(f"r{r}/load", r, parameters))
            self.global_parameters = parameters  # θ for the next round, and for checkpoints
            yield from self._evaluate_round(
                r, started, {"clients_summed": len(replies.total.contributors)}
            )

    def _parameter_count(self) -> int:
        """FedAvg's vector length from the architecture alone (a secure sum must know it up
        front); the coordinator builds the model only to count, never sees a node's weights."""
        with torch.random.fork_rng(devices=[]):
            model = build_model(self.config.model_for(0), self.input_shape, self.num_classes)
        return state_size(model)

    def _send_required_sum(self, task: Task, size: int):
        """A sum the round cannot go on without (FedAvg's parameters): none at all is an error."""
        replies = yield from self._send(task, size, summed=True)
        if replies.total is None or replies.total.weight <= 0:
            raise RuntimeError(f"{task.task_id}: no node contributed to the sum")
        return replies

    def _run_codream(self):
        config = self.config
        for r in range(self.next_round, config.rounds + 1):
            started = time.perf_counter()
            epochs = config.warmup_epochs if r == 0 else config.local_epochs
            if epochs > 0:
                yield from self._send(TrainLocal(f"r{r}/train", r, epochs))
            extra: dict[str, Any] = {}
            if r > 0:
                extra = yield from self._codream_round(r)
            yield from self._evaluate_round(r, started, extra)

    def _codream_round(self, r: int):
        config = self.config
        dream_shape = (config.dream.batch_size, *self.input_shape)
        size = int(np.prod(dream_shape))
        extra: dict[str, Any] = {"dream_steps_summed": [], "excluded": {}}
        for b in range(config.dream.batches_per_round):
            seed = dream_seed(config.seed, r, b)
            dreams = initial_dreams(seed, dream_shape)  # (B, C, H, W)
            state = init_state(config.server_optimizer, dreams)
            for s in range(config.dream.global_steps):
                task = DreamStep(
                    f"r{r}/b{b}/s{s}", r, b, s, seed, dream_shape, None if s == 0 else dreams
                )
                replies = yield from self._send(task, size, summed=True)
                total = replies.total
                extra["dream_steps_summed"].append(len(total.contributors))
                for node, why in total.excluded.items():  # the first reason is when it dropped
                    extra["excluded"].setdefault(node, why)
                if total.weight <= 0:
                    log.warning("round %d step %d: no usable dream update; step skipped", r, s)
                    continue
                delta = torch.from_numpy(total.mean().astype(np.float32)).view(dream_shape)
                dreams, state = apply_update(config.server_optimizer, state, dreams, delta)
            mode = config.distill.soft_labels
            logits_size = soft_label_size(config.dream.batch_size, self.num_classes, mode)
            replies = yield from self._send(SoftLabels(f"r{r}/b{b}/labels", r, dreams),
                                            logits_size, summed=True)
            if replies.total.weight <= 0:
                log.warning("round %d: no soft labels aggregated; batch dropped", r)
                continue
            logits = aggregated_logits(
                torch.from_numpy(replies.total.total.astype(np.float32)), replies.total.weight,
                config.dream.batch_size, self.num_classes, mode,
            )
            yield from self._send(AcquireKnowledge(f"r{r}/b{b}/acquire", r, dreams, logits))
            self.server_buffer.add(dreams.to(self.device), logits.to(self.device))
            self.last_dreams = dreams
        extra["dream_steps_summed"] = (
            int(min(extra["dream_steps_summed"])) if extra["dream_steps_summed"] else 0
        )
        extra.update(self._train_server_model())
        return extra

    def _train_server_model(self) -> dict[str, Any]:
        """The server model learns from dreams only; its test accuracy measures dream quality."""
        if self.server_model is None or self.server_buffer.num_batches == 0:
            return {}
        server = self.config.server_model
        dreams, logits = self.server_buffer.tensors()
        train_on_dreams(
            self.server_model, dreams, logits, server.steps,
            server.sgd(),
            self.config.distill.temperature, self.generator,
        )
        if self.x_test is None or self.y_test is None:
            return {}
        accuracy, _ = evaluate(self.server_model, self.x_test, self.y_test)
        return {"server_accuracy": accuracy}
