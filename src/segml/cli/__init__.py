"""The ``segml`` command line.

Pipeline commands take the experiment YAML as their first argument and accept ``--set dotted.key=value``
overrides; tools with inputs of their own (``synth``, ``grade``, ``verify``) take those. Errors a user can
act on (:class:`~segml.errors.SegmlError`) are printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from segml.errors import SegmlError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

app = typer.Typer(
    name="segml",
    help="Customer grading (客户分级): ranked, explained, versioned A–E grades from raw transactions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ExperimentArg = Annotated[Path, typer.Argument(help="Experiment YAML (its file name names the outputs).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a YAML value: dotted.key=value (repeatable)."),
]


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SegmlError into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SegmlError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def load_config(experiment: Path, overrides: list[str] | None):
    """The experiment YAML with ``--set`` overrides, validated (every section, every key)."""
    from segml.config import load_experiment

    return load_experiment(experiment, overrides or [])


@app.command()
@user_errors
def ingest(experiment: ExperimentArg, set_: SetOpt = None) -> None:
    """Read, map, validate and clean transactions; write clean data, quarantine and the DQ report."""
    from segml.ingest import run_ingest

    cfg = load_config(experiment, set_)
    result = run_ingest(cfg)
    rep = result.report
    out.print(
        f"ingest {cfg.name}: {rep['rows_in']:,} rows in, {rep['rows_kept']:,} kept, "
        f"{rep['rows_quarantined']:,} quarantined, {rep['customers']:,} customers"
    )
    for key in ("invoices", "interactions"):
        section = rep.get(key)
        if section:
            out.print(
                f"  {key}: {section['rows_in']:,} rows in, {section['rows_kept']:,} kept, "
                f"{section['rows_quarantined']:,} quarantined"
            )
    if cfg.engine == "spark":
        out.print(f"  engine:       spark ({cfg.spark.master})")
    out.print(f"  DQ report:    {result.report_path}")
    out.print(f"  transactions: {result.transactions_path}")
    out.print(f"  quarantine:   {result.quarantine_path}")


@app.command()
@user_errors
def features(
    experiment: ExperimentArg,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Cutoff date YYYY-MM-DD (inclusive). Default: cutoffs.calibration_end."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Build point-in-time customer features at a cutoff from the clean transactions."""
    from segml.config import parse_date
    from segml.errors import SegmlError
    from segml.features import run_features
    from segml.pipeline import read_dq_report

    cfg = load_config(experiment, set_)
    cutoff = parse_date(as_of, "--as-of") if as_of else cfg.cutoffs.calibration_end
    dq = read_dq_report(cfg)
    if cutoff.isoformat() < dq["date_min"]:
        raise SegmlError(
            f"--as-of {cutoff}: before the first clean transaction ({dq['date_min']}); nobody is a customer yet"
        )
    if cutoff.isoformat() > dq["date_max"]:
        console.print(
            f"[bold yellow]warning:[/] --as-of {cutoff} is after the last clean transaction ({dq['date_max']}): "
            "every customer looks dormant",
            highlight=False,
        )
    path, n_customers = run_features(cfg, cutoff)
    out.print(f"features {cfg.name} as of {cutoff}: {n_customers:,} customers -> {path}")


@app.command()
@user_errors
def train(
    experiment: ExperimentArg,
    backtest: Annotated[
        bool | None,
        typer.Option(
            "--backtest/--no-backtest", help="Run the backtest (default: models.evaluation.backtest)."
        ),
    ] = None,
    from_stage: Annotated[
        str | None,
        typer.Option("--from-stage", help="Start at this stage, reusing the outputs of the earlier ones."),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Stop after this stage.")] = None,
    set_: SetOpt = None,
) -> None:
    """Run the pipeline headless: fit every model family, compare on the holdout, select, grade current
    customers, monitor, export and register — the same stages `segml run` drives through its notebooks."""
    from rich.table import Table

    from segml.pipeline import run_pipeline, stages_between

    cfg = load_config(experiment, set_)
    stages = stages_between(from_stage, until)
    result = run_pipeline(cfg, stages=stages, backtest=backtest, tags={"segml.command": "train"})
    if "select" in result.results:
        table = Table(title=f"{cfg.name}: holdout comparison", show_lines=False)
        columns = ("model", "normalized_gini", "spearman", "top20_capture", "decile_mape", "total_error")
        headers = ("model", "Gini", "Spearman", "top 20 %", "decile MAPE", "total error")
        for header in headers:
            table.add_column(header, justify="right" if header != "model" else "left", no_wrap=True)
        for row in result.comparison:
            table.add_row(
                row["model"], *("—" if row.get(c) is None else f"{row[c]:.3f}" for c in columns[1:])
            )
        out.print(table)
        mono = "yes" if result.holdout_check["monotone"] else "NO"
        selection = result.selection
        out.print(selection["sentence"], highlight=False)
        out.print(f"grades monotone on the holdout (A→E realised value decreasing): {mono}")
        evaluation = result.results["select"].grading_evaluation
        rows = {row["grading"]: row for row in evaluation["gradings"]}
        top = "+".join(evaluation["top_grades"])
        policy, rfm = rows["policy"], rows["rfm"]
        lo, hi = policy["top_capture_diff_vs_rfm_ci"]
        out.print(
            f"{top} capture {policy['top_capture']:.1%} of holdout value (RFM grading {rfm['top_capture']:.1%}; "
            f"difference {policy['top_capture_diff_vs_rfm']:+.4f}, 95 % CI [{lo:+.4f}, {hi:+.4f}])",
            highlight=False,
        )
        for key in ("thin_holdout", "money_warning"):
            if selection.get(key):
                out.print(f"[bold yellow]warning:[/] {selection[key]}", highlight=False)
        out.print(f"  comparison: {cfg.paths.reports / 'comparison.json'}")
        out.print(f"  selection:  {cfg.paths.reports / 'selection.json'}")
    if "grade" in result.results:
        out.print(f"  grades:     {cfg.paths.processed / 'grades.parquet'}")
    if result.registration is not None:
        reg = result.registration
        role = "champion" if reg.champion else "challenger (champion unchanged)"
        out.print(f"  registered: {reg.name} version {reg.version}, {role}")
    if result.parent_run_id:
        out.print(f"  MLflow parent run: {result.parent_run_id}")
    out.print(f"  train time: {result.seconds['total']:.1f} s")


@app.command()
@user_errors
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("data/raw/synthetic"),
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed -> identical files).")] = 7,
    dirty: Annotated[bool, typer.Option("--dirty", help="Inject known counts of bad rows.")] = False,
    start: Annotated[str, typer.Option(help="First day of history (YYYY-MM-DD).")] = "2023-07-01",
    end: Annotated[str, typer.Option(help="Last day of history (YYYY-MM-DD).")] = "2026-06-30",
    horizon_days: Annotated[int, typer.Option(help="Horizon of the true expected future spend.")] = 365,
    seasonality: Annotated[
        bool, typer.Option("--seasonality/--no-seasonality", help="Month-of-year purchase profile.")
    ] = True,
    planted: Annotated[
        bool,
        typer.Option(
            "--planted/--no-planted",
            help="Plant the lapse, campaign-response and product-mix effects (off: transactions-only model).",
        ),
    ] = True,
) -> None:
    """Generate synthetic customers, transactions, invoices and interactions with planted ground truth."""
    from segml.config import parse_date
    from segml.datasets.synthetic import SynthSpec, write_synthetic

    spec = SynthSpec(
        n_customers=customers,
        seed=seed,
        dirty=dirty,
        start=parse_date(start, "--start"),
        end=parse_date(end, "--end"),
        horizon_days=horizon_days,
        seasonality=seasonality,
        planted=planted,
    )
    from segml.config import project_root

    # a relative --out is under the project root ($SEGML_ROOT when set), like every other output
    out_dir = out_dir if out_dir.is_absolute() else project_root() / out_dir
    truth = write_synthetic(spec, out_dir)
    out.print(
        f"synth: {truth['customers']:,} customers, {truth['transactions']:,} transaction rows, "
        f"{truth['invoices']:,} invoices, {truth['interactions']:,} interactions "
        f"({'dirty' if dirty else 'clean'}) -> {out_dir}"
    )


def _register_command_modules() -> None:
    """Commands defined in their own modules (each has ``register(app)``), imported lazily by their bodies."""
    import importlib

    for module in ("segml.cli.run", "segml.cli.artifact", "segml.cli.monitor"):
        try:
            importlib.import_module(module).register(app)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register_command_modules()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("interrupted")
        sys.exit(130)
