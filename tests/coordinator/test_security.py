"""Transport security end to end: real gRPC on loopback (port 0), tokens, TLS and mTLS."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from client_node.channel import ChannelSecurity, open_channel
from codream.cli.certs_command import main
from codream.cli.dev_certificates import DevPki, generate_dev_pki
from coordinator.errors import PermissionDenied, Unauthenticated
from coordinator.security import (
    ServerSecurity,
    authenticate,
    generate_tokens,
    load_tokens,
    server_credentials,
    write_tokens,
)
from protos.channel_options import server_options

IDENTITY = "/codream.test.Echo/Identity"
NODES = ("node-0", "node-1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), NODES)


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """Same names, different CA: must never be accepted by a server trusting `pki`."""
    return generate_dev_pki(tmp_path_factory.mktemp("other-pki"), NODES)


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return generate_tokens(NODES)


@contextlib.contextmanager
def serving(security: ServerSecurity) -> Iterator[int]:
    """A server with the health service and an echo-identity method; yields its port."""

    def identity(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return authenticate(context, security).encode()
        except Unauthenticated as error:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        except PermissionDenied as error:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=server_options())
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(
            "codream.test.Echo", {"Identity": grpc.unary_unary_rpc_method_handler(identity)}
        )]
    )
    credentials = server_credentials(security)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def call_identity(port: int, node_id: str, security: ChannelSecurity) -> str:
    with open_channel(f"127.0.0.1:{port}", node_id, security) as channel:
        return channel.unary_unary(IDENTITY)(b"", timeout=5).decode()


def rpc_error(port: int, node_id: str, security: ChannelSecurity) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call_identity(port, node_id, security)
    return caught.value


def mtls_server(pki: DevPki, tokens: dict[str, str] | None = None) -> ServerSecurity:
    return ServerSecurity(str(pki.server_cert), str(pki.server_key), str(pki.ca_cert), tokens=tokens or {})


def node_tls(pki: DevPki, node_id: str | None = None, token: str | None = None, **kwargs) -> ChannelSecurity:
    if node_id is None:
        return ChannelSecurity(ca_file=str(pki.ca_cert), token=token, **kwargs)
    return ChannelSecurity(
        str(pki.ca_cert), str(pki.node_certs[node_id]), str(pki.node_keys[node_id]), token=token, **kwargs
    )


# --- bearer tokens over plaintext loopback ------------------------------------------------------


def test_token_identifies_node_and_health_stub_works(tokens: dict[str, str]) -> None:
    with serving(ServerSecurity(tokens=tokens)) as port:
        assert call_identity(port, "node-1", ChannelSecurity(token=tokens["node-1"])) == "node-1"
        with open_channel(f"127.0.0.1:{port}", "node-1", ChannelSecurity()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_wrong_missing_and_foreign_tokens_are_unauthenticated(tokens: dict[str, str]) -> None:
    with serving(ServerSecurity(tokens=tokens)) as port:
        wrong = rpc_error(port, "node-0", ChannelSecurity(token=tokens["node-1"]))
        missing = rpc_error(port, "node-0", ChannelSecurity())
        unknown = rpc_error(port, "node-9", ChannelSecurity(token=tokens["node-0"]))
    for error, words in ((wrong, "wrong token"), (missing, "no bearer token"), (unknown, "unknown node")):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert words in error.details()
        assert not any(token in error.details() for token in tokens.values())


def test_open_dev_mode_trusts_claimed_id_but_requires_one() -> None:
    with serving(ServerSecurity()) as port:
        assert call_identity(port, "node-7", ChannelSecurity()) == "node-7"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as bare:  # no interceptor, no metadata
            with pytest.raises(grpc.RpcError) as caught:
                bare.unary_unary(IDENTITY)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-codream-node" in caught.value.details()


# --- TLS and mTLS -------------------------------------------------------------------------------


def test_mtls_identifies_node_by_certificate_common_name(pki: DevPki) -> None:
    with serving(mtls_server(pki)) as port:
        assert call_identity(port, "node-0", node_tls(pki, "node-0")) == "node-0"
        # A node presenting node-1's certificate cannot claim to be node-0.
        claim = rpc_error(port, "node-0", node_tls(pki, "node-1"))
    assert claim.code() == grpc.StatusCode.PERMISSION_DENIED


def test_mtls_rejects_client_without_certificate_or_from_another_ca(pki: DevPki, other_pki: DevPki) -> None:
    foreign = ChannelSecurity(
        str(pki.ca_cert), str(other_pki.node_certs["node-0"]), str(other_pki.node_keys["node-0"])
    )
    with serving(mtls_server(pki)) as port:
        no_certificate = rpc_error(port, "node-0", node_tls(pki))
        wrong_ca = rpc_error(port, "node-0", foreign)
    # The handshake fails, so the call never reaches the servicer.
    assert no_certificate.code() == grpc.StatusCode.UNAVAILABLE
    assert wrong_ca.code() == grpc.StatusCode.UNAVAILABLE


def test_client_rejects_server_of_another_ca_or_name(pki: DevPki, other_pki: DevPki) -> None:
    with serving(mtls_server(pki)) as port:
        assert call_identity(port, "node-0", node_tls(pki, "node-0", server_name="localhost")) == "node-0"
        impostor = rpc_error(port, "node-0", node_tls(other_pki, "node-0"))
        wrong_name = rpc_error(port, "node-0", node_tls(pki, "node-0", server_name="elsewhere.example"))
    assert impostor.code() == grpc.StatusCode.UNAVAILABLE
    assert wrong_name.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_with_tokens_needs_the_certificate_nodes_token(pki: DevPki, tokens: dict[str, str]) -> None:
    with serving(mtls_server(pki, tokens)) as port:
        assert call_identity(port, "node-0", node_tls(pki, "node-0", token=tokens["node-0"])) == "node-0"
        other = rpc_error(port, "node-0", node_tls(pki, "node-0", token=tokens["node-1"]))
    assert other.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tls_without_client_auth_plus_token(pki: DevPki, tokens: dict[str, str]) -> None:
    security = ServerSecurity(str(pki.server_cert), str(pki.server_key), tokens=tokens)
    with serving(security) as port:
        assert call_identity(port, "node-1", node_tls(pki, token=tokens["node-1"])) == "node-1"
        missing = rpc_error(port, "node-1", node_tls(pki))
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED


# --- authenticate without a network --------------------------------------------------------------


class FakeContext:
    def __init__(self, metadata: list[tuple[str, str]], auth: dict[str, list[bytes]] | None = None):
        self._metadata, self._auth = metadata, auth or {}

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [("Bearer {t}", True), ("bearer {t}", True), ("Basic {t}", False), ("{t}", False), ("Bearer ", False)],
)
def test_authorization_header_forms(authorization: str, accepted: bool) -> None:
    security = ServerSecurity(tokens={"n": "secret-token"})
    header = authorization.format(t="secret-token")
    context = FakeContext([("x-codream-node", "n"), ("authorization", header)])
    if accepted:
        assert authenticate(context, security) == "n"
    else:
        with pytest.raises(Unauthenticated, match="Bearer <token>"):
            authenticate(context, security)


def test_duplicate_credentials_and_mtls_without_certificate_are_unauthenticated(pki: DevPki) -> None:
    security = ServerSecurity(tokens={"n": "t"})
    twice = FakeContext([("x-codream-node", "n"), *[("authorization", f"Bearer {t}") for t in "tu"]])
    with pytest.raises(Unauthenticated, match="2 times"):
        authenticate(twice, security)
    with pytest.raises(Unauthenticated, match="common name"):
        authenticate(FakeContext([("x-codream-node", "n")]), mtls_server(pki))


# --- configuration, secrets at rest, repr -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"cert_file": "c"}, "key_file"),
        ({"key_file": "k"}, "cert_file"),
        ({"client_ca_file": "ca"}, "client_ca_file"),
        ({"tokens": {"n": ""}}, "tokens"),
    ],
)
def test_server_security_validates(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ServerSecurity(**kwargs)


def test_repr_never_shows_tokens(tokens: dict[str, str]) -> None:
    shown = repr(ServerSecurity(tokens=tokens)) + repr(ChannelSecurity(token=tokens["node-0"]))
    assert not any(token in shown for token in tokens.values())


def test_token_file_round_trip_is_private(tmp_path: Path, tokens: dict[str, str]) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text("stale")
    path.chmod(0o644)
    write_tokens(path, {**tokens, 'odd "name"': "x\\y"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_tokens(path) == {**tokens, 'odd "name"': "x\\y"}
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.toml"]  # no temp file left behind


@pytest.mark.parametrize("text", ["not toml [", "[other]\na = 'b'\n", "[tokens]\nn = 3\n", "tokens = 'x'\n"])
def test_load_tokens_rejects_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="token file"):
        load_tokens(path)


def test_generated_pki_files_and_modes(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--nodes", "node-0,node-1", "--hosts", "localhost"]) == 0
    names = {"ca.pem", "server.pem", "server.key", "node-0.pem", "node-0.key", "node-1.pem", "node-1.key",
             "node-0.identity.key", "node-1.identity.key", "identities.toml"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert main(["--out", str(tmp_path / "x"), "--nodes", "server"]) == 2  # would overwrite server.pem


def test_generate_tokens_are_distinct_and_refuse_duplicate_ids() -> None:
    tokens = generate_tokens(["a", "b"])
    assert tokens.keys() == {"a", "b"} and len(set(tokens.values())) == 2
    assert all(len(token) >= 43 for token in tokens.values())  # 32 random bytes, base64url
    with pytest.raises(ValueError, match="node_ids"):
        generate_tokens(["a", "a"])
