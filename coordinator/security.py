"""Transport security of the coordinator: TLS/mTLS credentials, bearer tokens, caller identity.

A node's identity is what the transport proves, not what it claims: under mTLS the common name
of its client certificate, else the node id whose secret token it presents. Only with neither
configured does the coordinator take the claimed id on trust (loopback development).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from codream.atomic_files import atomic_write
from codream.toml_compat import tomllib
from coordinator.errors import PermissionDenied, Unauthenticated

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

NODE_METADATA = "x-codream-node"
AUTHORIZATION_METADATA = "authorization"
BEARER_SCHEME = "bearer"
# Key of the client certificate's subject CN in grpc's auth context (values are bytes).
COMMON_NAME_PROPERTY = "x509_common_name"



@dataclass(frozen=True)
class ServerSecurity:
    """How the coordinator's port is secured; all fields empty means plaintext, trust-on-claim."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None  # set: mTLS, a node is its certificate's common name
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)  # node id -> secret

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ValueError(f"ServerSecurity.{missing}: cert_file and key_file go together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("ServerSecurity.client_ca_file: mTLS needs cert_file and key_file too")
        tokens = dict(self.tokens)
        for node_id, token in tokens.items():
            if not isinstance(node_id, str) or not node_id:
                raise ValueError("ServerSecurity.tokens: node ids must be non-empty strings")
            if not isinstance(token, str) or not token:
                # The message names the node, never the token.
                raise ValueError(f"ServerSecurity.tokens: token of {node_id!r} must be a non-empty string")
        object.__setattr__(self, "tokens", tokens)  # a private copy the caller cannot mutate

    @property
    def mutual_tls(self) -> bool:
        return self.client_ca_file is not None


def server_credentials(security: ServerSecurity) -> grpc.ServerCredentials | None:
    """Credentials for `server.add_secure_port`; None means `add_insecure_port` (plaintext)."""
    if security.cert_file is None:
        return None
    assert security.key_file is not None  # checked by ServerSecurity
    key_and_cert = (Path(security.key_file).read_bytes(), Path(security.cert_file).read_bytes())
    if security.client_ca_file is None:
        return grpc.ssl_server_credentials([key_and_cert])
    return grpc.ssl_server_credentials(
        [key_and_cert],
        root_certificates=Path(security.client_ca_file).read_bytes(),
        require_client_auth=True,
    )


def authenticate(context: grpc.ServicerContext, security: ServerSecurity) -> str:
    """The caller's verified node id; raises Unauthenticated (or PermissionDenied) otherwise.

    Servicers call this first on every RPC and use only the returned id, never a request field.
    """
    metadata = _metadata(context)
    claimed = _single(metadata, NODE_METADATA)
    if security.mutual_tls:
        node_id = _certificate_common_name(context)
        if claimed is not None and claimed != node_id:
            raise PermissionDenied(f"certificate identifies node {node_id!r}, metadata claims {claimed!r}")
        if security.tokens:
            _check_token(metadata, node_id, security.tokens)
        return node_id
    if claimed is None or not claimed:
        raise Unauthenticated(f"no node id: every call must carry {NODE_METADATA!r} metadata")
    if security.tokens:
        _check_token(metadata, claimed, security.tokens)
    # With no tokens and no mTLS this is trust-on-claim, for loopback development only.
    return claimed


def _metadata(context: grpc.ServicerContext) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata() or ():
        values.setdefault(key.lower(), []).append(value)
    return values


def _single(metadata: Mapping[str, list[str]], key: str) -> str | None:
    values = metadata.get(key, [])
    if len(values) > 1:
        raise Unauthenticated(f"{key!r} metadata given {len(values)} times")
    if values and not isinstance(values[0], str):
        raise Unauthenticated(f"{key!r} metadata must be text")
    return values[0] if values else None


def _certificate_common_name(context: grpc.ServicerContext) -> str:
    names = context.auth_context().get(COMMON_NAME_PROPERTY, [])
    if len(names) != 1:
        raise Unauthenticated("no client certificate common name (mTLS is required)")
    try:
        node_id = names[0].decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unauthenticated("client certificate common name is not UTF-8") from error
    if not node_id:
        raise Unauthenticated("client certificate has an empty common name")
    return node_id


def _check_token(metadata: Mapping[str, list[str]], node_id: str, tokens: Mapping[str, str]) -> None:
    header = _single(metadata, AUTHORIZATION_METADATA)
    if header is None:
        raise Unauthenticated(f"no bearer token for node {node_id!r}")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != BEARER_SCHEME or not presented.strip():
        raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    expected = tokens.get(node_id)
    if expected is None:
        raise Unauthenticated(f"unknown node {node_id!r}: no token is configured for it")
    if not hmac.compare_digest(presented.strip().encode("utf-8"), expected.encode("utf-8")):
        raise Unauthenticated(f"wrong token for node {node_id!r}")


def generate_tokens(node_ids: Iterable[str]) -> dict[str, str]:
    """A fresh 256-bit random token per node id."""
    node_ids = list(node_ids)
    if len(set(node_ids)) != len(node_ids) or not all(node_ids):
        raise ValueError(f"node_ids must be distinct non-empty strings, got {node_ids!r}")
    return {node_id: secrets.token_urlsafe(32) for node_id in node_ids}


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write atomically, readable only by the owner: a reader never sees a half or open file."""
    atomic_write(Path(path), lambda stream: stream.write(data), private=True)


def write_tokens(path: str | os.PathLike[str], tokens: Mapping[str, str]) -> None:
    """Store tokens as a TOML `[tokens]` table, mode 0600."""
    lines = ["# CoDream node tokens: secret, keep mode 0600.", "[tokens]"]
    for node_id, token in tokens.items():
        lines.append(f"{_toml_string(node_id)} = {_toml_string(token)}")
    write_private_file(path, ("\n".join(lines) + "\n").encode("utf-8"))


def load_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a file written by `write_tokens`; ValueError naming the file for anything else."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"token file {str(path)!r}: cannot read it as TOML ({error})") from error
    table = data.get("tokens")
    if not isinstance(table, dict):
        raise ValueError(f"token file {str(path)!r}: needs a [tokens] table of node id = token")
    for node_id, token in table.items():
        if not isinstance(token, str) or not token:
            raise ValueError(f"token file {str(path)!r}: token of {node_id!r} must be a non-empty string")
    return dict(table)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in escaped):
        raise ValueError("node ids and tokens must not contain control characters")
    return f'"{escaped}"'
