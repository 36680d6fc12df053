"""mTLS-bound identities: the man in the middle of test_secure_identities against a node that
checks every relayed identity key against a certificate its own CA issued (CN = node id).

The same attack with the check switched off (a node that trusts the coordinator's relayed keys)
recovers the victim's update in the clear, so the attack is real; with it on, every way of
relaying the attacker's keys is refused before the victim advertises anything.
"""

import datetime

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_secure_identities import FAKE, KEYS, MEMBERS, SID, UPDATE, _attack

from client_node.secure_contribution import SecureContribution, SecureTaskError, SessionParams
from codream import identity_certificates as certs
from codream.cli.dev_certificates import generate_dev_pki
from codream.cli.identities import load_identity_key, raw_public_key
from secagg import SecAggConfig, SignatureInvalid

NOW = datetime.datetime.now(datetime.timezone.utc)


def _ca(name="test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _issue(ca, common_name, raw_identity, days=1):
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=3))
               .not_valid_after(NOW + datetime.timedelta(days=days))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if raw_identity is not None:
        builder = builder.add_extension(certs.identity_extension(raw_identity), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


CA = _ca()
RAW = {n: k.public_key().public_bytes_raw() for n, k in KEYS.items()}
CERTS = {n: _issue(CA, n, RAW[n]) for n in MEMBERS}
FAKE_RAW = {MEMBERS[i]: FAKE[i].public_key().public_bytes_raw() for i in (1, 2)}


def _victim():
    return SecureContribution("node-0", identity_key=KEYS["node-0"], identity_authorities=[CA[1]])


def _params(keys, certificates):
    config = SecAggConfig(n_clients=3, dim=6, clip=10.0, authenticated=True)
    return SessionParams(SID, 0, config, 1.0, MEMBERS, tuple(keys), tuple(certificates))


def _attackers_keys():
    return [RAW["node-0"], FAKE_RAW["node-1"], FAKE_RAW["node-2"]]


def test_without_the_certificate_check_the_relayed_keys_give_the_update_away():
    """Defence off: the node signs but trusts whatever keys the coordinator relays."""
    trusting = SecureContribution("node-0", identity_key=KEYS["node-0"])
    recovered = _attack(trusting, _params(_attackers_keys(), [CERTS[n] for n in MEMBERS]))
    assert np.abs(recovered - UPDATE).max() < 1e-6


def test_the_real_keys_and_certificates_make_the_impersonated_advertisements_fail():
    with pytest.raises(SignatureInvalid):
        _attack(_victim(), _params([RAW[n] for n in MEMBERS], [CERTS[n] for n in MEMBERS]))


def test_the_attackers_keys_beside_the_real_certificates_are_refused():
    victim = _victim()
    with pytest.raises(SecureTaskError, match="not the one its certificate carries"):
        victim.begin(_params(_attackers_keys(), [CERTS[n] for n in MEMBERS]))
    assert victim.client is None  # refused before any key was advertised


def test_certificates_from_a_ca_of_the_attackers_own_are_refused():
    rogue = _ca("CoDream development CA")  # the same name, another key
    forged = [CERTS["node-0"], _issue(rogue, "node-1", FAKE_RAW["node-1"]),
              _issue(rogue, "node-2", FAKE_RAW["node-2"])]
    with pytest.raises(SecureTaskError, match="not issued by this node's CA"):
        _victim().begin(_params(_attackers_keys(), forged))


def test_a_certificate_of_another_node_is_refused_for_this_member():
    swapped = [CERTS["node-0"], CERTS["node-2"], CERTS["node-2"]]
    with pytest.raises(SecureTaskError, match="names 'node-2'"):
        _victim().begin(_params([RAW["node-0"], RAW["node-2"], RAW["node-2"]], swapped))


@pytest.mark.parametrize("certificate, why", [
    (lambda: _issue(CA, "node-1", None), "carries no identity key"),
    (lambda: _issue(CA, "node-1", RAW["node-1"], days=-1), "not valid now"),
    (lambda: b"\x30\x03junk", "not DER X.509"),
    (lambda: b"", "not DER X.509"),
])
def test_unusable_certificates_are_refused(certificate, why):
    relayed = [CERTS["node-0"], certificate(), CERTS["node-2"]]
    with pytest.raises(SecureTaskError, match=why):
        _victim().begin(_params([RAW[n] for n in MEMBERS], relayed))


def test_missing_certificates_and_unauthenticated_sessions_are_refused():
    with pytest.raises(SecureTaskError, match="3 identity certificates"):
        _victim().begin(_params([RAW[n] for n in MEMBERS], []))
    plain = SessionParams(SID, 0, SecAggConfig(n_clients=3, dim=6, clip=10.0), 1.0, MEMBERS)
    with pytest.raises(SecureTaskError, match="only in authenticated sessions"):
        _victim().begin(plain)


def test_the_genuine_session_is_joined_and_signed():
    message = _victim().begin(_params([RAW[n] for n in MEMBERS], [CERTS[n] for n in MEMBERS]))
    assert message  # an AdvertiseKeys, signed with node-0's identity key


def test_the_dev_pki_binds_each_nodes_derived_identity_key_into_its_certificate(tmp_path):
    pki = generate_dev_pki(tmp_path, ["node-0", "node-1"])
    ca = certs.load_certificates(pki.ca_cert.read_bytes(), "ca.pem")
    for node in ("node-0", "node-1"):
        tls_key = certs.load_tls_key(pki.node_keys[node].read_bytes(), "key")
        derived = certs.derive_identity_key(tls_key)
        assert raw_public_key(derived) == raw_public_key(load_identity_key(pki.identity_keys[node]))
        der = x509.load_pem_x509_certificate(pki.node_certs[node].read_bytes()).public_bytes(
            serialization.Encoding.DER)
        assert certs.verify_identity_certificate(der, ca, node) == raw_public_key(derived)
        # a separate key: the identity is not the TLS key itself
        assert raw_public_key(derived) != tls_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)[1:]
    assert certs.derive_identity_key(tls_key).private_bytes_raw() == derived.private_bytes_raw()
