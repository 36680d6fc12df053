"""Client side of SecAgg / SecAgg+ (Bonawitz et al. CCS 2017; Bell et al. CCS 2020) with sessions.

One `SecAggClient` lives for a whole session. Per block of `steps_per_block` steps it advertises
a fresh encryption key and one fresh masking key pair per step, and Shamir-shares each step's
masking secret key s_sk[j] and self-mask seed b[j] among its neighbourhood. Each step then costs
only MaskedInputCollection (+ ConsistencyCheck) and Unmasking; recovering a client that drops at
step j reveals s_sk[j] only, from which nothing about other steps' masks follows.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg import common, shamir
from secagg.config import SecAggConfig
from secagg.errors import (
    ConfigError,
    DecryptionFailed,
    DroppedClient,
    InsufficientSurvivors,
    MalformedMessage,
    ParameterMismatch,
    PhaseError,
    RevealRefused,
    SignatureInvalid,
    UnknownClient,
)
from secagg.messages import (
    KIND_MASK_KEY,
    KIND_PAIR_KEY,
    KIND_SELF_MASK,
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    Header,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.prg import MaskStreams
from secagg.verification import check_advert, check_header, check_ids, verify_signature

_NONCE = 12
MIN_CONTRIBUTORS = 2  # a client reveals no self-mask share for a sum of fewer survivors


class Phase(enum.Enum):
    """Where a client is in the rounds of a block; each of its methods needs one phase."""

    NEED_KEYS = "need_keys"  # a new block must be set up (advertise_keys)
    ADVERTISED = "advertised"  # waiting for the key directory
    SHARED = "shared"  # waiting for the share delivery
    READY = "ready"  # may send the masked input of the current step
    MASKED = "masked"  # masked input sent; waiting for consistency / unmask requests
    SIGNED = "signed"  # (authenticated) survivor list signed
    OUT = "out"  # aborted or declared dropped: takes no further part in the session


@dataclass
class _BlockSecrets:
    c_private: X25519PrivateKey = field(repr=False)
    s_privates: list[X25519PrivateKey] = field(repr=False)
    b_seeds: list[bytes] = field(repr=False)
    peer_c: dict[int, bytes] = field(default_factory=dict)
    peer_s: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    # holder shares: peer -> (2, steps, CHUNKS) uint64, [0] = s_sk shares, [1] = b shares
    held: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    # live neighbours whose bundle was unusable: still masked with, but no shares held
    unheld: dict[int, str] = field(default_factory=dict, repr=False)
    # (authenticated) consistency HMAC keys by neighbour: to it, and from it
    mac_out: dict[int, bytes] = field(default_factory=dict, repr=False)
    mac_in: dict[int, bytes] = field(default_factory=dict, repr=False)


class SecAggClient:
    """One client's protocol state machine; every method validates and raises on bad input."""

    def __init__(
        self,
        client_id: int,
        config: SecAggConfig,
        session_id: bytes,
        *,
        identity_key: Ed25519PrivateKey | None = None,
        peer_identities: Mapping[int, Ed25519PublicKey] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        context: bytes = b"",
    ) -> None:
        """`context`: what else the caller was told about the session and must agree on with
        every peer (e.g. the weight unit and member list); it goes into the parameter digest
        this client signs in AdvertiseKeys, and a directory with another digest is refused."""
        if not 0 <= client_id < config.n_clients:
            raise UnknownClient(f"client_id must be in [0, {config.n_clients}), got {client_id}")
        if config.authenticated and (identity_key is None or peer_identities is None):
            raise ConfigError("authenticated mode needs identity_key and peer_identities")
        self.id = client_id
        self.config = config
        self.session_id = session_id
        self._identity = identity_key
        self._peer_identities = dict(peer_identities or {})
        self._random_bytes = random_bytes
        self.params_digest = common.params_digest(config, session_id, context)
        self.neighbours = common.session_graph(config, session_id)[client_id]
        self.alive: set[int] = set(self.neighbours)  # neighbours still in the session
        self.step = 0  # the step whose masked input is next
        self.block = -1
        self.phase = Phase.NEED_KEYS
        self.last_clipped = 0  # elements clipped in the last masked input
        self._secrets: _BlockSecrets | None = None
        self._revealed: dict[tuple[int, int], int] = {}  # (peer, step) -> kind revealed
        self._survivors_signed: tuple[int, ...] | None = None
        self._own_signature = b""  # its ConsistencySignature of the current step
        self._streams: MaskStreams | None = None

    # -- round 0: AdvertiseKeys ---------------------------------------------------------------
    def advertise_keys(self) -> AdvertiseKeys:
        """Start the next block: fresh encryption key and one masking key pair per step."""
        self._expect(Phase.NEED_KEYS, "advertise_keys")
        self.block += 1
        steps = self.config.steps_per_block
        secrets = self._secrets = _BlockSecrets(
            c_private=self._new_x25519(),
            s_privates=[self._new_x25519() for _ in range(steps)],
            b_seeds=[self._random_bytes(32) for _ in range(steps)],
        )
        first = self.block * steps
        message = AdvertiseKeys(
            Header(self.session_id, self.block, self.id),
            _public(secrets.c_private),
            tuple(_public(k) for k in secrets.s_privates),
            b_commitments=tuple(common.seed_commitment(self.session_id, first + j, self.id, b)
                                for j, b in enumerate(secrets.b_seeds)),
            params_digest=self.params_digest,
        )
        if self.config.authenticated:
            signature = self._sign(message.signed_bytes())
            message = dataclasses.replace(message, signature=signature)
        self._own_advert = message
        self.phase = Phase.ADVERTISED
        return message

    # -- round 1: ShareKeys -------------------------------------------------------------------
    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Check the neighbours' advertised keys, then send each its encrypted shares."""
        self._expect(Phase.ADVERTISED, "share_keys")
        check_header(directory.header, self.session_id, self.block, "KeyDirectory")
        if directory.header.client_id != self.id:
            raise UnknownClient("KeyDirectory addressed to another client")
        secrets = self._block_secrets()
        senders = [e.header.client_id for e in directory.entries]
        check_ids(senders, self.neighbours | {self.id}, "KeyDirectory")
        if self.id not in senders:
            raise MalformedMessage("KeyDirectory lacks this client's own advertisement")
        own = directory.entries[senders.index(self.id)]
        if not hmac.compare_digest(own.to_bytes(), self._own_advert.to_bytes()):
            raise RevealRefused("KeyDirectory altered this client's own advertisement")
        for entry in directory.entries:
            if entry is not own:  # its own, byte for byte the one it made: nothing to verify
                self._check_advert(entry)
                self._check_params(entry)
        for entry in directory.entries:
            if entry.header.client_id in self.alive:
                secrets.peer_c[entry.header.client_id] = entry.c_public
                secrets.peer_s[entry.header.client_id] = entry.s_publics
        holders = sorted(secrets.peer_c) + [self.id]
        self._need(len(holders), "advertised keys")
        xs = [common.x_coordinate(h) for h in holders]
        payload = [_private_bytes(k) for k in secrets.s_privates] + secrets.b_seeds
        shares = shamir.split(payload, xs, self.config.shares_needed, self._random_bytes)
        steps = self.config.steps_per_block
        ciphertexts, commitments = [], []
        for row, holder in zip(shares, holders, strict=True):
            bundle = row.reshape(2, steps, shamir.CHUNKS)
            commitments.append((holder, self._commit(self.id, holder, bundle)))
            if holder == self.id:
                secrets.held[self.id] = bundle
                continue
            agreed = common.agree(secrets.c_private, secrets.peer_c[holder])
            key = common.transport_key_from(agreed, self.session_id, self.block, self.id, holder)
            if self.config.authenticated:  # the consistency MAC keys from the same agreement
                secrets.mac_out[holder], secrets.mac_in[holder] = common.consistency_mac_keys(
                    agreed, self.session_id, self.block, self.id, holder)
            nonce = self._random_bytes(_NONCE)
            aad = common.transport_aad(self.session_id, self.block, self.id, holder)
            plaintext = bundle.astype("<u4").tobytes()
            ciphertexts.append((holder, nonce + AESGCM(key).encrypt(nonce, plaintext, aad)))
        self.phase = Phase.SHARED
        return ShareKeys(Header(self.session_id, self.block, self.id), tuple(ciphertexts),
                         tuple(commitments))

    def receive_shares(self, delivery: ShareDelivery) -> None:
        """Decrypt the bundles from neighbours; those who sent none are out of the session.

        A bundle that does not decrypt, has the wrong length or does not match its sender's
        commitments only costs its sender: this client keeps masking with it (the masking keys
        came checked from the directory) but holds no shares of it, and says so in its masked
        inputs (`unheld`), so the server never counts on them.
        """
        self._expect(Phase.SHARED, "receive_shares")
        check_header(delivery.header, self.session_id, self.block, "ShareDelivery")
        if delivery.header.client_id != self.id:
            raise UnknownClient("ShareDelivery addressed to another client")
        secrets = self._block_secrets()
        senders = check_ids([s for s, _ in delivery.ciphertexts], set(secrets.peer_c), "ShareDelivery")
        commitments = dict(delivery.commitments)
        check_ids([s for s, _ in delivery.commitments], set(senders), "ShareDelivery commitments")
        for sender, blob in delivery.ciphertexts:
            try:
                bundle = self._open_bundle(sender, blob)
                if commitments.get(sender) != self._commit(sender, self.id, bundle):
                    raise MalformedMessage(f"share bundle from client {sender} does not match its "
                                           "commitments")
            except (DecryptionFailed, MalformedMessage) as error:
                secrets.unheld[sender] = str(error)
                continue
            secrets.held[sender] = bundle
        self.alive &= set(senders)
        self._need(len(self.alive) + 1, "neighbours that shared keys")
        self.phase = Phase.READY

    @property
    def unheld(self) -> dict[int, str]:
        """Live neighbours of this block whose share bundle was unusable, with why."""
        return {} if self._secrets is None else dict(self._secrets.unheld)

    def _open_bundle(self, sender: int, blob: bytes) -> np.ndarray:
        """Decrypt and check the bundle `sender` dealt this client: (2, steps, CHUNKS) uint64."""
        secrets = self._block_secrets()
        key = common.transport_key(
            secrets.c_private, secrets.peer_c[sender], self.session_id, self.block, sender, self.id
        )
        aad = common.transport_aad(self.session_id, self.block, sender, self.id)
        try:
            plaintext = AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed(f"share bundle from client {sender} failed") from exc
        if len(plaintext) != shamir.SHARE_BYTES * 2 * self.config.steps_per_block:
            raise MalformedMessage(f"share bundle from client {sender} has wrong length")
        bundle = np.frombuffer(plaintext, dtype="<u4").astype(np.uint64)
        if np.any(bundle >= shamir.PRIME):
            raise MalformedMessage(f"share bundle from client {sender} out of field")
        return bundle.reshape(2, self.config.steps_per_block, shamir.CHUNKS)

    def _commit(self, owner: int, holder: int, bundle: np.ndarray) -> bytes:
        """The commitments to one holder's shares of `owner`: kind-major, then step."""
        first = self.block * self.config.steps_per_block
        return b"".join(
            common.share_commitment(self.session_id, self.block, owner, holder, kind, first + j,
                                    shamir.share_to_bytes(bundle[kind, j]))
            for kind in (KIND_MASK_KEY, KIND_SELF_MASK) for j in range(self.config.steps_per_block)
        )

    # -- round 2: MaskedInputCollection -------------------------------------------------------
    def masked_input(self, step: int, x: np.ndarray, weight: float = 1.0) -> MaskedInput:
        """y = q(x) || q(weight) || clipped + PRG(b) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)."""
        self._expect(Phase.READY, "masked_input")
        if step != self.step:
            raise PhaseError(f"masked_input for step {step}, this client is at step {self.step}")
        cfg = self.config
        x = np.asarray(x)
        if x.shape != (cfg.dim,):
            raise ValueError(f"input must have shape ({cfg.dim},), got {x.shape}")
        if not 0.0 <= weight <= cfg.max_weight:
            raise ValueError(f"weight must be in [0, {cfg.max_weight}], got {weight}")
        j = step - self.block * cfg.steps_per_block
        secrets = self._block_secrets()
        s_private, me, session_id = secrets.s_privates[j], self.id, self.session_id
        plus = [common.self_mask_key(secrets.b_seeds[j], session_id, step, me)]
        minus: list[bytes] = []
        for v in sorted(self.alive):
            key = common.pairwise_mask_key(s_private, secrets.peer_s[v][j], session_id, step, me, v)
            (plus if v > me else minus).append(key)
        if self._streams is None:
            self._streams = MaskStreams()  # scratch allocated once per client, reused every step
        streams = self._streams
        streams.reset(plus, minus)
        # y is fresh each step: the returned message owns it (a caller may keep it).
        # Encode and mask block by block so each block stays in cache for all its masks.
        d, length, block = cfg.dim, cfg.vector_length, streams.block_words
        y = np.empty(length, dtype=np.uint32)  # (d + 2,)
        y[d] = cfg.weights.encode(np.array([weight]))[0][0]
        clipped = 0
        for start in range(0, length, block):
            stop = min(start + block, length)
            if start < d:
                end = min(stop, d)
                clipped += cfg.values.encode(x[start:end], out=y[start:end])[1]
            if stop == length:  # the last block holds the clipped count, all of x now encoded
                y[d + 1] = clipped
            streams.apply(y[start:stop])
        self.last_clipped = clipped
        self.phase = Phase.MASKED
        unheld = tuple(sorted(set(secrets.unheld) & self.alive))
        return MaskedInput(Header(self.session_id, step, self.id), y, unheld)

    # -- round 3: ConsistencyCheck (authenticated mode) ---------------------------------------
    def sign_survivors(self, request: ConsistencyRequest) -> ConsistencySignature:
        """Sign the survivor list U3; the unmask request must then carry exactly this list."""
        self._expect(Phase.MASKED, "sign_survivors")
        if not self.config.authenticated:
            raise PhaseError("ConsistencyCheck is only run in authenticated mode")
        check_header(request.header, self.session_id, self.step, "ConsistencyRequest")
        survivors = check_ids(request.survivors, self._session_ids(), "ConsistencyRequest")
        if self.id not in survivors:
            raise RevealRefused("ConsistencyRequest does not list this client as a survivor")
        self._survivors_signed = tuple(sorted(survivors))
        payload = common.consistency_payload(self.session_id, self.step, survivors,
                                             self._own_advert.c_public)
        self.phase = Phase.SIGNED
        self._own_signature = self._sign(payload)
        mac_out = self._block_secrets().mac_out
        macs = tuple((peer, common.consistency_mac(mac_out[peer], payload, self.id, peer))
                     for peer in sorted(set(survivors) & set(mac_out)))
        return ConsistencySignature(Header(self.session_id, self.step, self.id), self._own_signature,
                                    macs)

    # -- round 4: Unmasking -------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal b-shares of surviving and s_sk-shares of dropped neighbours, never both."""
        self._refuse_conflicts(request)  # a repeated request for a past step, checked first
        self._expect(Phase.SIGNED if self.config.authenticated else Phase.MASKED, "unmask")
        check_header(request.header, self.session_id, self.step, "UnmaskRequest")
        ids = self._session_ids()
        survivors = set(check_ids(request.survivors, ids, "UnmaskRequest survivors"))
        dropped = set(check_ids(request.dropped, ids, "UnmaskRequest dropped"))
        pair_keys = set(check_ids(request.pair_keys, dropped, "UnmaskRequest pair keys"))
        both = survivors & dropped
        if both:
            raise RevealRefused(f"asked to reveal both secrets of clients {sorted(both)[:5]}")
        if self.id not in survivors:
            raise RevealRefused("UnmaskRequest does not list this client as a survivor")
        if len(survivors) < MIN_CONTRIBUTORS:
            raise RevealRefused(f"UnmaskRequest lists {len(survivors)} survivor: a sum of fewer than "
                                f"{MIN_CONTRIBUTORS} contributors would be one input in the clear")
        if self.config.authenticated:
            self._check_consistency(request)
        local_survivors = survivors & (self.alive | {self.id})
        local_dropped = dropped & self.neighbours
        stale = (survivors | local_dropped) & (self.neighbours - self.alive)
        if stale:
            raise DroppedClient(f"clients {sorted(stale)[:5]} already left this session")
        missing = self.alive - survivors - dropped
        if missing:
            raise MalformedMessage(f"UnmaskRequest omits live neighbours {sorted(missing)[:5]}")
        self._need(len(local_survivors), "surviving neighbours")
        step, j = self.step, self.step - self.block * self.config.steps_per_block
        for peer, kind in [(p, KIND_MASK_KEY) for p in local_dropped] + [
            (p, KIND_SELF_MASK) for p in local_survivors
        ]:
            if self._revealed.get((peer, step), kind) != kind:
                raise RevealRefused(f"already revealed the other secret of client {peer}")
        secrets = self._block_secrets()
        shares = []
        for peer in sorted(local_dropped):
            self._revealed[(peer, step)] = KIND_MASK_KEY
            if peer in pair_keys and peer in self.alive:  # its s_sk is too poorly held to rebuild
                key = common.pairwise_mask_key(secrets.s_privates[j], secrets.peer_s[peer][j],
                                               self.session_id, step, self.id, peer)
                shares.append((peer, KIND_PAIR_KEY, key))
            elif peer not in pair_keys and peer in secrets.held:
                shares.append((peer, KIND_MASK_KEY, shamir.share_to_bytes(secrets.held[peer][0, j])))
        for peer in sorted(local_survivors):
            self._revealed[(peer, step)] = KIND_SELF_MASK
            if peer in secrets.held:  # none held of a peer whose bundle was unusable
                shares.append((peer, KIND_SELF_MASK, shamir.share_to_bytes(secrets.held[peer][1, j])))
        self.alive -= local_dropped
        self.step += 1
        self._survivors_signed = None
        if self.step % self.config.steps_per_block == 0:
            self._secrets = None  # the block's secrets are spent; forget them
            self.phase = Phase.NEED_KEYS
        else:
            self.phase = Phase.READY
        return UnmaskResponse(Header(self.session_id, step, self.id), tuple(shares))

    # -- helpers ------------------------------------------------------------------------------
    def _refuse_conflicts(self, request: UnmaskRequest) -> None:
        """RevealRefused if the request asks for the other secret of a (peer, step) revealed."""
        step = request.header.index
        asks = [(p, KIND_SELF_MASK) for p in request.survivors]
        asks += [(p, KIND_MASK_KEY) for p in request.dropped]  # pair keys are a subset of these
        for peer, kind in asks:
            if self._revealed.get((peer, step), kind) != kind:
                raise RevealRefused(f"already revealed the other secret of client {peer}")

    def _expect(self, phase: Phase, what: str) -> None:
        if self.phase is not phase:
            raise PhaseError(f"{what} called in phase {self.phase.value}, needs {phase.value}")

    def _need(self, count: int, what: str) -> None:
        if count < self.config.shares_needed:
            self.phase = Phase.OUT
            raise InsufficientSurvivors(
                f"client {self.id}: {count} {what} < threshold {self.config.shares_needed}; aborting"
            )

    def _session_ids(self) -> frozenset[int]:
        return frozenset(range(self.config.n_clients))

    def _block_secrets(self) -> _BlockSecrets:
        """This block's secrets; the phase checks admit no call before advertise_keys set them."""
        assert self._secrets is not None
        return self._secrets

    def _sign(self, payload: bytes) -> bytes:
        """Sign with the identity key, which __init__ requires in authenticated mode."""
        assert self._identity is not None
        return self._identity.sign(payload)

    def _new_x25519(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self._random_bytes(32))

    def _check_advert(self, entry: AdvertiseKeys) -> None:
        check_header(entry.header, self.session_id, self.block, "AdvertiseKeys")
        check_advert(entry, self.config, self._peer_identities)

    def _check_params(self, entry: AdvertiseKeys) -> None:
        """ParameterMismatch unless the peer was told the same session parameters as this client
        (signed by the peer in authenticated mode, so then the coordinator cannot forge it)."""
        if not hmac.compare_digest(entry.params_digest, self.params_digest):
            raise ParameterMismatch(
                f"client {entry.header.client_id} was given other session parameters (weight "
                "unit, members, threshold, ...) than this client: refusing to share keys")

    def _check_consistency(self, request: UnmaskRequest) -> None:
        if self._survivors_signed != tuple(sorted(request.survivors)):
            raise RevealRefused("UnmaskRequest survivors differ from the list this client signed")
        signers = check_ids(
            [s for s, _ in request.signatures], set(request.survivors), "UnmaskRequest signatures"
        )
        quorum = self.config.certification_quorum
        if len(signers) < quorum:  # refused before any verification
            raise InsufficientSurvivors(
                f"{len(signers)} consistency signatures < {quorum}, a strict majority of the "
                f"{self.config.n_clients} session members: the survivor list is not certified"
            )
        macs = dict(request.macs)  # a MAC of a client that is not a signer here counts for nothing
        check_ids([s for s, _ in request.macs], self._session_ids(), "UnmaskRequest MACs")
        relayed = dict(request.signer_keys)
        check_ids([s for s, _ in request.signer_keys], self._session_ids() - self.neighbours - {self.id},
                  "UnmaskRequest signer keys")  # a neighbour's key is the one this client holds
        secrets = self._block_secrets()
        mac_in = secrets.mac_in
        for signer, signature in request.signatures:
            if signer == self.id:  # Ed25519 is deterministic: its own is the one it made
                if not hmac.compare_digest(signature, self._own_signature):
                    raise SignatureInvalid(f"bad signature from client {signer} (this client)")
                continue
            # the signer's block encryption key its payload names: a neighbour's from this
            # client's own directory (so a signature of another instance of this session id
            # fails), any other's as the coordinator relays it
            c_public = secrets.peer_c.get(signer) if signer in self.neighbours else relayed.get(signer)
            if c_public is None:
                raise SignatureInvalid(f"no encryption key of this block for signer {signer}: its "
                                       "signature cannot be checked")
            payload = common.consistency_payload(self.session_id, self.step, request.survivors,
                                                 c_public)
            # A neighbour's HMAC under the key only it and this client hold proves as much as
            # its signature (that it endorsed this list) at a hash's cost; a missing or bad one
            # (a cheating signer) falls back to the signature, which the coordinator verified.
            key, mac = mac_in.get(signer), macs.get(signer)
            if key is not None and mac is not None and hmac.compare_digest(
                    mac, common.consistency_mac(key, payload, signer, self.id)):
                continue
            verify_signature(self._peer_identities, signer, signature, payload)


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()
