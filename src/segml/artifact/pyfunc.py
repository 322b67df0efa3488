"""The MLflow pyfunc wrapper of a grading artifact (loaded through ``resources/pyfunc_shim.py``).

Input: a feature table at one cutoff (``segml.features.build_features`` output, the columns listed in
``spec/feature_spec.json``) — what ``mlflow.pyfunc.spark_udf(..., env_manager="local")`` can feed. Output: the
grades frame of ``segml grade`` (same rows and order as the input) with ``artifact_version``.
``params={"reasons": False}`` skips the reason codes.

Where the artifact is found: the copy of the core files MLflow stores with the wrapper (``context.artifacts
["grading_artifact"]``, i.e. ``pyfunc/artifacts/grading_artifact/``, so ``pyfunc/`` is self-contained and
Spark's ``spark_udf`` can ship it), else the folder above ``pyfunc/``. Either is verified against its
manifest before anything is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from segml.artifact.manifest import GRADING_ARTIFACT, PYFUNC_DIR


class GradingModel(mlflow.pyfunc.PythonModel):
    """Grades customers from a feature table with a verified segml artifact."""

    def __init__(self, shim_file: str | None = None) -> None:
        self._shim_file = shim_file
        self._artifact: Any = None

    def load_context(self, context: Any) -> None:
        from segml.artifact.load import load_artifact

        artifacts = dict(getattr(context, "artifacts", None) or {})
        if GRADING_ARTIFACT in artifacts:
            # the copy stored with the wrapper has no pyfunc/ folder of its own
            self._artifact = load_artifact(
                Path(artifacts[GRADING_ARTIFACT]), allow_missing=(f"{PYFUNC_DIR}/",)
            )
        elif self._shim_file is not None:
            self._artifact = load_artifact(Path(self._shim_file).resolve().parent.parent)
        else:  # pragma: no cover - MLflow always runs the shim file
            raise RuntimeError("segml grading model: no artifact location (load it with mlflow.pyfunc)")

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self._artifact is None:
            self.load_context(context)
        reasons = bool((params or {}).get("reasons", True))
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self._artifact.score(frame.reset_index(drop=True), reasons=reasons)
