"""The declared stages of an experiment and how one of them runs.

``STAGES`` is the one ordered list: ingest → features → baselines → clustering → tree → potential → select →
evaluate → grade → monitor → export. ``segml train`` runs it headless (:func:`segml.pipeline.run_pipeline`);
``segml run`` executes the notebooks, and each analyst notebook calls :func:`run_stage` for the stage it
drives, so both paths run the same functions and log the same MLflow runs.

A stage run (:func:`run_stage`):

1. applies keyword parameters to the stage's settings section (``run_stage("clustering", cfg, k_max=6)``
   is ``--set models.clustering.k_max=6``), validated like the YAML;
2. runs the stage function, which writes its outputs atomically;
3. logs itself to MLflow as a run nested under the parent (when tracking is configured): the settings
   dataclass flattened as parameters, the stage's metrics, its JSON outputs as artifacts;
4. writes its completion record ``data/processed/<exp>/stages/<stage>.json``: the experiment fingerprint
   (seed, cutoffs, features, the clean data's hash), the stage settings and the SHA-256 of every output, so
   :func:`check_consistent` can refuse outputs of different runs (a killed run, another seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segml.config import ExperimentConfig, from_mapping
from segml.errors import ConfigError, SegmlError
from segml.jsonable import flat_params, jsonable
from segml.pipeline.context import TrainContext, load_context
from segml.storage import sha256_file, write_json


@dataclass
class StageLog:
    """What a stage logs to its MLflow run (beyond its settings)."""

    params: dict[str, Any] = field(default_factory=dict)
    #: flat metric name -> number
    metrics: dict[str, float] = field(default_factory=dict)
    #: artifact file name -> JSON-able document
    dicts: dict[str, Any] = field(default_factory=dict)
    #: artifact file name -> text
    texts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One declared stage.

    Attributes
    ----------
    name:
        Stage name (``segml train --from-stage NAME``, ``run_stage(NAME, …)``).
    run:
        ``run(ctx_or_cfg) -> result``: takes the :class:`TrainContext` when ``needs_context``, else the config.
    settings:
        Dotted path of the settings section its keyword parameters override (``models.clustering``), or None.
    needs_context:
        Whether it needs the training context (features at the calibration end and holdout labels).
    mlflow_run:
        Name of its nested MLflow run; None: not tracked as a run of its own.
    outputs:
        ``outputs(cfg) -> [paths]``: the files it writes (recorded with their hashes on completion).
    describe:
        ``describe(result, cfg) -> StageLog``: what to log besides the settings.
    """

    name: str
    run: Callable[[Any], Any]
    settings: str | None = None
    needs_context: bool = True
    mlflow_run: str | None = None
    outputs: Callable[[ExperimentConfig], list[Path]] = lambda cfg: []
    describe: Callable[[Any, ExperimentConfig], StageLog] | None = None


# --------------------------------------------------------------------------------------------------------------
# Settings


def settings_of(cfg: ExperimentConfig, path: str | None) -> Any:
    """The settings object at a dotted path of the config (``models.clustering``), or None."""
    if path is None:
        return None
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def with_settings(cfg: ExperimentConfig, path: str | None, params: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` whose settings section at ``path`` has ``params`` applied, validated like the YAML.

    Raises
    ------
    ConfigError
        An unknown parameter or a wrong value, named by its key path (``models.clustering.k_maxx``).
    """
    if not params:
        return cfg
    if path is None:
        raise ConfigError(f"this stage takes no parameters (got {', '.join(sorted(params))})")
    current = settings_of(cfg, path)
    merged = {**dataclasses.asdict(current), **dict(params)}
    updated = from_mapping(type(current), merged, path)
    parts = path.split(".")
    return _replace_path(cfg, parts, updated)


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    return dataclasses.replace(obj, **{parts[0]: _replace_path(child, parts[1:], value)})


# --------------------------------------------------------------------------------------------------------------
# Completion records


def experiment_fingerprint(cfg: ExperimentConfig) -> str:
    """What every stage of one run shares: seed, cutoffs, feature settings and the clean data's hash."""
    data = cfg.paths.clean_transactions
    document = {
        "seed": cfg.seed,
        "cutoffs": jsonable(dataclasses.asdict(cfg.cutoffs)),
        "features": jsonable(dataclasses.asdict(cfg.features)),
        "data": sha256_file(data) if data.is_file() else None,
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_path(cfg: ExperimentConfig, stage: str) -> Path:
    return cfg.paths.processed / "stages" / f"{stage}.json"


def write_record(cfg: ExperimentConfig, stage: Stage, fingerprint: str) -> Path:
    """The stage's completion record: written last, after every output."""
    outputs = {}
    for path in stage.outputs(cfg):
        if path.is_file():
            try:
                key = path.relative_to(cfg.root).as_posix()
            except ValueError:
                key = str(path)
            outputs[key] = sha256_file(path)
    settings = settings_of(cfg, stage.settings)
    document = {
        "stage": stage.name,
        "experiment_fingerprint": fingerprint,
        "settings": jsonable(dataclasses.asdict(settings)) if settings is not None else None,
        "outputs": outputs,
    }
    return write_json(record_path(cfg, stage.name), document)


def check_consistent(cfg: ExperimentConfig, stages: list[str]) -> None:
    """Refuse outputs that do not belong together.

    Every named stage must have finished (a completion record), every output it recorded must still have the
    recorded hash (no later, unfinished run rewrote it) and all must share one experiment fingerprint.

    Raises
    ------
    SegmlError
        Naming the stage and what is wrong (missing, changed file, or from another run).
    """
    fingerprints: dict[str, list[str]] = {}
    for name in stages:
        path = record_path(cfg, name)
        if not path.is_file():
            raise SegmlError(
                f"{path}: stage '{name}' has not finished — run `segml train {cfg.label}` to completion first"
            )
        record = json.loads(path.read_text(encoding="utf-8"))
        for key, digest in record.get("outputs", {}).items():
            file = Path(key) if Path(key).is_absolute() else cfg.root / key
            if not file.is_file() or sha256_file(file) != digest:
                raise SegmlError(
                    f"{file}: changed since stage '{name}' finished (an unfinished run wrote it) — "
                    f"run `segml train {cfg.label}` again"
                )
        fingerprints.setdefault(record.get("experiment_fingerprint"), []).append(name)
    if len(fingerprints) > 1:
        groups = "; ".join(f"{', '.join(names)}" for names in fingerprints.values())
        raise SegmlError(
            f"outputs of different runs (seed, cutoffs, features or data differ): {groups} — "
            f"run `segml train {cfg.label}` again"
        )


# --------------------------------------------------------------------------------------------------------------
# Running one stage


def tracking_active() -> bool:
    """Whether an MLflow store is configured for this process (``segml`` configures one for every run)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def run_stage(
    name: str,
    cfg: ExperimentConfig,
    *,
    ctx: TrainContext | None = None,
    parent_run_id: str | None = None,
    track: bool | None = None,
    **params: Any,
) -> Any:
    """Run one declared stage: fit or compute, persist, log, record completion.

    Parameters
    ----------
    name:
        A stage of :data:`STAGES`.
    cfg:
        The experiment.
    ctx:
        The training context, if the caller already built it (headless runs share one).
    parent_run_id:
        MLflow parent run to nest under; default ``$SEGML_PARENT_RUN_ID``, else a top-level run.
    track:
        Log to MLflow; default: when a store is configured (:func:`tracking_active`).
    **params:
        Overrides of the stage's settings (e.g. ``k_max=6`` for ``clustering``), validated like the YAML.

    Returns
    -------
    The stage's result dataclass.
    """
    from segml.pipeline import STAGE_BY_NAME

    if name not in STAGE_BY_NAME:
        raise ConfigError(f"unknown stage {name!r} (stages: {', '.join(STAGE_BY_NAME)})")
    stage = STAGE_BY_NAME[name]
    cfg = with_settings(cfg, stage.settings, params)
    target: Any = cfg
    if stage.needs_context:
        if ctx is None:
            ctx = load_context(cfg)
        elif ctx.cfg is not cfg:
            ctx = dataclasses.replace(ctx, cfg=cfg)
        target = ctx
    track = tracking_active() if track is None else track
    fingerprint_before = experiment_fingerprint(cfg) if stage.name != "ingest" else None
    if track and stage.mlflow_run is not None:
        result = _run_tracked(stage, target, cfg, parent_run_id)
    else:
        result = stage.run(target)
    write_record(cfg, stage, fingerprint_before or experiment_fingerprint(cfg))
    return result


def _run_tracked(stage: Stage, target: Any, cfg: ExperimentConfig, parent_run_id: str | None) -> Any:
    import mlflow

    from segml import tracking

    with tracking.child_run(parent_run_id, stage.mlflow_run or stage.name):
        result = stage.run(target)
        settings = settings_of(cfg, stage.settings)
        params = {"seed": str(cfg.seed), "stage": stage.name}
        if settings is not None:
            params.update(flat_params(settings))
        log = stage.describe(result, cfg) if stage.describe is not None else StageLog()
        params.update(
            {k: v if isinstance(v, str) else json.dumps(jsonable(v)) for k, v in log.params.items()}
        )
        mlflow.log_params({k[:250]: v for k, v in params.items()})
        if log.metrics:
            mlflow.log_metrics(log.metrics)
        for file_name, document in log.dicts.items():
            mlflow.log_dict(jsonable(document), file_name)
        for file_name, text in log.texts.items():
            mlflow.log_text(text, file_name)
    return result


__all__ = [
    "Stage",
    "StageLog",
    "check_consistent",
    "experiment_fingerprint",
    "flat_params",
    "record_path",
    "run_stage",
    "settings_of",
    "tracking_active",
    "with_settings",
]
