"""The node's options: where the coordinator is, who the node is, and its local overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client_node.channel import ChannelSecurity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class NodeOptions:
    coordinator: str  # HOST:PORT
    node_id: str
    security: ChannelSecurity
    device: str = "auto"  # the node's own; overrides the run config's
    dataset: str | None = None  # overrides the run config's (e.g. a local npz path)
    partition: str = "auto"  # auto: all of --dataset when given, else this index's partition
    max_message_bytes: int = 256 * 2**20
    pull_wait: float = 10.0
    call_timeout: float = 30.0  # Join and Ready
    submit_timeout: float = 300.0  # results may be hundreds of MiB
    state_dir: str | None = None  # keep round-start snapshots here, to survive a restart
    # Authenticated secure aggregation (both or neither): this node's Ed25519 identity key and
    # the roster it pins, node id -> raw 32-byte Ed25519 public key (it holds this node's own).
    identity_key: Ed25519PrivateKey | None = field(default=None, repr=False)  # a secret
    peer_identities: Mapping[str, bytes] | None = None
    # Without a roster: the CA bundle (PEM) that vouches for the members' identity certificates
    # (mTLS-bound mode: this node's certificate carries its identity key).
    identity_ca: bytes | None = None
    # Refuse unauthenticated secure sessions (implied by a roster or identity_ca).
    require_authentication: bool = False
