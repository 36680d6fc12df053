"""An active coordinator in authenticated mode: the consistency check certifies one list per step.

The shrinking attack (SecAgg+, honest clients only): the coordinator shows the victim v and its
neighbour u a list where everyone survived (they reveal the self-mask shares of v and u), and
shows v's and u's other neighbours w and z a list where v and u dropped and are too poorly held
to rebuild (they reveal their pairwise keys with v and u). From those it strips y_v + y_u of
every mask: the sum of two clients instead of all nine. Each list is signed by t = 2 clients,
which the old rule (t signatures) accepted; a strict majority of all members cannot sign both.
"""

import numpy as np
import pytest
from secagg_helpers import wire_round_trip

from secagg import InProcessSession, InsufficientSurvivors, PhaseError, SecAggConfig, shamir
from secagg.common import self_mask_key, x_coordinate
from secagg.messages import (
    KIND_PAIR_KEY,
    KIND_SELF_MASK,
    ConsistencyRequest,
    Header,
    UnmaskRequest,
)
from secagg.prg import expand

N, DIM = 9, 16


def _masked_session():
    config = SecAggConfig(n_clients=N, dim=DIM, graph="secagg+", degree=2, authenticated=True)
    assert config.shares_needed == 2
    session = InProcessSession.create(config)
    session.setup_block()
    rng = np.random.default_rng(1)
    inputs = {i: rng.uniform(-0.9, 0.9, DIM) for i in range(N)}
    for i in range(N):
        session.server.receive_masked_input(wire_round_trip(session.clients[i].masked_input(0, inputs[i])))
    session.server.close_inputs()
    return session, inputs


def _roles(session):
    graph = session.server.graph
    v = 0
    u, w = sorted(graph[v])
    (z,) = graph[u] - {v}
    assert len({v, u, w, z}) == 4
    return v, u, w, z


def _signatures(session, survivors, signers):
    sid = session.server.session_id
    out = []
    for i in signers:
        request = wire_round_trip(ConsistencyRequest(Header(sid, 0, i), survivors))
        out.append((i, wire_round_trip(session.clients[i].sign_survivors(request)).signature))
    return tuple(sorted(out))


def _request(session, i, survivors, dropped, signatures):
    header = Header(session.server.session_id, 0, i)
    server = session.server  # relays the block encryption keys of the non-neighbour signers
    keys = tuple((s, server._adverts[s].c_public) for s, _ in signatures
                 if s != i and s not in server.graph[i])
    return wire_round_trip(UnmaskRequest(header, survivors, dropped, signatures, dropped, (), keys))


def _shrinking_attack(session, list_a_signers, list_b_signers):
    """The coordinator's two lists and what it strips from y_v + y_u; raises where refused."""
    v, u, w, z = _roles(session)
    everyone = tuple(range(N))
    without = tuple(i for i in everyone if i not in (v, u))
    sig_a = _signatures(session, everyone, list_a_signers)
    sig_b = _signatures(session, without, list_b_signers)
    responses = {i: session.clients[i].unmask(_request(session, i, everyone, (), sig_a))
                 for i in (v, u)}
    responses.update({i: session.clients[i].unmask(_request(session, i, without, (v, u), sig_b))
                      for i in (w, z)})
    sid, length = session.server.session_id, session.config.vector_length
    residual = (session.server._inputs[v].astype(np.uint32) + session.server._inputs[u]).astype(np.uint32)
    for owner in (v, u):
        held = [(h, s) for h, r in responses.items() for p, k, s in r.shares
                if p == owner and k == KIND_SELF_MASK]
        stacked = np.stack([shamir.share_from_bytes(s) for _, s in held[:2]])[:, None, :]
        seed = shamir.reconstruct(stacked, [x_coordinate(h) for h, _ in held[:2]])[0]
        residual -= expand(self_mask_key(seed, sid, 0, owner), length)
    for owner, neighbour in ((v, w), (u, z)):
        (key,) = [s for p, k, s in responses[neighbour].shares if p == owner and k == KIND_PAIR_KEY]
        if neighbour > owner:  # owner added PRG(key) for a larger neighbour: undo that
            residual -= expand(key, length)
        else:
            residual += expand(key, length)
    return session.config.values.decode_sum(residual[:DIM]), (v, u)


def test_with_t_signatures_per_list_the_shrinking_attack_recovers_the_sum_of_two(monkeypatch):
    # the old rule: a list counted with t signatures, t sized for one neighbourhood
    monkeypatch.setattr(SecAggConfig, "certification_quorum", property(lambda c: c.shares_needed))
    session, inputs = _masked_session()
    v, u, w, z = _roles(session)
    recovered, (v, u) = _shrinking_attack(session, [v, u], [w, z])
    assert np.abs(recovered - (inputs[v] + inputs[u])).max() <= session.config.values.sum_error_bound(2)


@pytest.mark.parametrize("majority_for", ["everyone survived", "v and u dropped"])
def test_a_strict_majority_of_all_members_certifies_one_list_and_the_attack_fails(majority_for):
    session, _ = _masked_session()
    assert session.config.certification_quorum == 5
    v, u, w, z = _roles(session)
    others = [i for i in range(N) if i not in (v, u, w, z)]  # 5 clients the coordinator can place
    if majority_for == "everyone survived":
        list_a, list_b = [v, u, *others], [w, z]
    else:
        list_a, list_b = [v, u], [w, z, *others]
    with pytest.raises(InsufficientSurvivors, match="not certified"):
        _shrinking_attack(session, list_a, list_b)


def test_an_honest_client_signs_one_survivor_list_per_step():
    session, _ = _masked_session()
    _signatures(session, tuple(range(N)), [3])
    with pytest.raises(PhaseError):
        _signatures(session, tuple(range(1, N)), [3])


def test_the_server_refuses_to_unmask_a_list_without_a_majority_of_signatures():
    session, _ = _masked_session()
    server = session.server
    for i in range(4):  # 4 of 9: more than t = 2, fewer than the quorum of 5
        server.receive_consistency(session.clients[i].sign_survivors(server.consistency_request(i)))
    with pytest.raises(InsufficientSurvivors, match="strict majority"):
        server.unmask_request(0)


def test_the_honest_path_still_sums_with_a_majority_of_signers():
    config = SecAggConfig(n_clients=N, dim=DIM, graph="secagg+", degree=2, authenticated=True)
    session = InProcessSession.create(config)
    inputs = {i: np.full(DIM, 0.01 * i) for i in range(N)}
    result = session.step(inputs, dropouts={"consistency": {8}})  # 8 of 9 sign: a majority
    assert np.allclose(result.total, sum(inputs.values()), atol=result.error_bound)


def test_a_client_refuses_a_key_directory_that_leaves_it_fewer_holders_than_the_threshold():
    from secagg.messages import KeyDirectory

    config = SecAggConfig(n_clients=5, dim=DIM, threshold=3)
    session = InProcessSession.create(config)
    for i in range(5):
        session.server.receive_advertise(session.clients[i].advertise_keys())
    directory = session.server.key_directory(0)
    own_and_one = tuple(e for e in directory.entries if e.header.client_id in (0, 1))
    with pytest.raises(InsufficientSurvivors, match="advertised keys"):  # 2 holders < t = 3
        session.clients[0].share_keys(KeyDirectory(directory.header, own_and_one))


# -- session parameters bound by every client ----------------------------------------------
def _clients_told(config, contexts):
    """A server and clients whose coordinator told client i `contexts[i]` (authenticated)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg import SecAggClient, SecAggServer

    keys = {i: Ed25519PrivateKey.generate() for i in range(config.n_clients)}
    identities = {i: k.public_key() for i, k in keys.items()}
    server = SecAggServer(config, peer_identities=identities)
    clients = {i: SecAggClient(i, config, server.session_id, identity_key=keys[i],
                               peer_identities=identities, context=contexts[i])
               for i in range(config.n_clients)}
    return InProcessSession(config, server, clients)


def _units_attack():
    """Client 0 is told weight unit 1, the others 1e6: their x = v / W all but vanish."""
    config = SecAggConfig(n_clients=4, dim=DIM, authenticated=True)
    units = {0: 1.0, 1: 1e6, 2: 1e6, 3: 1e6}
    session = _clients_told(config, {i: f"unit={u}".encode() for i, u in units.items()})
    rng = np.random.default_rng(2)
    updates = {i: rng.uniform(-0.9, 0.9, DIM) for i in range(4)}
    return session, updates, {i: updates[i] / units[i] for i in range(4)}


def test_unchecked_different_weight_units_release_one_clients_update_nearly_alone(monkeypatch):
    from secagg import SecAggClient

    monkeypatch.setattr(SecAggClient, "_check_params", lambda self, entry: None)
    session, updates, inputs = _units_attack()
    result = session.step(inputs)
    assert np.abs(result.total - updates[0]).max() < 1e-5  # client 0's update, to 5 decimals


def test_clients_refuse_a_directory_whose_peers_were_given_other_parameters():
    from secagg import ParameterMismatch

    session, _, _ = _units_attack()
    for i in range(4):
        session.server.receive_advertise(session.clients[i].advertise_keys())
    for i in range(4):  # every client sees a peer told something else
        with pytest.raises(ParameterMismatch):
            session.clients[i].share_keys(session.server.key_directory(i))


def test_the_parameter_digest_is_signed_so_the_coordinator_cannot_align_it():
    import dataclasses

    from secagg import SignatureInvalid
    from secagg.messages import KeyDirectory

    session, _, _ = _units_attack()
    adverts = {i: session.clients[i].advertise_keys() for i in range(4)}
    for advert in adverts.values():
        session.server.receive_advertise(advert)
    directory = session.server.key_directory(1)
    forged = tuple(dataclasses.replace(e, params_digest=adverts[1].params_digest)
                   for e in directory.entries)
    with pytest.raises(SignatureInvalid):
        session.clients[1].share_keys(KeyDirectory(directory.header, forged))


def test_every_session_parameter_changes_the_digest():
    import dataclasses

    from secagg.common import params_digest

    base = SecAggConfig(n_clients=4, dim=DIM)
    sid = b"s" * 16
    digests = {params_digest(base, sid, b"unit=1"), params_digest(base, sid, b"unit=2"),
               params_digest(base, b"t" * 16, b"unit=1")}
    for change in ({"n_clients": 5}, {"dim": DIM + 1}, {"clip": 2.0}, {"threshold": 4},
                   {"max_weight": 2.0}, {"steps_per_block": 2}, {"authenticated": True},
                   {"scale": 1000.0}):
        digests.add(params_digest(dataclasses.replace(base, **change), sid, b"unit=1"))
    assert len(digests) == 11


def test_a_client_reveals_no_self_mask_share_for_a_sum_of_one():
    from secagg import RevealRefused

    config = SecAggConfig(n_clients=3, dim=DIM, threshold=2)
    session = InProcessSession.create(config)
    session.setup_block()
    for i in range(3):
        session.server.receive_masked_input(session.clients[i].masked_input(0, np.zeros(DIM)))
    honest = session.server.unmask_request(0)
    alone = UnmaskRequest(honest.header, (0,), (1, 2))
    with pytest.raises(RevealRefused, match="fewer than 2"):
        session.clients[0].unmask(alone)
