"""Export the outputs of ``segml train`` as a versioned grading artifact, and log it to MLflow.

``artifacts/<name>/<version>/`` is built in a temporary folder beside its final place and renamed into
place when complete, so a reader never sees half an artifact; an existing version is never overwritten.
Every file but ``manifest.json`` and ``pyfunc/MLmodel`` is a pure function of the training outputs, so
exporting twice gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segml.artifact.manifest import (
    ARTIFACT_FORMAT,
    ARTIFACT_FORMAT_VERSION,
    CLUSTERING,
    COMPARISON,
    FEATURE_SPEC,
    GRADE_RULES,
    GRADES_SUMMARY,
    GRADING_ARTIFACT,
    GRADING_EVALUATION,
    HOLDOUT_GRADES,
    INGEST_SPEC,
    IO_SCHEMA,
    MANIFEST,
    MODEL_CARD,
    MODEL_STATE,
    NON_REPRODUCIBLE,
    ONNX_PARITY,
    POLICY,
    PROBE,
    PYFUNC_DIR,
    REFERENCE_STATS,
    SCORER_STATE,
    SELECTION,
    SPEND_TREE,
    ArtifactError,
    booster_file,
    check_name,
    file_entries,
    manifest_text,
    parse_version,
    sign,
    verify,
)
from segml.config import ExperimentConfig
from segml.storage import write_json, write_text

#: packages whose versions the manifest records (and the pyfunc pins)
DEPENDENCIES = (
    "numpy",
    "pandas",
    "pyarrow",
    "duckdb",
    "lightgbm",
    "scikit-learn",
    "scipy",
    "pyyaml",
    "mlflow",
    "onnx",
    "onnxmltools",
    "onnxruntime",
)
#: what the pyfunc wrapper needs at load time (pinned to the exporting environment's versions)
PYFUNC_REQUIREMENTS = ("segml", "mlflow", "numpy", "pandas", "pyarrow", "duckdb", "lightgbm", "pyyaml")

_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclasses.dataclass
class TrainingOutputs:
    """Paths of what ``segml train`` wrote that the artifact packages."""

    potential: Path
    policy: Path
    reference: Path
    grade_rules: Path
    spend_tree: Path
    clustering: Path
    comparison: Path
    holdout_grades: Path
    grades_summary: Path
    selection: Path
    grading_evaluation: Path
    grades: Path
    dq_report: Path
    transactions: Path
    customers: Path | None
    #: the fallback scorer (present only when the potential model lost inside calibration)
    scorer: Path | None = None
    #: clean invoices (present only with ``data.invoices``)
    invoices: Path | None = None
    #: clean interactions (present only with ``data.interactions``)
    interactions: Path | None = None
    #: population rule for customers without a signup date (``data.customers.undated``)
    undated: str = "exclude"


def training_outputs(cfg: ExperimentConfig) -> TrainingOutputs:
    """Locate the training outputs of an experiment; a missing one is an error naming it."""
    models = cfg.paths.processed / "models"
    reports = cfg.paths.reports
    outputs = TrainingOutputs(
        potential=models / "potential_production.json",
        policy=models / "policy.yaml",
        reference=models / "reference_stats.json",
        grade_rules=models / "grade_rules.json",
        spend_tree=models / "spend_tree.json",
        clustering=models / "clustering.json",
        comparison=reports / "comparison.json",
        holdout_grades=reports / "holdout_grades.json",
        grades_summary=reports / "grades_summary.json",
        selection=reports / "selection.json",
        grading_evaluation=reports / "grading_evaluation.json",
        grades=cfg.paths.processed / "grades.parquet",
        dq_report=cfg.paths.dq_report,
        transactions=cfg.paths.clean_transactions,
        customers=(
            cfg.paths.clean_customers
            if cfg.data.customers is not None and cfg.paths.clean_customers.is_file()
            else None
        ),
        scorer=(models / "scorer_production.json") if (models / "scorer_production.json").is_file() else None,
        invoices=cfg.paths.clean_invoices if cfg.data.invoices is not None else None,
        interactions=cfg.paths.clean_interactions if cfg.data.interactions is not None else None,
        undated=cfg.data.customers.undated if cfg.data.customers is not None else "exclude",
    )
    experiment = cfg.source_path or f"experiments/{cfg.name}.yaml"
    for field in dataclasses.fields(outputs):
        path = getattr(outputs, field.name)
        if isinstance(path, Path) and not path.is_file():
            raise ArtifactError(
                f"{path}: missing — run `segml ingest {experiment}` and `segml train {experiment}` first"
            )
    return outputs


def export_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The validated ``export:`` section: ``name`` (default the experiment name) and ``version``."""
    name = check_name(str(cfg.export.name or cfg.name))
    version = cfg.export.version
    if version is not None:
        parse_version(str(version))
    return {"name": name, "version": None if version is None else str(version)}


def existing_versions(name_dir: Path) -> list[str]:
    """Semantic versions already exported under ``artifacts/<name>/``, oldest first."""
    if not name_dir.is_dir():
        return []
    found = []
    for child in name_dir.iterdir():
        if child.is_dir() and not child.name.startswith("."):
            try:
                found.append((parse_version(child.name), child.name))
            except ArtifactError:
                continue
    return [text for _, text in sorted(found)]


def next_version(name_dir: Path) -> str:
    """The next patch version after the highest existing one (``1.0.0`` for the first export)."""
    versions = existing_versions(name_dir)
    if not versions:
        return "1.0.0"
    major, minor, patch = parse_version(versions[-1])
    return f"{major}.{minor}.{patch + 1}"


# --------------------------------------------------------------------------------------------------------------
# Export


def export_artifact(
    cfg: ExperimentConfig,
    version: str | None = None,
    *,
    mlflow_run_id: str | None = None,
    sign_key: bytes | None = None,
) -> Path:
    """Write ``artifacts/<name>/<version>/`` from the outputs of ``segml train``.

    Parameters
    ----------
    cfg:
        The experiment (its ``export:`` section may set ``name`` and ``version``).
    version:
        Semantic version; default ``export.version``, else the next patch after the highest existing one.
    mlflow_run_id:
        Recorded in the manifest (log the artifact to that run with :func:`log_to_mlflow`).
    sign_key:
        Signing secret (:func:`segml.artifact.manifest.read_key`): writes ``manifest.sig`` (HMAC-SHA256 of
        the manifest) beside the manifest and beside the copy's manifest inside ``pyfunc/``.

    Returns
    -------
    Path
        The artifact folder.

    Raises
    ------
    ArtifactError
        Training outputs missing, the version exists already, or the packaged model does not reproduce the
        experiment's ``grades.parquet`` (the training outputs are out of step: retrain).
    """
    settings = export_settings(cfg)
    name_dir = cfg.paths.artifacts / settings["name"]
    version = version or settings["version"] or next_version(name_dir)
    parse_version(version)
    target = name_dir / version
    if target.exists():
        raise ArtifactError(
            f"{target}: version {version} exists already; artifacts are never overwritten — "
            f"pick another --version (next free: {next_version(name_dir)})"
        )
    outputs = training_outputs(cfg)
    name_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=name_dir))
    try:
        details = _write_core_files(cfg, outputs, staging, settings["name"], version)
        created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        # first the manifest of the core files: the pyfunc wrapper carries a verified copy of them
        manifest = _manifest(
            cfg, outputs, staging, settings["name"], version, mlflow_run_id, details, created
        )
        write_text(staging / MANIFEST, manifest_text(manifest))
        if sign_key is not None:
            sign(staging, sign_key)
        _write_pyfunc(staging / PYFUNC_DIR, staging)
        manifest = _manifest(
            cfg, outputs, staging, settings["name"], version, mlflow_run_id, details, created
        )
        write_text(staging / MANIFEST, manifest_text(manifest))
        if sign_key is not None:
            sign(staging, sign_key)
        verify(staging, key=sign_key)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)  # fails when another export created the version meanwhile
        except OSError:
            raise ArtifactError(
                f"{target}: version {version} was created meanwhile; not overwritten"
            ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_core_files(
    cfg: ExperimentConfig, outputs: TrainingOutputs, root: Path, name: str, version: str
) -> dict[str, Any]:
    """Every reproducible file; returns details for the manifest (data period, parity, checks)."""
    from segml import features as feature_module
    from segml.models.potential import PotentialValueModel
    from segml.policy import FittedPolicy
    from segml.scoring import grade_features

    # potential-value model: booster text files + the rest of its state as JSON
    state = json.loads(outputs.potential.read_text(encoding="utf-8"))
    model = PotentialValueModel.from_dict(state)
    boosters = state.pop("boosters")
    for booster_name, text in sorted(boosters.items()):
        write_text(root / booster_file(booster_name), text)
    state["booster_files"] = {n: booster_file(n) for n in sorted(boosters)}
    write_json(root / MODEL_STATE, state)

    # fitted policy: validated, and its YAML must read back to the same floats
    policy_text = outputs.policy.read_text(encoding="utf-8")
    policy = FittedPolicy.from_yaml(policy_text)
    if policy.to_yaml() != policy_text:
        raise ArtifactError(f"{outputs.policy}: the fitted policy does not round-trip exactly through YAML")
    write_text(root / POLICY, policy_text)
    reference = json.loads(outputs.reference.read_text(encoding="utf-8"))
    write_json(root / REFERENCE_STATS, reference)
    for source, relative in (
        (outputs.grade_rules, GRADE_RULES),
        (outputs.spend_tree, SPEND_TREE),
        (outputs.clustering, CLUSTERING),
        (outputs.comparison, COMPARISON),
        (outputs.holdout_grades, HOLDOUT_GRADES),
        (outputs.grades_summary, GRADES_SUMMARY),
        (outputs.selection, SELECTION),
        (outputs.grading_evaluation, GRADING_EVALUATION),
    ):
        write_json(root / relative, json.loads(source.read_text(encoding="utf-8")))
    scorer = None
    if outputs.scorer is not None:
        from segml.models.registry import load_model

        scorer_state = json.loads(outputs.scorer.read_text(encoding="utf-8"))
        scorer = load_model(scorer_state)
        write_json(root / SCORER_STATE, scorer_state)

    # the experiment's current grades, rebuilt from the packaged pieces, must match grades.parquet exactly
    dq = json.loads(outputs.dq_report.read_text(encoding="utf-8"))
    data_end = dt.date.fromisoformat(dq["date_max"])
    now = feature_module.build_features(
        outputs.transactions,
        data_end,
        cfg.features,
        outputs.customers,
        undated=outputs.undated,
        invoices=outputs.invoices,
        interactions=outputs.interactions,
    )
    rebuilt = grade_features(
        now, model, policy, reference, as_of=data_end, feature_config=cfg.features, scorer=scorer
    )
    expected = pd.read_parquet(outputs.grades)
    _check_reproduces(rebuilt, expected, outputs.grades)

    write_json(root / FEATURE_SPEC, feature_spec(cfg, model, now, data_end))
    write_training_reference(root, model, now, rebuilt, data_end)
    write_json(root / IO_SCHEMA, io_schema(cfg, rebuilt))
    from segml.artifact.probe import probe_document, probe_features

    probe = probe_features(now, data_end)
    probe_graded = grade_features(
        probe, model, policy, reference, as_of=data_end, feature_config=cfg.features, scorer=scorer
    )
    write_json(root / PROBE, probe_document(probe, probe_graded))
    write_text(root / INGEST_SPEC, ingest_spec(cfg))

    from segml.artifact.onnx_export import export_onnx

    parity = export_onnx(model, policy, now, rebuilt, root, scorer=scorer)
    write_json(root / ONNX_PARITY, parity)
    if parity.get("passed") is False:
        # a production copy that grades customers differently from the reference is not shipped
        raise ArtifactError(
            f"{cfg.name}: ONNX parity failed on {parity['customers']:,} customers: {parity['summary']}; "
            "refusing to export"
        )

    comparison = json.loads(outputs.comparison.read_text(encoding="utf-8"))
    holdout = json.loads(outputs.holdout_grades.read_text(encoding="utf-8"))
    data_period = {
        "start": dq["date_min"],
        "end": dq["date_max"],
        "rows": int(dq["rows_kept"]),
        "customers": int(dq["customers"]),
        "calibration_end": cfg.cutoffs.calibration_end.isoformat(),
        "holdout_end": min(cfg.cutoffs.holdout_end or data_end, data_end).isoformat(),
        "horizon_days": int(model.horizon_days),
        "model_training_start": model.training_start_.isoformat(),
        "model_training_end": model.training_end_.isoformat(),
    }
    from segml.artifact.card import model_card

    write_text(
        root / MODEL_CARD,
        model_card(
            name=name,
            version=version,
            cfg=cfg,
            model=model,
            policy=policy,
            comparison=comparison,
            holdout=holdout,
            data_period=data_period,
            parity=parity,
            n_graded=len(rebuilt),
            selection=json.loads(outputs.selection.read_text(encoding="utf-8")),
            grading_evaluation=json.loads(outputs.grading_evaluation.read_text(encoding="utf-8")),
        ),
    )
    return {"data_period": data_period, "onnx": parity, "reproduced_customers": len(rebuilt)}


def _check_reproduces(rebuilt: pd.DataFrame, expected: pd.DataFrame, path: Path) -> None:
    rebuilt = rebuilt.copy()
    rebuilt["as_of"] = rebuilt["as_of"].astype(expected["as_of"].dtype)
    try:
        pd.testing.assert_frame_equal(rebuilt, expected, check_exact=True)
    except AssertionError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactError(
            f"{path}: the packaged model and policy do not reproduce these grades ({first}); the training "
            "outputs are out of step — rerun `segml train`"
        ) from None


def write_training_reference(
    root: Path, model: Any, features: pd.DataFrame, graded: pd.DataFrame, data_end: dt.date
) -> None:
    """Store the decile edges and shares of the score and of every model feature over the customers with
    purchases at the training data end (``segml monitor`` computes its PSI against them)."""
    from segml.monitor import TRAINING_REFERENCE, training_reference

    purchased = features["has_purchases"].astype(bool).to_numpy()
    categorical = [n for n in model.feature_names_ if n in model.categorical_levels_]
    numeric = [n for n in model.feature_names_ if n not in model.categorical_levels_]
    document = training_reference(
        features[purchased],
        graded["score"].to_numpy(dtype=float)[purchased],
        numeric,
        categorical,
        as_of=data_end,
    )
    write_json(root / TRAINING_REFERENCE, document)


def _dtype_name(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime64"
    if pd.api.types.is_float_dtype(dtype):
        return "float64"
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    return "string"


def feature_spec(
    cfg: ExperimentConfig, model: Any, features: pd.DataFrame, data_end: dt.date
) -> dict[str, Any]:
    """What the features are and how the model reads them (cutoff semantics, windows, roles, order, dtypes)."""
    from segml.features import describe_feature

    spec = cfg.features
    numeric = set(model.feature_names_) - set(model.categorical_levels_)
    columns = []
    for column in features.columns:
        if column == "customer_id":
            role = "id"
        elif column == "as_of":
            role = "cutoff"
        elif column in model.categorical_levels_:
            role = "attribute (model input, categorical)"
        elif column in numeric:
            role = "feature (model input)"
        elif _dtype_name(features[column]) == "string":
            role = "attribute"
        else:
            role = "feature"
        columns.append(
            {
                "name": column,
                "dtype": _dtype_name(features[column]),
                "role": role,
                "description": describe_feature(column) if role.startswith("feature") else "",
            }
        )
    model_columns = [
        {
            "name": name,
            "kind": "categorical" if name in model.categorical_levels_ else "numeric",
            **(
                {"levels": list(model.categorical_levels_[name])} if name in model.categorical_levels_ else {}
            ),
        }
        for name in model.feature_names_
    ]
    window_feature = bool(model.params_.get("window_feature"))
    if window_feature:
        model_columns.append({"name": "window_days", "kind": "numeric", "value": "horizon_days"})
    needed = sorted(
        {"customer_id", "as_of", "has_purchases", *model.feature_names_} | {f for f in _policy_features(cfg)}
    )
    return {
        "format": "segml.feature_spec",
        "format_version": 1,
        "cutoff": {
            "column": "as_of",
            "semantics": "inclusive: only transactions with date(timestamp) <= as_of are used; the forecast "
            "window is the horizon_days after as_of",
            "training_data_end": data_end.isoformat(),
            "default_for_grading": "the latest transaction day of the clean input",
        },
        "feature_config": {
            "engine": "duckdb",
            "windows": list(spec.windows),
            "trend_window": int(spec.trend_window),
            "active_months": int(spec.active_months),
            "threads": None,
            "memory_limit": None,
        },
        "columns": columns,
        "required_columns": [c for c in needed if c in features.columns or c in model.feature_names_],
        "model": {
            "objective": model.objective_,
            "boosters": {name: int(n) for name, n in sorted(model.n_estimators_.items())},
            "input_columns": model_columns,
            "horizon_days": int(model.horizon_days),
            "season_profile": [float(v) for v in model.season_profile_],
            "spread": model.params_.get("spread"),
            # P10 / P90 multipliers of predicted_value (segml.models.intervals; null: no interval)
            "interval": model.params_.get("interval"),
            "deseasonalised": not bool(np.allclose(model.season_profile_, 1.0)),
        },
    }


def _policy_features(cfg: ExperimentConfig) -> set[str]:
    from segml.policy import GradePolicy

    policy = GradePolicy.from_config(cfg.policy)
    names = {policy.value_feature, policy.loyalty.feature}
    if policy.loyalty.repurchase_weight:
        names.add(policy.loyalty.repurchase_feature)
    return names


def io_schema(cfg: ExperimentConfig, graded: pd.DataFrame) -> dict[str, Any]:
    """Input contract (roles of raw files, the pyfunc input) and output columns with dtypes."""
    from segml.schema import CUSTOMER_ROLES, REQUIRED_TRANSACTION_ROLES, TRANSACTION_ROLES

    output = [{"name": c, "dtype": _dtype_name(graded[c])} for c in graded.columns]
    output.append({"name": "artifact_version", "dtype": "string"})
    return {
        "format": "segml.io_schema",
        "format_version": 1,
        "transactions": {
            "roles": list(TRANSACTION_ROLES),
            "required_roles": [*REQUIRED_TRANSACTION_ROLES, "amount (or quantity and unit_price)"],
            "mapping": "spec/ingest.yaml (data.transactions[*].columns: role -> column in the file)",
        },
        "customers": {
            "roles": [*CUSTOMER_ROLES, "<attribute>..."],
            "optional": True,
            "mapping": "spec/ingest.yaml (data.customers.columns)",
        },
        "pyfunc_input": "feature table at one cutoff (segml.features.build_features output): the columns of "
        "spec/feature_spec.json; required: see required_columns there",
        "output": output,
        "output_order": "same rows and order as the input features; segml grade sorts by customer_id",
    }


def ingest_spec(cfg: ExperimentConfig) -> str:
    """The experiment's column mapping and cleaning rules as YAML (the default for ``segml grade``)."""
    data = dataclasses.asdict(cfg.data)
    document = {
        "format": "segml.ingest_spec",
        "format_version": 1,
        "note": "Default column mapping and cleaning rules of `segml grade` (same as `segml ingest`). "
        "Paths are those of the training data; grade takes its files from the command line.",
        "data": data,
    }
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=True, width=120)


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in DEPENDENCIES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _segml_version() -> str:
    from segml import __version__

    return __version__


def _manifest(
    cfg: ExperimentConfig,
    outputs: TrainingOutputs,
    root: Path,
    name: str,
    version: str,
    mlflow_run_id: str | None,
    details: dict[str, Any],
    created: str,
) -> dict[str, Any]:
    from segml.tracking import data_fingerprint

    parity = details["onnx"]
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "name": name,
        "version": version,
        "experiment": cfg.name,
        "created": created,
        "segml_version": _segml_version(),
        "dependencies": _versions(),
        "training_data": {
            "fingerprint": data_fingerprint(outputs.transactions),
            "customers_fingerprint": (
                data_fingerprint(outputs.customers) if outputs.customers is not None else None
            ),
            **details["data_period"],
        },
        "mlflow_run_id": mlflow_run_id,
        "reproduces_training_grades": {
            "file": "data/processed/<experiment>/grades.parquet",
            "customers": int(details["reproduced_customers"]),
            "exact": True,
        },
        "onnx": {
            "target_opset": parity.get("target_opset"),
            "passed": parity.get("passed"),
            "n_grade_differs": parity.get("n_grade_differs"),
            "n_within_error_of_boundary": parity.get("n_within_error_of_boundary"),
            "n_grade_differs_away_from_boundary": parity.get("n_grade_differs_away_from_boundary"),
            "max_score_error": parity.get("max_score_error"),
            "summary": parity.get("summary"),
        },
        "non_reproducible_files": list(NON_REPRODUCIBLE),
        "files": file_entries(root),
    }


# --------------------------------------------------------------------------------------------------------------
# pyfunc


def shim_path() -> Path:
    """The models-from-code file MLflow stores in ``pyfunc/`` (it imports the installed segml)."""
    return Path(str(resources.files("segml").joinpath("resources/pyfunc_shim.py")))


def pip_requirements() -> list[str]:
    """Explicit, pinned requirements of the pyfunc wrapper (the exporting environment's versions)."""
    pins = []
    for package in PYFUNC_REQUIREMENTS:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return pins


@contextlib.contextmanager
def _quiet_signature_inference() -> Any:
    """MLflow logs that a DataFrame type hint gives no signature without an input example: the input is a
    feature table whose width depends on the experiment, described by spec/feature_spec.json instead."""
    import logging

    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_pyfunc(target: Path, artifact_root: Path) -> None:
    """Save the pyfunc wrapper with a copy of the core artifact (manifest included) as its MLflow artifact,
    so ``pyfunc/`` is self-contained: Spark's ``spark_udf`` and ``mlflow.pyfunc.load_model`` copy only it."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="segml-pyfunc-") as tmp:
        copy = Path(tmp) / GRADING_ARTIFACT
        shutil.copytree(artifact_root, copy, ignore=shutil.ignore_patterns(PYFUNC_DIR, "__pycache__"))
        progress = os.environ.get(_PROGRESS_ENV)
        os.environ[_PROGRESS_ENV] = "false"  # MLflow would draw a bar while copying the files
        try:
            with _quiet_signature_inference():
                mlflow.pyfunc.save_model(
                    path=str(target),
                    python_model=str(shim_path()),
                    artifacts={GRADING_ARTIFACT: str(copy)},
                    pip_requirements=pip_requirements(),
                )
        finally:
            if progress is None:
                os.environ.pop(_PROGRESS_ENV, None)
            else:
                os.environ[_PROGRESS_ENV] = progress
    _relative_mlmodel(target / "MLmodel")


def _relative_mlmodel(path: Path) -> None:
    """Record the shim and the stored copy by their places inside ``pyfunc/``, not by build-machine paths.

    MLflow records the absolute path of the shim it was given and the temporary folder the copy came from; it
    loads both from inside the model folder (``model_code_path``'s file name, the artifact's ``path``), so the
    relative forms load the same and leak nothing about the machine that exported the artifact.
    """
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    flavor = document["flavors"]["python_function"]
    flavor["model_code_path"] = Path(flavor["model_code_path"]).name
    for entry in (flavor.get("artifacts") or {}).values():
        entry["uri"] = entry["path"]
    write_text(path, yaml.safe_dump(document, default_flow_style=False, sort_keys=True))


def log_to_mlflow(artifact_dir: Path, run_id: str) -> str:
    """Log an artifact folder and its pyfunc model to an MLflow run.

    The whole folder goes to the run's artifacts under ``grading_artifact/<name>/<version>``; the pyfunc
    model is logged as a logged model (``name="grading_model"``) whose ``artifacts`` hold a copy of the
    artifact without its own ``pyfunc/`` folder, so the model loads anywhere (its shim verifies that copy
    against the manifest before reading it).

    Returns
    -------
    str
        The model URI (``models:/m-<id>``), usable with :func:`segml.tracking.register_model`.
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient

    artifact_dir = Path(artifact_dir)
    info = verify(artifact_dir)
    client = MlflowClient()
    client.log_artifacts(
        run_id, str(artifact_dir), artifact_path=f"grading_artifact/{info['name']}/{info['version']}"
    )
    with tempfile.TemporaryDirectory(prefix="segml-artifact-") as tmp:
        copy = Path(tmp) / GRADING_ARTIFACT
        shutil.copytree(artifact_dir, copy, ignore=shutil.ignore_patterns(PYFUNC_DIR, "__pycache__"))
        active = mlflow.active_run()
        context = (
            mlflow.start_run(run_id=run_id, nested=active is not None)
            if active is None or active.info.run_id != run_id
            else contextlib.nullcontext()
        )
        with context, _quiet_signature_inference():
            logged = mlflow.pyfunc.log_model(
                name="grading_model",
                python_model=str(shim_path()),
                artifacts={GRADING_ARTIFACT: str(copy)},
                pip_requirements=pip_requirements(),
                tags={"segml.artifact_name": info["name"], "segml.artifact_version": info["version"]},
            )
    return logged.model_uri


__all__ = [
    "export_artifact",
    "existing_versions",
    "feature_spec",
    "log_to_mlflow",
    "next_version",
    "pip_requirements",
    "shim_path",
    "training_outputs",
]
