"""The coordinator's round logic: a run's strategy, round by round, as a message-driven generator.

It relays the strategy's broadcasts to whatever drives it (the in-memory transport, or the gRPC
coordinator: the very same object, so a local simulation and a real cluster compute the same
thing for the same seeds), counts every node's traffic, evaluates every node after each round
and yields a `RoundReport`. It also decides, once per round, which nodes take part
(`codream.client_sampling`) and addresses every broadcast accordingly: the strategy only says
whether a broadcast is the round's work (the sampled nodes) or what it shares (`sampling_reach`).

Everything that carries from one round to the next is in `state_dict()`; a driver that saves it
after each `RoundReport` can restart a killed coordinator at the next round (mid-round state is
never saved: an interrupted round is re-run from its start).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from codream.client_sampling import draw_participants, samples_every_node
from codream.config import RunConfig
from codream.data import Dataset
from codream.messages import EvalReport, Evaluate, Task
from codream.node_build import node_id
from codream.round_protocol import SHARE, Broadcast, Replies, RoundLogic, RoundReport, RoundSteps
from codream.strategies import FederationSetting, strategy_named

log = logging.getLogger(__name__)

# The live nodes (node ids in roster order) at the start of round r; a driver supplies it.
LiveNodes = Callable[[int], Sequence[str]]


class CoordinatorRoundLogic:
    def __init__(
        self,
        config: RunConfig,
        input_shape: tuple[int, int, int],
        num_classes: int,
        x_test: torch.Tensor | None,
        y_test: torch.Tensor | None,
        device: torch.device | None = None,
    ):
        strategy_type = strategy_named(config.strategy)
        if not strategy_type.federated:
            raise ValueError(f"strategy {config.strategy!r} has no federated round logic")
        self.config = config
        self.device = device or torch.device("cpu")
        self.strategy = strategy_type(FederationSetting(
            config, input_shape, num_classes,
            x_test.to(self.device) if x_test is not None else None,
            y_test.to(self.device) if y_test is not None else None,
            self.device,
        ))
        self.history: list[dict[str, Any]] = []
        self.next_round = strategy_type.first_round  # the round `run()` starts at
        self._traffic: dict[str, list[int]] = {}
        self._sessions: list[dict[str, Any]] = []  # how the round's secure sums were made

    @property
    def server_model(self) -> nn.Module | None:
        return self.strategy.server_model

    @property
    def last_dreams(self) -> torch.Tensor | None:
        return self.strategy.last_dreams

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What carries across rounds (valid between rounds, i.e. right after a RoundReport)."""
        return {
            "strategy": self.config.strategy,
            "next_round": self.next_round,
            "history": copy.deepcopy(self.history),
            **self.strategy.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a `state_dict()`; `run()` then starts at the round after the last completed one."""
        if state["strategy"] != self.config.strategy:
            raise ValueError(
                f"checkpoint is of strategy {state['strategy']!r}, this run is {self.config.strategy!r}"
            )
        self.strategy.load_state_dict(state)
        self.next_round = int(state["next_round"])
        self.history = copy.deepcopy(list(state["history"]))
        self._traffic = {}

    # ---- the run -------------------------------------------------------------------------
    def run(self, live_nodes: LiveNodes | None = None) -> RoundLogic:
        """`live_nodes(r)`: the nodes live at round r's start, in roster order (the draw of a
        sampled round is made from them); default: the config's node-0 .. node-{clients-1}."""
        live_nodes = live_nodes or (lambda r: [node_id(i) for i in range(self.config.clients)])
        for r in range(self.next_round, self.config.rounds + 1):
            started = time.perf_counter()
            participants = self._participants(r, live_nodes)
            extra = yield from self._relay(self.strategy.round(r), participants)
            yield from self._evaluate_round(r, started, extra, participants)

    def _participants(self, r: int, live_nodes: LiveNodes) -> tuple[str, ...] | None:
        """The round's sampled nodes; None when every live node takes part (no sampling)."""
        config = self.config
        if samples_every_node(config.clients_per_round):
            return None
        drawn = draw_participants(list(live_nodes(r)), config.seed, r, config.clients_per_round,
                                  config.min_clients)
        log.info("round %d: %d nodes sampled", r, len(drawn))
        return drawn

    def _addressed(self, request: Broadcast, participants: tuple[str, ...] | None) -> Broadcast:
        """The one rule of who receives what in a sampled round."""
        if participants is None:
            return request
        reach_all = request.audience == SHARE and self.config.sampling_reach == "all"
        return dataclasses.replace(request, to=None if reach_all else participants)

    def _relay(self, steps: RoundSteps, participants: tuple[str, ...] | None = None
               ) -> Generator[Broadcast, Replies, dict[str, Any]]:
        """Passes the strategy's broadcasts on and counts their traffic; returns its metrics."""
        try:
            request = next(steps)
            while True:
                self._check_declared(request.task)
                replies = yield self._addressed(request, participants)
                self._count(replies)
                request = steps.send(replies)
        except StopIteration as done:
            return done.value or {}

    def _check_declared(self, task: Task) -> None:
        if type(task) not in self.strategy.tasks:
            raise TypeError(f"strategy {self.strategy.name!r} sent {type(task).__name__}, which is "
                            "not among the tasks it declares")

    def _count(self, replies: Replies) -> None:
        for node, (down, up) in replies.traffic.items():
            acc = self._traffic.setdefault(node, [0, 0])
            acc[0] += down
            acc[1] += up
        protocol = dict(replies.total.protocol) if replies.total is not None else {}
        if protocol and protocol not in self._sessions:
            self._sessions.append(protocol)

    def _evaluate_round(self, round_index: int, started: float, extra: dict[str, Any],
                        participants: tuple[str, ...] | None = None
                        ) -> Generator[Broadcast | RoundReport, Replies | None, None]:
        evaluate = Broadcast(Evaluate(f"r{round_index}/eval", round_index), audience=SHARE)
        replies = yield self._addressed(evaluate, participants)
        assert replies is not None  # a Broadcast is always answered
        self._count(replies)
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
        if participants is not None:  # who took part: the round's sampled nodes
            metrics["participants"] = list(participants)
        if self._sessions:  # the graph, degree and threshold each secure sum ran with
            metrics["secure_graph"] = self._sessions
        self._traffic, self._sessions = {}, []
        self.history.append(metrics)
        self.next_round = round_index + 1  # before the report: a checkpoint taken on it is complete
        log.info("round %d: mean client accuracy %.4f", round_index, metrics["mean_client_accuracy"])
        yield RoundReport(round_index, metrics)


def build_coordinator(config: RunConfig, dataset: Dataset, device: torch.device
                      ) -> CoordinatorRoundLogic:
    """The round logic for `config` on `dataset`'s shapes and shared test set."""
    return CoordinatorRoundLogic(config, dataset.input_shape, dataset.num_classes,
                                 dataset.x_test, dataset.y_test, device)
