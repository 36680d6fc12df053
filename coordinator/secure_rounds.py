"""Secure aggregation over the task mailboxes: one SecAggServer session, its rounds as tasks.

A session covers the members present when it starts and lasts while sums keep the same length
and clip; its blocks re-key every `steps_per_block` steps. A member that misses a round is out
of the session (the library recovers it); a node that (re)joins waits for the next session.
Each result is checked before the library sees it: the sender must hold the client index
it claims, so one node can never speak for another. A node the library proves to have cheated
(a revealed share that is not the one it was dealt, or shares it dealt that do not rebuild what
it advertised) is left out of every later session of the run. A node that refuses a round
(it answers with a Skip: its checks of the session parameters or of the members' identities
failed, or it is in another session) is a dropout of this session at once, so the round does
not wait out its timeout for it; its reason is logged (sanitised and capped).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from codream.aggregation import AggregateSum
from codream.config import SecureAggregationConfig
from codream.messages import Task
from codream.secure_plan import (
    clip_for,
    fewest_members,
    protocol_of,
    session_config,
    to_aggregate,
    weight_unit,
)
from coordinator.dispatch import Dispatcher, OpenTask
from coordinator.encoded_tasks import SharedBody
from coordinator.errors import InvalidMessage, PermissionDenied
from coordinator.identity_book import IdentityBook
from coordinator.membership import Member
from protos.codream.v1 import codream_pb2 as pb
from protos.serde import printable
from secagg import ReconstructionFailed, SecAggError, SecAggServer, decode
from secagg.errors import InvalidShare
from secagg.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    MaskedInput,
    ShareKeys,
    UnmaskResponse,
)

log = logging.getLogger(__name__)


@dataclass
class Session:
    server: SecAggServer
    members: list[Member]
    unit: float
    clip: float
    round: int = 0  # the round it began in
    identity_keys: list[bytes] = field(default_factory=list)  # by client index; empty: unauthenticated
    identity_certificates: list[bytes] = field(default_factory=list)  # DER by client index (or b"")
    deliveries: dict[int, bytes] = field(default_factory=dict)  # client index -> ShareDelivery
    refused: dict[str, str] = field(default_factory=dict)  # node id -> why it refused (sanitised)

    @property
    def node_ids(self) -> list[str]:
        return [m.node_id for m in self.members]

    def at_block_start(self) -> bool:
        return self.server.step % self.server.config.steps_per_block == 0 and not self.deliveries


class SecureRounds:
    def __init__(self, dispatcher: Dispatcher, settings: SecureAggregationConfig,
                 live_members: Callable[[], list[Member]], round_timeout: float, step_timeout: float,
                 count: Callable[[list[OpenTask]], None] = lambda entries: None,
                 identities: Mapping[str, bytes] | None = None):
        """`identities`: node id -> raw Ed25519 identity public key (an IdentityBook also holds
        the mTLS certificates that bind them). Under `settings.authentication` "auto", a new
        session is authenticated when every member has one; "required" leaves out members
        without one; "off" never authenticates. An authenticated session relays the keys and
        certificates in SecAggBegin (each node checks them against the roster it pins or its
        CA), advertisements and survivor lists are signed, and a consistency round runs before
        every unmasking."""
        self.dispatcher = dispatcher
        self.identities = identities
        self.settings = settings
        self.live_members = live_members
        self.round_timeout = round_timeout  # key agreement and unmasking rounds
        self.step_timeout = step_timeout  # the summed task itself (nodes compute)
        self.count = count  # wire bytes of every secure-round task
        self.session: Session | None = None
        self.clipped = 0
        self.sessions_started = 0
        self.last_step_members: list[str] = []  # node ids the last step posted a masked-input task to
        self.excluded: dict[str, str] = {}  # node id -> how it cheated: in no later session
        self.keyless: list[str] = []  # live members left out for want of an identity key (required)

    @property
    def identities(self) -> IdentityBook:
        return self._identities

    @identities.setter
    def identities(self, identities: Mapping[str, bytes] | None) -> None:
        self._identities = (identities if isinstance(identities, IdentityBook)
                            else IdentityBook(identities))

    def sum(self, task: Task, message: pb.Task, size: int, to: Sequence[str] | None = None
            ) -> AggregateSum:
        """One secure step for `task` among the live members, or those of them in `to` (a
        sampled round's nodes: their own session); an aborted step sums nothing (weight 0) and
        ends the session."""
        self.last_step_members = []
        try:
            session = self._session_for(task, size, to)
            if session is None:
                fewest = fewest_members(self.settings)
                return AggregateSum(_zeros(size), 0.0, (),
                                    {"*": f"fewer than {fewest} members for a secure sum",
                                     **self._excluded_notes()})
            if session.at_block_start():
                self._set_up_block(session)
            return self._step(session, message)
        except SecAggError as error:  # too few survivors, or shares that do not rebuild
            log.error("%s: secure step aborted, nothing released: %s", task.task_id, error)
            if isinstance(error, ReconstructionFailed) and error.client is not None and self.session:
                self._exclude(self.session.members[error.client].node_id,
                              "dealt shares that do not rebuild the secret it advertised")
            refusals = _refusal_notes(self.session) if self.session is not None else {}
            self.session = None
            return AggregateSum(_zeros(size), 0.0, (), {"*": f"secure step aborted: {error}",
                                                        **refusals, **self._excluded_notes()})

    def _exclude(self, node_id: str, why: str) -> None:
        if node_id not in self.excluded:
            log.error("node %s %s: it takes part in no later secure session", node_id, why)
            self.excluded[node_id] = why

    def _excluded_notes(self, members: Sequence[str] = ()) -> dict[str, str]:
        return {node: f"excluded from secure sums: it {why}" for node, why in self.excluded.items()
                if node not in members}

    # ---- session and block set-up ---------------------------------------------------------
    def _session_for(self, task: Task, size: int, to: Sequence[str] | None = None
                     ) -> Session | None:
        clip = clip_for(task, self.settings)
        session = self.session
        live = [m for m in self.live_members() if m.node_id not in self.excluded]
        if to is not None:
            chosen = set(to)
            live = [m for m in live if m.node_id in chosen]
        mode = self.settings.authentication
        if mode == "required":
            keyless = [m.node_id for m in live if m.node_id not in self.identities]
            if keyless and keyless != self.keyless:
                log.warning("secagg.authentication = required: %s left out of secure sums (no "
                            "identity key)", ", ".join(keyless))
            live = [m for m in live if m.node_id in self.identities]
            self.keyless = keyless
        if session is not None and not any(m.node_id in self.excluded for m in session.members):
            same = session.server.config.dim == size and session.clip == clip
            # memberships, not node ids: a node that crashed and re-joined is a newcomer too
            newcomers = {m.member_id for m in live} - {m.member_id for m in session.members}
            present = [m for i, m in enumerate(session.members)
                       if i in session.server.alive and not m.gone]
            enough = len(present) >= session.server.config.threshold
            boundary = session.at_block_start() or task.round != session.round
            # a member of the session outside this sum's nodes (another round's sample): a new one
            outsiders = {m.member_id for m in present} - {m.member_id for m in live}
            if same and enough and not (newcomers and boundary) and not outsiders:
                return session
        if len(live) < fewest_members(self.settings):  # 2, or c + 2 with c colluding nodes
            self.session = None
            return None
        config = session_config(self.settings, len(live), size, clip)
        keys = [self.identities.get(m.node_id) for m in live] if mode != "off" else []
        identity_keys = [k for k in keys if k is not None]
        if len(identity_keys) != len(keys):
            identity_keys = []
            if self.identities.has_sources:
                log.warning("secure session without authentication: no identity key for %s",
                            ", ".join(m.node_id for m, k in zip(live, keys, strict=True) if k is None))
        peers, certificates = None, []
        if identity_keys:
            config = dataclasses.replace(config, authenticated=True)
            peers = {i: Ed25519PublicKey.from_public_bytes(k) for i, k in enumerate(identity_keys)}
            certificates = [self.identities.certificate(m.node_id) for m in live]
            if not any(certificates):
                certificates = []
        server = SecAggServer(config, os.urandom(16), peer_identities=peers)
        self.session = Session(server, live, weight_unit(m.weight for m in live), clip, task.round,
                               identity_keys=identity_keys, identity_certificates=certificates)
        self.sessions_started += 1
        log.info("secure session %s: %d members, dim %d, clip %g", server.session_id.hex()[:8],
                 len(live), size, clip)
        return self.session

    def _set_up_block(self, session: Session) -> None:
        server, config = session.server, session.server.config
        prefix = f"secagg/{server.session_id.hex()[:8]}/block{server.block}"

        def begin(index: int) -> pb.Task:
            return pb.Task(task_id=f"{prefix}/advertise", secagg_begin=pb.SecAggBegin(
                session_id=server.session_id, client_index=index, n_clients=config.n_clients,
                dim=config.dim, clip=config.clip, threshold=config.threshold, graph=config.graph,
                degree=config.degree or 0 if config.graph == "secagg+" else 0,
                scale=config.values.scale, max_weight=config.max_weight,
                steps_per_block=config.steps_per_block, weight_unit=session.unit,
                members=session.node_ids, identity_keys=session.identity_keys,
                identity_certificates=session.identity_certificates,
            ))

        self._round(session, sorted(server.alive), begin, AdvertiseKeys, server.receive_advertise,
                    self.round_timeout)
        server.close_advertise()  # before the directory is built: whoever was silent is out,
        #                           whatever its index
        self._round(session, sorted(server.alive),
                    lambda index: pb.Task(task_id=f"{prefix}/share",
                                          key_directory=server.key_directory(index).to_bytes()),
                    ShareKeys, server.receive_share_keys, self.round_timeout)
        server.close_share_keys()  # as above: who sent no shares is out before any delivery
        session.deliveries = {index: server.share_delivery(index).to_bytes()
                              for index in sorted(server.alive)}

    # ---- one step -------------------------------------------------------------------------
    def _step(self, session: Session, message: pb.Task) -> AggregateSum:
        server = session.server
        skipped: dict[str, str] = {}
        self.last_step_members = [session.members[i].node_id for i in sorted(server.alive)]

        def masked_task(index: int) -> pb.Task:
            task = pb.Task(task_id=message.task_id, round=message.round)  # the header; body shared
            task.secure.session_id = server.session_id
            task.secure.step = server.step
            task.secure.share_delivery = session.deliveries.get(index, b"")
            return task

        def record_skip(index: int) -> Callable[[pb.TaskResult], None]:
            node = session.members[index].node_id

            def record(result: pb.TaskResult) -> None:
                if result.masked.skip_reason:
                    skipped[node] = printable(result.masked.skip_reason)

            return record

        self._round(session, sorted(server.alive), masked_task, MaskedInput,
                    server.receive_masked_input, self.step_timeout, body="masked", also=record_skip,
                    shared=SharedBody(message))  # the body encoded once for every member
        session.deliveries = {}
        survivors = server.close_inputs()
        if server.config.authenticated:
            survivors = self._consistency(session, message, survivors)
        self._round(session, survivors,
                    lambda index: pb.Task(task_id=f"{message.task_id}/unmask", round=message.round,
                                          unmask_request=server.unmask_request(index).to_bytes()),
                    UnmaskResponse, server.receive_unmask, self.round_timeout)
        result = server.finish_step()
        if result.clipped_forged:
            bound = len(result.survivors) * server.config.dim
            log.warning("%s: the clipped-element count summed beyond %d (survivors x length): a node "
                        "forged it; counted as %d", message.task_id, bound, result.clipped)
        if result.clipped:
            self.clipped += result.clipped
            log.warning("%s: %d elements clipped to ±%g", message.task_id, result.clipped, session.clip)
        earlier = {session.members[i].node_id: "left the secure session before this step"
                   for i in server.dropped if i not in result.dropped}
        earlier.update(_refusal_notes(session, result.survivors))
        earlier.update(self._excluded_notes(session.node_ids))
        earlier.update({node: "no identity key, and secagg.authentication is required"
                        for node in self.keyless if node not in session.node_ids})
        return to_aggregate(result, session.unit, session.node_ids, skipped, earlier,
                            protocol=protocol_of(server.config))

    def _consistency(self, session: Session, message: pb.Task, survivors: Sequence[int]) -> list[int]:
        """The ConsistencyCheck: every survivor signs the survivor list; the survivors that
        signed are asked to unmask (the library needs a strict majority of all members)."""
        server, signed = session.server, []

        def receive(signature: ConsistencySignature) -> None:
            server.receive_consistency(signature)
            signed.append(signature.header.client_id)

        self._round(session, survivors,
                    lambda index: pb.Task(task_id=f"{message.task_id}/consistency",
                                          round=message.round,
                                          consistency_request=server.consistency_request(index).to_bytes()),
                    ConsistencySignature, receive, self.round_timeout)
        return sorted(signed)

    def _round(self, session: Session, indices: Sequence[int], make_task: Callable[[int], pb.Task],
               kind: type, receive: Callable[[Any], None], timeout: float, *,
               body: str = "secagg_message",
               also: Callable[[int], Callable[[pb.TaskResult], None]] | None = None,
               shared: SharedBody | None = None) -> None:
        """One secure round: a task to each client index, gathered until `timeout`, counted;
        who does not answer in time is what the library's next close call drops."""
        entries = [self._post(session, index, make_task(index), body, kind, receive,
                              None if also is None else also(index), shared) for index in indices]
        self.dispatcher.gather(entries, timeout)
        self.count(entries)

    def _post(self, session: Session, index: int, task: pb.Task, body: str, kind: type,
              receive: Callable[[Any], None], also: Callable[[pb.TaskResult], None] | None = None,
              shared: SharedBody | None = None) -> OpenTask:
        member = session.members[index]

        def accept(result: pb.TaskResult) -> bool:
            if result.WhichOneof("body") == "skip":  # the node refuses: out of this session now
                _refuse(session, index, task.task_id, result.skip.reason)
                return False
            if result.WhichOneof("body") != body:
                raise InvalidMessage(f"{task.task_id}: expected a {body} result under secure "
                                     f"aggregation, got {result.WhichOneof('body')}")
            data = result.masked.masked_input if body == "masked" else result.secagg_message
            parsed = decode(data, kind)
            if parsed.header.client_id != index:
                raise PermissionDenied(f"{member.node_id} is client {index} of this session, "
                                       f"not {parsed.header.client_id}")
            try:
                receive(parsed)
            except InvalidShare:  # proof of cheating: the share is not the one it was dealt
                self._exclude(member.node_id, "revealed a share that is not the one it was dealt")
                raise
            unheld = getattr(parsed, "unheld", ())
            if unheld:
                owners = ", ".join(session.members[i].node_id for i in unheld)
                log.warning("%s could not use the share bundles of %s (it holds no shares of them)",
                            member.node_id, owners)
            if also is not None:
                also(result)
            return True

        return self.dispatcher.post(member, task, accept, shared)


def _refuse(session: Session, index: int, task_id: str, reason: str) -> None:
    """Records that client `index` refused `task_id`. Nothing else is needed: the library's
    next close call drops a client that did not answer, and the refusal has answered the
    dispatcher, so the round goes on as soon as the others are in."""
    node = session.members[index].node_id
    why = printable(reason or "no reason given")
    if node not in session.refused:
        log.warning("%s: node %s refused secure session %s and is a dropout of it: %s", task_id,
                    node, session.server.session_id.hex()[:8], why)
    session.refused.setdefault(node, why)


def _refusal_notes(session: Session, survivors: Sequence[int] = ()) -> dict[str, str]:
    """Why each node that refused a round of the session is missing from its sum (a survivor
    that refused only to unmask is still in the sum: its input was masked and counted)."""
    counted = {session.members[i].node_id for i in survivors}
    return {node: f"refused the secure session: {why}" for node, why in session.refused.items()
            if node not in counted}


def _zeros(size: int) -> np.ndarray:
    return np.zeros(size, dtype=np.float64)
