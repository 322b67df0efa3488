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

    The version's metric is the holdout Gini of the scorer the grades are built on (``selection.json``). The
    version is ``challenger``; it is also ``champion`` when there is none or it beats the champion on the same
    :func:`~segml.pipeline.context.evaluation_key` (``segml promote`` overrides).
    """
    from segml import artifact, tracking

    # the metric of what the grades are built on: the potential model, or the fallback scorer chosen inside
    # calibration — a version is never champion on the strength of a model it does not use
    selection_file = cfg.paths.reports / "selection.json"
    if not selection_file.is_file():
        raise SegmlError(f"{selection_file}: no selection record — the select stage did not finish")
    selection = json.loads(selection_file.read_text(encoding="utf-8"))
    if selection.get("metric") != SELECTION_METRIC or selection.get("value") is None:
        raise SegmlError(f"{selection_file}: no holdout {SELECTION_METRIC} of the selected scorer")
    metric = selection["value"]
    if artifact_dir is None:
        artifact_dir = artifact.export_artifact(cfg, mlflow_run_id=parent_id)
    uri = artifact.log_to_mlflow(artifact_dir, parent_id)
    key = evaluation_key(cfg)
    name = cfg.registered_model
    version = tracking.register_model(uri, name, float(metric), True, evaluation_key=key)
    champion = tracking.current_champion(name) == version
    return Registration(name, version, uri, float(metric), key, champion, "artifact")


__all__ = ["Registration", "register_grading_model"]
