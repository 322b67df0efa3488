"""One pipeline: the declared, ordered stages of an experiment, shared by ``segml train`` and ``segml run``.

    ingest → features → baselines → clustering → tree → potential → select → evaluate → grade → monitor → export

``segml train`` runs them headless (:func:`run_pipeline`) under one MLflow parent run; ``segml run`` executes
the notebooks, whose parameters cell feeds one :func:`run_stage` call each, and runs the stages no notebook
drives in-process (:mod:`segml.runner`). Both give the same files and the same nested runs.

Where each stage writes (``<exp>`` = the experiment file's stem):

========== ======================================================================================
stage      outputs
========== ======================================================================================
ingest     ``data/interim/<exp>/transactions.parquet``, ``quarantine.parquet``, ``dq_report.json``
features   ``data/processed/<exp>/features_<calibration_end>.parquet``
baselines  ``data/processed/<exp>/holdout_predictions/baselines.parquet``, ``reports/<exp>/models/baselines.json``
clustering ``…/holdout_predictions/clustering.parquet``, ``models/clustering.json`` (state and report)
tree       ``…/holdout_predictions/tree.parquet``, ``models/spend_tree.json``, ``reports/<exp>/models/tree.json``
potential  ``…/holdout_predictions/potential.parquet``, ``models/potential_{holdout,production}.json``
select     ``reports/<exp>/comparison.json``, ``holdout.json``, ``holdout_grades.json``, ``selection.json``
evaluate   ``reports/<exp>/backtest.json`` (when ``models.evaluation.backtest`` and ``cutoffs.backtest``)
grade      ``data/processed/<exp>/grades.parquet``, ``models/{policy.yaml,reference_stats,grade_rules}.json``,
           ``reports/<exp>/grades_summary.json``
monitor    ``reports/<exp>/monitoring/calibration_to_data_end.json``
export     ``artifacts/<name>/<version>/`` and the registered model version
========== ======================================================================================
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segml.config import ExperimentConfig
from segml.errors import ConfigError
from segml.jsonable import flatten_metrics, jsonable, metric_rows
from segml.pipeline.backtest import backtest
from segml.pipeline.context import (
    TrainContext,
    current_features,
    load_context,
    load_timeline,
    open_experiment,
    read_dq_report,
)
from segml.pipeline.families import (
    FamilyResult,
    fit_baselines,
    fit_clustering,
    fit_potential,
    fit_tree,
    load_predictions,
)
from segml.pipeline.grading import GradeOutputs, grade_customers, load_grade_outputs
from segml.pipeline.monitoring import MonitorResult, load_monitor_result, run_monitor
from segml.pipeline.selection import SelectionResult, run_select
from segml.pipeline.stages import Stage, StageLog, check_consistent, run_stage
from segml.storage import write_json


def key_features(columns: Sequence[str]) -> list[str]:
    """The features an analyst looks at first, among ``columns`` (from the feature catalog)."""
    from segml import catalog

    return catalog.key_features(columns)


# --------------------------------------------------------------------------------------------------------------
# What each stage logs


def _family_log(result: FamilyResult, main: str | None = None) -> StageLog:
    metrics = metric_rows(result.details["holdout_metrics"])
    if main is not None:
        metrics.update(flatten_metrics(result.details["holdout_metrics"][main]))
    return StageLog(metrics=metrics)


def _log_baselines(result: FamilyResult, cfg: ExperimentConfig) -> StageLog:
    log = _family_log(result)
    log.dicts["btyd_diagnostics.json"] = result.details["btyd_diagnostics"]
    return log


def _log_clustering(result: FamilyResult, cfg: ExperimentConfig) -> StageLog:
    d = result.details
    log = _family_log(result, "clustering")
    log.params.update({"k": d["k"], "selection_criterion": d["selection_criterion"]})
    log.dicts["cluster_profile.json"] = d["profile_holdout"]
    return log


def _log_tree(result: FamilyResult, cfg: ExperimentConfig) -> StageLog:
    d = result.details
    log = _family_log(result, "spend_tree")
    log.params["target_chosen"] = d["target"]
    log.texts["rules.txt"] = d["rules_text"]
    return log


def _log_potential(result: FamilyResult, cfg: ExperimentConfig) -> StageLog:
    d = result.details
    log = _family_log(result, "potential")
    log.params.update(
        {
            "objective_chosen": d["objective"],
            "n_estimators_chosen": d["n_estimators"],
            "production_training_end": str(d.get("production_training_end")),
        }
    )
    log.dicts["selection.json"] = d["selection"]
    log.dicts["global_importance.json"] = d["global_importance"]
    return log


def _log_select(result: SelectionResult, cfg: ExperimentConfig) -> StageLog:
    log = StageLog(metrics=metric_rows({row["model"]: row for row in result.comparison}))
    log.params["selected"] = result.selection["selected"]
    log.dicts["comparison.json"] = result.comparison
    log.dicts["selection.json"] = result.selection
    log.dicts["holdout_grades.json"] = result.holdout_check
    return log


def _log_evaluate(result: Any, cfg: ExperimentConfig) -> StageLog:
    log = StageLog()
    if result is not None:
        log.dicts["backtest.json"] = jsonable(result)
    return log


def _log_grade(result: GradeOutputs, cfg: ExperimentConfig) -> StageLog:
    summary = result.summary
    metrics = {f"share.{row['grade']}": float(row["share"]) for row in jsonable(summary)}
    metrics["customers"] = float(len(result.grades))
    log = StageLog(metrics=metrics)
    log.dicts["grades_summary.json"] = summary
    log.texts["grade_rules.txt"] = result.rules_text
    return log


def _log_monitor(result: MonitorResult, cfg: ExperimentConfig) -> StageLog:
    metrics = {f"psi.{row.feature}": float(row.psi) for row in result.psi.itertuples()}
    metrics.update({f"migration.{k.replace(' ', '_')}": float(v) for k, v in result.movement.items()})
    return StageLog(metrics=flatten_metrics(metrics), dicts={"monitoring.json": result.document})


# --------------------------------------------------------------------------------------------------------------
# The stage functions that are not fits


def _ingest(cfg: ExperimentConfig) -> Any:
    from segml.ingest import run_ingest

    return run_ingest(cfg)


def _features(cfg: ExperimentConfig) -> tuple[Path, int]:
    from segml.features import run_features

    return run_features(cfg, cfg.cutoffs.calibration_end)


def _evaluate(ctx: TrainContext) -> Any:
    if ctx.models.evaluation.backtest and ctx.cfg.cutoffs.backtest:
        return backtest(ctx)
    return None


def _export(cfg: ExperimentConfig) -> Path:
    from segml import artifact

    check_consistent(cfg, EXPORTED_STAGES)
    return artifact.export_artifact(cfg)


def _ingest_outputs(cfg: ExperimentConfig) -> list[Path]:
    p = cfg.paths
    return [p.clean_transactions, p.quarantine, p.dq_report, p.clean_customers]


def _family_outputs(family: str, *states: str) -> Any:
    def outputs(cfg: ExperimentConfig) -> list[Path]:
        processed, reports = cfg.paths.processed, cfg.paths.reports
        return [
            processed / "holdout_predictions" / f"{family}.parquet",
            reports / "models" / f"{family}.json",
            *(processed / "models" / f"{s}.json" for s in states),
        ]

    return outputs


def _report_outputs(*names: str) -> Any:
    return lambda cfg: [cfg.paths.reports / n for n in names]


def _grade_outputs(cfg: ExperimentConfig) -> list[Path]:
    models = cfg.paths.processed / "models"
    return [
        cfg.paths.processed / "grades.parquet",
        models / "policy.yaml",
        models / "reference_stats.json",
        models / "grade_rules.json",
        cfg.paths.reports / "grades_summary.json",
    ]


#: the declared, ordered stages
STAGES: tuple[Stage, ...] = (
    Stage("ingest", _ingest, needs_context=False, outputs=_ingest_outputs),
    Stage(
        "features",
        _features,
        settings="features",
        needs_context=False,
        outputs=lambda cfg: [cfg.paths.features_file(cfg.cutoffs.calibration_end)],
    ),
    Stage(
        "baselines",
        fit_baselines,
        settings="models.baselines",
        mlflow_run="baselines",
        outputs=_family_outputs("baselines"),
        describe=_log_baselines,
    ),
    Stage(
        "clustering",
        fit_clustering,
        settings="models.clustering",
        mlflow_run="clustering",
        outputs=_family_outputs("clustering", "clustering"),
        describe=_log_clustering,
    ),
    Stage(
        "tree",
        fit_tree,
        settings="models.tree",
        mlflow_run="tree",
        outputs=_family_outputs("tree", "spend_tree"),
        describe=_log_tree,
    ),
    Stage(
        "potential",
        fit_potential,
        settings="models.potential",
        mlflow_run="potential",
        outputs=_family_outputs("potential", "potential_holdout", "potential_production"),
        describe=_log_potential,
    ),
    Stage(
        "select",
        run_select,
        settings="models.evaluation",
        mlflow_run="comparison",
        outputs=_report_outputs("comparison.json", "holdout.json", "holdout_grades.json", "selection.json"),
        describe=_log_select,
    ),
    Stage(
        "evaluate",
        _evaluate,
        settings="models.evaluation",
        mlflow_run="evaluation",
        outputs=_report_outputs("backtest.json"),
        describe=_log_evaluate,
    ),
    Stage("grade", grade_customers, mlflow_run="grading", outputs=_grade_outputs, describe=_log_grade),
    Stage(
        "monitor",
        run_monitor,
        settings="monitor",
        mlflow_run="monitoring",
        outputs=_report_outputs("monitoring/calibration_to_data_end.json"),
        describe=_log_monitor,
    ),
    Stage("export", _export, settings="export", needs_context=False),
)
STAGE_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
STAGE_NAMES: tuple[str, ...] = tuple(STAGE_BY_NAME)
#: stages whose outputs the artifact bundles: they must come from one run
EXPORTED_STAGES = ["clustering", "tree", "potential", "select", "grade"]
#: what ``segml train`` runs by default (ingest is ``segml ingest``)
TRAIN_STAGES: tuple[str, ...] = STAGE_NAMES[1:]


# --------------------------------------------------------------------------------------------------------------
# Headless run


@dataclass
class PipelineOutputs:
    """What a headless run produced, by stage, with timings."""

    results: dict[str, Any]
    parent_run_id: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    registration: Any = None

    @property
    def comparison(self) -> list[dict[str, Any]]:
        return self.results["select"].comparison

    @property
    def holdout_check(self) -> dict[str, Any]:
        return self.results["select"].holdout_check

    @property
    def selection(self) -> dict[str, Any]:
        return self.results["select"].selection

    @property
    def grades(self) -> GradeOutputs:
        return self.results["grade"]


def stages_between(
    from_stage: str | None = None, until: str | None = None, names: Sequence[str] = TRAIN_STAGES
) -> list[str]:
    """The stage names from ``from_stage`` to ``until`` (inclusive), in declared order."""
    names = list(names)
    for label, value in (("--from-stage", from_stage), ("--until", until)):
        if value is not None and value not in names:
            raise ConfigError(f"{label}: unknown stage {value!r} (stages: {', '.join(names)})")
    start = names.index(from_stage) if from_stage else 0
    stop = names.index(until) + 1 if until else len(names)
    return names[start:stop]


def run_pipeline(
    cfg: ExperimentConfig,
    *,
    stages: Sequence[str] | None = None,
    backtest: bool | None = None,
    progress: bool = True,
    track: bool = True,
    tags: dict[str, str] | None = None,
) -> PipelineOutputs:
    """Run stages headless, in declared order, under one MLflow parent run.

    Parameters
    ----------
    cfg:
        The experiment.
    stages:
        Stage names to run (default :data:`TRAIN_STAGES`); they run in declared order whatever the order given.
    backtest:
        Override ``models.evaluation.backtest``.
    progress:
        A rich progress line per stage on stderr.
    track:
        Log to MLflow (a parent run with one nested run per tracked stage, then registration).
    tags:
        Extra tags of the parent run.
    """
    import dataclasses

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if backtest is not None:
        evaluation = dataclasses.replace(cfg.models.evaluation, backtest=backtest)
        cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, evaluation=evaluation))
    wanted = set(stages or TRAIN_STAGES)
    unknown = wanted - set(STAGE_NAMES)
    if unknown:
        raise ConfigError(f"unknown stage {sorted(unknown)[0]!r} (stages: {', '.join(STAGE_NAMES)})")
    ordered = [s for s in STAGES if s.name in wanted]
    parent_id = None
    if track:
        parent_id = start_parent_run(cfg, tags or {}, ordered)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    registration = None
    failed = True
    ctx: TrainContext | None = None
    from segml import tracking

    guard = tracking.killed_on_signal() if parent_id is not None else contextlib.nullcontext()
    signals = None
    try:
        with (
            guard as signals,
            Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TimeElapsedColumn(),
                disable=not progress,
                transient=False,
            ) as bar,
        ):
            for stage in ordered:
                stop_if_signalled(signals)
                task = bar.add_task(stage.name, total=1)
                t0 = time.perf_counter()
                if stage.needs_context and ctx is None:
                    ctx = load_context(cfg)
                results[stage.name] = run_stage(
                    stage.name, cfg, ctx=ctx, parent_run_id=parent_id, track=track
                )
                if stage.name == "export" and track and cfg.tracking.register:
                    from segml.registry import register_grading_model

                    registration = register_grading_model(cfg, parent_id, results["export"])
                seconds[stage.name] = round(time.perf_counter() - t0, 3)
                bar.update(task, completed=1)
        stop_if_signalled(signals)
        seconds["total"] = round(sum(seconds.values()), 3)
        write_json(cfg.paths.reports / "train_timings.json", seconds)
        failed = False
    finally:
        if parent_id is not None:
            from segml import tracking

            if not failed:
                from mlflow import MlflowClient

                MlflowClient().log_metric(parent_id, "run_seconds", seconds.get("total", 0.0))
            tracking.end_parent_run(parent_id, failed=failed, killed=bool(signals and signals.signal))
    return PipelineOutputs(results, parent_id, seconds, registration)


def stop_if_signalled(signals: Any) -> None:
    """Stop between stages when a signal arrived during the last one (a library may have swallowed the
    ``KeyboardInterrupt`` the signal raised inside it)."""
    if signals is not None and signals.signal is not None:
        raise KeyboardInterrupt(f"signal {signals.signal}")


def start_parent_run(cfg: ExperimentConfig, tags: dict[str, str], stages: Sequence[Stage]) -> str:
    """Configure the project's MLflow store and open the parent run of one execution (headless or notebooks):
    tags (experiment file, data fingerprint, git commit, stages), every YAML value as a parameter."""
    from segml import tracking

    fingerprint = (
        tracking.data_fingerprint(cfg.paths.clean_transactions)
        if cfg.paths.clean_transactions.is_file()
        else "-"
    )
    tracking.configure(cfg.root, cfg.mlflow_experiment, description=cfg.description)
    parent_id = tracking.start_parent_run(
        cfg.mlflow_experiment,
        {
            tracking.TAG_EXPERIMENT_FILE: cfg.label,
            tracking.TAG_DATA_FINGERPRINT: fingerprint,
            "segml.stages": ",".join(s.name for s in stages),
            **tags,
        },
        run_name=f"{cfg.name} {tags.get('segml.command', 'train')}",
        repo_dir=cfg.root,
    )
    tracking.log_experiment(parent_id, cfg)
    return parent_id


__all__ = [
    "EXPORTED_STAGES",
    "STAGES",
    "STAGE_BY_NAME",
    "STAGE_NAMES",
    "TRAIN_STAGES",
    "FamilyResult",
    "GradeOutputs",
    "MonitorResult",
    "PipelineOutputs",
    "SelectionResult",
    "Stage",
    "StageLog",
    "TrainContext",
    "check_consistent",
    "current_features",
    "key_features",
    "load_context",
    "load_grade_outputs",
    "load_monitor_result",
    "load_timeline",
    "read_dq_report",
    "load_predictions",
    "open_experiment",
    "run_pipeline",
    "run_stage",
    "stages_between",
    "start_parent_run",
    "stop_if_signalled",
]
