"""Whose identity key the coordinator relays for each node: the pinned roster, or the node's cert.

Two sources, for authenticated secure aggregation: `--identities` (a roster pinned out of band)
and, under mTLS, the client certificate each node presented in its Join handshake when that
certificate carries an identity key (codream.identity_certificates). The coordinator only
relays: nodes check the keys against their own roster or CA, so nothing here needs to be
trusted, but relaying the certificate is what lets a node without a roster check a key at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from codream.identity_certificates import identity_key_of

log = logging.getLogger(__name__)
PEM_CERT_PROPERTY = "x509_pem_cert"  # grpc's auth-context key of the peer's certificate


class IdentityBook(Mapping[str, bytes]):
    """node id -> raw Ed25519 identity key (the pinned roster's, else the certificate's), with
    `certificate(node)`: the DER certificate that binds it (b"" for none). Thread-safe."""

    def __init__(self, pinned: Mapping[str, bytes] | None = None) -> None:
        self.pinned = dict(pinned or {})
        self._certificates: dict[str, tuple[bytes, bytes]] = {}  # node -> (DER, raw key)
        self._lock = threading.Lock()

    def observe(self, node_id: str, auth_context: Mapping[str, list[bytes]]) -> None:
        """Records the certificate of an (authenticated) joining node, if it carries a key."""
        pems = auth_context.get(PEM_CERT_PROPERTY, [])
        entry = None
        if len(pems) == 1:
            try:
                certificate = x509.load_pem_x509_certificate(pems[0])
                key = identity_key_of(certificate)
            except ValueError as error:
                log.warning("node %s: its certificate's identity key is unusable: %s", node_id, error)
                key = None
            if key is not None:
                entry = (certificate.public_bytes(serialization.Encoding.DER), key)
                pinned = self.pinned.get(node_id)
                if pinned is not None and pinned != key:
                    log.warning("node %s: --identities pins another identity key than its "
                                "certificate carries; nodes that check certificates will refuse", node_id)
        with self._lock:
            if entry is None:
                self._certificates.pop(node_id, None)
            else:
                self._certificates[node_id] = entry

    def certificate(self, node_id: str) -> bytes:
        with self._lock:
            entry = self._certificates.get(node_id)
        return b"" if entry is None else entry[0]

    @property
    def has_sources(self) -> bool:
        """Whether any node could have a key (a roster, or a certificate seen)."""
        with self._lock:
            return bool(self.pinned or self._certificates)

    def __getitem__(self, node_id: str) -> bytes:
        if node_id in self.pinned:
            return self.pinned[node_id]
        with self._lock:
            entry = self._certificates.get(node_id)
        if entry is None:
            raise KeyError(node_id)
        return entry[1]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            names = set(self.pinned) | set(self._certificates)
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)
