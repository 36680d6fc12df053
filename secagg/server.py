"""Server (coordinator) side of SecAgg / SecAgg+: relays ciphertexts, sums, unmasks.

The server sees only public keys, ciphertexts it cannot read, masked inputs, and the shares it
needs to remove the masks: b-shares of survivors and s_sk-shares of clients that dropped at this
step. It aborts (InsufficientSurvivors) before asking for any share when fewer than the threshold
could answer, so an aborted step releases nothing.
"""

from __future__ import annotations

import enum
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import common, shamir
from secagg.config import SecAggConfig
from secagg.errors import (
    ConfigError,
    DroppedClient,
    DuplicateClient,
    InsufficientSurvivors,
    InvalidShare,
    MalformedMessage,
    PhaseError,
    ReconstructionFailed,
    UnknownClient,
)
from secagg.messages import (
    COMMITMENT_BYTES,
    KEY_BYTES,
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


class ServerPhase(enum.Enum):
    """Which messages the server takes now; the rounds of a block run in this order."""

    ADVERTISE = "advertise"  # collecting AdvertiseKeys
    SHARE = "share"  # key directories handed out; collecting ShareKeys
    INPUT = "input"  # share bundles relayed; collecting MaskedInput
    CONSISTENCY = "consistency"  # (authenticated) collecting ConsistencySignature
    UNMASK = "unmask"  # collecting UnmaskResponse, then finish_step
    ABORTED = "aborted"  # too few survivors: the session is over and released nothing


@dataclass(frozen=True)
class StepResult:
    """The only thing a step releases: the survivors' sums."""

    step: int
    total: np.ndarray = field(repr=False)  # (d,) float64: sum of the survivors' clipped inputs
    weight: float  # sum of the survivors' weights
    clipped: int  # elements clipped across all survivors, at most survivors x d (see below)
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]  # clients recovered at this step (out for the rest of the session)
    error_bound: float  # |total - exact sum of clipped inputs| <= error_bound per element
    # the clipped-count total fell outside [0, survivors x d]: some survivor forged its count
    # word, and `clipped` is clamped into that range
    clipped_forged: bool = False


class SecAggServer:
    """Coordinator state for one session; methods mirror the client's rounds."""

    def __init__(
        self,
        config: SecAggConfig,
        session_id: bytes | None = None,
        *,
        peer_identities: Mapping[int, Ed25519PublicKey] | None = None,
    ) -> None:
        if config.authenticated and peer_identities is None:
            raise ConfigError("authenticated mode needs peer_identities")
        self.config = config
        self.session_id = os.urandom(16) if session_id is None else session_id
        if len(self.session_id) != 16:
            raise ConfigError("session_id must be 16 bytes")
        self._identities = dict(peer_identities or {})
        self.graph = common.session_graph(config, self.session_id)
        self.alive: set[int] = set(range(config.n_clients))
        self.dropped: set[int] = set()
        self.block = -1
        self.step = 0
        self._streams = MaskStreams()
        self._start_block()

    @property
    def phase(self) -> ServerPhase:
        """The round the server is in (read-only: its methods move it on)."""
        return self._phase

    # -- rounds 0 and 1 -----------------------------------------------------------------------
    def _start_block(self) -> None:
        self.block += 1
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}  # receiver -> sender -> ct
        self._commitments: dict[int, dict[int, bytes]] = {}  # owner -> holder -> share digests
        self._share_senders: set[int] = set()
        self._phase = ServerPhase.ADVERTISE

    def receive_advertise(self, message: AdvertiseKeys) -> None:
        self._in_phase(ServerPhase.ADVERTISE, "receive_advertise")
        check_header(message.header, self.session_id, self.block, "AdvertiseKeys")
        sender = self._live_sender(message.header.client_id, self._adverts)
        check_advert(message, self.config, self._identities)
        self._adverts[sender] = message

    def close_advertise(self) -> None:
        """End AdvertiseKeys: who did not advertise is out. Idempotent; `key_directory` calls it."""
        if self._phase is ServerPhase.ADVERTISE:
            self._drop(self.alive - set(self._adverts))
            self._check_neighbourhoods()
            self._phase = ServerPhase.SHARE

    def key_directory(self, client_id: int) -> KeyDirectory:
        """Close AdvertiseKeys (non-advertisers are out) and give `client_id` its neighbours' keys."""
        self.close_advertise()
        self._in_phase(ServerPhase.SHARE, "key_directory")
        self._live(client_id)
        ids = sorted((self.graph[client_id] | {client_id}) & set(self._adverts))
        return KeyDirectory(
            Header(self.session_id, self.block, client_id), tuple(self._adverts[i] for i in ids)
        )

    def receive_share_keys(self, message: ShareKeys) -> None:
        """Take a ShareKeys that gives every live neighbour a bundle and commits to every holder's
        shares; one that leaves a neighbour out is refused (it would mask with it unshared)."""
        self._in_phase(ServerPhase.SHARE, "receive_share_keys")
        check_header(message.header, self.session_id, self.block, "ShareKeys")
        sender = message.header.client_id
        if sender in self._share_senders:
            raise DuplicateClient(f"second ShareKeys from client {sender}")
        self._live(sender)
        neighbours = self.graph[sender] & self.alive
        receivers = check_ids([r for r, _ in message.ciphertexts], neighbours, "ShareKeys")
        missing = neighbours - set(receivers)
        if missing:
            raise MalformedMessage(f"ShareKeys of client {sender} gives no bundle to live neighbours "
                                   f"{sorted(missing)[:5]}: every one must get its shares")
        holders = neighbours | {sender}
        committed = check_ids([h for h, _ in message.commitments], holders, "ShareKeys commitments")
        size = 2 * self.config.steps_per_block * COMMITMENT_BYTES
        if set(committed) != holders or any(len(c) != size for _, c in message.commitments):
            raise MalformedMessage(f"ShareKeys of client {sender} must commit to the shares of each "
                                   f"of its {len(holders)} holders ({size} bytes each)")
        for receiver, ct in message.ciphertexts:
            self._ciphertexts.setdefault(receiver, {})[sender] = ct
        self._commitments[sender] = dict(message.commitments)
        self._share_senders.add(sender)

    def close_share_keys(self) -> None:
        """End ShareKeys: who sent none is out. Idempotent; `share_delivery` calls it."""
        self.close_advertise()
        if self._phase is ServerPhase.SHARE:
            self._drop(self.alive - self._share_senders)
            self._check_neighbourhoods()
            self._phase = ServerPhase.INPUT
            self._inputs: dict[int, np.ndarray] = {}
            self._unheld: dict[int, frozenset[int]] = {}

    def share_delivery(self, client_id: int) -> ShareDelivery:
        """Close ShareKeys (non-senders are out) and relay the bundles addressed to `client_id`."""
        self.close_share_keys()
        self._in_phase(ServerPhase.INPUT, "share_delivery")
        self._live(client_id)
        received = self._ciphertexts.get(client_id, {})
        senders = [s for s in sorted(received) if s in self.alive]
        return ShareDelivery(
            Header(self.session_id, self.block, client_id),
            tuple((s, received[s]) for s in senders),
            tuple((s, self._commitments[s][client_id]) for s in senders),
        )

    # -- rounds 2 to 4 ------------------------------------------------------------------------
    def receive_masked_input(self, message: MaskedInput) -> None:
        self._in_phase(ServerPhase.INPUT, "receive_masked_input")
        check_header(message.header, self.session_id, self.step, "MaskedInput")
        sender = self._live_sender(message.header.client_id, self._inputs)
        if message.masked.shape != (self.config.vector_length,):
            raise MalformedMessage(
                f"masked input has {message.masked.shape[0]} elements, expected {self.config.vector_length}"
            )
        unheld = check_ids(message.unheld, self.graph[sender] & self.alive, "MaskedInput unheld")
        self._inputs[sender] = message.masked
        self._unheld[sender] = frozenset(unheld)

    def close_inputs(self) -> tuple[int, ...]:
        """End MaskedInputCollection; returns the survivors U3 (whose inputs are in the sum).

        Raises InsufficientSurvivors, before any share is asked for, when some needed secret
        would have fewer than threshold surviving holders.
        """
        self._close_inputs()
        if self._phase not in (ServerPhase.CONSISTENCY, ServerPhase.UNMASK):
            raise PhaseError(f"close_inputs called in phase {self._phase.value}")
        return self._survivors

    def consistency_request(self, client_id: int) -> ConsistencyRequest:
        """(Authenticated) close input collection and ask `client_id` to sign the survivors."""
        if not self.config.authenticated:
            raise PhaseError("ConsistencyCheck is only run in authenticated mode")
        self._close_inputs()
        self._in_phase(ServerPhase.CONSISTENCY, "consistency_request")
        self._survivor(client_id)
        return ConsistencyRequest(Header(self.session_id, self.step, client_id), self._survivors)

    def receive_consistency(self, message: ConsistencySignature) -> None:
        self._in_phase(ServerPhase.CONSISTENCY, "receive_consistency")
        check_header(message.header, self.session_id, self.step, "ConsistencySignature")
        signer = self._survivor(message.header.client_id)
        if signer in self._signatures:
            raise DuplicateClient(f"second consistency signature from client {signer}")
        payload = common.consistency_payload(self.session_id, self.step, self._survivors,
                                             self._adverts[signer].c_public)
        verify_signature(self._identities, signer, message.signature, payload)
        # the MACs cannot be checked here (keys of the two clients); each goes to its recipient,
        # which falls back to the signature verified above if one is bad
        check_ids([r for r, _ in message.macs], (self.graph[signer] & self._survivor_set),
                  "ConsistencySignature MACs")
        self._signatures[signer] = message.signature
        self._macs[signer] = dict(message.macs)

    def unmask_request(self, client_id: int) -> UnmaskRequest:
        """Close the previous round and ask survivor `client_id` for its shares."""
        self._close_inputs()
        if self._phase is ServerPhase.CONSISTENCY:
            quorum = self.config.certification_quorum
            if len(self._signatures) < quorum:
                self._phase = ServerPhase.ABORTED
                raise InsufficientSurvivors(
                    f"step {self.step}: {len(self._signatures)} consistency signatures < {quorum}, "
                    f"a strict majority of the {self.config.n_clients} session members; session "
                    "aborted, nothing released")
            self._phase = ServerPhase.UNMASK
        self._in_phase(ServerPhase.UNMASK, "unmask_request")
        self._survivor(client_id)
        return UnmaskRequest(
            Header(self.session_id, self.step, client_id),
            self._survivors,
            self._dropped_now,
            *self._certificate_for(client_id),
        )

    def _certificate_for(self, client_id: int) -> tuple[tuple[tuple[int, bytes], ...],
                                                        tuple[int, ...],
                                                        tuple[tuple[int, bytes], ...],
                                                        tuple[tuple[int, bytes], ...]]:
        """(signatures, pair keys, MACs, signer keys): a quorum of the step's consistency
        signatures, the client's own first if it signed, then signers with a MAC for it: exactly
        what certifies the list (the server verified each signature), and the cheapest set for
        the client to check (its own is a byte comparison, a neighbour's an HMAC, any other a
        verification); the block encryption keys its signed payload names, of the signers that
        are not the client's neighbours (it holds its neighbours' own)."""
        pair_keys = tuple(sorted(self._pair_path))
        if not self._signatures:
            return (), pair_keys, (), ()
        quorum = self.config.certification_quorum
        chosen = [client_id] if client_id in self._signatures else []
        others = sorted((s for s in self._signatures if s != client_id),
                        key=lambda s: (client_id not in self._macs[s], s))
        chosen += others[:quorum - len(chosen)]
        macs = tuple((s, self._macs[s][client_id]) for s in sorted(chosen)
                     if client_id in self._macs[s])
        keys = tuple((s, self._adverts[s].c_public) for s in sorted(chosen)
                     if s != client_id and s not in self.graph[client_id])
        return tuple((s, self._signatures[s]) for s in sorted(chosen)), pair_keys, macs, keys

    def receive_unmask(self, message: UnmaskResponse) -> None:
        self._in_phase(ServerPhase.UNMASK, "receive_unmask")
        check_header(message.header, self.session_id, self.step, "UnmaskResponse")
        holder = self._survivor(message.header.client_id)
        if holder in self._responders:
            raise DuplicateClient(f"second UnmaskResponse from client {holder}")
        holders_of = self.graph[holder] | {holder}
        seen: set[tuple[int, int]] = set()
        # Check every share before storing any: a refused response leaves no trace, so the
        # holder can still send a correct one.
        for peer, kind, share in message.shares:
            if kind == KIND_SELF_MASK:
                wanted: frozenset[int] = self._survivor_set
            elif kind == KIND_MASK_KEY:
                wanted = self._dropped_set - self._pair_path
            else:
                wanted = self._pair_path
            if peer not in wanted or peer not in holders_of or peer == holder and kind == KIND_PAIR_KEY:
                raise UnknownClient(f"unrequested share of client {peer} from client {holder}")
            if (peer, kind) in seen or holder in self._shares.get((peer, kind), {}):
                raise DuplicateClient(f"client {holder} sent two shares of client {peer}")
            seen.add((peer, kind))
            if kind == KIND_PAIR_KEY:
                if len(share) != KEY_BYTES:
                    raise MalformedMessage(f"pair key must be {KEY_BYTES} bytes, got {len(share)}")
                continue
            self._check_share(holder, peer, kind, share)
        for peer, kind, share in message.shares:
            self._shares.setdefault((peer, kind), {})[holder] = share
        self._responders.add(holder)

    def _check_share(self, holder: int, owner: int, kind: int, share: bytes) -> None:
        """Raise unless `share` is in the field and is the one `owner` committed to for `holder`."""
        if len(share) != shamir.SHARE_BYTES:
            raise MalformedMessage(f"share must be {shamir.SHARE_BYTES} bytes, got {len(share)}")
        if (np.frombuffer(share, dtype="<u4") >= shamir.PRIME).any():
            # refused here, not in finish_step: one bad share must not abort the step
            raise MalformedMessage(
                f"share of client {owner} from client {holder} is outside the field GF(2^31 - 1)")
        steps = self.config.steps_per_block
        j = self.step - self.block * steps
        offset = (kind * steps + j) * COMMITMENT_BYTES
        committed = self._commitments[owner][holder][offset: offset + COMMITMENT_BYTES]
        actual = common.share_commitment(self.session_id, self.block, owner, holder, kind, self.step,
                                         share)
        if not hmac.compare_digest(actual, committed):
            raise InvalidShare(f"client {holder} sent a share of client {owner} that does not match "
                               f"the share client {owner} dealt it", holder)

    def finish_step(self) -> StepResult:
        """Rebuild the needed secrets from exactly t shares each, check each against what its
        owner advertised, unmask, decode, release."""
        self._in_phase(ServerPhase.UNMASK, "finish_step")
        cfg, t, step = self.config, self.config.shares_needed, self.step
        wanted = [(u, KIND_SELF_MASK) for u in self._survivors] + [
            (v, KIND_MASK_KEY) for v in self._dropped_now if v not in self._pair_path
        ]
        groups: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for key in wanted:
            bucket = self._shares.get(key, {})
            if len(bucket) < t:
                raise self._abort(f"{len(bucket)} shares of client {key[0]}")
            groups.setdefault(tuple(sorted(bucket)[:t]), []).append(key)
        secrets: dict[tuple[int, int], bytes] = {}
        for holders, keys in groups.items():  # one Lagrange vector per holder set
            secrets.update(zip(keys, self._rebuild(holders, keys), strict=True))

        j = step - self.block * cfg.steps_per_block
        plus: list[bytes] = []
        minus = []
        for u in self._survivors:
            seed = secrets[(u, KIND_SELF_MASK)]
            if not hmac.compare_digest(common.seed_commitment(self.session_id, step, u, seed),
                                       self._adverts[u].b_commitments[j]):
                raise self._failed(u, "self-mask seed")
            minus.append(common.self_mask_key(seed, self.session_id, step, u))
        for v in self._dropped_now:
            if v in self._pair_path:  # each surviving neighbour revealed its pairwise key with v
                for u in sorted(self.graph[v] & self._survivor_set):
                    pair_key = self._shares.get((v, KIND_PAIR_KEY), {}).get(u)
                    if pair_key is None:
                        self._phase = ServerPhase.ABORTED
                        raise InsufficientSurvivors(
                            f"step {step}: client {u} did not reveal its pairwise key with client "
                            f"{v}, whose masking key cannot be rebuilt; session aborted, nothing released")
                    (minus if v > u else plus).append(pair_key)
                continue
            s_private = X25519PrivateKey.from_private_bytes(secrets[(v, KIND_MASK_KEY)])
            advertised = self._adverts[v].s_publics[j]
            if not hmac.compare_digest(s_private.public_key().public_bytes_raw(), advertised):
                raise self._failed(v, "masking key")
            for u in sorted(self.graph[v] & self._survivor_set):
                mask_key = common.pairwise_mask_key(
                    s_private, self._adverts[u].s_publics[j], self.session_id, step, u, v
                )
                # u added PRG(s_uv) if v > u, subtracted it if v < u: undo that
                (minus if v > u else plus).append(mask_key)
        # Sum the inputs and remove the masks block by block, so each block of the total stays
        # in cache while every input and every mask is folded into it.
        streams = self._streams
        streams.reset(plus, minus)
        inputs = [self._inputs[u] for u in self._survivors]  # not those demoted to dropped
        total = np.zeros(cfg.vector_length, dtype=np.uint32)  # (d + 2,)
        block = streams.block_words
        for start in range(0, cfg.vector_length, block):
            stop = start + block
            acc = total[start:stop]
            for y in inputs:
                np.add(acc, y[start:stop], out=acc)
            streams.apply(acc)

        # Each survivor may count at most d clipped elements; the word is masked, so a forged
        # count cannot be seen alone, but a total outside [0, survivors x d] is one.
        most = len(self._survivors) * cfg.dim
        clipped = int(total[cfg.dim + 1])
        result = StepResult(
            step=step,
            total=cfg.values.decode_sum(total[: cfg.dim]),
            weight=float(cfg.weights.decode_sum(total[cfg.dim : cfg.dim + 1])[0]),
            clipped=min(clipped, most),
            survivors=self._survivors,
            dropped=self._dropped_now,
            error_bound=cfg.values.sum_error_bound(len(self._survivors)),
            clipped_forged=clipped > most,
        )
        self._drop(set(self._dropped_now))
        self.step += 1
        if self.step % cfg.steps_per_block == 0:
            self._start_block()
        else:
            self._phase = ServerPhase.INPUT
            self._inputs = {}
        return result

    # -- helpers ------------------------------------------------------------------------------
    def _close_inputs(self) -> None:
        """End MaskedInputCollection. A survivor whose shares fewer than t surviving holders hold
        (its bundles were unusable to the others) cannot be unmasked: it is demoted to dropped,
        and its input left out. A dropped client whose s_sk cannot be rebuilt either has its
        pairwise masks removed with the keys its surviving neighbours reveal instead."""
        if self._phase is not ServerPhase.INPUT:
            return
        t = self.config.shares_needed
        survivors = set(self._inputs)

        def holding(owner: int) -> int:
            return sum(owner not in self._unheld[h] for h in (self.graph[owner] | {owner}) & survivors)

        demoted = True
        while demoted:
            poorly_held = {u for u in survivors if holding(u) < t}
            survivors -= poorly_held
            demoted = bool(poorly_held)
        if not survivors:
            raise self._abort("0 survivors have enough surviving holders; each one's count")
        dropped = self.alive - survivors
        self._pair_path = frozenset(v for v in dropped if holding(v) < t)
        self._survivors, self._dropped_now = tuple(sorted(survivors)), tuple(sorted(dropped))
        self._survivor_set, self._dropped_set = frozenset(survivors), frozenset(dropped)
        self._signatures: dict[int, bytes] = {}
        self._macs: dict[int, dict[int, bytes]] = {}  # signer -> recipient -> its consistency MAC
        self._shares: dict[tuple[int, int], dict[int, bytes]] = {}  # (owner, kind) -> holder -> share
        self._responders: set[int] = set()
        self._phase = ServerPhase.CONSISTENCY if self.config.authenticated else ServerPhase.UNMASK

    def _rebuild(self, holders: tuple[int, ...], keys: list[tuple[int, int]]) -> list[bytes]:
        """The secrets `keys` from the shares of `holders`; a failure names the owner at fault."""
        data = b"".join(self._shares[k][h] for h in holders for k in keys)
        stacked = np.frombuffer(data, dtype="<u4").astype(np.uint64)
        stacked = stacked.reshape(len(holders), len(keys), shamir.CHUNKS)
        xs = [common.x_coordinate(h) for h in holders]
        try:
            return shamir.reconstruct(stacked, xs)  # (t, len(keys), CHUNKS) -> secrets
        except ValueError:
            for i, (owner, kind) in enumerate(keys):  # which one: every share matched its commitment
                try:
                    shamir.reconstruct(stacked[:, i : i + 1], xs)
                except ValueError:
                    raise self._failed(owner, "self-mask seed" if kind == KIND_SELF_MASK
                                       else "masking key") from None
            raise

    def _failed(self, owner: int, what: str) -> ReconstructionFailed:
        self._phase = ServerPhase.ABORTED
        return ReconstructionFailed(
            f"step {self.step}: the rebuilt {what} of client {owner} is not the one it advertised; "
            f"every share matched client {owner}'s commitments, so client {owner} dealt "
            "inconsistent shares; session aborted, nothing released", owner)

    def _abort(self, what: str) -> InsufficientSurvivors:
        self._phase = ServerPhase.ABORTED
        t = self.config.shares_needed
        return InsufficientSurvivors(
            f"step {self.step}: {what} < threshold {t}; session aborted, nothing released"
        )

    def _check_neighbourhoods(self) -> None:
        for owner in self.alive:
            holders = (self.graph[owner] | {owner}) & self.alive
            if len(holders) < self.config.shares_needed:
                raise self._abort(f"{len(holders)} live holders for client {owner}")

    def _drop(self, ids: set[int]) -> None:
        self.alive -= ids
        self.dropped |= ids

    def _in_phase(self, phase: ServerPhase, what: str) -> None:
        if self._phase is not phase:
            raise PhaseError(f"{what} called in phase {self._phase.value}, needs {phase.value}")

    def _live(self, client_id: int) -> int:
        if client_id in self.dropped:
            raise DroppedClient(f"client {client_id} has left this session")
        if client_id not in self.alive:
            raise UnknownClient(f"client {client_id} is not in this session")
        return client_id

    def _live_sender(self, client_id: int, seen: Mapping[int, object]) -> int:
        self._live(client_id)
        if client_id in seen:
            raise DuplicateClient(f"second message from client {client_id}")
        return client_id

    def _survivor(self, client_id: int) -> int:
        self._live(client_id)
        if client_id not in self._survivor_set:
            raise UnknownClient(f"client {client_id} is not a survivor of step {self.step}")
        return client_id
