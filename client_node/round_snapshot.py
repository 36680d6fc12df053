"""A node's snapshot of its state at the start of a round, for coordinator restarts.

A restarted coordinator re-runs its interrupted round from the start. A node that had already
begun that round must first roll back, or the re-run would apply the round twice to its model
(and draw different shuffles from its generator). So the node snapshots everything a round
changes — model, student, dream buffer, generator — when a new round begins, and restores it
when the same round arrives from a different coordinator run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codream.atomic_files import atomic_write
from codream.node_logic import NodeTaskLogic

log = logging.getLogger(__name__)


FORMAT = "codream.node-snapshot/1"


class RoundSnapshots:
    """`persist_to`: also write each snapshot there (atomically), so a node process that is
    killed and restarted resumes with its model as of its last round start, not from scratch;
    `fingerprint` ties the file to one run configuration and node index."""

    def __init__(self, logic: NodeTaskLogic, persist_to: Path | None = None, fingerprint: str = ""):
        self.logic = logic
        self._round = -1  # no snapshot yet: any round starts one
        self._run: str | None = None
        self._state: dict[str, Any] | None = None
        self.persist_to = persist_to
        self.fingerprint = fingerprint
        self._fresh: dict[str, Any] | None = None  # the state before a snapshot was loaded

    def load(self) -> bool:
        """Restores the persisted snapshot of this run and node, if there is one."""
        if self.persist_to is None or not self.persist_to.is_file():
            return False
        saved = torch.load(self.persist_to, map_location="cpu", weights_only=True)
        if saved.get("format") != FORMAT or saved.get("fingerprint") != self.fingerprint:
            log.warning("node %s: %s belongs to another run or node; starting fresh",
                        self.logic.node_id, self.persist_to)
            return False
        self._fresh = self._capture()
        self._state = saved["state"]
        self._restore(self._state)
        self._round, self._run = int(saved["round"]), None
        log.info("node %s: restored its state at the start of round %d from %s", self.logic.node_id,
                 self._round, self.persist_to)
        return True

    def _persist(self) -> None:
        if self.persist_to is None or self._state is None:
            return
        self.persist_to.parent.mkdir(parents=True, exist_ok=True)
        saved = {"format": FORMAT, "fingerprint": self.fingerprint, "round": self._round,
                 "state": self._state}
        atomic_write(self.persist_to, lambda stream: torch.save(saved, stream), private=True)

    @property
    def round(self) -> int:
        """The round of the current snapshot (−1 before the first task)."""
        return self._round

    def before_task(self, round_index: int, coordinator_run: str) -> bool:
        """Call before handling each task; True when the node was rolled back to the round's start."""
        if round_index < self._round and self._fresh is not None:
            # The snapshot on disk is ahead of this coordinator: it belongs to an earlier run
            # with the same configuration, not to this one. Start from the node's initial state.
            log.warning("node %s: the coordinator is at round %d, its snapshot at %d: a new run; "
                        "starting from the initial model", self.logic.node_id, round_index, self._round)
            self._restore(self._fresh)
            self._round, self._run, self._state, self._fresh = -1, None, None, None
        if round_index >= self._round:
            self._fresh = None  # the loaded snapshot is this run's
        if round_index < self._round:
            raise ValueError(
                f"node {self.logic.node_id}: task for round {round_index}, but round "
                f"{self._round} has already begun; rounds never go backwards"
            )
        if round_index > self._round:
            self._state = self._capture()
            self._round, self._run = round_index, coordinator_run
            self._persist()
            return False
        if coordinator_run == self._run:
            return False
        log.info("node %s round %d: coordinator run %s re-runs the round; restoring its start",
                 self.logic.node_id, round_index, coordinator_run)
        assert self._state is not None
        self._restore(self._state)
        self._run = coordinator_run
        return True

    def finish(self) -> None:
        """The run is complete: its final state becomes the start of the next round, so a run
        extended with `--rounds` continues from the trained model instead of re-entering the
        last round from its start (which would lose that round's training)."""
        self._state = self._capture()
        self._round, self._run, self._fresh = self._round + 1, None, None
        self._persist()

    def _capture(self) -> dict[str, Any]:
        logic = self.logic
        return {
            "model": _clone_state(logic.model),
            "student": _clone_state(logic.student) if logic.student is not None else None,
            "buffer": [(d.clone(), z.clone()) for d, z in logic.buffer.state()],
            "generator": logic.generator.get_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        # Copy out of the snapshot, which must survive for a further restart of the same round.
        logic = self.logic
        logic.model.load_state_dict(state["model"])
        if logic.student is not None:
            logic.student.load_state_dict(state["student"])
        device = logic.device
        logic.buffer.load_state([(d.to(device, copy=True), z.to(device, copy=True))
                                 for d, z in state["buffer"]])
        logic.generator.set_state(state["generator"])


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Deep copy on the module's own device (no host round trip for a CUDA model)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
