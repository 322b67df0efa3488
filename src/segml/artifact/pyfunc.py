"""The MLflow pyfunc wrapper of a grading artifact (loaded through ``resources/pyfunc_shim.py``).

Input: a feature table at one cutoff (``segml.features.build_features`` output, the columns listed in
``spec/feature_spec.json``) — what ``mlflow.pyfunc.spark_udf(..., env_manager="local")`` can feed. Output: the
grades frame of ``segml grade`` (same rows and order as the input) with ``artifact_version``.
``params={"reasons": False}`` skips the reason codes.

Where the artifact is found: the copy of the core files MLflow stores with the wrapper (``context.artifacts
["grading_artifact"]``, i.e. ``pyfunc/artifacts/grading_artifact/``, so ``pyfunc/`` is self-contained and
Spark's ``spark_udf`` can ship it), else the folder above ``pyfunc/``. Either goes through the same check as
``segml verify`` before anything is used (manifest, boundary, every file's content, the probe customers). With
``SEGML_ARTIFACT_KEY_FILE`` set to a key file, the artifact's signature must match too, so ``mlflow models
serve`` only serves artifacts from a trusted trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from segml.artifact.manifest import GRADING_ARTIFACT, PYFUNC_DIR

#: environment variable naming a key file; when set, the pyfunc only loads artifacts signed with it
KEY_FILE_ENV = "SEGML_ARTIFACT_KEY_FILE"


def remove_own_bytecode(shim_file: str) -> None:
    """Remove the byte-code cache Python wrote for the shim when MLflow imported it.

    An artifact lists every file it holds, so a ``__pycache__/`` left in ``pyfunc/`` would make the artifact
    fail its own check. Only the shim's cache files are removed, and the folder only when that leaves it empty;
    a read-only artifact (nothing was written) is left alone.
    """
    cache = Path(shim_file).parent / "__pycache__"
    stem = Path(shim_file).stem
    try:
        for pyc in cache.glob(f"{stem}.*.pyc"):
            if not pyc.is_symlink():
                pyc.unlink()
        if cache.is_dir() and not cache.is_symlink() and not any(cache.iterdir()):
            cache.rmdir()
    except OSError:
        pass


class GradingModel(mlflow.pyfunc.PythonModel):
    """Grades customers from a feature table with a verified segml artifact."""

    def __init__(self, shim_file: str | None = None) -> None:
        self._shim_file = shim_file
        self._artifact: Any = None

    def load_context(self, context: Any) -> None:
        from segml.artifact.load import load_artifact
        from segml.artifact.manifest import read_key

        key_file = os.environ.get(KEY_FILE_ENV)
        key = read_key(key_file) if key_file else None
        artifacts = dict(getattr(context, "artifacts", None) or {})
        if GRADING_ARTIFACT in artifacts:
            # the copy stored with the wrapper has no pyfunc/ folder of its own
            self._artifact = load_artifact(
                Path(artifacts[GRADING_ARTIFACT]), allow_missing=(f"{PYFUNC_DIR}/",), key=key
            )
        elif self._shim_file is not None:
            self._artifact = load_artifact(Path(self._shim_file).resolve().parent.parent, key=key)
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
