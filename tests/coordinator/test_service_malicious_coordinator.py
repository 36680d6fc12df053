"""A malicious coordinator against real node daemons over real gRPC on loopback.

The coordinator is the real CoordinatorService; the test makes it malicious at the points where
it builds secure-round tasks and takes in the nodes' answers: its SecAggServer (each session's is
replaced by an attacking subclass) and `SecureRounds._post` (which sees every task it posts).
The nodes are unmodified `NodeDaemon`s, each with its real task logic on digits.

Two attacks, each run twice, once without authentication (it must work: proof that the harness
attacks for real) and once with identity keys pinned in every node's roster (it must fail:
every honest node refuses the session, nothing is released, nothing of the victim's input
reaches the attacker):

* key substitution (a man in the middle of AdvertiseKeys / ShareKeys): the victim, client 0,
  gets a key directory of the attacker's own clients in its peers' names, and its peers get
  the attacker's client in the victim's name. The victim deals its shares to the attacker,
  which rebuilds its self-mask seed, removes its pairwise masks and so holds its masked input
  in the clear; it then feeds that input in through its own client, so the sum the coordinator
  releases is the honest one and nobody notices. With a roster, the substituted advertisements
  carry the attacker's signatures, not the pinned keys': refused.
* split weight units: the victim is told the true weight unit W, the others a huge one, so the
  sum is the victim's update nearly alone; the coordinator also rewrites the parameter digest
  in every advertisement of each key directory to the recipient's own, so each node's check
  that all were told the same passes. With a roster the digests are signed: refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from service_helpers import CALL_TIMEOUT, SumRecorder, serving, tiny_config

import coordinator.secure_rounds as secure_rounds
from client_node.channel import ChannelSecurity
from client_node.daemon import EXIT_OK, NodeDaemon
from client_node.node_options import NodeOptions
from client_node.secure_contribution import SecureContribution, SessionParams, session_context
from client_node.task_runner import session_params
from codream.cli.certs_command import write_pki
from codream.cli.node_command import add_node_command, node_options
from coordinator.security import ServerSecurity
from secagg import SecAggClient, SecAggServer, shamir
from secagg.common import pairwise_mask_key, self_mask_key, x_coordinate
from secagg.messages import Header, KeyDirectory, MaskedInput, ShareDelivery, UnmaskRequest
from secagg.prg import expand

pytestmark = pytest.mark.integration

NODES = ("node-0", "node-1", "node-2")
VICTIM = 0  # the client index attacked in every session
HUGE = 1e9  # the weight unit the others are told in the split-unit attack


# ---- the attacker -------------------------------------------------------------------------------
class Attacker:
    """What the malicious coordinator saw and learnt, and the hooks that make it malicious."""

    def __init__(self, server_class: type[SecAggServer], split_units: bool = False) -> None:
        self.server_class = server_class
        self.split_units = split_units
        self.begun: dict[bytes, dict[int, SessionParams]] = {}  # session -> index -> SecAggBegin
        self.recovered: dict[tuple[bytes, int], tuple[np.ndarray, float]] = {}  # (session, step)
        self.refusals: list[tuple[str, str, str]] = []  # (task id, node, reason)
        self.servers: list[SecAggServer] = []
        self.released: dict[tuple[bytes, int], object] = {}  # (session, step) -> StepResult

    def install(self, monkeypatch) -> Attacker:
        post, refuse, attacker = secure_rounds.SecureRounds._post, secure_rounds._refuse, self

        def malicious_post(rounds, session, index, task, *args, **kwargs):
            if task.WhichOneof("body") == "secagg_begin":
                if attacker.split_units and index != VICTIM:
                    task.secagg_begin.weight_unit = HUGE
                begin = task.secagg_begin
                attacker.begun.setdefault(begin.session_id, {})[index] = session_params(begin)
            return post(rounds, session, index, task, *args, **kwargs)

        def recorded_refusal(session, index, task_id, reason):
            attacker.refusals.append((task_id, session.members[index].node_id, reason))
            return refuse(session, index, task_id, reason)

        def new_server(config, session_id, *, peer_identities=None):
            server = attacker.server_class(attacker, config, session_id,
                                           peer_identities=peer_identities)
            attacker.servers.append(server)
            return server

        monkeypatch.setattr(secure_rounds.SecureRounds, "_post", malicious_post)
        monkeypatch.setattr(secure_rounds, "_refuse", recorded_refusal)
        monkeypatch.setattr(secure_rounds, "SecAggServer", new_server)
        return self


class AttackingServer(SecAggServer):
    """A session's SecAggServer that keeps every release for the attacker."""

    def __init__(self, attacker: Attacker, config, session_id, *, peer_identities=None) -> None:
        self.attacker = attacker
        super().__init__(config, session_id, peer_identities=peer_identities)

    def finish_step(self):
        result = super().finish_step()
        self.attacker.released[(self.session_id, result.step)] = result
        return result


class ManInTheMiddle(AttackingServer):
    """Two worlds in one session. World B is this server's own state, the sum the coordinator
    releases: the attacker's impostor of the victim with the real others. World A is the victim's:
    the victim with the attacker's fakes of its peers, which it deals its shares to."""

    def __init__(self, attacker: Attacker, config, session_id, *, peer_identities=None) -> None:
        self.fake_keys = {i: Ed25519PrivateKey.generate() for i in range(config.n_clients)}
        if config.authenticated:  # the attacker's own server trusts its impostor's key
            peer_identities = {**peer_identities, VICTIM: self.fake_keys[VICTIM].public_key()}
        super().__init__(attacker, config, session_id, peer_identities=peer_identities)
        self.peers: dict[int, SecAggClient] | None = None  # world A: fakes of the victim's peers
        self.impostor: SecAggClient | None = None  # world B: the fake of the victim

    def _make_fakes(self) -> None:
        params = self.attacker.begun[self.session_id][VICTIM]  # what the victim was told
        signing = params.config.authenticated
        fake = {i: k.public_key() for i, k in self.fake_keys.items()}
        real = {i: Ed25519PublicKey.from_public_bytes(k) for i, k in enumerate(params.identity_keys)}

        def client(index: int, identities: dict) -> SecAggClient:
            return SecAggClient(index, params.config, self.session_id, context=session_context(params),
                                identity_key=self.fake_keys[index] if signing else None,
                                peer_identities=identities if signing else None)

        self.peers = {i: client(i, {**fake, VICTIM: real.get(VICTIM)})
                      for i in range(params.config.n_clients) if i != VICTIM}
        self.impostor = client(VICTIM, {**real, VICTIM: fake[VICTIM]})

    # -- key set-up ---------------------------------------------------------------------------
    def receive_advertise(self, message) -> None:
        if message.header.client_id != VICTIM:
            return super().receive_advertise(message)
        if self.peers is None:
            self._make_fakes()
        self.victim_advert = message
        self.adverts_a = {VICTIM: message, **{i: c.advertise_keys() for i, c in self.peers.items()}}
        return super().receive_advertise(self.impostor.advertise_keys())

    def _directory_a(self, index: int) -> KeyDirectory:
        ids = sorted((self.graph[index] | {index}) & set(self.adverts_a))
        return KeyDirectory(Header(self.session_id, self.block, index),
                            tuple(self.adverts_a[i] for i in ids))

    def key_directory(self, client_id: int) -> KeyDirectory:
        if client_id != VICTIM:
            return super().key_directory(client_id)
        self.close_advertise()
        return self._directory_a(VICTIM)  # the victim's peers' keys are the attacker's

    def receive_share_keys(self, message) -> None:
        if message.header.client_id != VICTIM:
            return super().receive_share_keys(message)
        self.dealt_a = {VICTIM: message}  # the victim's shares, encrypted to the attacker's keys
        self.dealt_a.update({i: c.share_keys(self._directory_a(i)) for i, c in self.peers.items()})
        return super().receive_share_keys(self.impostor.share_keys(super().key_directory(VICTIM)))

    def _delivery_a(self, index: int) -> ShareDelivery:
        senders = [s for s in sorted(self.dealt_a)
                   if s != index and index in dict(self.dealt_a[s].ciphertexts)]
        return ShareDelivery(Header(self.session_id, self.block, index),
                             tuple((s, dict(self.dealt_a[s].ciphertexts)[index]) for s in senders),
                             tuple((s, dict(self.dealt_a[s].commitments)[index]) for s in senders))

    def share_delivery(self, client_id: int) -> ShareDelivery:
        if client_id != VICTIM:
            return super().share_delivery(client_id)
        self.close_share_keys()
        for i, fake in self.peers.items():  # the fakes decrypt the victim's bundles
            fake.receive_shares(self._delivery_a(i))
        self.impostor.receive_shares(super().share_delivery(VICTIM))
        return self._delivery_a(VICTIM)

    # -- each step ----------------------------------------------------------------------------
    def receive_masked_input(self, message: MaskedInput) -> None:
        if message.header.client_id != VICTIM:
            return super().receive_masked_input(message)
        step = message.header.index
        x, weight = self.strip(message)
        self.attacker.recovered[(self.session_id, step)] = (x, weight)
        for fake in self.peers.values():  # kept in step, so later steps and blocks go on
            fake.masked_input(step, np.zeros(self.config.dim), 0.0)
        weight = min(max(weight, 0.0), self.config.max_weight)
        return super().receive_masked_input(self.impostor.masked_input(step, x, weight))

    def strip(self, message: MaskedInput) -> tuple[np.ndarray, float]:
        """The victim's (x, weight) from its masked input: its self-mask seed rebuilt from the
        shares it dealt the fakes, its pairwise masks from the fakes' own masking keys."""
        cfg, step = self.config, message.header.index
        j = step - self.block * cfg.steps_per_block
        holders = sorted(self.peers)[:cfg.shares_needed]
        shares = np.stack([self.peers[i]._secrets.held[VICTIM][1, j] for i in holders])
        seed = shamir.reconstruct(shares[:, None, :], [x_coordinate(i) for i in holders])[0]
        y = message.masked.astype(np.uint32).copy()
        y -= expand(self_mask_key(seed, self.session_id, step, VICTIM), cfg.vector_length)
        for i, fake in self.peers.items():
            mask = expand(pairwise_mask_key(fake._secrets.s_privates[j],
                                            self.victim_advert.s_publics[j], self.session_id, step,
                                            i, VICTIM), cfg.vector_length)
            if i > VICTIM:  # the victim added PRG(s_uv) for v > u and subtracted it for v < u
                y -= mask
            else:
                y += mask
        d = cfg.dim
        return cfg.values.decode_sum(y[:d]), float(cfg.weights.decode_sum(y[d:d + 1])[0])

    def unmask_request(self, client_id: int) -> UnmaskRequest:
        if client_id != VICTIM:
            return super().unmask_request(client_id)
        self.impostor_unmask = self.impostor.unmask(super().unmask_request(VICTIM))
        every = tuple(range(self.config.n_clients))  # world A: nobody dropped
        for i, fake in self.peers.items():
            fake.unmask(UnmaskRequest(Header(self.session_id, self.step, i), every, ()))
        return UnmaskRequest(Header(self.session_id, self.step, VICTIM), every, ())

    def receive_unmask(self, message) -> None:
        if message.header.client_id != VICTIM:
            return super().receive_unmask(message)
        return super().receive_unmask(self.impostor_unmask)  # the victim's answer is of world A


class SplitUnits(AttackingServer):
    """The others were told a huge weight unit (`Attacker.install` rewrote their SecAggBegin);
    every key directory shows each advertisement with the recipient's own parameter digest."""

    def key_directory(self, client_id: int) -> KeyDirectory:
        directory = super().key_directory(client_id)
        own = next(e for e in directory.entries if e.header.client_id == client_id).params_digest
        return dataclasses.replace(directory, entries=tuple(
            e if e.header.client_id == client_id else dataclasses.replace(e, params_digest=own)
            for e in directory.entries))


# ---- the honest side ----------------------------------------------------------------------------
class MaskedInputs:
    """What each node masked, by the node's own code: (node id, session, step) -> (x, weight)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, bytes, int], tuple[np.ndarray, float]] = {}

    def install(self, monkeypatch) -> MaskedInputs:
        masked = SecureContribution.masked

        def recording(contribution, session_id, step, reply):
            result = masked(contribution, session_id, step, reply)
            x, weight, _ = contribution.masking_input(reply)  # the node's x = w·v / W
            self.seen[(contribution.node_id, session_id, step)] = (x.copy(), weight)
            return result

        monkeypatch.setattr(SecureContribution, "masked", recording)
        return self


def _mtls_options(node: str, pki) -> NodeOptions:
    """The options `codream node --tls-ca --tls-cert --tls-key` gives: the node signs with the
    identity key its certificate carries and checks the members' against its CA."""
    parser = argparse.ArgumentParser()
    add_node_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["node", "--coordinator", "127.0.0.1:1", "--node-id", node,
                              "--tls-ca", str(pki.ca_cert), "--tls-cert", str(pki.node_certs[node]),
                              "--tls-key", str(pki.node_keys[node])])
    return node_options(args, {})


def _run(tmp_path, monkeypatch, attacker: Attacker, identities: str):
    """A tiny CoDream run on digits: the service (made malicious by `attacker`) and three real
    node daemons over gRPC. `identities`: "off" (no identity keys: unauthenticated sessions),
    "roster" (identity keys, and a roster of them every node pins) or "mtls" (mTLS, each node's
    identity key in its certificate, checked against the CA)."""
    attacker.install(monkeypatch)
    sums = SumRecorder().install(monkeypatch)
    inputs = MaskedInputs().install(monkeypatch)
    keys = {n: Ed25519PrivateKey.generate() for n in NODES}
    roster = {n: k.public_key().public_bytes_raw() for n, k in keys.items()}
    config = tiny_config(tmp_path / "run", clients=3)
    assert config.secagg.enabled
    settings: dict = {"identities": roster} if identities == "roster" else {}
    if identities == "mtls":
        pki = write_pki(tmp_path / "pki", NODES, ("localhost", "127.0.0.1"), force=False)
        settings["security"] = ServerSecurity(str(pki.server_cert), str(pki.server_key),
                                              str(pki.ca_cert))
    with serving(config, **settings) as served:
        daemons = []
        for node in NODES:
            if identities == "mtls":
                options = _mtls_options(node, pki)
            else:
                options = NodeOptions(served.target, node, ChannelSecurity(token=served.tokens[node]),
                                      identity_key=keys[node] if identities == "roster" else None,
                                      peer_identities=roster if identities == "roster" else None)
            options = dataclasses.replace(options, coordinator=served.target, device="cpu",
                                          pull_wait=0.5)
            daemon, codes = NodeDaemon(options), []
            thread = threading.Thread(target=lambda d=daemon, c=codes: c.append(d.run()), daemon=True)
            thread.start()
            daemons.append((daemon, thread, codes))
        try:
            assert len(served.service.membership.wait_for(3, 60.0)) == 3
            served.start_run()
            served.wait_run()
        finally:
            for daemon, thread, _ in daemons:
                daemon.stop.set()
                thread.join(CALL_TIMEOUT)
    assert [codes for _, _, codes in daemons] == [[EXIT_OK]] * 3
    return sums, inputs


def _victim(attacker: Attacker, session_id: bytes) -> str:
    return attacker.begun[session_id][VICTIM].members[VICTIM]


def _summed(sums: SumRecorder) -> list[str]:
    return [task for task, replies in sums.replies.items() if replies.total is not None]


# ---- key substitution ---------------------------------------------------------------------------
def test_unauthenticated_a_man_in_the_middle_recovers_every_update_of_the_victim(
        tmp_path, monkeypatch):
    attacker = Attacker(ManInTheMiddle)
    sums, inputs = _run(tmp_path, monkeypatch, attacker, identities="off")
    assert attacker.refusals == []  # nobody noticed
    assert len(attacker.recovered) >= 3  # dream steps and soft labels, every one of them
    for (session_id, step), (x, weight) in attacker.recovered.items():
        config = attacker.begun[session_id][VICTIM].config
        truth, true_weight = inputs.seen[(_victim(attacker, session_id), session_id, step)]
        assert np.abs(truth).max() > 100 * config.values.element_error_bound  # not trivially 0
        np.testing.assert_allclose(x, np.clip(truth, -config.clip, config.clip), rtol=0,
                                   atol=config.values.element_error_bound * (1 + 1e-6))
        assert abs(weight - true_weight) <= config.weights.element_error_bound * (1 + 1e-6)
    # the impostor fed the victim's input back in: every release is the honest sum of all three
    assert len(attacker.released) == len(attacker.recovered) == len(_summed(sums))
    for (session_id, at), step in attacker.released.items():
        config = attacker.begun[session_id][VICTIM].config
        honest = sum(np.clip(x, -config.clip, config.clip)
                     for (_, sid, i), (x, _) in inputs.seen.items() if sid == session_id and i == at)
        assert sorted(step.survivors) == [0, 1, 2]
        assert np.all(np.abs(step.total - honest) <= step.error_bound * (1 + 1e-6))
    for task in _summed(sums):
        assert sums.replies[task].total.contributors == NODES, task


@pytest.mark.parametrize("identities", ["roster", "mtls"])
def test_pinned_identities_refuse_the_man_in_the_middle_and_nothing_is_revealed(
        tmp_path, monkeypatch, identities):
    attacker = Attacker(ManInTheMiddle)
    sums, inputs = _run(tmp_path, monkeypatch, attacker, identities=identities)
    assert attacker.servers and all(s.config.authenticated for s in attacker.servers)
    assert not any(hasattr(s, "dealt_a") for s in attacker.servers)  # no share of the victim's
    assert attacker.recovered == {}  # and no masked input of it ever reached the attacker
    assert inputs.seen == {}  # no node masked anything
    refused = {(node, reason.split(":")[0]) for task, node, reason in attacker.refusals
               if task.endswith("/share")}
    assert refused == {(node, "SignatureInvalid") for node in NODES}  # all three, at ShareKeys
    summed = _summed(sums)
    assert summed
    for task in summed:  # nothing released
        assert sums.steps[task] == [], task
        assert sums.replies[task].total.contributors == () and sums.replies[task].total.weight == 0


# ---- split weight units ---------------------------------------------------------------------------
def test_unauthenticated_split_weight_units_release_the_victims_update_nearly_alone(
        tmp_path, monkeypatch):
    attacker = Attacker(SplitUnits, split_units=True)
    sums, inputs = _run(tmp_path, monkeypatch, attacker, identities="off")
    assert attacker.refusals == []  # the forged digests passed every node's check
    assert len(attacker.released) >= 3 and len(attacker.released) == len(_summed(sums))
    for (session_id, at), step in attacker.released.items():
        config = attacker.begun[session_id][VICTIM].config
        victim = _victim(attacker, session_id)
        truth, _ = inputs.seen[(victim, session_id, at)]
        others = sum(np.abs(x) for (node, sid, i), (x, _) in inputs.seen.items()
                     if sid == session_id and i == at and node != victim)
        assert sorted(step.survivors) == [0, 1, 2]
        truth = np.clip(truth, -config.clip, config.clip)
        assert np.abs(truth).max() > 100 * config.values.element_error_bound  # not trivially 0
        assert np.all(np.abs(step.total - truth) <= step.error_bound + others + 1e-12)
        # the others' part of the sum is noise: the release is the victim's x
        assert np.max(others) < 1e-4 * np.abs(truth).max(), (session_id.hex(), at)


@pytest.mark.parametrize("identities", ["roster", "mtls"])
def test_pinned_identities_refuse_forged_parameter_digests_and_nothing_is_released(
        tmp_path, monkeypatch, identities):
    attacker = Attacker(SplitUnits, split_units=True)
    sums, inputs = _run(tmp_path, monkeypatch, attacker, identities=identities)
    assert attacker.servers and all(s.config.authenticated for s in attacker.servers)
    assert inputs.seen == {}  # no node masked anything
    refused = {(node, reason.split(":")[0]) for task, node, reason in attacker.refusals
               if task.endswith("/share")}
    assert refused == {(node, "SignatureInvalid") for node in NODES}
    summed = _summed(sums)
    assert summed
    for task in summed:
        assert sums.steps[task] == [], task
        assert sums.replies[task].total.contributors == () and sums.replies[task].total.weight == 0
