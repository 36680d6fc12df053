"""Building the node's task logic from the run config it receives at Join."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client_node.node_options import NodeOptions
from client_node.round_snapshot import RoundSnapshots
from client_node.secure_contribution import SecureContribution
from client_node.task_runner import TaskRunner
from client_node.used_sessions import UsedSessions, open_used_sessions
from codream.config import ConfigError, RunConfig, build, computation_of, to_toml
from codream.data import load_dataset
from codream.devices import resolve_device
from codream.identity_certificates import load_certificates
from codream.node_build import build_node, client_partitions
from codream.node_logic import NodeTaskLogic
from codream.toml_compat import tomllib

log = logging.getLogger(__name__)

# build_logic's shape; called with whole_dataset=True when the node trains on all of its data set.
BuildLogic = Callable[[RunConfig, int, torch.device], NodeTaskLogic]


class SetupError(Exception):
    """The run config from Join cannot be built on this node: a retry would not fix it."""


@dataclass
class BuiltNode:
    """The node's task logic for one (run config text, node index); kept across re-joins."""

    key: tuple[str, int]
    config: RunConfig
    logic: NodeTaskLogic
    snapshots: RoundSnapshots
    runner: TaskRunner


def build_logic(config: RunConfig, index: int, device: torch.device,
                whole_dataset: bool = False) -> NodeTaskLogic:
    """Exactly what `codream simulate` builds for client `index`; with `whole_dataset` (an
    organisation's own data set) the node trains on all of it instead of one partition."""
    dataset = load_dataset(config.dataset)
    if whole_dataset:
        parts = [np.arange(len(dataset.y_train))] * config.clients
    else:
        parts = client_partitions(config, dataset)
    return build_node(config, index, dataset, parts, device)


def uses_whole_dataset(options: NodeOptions) -> bool:
    """Whether the node trains on all of its data set (partition all, or auto with --dataset)."""
    if options.partition == "auto":
        return bool(options.dataset)
    return options.partition == "all"


def node_config(options: NodeOptions, run_config_toml: str, node_index: int) -> RunConfig:
    """The run config from Join with the node's own device and data set; ConfigError if invalid."""
    config = build(RunConfig, tomllib.loads(run_config_toml))
    overrides = {"device": options.device}
    if options.dataset:
        overrides["dataset"] = options.dataset
    config = dataclasses.replace(config, **overrides)
    if not 0 <= node_index < config.clients:
        raise ConfigError(f"node_index {node_index} not in [0, {config.clients})")
    return config


def snapshot_fingerprint(config: RunConfig, node_index: int) -> str:
    """What ties a node's snapshot to a run: its node index and what each round computes.
    `rounds` is left out, so a finished run extended by more rounds keeps its snapshots (as the
    coordinator's checkpoint does), and so are `device` and `out`, which say where, not what."""
    return hashlib.sha256(f"{node_index}\n{to_toml(computation_of(config))}".encode()).hexdigest()


def build_from_join(options: NodeOptions, run_config_toml: str, node_index: int,
                    build_logic: BuildLogic = build_logic,
                    used_sessions: UsedSessions | None = None) -> BuiltNode:
    """The logic, its round snapshots (loaded from the state dir) and runner; SetupError if the
    run config cannot be built here. `used_sessions`: the secure sessions this node process has
    begun (the daemon's, kept across rebuilds); by default read from the state dir."""
    try:
        config = node_config(options, run_config_toml, node_index)
        torch.set_num_threads(config.threads)  # part of the run: the same bits as simulate
        device = resolve_device(config.device)
        if uses_whole_dataset(options):
            logic = build_logic(config, node_index, device, whole_dataset=True)
        else:
            logic = build_logic(config, node_index, device)
    except (tomllib.TOMLDecodeError, ValueError, OSError) as error:  # ConfigError too
        raise SetupError(f"cannot build from the run config: {error}") from None
    persist_to = None
    if options.state_dir:
        persist_to = Path(options.state_dir) / f"{options.node_id}.snapshot.pt"
    fingerprint = snapshot_fingerprint(config, node_index)
    snapshots = RoundSnapshots(logic, persist_to, fingerprint)
    snapshots.load()
    if used_sessions is None:
        used_sessions = open_used_sessions(options)
    runner = TaskRunner(options.node_id, logic, snapshots,
                        secure=secure_contribution(options, used_sessions))
    log.info("node %s: built %s on %s for node index %d", options.node_id,
             config.model_for(node_index), logic.device, node_index)
    return BuiltNode((run_config_toml, node_index), config, logic, snapshots, runner)


def secure_contribution(options: NodeOptions,
                        used_sessions: UsedSessions | None = None) -> SecureContribution:
    """The node's secure-aggregation client: authenticated against the roster it pins, or the
    CA that certifies identity keys (mTLS-bound), when the options hold them; it never begins
    a session in `used_sessions` (the ids the node began, see client_node.used_sessions)."""
    roster = authorities = None
    if options.peer_identities is not None:
        roster = {node: Ed25519PublicKey.from_public_bytes(raw)
                  for node, raw in options.peer_identities.items()}
    elif options.identity_ca is not None:
        authorities = load_certificates(options.identity_ca, "the identity CA")
    return SecureContribution(options.node_id, identity_key=options.identity_key,
                              peer_identities=roster, identity_authorities=authorities,
                              require_authentication=options.require_authentication,
                              used_sessions=used_sessions)
