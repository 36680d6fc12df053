"""Dialling the coordinator: a stub on the node's channel, and how to hang up."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from client_node.channel import open_channel
from client_node.node_options import NodeOptions
from protos.codream.v1 import codream_pb2_grpc as pb_grpc


def connect(options: NodeOptions, interceptors: Sequence[Any] = ()) -> tuple[Any, Callable[[], None]]:
    channel = open_channel(options.coordinator, options.node_id, options.security,
                           options.max_message_bytes, interceptors=interceptors)
    return pb_grpc.CoordinatorStub(channel), channel.close
