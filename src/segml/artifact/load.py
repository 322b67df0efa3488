"""Load a verified grading artifact and grade customers with it (the ``segml grade`` path).

Only data files are read — JSON, YAML and LightGBM booster text — and nothing from the artifact folder is
executed. Loading with ``check=True`` (the default, and what ``segml verify``, ``segml grade`` and the pyfunc
do) verifies the manifest and the artifact boundary, parses every file as what it should be
(:mod:`segml.artifact.checks`, boosters first loaded in a child process), rebuilds the model and policy and
grades the stored probe customers; any failure is one :class:`ArtifactError` naming the file. Nothing here imports MLflow, ONNX, Spark, shap or Jupyter, so grading works from the slim
install.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from segml.artifact.manifest import (
    FEATURE_SPEC,
    GRADING_ARTIFACT,
    INGEST_SPEC,
    MODEL_STATE,
    POLICY,
    PROBE,
    PYFUNC_DIR,
    REFERENCE_STATS,
    SCORER_STATE,
    ArtifactError,
    booster_file,
    verify,
)
from segml.config import (
    CustomerSource,
    DataConfig,
    FeatureConfig,
    InteractionSource,
    InvoiceSource,
    SparkSettings,
    TransactionSource,
    from_mapping,
    read_yaml,
)
from segml.errors import ConfigError, InputFileError

TableInput = str | Path | pd.DataFrame


@dataclass
class GradingArtifact:
    """A loaded, verified artifact: everything :func:`segml.scoring.grade_features` needs.

    Build with :func:`load_artifact`.
    """

    path: Path
    manifest: dict[str, Any]
    model: Any  # segml.models.potential.PotentialValueModel
    policy: Any  # segml.policy.FittedPolicy
    reference: dict[str, float | None]
    feature_config: FeatureConfig
    feature_spec: dict[str, Any]
    data: DataConfig
    #: what :func:`segml.artifact.verify` returned (None when loaded with ``check=False``)
    verified: dict[str, Any] | None = None
    #: the fallback scorer that drives the grade score when the potential model lost inside calibration
    scorer: Any | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def score(
        self,
        features: pd.DataFrame,
        *,
        reasons: bool = True,
        refit_boundaries: bool = False,
        as_of: dt.date | None = None,
    ) -> pd.DataFrame:
        """Grade a feature table (``segml.features.build_features`` output at one cutoff).

        Parameters
        ----------
        features:
            Feature rows; any batch size (grades never depend on the batch unless ``refit_boundaries``).
        reasons:
            Add the top-3 reason codes.
        refit_boundaries:
            Re-derive share-based grade boundaries on this population (the frozen reference quantiles are
            kept). Default False: the thresholds learned at training are used, so grades are comparable
            across runs and one customer can be graded alone.
        as_of:
            Cutoff for the ``as_of`` column; default the features' own.

        Returns
        -------
        pandas.DataFrame
            The ``grades.parquet`` columns plus ``artifact_version``.
        """
        from segml.scoring import grade_features

        missing = [c for c in self.feature_spec["required_columns"] if c not in features.columns]
        if missing:
            raise InputFileError(
                f"features: {len(missing)} column(s) the artifact needs are missing, first "
                f"'{missing[0]}' ({len(features):,} rows); build them with spec/feature_spec.json"
            )
        model = self.model
        model.check_fitted()
        # one model matrix for the prediction and (with reasons) the contributions
        matrix = model.design_matrix(features)
        potential = model.predict_matrix(features, matrix)
        contributions = model.contrib_matrix(features, matrix) if reasons else None
        del matrix
        score = potential if self.scorer is None else self.scorer.predict_value(features)
        policy = self.policy.refit_boundaries(features, score) if refit_boundaries else self.policy
        graded = grade_features(
            features,
            self.model,
            policy,
            self.reference,
            as_of=as_of,
            reasons=reasons,
            feature_config=self.feature_config,
            potential=potential,
            contributions=contributions,
            scorer=self.scorer,
        )
        graded["artifact_version"] = self.version
        return graded


def load_artifact(
    artifact_dir: Path | str,
    *,
    check: bool = True,
    allow_missing: tuple[str, ...] = (),
    key: bytes | None = None,
) -> GradingArtifact:
    """Verify (unless ``check`` is False) and load an artifact folder.

    Parameters
    ----------
    artifact_dir:
        The artifact folder.
    check:
        Verify the manifest, the boundary and every file's content, and re-grade the probe customers.
    allow_missing:
        Path prefixes that may be absent (the pyfunc's copy has no ``pyfunc/``).
    key:
        Signing secret (:func:`segml.artifact.manifest.read_key`): ``manifest.sig`` must match.

    Raises
    ------
    ArtifactError
        A file changed, is missing, extra or not what it should be, the signature does not match, or the
        installed segml grades the probe customers differently.
    """
    from segml.artifact.checks import check_contents, check_pyfunc_copy, load_boosters_in_child

    root = Path(artifact_dir)
    if check:
        info = verify(root, allow_missing=allow_missing, key=key)
        manifest = info["manifest"]
        present = [rel for rel in manifest["files"] if (root / rel).is_file()]
        check_contents(root, present)
        copy = f"{PYFUNC_DIR}/artifacts/{GRADING_ARTIFACT}"
        if f"{copy}/manifest.json" in present:  # absent in copies made without pyfunc/
            check_pyfunc_copy(root, manifest, copy)
    else:
        from segml.artifact.manifest import read_manifest

        info = None
        manifest = read_manifest(root)
    reader = _Reader(root, manifest if check else None)
    state = reader.json(MODEL_STATE)
    try:
        files = state.pop("booster_files")
        if not isinstance(files, dict) or not files:
            raise ValueError("no booster_files")
        state["boosters"] = {name: reader.text(booster_file(name)) for name in sorted(files)}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{root / MODEL_STATE}: not a potential-value model state ({exc})") from None
    if check:
        load_boosters_in_child(
            {str(root / booster_file(name)): text for name, text in state["boosters"].items()}
        )
    model = _build(root / MODEL_STATE, "a potential-value model state", _model_from_dict, state)
    policy = _build(root / POLICY, "a fitted grade policy", _policy_from_yaml, reader.text(POLICY))
    spec = reader.json(FEATURE_SPEC)
    feature_config = _build(root / FEATURE_SPEC, "a feature spec", _feature_config, spec)
    data = _build(root / INGEST_SPEC, "an ingest spec", _data_config, reader.text(INGEST_SPEC))
    scorer = None
    if SCORER_STATE in manifest.get("files", {}):
        scorer = _build(
            root / SCORER_STATE,
            "a fitted baseline scorer state",
            _scorer_from_dict,
            reader.json(SCORER_STATE),
        )
    reference = reader.json(REFERENCE_STATS)
    if not isinstance(reference, dict):
        raise ArtifactError(f"{root / REFERENCE_STATS}: not reference statistics (expected an object)")
    artifact = GradingArtifact(
        path=root,
        manifest=manifest,
        model=model,
        policy=policy,
        reference=reference,
        feature_config=feature_config,
        feature_spec=spec,
        data=data,
        verified=info,
        scorer=scorer,
    )
    if check:
        _check_probe(artifact, reader)
    return artifact


def _model_from_dict(state: dict[str, Any]) -> Any:
    from segml.models.registry import load_model

    return load_model(state)


def _scorer_from_dict(state: Any) -> Any:
    from segml.models.registry import load_model

    model = load_model(state)
    if getattr(model, "family", None) != "baselines":
        raise ValueError(f"family {getattr(model, 'family', None)!r} is not a baseline scorer")
    return model


def _policy_from_yaml(text: str) -> Any:
    from segml.policy import FittedPolicy

    return FittedPolicy.from_yaml(text)


def _feature_config(spec: Any) -> FeatureConfig:
    if not isinstance(spec, dict) or not isinstance(spec.get("required_columns"), list):
        raise ValueError("no required_columns")
    return from_mapping(FeatureConfig, spec["feature_config"], "feature_config")


def _data_config(text: str) -> DataConfig:
    ingest = yaml.safe_load(text)
    return from_mapping(DataConfig, ingest["data"], "data")


def _build(path: Path, what: str, build: Any, *args: Any) -> Any:
    """``build(*args)``; any failure on the artifact's content is one ArtifactError naming the file.

    The content passed the checksums, so a failure here means a consistent but foreign or malformed file:
    the user must see which file and why, never a traceback.
    """
    try:
        return build(*args)
    except Exception as exc:  # noqa: BLE001 - the trust boundary: every failure names the file
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path}: not {what} ({detail}); refusing the artifact") from None


class _Reader:
    """Reads artifact files; with a manifest, the bytes read must be the bytes that were verified."""

    def __init__(self, root: Path, manifest: dict[str, Any] | None) -> None:
        self.root = root
        self.manifest = manifest

    def text(self, relative: str) -> str:
        import hashlib

        path = self.root / relative
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{path}: missing from the artifact")
        data = path.read_bytes()
        if self.manifest is not None:
            entry = self.manifest["files"].get(relative)
            if entry is None:
                raise ArtifactError(f"{path}: not listed in manifest.json; refusing the artifact")
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ArtifactError(f"{path}: changed while it was being read; refusing the artifact")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{path}: not UTF-8 text; refusing the artifact") from None

    def json(self, relative: str) -> Any:
        try:
            return json.loads(self.text(relative))
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = getattr(exc, "msg", "nested too deeply")
            raise ArtifactError(f"{self.root / relative}: not valid JSON ({detail})") from None


def read_training_reference(artifact: GradingArtifact) -> dict[str, Any]:
    """The training reference ``segml export`` stores for monitoring (decile edges and shares of the score
    and of every model feature).

    Raises
    ------
    ArtifactError
        An artifact exported before the reference existed (re-export it), or a malformed document.
    """
    from segml.monitor import TRAINING_REFERENCE, check_training_reference

    path = artifact.path / TRAINING_REFERENCE
    if not path.is_file():
        raise ArtifactError(
            f"{artifact.path}: artifact {artifact.name} {artifact.version} has no training reference "
            f"({TRAINING_REFERENCE}) for monitoring; re-export it with `segml export <experiment>`"
        )
    try:
        return check_training_reference(json.loads(path.read_text(encoding="utf-8")), str(path))
    except InputFileError as exc:
        raise ArtifactError(str(exc)) from None


def _check_probe(artifact: GradingArtifact, reader: _Reader) -> None:
    """Grade the stored probe customers with the installed segml; refuse on any difference."""
    from segml.artifact.probe import differences, read_probe

    path = artifact.path / PROBE
    probe, expected = _build(path, "a scoring probe document", read_probe, reader.json(PROBE))
    changed = _build(
        path,
        "a probe this artifact can grade",
        lambda: differences(artifact.score(probe), expected),
    )
    if changed:
        from segml import __version__

        raise ArtifactError(
            f"{path}: the installed segml {__version__} scores the probe customers differently from segml "
            f"{artifact.manifest.get('segml_version')} that exported this artifact (columns: "
            f"{', '.join(changed)}); grade with the exporting version or re-export the model"
        )


# --------------------------------------------------------------------------------------------------------------
# Column mapping


def read_mapping(path: Path | str) -> dict[str, Any]:
    """Read a ``--mapping`` YAML file into the shape of an experiment's ``data:`` section.

    Accepted shapes: an experiment YAML (its ``data:`` section is used); a ``data:``-shaped mapping
    (``transactions: [...]``, optional ``customers:`` and ``cleaning:``); or one transaction source
    (``columns: {role: column}``, optional ``format``, ``timestamp_format``, ...). ``path`` keys are
    optional: the files come from the command line.
    """
    path = Path(path)
    raw = read_yaml(path, "mapping file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of roles to columns")
    if "data" in raw:
        raw = raw["data"]
    elif "columns" in raw:
        raw = {"transactions": [raw]}
    if not isinstance(raw, dict) or "transactions" not in raw:
        raise ConfigError(f"{path}: no 'transactions' mapping (roles to column names) found")
    return raw


def _sources(
    data: DataConfig, mapping: dict[str, Any] | None, files: Sequence[TableInput]
) -> tuple[list[TransactionSource], Any]:
    """Transaction sources paired with the input files, and the cleaning rules."""
    raw_sources = (
        mapping["transactions"] if mapping is not None else [dataclasses.asdict(s) for s in data.transactions]
    )
    if isinstance(raw_sources, dict):
        raw_sources = [raw_sources]
    if len(raw_sources) == 1 and len(files) > 1:
        raw_sources = raw_sources * len(files)
    if len(raw_sources) != len(files):
        raise ConfigError(
            f"{len(files)} transaction file(s) given but the mapping describes {len(raw_sources)} source(s); "
            "give one file per source or a --mapping for your files"
        )
    sources = []
    for i, (raw, file) in enumerate(zip(raw_sources, files, strict=True)):
        label = f"<frame {i}>" if isinstance(file, pd.DataFrame) else str(Path(file).resolve())
        entry = {**dict(raw), "path": label}
        if len(files) > 1 and len({str(r.get("name")) for r in raw_sources}) < len(raw_sources):
            entry["name"] = None  # one stored mapping reused: each file is its own source
        if isinstance(file, pd.DataFrame):
            entry["format"] = "auto"
        sources.append(from_mapping(TransactionSource, entry, f"mapping.transactions.{i}"))
    rules_raw = (mapping or {}).get("cleaning")
    rules = data.cleaning if rules_raw is None else from_mapping(type(data.cleaning), rules_raw, "cleaning")
    return sources, rules


def _side_source(
    data: DataConfig, mapping: dict[str, Any] | None, key: str, table: TableInput, missing: str
) -> Any:
    """The ``key`` mapping (``customers``, ``invoices``) of ``--mapping`` or else of the artifact, pointed at the
    given file or frame; ``missing`` is the error when neither maps it."""
    kind = {"customers": CustomerSource, "invoices": InvoiceSource, "interactions": InteractionSource}[key]
    raw = (mapping or {}).get(key)
    if raw is None:
        stored = getattr(data, key)
        if stored is None:
            raise ConfigError(missing)
        raw = dataclasses.asdict(stored)
    label = f"<{key} frame>" if isinstance(table, pd.DataFrame) else str(Path(table).resolve())
    entry = {**dict(raw), "path": label}
    if isinstance(table, pd.DataFrame):
        entry["format"] = "auto"
    return from_mapping(kind, entry, f"mapping.{key}")


def _customer_source(
    data: DataConfig, mapping: dict[str, Any] | None, customers: TableInput
) -> CustomerSource:
    return _side_source(
        data,
        mapping,
        "customers",
        customers,
        "customers file given but neither the artifact nor --mapping maps customer columns "
        "(add a 'customers: {columns: {...}}' section to the mapping)",
    )


@dataclass
class CleanInputs:
    """Clean transactions, customers, invoices and interactions (paths to parquet files or frames) and the DQ
    summary."""

    transactions: Any
    customers: Any
    report: dict[str, Any]
    invoices: Any = None
    interactions: Any = None

    @property
    def event_tables(self) -> dict[str, Any]:
        """The clean event tables as keyword arguments of the feature calls."""
        return {"invoices": self.invoices, "interactions": self.interactions}


def _event_source(
    data: DataConfig, mapping: dict[str, Any] | None, key: str, table: TableInput | None
) -> Any:
    """The mapping of an event table given to ``segml grade`` (``invoices``, ``interactions``), or None."""
    if table is None:
        return None
    return _side_source(
        data,
        mapping,
        key,
        table,
        f"{key} given but the artifact's model was trained without {key} (data.{key}): grade without them",
    )


def clean_inputs(
    data: DataConfig,
    transactions: TableInput | Sequence[TableInput],
    customers: TableInput | None,
    mapping: dict[str, Any] | None,
    workdir: Path,
    invoices: TableInput | None = None,
    interactions: TableInput | None = None,
    spark: SparkSettings | None = None,
) -> CleanInputs:
    """Map, validate and clean raw inputs with the same rules as ``segml ingest``.

    Files go through :func:`segml.ingest.run_ingest` (clean parquet written under ``workdir``), on the Spark
    session of ``spark`` when it is given; DataFrames through :func:`segml.ingest.ingest_frames` (DuckDB).
    ``invoices`` and ``interactions`` (raw files or frames, optional) are cleaned with the artifact's (or
    ``--mapping``'s) mappings of them and its rules.
    """
    from segml.config import CutoffConfig, ExperimentConfig
    from segml.ingest import ingest_frames, run_ingest

    files = [transactions] if isinstance(transactions, str | Path | pd.DataFrame) else list(transactions)
    if not files:
        raise InputFileError("no transaction input given")
    sources, rules = _sources(data, mapping, files)
    customer_source = _customer_source(data, mapping, customers) if customers is not None else None
    invoice_source = _event_source(data, mapping, "invoices", invoices)
    interaction_source = _event_source(data, mapping, "interactions", interactions)
    frames = [isinstance(f, pd.DataFrame) for f in files]
    if any(frames) and not all(frames):
        raise InputFileError("give transactions either all as files or all as DataFrames")
    if all(frames):
        if customers is not None and not isinstance(customers, pd.DataFrame):
            customers = _read_table(Path(customers))
        if invoices is not None and not isinstance(invoices, pd.DataFrame):
            invoices = _read_table(Path(invoices))
        if interactions is not None and not isinstance(interactions, pd.DataFrame):
            interactions = _read_table(Path(interactions))
        result = ingest_frames(
            files,
            sources,
            rules,
            customers=customers,
            customer_source=customer_source,
            invoices=invoices,
            invoice_source=invoice_source,
            interactions=interactions,
            interaction_source=interaction_source,
            threads=None,
        )
        return CleanInputs(
            result.clean, result.customers, result.report, result.invoices, result.interactions
        )
    for file in files:
        if not Path(file).is_file():
            raise InputFileError(f"{file}: transactions file not found")
    customer_source = _on_disk(customers, customer_source, "customers", workdir)
    invoice_source = _on_disk(invoices, invoice_source, "invoices", workdir)
    interaction_source = _on_disk(interactions, interaction_source, "interactions", workdir)
    cfg = ExperimentConfig(
        data=DataConfig(
            transactions=sources,
            customers=customer_source,
            invoices=invoice_source,
            interactions=interaction_source,
            currency=data.currency,
            cleaning=rules,
        ),
        cutoffs=CutoffConfig(calibration_end=dt.date(1970, 1, 2)),
        name="grade",
        root=workdir,
    )
    if spark is not None:
        cfg.engine, cfg.spark = "spark", spark
    result = run_ingest(cfg)
    return CleanInputs(
        result.transactions_path,
        result.customers_path,
        result.report,
        result.invoices_path,
        result.interactions_path,
    )


def _on_disk(table: TableInput | None, source: Any, what: str, workdir: Path) -> Any:
    """``source`` pointing at a file ingest can read: a missing file is an error naming it, a DataFrame is
    written to ``workdir`` first."""
    if table is None:
        return source
    if isinstance(table, pd.DataFrame):
        path = workdir / f"{what}_input.parquet"
        table.to_parquet(path, index=False)
        return dataclasses.replace(source, path=str(path), format="parquet")
    if not Path(table).is_file():
        raise InputFileError(f"{table}: {what} file not found")
    return source


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)


# --------------------------------------------------------------------------------------------------------------
# Grade


def with_missing_attributes(features: pd.DataFrame, feature_spec: dict[str, Any]) -> pd.DataFrame:
    """Attribute columns of the training population, added as missing when no customers file was given (the
    model sends a missing attribute down its missing branch, as it does for an unseen level)."""
    features = features.copy()
    for column in feature_spec.get("columns", []):
        name = column.get("name")
        if not str(column.get("role", "")).startswith("attribute") or name in features.columns:
            continue
        dtype = "string" if column.get("dtype") == "string" else "float64"
        features[name] = pd.Series(pd.NA if dtype == "string" else np.nan, index=features.index, dtype=dtype)
    return features


def clean_for_grading(
    artifact: GradingArtifact,
    transactions: TableInput | Sequence[TableInput],
    customers: TableInput | None,
    mapping: dict[str, Any] | None,
    folder: Path,
    as_of: dt.date | str | None,
    report: dict[str, Any] | None,
    invoices: TableInput | None = None,
    interactions: TableInput | None = None,
    spark: SparkSettings | None = None,
) -> tuple[CleanInputs, dt.date]:
    """Clean the raw inputs with the artifact's rules into ``folder`` and resolve the grading cutoff (the
    latest clean transaction day unless ``as_of`` is given); refuses input of which no row survives, and
    an artifact trained with invoices or interactions graded without them (their features would all read as
    "none")."""
    from segml.config import parse_date

    for key, given in (("invoices", invoices), ("interactions", interactions)):
        if given is None and getattr(artifact.data, key) is not None:
            raise InputFileError(
                f"artifact {artifact.name} {artifact.version} was trained with {key} (data.{key}): its model "
                f"reads their features — give the {key} file (--{key} FILE)"
            )
    clean = clean_inputs(
        artifact.data, transactions, customers, mapping, folder, invoices, interactions, spark
    )
    if report is not None:
        report.update(clean.report)
    if clean.report.get("rows_kept", 0) == 0:
        raise InputFileError(
            f"transactions: none of the {clean.report.get('rows_in', 0):,} rows survived cleaning "
            f"(quarantined by reason: {clean.report.get('by_reason')})"
        )
    if as_of is None:
        cutoff = dt.date.fromisoformat(clean.report["date_max"])
    elif isinstance(as_of, str):
        cutoff = parse_date(as_of, "--as-of")
    else:
        cutoff = as_of
    return clean, cutoff


def grade(
    artifact_dir: Path | str | GradingArtifact,
    transactions: TableInput | Sequence[TableInput],
    customers: TableInput | None = None,
    as_of: dt.date | str | None = None,
    mapping: dict[str, Any] | Path | str | None = None,
    reasons: bool = True,
    *,
    refit_boundaries: bool = False,
    report: dict[str, Any] | None = None,
    invoices: TableInput | None = None,
    interactions: TableInput | None = None,
) -> pd.DataFrame:
    """Grade customers from raw transactions with a verified artifact.

    Parameters
    ----------
    artifact_dir:
        Artifact folder (verified first: any changed byte refuses) or an already loaded artifact.
    transactions:
        Raw transaction file(s) (CSV / Parquet / whitespace, as the mapping says) or raw DataFrame(s) with
        the user's own column names.
    customers:
        Optional raw customer-attributes file or DataFrame; customers who have not bought yet are graded
        only when given.
    as_of:
        Cutoff (inclusive); default the latest transaction day of the clean input.
    mapping:
        Column mapping (a ``--mapping`` YAML path or its parsed dict, see :func:`read_mapping`); default the
        mapping and cleaning rules stored in the artifact (``spec/ingest.yaml``).
    reasons:
        Add the top-3 reason codes.
    refit_boundaries:
        Re-derive share-based grade boundaries on this population (explicit opt-in).
    report:
        When a dict is given, the ingest DQ summary is stored in it (``rows_in``, ``rows_kept``, ...).
    invoices:
        Raw invoices file or DataFrame; required when the artifact was trained with ``data.invoices`` (its
        payment features are computed from it as known at ``as_of``), refused otherwise.
    interactions:
        Raw interactions file or DataFrame; likewise for a model trained with ``data.interactions``.

    Returns
    -------
    pandas.DataFrame
        The ``grades.parquet`` columns plus ``artifact_version``, sorted by customer_id.
    """
    from segml.features import build_features

    artifact = artifact_dir if isinstance(artifact_dir, GradingArtifact) else load_artifact(artifact_dir)
    if isinstance(mapping, str | Path):
        mapping = read_mapping(mapping)
    with tempfile.TemporaryDirectory(prefix="segml-grade-") as tmp:
        clean, cutoff = clean_for_grading(
            artifact, transactions, customers, mapping, Path(tmp), as_of, report, invoices, interactions
        )
        spec = dataclasses.replace(artifact.feature_config, engine="duckdb")
        undated = artifact.data.customers.undated if artifact.data.customers is not None else "exclude"
        features = build_features(
            clean.transactions,
            cutoff,
            spec,
            clean.customers,
            undated=undated if clean.customers is not None else "exclude",
            **clean.event_tables,
        )
        if clean.customers is None:
            features = with_missing_attributes(features, artifact.feature_spec)
    if features.empty:
        raise InputFileError(f"transactions: no customer has data on or before {cutoff}")
    return artifact.score(features, reasons=reasons, refit_boundaries=refit_boundaries, as_of=cutoff)
