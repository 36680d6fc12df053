"""A throwaway PKI for development and tests: a CA, a coordinator certificate, one per node,
and for authenticated secure aggregation one Ed25519 identity key per node (<node>.identity.key)
with the roster that pins them all (identities.toml; format in `codream.cli.identities`).

Each node certificate also carries its node's identity public key (codream.identity_certificates),
and the identity key is the one derived from the node's mTLS key: a node run with just its mTLS
files signs with it, and peers check it against the CA (mTLS-bound mode); the identity.key file
and the roster hold the same key for the pinned-roster mode.

Not for production: the CA key is kept only in memory and discarded, so the set cannot be
extended later, and certificates live 30 days. Regenerate rather than renew.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from codream.atomic_files import atomic_write
from codream.cli import identities
from codream.identity_certificates import derive_identity_key, identity_extension

VALIDITY = datetime.timedelta(days=30)
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # backdate, so a slightly slow peer accepts it at once
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # also a safe file name
_RESERVED = frozenset({"ca", "server"})  # would overwrite ca.pem / server.pem


@dataclass(frozen=True)
class DevPki:
    """Paths of the files `generate_dev_pki` wrote."""

    out_dir: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_certs: Mapping[str, Path]
    node_keys: Mapping[str, Path]
    identity_keys: Mapping[str, Path]  # node id -> <node>.identity.key (Ed25519, PEM, 0600)
    roster: Path  # identities.toml: node id = hex raw Ed25519 public key


def generate_dev_pki(
    out_dir: Path, node_ids: Sequence[str], hosts: Sequence[str] = ("localhost", "127.0.0.1")
) -> DevPki:
    """Write ca.pem, server.pem/.key (SANs = hosts), <node>.pem/.key (CN = node id),
    <node>.identity.key and identities.toml."""
    node_ids = list(node_ids)
    for node_id in node_ids:
        if not _NODE_ID.fullmatch(node_id) or node_id in _RESERVED or node_id.endswith(".identity"):
            raise ValueError(
                f"node_ids: {node_id!r} must match {_NODE_ID.pattern}, not be one of {sorted(_RESERVED)} "
                "and not end in .identity (would overwrite an identity key)"
            )
    if len(set(node_ids)) != len(node_ids):
        raise ValueError(f"node_ids: duplicates in {node_ids!r}")
    if not hosts:
        raise ValueError("hosts: the server certificate needs at least one DNS name or IP address")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("CoDream development CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(certificate_signing=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = out_dir / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, common_name: str, usage: x509.ObjectIdentifier, sans: list,
              identity: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), ca_name, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(certificate_signing=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if identity:  # non-critical: TLS stacks that do not know it still accept the certificate
            raw = identities.raw_public_key(derive_identity_key(key))
            builder = builder.add_extension(identity_extension(raw), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(key_path, lambda stream: stream.write(key_pem), private=True)  # mode 0600
        return cert_path, key_path

    server_cert, server_key = issue(
        "server", "codream-coordinator", ExtendedKeyUsageOID.SERVER_AUTH, [_san(host) for host in hosts]
    )
    node_certs, node_keys = {}, {}
    for node_id in node_ids:
        # No SAN on client certificates: the coordinator reads the node id from the CN.
        node_certs[node_id], node_keys[node_id] = issue(node_id, node_id, ExtendedKeyUsageOID.CLIENT_AUTH,
                                                        [], identity=True)
    identity_keys, public = {}, {}
    for node_id in node_ids:
        tls_key = serialization.load_pem_private_key(node_keys[node_id].read_bytes(), password=None)
        key = derive_identity_key(tls_key)  # the key its certificate carries
        identity_keys[node_id] = out_dir / f"{node_id}.identity.key"
        identities.write_identity_key(identity_keys[node_id], key)
        public[node_id] = identities.raw_public_key(key)
    roster = out_dir / "identities.toml"
    identities.write_roster(roster, public)
    return DevPki(out_dir, ca_path, server_cert, server_key, node_certs, node_keys, identity_keys, roster)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
    )


def _key_usage(certificate_signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not certificate_signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_signing,
        crl_sign=certificate_signing,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
