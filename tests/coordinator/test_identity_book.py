"""The coordinator's IdentityBook: the pinned roster first, else the identity key of the mTLS
certificate a node joined with; certificates without one (or unusable ones) give no key."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from codream.cli.dev_certificates import generate_dev_pki
from codream.cli.identities import load_identity_key, raw_public_key
from coordinator.identity_book import PEM_CERT_PROPERTY, IdentityBook


def test_keys_come_from_the_roster_first_then_the_certificate(tmp_path):
    pki = generate_dev_pki(tmp_path, ["node-0", "node-1"])
    pem = pki.node_certs["node-0"].read_bytes()
    book = IdentityBook({"node-1": b"\1" * 32})
    assert "node-0" not in book and book["node-1"] == b"\1" * 32 and book.certificate("node-1") == b""
    book.observe("node-0", {PEM_CERT_PROPERTY: [pem]})
    assert book["node-0"] == raw_public_key(load_identity_key(pki.identity_keys["node-0"]))
    assert book.certificate("node-0") == x509.load_pem_x509_certificate(pem).public_bytes(
        serialization.Encoding.DER)
    book.observe("node-1", {PEM_CERT_PROPERTY: [pki.node_certs["node-1"].read_bytes()]})
    assert book["node-1"] == b"\1" * 32  # pinned wins (a warning says they differ)
    assert sorted(book) == ["node-0", "node-1"] and len(book) == 2


def test_a_certificate_without_a_usable_identity_gives_no_key(tmp_path):
    pki = generate_dev_pki(tmp_path, ["node-0"])
    book = IdentityBook()
    book.observe("node-0", {PEM_CERT_PROPERTY: [pki.node_certs["node-0"].read_bytes()]})
    assert "node-0" in book and book.has_sources
    book.observe("node-0", {PEM_CERT_PROPERTY: [pki.server_cert.read_bytes()]})  # no extension
    assert "node-0" not in book and book.certificate("node-0") == b""
    book.observe("node-0", {PEM_CERT_PROPERTY: [b"not a certificate"]})
    book.observe("node-0", {})
    assert "node-0" not in book and not book.has_sources
