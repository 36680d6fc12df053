"""Exceptions raised by the secure-aggregation protocol; every wrong message has its own type."""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every error raised by `secagg`."""


class ConfigError(SecAggError, ValueError):
    """A configuration or quantisation parameter is invalid (the message names the field)."""


class MalformedMessage(SecAggError):
    """A message has the wrong length, type tag or structure."""


class VersionMismatch(MalformedMessage):
    """A message carries a wire-format version this code does not speak."""


class InvalidPublicKey(MalformedMessage):
    """An X25519 public key is malformed, non-canonical or of small order (RFC 7748 section 6.1)."""


class DecryptionFailed(SecAggError):
    """An encrypted share bundle failed authentication (tampered, or not for us)."""


class SignatureInvalid(SecAggError):
    """A signature did not verify against the signer's identity key."""


class UnknownClient(SecAggError):
    """A message names a client that is not part of this session or neighbourhood."""


class DuplicateClient(SecAggError):
    """A client id appears twice where each client may appear once."""


class SessionMismatch(SecAggError):
    """A message belongs to another session."""


class ParameterMismatch(SessionMismatch):
    """Peers of one session were given different parameters (their parameter digests differ)."""


class StepMismatch(SecAggError):
    """A message belongs to another step or block of this session (replay or reordering)."""


class PhaseError(SecAggError):
    """A method was called out of protocol order (e.g. unmasking before masking)."""


class DroppedClient(SecAggError):
    """A client that was declared dropped tried to take part again in this session."""


class RevealRefused(SecAggError):
    """A request would reveal both secrets of one peer for one step, or a secret it must not."""


class InsufficientSurvivors(SecAggError):
    """Fewer than the threshold of clients survive; the step aborts and nothing is released."""


class ReconstructionFailed(SecAggError):
    """A rebuilt secret does not match what its owner advertised; `client` names the owner.

    Every share that went into it matched its owner's commitment, so the owner dealt shares that
    do not lie on one polynomial: the owner is at fault, not a holder.
    """

    def __init__(self, message: str, client: int | None = None) -> None:
        super().__init__(message)
        self.client = client


class InvalidShare(SecAggError):
    """A revealed share does not match its owner's commitment; `holder` names who sent it."""

    def __init__(self, message: str, holder: int) -> None:
        super().__init__(message)
        self.holder = holder
