"""``segml monitor``: re-grade with an artifact at several cutoffs, compare steps, raise alerts.

Registered on the main app by :func:`register` (called from ``segml.cli``). Exit codes, for schedulers:
0 no alert; 2 bad input or usage; 3 an alert fired (with ``--fail-on-alert``, the default); 1 an unexpected
failure.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

#: exit code when an alert fired (``--fail-on-alert``)
EXIT_ALERT = 3


def _cutoffs(start: str | None, end: str | None, every: str | None, as_of: str | None) -> list[Any]:
    from segml.config import parse_date
    from segml.errors import ConfigError
    from segml.monitor import monitor_cutoffs, parse_as_of, parse_every

    if as_of is not None:
        if start is not None or end is not None or every is not None:
            raise ConfigError("give either --as-of or --from/--to/--every, not both")
        return parse_as_of(as_of)
    if start is None or end is None:
        raise ConfigError("give --from and --to (with --every, default 1M), or --as-of D1,D2,...")
    every = every or "1M"
    parse_every(every)
    return monitor_cutoffs(parse_date(start, "--from"), parse_date(end, "--to"), every)


def _fmt(value: Any, spec: str = ".3f") -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "—".rjust(int(width or 0))
    return format(value, spec)


def alert_line(alert: dict[str, Any]) -> str:
    """One alert as a line of text."""
    what = alert["kind"] + (f" {alert['feature']}" if alert.get("feature") else "")
    return f"{alert['step']}  {what}: {alert['value']:.3f} > {alert['threshold']:g}"


def alert_lines(alerts: list[dict[str, Any]]) -> list[str]:
    """Alerts as text, one line per alert but feature-PSI alerts grouped per step (largest first)."""
    lines = []
    features: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        if alert["kind"] == "feature_psi":
            features.setdefault(alert["step"], []).append(alert)
    seen = set()
    for alert in alerts:
        if alert["kind"] != "feature_psi":
            lines.append(alert_line(alert))
        elif alert["step"] not in seen:
            seen.add(alert["step"])
            group = features[alert["step"]]
            listed = ", ".join(f"{a['feature']} {a['value']:.3f}" for a in group)
            lines.append(f"{alert['step']}  feature_psi > {alert['threshold']:g} ({len(group)}): {listed}")
    return lines


def render_report(cfg: Any, out_dir: Path) -> Path:
    """Execute notebook 08 on the monitor outputs into ``out_dir`` (executed notebook and HTML)."""
    from segml import report
    from segml.runner import notebooks_dir

    source = notebooks_dir(cfg) / "08_monitoring.ipynb"
    parameters = {
        "experiment": cfg.label,
        "overrides": list(cfg.overrides),
        "parent_run_id": None,
        "seed": cfg.seed,
    }
    env = {"MLFLOW_TRACKING_URI": None, "MLFLOW_EXPERIMENT_ID": None, "MLFLOW_RUN_ID": None}
    results = report.run_notebooks([source], out_dir, parameters, cwd=cfg.root, progress=False, env=env)
    return results[0].html_path


def register(app: typer.Typer) -> None:
    """Add ``monitor`` to ``app``."""
    from segml.cli import ExperimentArg, SetOpt, console, load_config, out, user_errors

    @app.command()
    @user_errors
    def monitor(
        experiment: ExperimentArg,
        artifact: Annotated[
            Path, typer.Option("--artifact", help="Artifact folder (artifacts/<name>/<version>).")
        ],
        start: Annotated[
            str | None, typer.Option("--from", help="First cutoff YYYY-MM-DD (a month end keeps month ends).")
        ] = None,
        end: Annotated[str | None, typer.Option("--to", help="Last cutoff YYYY-MM-DD (inclusive).")] = None,
        every: Annotated[
            str | None,
            typer.Option("--every", help="Step between cutoffs: 1M, 3M, 1Q, 2W, 7D, 1Y (default 1M)."),
        ] = None,
        as_of: Annotated[
            str | None, typer.Option("--as-of", help="Explicit cutoffs D1,D2,... instead of --from/--to.")
        ] = None,
        json_output: Annotated[
            bool, typer.Option("--json", help="Print steps and alerts as JSON on stdout (for schedulers).")
        ] = False,
        fail_on_alert: Annotated[
            bool,
            typer.Option("--fail-on-alert/--no-fail-on-alert", help="Exit with code 3 when an alert fired."),
        ] = True,
        reuse: Annotated[
            bool, typer.Option("--reuse/--no-reuse", help="Reuse finished steps whose inputs did not change.")
        ] = True,
        report: Annotated[
            bool,
            typer.Option(
                "--report/--no-report",
                help="Render notebook 08 from the outputs (reports/<exp>/monitoring/08_monitoring.html).",
            ),
        ] = True,
        track: Annotated[
            bool,
            typer.Option(
                "--track/--no-track",
                help="Log the series as one MLflow run of the experiment (metrics per step, alerts, report).",
            ),
        ] = True,
        set_: SetOpt = None,
    ) -> None:
        """Re-grade with an artifact at each cutoff: grade migration, update rate, drift against the
        training reference, realised checks and alerts (exit 3 when one fires)."""
        from segml.pipeline.monitoring import log_monitor_series, run_monitor_series, series_tables

        cfg = load_config(experiment, set_)
        cutoffs = _cutoffs(start, end, every, as_of)
        progress = None if json_output else (lambda line: console.print(f"  {line}", highlight=False))
        series = run_monitor_series(cfg, artifact, cutoffs, reuse=reuse, progress=progress)
        for warning in series.warnings:
            console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
        html = None
        if report:
            from segml.errors import SegmlError

            try:
                html = render_report(cfg, series.report_dir)
            except SegmlError as exc:  # the monitor outputs are written: report the alerts all the same
                console.print(f"warning: notebook 08 not rendered: {exc}", highlight=False, soft_wrap=True)
        run_id = None
        if track:
            from segml import tracking

            run_id = log_monitor_series(cfg, series, html)
            tracking.reset()  # the store was configured for this command only
        if json_output:
            document = {
                "experiment": cfg.name,
                "artifact": series.document["artifact"],
                "report": str(series.report_dir / "monitoring.json"),
                "steps": series_tables(series.document)["steps"].to_dict(orient="records"),
                "alerts": series.alerts,
                "warnings": series.warnings,
                "notebook": None if html is None else str(html),
                "mlflow_run_id": run_id,
            }
            from segml.jsonable import jsonable

            out.print_json(json.dumps(jsonable(document)))
        else:
            table = series_tables(series.document)["steps"]
            out.print(
                f"monitor {cfg.name} with {series.document['artifact']['name']} "
                f"{series.document['artifact']['version']}: {len(table)} step(s), "
                f"{len(series.reused)} reused",
                highlight=False,
            )
            header = (
                f"  {'as_of':<10}  {'customers':>9}  {'update':>6}  {'plain':>6}  {'up':>6}  {'down':>6}  "
                f"{'new':>5}  {'score_psi':>9}  {'gini':>5}  {'top_capture':>11}"
            )
            out.print(header, highlight=False, soft_wrap=True)
            for row in table.to_dict(orient="records"):
                out.print(
                    f"  {row['as_of']:<10}  {row['customers']:>9,}  {_fmt(row['update_rate'], '>6.1%')}  "
                    f"{_fmt(row['update_rate_without_hysteresis'], '>6.1%')}  {_fmt(row['upgrades'], '>6.0f')}  "
                    f"{_fmt(row['downgrades'], '>6.0f')}  {_fmt(row['new'], '>5.0f')}  "
                    f"{_fmt(row['score_psi'], '>9.3f')}  {_fmt(row['normalized_gini'], '>5.3f')}  "
                    f"{_fmt(row['top_grade_capture'], '>11.3f')}",
                    highlight=False,
                    soft_wrap=True,
                )
            out.print(f"  report: {series.report_dir / 'monitoring.json'}", highlight=False, soft_wrap=True)
            out.print(
                f"  migration list: {series.data_dir / 'migrations.parquet'}", highlight=False, soft_wrap=True
            )
            if html is not None:
                out.print(f"  notebook: {html}", highlight=False, soft_wrap=True)
            if run_id is not None:
                out.print(f"  mlflow run: {run_id}", highlight=False, soft_wrap=True)
            if series.alerts:
                out.print(f"ALERTS ({len(series.alerts)}):", highlight=False)
                for line in alert_lines(series.alerts):
                    out.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
            else:
                out.print("no alert", highlight=False)
        if series.alerts and fail_on_alert:
            raise typer.Exit(code=EXIT_ALERT)
