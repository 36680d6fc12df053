"""The node channel adds its identity metadata to calls of every arity, and validates its config."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from client_node.channel import ChannelSecurity, open_channel
from protos.channel_options import server_options


def _seen(context: grpc.ServicerContext) -> bytes:
    metadata = dict(context.invocation_metadata())
    return "|".join(str(metadata.get(key)) for key in ("x-codream-node", "authorization", "extra")).encode()


def test_every_arity_carries_node_id_and_token_alongside_caller_metadata() -> None:
    def once(request, context):
        return _seen(context)

    def stream(request, context):
        yield _seen(context)

    handlers = {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(once),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(once),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=server_options(2**20, 5.0))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("codream.test.Seen", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        channel_security = ChannelSecurity(token="t0k3n")
        with open_channel(f"127.0.0.1:{port}", "node-3", channel_security, 2**20, 5.0) as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
            call = {"metadata": [("extra", "kept")], "timeout": 5}
            replies = [
                channel.unary_unary("/codream.test.Seen/UnaryUnary")(b"", **call),
                *channel.unary_stream("/codream.test.Seen/UnaryStream")(b"", **call),
                channel.stream_unary("/codream.test.Seen/StreamUnary")(iter([b""]), **call),
                *channel.stream_stream("/codream.test.Seen/StreamStream")(iter([b""]), **call),
            ]
    finally:
        server.stop(None)
    assert replies == [b"node-3|Bearer t0k3n|kept"] * 4


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"cert_file": "c", "ca_file": "ca"}, "key_file"),
        ({"key_file": "k", "ca_file": "ca"}, "cert_file"),
        ({"cert_file": "c", "key_file": "k"}, "cert_file"),
        ({"server_name": "localhost"}, "server_name"),
        ({"token": "has space"}, "token"),
        ({"token": ""}, "token"),
    ],
)
def test_channel_security_validates(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name) as caught:
        ChannelSecurity(**kwargs)
    assert "has space" not in str(caught.value)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("", ChannelSecurity()), "node_id"),
        (("n\n", ChannelSecurity()), "node_id"),
        (("n", ChannelSecurity(), 0), "max_message_bytes"),
        (("n", ChannelSecurity(), 1, 0.0), "keepalive_seconds"),
    ],
)
def test_open_channel_validates(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        open_channel("127.0.0.1:1", *args)


def test_server_keepalive_tolerates_the_client_interval() -> None:
    options = dict(server_options(8, 30.0))
    assert options["grpc.http2.min_ping_interval_without_data_ms"] < 30_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 8
