"""Versioned grading artifacts: export, verify, load and grade (``segml export | grade | verify``).

An artifact (``artifacts/<name>/<version>/``) holds the production potential-value model as LightGBM text
and ONNX, the fitted grade policy (YAML), reference statistics, tree rules and cluster centroids (JSON), the
feature spec and input/output schema, a model card, an MLflow pyfunc wrapper (models-from-code, no pickle)
and ``manifest.json`` with the SHA-256 of every file. See ``docs/artifact.md``.

Importing this package is light: MLflow, ONNX and the training stack are imported only by the functions
that need them (export, MLflow logging), never on the grading path.
"""

from __future__ import annotations

from segml.artifact.export import export_artifact, log_to_mlflow
from segml.artifact.load import GradingArtifact, grade, load_artifact, read_mapping
from segml.artifact.manifest import ArtifactError, verify

__all__ = [
    "ArtifactError",
    "GradingArtifact",
    "export_artifact",
    "grade",
    "load_artifact",
    "log_to_mlflow",
    "read_mapping",
    "verify",
]
