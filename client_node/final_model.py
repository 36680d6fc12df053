"""The node's trained model, written to its state directory when the coordinator ends the run.

CoDream's promise is that a node's model never leaves the node, so the coordinator cannot write
it: each node writes its own, atomically, as a model artifact (`codream.model_artifacts`:
weights, factory name, input shape, classes, its data's normalisation, node id, strategy,
round) that `codream.load_model`, `codream evaluate` and `codream predict` read. The daemon
learns that the run is over from the coordinator's Shutdown task, which is sent only then.
"""

from __future__ import annotations

import logging
from pathlib import Path

from client_node.node_options import NodeOptions
from client_node.node_setup import BuiltNode
from codream.data import load_dataset
from codream.model_artifacts import save_model
from codream.run_artifacts import node_info

log = logging.getLogger(__name__)

SUFFIX = ".model.pt"  # STATE_DIR/<node id>.model.pt, beside the round-start snapshot


def final_model_path(options: NodeOptions) -> Path | None:
    """Where the node keeps its final model: in --state-dir, or nowhere without one."""
    if not options.state_dir:
        return None
    return Path(options.state_dir) / f"{options.node_id}{SUFFIX}"


def write_final_model(options: NodeOptions, built: BuiltNode) -> Path | None:
    """Writes the node's model as it stands at the end of the run; the path, or None without a
    state directory (said in the log, since the trained model is then lost with the process)."""
    path = final_model_path(options)
    if path is None:
        log.warning("node %s: the run is complete, but without --state-dir its trained model is "
                    "not kept", options.node_id)
        return None
    config, index = built.config, built.key[1]
    dataset = load_dataset(config.dataset)  # its shape, classes and normalisation (cached)
    info = node_info(config, dataset, index, options.node_id, built.snapshots.round)
    save_model(path, built.logic.model, info, private=True)  # like its snapshot: 0600
    log.info("node %s: wrote its trained model (%s, round %d) to %s", options.node_id, info.model,
             info.round, path)
    return path
