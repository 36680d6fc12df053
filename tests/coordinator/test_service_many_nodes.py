"""Scale: 64 node threads against one real gRPC coordinator, SecAgg+ with sampling, nodes killed.

A CoordinatorService on 127.0.0.1 port 0 and 64 nodes in threads, each speaking the wire
protocol over its own channel with the node's own TaskRunner (its SecAggClient), its method
replies scripted so that every sum is known in advance. Each round samples 40 nodes (above the
forced switch-over of 16 members: a SecAgg+ session, Bell et al.'s degree and threshold), and
4 of them (10%) die on receiving the round's second dream step: they drop their heartbeat and
never answer, then come back under a new membership. Checked: every round completes; each dream
step's released mean is exactly (to the fixed-point quantum) the mean of the nodes that were
meant to be in it, the dead excluded from the step they died in; and no membership is left
behind once the nodes have gone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from service_helpers import CALL_TIMEOUT, RawNode, metrics, serving, tiny_config

from codream.client_sampling import draw_participants
from codream.local_dreaming import initial_dreams
from codream.messages import DreamStep, SoftLabels
from codream.strategies.codream import dream_seed
from coordinator.network_transport import Timeouts

pytestmark = pytest.mark.integration

N, SAMPLE, KILLED, ROUNDS, STEPS = 64, 40, 4, 2, 4
NODES = [f"node-{i}" for i in range(N)]
SHAPE = (8, 1, 8, 8)  # 8 digits-size dreams


def weight(node: str) -> float:
    return 1.0 + int(node.split("-")[1]) % 4


def value(node: str) -> float:
    return 0.001 * (1 + int(node.split("-")[1]))  # v_k, the same in every element


def victims(config, r: int) -> set[str]:
    sampled = draw_participants(NODES, config.seed, r, SAMPLE, 2)
    return set(sampled[r: r + KILLED])


class Node:
    """One node thread: pulls, answers, dies once where told, joins again, until shut down."""

    def __init__(self, served, node_id: str, config, seen: dict, lock: threading.Lock) -> None:
        self.served, self.node_id, self.config = served, node_id, config
        self.seen, self.lock = seen, lock
        self.deaths = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=node_id, daemon=True)

    def _fresh(self) -> RawNode:
        w, v = weight(self.node_id), value(self.node_id)
        node = RawNode(self.node_id, self.served.channel(self.node_id), self.config, w,
                       values=lambda task_id, size: np.full(size, w * v, np.float32))
        handle = node.logic.handle

        def recording(task):  # what the coordinator sent: the dreams after each step
            if isinstance(task, (DreamStep, SoftLabels)) and task.dreams is not None:
                step = task.step if isinstance(task, DreamStep) else STEPS
                with self.lock:
                    self.seen.setdefault((task.round, step), task.dreams.clone())
            return handle(task)

        node.logic.handle = recording
        node.heartbeat_seconds = 0.5
        for _ in range(200):  # the old membership ends when its heartbeat does
            try:
                node.enter()
                return node
            except Exception:  # noqa: BLE001 — ALREADY_EXISTS until then
                time.sleep(0.05)
        raise AssertionError(f"{self.node_id} could not join again")

    def _run(self) -> None:
        try:
            node = self._fresh()
            while True:
                task = node.pull(wait=1.0)
                kind = task.WhichOneof("body")
                if kind is None:
                    continue
                if kind == "shutdown":
                    node.submit(node.answer(task))
                    node.leave()
                    return
                r = task.round
                if (kind == "dream_step" and task.task_id == f"r{r}/b0/s1"
                        and self.node_id in victims(self.config, r) and self.deaths < r):
                    self.deaths += 1  # dies mid-step: no masked input, its heartbeat ends
                    node.leave()
                    node = self._fresh()
                    continue
                node.submit(node.answer(task))
        except BaseException as error:  # noqa: BLE001 — reported by the test
            self.error = error


def test_64_nodes_secagg_plus_with_sampling_and_killed_nodes(tmp_path):
    config = tiny_config(
        tmp_path / "run", clients=N, rounds=ROUNDS, clients_per_round=SAMPLE,
        **{"secagg.complete_up_to": 16, "dream.global_steps": STEPS, "server_optimizer.name": "fedavg",
           "server_optimizer.lr": 1.0, "distill.epochs": 0})
    seen: dict = {}
    lock = threading.Lock()
    started = time.perf_counter()
    timeouts = Timeouts(task=60, step=60, secagg_round=60, rejoin=30)  # a round waits for all 64
    with serving(config, liveness_seconds=30.0, timeouts=timeouts) as served:
        nodes = [Node(served, n, config, seen, lock) for n in NODES]
        for node in nodes:
            node.thread.start()
        assert len(served.service.membership.wait_for(N, 60.0)) == N
        served.start_run()
        served.wait_run(timeout=240.0)
        for node in nodes:
            node.thread.join(CALL_TIMEOUT)
        membership, dispatcher = served.service.membership, served.service.dispatcher
        deadline = time.monotonic() + CALL_TIMEOUT
        while membership.memberships() and time.monotonic() < deadline:
            time.sleep(0.05)
        left, joins, tracked = membership.memberships(), membership.joins, dispatcher.tracked_members()
    seconds = time.perf_counter() - started
    print(f"{N} nodes, {ROUNDS} rounds of {STEPS} secure steps: {seconds:.1f} s")
    assert [n.error for n in nodes if n.error] == []
    assert sum(n.deaths for n in nodes) == KILLED * ROUNDS
    assert left == 0 and joins == N + KILLED * ROUNDS  # every membership ended and was dropped
    assert tracked <= max(64, 2 * N) + 1

    rounds = metrics(config.out)["rounds"]
    assert [m["round"] for m in rounds] == list(range(ROUNDS + 1))  # every round completed
    for m in rounds[1:]:
        r = m["round"]
        sampled = draw_participants(NODES, config.seed, r, SAMPLE, 2)
        dead = victims(config, r)
        assert m["participants"] == list(sampled)
        assert m["secure_graph"][0] == {"graph": "secagg+", "degree": 10, "threshold": 6,
                                        "clients": SAMPLE}
        assert m["fewest_clients_per_dream_step"] == SAMPLE - KILLED
        assert dead <= set(m["excluded"])
        before = initial_dreams(dream_seed(config.seed, r, 0), SHAPE)
        for s in range(STEPS):
            members = [n for n in sampled if s == 0 or n not in dead]
            mean = sum(weight(n) * value(n) for n in members) / sum(weight(n) for n in members)
            after = seen[(r, s + 1)]
            np.testing.assert_allclose((after - before).numpy(), np.full(SHAPE, mean), rtol=0,
                                       atol=2e-5, err_msg=f"round {r} step {s}")
            before = after
        assert torch.isfinite(before).all()
