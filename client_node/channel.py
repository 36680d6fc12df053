"""The node's gRPC channel to the coordinator: TLS/mTLS, keepalive, and identity on every call.

Identity metadata is added by an interceptor rather than call credentials, because gRPC sends
call credentials only over TLS and the plaintext loopback mode must carry the node id too.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from protos.channel_options import client_options

NODE_METADATA = "x-codream-node"  # matches coordinator.security, which reads it
AUTHORIZATION_METADATA = "authorization"

@dataclass(frozen=True)
class ChannelSecurity:
    """How a node reaches the coordinator; no ca_file means plaintext (loopback development)."""

    ca_file: str | None = None  # the CA the coordinator's certificate must chain to
    cert_file: str | None = None  # with key_file: this node's client certificate, for mTLS
    key_file: str | None = None
    server_name: str | None = None  # the name to check the server certificate against
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise ValueError(f"ChannelSecurity.{missing}: cert_file and key_file go together")
        if self.ca_file is None:
            for name in ("cert_file", "server_name"):
                if getattr(self, name) is not None:
                    raise ValueError(f"ChannelSecurity.{name}: needs ca_file (TLS)")
        if self.token is not None and not _is_metadata_text(self.token):
            # Never echo the token itself.
            raise ValueError("ChannelSecurity.token: must be non-empty printable ASCII without spaces")


def open_channel(
    target: str,
    node_id: str,
    security: ChannelSecurity,
    max_message_bytes: int = 256 * 2**20,
    keepalive_seconds: float = 30.0,
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor | grpc.StreamUnaryClientInterceptor] = (),
) -> grpc.Channel:
    """A channel whose every call carries `x-codream-node` and, if set, the bearer token;
    `interceptors` (e.g. call metrics) see each call before the identity is added."""
    if not node_id or not _is_metadata_text(node_id):
        raise ValueError(f"node_id must be non-empty printable ASCII without spaces, got {node_id!r}")
    options: list[tuple] = list(client_options(max_message_bytes, keepalive_seconds))
    if security.ca_file is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if security.server_name is not None:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        channel = grpc.secure_channel(target, _channel_credentials(security), options=options)
    metadata = [(NODE_METADATA, node_id)]
    if security.token is not None:
        metadata.append((AUTHORIZATION_METADATA, f"Bearer {security.token}"))
    return grpc.intercept_channel(channel, *interceptors, _IdentityInterceptor(tuple(metadata)))


def _channel_credentials(security: ChannelSecurity) -> grpc.ChannelCredentials:
    assert security.ca_file is not None
    root = Path(security.ca_file).read_bytes()
    if security.cert_file is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    assert security.key_file is not None
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=Path(security.key_file).read_bytes(),
        certificate_chain=Path(security.cert_file).read_bytes(),
    )


def _is_metadata_text(text: str) -> bool:
    return bool(text) and all(0x21 <= ord(character) <= 0x7E for character in text)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """The call's details with our metadata added (grpc's own class cannot be constructed)."""


class _IdentityInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Appends fixed identity metadata to every call, whatever its arity."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def __repr__(self) -> str:  # the metadata holds the token
        return f"{type(self).__name__}(<{len(self._metadata)} metadata entries>)"

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)
