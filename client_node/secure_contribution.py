"""A node's side of secure aggregation: its SecAggClient for the current session, and masking.

Pure (no grpc, no protobuf): the task runner hands it the fields of the secagg tasks as plain
values and bytes. It keeps one `SecAggClient` per session so a new block of the same session
reuses the client (its live-neighbour set and revealed-share record must persist for the whole
session, see secagg/README.md), and turns a domain reply into a masked input. A node that
cannot contribute masks zeros with weight 0, so it stays in the session instead of dropping.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from client_node.used_sessions import UsedSessions
from codream.aggregation import Contribution
from codream.identity_certificates import verify_identity_certificate
from codream.messages import Reply, Skip
from secagg import SecAggClient, SecAggConfig, decode
from secagg.messages import (
    SESSION_ID_BYTES,
    ConsistencyRequest,
    KeyDirectory,
    ShareDelivery,
    UnmaskRequest,
)

log = logging.getLogger(__name__)


class SecureTaskError(ValueError):
    """A secure task does not fit the node's session state (no session, wrong session, bad unit)."""


@dataclass(frozen=True)
class SessionParams:
    """What SecAggBegin says: the session's config, this node's client index, and W.

    weight_unit W: nodes send (w/W)·v and w/W, so every weight lies in [0, max_weight].
    members: node ids by client index (empty: not checked).
    """

    session_id: bytes
    client_index: int
    config: SecAggConfig
    weight_unit: float
    members: tuple[str, ...] = ()
    identity_keys: tuple[bytes, ...] = ()  # raw Ed25519 keys by client index (authenticated)
    # DER mTLS certificates by client index binding those keys (b"" where the coordinator has none)
    identity_certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class MaskedReply:
    """secagg MaskedInput bytes and, for a node that contributed nothing, why."""

    masked_input: bytes
    skip_reason: str = ""


class SecureContribution:
    """The node's secure-aggregation state across sessions and blocks."""

    def __init__(self, node_id: str, random_bytes: Callable[[int], bytes] = os.urandom, *,
                 identity_key: Ed25519PrivateKey | None = None,
                 peer_identities: Mapping[str, Ed25519PublicKey] | None = None,
                 identity_authorities: Sequence[x509.Certificate] | None = None,
                 require_authentication: bool = False,
                 used_sessions: UsedSessions | None = None) -> None:
        """`identity_key`: this node's Ed25519 key, which signs its advertisements and survivor
        lists in authenticated sessions. `peer_identities`: the roster this node trusts, node id
        -> Ed25519 public key, pinned out of band: the file the organisations exchange, read by
        `codream node --identity-key node-0.identity.key --peer-identities identities.toml`.
        `identity_authorities` (without a roster): the CA certificates that vouch for the
        members' identity certificates (mTLS-bound mode: a node run with mTLS files whose
        certificate carries its identity key, see codream.identity_certificates); every relayed
        key must then come in a certificate from one of them for CN = that member.
        With a roster or authorities, or `require_authentication`, the node takes part only in
        authenticated sessions whose keys it could check, so a coordinator can neither
        substitute keys nor downgrade the session. `used_sessions`: the ids this node has begun
        (the current one included), never begun again; persisted in the node's state dir, so
        that a restart does not forget them (default: in memory, for this object only)."""
        self.node_id = node_id
        self._random_bytes = random_bytes
        self._identity = identity_key
        self._roster = None if peer_identities is None else dict(peer_identities)
        self._authorities = None if identity_authorities is None else list(identity_authorities)
        if (self._roster is not None or self._authorities is not None) and identity_key is None:
            raise ValueError("a node that checks peer identities needs its own identity key")
        if require_authentication and identity_key is None:
            raise ValueError("a node that requires authentication needs an identity key")
        self.requires_authentication = (require_authentication or self._roster is not None
                                        or self._authorities is not None)
        if (self._roster is not None and identity_key is not None and node_id in self._roster
                and _raw(self._roster[node_id]) != _raw(identity_key.public_key())):
            raise ValueError(f"the roster's identity key for {node_id} is not this node's")
        self.params: SessionParams | None = None
        self.client: SecAggClient | None = None
        self._used_sessions = used_sessions if used_sessions is not None else UsedSessions()
        if self.requires_authentication:  # which trust the node's sessions rest on, once
            log.info("node %s takes part only in authenticated secure sessions: %s", node_id,
                     self._mode())

    @property
    def session_id(self) -> bytes | None:
        return None if self.params is None else self.params.session_id

    def begin(self, params: SessionParams) -> bytes:
        """AdvertiseKeys bytes for the next block; a new session id starts a new client, and one
        this node already started (any of them, however many followed: `client_node.used_sessions`
        keeps every one, across restarts in the state dir) is refused (SecureTaskError, which the
        task runner answers with a Skip: the coordinator counts the node out of it)."""
        if not (math.isfinite(params.weight_unit) and params.weight_unit > 0):
            raise SecureTaskError(f"weight_unit must be finite and > 0, got {params.weight_unit}")
        if len(params.session_id) != SESSION_ID_BYTES:
            raise SecureTaskError(f"a secure session id is {SESSION_ID_BYTES} bytes, SecAggBegin "
                                  f"has {len(params.session_id)}")
        if params.members and (
            params.client_index >= len(params.members)
            or params.members[params.client_index] != self.node_id
        ):
            raise SecureTaskError(
                f"session lists client {params.client_index} as "
                f"{_member(params.members, params.client_index)!r}, this node is {self.node_id!r}"
            )
        if self.client is None or params.session_id != self.session_id:
            # A session id once started is never started again, not even after another one:
            # begin(A), begin(B), begin(A) would make a fresh client of A sign (A, step 0) a second
            # time with the same identity key, two survivor lists of one step endorsed by an
            # honest node, which is what the one-certified-list property rests on.
            if params.session_id in self._used_sessions:
                raise SecureTaskError(f"secure session {params.session_id.hex()} was already "
                                      "started on this node and left: refusing to start it again")
            identities = self._identities(params)
            client = SecAggClient(
                params.client_index, params.config, params.session_id,
                identity_key=self._identity if identities is not None else None,
                peer_identities=identities,
                random_bytes=self._random_bytes, context=session_context(params),
            )
            self._record_begun(params.session_id)  # before anything of the session is answered
            self.client, self.params = client, params
            log.info("node %s: secure session %s begins as client %d of %d", self.node_id,
                     params.session_id.hex(), params.client_index, params.config.n_clients)
        elif params != self.params:
            raise SecureTaskError("SecAggBegin changed the parameters of the running session "
                                  f"{params.session_id.hex()}")
        return self.client.advertise_keys().to_bytes()

    def _record_begun(self, session_id: bytes) -> None:
        """Remembers `session_id` as begun, on disk first with a state dir; a node that cannot
        record it refuses the session (SecureTaskError), since a restart would forget it."""
        try:
            self._used_sessions.record(session_id)
        except OSError as error:
            log.error("node %s: cannot record secure session %s in %s: %s", self.node_id,
                      session_id.hex(), self._used_sessions.path, error)
            raise SecureTaskError(f"cannot record secure session {session_id.hex()} as begun "
                                  f"({error.strerror or error}): refusing to start it") from None

    def _identities(self, params: SessionParams) -> dict[int, Ed25519PublicKey] | None:
        """The identity keys by client index for an authenticated session (None: unauthenticated);
        SecureTaskError for a session this node must not join."""
        authenticated = params.config.authenticated
        if not authenticated:
            if self.requires_authentication:
                raise SecureTaskError("this node takes part only in authenticated sessions "
                                      f"({self._mode()}); SecAggBegin carries no identity keys")
            return None
        if self._identity is None:
            raise SecureTaskError("authenticated session, but this node has no identity key")
        n = params.config.n_clients
        if len(params.identity_keys) != n or len(params.members) != n:
            raise SecureTaskError(f"authenticated SecAggBegin must name {n} members and {n} identity "
                                  f"keys, got {len(params.members)} and {len(params.identity_keys)}")
        if params.identity_keys[params.client_index] != _raw(self._identity.public_key()):
            raise SecureTaskError("SecAggBegin relays another identity key for this node")
        if self._roster is None and self._authorities is not None:
            return self._certified_identities(params)
        if self._roster is None:  # nothing to pin against: trusts the coordinator's relay
            log.warning("node %s: authenticated session without a pinned roster: the identity keys "
                        "are the coordinator's word", self.node_id)
            try:
                return {i: Ed25519PublicKey.from_public_bytes(k)
                        for i, k in enumerate(params.identity_keys)}
            except ValueError as error:
                raise SecureTaskError(f"malformed identity key: {error}") from None
        identities = {}
        for i, (member, key) in enumerate(zip(params.members, params.identity_keys, strict=True)):
            pinned = self._roster.get(member)
            if pinned is None:
                raise SecureTaskError(f"member {member!r} is not in this node's identity roster")
            if _raw(pinned) != key:
                raise SecureTaskError(f"SecAggBegin relays an identity key for {member!r} that is "
                                      "not the pinned one: refusing the session")
            identities[i] = pinned
        return identities

    def _certified_identities(self, params: SessionParams) -> dict[int, Ed25519PublicKey]:
        """mTLS-bound mode: every member's key from a certificate this node's CA issued to it."""
        assert self._authorities is not None
        n = params.config.n_clients
        if len(params.identity_certificates) != n:
            raise SecureTaskError(f"authenticated SecAggBegin must carry {n} identity certificates "
                                  f"for this node to check, got {len(params.identity_certificates)}")
        identities = {}
        for i, (member, key, der) in enumerate(zip(params.members, params.identity_keys,
                                                   params.identity_certificates, strict=True)):
            try:
                certified = verify_identity_certificate(der, self._authorities, member)
            except ValueError as error:
                raise SecureTaskError(f"refusing the session: {error}") from None
            if certified != key:
                raise SecureTaskError(f"SecAggBegin relays an identity key for {member!r} that is not "
                                      "the one its certificate carries: refusing the session")
            identities[i] = Ed25519PublicKey.from_public_bytes(certified)
        return identities

    def _mode(self) -> str:
        if self._roster is not None:
            return "it pins a peer-identity roster"
        if self._authorities is not None:
            return "its mTLS certificate carries its identity key"
        return "authentication is required"

    def sign_survivors(self, request: bytes) -> bytes:
        """ConsistencySignature bytes over the survivor list (authenticated sessions)."""
        return self._client().sign_survivors(decode(request, ConsistencyRequest)).to_bytes()

    def share_keys(self, key_directory: bytes) -> bytes:
        return self._client().share_keys(decode(key_directory, KeyDirectory)).to_bytes()

    def check_session(self, session_id: bytes) -> None:
        """SecureTaskError unless `session_id` is the session this node is in."""
        self._client(session_id)

    def receive_shares(self, session_id: bytes, share_delivery: bytes) -> None:
        """The block's share bundles from the neighbours (on a block's first step)."""
        client = self._client(session_id)
        client.receive_shares(decode(share_delivery, ShareDelivery))
        for peer, why in sorted(client.unheld.items()):  # it costs them, not this node
            log.warning("node %s: no shares held of client %d, its bundle was unusable: %s",
                        self.node_id, peer, why)

    def masked(self, session_id: bytes, step: int, reply: Reply) -> MaskedReply:
        """Masks `reply` for `step`; a Skip (or an unusable reply) masks zeros with weight 0."""
        client = self._client(session_id)
        x, weight, reason = self.masking_input(reply)
        message = client.masked_input(step, x, weight)
        if client.last_clipped:
            log.warning("node %s: step %d clipped %d elements to ±%g", self.node_id, step,
                        client.last_clipped, client.config.clip)
        return MaskedReply(message.to_bytes(), reason)

    def masking_input(self, reply: Reply) -> tuple[np.ndarray, float, str]:
        """(x, weight, skip reason): x = w·v / W as float64 and w / W, or zeros and 0."""
        params = self._params()
        dim, unit = params.config.dim, params.weight_unit
        reason = _unusable(reply, dim, params.config.max_weight * unit)
        if reason:
            return np.zeros(dim, dtype=np.float64), 0.0, reason
        x = np.asarray(reply.weighted_values, dtype=np.float64) / unit  # (d,)
        # As the coordinator's secure_plan.scaled_input, so both transports quantise alike.
        return x, min(params.config.max_weight, reply.weight / unit), ""

    def unmask(self, request: bytes) -> bytes:
        return self._client().unmask(decode(request, UnmaskRequest)).to_bytes()

    def _client(self, session_id: bytes | None = None) -> SecAggClient:
        if self.client is None:
            raise SecureTaskError("no secure session has begun on this node")
        if session_id is not None and session_id != self.session_id:
            raise SecureTaskError(f"task is for secure session {session_id.hex()}, this node is "
                                  f"in {self.session_id.hex()}")
        return self.client

    def _params(self) -> SessionParams:
        self._client()
        return self.params


def session_context(params: SessionParams) -> bytes:
    """What the node binds into its parameter digest beyond the secagg config: the weight unit W
    and the member list (node ids by client index). Every peer must have been told the same, or
    the key directory is refused (`secagg.ParameterMismatch`): a coordinator that gave the others
    a huge W would otherwise release one node's update nearly alone in the sum."""
    members = b"".join(struct.pack(">I", len(m.encode())) + m.encode() for m in params.members)
    keys = b"".join(struct.pack(">I", len(k)) + k for k in params.identity_keys)
    return (struct.pack(">dI", params.weight_unit, len(params.members)) + members
            + struct.pack(">I", len(params.identity_keys)) + keys)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _unusable(reply: Reply, dim: int, max_weight: float) -> str:
    """Why `reply` cannot be masked as it is, or '' if it can."""
    if isinstance(reply, Skip):
        return reply.reason or "skipped"
    if not isinstance(reply, Contribution):
        return f"{type(reply).__name__} is not a contribution"
    values = np.asarray(reply.weighted_values)
    if values.shape != (dim,):
        return f"contribution has shape {values.shape}, the session sums ({dim},)"
    if not np.isfinite(values).all():
        return f"{int((~np.isfinite(values)).sum())} non-finite values"
    if not (math.isfinite(reply.weight) and 0 < reply.weight <= max_weight * (1 + 1e-9)):
        return f"weight {reply.weight} outside (0, {max_weight}]"
    return ""


def _member(members: tuple[str, ...], index: int) -> str:
    return members[index] if 0 <= index < len(members) else "nobody"
