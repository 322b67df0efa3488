"""``segml run``: one experiment YAML end to end, the declared stages driven by papermill-executed notebooks.

Order of one execution::

    ingest → features (in-process) → MLflow parent run → for each later stage, in declared order: the analyst
    notebook that drives it (its parameters cell feeds one ``pipeline.run_stage`` call) or, when no notebook
    drives it, the stage in-process; each reader notebook right after the last stage it reads →
    reports/<experiment>/index.html → executed notebooks + HTML logged to MLflow.

A notebook declares what it drives or reads in its metadata (``metadata.segml.drives`` / ``reads``: stage
names), so a new report notebook needs no change here. ``segml train`` runs the same stages headless
(:func:`segml.pipeline.run_pipeline`) and logs the same nested runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segml.config import ExperimentConfig
from segml.errors import ConfigError, SegmlError
from segml.registry import Registration

_NOTEBOOK_NUMBER = re.compile(r"^(\d{2})_")


# --------------------------------------------------------------------------------------------------------------
# Which notebooks


def notebooks_dir(cfg: ExperimentConfig) -> Path:
    """The folder holding the experiment's notebooks."""
    configured = cfg.notebooks.dir
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
    wanted = cfg.notebooks.run
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


@dataclass(frozen=True)
class NotebookRole:
    """What a notebook does in a run: the stages it drives (runs) and those whose outputs it reads."""

    drives: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


def notebook_role(path: Path) -> NotebookRole:
    """``metadata.segml.drives`` / ``reads`` of a notebook (stage names, checked against the pipeline)."""
    import nbformat

    from segml.pipeline import STAGE_NAMES

    meta = nbformat.read(path, as_version=4).metadata.get("segml") or {}
    role = NotebookRole(tuple(meta.get("drives") or ()), tuple(meta.get("reads") or ()))
    unknown = [s for s in (*role.drives, *role.reads) if s not in STAGE_NAMES]
    if unknown:
        raise ConfigError(
            f"{path}: metadata segml names unknown stage {unknown[0]!r} (stages: {STAGE_NAMES})"
        )
    return role


# --------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    """What ``segml run`` produced."""

    experiment: str
    parent_run_id: str
    index_path: Path
    notebooks: list[Any]
    registration: Registration | None
    seconds: dict[str, float] = field(default_factory=dict)


def kernel_env(parent_run_id: str, root: Path) -> dict[str, str | None]:
    from segml import tracking

    env: dict[str, str | None] = {"MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_NAME": None, "MPLBACKEND": None}
    env.update(tracking.child_env(parent_run_id))
    env["SEGML_ROOT"] = str(root)
    return env


def plan_run(
    cfg: ExperimentConfig, notebooks: Sequence[Path], *, full: bool, from_stage: str | None = None
) -> list[tuple[str, Any]]:
    """The steps of a run after ingest and features: ``("notebook", path)`` or ``("stage", name)``.

    Notebooks run in file order. Before a notebook, every earlier stage it needs (those before a stage it
    drives, up to the last stage it reads) runs in-process unless a selected notebook drives it; after the
    last notebook the remaining stages run. Only a full run executes stages in-process: ``--only`` runs just
    the named notebooks. With ``from_stage``, earlier stages count as done (their outputs are reused) and
    notebooks that only drive or read earlier stages are skipped.
    """
    from segml.pipeline import STAGE_NAMES

    roles = {path: notebook_role(path) for path in notebooks}
    driven = {stage for role in roles.values() for stage in role.drives}
    done = {"ingest", "features"}
    if from_stage is not None:
        done.update(STAGE_NAMES[: STAGE_NAMES.index(from_stage)])
    steps: list[tuple[str, Any]] = []

    def run_before(stop: int) -> None:
        for stage in STAGE_NAMES[:stop]:
            if stage not in done and stage not in driven and full:
                steps.append(("stage", stage))
            done.add(stage)

    for path in notebooks:
        role = roles[path]
        touched = (*role.drives, *role.reads)
        if from_stage is not None and touched and all(stage in done for stage in touched):
            continue  # it drives or reads only stages whose outputs are reused
        if role.drives:
            run_before(min(STAGE_NAMES.index(s) for s in role.drives))
            done.update(role.drives)
        elif role.reads:
            run_before(max(STAGE_NAMES.index(s) for s in role.reads) + 1)
        steps.append(("notebook", path))
    run_before(len(STAGE_NAMES))
    return steps


def run_experiment(
    cfg: ExperimentConfig,
    only: Sequence[str] | str | None = None,
    *,
    kernel_name: str = "segml",
    progress: bool = True,
    log: Any = None,
    from_stage: str | None = None,
) -> RunResult:
    """Run an experiment end to end: ingest, features, the later stages through their notebooks, the index,
    the MLflow parent run and the registry.

    Parameters
    ----------
    cfg:
        The loaded experiment (``--set`` overrides already applied; they are passed on to the notebooks).
    only:
        Notebook numbers to run (``"03,05"``); default every notebook (or ``notebooks.run``). With ``only``,
        stages no listed notebook drives are not run.
    kernel_name:
        Jupyter kernel the notebooks run in.
    progress:
        Rich progress per notebook on stderr.
    log:
        Callable taking one line of text (step messages); default: silent.
    from_stage:
        Start at this stage: the outputs of the earlier stages are reused (they must exist).

    Raises
    ------
    segml.report.NotebookFailed
        A notebook failed: names the notebook and the cell; its partial executed notebook is kept (and logged
        to the parent run, which is marked FAILED); later steps were not run.
    """
    from mlflow import MlflowClient

    from segml import pipeline, report, tracking
    from segml.pipeline.stages import run_stage

    say = log or (lambda _text: None)
    # MLflow's artifact download bar would interleave with the notebook progress on stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    notebooks = select_notebooks(cfg, only)
    report.ensure_kernel(kernel_name)

    if from_stage is not None:
        from segml.pipeline import STAGE_NAMES, check_consistent

        if from_stage not in STAGE_NAMES:
            raise ConfigError(
                f"--from-stage: unknown stage {from_stage!r} (stages: {', '.join(STAGE_NAMES)})"
            )
        check_consistent(cfg, list(STAGE_NAMES[: STAGE_NAMES.index(from_stage)]))
    t0 = time.perf_counter()
    ingested = run_stage("ingest", cfg, track=False) if from_stage in (None, "ingest") else None
    if ingested is not None:
        rep = ingested.report
        seconds["ingest"] = round(time.perf_counter() - t0, 3)
        say(
            f"ingest: {rep['rows_in']:,} rows in, {rep['rows_kept']:,} kept, {rep['rows_quarantined']:,} "
            f"quarantined, {rep['customers']:,} customers ({seconds['ingest']:.1f} s); "
            f"DQ report {cfg.paths.dq_report}"
        )
    if from_stage in (None, "ingest", "features"):
        t0 = time.perf_counter()
        features_path, n_customers = run_stage("features", cfg, track=False)
        seconds["features"] = round(time.perf_counter() - t0, 3)
        say(
            f"features at {cfg.cutoffs.calibration_end}: {n_customers:,} customers "
            f"({seconds['features']:.1f} s) -> {features_path}"
        )

    parent_id = pipeline.start_parent_run(
        cfg, {"segml.command": "run", "segml.notebooks": ",".join(nb.name for nb in notebooks)}, []
    )
    client = MlflowClient()
    fingerprint = client.get_run(parent_id).data.tags.get(tracking.TAG_DATA_FINGERPRINT, "-")
    failed = True
    results: list[Any] = []
    registration = None
    guard = tracking.killed_on_signal()
    signals = guard.__enter__()
    try:
        parameters = {
            "experiment": cfg.label,
            "overrides": list(cfg.overrides),
            "parent_run_id": parent_id,
            "seed": cfg.seed,
        }
        ctx = None
        plan = plan_run(cfg, notebooks, full=not only, from_stage=from_stage)
        for position, (kind, item) in enumerate(plan):
            pipeline.stop_if_signalled(signals)
            t0 = time.perf_counter()
            if kind == "notebook":
                try:
                    results += report.run_notebooks(
                        [item],
                        cfg.paths.reports,
                        parameters,
                        kernel_name=kernel_name,
                        cwd=cfg.root,
                        progress=progress,
                        env=kernel_env(parent_id, cfg.root),
                    )
                except report.NotebookFailed as exc:
                    if exc.executed_path is not None and exc.executed_path.is_file():
                        client.log_artifact(parent_id, str(exc.executed_path), "notebooks")
                    client.set_tag(parent_id, "segml.failed_notebook", exc.notebook)
                    later = [p.name for kind2, p in plan[position + 1 :] if kind2 == "notebook"]
                    if later:
                        raise report.NotebookFailed(
                            f"{exc}; not run: {', '.join(later)}",
                            notebook=exc.notebook,
                            cell=exc.cell,
                            ename=exc.ename,
                            evalue=exc.evalue,
                            executed_path=exc.executed_path,
                            not_run=later,
                        ) from exc
                    raise
                seconds[item.stem] = round(time.perf_counter() - t0, 3)
                continue
            stage = pipeline.STAGE_BY_NAME[item]
            if stage.needs_context and ctx is None:
                ctx = pipeline.load_context(cfg)
            outcome = run_stage(item, cfg, ctx=ctx, parent_run_id=parent_id, track=True)
            if item == "export" and cfg.tracking.register:
                from segml.registry import register_grading_model

                registration = register_grading_model(cfg, parent_id, outcome)
                role = "champion" if registration.champion else "challenger"
                say(
                    f"registered {registration.name} version {registration.version} ({role}, "
                    f"{registration.evaluation_key} = {registration.metric:.4f})"
                )
                client.set_tag(
                    parent_id, "segml.registered_version", f"{registration.name}/{registration.version}"
                )
            seconds[item] = round(time.perf_counter() - t0, 3)
            say(f"stage {item} ({seconds[item]:.1f} s)")

        pipeline.stop_if_signalled(signals)
        index_path = write_run_index(cfg, parent_id, results, registration, fingerprint)
        _log_run_artifacts(cfg, parent_id, results, index_path)
        seconds["total"] = round(time.perf_counter() - started, 3)
        client.log_metric(parent_id, "run_seconds", seconds["total"])
        failed = False
    finally:
        guard.__exit__(None, None, None)
        tracking.end_parent_run(parent_id, failed=failed, killed=signals.signal is not None)
    return RunResult(cfg.name, parent_id, index_path, results, registration, seconds)


def child_runs(parent_run_id: str) -> dict[str, Any]:
    """Nested runs of a parent run, by run name (the latest one when a name repeats)."""
    from mlflow import MlflowClient

    client = MlflowClient()
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
    """Executed notebooks + HTML to the parent (``notebooks/``) and to the nested run of each stage the
    notebook drove (``notebook/``); index and aggregate JSON to the parent (``reports/``)."""
    from mlflow import MlflowClient

    from segml.pipeline import STAGE_BY_NAME

    client = MlflowClient()
    nested = child_runs(parent_id)
    for result in results:
        for path in (result.executed_path, result.html_path):
            client.log_artifact(parent_id, str(path), "notebooks")
        for stage in notebook_role(result.source).drives:
            run_name = STAGE_BY_NAME[stage].mlflow_run
            if run_name in nested:
                for path in (result.executed_path, result.html_path):
                    client.log_artifact(nested[run_name].info.run_id, str(path), "notebook")
    client.log_artifact(parent_id, str(index_path), "reports")
    for path in sorted(cfg.paths.reports.glob("*.json")):
        client.log_artifact(parent_id, str(path), "reports")


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


def _notebook_audience(source: Path) -> str:
    """``stakeholder`` or ``analyst`` (the notebook's ``metadata.segml.audience``; unreadable: analyst)."""
    import nbformat

    from segml import report

    try:
        return report.notebook_audience(nbformat.read(source, as_version=4))
    except Exception:  # an unreadable notebook is listed with the analyst pages
        return "analyst"


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
        from segml.pipeline import load_context, load_predictions

        ctx = load_context(cfg)
        predictions = load_predictions(ctx)
    except SegmlError:
        return charts
    from segml.report import model_label

    named = {model_label(name): values for name, values in predictions.items()}
    ax = plots.plot_gain_curve(ctx.holdout_spend, named, ax=new_ax((6.0, 4.4)))
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
        summary["selected model"] = selection.get("selected_label") or selection.get("selected")
        summary["what drives the grades"] = selection.get("sentence")
        summary["beats every baseline (Gini CI > 0)"] = selection.get("beats_baselines")
        if selection.get("thin_holdout"):
            summary["warning"] = selection["thin_holdout"]
    if registration is not None:
        role = "champion" if registration.champion else "challenger"
        summary["registered model"] = f"{registration.name} v{registration.version} ({role})"
    summary["MLflow parent run"] = parent_id
    summary["git commit"] = tracking.git_commit(cfg.root)[:12]
    summary["data fingerprint"] = fingerprint[:23]
    grade_rows = []
    if grades_summary:
        # service costs and revenue per cost are shown in the grading report, with their caveats
        keep = (
            "grade",
            "grade_name",
            "n",
            "share",
            "value_share",
            "future_value_share",
            "future_value_total",
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
        reports.append(
            (_notebook_title(sources[stem]), out_dir / f"{stem}.html", _notebook_audience(sources[stem]))
        )
    headline = {
        "summary": summary,
        "grades": grade_rows,
        "comparison": comparison_rows,
        "charts": _index_charts(cfg, grades_summary),
    }
    return report.write_index(out_dir, cfg.name, headline, reports, currency=cfg.data.currency)


__all__ = [
    "NotebookRole",
    "kernel_env",
    "RunResult",
    "child_runs",
    "notebook_number",
    "notebook_role",
    "notebooks_dir",
    "plan_run",
    "run_experiment",
    "select_notebooks",
    "write_run_index",
]
