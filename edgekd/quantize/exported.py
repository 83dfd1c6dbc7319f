"""The exported model a ``quantize`` stage works on, for classifiers and causal LMs alike."""

from __future__ import annotations

from edgekd.artifacts import Artifact, ModelArtifact
from edgekd.errors import ConfigError


def exported_model(artifact: Artifact, role: str) -> ModelArtifact:
    """The model of ``role`` with its exported ONNX file; a role no export stage exported is a ConfigError."""
    model_artifact = artifact.models.get(role)
    if model_artifact is None or model_artifact.onnx is None:
        raise ConfigError(f"roles: the {role} has no exported ONNX model; list roles an earlier 'export' "
                          "stage exported")
    return model_artifact
