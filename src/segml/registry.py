"""Registering the production grading model in the MLflow registry (aliases challenger / champion).

The grading artifact (``segml.artifact``) is exported and logged to the run, then registered; a version is
``champion`` only when there is none yet or it beats the champion on the same evaluation key
(:func:`segml.tracking.register_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from segml.config import ExperimentConfig
from segml.errors import SegmlError
from segml.pipeline.context import SELECTION_METRIC, evaluation_key


@dataclass
class Registration:
    """A registered model version."""

    name: str
    version: int
    model_uri: str
    metric: float
    evaluation_key: str
    champion: bool
    via: Literal["artifact", "pyfunc"]


def register_grading_model(cfg: ExperimentConfig, parent_id: str, artifact_dir=None) -> Registration:
    """Export (unless ``artifact_dir`` is given) and register this run's production grading model.

    The version is ``challenger``; it is also ``champion`` when there is none or it beats the champion on the
    same :func:`~segml.pipeline.context.evaluation_key`.
    """
    from segml import artifact, tracking

    report_file = cfg.paths.reports / "models" / "potential.json"
    if not report_file.is_file():
        raise SegmlError(f"{report_file}: no potential-model report — the potential stage did not finish")
    metrics = json.loads(report_file.read_text(encoding="utf-8"))["holdout_metrics"]["potential"]
    metric = metrics.get(SELECTION_METRIC)
    if metric is None:
        raise SegmlError(f"{report_file}: holdout_metrics.potential.{SELECTION_METRIC} is missing")
    if artifact_dir is None:
        artifact_dir = artifact.export_artifact(cfg, mlflow_run_id=parent_id)
    uri = artifact.log_to_mlflow(artifact_dir, parent_id)
    key = evaluation_key(cfg)
    name = cfg.registered_model
    version = tracking.register_model(uri, name, float(metric), True, evaluation_key=key)
    champion = tracking.current_champion(name) == version
    return Registration(name, version, uri, float(metric), key, champion, "artifact")


__all__ = ["Registration", "register_grading_model"]
