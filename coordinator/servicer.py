"""The gRPC adapter: authenticate, call the federation, map refusals to status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from coordinator.federation import Federation
from coordinator.security import ServerSecurity, authenticate
from coordinator.status import status_for
from protos.codream.v1 import codream_pb2_grpc as pb_grpc
from protos.serde import printable

log = logging.getLogger(__name__)
DETAIL_LIMIT = 400  # characters of a status message (it quotes at most a few peer strings)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, federation: Federation, security: ServerSecurity):
        self.federation = federation
        self.security = security

    def _call(self, context: grpc.ServicerContext, method: str, handler: Callable[[str], Any]) -> Any:
        try:
            node_id = authenticate(context, self.security)
            return handler(node_id)
        except Exception as error:  # noqa: BLE001 — every refusal is answered, never dropped
            code = status_for(error)
            if code is None:
                log.exception("%s failed", method)
                context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error")
            # a refusal may quote what the caller sent: one line, bounded, in the log and status
            detail = printable(error, DETAIL_LIMIT)
            log.info("%s refused (%s): %s", method, code.name, detail)
            context.abort(code, detail)

    def Join(self, request, context):
        return self._call(context, "Join", lambda node: self.federation.join(node, request))

    def Ready(self, request, context):
        return self._call(context, "Ready", lambda node: self.federation.ready(node, request))

    def Heartbeat(self, request_iterator, context):
        return self._call(context, "Heartbeat",
                          lambda node: self.federation.heartbeat(node, _until_broken(request_iterator)))

    def PullTask(self, request, context):
        return self._call(context, "PullTask", lambda node: self.federation.pull(node, request))

    def SubmitResult(self, request, context):
        return self._call(context, "SubmitResult", lambda node: self.federation.submit(node, request))

    def Exchange(self, request, context):
        return self._call(context, "Exchange", lambda node: self.federation.exchange(node, request))


def _until_broken(stream):
    """A client stream that ends quietly when the peer vanishes (that is how a node leaves)."""
    try:
        yield from stream
    except grpc.RpcError:
        return
