"""``segml run`` (an experiment end to end through its notebooks) and ``segml promote`` (registry champion)."""

from __future__ import annotations

from typing import Annotated

import typer

from segml.cli import ExperimentArg, SetOpt, console, load_config, out, user_errors

OnlyOpt = Annotated[
    str | None,
    typer.Option("--only", help="Run only these notebooks, by number: --only 03,05 (still in file order)."),
]


FromStageOpt = Annotated[
    str | None,
    typer.Option(
        "--from-stage", help="Start at this stage, reusing the finished outputs of the earlier ones."
    ),
]


def run(
    experiment: ExperimentArg, only: OnlyOpt = None, from_stage: FromStageOpt = None, set_: SetOpt = None
) -> None:
    """Ingest, build features, execute the experiment's notebooks, write reports/<experiment>/index.html,
    record everything in one MLflow parent run and register the potential-value model."""
    from rich.table import Table

    from segml.runner import run_experiment

    cfg = load_config(experiment, set_)
    result = run_experiment(
        cfg, only=only, from_stage=from_stage, log=lambda text: console.print(text, highlight=False)
    )
    table = Table(title=f"{cfg.name}: notebooks", show_lines=False)
    for column in ("notebook", "audience", "seconds", "report"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for nb in result.notebooks:
        table.add_row(nb.name, nb.audience, f"{nb.seconds:.1f}", str(nb.html_path))
    out.print(table)
    if result.registration is not None:
        reg = result.registration
        role = "champion" if reg.champion else "challenger (champion unchanged)"
        out.print(f"registered model: {reg.name} version {reg.version}, {role}")
    out.print(f"MLflow parent run: {result.parent_run_id}")
    out.print(f"run time: {result.seconds['total']:.1f} s")
    out.print(f"index: {result.index_path}")
    out.print("MLflow UI: make mlflow-ui  (http://127.0.0.1:5000)")


def promote(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. cdnow-grading.")],
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
) -> None:
    """Make a registered model version the champion (explicit decision; the registry rule is bypassed)."""
    import mlflow

    from segml import tracking
    from segml.config import project_root

    uri = tracking.tracking_uri_for(project_root())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    tracking.promote(name, version)
    out.print(f"{name}: version {version} is now champion ({name}@champion)")


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``promote`` to the ``segml`` app."""
    app.command(name="run")(user_errors(run))
    app.command(name="promote")(user_errors(promote))
