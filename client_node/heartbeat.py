"""The heartbeat stream: one client-streaming call open for the whole membership."""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from protos.codream.v1 import codream_pb2 as pb

log = logging.getLogger(__name__)


class Heartbeat:
    """The client-streaming Heartbeat call, open for the whole membership."""

    def __init__(self, stub: Any, member_id: str, period: float) -> None:
        self._end = threading.Event()
        self._future = stub.Heartbeat.future(self._beats(member_id, period))

    def _beats(self, member_id: str, period: float):
        sequence = 0
        while True:
            yield pb.Beat(member_id=member_id, sequence=sequence)
            sequence += 1
            if self._end.wait(period):
                return  # ending the stream is how the node says it leaves

    def ended(self) -> bool:
        return self._future.done()

    def close(self, timeout: float = 5.0) -> None:
        self._end.set()
        try:
            self._future.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            self._future.cancel()
        except Exception as error:  # the stream may already have failed; nothing to do
            log.debug("heartbeat ended with %s", error)
