"""In-process driver: runs a server and its clients through every round, over the wire format.

Used by tests and benchmarks; the services issue replaces it with gRPC calls that carry the same
messages. Dropouts are simulated by clients that stop answering at a named phase.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.client import SecAggClient
from secagg.config import SecAggConfig
from secagg.messages import AnyMessage, decode
from secagg.server import SecAggServer, ServerPhase, StepResult

PHASES = ("advertise", "share_keys", "masked_input", "consistency", "unmasking")


def _wire(message: AnyMessage) -> AnyMessage:
    """Round-trip through bytes, as a network would."""
    return decode(message.to_bytes(), type(message))


@dataclass
class InProcessSession:
    """A server and all its clients in one process. `gone` holds clients that stopped answering."""

    config: SecAggConfig
    server: SecAggServer
    clients: dict[int, SecAggClient]
    gone: set[int] = field(default_factory=set)

    @classmethod
    def create(
        cls,
        config: SecAggConfig,
        *,
        session_id: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        identity_keys: Mapping[int, Ed25519PrivateKey] | None = None,
    ) -> InProcessSession:
        """`identity_keys` (authenticated configs): each client's long-lived Ed25519 key; None
        draws fresh ones for this session."""
        identities = keys = None
        if config.authenticated:
            keys = dict(identity_keys) if identity_keys is not None else {
                i: Ed25519PrivateKey.generate() for i in range(config.n_clients)}
            if sorted(keys) != list(range(config.n_clients)):
                raise ValueError(f"identity_keys must hold a key for each of the {config.n_clients} "
                                 "clients")
            identities = {i: k.public_key() for i, k in keys.items()}
        server = SecAggServer(config, session_id or random_bytes(16), peer_identities=identities)
        clients = {
            i: SecAggClient(
                i,
                config,
                server.session_id,
                identity_key=None if keys is None else keys[i],
                peer_identities=identities,
                random_bytes=random_bytes,
            )
            for i in range(config.n_clients)
        }
        return cls(config, server, clients)

    def live(self) -> list[int]:
        return [i for i in sorted(self.clients) if i not in self.gone and i in self.server.alive]

    def setup_block(self, dropouts: Mapping[str, Collection[int]] | None = None) -> None:
        """AdvertiseKeys and ShareKeys for the next block."""
        drops = _drops(dropouts)
        self.gone |= drops["advertise"]
        for i in self.live():
            self.server.receive_advertise(_wire(self.clients[i].advertise_keys()))
        shared = [(i, self.server.key_directory(i)) for i in self.live()]
        self.gone |= drops["share_keys"]
        for i, directory in shared:
            if i not in self.gone:
                message = self.clients[i].share_keys(_wire(directory))
                self.server.receive_share_keys(_wire(message))
        for i in self.live():
            self.clients[i].receive_shares(_wire(self.server.share_delivery(i)))

    def step(
        self,
        inputs: Mapping[int, np.ndarray],
        weights: Mapping[int, float] | None = None,
        dropouts: Mapping[str, Collection[int]] | None = None,
    ) -> StepResult:
        """One aggregation step; sets up a new block first when the previous one is spent."""
        if self.server.phase is ServerPhase.ADVERTISE:
            self.setup_block()
        drops = _drops(dropouts)
        step = self.server.step
        self.gone |= drops["masked_input"]
        for i in self.live():
            weight = 1.0 if weights is None else weights[i]
            message = self.clients[i].masked_input(step, inputs[i], weight)
            self.server.receive_masked_input(_wire(message))
        if self.config.authenticated:
            signers = [i for i in self.server.close_inputs() if i not in self.gone]
            consistency_requests = [(i, self.server.consistency_request(i)) for i in signers]
            self.gone |= drops["consistency"]
            for i, consistency_request in consistency_requests:
                if i not in self.gone:
                    signature = self.clients[i].sign_survivors(_wire(consistency_request))
                    self.server.receive_consistency(_wire(signature))
        survivors = [i for i in self.server.close_inputs() if i not in self.gone]
        unmask_requests = [(i, self.server.unmask_request(i)) for i in survivors]
        self.gone |= drops["unmasking"]
        for i, unmask_request in unmask_requests:
            if i not in self.gone:
                self.server.receive_unmask(_wire(self.clients[i].unmask(_wire(unmask_request))))
        return self.server.finish_step()


def _drops(dropouts: Mapping[str, Collection[int]] | None) -> dict[str, set[int]]:
    dropouts = dict(dropouts or {})
    unknown = set(dropouts) - set(PHASES)
    if unknown:
        raise ValueError(f"dropout phases must be among {PHASES}, got {sorted(unknown)}")
    return {phase: set(dropouts.get(phase, ())) for phase in PHASES}


def run_aggregation(
    config: SecAggConfig,
    inputs: Mapping[int, np.ndarray],
    weights: Mapping[int, float] | None = None,
    dropouts: Mapping[str, Collection[int]] | None = None,
    *,
    random_bytes: Callable[[int], bytes] = os.urandom,
    identity_keys: Mapping[int, Ed25519PrivateKey] | None = None,
) -> StepResult:
    """One-shot secure sum of `inputs` (client id -> (d,) floats) with simulated dropouts;
    `identity_keys` as in `InProcessSession.create`."""
    session = InProcessSession.create(config, random_bytes=random_bytes, identity_keys=identity_keys)
    drops = _drops(dropouts)
    session.setup_block({p: drops[p] for p in ("advertise", "share_keys")})
    return session.step(inputs, weights, {p: drops[p] for p in PHASES[2:]})
