"""Identity keys bound to mTLS certificates: the CA, not the coordinator, vouches for them.

Authenticated secure aggregation needs every node's Ed25519 identity key to come from somewhere
the coordinator cannot forge. With mTLS that is the node's certificate: `codream certs` writes
the node's raw Ed25519 identity public key into a non-critical X.509 extension (IDENTITY_OID) of
the certificate the CA signs for CN = node id. The coordinator relays each member's certificate
(it sees it in the TLS handshake) and every node checks it against its own CA: issued by the CA,
in its validity window, CN = the member's node id, and the extension = the key relayed for that
member. A coordinator without the CA's key can neither substitute a key nor invent a member.

Why an extension, not an Ed25519 certificate key: grpc's BoringSSL refuses Ed25519 certificates
in the handshake (NO_COMMON_SIGNATURE_ALGORITHMS, grpcio 1.85), and one key for two protocols
(TLS transcripts and secagg messages) is poor practice anyway. Why derived from the TLS key: the
node then needs no second secret file and no extra flag; the identity seed is HKDF-SHA256 of the
TLS private key under a label of its own, so it is a separate key (an identity signature reveals
nothing of the TLS key), and rotating the certificate rotates the identity.

Pure cryptography (no grpc); errors are ValueError with one line.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A UUID-derived OID (ITU-T X.667, arc 2.25): needs no registration and collides with nothing.
IDENTITY_OID = x509.ObjectIdentifier("2.25.238412377150934958470512470394581207317")
_DERIVE_LABEL = b"codream secagg identity key v1"
_OCTET_STRING_32 = b"\x04\x20"  # DER header of a 32-byte OCTET STRING (the extnValue contents)


def identity_extension(raw_public_key: bytes) -> x509.UnrecognizedExtension:
    """The extension carrying a raw 32-byte Ed25519 public key (add it as non-critical: a TLS
    stack refuses a certificate with a critical extension it does not know)."""
    if len(raw_public_key) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(raw_public_key)}")
    return x509.UnrecognizedExtension(IDENTITY_OID, _OCTET_STRING_32 + raw_public_key)


def identity_key_of(certificate: x509.Certificate) -> bytes | None:
    """The raw Ed25519 identity public key the certificate carries, or None; ValueError when the
    extension is there but malformed."""
    try:
        extension = certificate.extensions.get_extension_for_oid(IDENTITY_OID)
    except x509.ExtensionNotFound:
        return None
    value = extension.value
    data = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(data) != 34 or not data.startswith(_OCTET_STRING_32):
        raise ValueError("the certificate's identity-key extension is not a 32-byte OCTET STRING")
    raw = data[2:]
    ed25519.Ed25519PublicKey.from_public_bytes(raw)  # 32 bytes always load; kept as the check
    return raw


def derive_identity_key(tls_private_key: object) -> ed25519.Ed25519PrivateKey:
    """The node's Ed25519 identity key, derived from its mTLS private key (EC, RSA, Ed25519 or
    Ed448); ValueError for another kind of key."""
    if isinstance(tls_private_key, ec.EllipticCurvePrivateKey):
        numbers = tls_private_key.private_numbers()
        size = (tls_private_key.curve.key_size + 7) // 8
        secret = numbers.private_value.to_bytes(size, "big")
    elif isinstance(tls_private_key, rsa.RSAPrivateKey):
        d = tls_private_key.private_numbers().d
        secret = d.to_bytes((d.bit_length() + 7) // 8, "big")
    elif isinstance(tls_private_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        secret = tls_private_key.private_bytes_raw()
    else:
        raise ValueError(f"cannot derive an identity key from a {type(tls_private_key).__name__}")
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=_DERIVE_LABEL).derive(secret)
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def load_tls_key(pem: bytes, where: str) -> object:
    """The PEM private key of an mTLS credential; ValueError naming `where`."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: not an unencrypted PEM private key") from None
    except Exception as error:  # cryptography's UnsupportedAlgorithm
        raise ValueError(f"{where}: cannot load the key ({error})") from None


def load_certificates(pem: bytes, where: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (at least one); ValueError naming `where`."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{where}: not a PEM certificate bundle") from None
    if not certificates:
        raise ValueError(f"{where}: holds no certificate")
    return certificates


def verify_identity_certificate(der: bytes, authorities: Sequence[x509.Certificate], node_id: str,
                                now: datetime.datetime | None = None) -> bytes:
    """The identity key a member's certificate (DER) binds to `node_id`, once checked: issued
    directly by one of `authorities`, valid now, a client certificate (EKU, when it names one)
    whose only common name is `node_id`, with an identity-key extension. ValueError says why."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise ValueError(f"the certificate relayed for {node_id!r} is not DER X.509") from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if len(names) == 1 else None
    if common_name != node_id:
        raise ValueError(f"the certificate relayed for {node_id!r} names {common_name!r}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ValueError(f"the certificate of {node_id!r} is not valid now")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise ValueError(f"the certificate of {node_id!r} is not a client certificate")
    except x509.ExtensionNotFound:
        pass
    if not any(_issued_by(certificate, authority) for authority in authorities):
        raise ValueError(f"the certificate of {node_id!r} is not issued by this node's CA")
    key = identity_key_of(certificate)
    if key is None:
        raise ValueError(f"the certificate of {node_id!r} carries no identity key")
    return key


def _issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        constraints = authority.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
