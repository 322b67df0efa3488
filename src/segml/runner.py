"""``segml run``: one experiment YAML, end to end, as a sequence of papermill-executed notebooks.

Order of one execution::

    ingest → features at calibration_end → MLflow parent run (tags: experiment file, git commit, data
    fingerprint) → notebooks/01 … 08 in the project kernel (each model notebook opens a nested run under the
    parent) → reports/<experiment>/index.html → executed notebooks + HTML logged to MLflow → the production
    potential-value model registered (alias challenger; champion by the registry rule).

The notebooks *are* the steps: 02–05 fit their model family with the step functions of :mod:`segml.train`
and persist what later notebooks read, 06 compares from the persisted predictions, 07 grades current
customers. Nothing here trains a model; the runner only orchestrates, indexes and records.

Notebooks call :func:`open_experiment` in their first cells, so a notebook run by hand (JupyterLab, no parent
run) loads the same configuration and logs to the same store as under ``segml run``.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segml.config import ExperimentConfig, from_mapping, load_experiment, project_root, raw_experiment
from segml.errors import ConfigError, SegmlError

#: nested MLflow run opened by each model notebook (notebook number → run name)
NOTEBOOK_RUNS = {
    "02": "baselines",
    "03": "clustering",
    "04": "tree",
    "05": "potential",
    "06": "comparison",
    "08": "monitoring",
}
#: the notebook that fits the potential-value model (a run that includes it registers a new version)
POTENTIAL_NOTEBOOK = "05"
#: holdout metric that decides champion / challenger
SELECTION_METRIC = "normalized_gini"

_NOTEBOOK_NUMBER = re.compile(r"^(\d{2})_")
_PARAM_VALUE_LIMIT = 500


# --------------------------------------------------------------------------------------------------------------
# tracking: and notebooks: sections of the experiment YAML


@dataclass
class TrackingSettings:
    """``tracking:`` section. ``experiment`` defaults to the YAML's name, ``registered_model`` to
    ``<experiment>-grading``."""

    experiment: str | None = None
    registered_model: str | None = None
    #: register the production potential-value model at the end of a run that fitted it
    register: bool = True


@dataclass
class NotebookSettings:
    """``notebooks:`` section: where the notebooks are and which of them a run executes."""

    #: folder of the notebooks (default: ``<root>/notebooks``, else the one shipped next to the package)
    dir: str | None = None
    #: notebook numbers to run, e.g. ["01", "02", …] (default: every ``NN_*.ipynb`` in the folder)
    run: list[str] | None = None


def tracking_settings(cfg: ExperimentConfig) -> TrackingSettings:
    """Validated ``tracking:`` section with defaults filled in."""
    try:
        settings = from_mapping(TrackingSettings, cfg.tracking or {}, "tracking")
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source_path or cfg.name}: {exc}") from None
    settings.experiment = settings.experiment or cfg.name
    settings.registered_model = settings.registered_model or f"{cfg.name}-grading"
    return settings


def notebook_settings(cfg: ExperimentConfig) -> NotebookSettings:
    """Validated ``notebooks:`` section."""
    try:
        return from_mapping(NotebookSettings, cfg.notebooks or {}, "notebooks")
    except ConfigError as exc:
        raise ConfigError(f"{cfg.source_path or cfg.name}: {exc}") from None


def notebooks_dir(cfg: ExperimentConfig) -> Path:
    """The folder holding the experiment's notebooks."""
    configured = notebook_settings(cfg).dir
    if configured:
        folder = cfg.resolve(configured)
        if not folder.is_dir():
            raise ConfigError(f"notebooks.dir: folder {folder} not found")
        return folder
    for candidate in (cfg.root / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"):
        if candidate.is_dir() and any(candidate.glob("[0-9][0-9]_*.ipynb")):
            return candidate
    raise ConfigError(f"no notebooks found: {cfg.root / 'notebooks'} holds no NN_*.ipynb (set notebooks.dir)")


def _parse_numbers(items: Sequence[str], where: str) -> list[str]:
    numbers = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or len(part) > 2:
                raise ConfigError(f"{where}: {part!r} is not a notebook number like 03")
            numbers.append(part.zfill(2))
    return numbers


def select_notebooks(cfg: ExperimentConfig, only: Sequence[str] | str | None = None) -> list[Path]:
    """The notebooks a run executes, in order.

    Parameters
    ----------
    cfg:
        The experiment (``notebooks.dir`` / ``notebooks.run``).
    only:
        Notebook numbers (``"03,05"`` or ``["03", "05"]``): run just these, still in file order.

    Raises
    ------
    ConfigError
        A requested number matches no notebook (the message lists the available ones).
    """
    folder = notebooks_dir(cfg)
    available = {
        match.group(1): path
        for path in sorted(folder.glob("*.ipynb"))
        if (match := _NOTEBOOK_NUMBER.match(path.name))
    }
    wanted = notebook_settings(cfg).run
    chosen = _parse_numbers(wanted, "notebooks.run") if wanted is not None else sorted(available)
    if only:
        requested = _parse_numbers([only] if isinstance(only, str) else list(only), "--only")
        chosen = [n for n in sorted(set(requested))]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ConfigError(
            f"notebook {unknown[0]} not found in {folder} (available: {', '.join(sorted(available)) or 'none'})"
        )
    return [available[n] for n in sorted(set(chosen))]


def notebook_number(path: Path | str) -> str | None:
    """``"03"`` for ``03_clustering.ipynb``."""
    match = _NOTEBOOK_NUMBER.match(Path(path).name)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------------------------
# Used by the notebooks


def open_experiment(
    experiment: str | Path,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    *,
    configure_tracking: bool = True,
) -> ExperimentConfig:
    """Load the experiment a notebook works on, the way ``segml run`` passed it.

    A relative ``experiment`` path is resolved against the project root (so a notebook opened from
    ``notebooks/`` in JupyterLab finds ``experiments/…``). ``seed`` (if not None) overrides the YAML's seed.
    Unless a parent process already configured MLflow (``MLFLOW_TRACKING_URI`` set by ``segml run``), the
    project store is configured here, so a notebook run by hand logs top-level runs to the same store.

    Returns
    -------
    ExperimentConfig
    """
    path = Path(experiment)
    root = project_root()
    if not path.is_absolute() and not path.is_file():
        path = root / path
    extra = [f"seed={int(seed)}"] if seed is not None else []
    cfg = load_experiment(path, [*overrides, *extra])
    if configure_tracking and not os.environ.get("MLFLOW_TRACKING_URI"):
        from segml import tracking

        tracking.configure(cfg.root, tracking_settings(cfg).experiment)
    return cfg


def metric_rows(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Flatten ``{model: {metric: value}}`` to ``{"<model>.<metric>": value}`` for ``mlflow.log_metrics``
    (non-numeric values skipped; ``[lo, hi]`` pairs become ``_lo`` / ``_hi``)."""
    from segml.tracking import _flatten_metrics

    flat: dict[str, float] = {}
    for model, values in metrics.items():
        for name, value in _flatten_metrics(dict(values)).items():
            flat[f"{model}.{name}"] = value
    return flat


def select_model(
    cfg: ExperimentConfig, comparison: Sequence[Mapping[str, Any]], selected: str = "potential"
) -> dict[str, Any]:
    """The selection record of notebook 06 (``reports/<experiment>/selection.json``).

    The production grades come from the potential-value model, so it is the selected model; the record says
    how it ranks against every other model and whether its Gini beats the best baseline with a paired
    bootstrap CI above 0.

    Returns
    -------
    dict
        ``selected, metric, value, evaluation_key, best_by_metric, reference_baseline, gini_diff,
        gini_diff_ci, beats_baselines, ranking`` (model names by the metric, best first).
    """
    rows = {row["model"]: row for row in comparison}
    if selected not in rows:
        raise SegmlError(f"comparison.json: no row for model {selected!r} (models: {', '.join(rows)})")
    row = rows[selected]
    ranking = sorted(rows, key=lambda name: (-(rows[name].get(SELECTION_METRIC) or float("-inf")), name))
    ci = row.get("gini_diff_ci") or [None, None]
    return {
        "selected": selected,
        "metric": SELECTION_METRIC,
        "value": row.get(SELECTION_METRIC),
        "evaluation_key": evaluation_key(cfg),
        "best_by_metric": ranking[0],
        "ranking": ranking,
        "reference_baseline": row.get("gini_diff_vs"),
        "gini_diff": row.get("gini_diff"),
        "gini_diff_ci": ci,
        "beats_baselines": bool(ci[0] is not None and ci[0] > 0),
    }


# --------------------------------------------------------------------------------------------------------------
# The run


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


@dataclass
class RunResult:
    """What ``segml run`` produced."""

    experiment: str
    parent_run_id: str
    index_path: Path
    notebooks: list[Any]
    registration: Registration | None
    seconds: dict[str, float] = field(default_factory=dict)


def _flat_params(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flat_params(value, f"{name}."))
        else:
            text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
            flat[name] = text if len(text) <= _PARAM_VALUE_LIMIT else text[: _PARAM_VALUE_LIMIT - 1] + "…"
    return flat


def _kernel_env(parent_run_id: str, root: Path) -> dict[str, str | None]:
    from segml import tracking

    env: dict[str, str | None] = {"MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_NAME": None, "MPLBACKEND": None}
    env.update(tracking.child_env(parent_run_id))
    env["SEGML_ROOT"] = str(root)
    return env


def run_experiment(
    cfg: ExperimentConfig,
    only: Sequence[str] | str | None = None,
    *,
    overrides: Sequence[str] = (),
    kernel_name: str = "segml",
    progress: bool = True,
    log: Any = None,
) -> RunResult:
    """Run an experiment end to end: ingest, features, notebooks, index, MLflow parent run and registry.

    Parameters
    ----------
    cfg:
        The loaded experiment (``--set`` overrides already applied).
    only:
        Notebook numbers to run (``"03,05"``); default every notebook (or ``notebooks.run``).
    overrides:
        The ``--set`` strings, passed on to the notebooks (each reloads the YAML with them).
    kernel_name:
        Jupyter kernel the notebooks run in.
    progress:
        Rich progress per notebook on stderr.
    log:
        Callable taking one line of text (step messages); default: silent.

    Returns
    -------
    RunResult

    Raises
    ------
    segml.report.NotebookFailed
        A notebook failed: names the notebook and the cell; its partial executed notebook is kept (and logged
        to the parent run, which is marked FAILED); later notebooks were not run.
    """
    from segml import report, tracking
    from segml.features import run_features
    from segml.ingest import run_ingest

    say = log or (lambda _text: None)
    # MLflow's artifact download bar would interleave with the notebook progress on stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    notebooks = select_notebooks(cfg, only)
    report.ensure_kernel(kernel_name)
    settings = tracking_settings(cfg)

    t0 = time.perf_counter()
    ingested = run_ingest(cfg)
    rep = ingested.report
    seconds["ingest"] = round(time.perf_counter() - t0, 3)
    say(
        f"ingest: {rep['rows_in']:,} rows in, {rep['rows_kept']:,} kept, {rep['rows_quarantined']:,} "
        f"quarantined, {rep['customers']:,} customers ({seconds['ingest']:.1f} s); "
        f"DQ report {cfg.paths.dq_report}"
    )
    t0 = time.perf_counter()
    features_path, n_customers = run_features(cfg, cfg.cutoffs.calibration_end)
    seconds["features"] = round(time.perf_counter() - t0, 3)
    say(
        f"features at {cfg.cutoffs.calibration_end}: {n_customers:,} customers ({seconds['features']:.1f} s) "
        f"-> {features_path}"
    )

    fingerprint = tracking.data_fingerprint(cfg.paths.clean_transactions)
    tracking.configure(cfg.root, settings.experiment)
    experiment_file = cfg.source_path or Path(f"{cfg.name}.yaml")
    try:
        experiment_label = experiment_file.relative_to(cfg.root).as_posix()
    except ValueError:
        experiment_label = str(experiment_file)
    parent_id = tracking.start_parent_run(
        settings.experiment,
        {
            tracking.TAG_EXPERIMENT_FILE: experiment_label,
            tracking.TAG_DATA_FINGERPRINT: fingerprint,
            "segml.notebooks": ",".join(nb.name for nb in notebooks),
            "segml.overrides": " ".join(overrides) or "-",
        },
        run_name=f"{cfg.name} run",
        repo_dir=cfg.root,
    )
    client = _client()
    failed = True
    try:
        if cfg.source_path is not None:
            params = _flat_params(raw_experiment(cfg.source_path, list(overrides)))
            for key, value in sorted(params.items()):
                client.log_param(parent_id, key[:250], value)
            client.log_artifact(parent_id, str(cfg.source_path), "experiment")
        parameters = {
            "experiment": str(cfg.source_path or experiment_file),
            "overrides": list(overrides),
            "parent_run_id": parent_id,
            "seed": cfg.seed,
        }
        t0 = time.perf_counter()
        try:
            results = report.run_notebooks(
                notebooks,
                cfg.paths.reports,
                parameters,
                kernel_name=kernel_name,
                cwd=cfg.root,
                progress=progress,
                env=_kernel_env(parent_id, cfg.root),
            )
        except report.NotebookFailed as exc:
            if exc.executed_path is not None and exc.executed_path.is_file():
                client.log_artifact(parent_id, str(exc.executed_path), "notebooks")
            client.set_tag(parent_id, "segml.failed_notebook", exc.notebook)
            raise
        seconds["notebooks"] = round(time.perf_counter() - t0, 3)

        registration = None
        ran = {notebook_number(r.source) for r in results}
        if POTENTIAL_NOTEBOOK in ran and settings.register:
            t0 = time.perf_counter()
            registration = register_potential_model(cfg, parent_id, settings.registered_model)
            seconds["register"] = round(time.perf_counter() - t0, 3)
            role = "champion" if registration.champion else "challenger"
            say(
                f"registered {registration.name} version {registration.version} ({role}, "
                f"{registration.evaluation_key} = {registration.metric:.4f}, via {registration.via})"
            )
            client.set_tag(
                parent_id, "segml.registered_version", f"{registration.name}/{registration.version}"
            )

        index_path = write_run_index(cfg, parent_id, results, registration, fingerprint)
        _log_run_artifacts(cfg, parent_id, results, index_path)
        seconds["total"] = round(time.perf_counter() - started, 3)
        client.log_metric(parent_id, "run_seconds", seconds["total"])
        failed = False
    finally:
        tracking.end_parent_run(parent_id, failed=failed)
    return RunResult(cfg.name, parent_id, index_path, results, registration, seconds)


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def child_runs(parent_run_id: str) -> dict[str, Any]:
    """Nested runs of a parent run, by run name (the latest one when a name repeats)."""
    client = _client()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return {run.info.run_name: run for run in runs}


def _log_run_artifacts(
    cfg: ExperimentConfig, parent_id: str, results: Sequence[Any], index_path: Path
) -> None:
    """Executed notebooks + HTML to the parent (``notebooks/``) and to each notebook's nested run; index and
    aggregate JSON to the parent (``reports/``)."""
    client = _client()
    nested = child_runs(parent_id)
    for result in results:
        for path in (result.executed_path, result.html_path):
            client.log_artifact(parent_id, str(path), "notebooks")
        run_name = NOTEBOOK_RUNS.get(notebook_number(result.source) or "")
        if run_name in nested:
            for path in (result.executed_path, result.html_path):
                client.log_artifact(nested[run_name].info.run_id, str(path), "notebook")
    client.log_artifact(parent_id, str(index_path), "reports")
    for path in sorted(cfg.paths.reports.glob("*.json")):
        client.log_artifact(parent_id, str(path), "reports")


# --------------------------------------------------------------------------------------------------------------
# Registry


def evaluation_key(cfg: ExperimentConfig, metric: str = SELECTION_METRIC) -> str:
    """What the registry metric was measured on: metric name and holdout window."""
    holdout_end = cfg.cutoffs.holdout_end.isoformat() if cfg.cutoffs.holdout_end else "data_end"
    return f"{metric}@holdout:{cfg.cutoffs.calibration_end.isoformat()}..{holdout_end}"


def _artifact_module() -> Any | None:
    """``segml.artifact`` if it provides ``export_artifact`` and ``log_to_mlflow``, else None."""
    import importlib

    try:
        module = importlib.import_module("segml.artifact")
    except ModuleNotFoundError as exc:
        if exc.name != "segml.artifact":
            raise
        return None
    if callable(getattr(module, "export_artifact", None)) and callable(
        getattr(module, "log_to_mlflow", None)
    ):
        return module
    return None


def log_potential_model(cfg: ExperimentConfig, run_id: str) -> str:
    """Log the production potential-value model to ``run_id`` as an MLflow models-from-code pyfunc.

    The model state (settings + LightGBM booster text) is the artifact; nothing is pickled.

    Returns
    -------
    str
        The logged model's URI (``models:/m-…``).
    """
    import mlflow

    state = cfg.paths.processed / "models" / "potential_production.json"
    if not state.is_file():
        raise SegmlError(f"{state}: no production potential model — run notebook 05 first")
    code = Path(__file__).parent / "resources" / "potential_pyfunc.py"
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")
        info = mlflow.pyfunc.log_model(
            name="potential_model",
            python_model=str(code),
            artifacts={"model_state": str(state)},
            pip_requirements=["segml"],
        )
    return info.model_uri


def register_potential_model(cfg: ExperimentConfig, parent_id: str, name: str) -> Registration:
    """Register the production potential-value model fitted in this run under ``name``.

    Uses ``segml.artifact`` (export, then log the grading artifact) when that module is installed, else
    logs the model as a pyfunc (:func:`log_potential_model`). The version is ``challenger``; it is also
    ``champion`` when there is none or it beats the champion on the same :func:`evaluation_key`.
    """
    from segml import tracking

    report_file = cfg.paths.reports / "models" / "potential.json"
    if not report_file.is_file():
        raise SegmlError(f"{report_file}: no potential-model report — notebook 05 did not finish")
    metrics = json.loads(report_file.read_text(encoding="utf-8"))["holdout_metrics"]["potential"]
    metric = metrics.get(SELECTION_METRIC)
    if metric is None:
        raise SegmlError(f"{report_file}: holdout_metrics.potential.{SELECTION_METRIC} is missing")
    module = _artifact_module()
    if module is not None:
        artifact_dir = module.export_artifact(cfg, mlflow_run_id=parent_id)
        uri, via = module.log_to_mlflow(artifact_dir, parent_id), "artifact"
    else:
        uri, via = log_potential_model(cfg, parent_id), "pyfunc"
    key = evaluation_key(cfg)
    version = tracking.register_model(uri, name, float(metric), True, evaluation_key=key)
    champion = tracking.current_champion(name) == version
    return Registration(name, version, uri, float(metric), key, champion, via)


# --------------------------------------------------------------------------------------------------------------
# Index page


def _notebook_title(source: Path) -> str:
    """First markdown heading of a notebook, else its file stem."""
    import nbformat

    try:
        nb = nbformat.read(source, as_version=4)
    except Exception:  # an unreadable notebook still gets a link
        return source.stem
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return f"{source.stem[:2]} · {line[2:].strip()}"
    return source.stem


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _index_charts(cfg: ExperimentConfig, grades_summary: Mapping[str, Any] | None) -> dict[str, str]:
    """Headline charts as base64 PNG; a chart whose inputs are missing (partial run) is left out."""
    import pandas as pd
    from matplotlib.figure import Figure

    from segml import plots

    charts: dict[str, str] = {}

    def new_ax(size: tuple[float, float] = (6.0, 4.0)) -> Any:
        return Figure(figsize=size, layout="constrained").subplots()

    if grades_summary:
        summary = pd.DataFrame(grades_summary["summary"])
        summary["grade"] = summary["grade"] + " " + summary["grade_name"].astype(str)
        ax = plots.plot_value_share(summary, ax=new_ax((7.0, 4.0)))
        ax.tick_params(axis="x", labelrotation=20)
        charts["Customers and current value by grade"] = plots.fig_to_base64_png(ax)
        matrix = pd.DataFrame(grades_summary["matrix"])
        if not matrix.empty:
            order = ["high", "mid", "low"]
            table = (
                matrix.pivot_table(index="value_level", columns="potential_level", values="n", aggfunc="sum")
                .reindex(index=order, columns=order)
                .fillna(0)
            )
            table.index.name, table.columns.name = "Current value", "Potential"
            charts["Value × potential matrix"] = plots.fig_to_base64_png(
                plots.plot_matrix_heatmap(table, new_ax())
            )
    try:
        from segml.train import load_context, load_predictions

        ctx = load_context(cfg)
        predictions = load_predictions(ctx)
    except SegmlError:
        return charts
    ax = plots.plot_gain_curve(ctx.holdout_spend, predictions, ax=new_ax((6.0, 4.4)))
    charts["Gain on the holdout (share of holdout value captured)"] = plots.fig_to_base64_png(ax)
    return charts


def write_run_index(
    cfg: ExperimentConfig,
    parent_id: str,
    results: Sequence[Any],
    registration: Registration | None,
    fingerprint: str,
) -> Path:
    """``reports/<experiment>/index.html``: summary, grade sizes and value share, model comparison, charts,
    and a link to every notebook report of the experiment (also those from earlier ``--only`` runs)."""
    from segml import report, tracking

    out_dir = cfg.paths.reports
    grades_summary = _read_json(out_dir / "grades_summary.json")
    comparison = _read_json(out_dir / "comparison.json") or []
    selection = _read_json(out_dir / "selection.json") or {}
    summary: dict[str, Any] = {
        "experiment file": str(cfg.source_path.name if cfg.source_path else cfg.name),
        "calibration end": cfg.cutoffs.calibration_end.isoformat(),
        "holdout end": cfg.cutoffs.holdout_end.isoformat() if cfg.cutoffs.holdout_end else "data end",
    }
    if grades_summary:
        summary["graded as of"] = grades_summary["as_of"]
        summary["customers graded"] = int(grades_summary["customers"])
    if selection:
        summary["selected model"] = selection.get("selected")
        summary["beats every baseline (Gini CI > 0)"] = selection.get("beats_baselines")
    if registration is not None:
        role = "champion" if registration.champion else "challenger"
        summary["registered model"] = f"{registration.name} v{registration.version} ({role})"
    summary["MLflow parent run"] = parent_id
    summary["git commit"] = tracking.git_commit(cfg.root)[:12]
    summary["data fingerprint"] = fingerprint[:23]
    grade_rows = []
    if grades_summary:
        keep = (
            "grade",
            "grade_name",
            "n",
            "share",
            "value_share",
            "future_value_share",
            "future_value_total",
            "cost_per_customer",
            "cost_total",
            "future_value_per_cost",
        )
        for row in grades_summary["summary"]:
            grade_rows.append({k: row.get(k) for k in keep if k in row})
    comparison_rows = [{k: v for k, v in row.items() if k not in ("gini_diff_vs",)} for row in comparison]
    reports = []
    sources = {r.source.stem: r.source for r in results}
    folder = notebooks_dir(cfg)
    for source in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        sources.setdefault(source.stem, source)
    for stem in sorted(sources):
        reports.append((_notebook_title(sources[stem]), out_dir / f"{stem}.html"))
    headline = {
        "summary": summary,
        "grades": grade_rows,
        "comparison": comparison_rows,
        "charts": _index_charts(cfg, grades_summary),
    }
    return report.write_index(out_dir, cfg.name, headline, reports)


__all__ = [
    "NOTEBOOK_RUNS",
    "NotebookSettings",
    "Registration",
    "RunResult",
    "TrackingSettings",
    "child_runs",
    "evaluation_key",
    "log_potential_model",
    "metric_rows",
    "notebook_number",
    "notebook_settings",
    "notebooks_dir",
    "open_experiment",
    "register_potential_model",
    "run_experiment",
    "select_model",
    "select_notebooks",
    "tracking_settings",
    "write_run_index",
]
