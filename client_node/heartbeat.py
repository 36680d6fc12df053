"""The heartbeat stream: one client-streaming call open for the whole membership."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from client_node.backoff import Backoff
from protos.codream.v1 import codream_pb2 as pb

log = logging.getLogger(__name__)


class Heartbeat:
    """The client-streaming Heartbeat call, open for the whole membership.

    A stream the coordinator refused because it was busy (RESOURCE_EXHAUSTED) is opened again
    after a back-off, for the same membership: the node did not leave.
    """

    def __init__(self, stub: Any, member_id: str, period: float, busy: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._end = threading.Event()
        self._stub, self._member_id, self._period = stub, member_id, period
        self._busy = busy or Backoff(start=0.05, cap=2.0)
        self._clock = clock
        self._retry_at: float | None = None
        self.reopened = 0
        self._future = stub.Heartbeat.future(self._beats(member_id, period))

    def reopen_if_busy(self) -> bool:
        """True while the ended stream was refused as busy: it is reopened once its back-off is
        over (until then the node goes on serving); False for any other end."""
        if not _busy(self._future):
            return False
        now = self._clock()
        if self._retry_at is None:
            self._retry_at = now + self._busy.next_delay()
        elif now >= self._retry_at:
            log.info("heartbeat refused as busy; reopening it for the same membership")
            self._retry_at = None
            self.reopened += 1
            self._future = self._stub.Heartbeat.future(self._beats(self._member_id, self._period))
        return True

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


def _busy(future: Any) -> bool:
    try:
        error = future.exception(timeout=0)
    except Exception:  # noqa: BLE001 — cancelled or not done: not a busy refusal
        return False
    return isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
