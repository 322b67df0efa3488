"""``segml export | grade | verify``: the grading artifact on the command line.

Registered on the main app by :func:`register` (called from ``segml.cli``). Command bodies import what they
need, so ``segml --help`` stays fast and ``segml grade`` never loads MLflow, ONNX, Spark, shap or Jupyter.
"""

from pathlib import Path
from typing import Annotated

import typer

ArtifactArg = Annotated[
    Path, typer.Argument(help="Artifact folder (artifacts/<name>/<version>).", show_default=False)
]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Key file holding the signing secret: the artifact's manifest.sig must match it.",
        show_default=False,
    ),
]


def _secret(key_file: Path | None) -> bytes | None:
    from segml.artifact.manifest import read_key

    return None if key_file is None else read_key(key_file)


def _print_ingest(report: dict, console) -> None:
    console.print(
        f"ingest: {report.get('rows_in', 0):,} rows in, {report.get('rows_kept', 0):,} kept, "
        f"{report.get('rows_quarantined', 0):,} quarantined",
        highlight=False,
        soft_wrap=True,
    )
    for key in ("invoices", "interactions"):
        section = report.get(key)
        if section:
            console.print(
                f"ingest {key}: {section.get('rows_in', 0):,} rows in, {section.get('rows_kept', 0):,} kept, "
                f"{section.get('rows_quarantined', 0):,} quarantined",
                highlight=False,
                soft_wrap=True,
            )


def register(app: typer.Typer) -> None:
    """Add ``export``, ``grade`` and ``verify`` to ``app``."""
    from segml.cli import ExperimentArg, SetOpt, console, load_config, out, user_errors

    @app.command()
    @user_errors
    def export(
        experiment: ExperimentArg,
        version: Annotated[
            str | None,
            typer.Option(
                "--version", help="Semantic version X.Y.Z (default: export.version, else next patch)."
            ),
        ] = None,
        run_id: Annotated[
            str | None,
            typer.Option("--run-id", help="MLflow run to record in the manifest and log the artifact to."),
        ] = None,
        sign_key: Annotated[
            Path | None,
            typer.Option(
                "--sign-key",
                help="Key file holding a secret (>= 16 bytes): write manifest.sig (HMAC-SHA256).",
                show_default=False,
            ),
        ] = None,
        set_: SetOpt = None,
    ) -> None:
        """Package the trained model as a versioned, checksummed grading artifact (no pickle)."""
        import time

        from segml.artifact.export import export_artifact, log_to_mlflow
        from segml.artifact.manifest import verify

        secret = _secret(sign_key)
        from segml.pipeline import EXPORTED_STAGES, check_consistent

        cfg = load_config(experiment, set_)
        check_consistent(cfg, EXPORTED_STAGES)
        t0 = time.perf_counter()
        with console.status(f"export {cfg.name}"):
            path = export_artifact(cfg, version, mlflow_run_id=run_id, sign_key=secret)
        info = verify(path, key=secret)
        onnx = info["manifest"].get("onnx", {})
        out.print(
            f"export {cfg.name}: {info['name']} {info['version']} — {info['files']} files, "
            f"{info['bytes'] / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s -> {path}"
            + ("; signed (manifest.sig)" if secret is not None else "")
        )
        if onnx.get("passed") is not None:
            out.print(f"  ONNX parity: {'passed' if onnx['passed'] else 'FAILED'}; {_parity_summary(onnx)}")
        if run_id:
            from segml import tracking

            tracking.configure(cfg.root, cfg.mlflow_experiment)
            uri = log_to_mlflow(path, run_id)
            out.print(f"  logged to MLflow run {run_id}: {uri}")

    @app.command()
    @user_errors
    def grade(
        artifact: ArtifactArg,
        transactions: Annotated[
            list[Path],
            typer.Option("--transactions", help="Raw transaction file(s), CSV or Parquet (repeatable)."),
        ],
        out_file: Annotated[
            Path, typer.Option("--out", help="Output grades file: .parquet or .csv.", show_default=False)
        ],
        customers: Annotated[
            Path | None, typer.Option("--customers", help="Optional raw customer-attributes file.")
        ] = None,
        invoices: Annotated[
            Path | None,
            typer.Option(
                "--invoices",
                help="Raw invoices file; required when the model was trained with data.invoices.",
            ),
        ] = None,
        interactions: Annotated[
            Path | None,
            typer.Option(
                "--interactions",
                help="Raw interactions file; required when the model was trained with data.interactions.",
            ),
        ] = None,
        as_of: Annotated[
            str | None,
            typer.Option("--as-of", help="Cutoff YYYY-MM-DD (inclusive). Default: latest transaction day."),
        ] = None,
        mapping: Annotated[
            Path | None,
            typer.Option(
                "--mapping",
                help="YAML column mapping (ingest format). Default: the mapping stored in the artifact.",
            ),
        ] = None,
        reasons: Annotated[
            bool, typer.Option("--reasons/--no-reasons", help="Add the top-3 reason codes.")
        ] = True,
        refit_boundaries: Annotated[
            bool,
            typer.Option(
                "--refit-boundaries",
                help="Re-derive share-based grade boundaries on this population (default: frozen at training).",
            ),
        ] = False,
        key: KeyOpt = None,
        previous: Annotated[
            Path | None,
            typer.Option(
                "--previous",
                help="Earlier grades file (.parquet/.csv): keep grades within the hysteresis margin "
                "(policy.hysteresis of the artifact, or --margin / --periods).",
            ),
        ] = None,
        margin: Annotated[
            float | None, typer.Option("--margin", help="Hysteresis margin on the score (with --previous).")
        ] = None,
        periods: Annotated[
            int | None, typer.Option("--periods", help="Hysteresis periods (with --previous).")
        ] = None,
        engine: Annotated[
            str,
            typer.Option(
                "--engine",
                help="duckdb (one machine, --out is a file) or spark (features and scoring on Spark, --out "
                "is a Parquet folder).",
            ),
        ] = "duckdb",
        partition_by: Annotated[
            list[str] | None,
            typer.Option("--partition-by", help="With --engine spark: partition the output (repeatable)."),
        ] = None,
        master: Annotated[
            str, typer.Option("--master", help="With --engine spark: local[N], spark://host:port, yarn, ...")
        ] = "local[2]",
        spark_conf: Annotated[
            list[str] | None,
            typer.Option("--spark-conf", help="With --engine spark: a KEY=VALUE Spark setting (repeatable)."),
        ] = None,
        work_dir: Annotated[
            Path | None,
            typer.Option(
                "--work-dir",
                help="With --engine spark: folder for the clean input (on a cluster: storage every "
                "executor reads). Default: a temporary folder.",
            ),
        ] = None,
    ) -> None:
        """Grade customers from raw transactions with a verified artifact."""
        import time

        from segml.artifact.load import grade as grade_customers
        from segml.artifact.load import load_artifact
        from segml.errors import ConfigError, InputFileError
        from segml.storage import atomic_path

        if engine not in ("duckdb", "spark"):
            raise ConfigError(f"--engine: {engine!r} is not one of 'duckdb', 'spark'")
        suffix = out_file.suffix.lower()
        if engine == "spark":
            spark_only = None
            if previous is not None:
                spark_only = "--previous"
            elif refit_boundaries:
                spark_only = "--refit-boundaries"
            elif suffix == ".csv":
                spark_only = "a .csv --out"
            if spark_only:
                raise ConfigError(
                    f"--engine spark: {spark_only} is not supported; grade with --engine duckdb"
                )
        else:
            for given, option in ((partition_by, "--partition-by"), (spark_conf, "--spark-conf")):
                if given:
                    raise ConfigError(f"{option} needs --engine spark")
            if suffix not in (".parquet", ".csv"):
                raise InputFileError(f"{out_file}: --out must end in .parquet or .csv")
        t0 = time.perf_counter()
        loaded = load_artifact(artifact, key=_secret(key))  # verifies every file first
        if customers is None and loaded.data.customers is not None:
            console.print(
                "warning: the model was trained with customer attributes but no --customers file was given: "
                "attributes are graded as missing and customers without purchases are not graded",
                highlight=False,
                soft_wrap=True,
            )
        report: dict = {}
        if engine == "spark":
            from segml.artifact.spark_grade import grade_on_spark
            from segml.config import SparkSettings, from_mapping

            conf = {}
            for item in spark_conf or []:
                name, sep, value = item.partition("=")
                if not sep or not name.strip():
                    raise ConfigError(f"--spark-conf {item!r}: expected KEY=VALUE")
                conf[name.strip()] = value
            settings = from_mapping(SparkSettings, {"master": master, "conf": conf}, "spark")
            counts = grade_on_spark(
                loaded,
                transactions,
                out_file,
                customers,
                as_of=as_of,
                mapping=mapping,
                reasons=reasons,
                partition_by=partition_by or [],
                spark=settings,
                work_dir=work_dir,
                report=report,
                invoices=invoices,
                interactions=interactions,
            )
            _print_ingest(report, console)
            shares = ", ".join(f"{code} {n:,}" for code, n in counts.items())
            out.print(
                f"grade {loaded.name} {loaded.version} on Spark ({settings.master}): {sum(counts.values()):,} "
                f"customers ({shares}) in {time.perf_counter() - t0:.1f} s -> {out_file}/",
                highlight=False,
                soft_wrap=True,
            )
            return
        graded = grade_customers(
            loaded,
            transactions,
            customers,
            as_of=as_of,
            mapping=mapping,
            reasons=reasons,
            refit_boundaries=refit_boundaries,
            report=report,
            invoices=invoices,
            interactions=interactions,
        )
        if previous is not None:
            graded = _with_hysteresis(loaded, graded, previous, margin, periods, console)
        with atomic_path(out_file) as tmp:
            if suffix == ".csv":
                graded.to_csv(tmp, index=False)
            else:
                graded.to_parquet(tmp, index=False)
        counts = graded["grade"].value_counts()
        shares = ", ".join(f"{code} {counts[code]:,}" for code in sorted(counts.index))
        as_of_text = str(graded["as_of"].iloc[0].date()) if len(graded) else "—"
        _print_ingest(report, console)
        out.print(
            f"grade {loaded.name} {loaded.version} as of {as_of_text}: {len(graded):,} customers ({shares}) "
            f"in {time.perf_counter() - t0:.1f} s -> {out_file}",
            highlight=False,
            soft_wrap=True,
        )

    @app.command()
    @user_errors
    def verify(artifact: ArtifactArg, key: KeyOpt = None) -> None:
        """Check an artifact: manifest, boundary, every file's content, probe grades; print the card summary."""
        from segml.artifact.load import load_artifact
        from segml.artifact.manifest import MODEL_CARD

        info = load_artifact(artifact, key=_secret(key)).verified
        manifest = info["manifest"]
        data = manifest.get("training_data", {})
        onnx = manifest.get("onnx", {})
        out.print(
            f"verify {info['name']} {info['version']}: OK — {info['files']} files match manifest.json "
            f"(SHA-256) and parse, probe customers re-graded identically, {info['bytes'] / 1e6:.2f} MB; "
            + {True: "signature matches the key", None: "signature not checked (no --key)"}[info["signed"]],
            highlight=False,
            soft_wrap=True,
        )
        out.print(
            f"  created {manifest.get('created')} with segml {manifest.get('segml_version')}; "
            f"MLflow run {manifest.get('mlflow_run_id') or '—'}",
            highlight=False,
            soft_wrap=True,
        )
        out.print(
            f"  training data {data.get('start')} .. {data.get('end')}: {data.get('rows', 0):,} rows, "
            f"{data.get('customers', 0):,} customers; fingerprint {data.get('fingerprint')}",
            highlight=False,
            soft_wrap=True,
        )
        if onnx.get("passed") is not None:
            out.print(
                f"  ONNX parity: {'passed' if onnx['passed'] else 'FAILED'}; {_parity_summary(onnx)}",
                highlight=False,
                soft_wrap=True,
            )
        card = (Path(artifact) / MODEL_CARD).read_text(encoding="utf-8")
        out.print(_card_summary(card), highlight=False, markup=False, soft_wrap=True)


def _with_hysteresis(loaded, graded, previous: Path, margin, periods, console):
    """``graded`` with the grades kept from ``previous`` where the change is within the hysteresis."""
    import pandas as pd

    from segml.errors import InputFileError
    from segml.policy import apply_hysteresis

    if not previous.is_file():
        raise InputFileError(f"{previous}: previous grades file not found")
    before = (
        pd.read_parquet(previous)
        if previous.suffix.lower() == ".parquet"
        else pd.read_csv(previous, dtype=str)
    )
    missing = [c for c in ("customer_id", "grade") if c not in before.columns]
    if missing:
        raise InputFileError(f"{previous}: column(s) {missing} missing ({len(before):,} rows)")
    if "hysteresis_pending" in before.columns:
        before["hysteresis_pending"] = pd.to_numeric(before["hysteresis_pending"], errors="coerce").fillna(0)
    before["customer_id"] = before["customer_id"].astype(str)
    settings = loaded.policy.policy.hysteresis
    margin = settings.margin if margin is None else float(margin)
    periods = settings.periods if periods is None else int(periods)
    if margin < 0 or periods < 1:
        raise InputFileError(f"--margin must be >= 0 and --periods >= 1, got {margin} and {periods}")
    codes = [g.code for g in loaded.policy.policy.grades]
    kept = apply_hysteresis(
        before[[c for c in ("customer_id", "grade", "hysteresis_pending") if c in before.columns]],
        graded.assign(customer_id=graded["customer_id"].astype(str)),
        margin,
        periods,
        thresholds=list(loaded.policy.grade_thresholds),
        codes=codes,
        on=loaded.policy.threshold_on,
    )
    by_code = {g.code: g for g in loaded.policy.policy.grades}
    held = kept["held"].to_numpy()
    graded = graded.copy()
    graded["grade"] = kept["grade"].to_numpy()
    graded.loc[held, "grade_name"] = [by_code[c].name for c in graded.loc[held, "grade"]]
    graded.loc[held, "strategy"] = [by_code[c].strategy for c in graded.loc[held, "grade"]]
    graded["plain_grade"] = kept["plain_grade"].to_numpy()
    graded["hysteresis_pending"] = kept["hysteresis_pending"].to_numpy()
    console.print(
        f"hysteresis (margin {margin:g}, periods {periods}): {int(held.sum()):,} customer(s) keep their "
        f"previous grade from {previous}",
        highlight=False,
        soft_wrap=True,
    )
    return graded


def _parity_summary(onnx: dict) -> str:
    """The parity sentence of a manifest's ``onnx`` block (rebuilt from the counts for older artifacts)."""
    if onnx.get("summary"):
        return str(onnx["summary"])
    from segml.artifact.onnx_export import parity_summary

    return parity_summary(
        int(onnx.get("n_grade_differs") or 0), int(onnx.get("n_grade_differs_away_from_boundary") or 0)
    )


def _card_summary(card: str) -> str:
    """The model card's intended use, metrics and grade tables (sections up to 'ONNX')."""
    keep = []
    for line in card.splitlines():
        if line.startswith("## ONNX"):
            break
        keep.append(line)
    return "\n".join(keep).rstrip()
