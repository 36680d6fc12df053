"""Shared helpers for the node tests: a real SecAggServer driving TaskRunners task by task.

It plays the coordinator's part over the same pb.Task / pb.TaskResult messages the daemon
carries, so the runners are tested exactly as the wire would drive them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from protos.codream.v1 import codream_pb2 as pb
from secagg import SecAggConfig, SecAggServer, ServerPhase, StepResult, decode
from secagg.messages import AdvertiseKeys, MaskedInput, ShareKeys, UnmaskResponse


class NoSnapshots:
    """Records the before_task calls; never rolls back."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def before_task(self, round_index: int, coordinator_run: str) -> bool:
        self.calls.append((round_index, coordinator_run))
        return False


def begin_message(config: SecAggConfig, session_id: bytes, index: int, weight_unit: float,
                  members: tuple[str, ...] = ()) -> pb.SecAggBegin:
    return pb.SecAggBegin(
        session_id=session_id, client_index=index, n_clients=config.n_clients, dim=config.dim,
        clip=config.clip, threshold=config.threshold, graph=config.graph,
        degree=config.degree or 0, scale=config.scale or 0.0, max_weight=config.max_weight,
        steps_per_block=config.steps_per_block, weight_unit=weight_unit, members=list(members),
    )


class SecureCoordinator:
    """A SecAggServer plus task numbering; `step` runs one summed task securely on all runners."""

    def __init__(self, config: SecAggConfig, runners: Mapping[int, object], weight_unit: float,
                 session_id: bytes = b"S" * 16, members: tuple[str, ...] = ()) -> None:
        self.config, self.runners, self.weight_unit = config, runners, weight_unit
        self.members = members
        self.server = SecAggServer(config, session_id)
        self.sequence = 0
        self.results: list[pb.TaskResult] = []

    def send(self, index: int, **body) -> pb.TaskResult:
        self.sequence += 1
        task = pb.Task(task_id=f"t{self.sequence}", round=0, coordinator_run="run-a",
                       sequence=self.sequence, **body)
        result = self.runners[index].run(task, f"member-{index}")
        assert result.task_id == task.task_id and result.sequence == task.sequence
        self.results.append(result)
        return result

    def setup_block(self) -> None:
        sid = self.server.session_id
        for i in self.runners:
            begin = begin_message(self.config, sid, i, self.weight_unit, self.members)
            reply = self.send(i, secagg_begin=begin)
            assert reply.WhichOneof("body") == "secagg_message", reply
            self.server.receive_advertise(decode(reply.secagg_message, AdvertiseKeys))
        directories = {i: self.server.key_directory(i).to_bytes() for i in self.runners}
        for i, directory in directories.items():
            reply = self.send(i, key_directory=directory)
            self.server.receive_share_keys(decode(reply.secagg_message, ShareKeys))

    def step(self, method_task: Callable[[int], dict]) -> tuple[StepResult, dict[int, pb.TaskResult]]:
        """One summed task: `method_task(i)` gives node i's body fields (e.g. dream_step=...)."""
        first = self.server.phase is ServerPhase.ADVERTISE
        if first:
            self.setup_block()
        sid, step = self.server.session_id, self.server.step
        masked = {}
        for i in self.runners:
            delivery = self.server.share_delivery(i).to_bytes() if first else b""
            secure = pb.SecureStep(session_id=sid, step=step, share_delivery=delivery)
            masked[i] = self.send(i, secure=secure, **method_task(i))
            assert masked[i].WhichOneof("body") == "masked", masked[i]
            self.server.receive_masked_input(decode(masked[i].masked.masked_input, MaskedInput))
        for i in self.server.close_inputs():
            request = self.server.unmask_request(i).to_bytes()
            reply = self.send(i, unmask_request=request)
            self.server.receive_unmask(decode(reply.secagg_message, UnmaskResponse))
        return self.server.finish_step(), masked
