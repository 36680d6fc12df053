"""Domain errors of the coordinator service; `coordinator.status` maps each to one gRPC code.

They carry no grpc import so membership and dispatch stay testable without a network.
"""

from __future__ import annotations


class CoordinatorError(Exception):
    """Base: something a caller did that the coordinator refuses, with a message for it."""


class Unauthenticated(CoordinatorError):
    """No credential, or one that does not verify."""


class PermissionDenied(CoordinatorError):
    """A verified caller asks for something its identity does not allow (e.g. another node id)."""


class AlreadyMember(CoordinatorError):
    """The node id already has a live membership (a second process with the same identity)."""


class StaleMessage(CoordinatorError):
    """For a membership, task, step or session that is no longer current (late or replayed)."""


class InvalidMessage(CoordinatorError):
    """Well-formed on the wire but wrong for the task: shape, dtype, non-finite, wrong kind."""


class NotReady(CoordinatorError):
    """The federation cannot serve this yet or any more (shutting down, not started)."""


class Misfit(CoordinatorError):
    """The node's data does not fit the federation's (input shape, classes), or the node cannot
    say (it predates the fields). A retry with the same node cannot fix it: `refusal` marks the
    status as final for the node (`protos.refusals`), which then stops instead of re-joining."""

    def __init__(self, message: str, refusal: str) -> None:
        super().__init__(message)
        self.refusal = refusal
