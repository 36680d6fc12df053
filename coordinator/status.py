"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from coordinator.errors import (
    AlreadyMember,
    InvalidMessage,
    Misfit,
    NotReady,
    PermissionDenied,
    StaleMessage,
    Unauthenticated,
)
from protos.serde import WireError
from secagg import (
    DroppedClient,
    DuplicateClient,
    MalformedMessage,
    PhaseError,
    SecAggError,
    SessionMismatch,
    SignatureInvalid,
    StepMismatch,
    UnknownClient,
    VersionMismatch,
)

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (AlreadyMember, grpc.StatusCode.ALREADY_EXISTS),
    (StaleMessage, grpc.StatusCode.FAILED_PRECONDITION),
    (Misfit, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT),
    (MalformedMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (VersionMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    (SignatureInvalid, grpc.StatusCode.UNAUTHENTICATED),
    (DuplicateClient, grpc.StatusCode.ALREADY_EXISTS),
    (SessionMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (StepMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (DroppedClient, grpc.StatusCode.FAILED_PRECONDITION),
    (PhaseError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnknownClient, grpc.StatusCode.FAILED_PRECONDITION),
    (SecAggError, grpc.StatusCode.INVALID_ARGUMENT),
    # input nested deeper than a decoder's stack: the caller's message, not a bug of ours
    (RecursionError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(error: Exception) -> grpc.StatusCode | None:
    """The status for a known refusal; None for a bug (the caller answers INTERNAL and logs it)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return None
