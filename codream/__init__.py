"""CoDream: federated learning by exchanging dreams instead of models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codream.model_artifacts import ModelArtifact, ModelInfo, load_model, load_model_artifact

__all__ = ["ModelArtifact", "ModelInfo", "load_model", "load_model_artifact"]


def __getattr__(name: str) -> Any:
    """`codream.load_model` and friends, imported on first use: `import codream` stays light
    (no torch) for code that only needs a submodule."""
    if name in __all__:
        from codream import model_artifacts

        return getattr(model_artifacts, name)
    raise AttributeError(f"module 'codream' has no attribute {name!r}")
