"""Secure aggregation (Bonawitz et al. CCS 2017; SecAgg+ graph of Bell et al. CCS 2020)."""

from secagg.client import Phase, SecAggClient
from secagg.config import SecAggConfig
from secagg.errors import (
    ConfigError,
    DecryptionFailed,
    DroppedClient,
    DuplicateClient,
    InsufficientSurvivors,
    MalformedMessage,
    ParameterMismatch,
    PhaseError,
    ReconstructionFailed,
    RevealRefused,
    SecAggError,
    SessionMismatch,
    SignatureInvalid,
    StepMismatch,
    UnknownClient,
    VersionMismatch,
)
from secagg.messages import decode
from secagg.quantize import FixedPoint
from secagg.server import SecAggServer, ServerPhase, StepResult
from secagg.session import InProcessSession, run_aggregation

__all__ = [
    "ConfigError",
    "DecryptionFailed",
    "DroppedClient",
    "DuplicateClient",
    "FixedPoint",
    "InProcessSession",
    "InsufficientSurvivors",
    "MalformedMessage",
    "ParameterMismatch",
    "Phase",
    "PhaseError",
    "ReconstructionFailed",
    "RevealRefused",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "ServerPhase",
    "SessionMismatch",
    "SignatureInvalid",
    "StepMismatch",
    "StepResult",
    "UnknownClient",
    "VersionMismatch",
    "decode",
    "run_aggregation",
]
