"""The gRPC channel options both ends must agree on: message limits and keepalive.

The server must accept the client's keepalive pings even between calls (nodes idle in a long
poll), or it answers them with GOAWAY "too_many_pings" and drops the node; so both sides are
built here from the same two numbers.
"""

from __future__ import annotations

KEEPALIVE_TIMEOUT_MS = 20_000
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
Option = tuple[str, int]


def _shared(max_message_bytes: int, keepalive_seconds: float) -> list[Option]:
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
    if keepalive_seconds <= 0:
        raise ValueError(f"keepalive_seconds must be positive, got {keepalive_seconds}")
    keepalive_ms = int(keepalive_seconds * 1000)
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", min(KEEPALIVE_TIMEOUT_MS, keepalive_ms)),
        ("grpc.keepalive_permit_without_calls", 1),  # nodes sit idle between long polls
        ("grpc.http2.max_pings_without_data", 0),
    ]


def client_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_seconds: float = 30.0
                   ) -> list[Option]:
    return _shared(max_message_bytes, keepalive_seconds)


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_seconds: float = 30.0
                   ) -> list[Option]:
    keepalive_ms = int(keepalive_seconds * 1000)
    # Half the client's interval, so timer jitter never counts as a ping strike.
    return [*_shared(max_message_bytes, keepalive_seconds),
            ("grpc.http2.min_ping_interval_without_data_ms", max(1, keepalive_ms // 2))]
