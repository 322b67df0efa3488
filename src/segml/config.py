"""Paths and the typed experiment configuration.

One YAML file drives an experiment. It is loaded into frozen-ish dataclasses by :func:`load_experiment`,
which rejects unknown keys (naming the full key path, e.g. ``data.cleaning.zero_amout``), wrong types, and
missing required values with a :class:`~segml.errors.ConfigError`. ``--set dotted.key=value`` overrides are
applied to the raw mapping before validation, so they are checked exactly like the file.

Paths inside the YAML are resolved relative to the project root (the directory holding ``pyproject.toml``
or, failing that, the current directory), so experiments run the same from any working directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from segml.errors import ConfigError

# --------------------------------------------------------------------------------------------------------------
# Project paths


def project_root() -> Path:
    """The project root: ``$SEGML_ROOT`` if set, else the nearest parent with ``pyproject.toml``, else cwd."""
    env = os.environ.get("SEGML_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "experiments").is_dir():
            return candidate
    return here


@dataclass(frozen=True)
class ExperimentPaths:
    """Where one experiment's outputs live. ``name`` is the YAML file name without extension."""

    root: Path
    name: str

    @property
    def interim(self) -> Path:  # clean transactions, quarantine, DQ report (customer-level)
        return self.root / "data" / "interim" / self.name

    @property
    def processed(self) -> Path:  # features, grades (customer-level)
        return self.root / "data" / "processed" / self.name

    @property
    def reports(self) -> Path:  # aggregates only
        return self.root / "reports" / self.name

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def clean_transactions(self) -> Path:
        return self.interim / "transactions.parquet"

    @property
    def clean_customers(self) -> Path:
        return self.interim / "customers.parquet"

    @property
    def clean_invoices(self) -> Path:
        return self.interim / "invoices.parquet"

    @property
    def quarantine_invoices(self) -> Path:
        return self.interim / "quarantine_invoices.parquet"

    @property
    def clean_interactions(self) -> Path:
        return self.interim / "interactions.parquet"

    @property
    def quarantine_interactions(self) -> Path:
        return self.interim / "quarantine_interactions.parquet"

    @property
    def quarantine(self) -> Path:
        return self.interim / "quarantine.parquet"

    @property
    def quarantine_customers(self) -> Path:
        return self.interim / "quarantine_customers.parquet"

    @property
    def dq_report(self) -> Path:
        return self.interim / "dq_report.json"

    def features_file(self, as_of: dt.date) -> Path:
        return self.processed / f"features_{as_of.isoformat()}.parquet"


# --------------------------------------------------------------------------------------------------------------
# Configuration sections.  Field defaults are the documented defaults; see experiments/*.yaml.

FileFormat = Literal["auto", "csv", "parquet", "whitespace"]
#: text encodings DuckDB reads natively (CSV and whitespace files)
TextEncoding = Literal["utf-8", "latin-1", "utf-16"]
#: text that exports write for an empty field: missing in every role (``cleaning.null_values``)
DEFAULT_NULL_VALUES = ("", "NULL", "null", "NaN", "nan", "None", "NA", "N/A", "#N/A", "NaT")


@dataclass
class SourceJoin:
    """A lookup table joined onto a transaction source (``data.transactions[].joins[]``).

    Each row of the source takes ``columns`` from the lookup row whose ``key`` equals the row's ``on_column``
    (both compared as trimmed text). Joins apply in order, so a later join's ``on_column`` may name a column an
    earlier join brought in. The key must be unique in the lookup; a row without a match is quarantined as
    ``unmatched_lookup``.
    """

    path: str
    #: column of the table joined so far (the source's own columns plus earlier joins' columns); named
    #: ``on_column`` because YAML reads a bare ``on:`` key as the boolean true
    on_column: str
    #: column of the lookup file holding the same values; unique in that file
    key: str
    #: lookup columns brought in; the role mapping, filters and duplicate key may then name them
    columns: list[str]
    format: FileFormat = "auto"
    delimiter: str | None = None
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"

    def check(self, where: str) -> None:
        if not self.columns:
            raise ConfigError(f"{where}.columns: name at least one column to bring in from {self.path}")
        seen: set[str] = set()
        for i, column in enumerate(self.columns):
            if column.lower() in seen:
                raise ConfigError(f"{where}.columns.{i}: column '{column}' is listed twice")
            seen.add(column.lower())


@dataclass
class TransactionSource:
    """One transaction file and how its columns map to the data contract roles."""

    path: str
    #: role -> column name in this file.  Roles: customer_id, timestamp, amount, order_id, quantity,
    #: unit_price, product_id, channel, and cost (line cost) or margin (line margin), not both.  ``amount`` may
    #: be omitted when quantity and unit_price are mapped.
    columns: dict[str, str]
    format: FileFormat = "auto"
    #: name recorded in the ``source`` column of clean transactions (default: file stem)
    name: str | None = None
    #: strptime-style format for text timestamps (e.g. "%Y%m%d"); None lets DuckDB parse ISO dates
    timestamp_format: str | None = None
    delimiter: str | None = None
    #: treat order ids starting with this prefix as cancellations (e.g. "C" in Online Retail)
    cancellation_prefix: str | None = None
    #: product codes that are not merchandise (postage, fees, manual adjustments) -> quarantined
    non_product_codes: list[str] = field(default_factory=list)
    #: regular expression on product_id for non-product lines
    non_product_pattern: str | None = None
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"
    #: lookups joined onto this file before the role mapping (see :class:`SourceJoin`)
    joins: list[SourceJoin] = field(default_factory=list)
    #: row filter: keep only rows whose column (trimmed text) is one of the values; column -> values
    where: dict[str, list[str]] = field(default_factory=dict)
    #: row filter: leave out rows whose column (trimmed text) is one of the values; column -> values
    exclude: dict[str, list[str]] = field(default_factory=dict)

    def check(self, where: str) -> None:
        for section, filters in (("where", self.where), ("exclude", self.exclude)):
            for column, values in filters.items():
                if not values:
                    raise ConfigError(f"{where}.{section}.{column}: list at least one value")


@dataclass
class CustomerSource:
    """Optional customer attributes file (one row per customer)."""

    path: str
    columns: dict[str, str]  # role -> column; must include customer_id; signup_date optional
    format: FileFormat = "auto"
    #: attribute columns (contract names after mapping) joined into features; default: every mapped role
    #: except customer_id and signup_date
    attributes: list[str] | None = None
    timestamp_format: str | None = None
    delimiter: str | None = None
    #: customers without a signup date: "exclude" = in the population at a cutoff only once they have bought
    #: (a CRM snapshot lists customers who first bought later); "include" = at every cutoff (warns)
    undated: Literal["exclude", "include"] = "exclude"
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"


def _check_roles(
    where: str, columns: dict[str, str], roles: tuple[str, ...], required: tuple[str, ...]
) -> None:
    """An event file's role mapping names only ``roles`` and maps every one of ``required``."""
    unknown = [role for role in columns if role not in roles]
    if unknown:
        raise ConfigError(f"{where}.columns: unknown role '{unknown[0]}' (roles: {', '.join(roles)})")
    missing = [role for role in required if role not in columns]
    if missing:
        listed = f"roles: {', '.join(roles)}" if required == roles else f"required: {', '.join(required)}"
        raise ConfigError(f"{where}.columns: role '{missing[0]}' must be mapped ({listed})")


#: roles of an invoices file; every one must be mapped (an empty ``paid`` field means unpaid)
INVOICE_ROLES = ("invoice_id", "customer_id", "issued", "due", "paid", "amount")


@dataclass
class InvoiceSource:
    """Optional invoices file (``data.invoices``): one row per invoice with its issue, due and payment dates.

    Every role of :data:`INVOICE_ROLES` is mapped: ``invoice_id``, ``customer_id``, ``issued`` and ``due``
    (dates), ``paid`` (date; empty = not paid yet) and ``amount`` (invoice total, currency).
    """

    path: str
    #: role -> column name in this file
    columns: dict[str, str]
    format: FileFormat = "auto"
    #: strptime-style format of the text date columns (e.g. "%d.%m.%Y"); None lets DuckDB parse ISO dates
    timestamp_format: str | None = None
    delimiter: str | None = None
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"

    def check(self, where: str) -> None:
        _check_roles(where, self.columns, INVOICE_ROLES, INVOICE_ROLES)


#: roles of an interactions file: ``customer_id``, ``timestamp`` and ``kind`` are required, the rest optional
INTERACTION_ROLES = ("customer_id", "timestamp", "kind", "channel", "outcome", "score")
#: roles an interactions file must map
INTERACTION_REQUIRED_ROLES = ("customer_id", "timestamp", "kind")
#: the kinds of interaction the features know; a file's own kind values map onto them through ``kinds:``
INTERACTION_KINDS = ("complaint", "ticket", "campaign_send", "campaign_response", "login", "visit", "survey")
#: a ``kinds:`` target for event types segml does not model: such rows are set aside (quarantine reason
#: ``ignored_kind``, counted, never refused as bad data)
IGNORE_KIND = "ignore"


@dataclass
class InteractionSource:
    """Optional interactions file (``data.interactions``): one row per contact event of a customer.

    Roles (:data:`INTERACTION_ROLES`): ``customer_id``, ``timestamp`` and ``kind`` must be mapped; ``channel``,
    ``outcome`` (text) and ``score`` (a number, e.g. a survey score) are optional. A row's kind value (trimmed,
    compared ignoring case) is looked up in ``kinds``; a value not listed there counts as itself when it is one
    of :data:`INTERACTION_KINDS`, else the row is quarantined as ``unknown_kind``.
    """

    path: str
    #: role -> column name in this file
    columns: dict[str, str]
    #: the file's kind values -> segml kinds (:data:`INTERACTION_KINDS`), e.g. {Beschwerde: complaint}
    kinds: dict[str, str] = field(default_factory=dict)
    format: FileFormat = "auto"
    #: strptime-style format of the text timestamps (e.g. "%d.%m.%Y %H:%M"); None lets DuckDB parse ISO dates
    timestamp_format: str | None = None
    delimiter: str | None = None
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"

    def check(self, where: str) -> None:
        _check_roles(where, self.columns, INTERACTION_ROLES, INTERACTION_REQUIRED_ROLES)
        seen: dict[str, str] = {}
        for value, kind in self.kinds.items():
            if kind not in (*INTERACTION_KINDS, IGNORE_KIND):
                raise ConfigError(
                    f"{where}.kinds.{value}: {kind!r} is not a segml kind (kinds: {', '.join(INTERACTION_KINDS)}; "
                    f"or {IGNORE_KIND} to set the rows aside)"
                )
            folded = str(value).strip().lower()
            if not folded:
                raise ConfigError(f"{where}.kinds: an empty kind value cannot be mapped")
            if folded in seen and seen[folded] != kind:
                raise ConfigError(
                    f"{where}.kinds.{value}: same value as {seen[folded]!r} ignoring case and blanks, "
                    "mapped to another kind"
                )
            seen[folded] = kind

    def kind_map(self) -> dict[str, str]:
        """Folded kind value (trimmed, lower case) -> segml kind: the ``kinds:`` entries, then every segml kind
        as itself unless ``kinds:`` maps that word to something else."""
        mapping = {kind: kind for kind in INTERACTION_KINDS}
        mapping.update({str(value).strip().lower(): kind for value, kind in self.kinds.items()})
        return mapping


@dataclass
class OutlierRule:
    """Per-row outlier handling. Rows are flagged (``is_outlier``), never removed, unless
    ``quarantine_above`` is set: a fixed per-row rule that does not depend on other rows."""

    #: flag rows whose |amount| exceeds this fixed value
    flag_above: float | None = None
    #: else flag rows whose log-amount is more than ``flag_mad`` robust deviations above the median
    flag_mad: float = 5.0
    #: quarantine rows whose |amount| exceeds this fixed value (reason ``outlier_amount``)
    quarantine_above: float | None = None


@dataclass
class DuplicateKey:
    """``cleaning.duplicates: {key: [...]}``: rows of one source repeating these columns are duplicates."""

    #: column names of the (joined) source table, e.g. [order_id, payment_sequential]
    key: list[str]

    def check(self, where: str) -> None:
        if not self.key:
            raise ConfigError(f"{where}.key: name at least one column")


@dataclass
class CleaningRules:
    """How ingest decides what to keep. Each rule is stated in the DQ report."""

    #: duplicates: "auto" = an order line repeated under the same order id is a duplicate; rows without
    #: order ids are kept even when identical (they may be real repeat purchases).  "drop_identical" also
    #: quarantines identical rows without order ids; "keep" never quarantines duplicates.  ``{key: [col, …]}``:
    #: rows of one source repeating the key columns are duplicates (the first in file order is kept; rows
    #: with an empty key column are kept), e.g. [order_id, payment_sequential] for split payments.
    duplicates: Literal["auto", "drop_identical", "keep"] | DuplicateKey = "auto"
    #: zero-amount rows: "keep" (a real, free transaction: counts as a purchase) or "quarantine"
    zero_amount: Literal["keep", "quarantine"] = "keep"
    #: returns (negative amounts / cancellations): "net" keeps them to net against spend; "quarantine"
    returns: Literal["net", "quarantine"] = "net"
    #: rows after this date are ``future_timestamp``; default: the day ingest runs
    max_date: dt.date | None = None
    #: rows before this date are ``timestamp_out_of_range``
    min_date: dt.date = dt.date(1970, 1, 1)
    #: if more than this share of a file's rows fail to parse in one column, the file is refused as a
    #: whole (wrong column mapped or wrong type) instead of quarantining nearly everything
    max_bad_share: float = 0.5
    outliers: OutlierRule = field(default_factory=OutlierRule)
    #: field values (after trimming blanks) that mean "missing" in every role and every file; an empty
    #: field is always missing
    null_values: list[str] = field(default_factory=lambda: list(DEFAULT_NULL_VALUES))


@dataclass
class DataConfig:
    transactions: list[TransactionSource]
    customers: CustomerSource | None = None
    #: optional invoices file (payment behaviour features); see :class:`InvoiceSource`
    invoices: InvoiceSource | None = None
    #: optional interactions file (contact, campaign and complaint features); see :class:`InteractionSource`
    interactions: InteractionSource | None = None
    currency: str = "USD"
    cleaning: CleaningRules = field(default_factory=CleaningRules)


@dataclass
class CutoffConfig:
    """Time axis of the experiment.

    ``calibration_end`` is the last day models may see when scored on the holdout; the holdout is
    ``(calibration_end, holdout_end]``. ``horizon_days`` is the forecast horizon of potential value.
    """

    calibration_end: dt.date
    holdout_end: dt.date | None = None
    horizon_days: int = field(default=365, metadata={"ge": 1})
    #: extra cutoffs for backtests (each evaluated over the following ``horizon_days`` or to data end)
    backtest: list[dt.date] = field(default_factory=list)


@dataclass
class FeatureConfig:
    engine: Literal["duckdb", "spark"] = "duckdb"
    #: trailing windows (days) for spend / order counts
    windows: list[int] = field(default_factory=lambda: [30, 90, 180, 365])
    #: window (days) of the recent-vs-previous spend trend
    trend_window: int = field(default=90, metadata={"ge": 1})
    #: months counted in the loyalty "active months" share
    active_months: int = field(default=12, metadata={"ge": 1})
    #: DuckDB resources (fixed for reproducible benchmarks)
    threads: int | None = None
    memory_limit: str | None = None


#: engine of the whole run: the top-level ``engine:`` key (``features.engine`` is its older alias)
Engine = Literal["duckdb", "spark"]
#: Spark master URLs segml accepts: local[N] / local[*], standalone, YARN, Kubernetes
_SPARK_MASTER = re.compile(
    r"local\[([1-9][0-9]*|\*)\]|spark://[^\s:/,]+:[0-9]+(,[^\s:/,]+:[0-9]+)*|yarn|k8s://\S+"
)
_SPARK_TIME_ZONE = "spark.sql.session.timeZone"


@dataclass
class SparkSettings:
    """``spark:`` section: the session built when ``engine: spark`` (see docs/features.md, "Spark")."""

    #: ``local[N]``, ``local[*]``, ``spark://host:port``, ``yarn`` or ``k8s://...``
    master: str = "local[2]"
    app_name: str = "segml"
    #: extra Spark settings passed to the session builder (``spark.executor.memory: 4g``, ...)
    conf: dict[str, str] = field(default_factory=dict)
    #: ``spark.sql.warehouse.dir`` (default: Spark's own, ``spark-warehouse`` in the working directory)
    warehouse_dir: str | None = None

    def check(self, where: str) -> None:
        if not _SPARK_MASTER.fullmatch(self.master):
            raise ConfigError(
                f"{where}.master: {self.master!r} is not a Spark master (local[N], local[*], "
                "spark://host:port, yarn or k8s://...)"
            )
        zone = self.conf.get(_SPARK_TIME_ZONE)
        if zone is not None and zone != "UTC":
            raise ConfigError(
                f"{where}.conf.{_SPARK_TIME_ZONE}: {zone!r} — segml runs Spark in UTC so that dates match "
                "DuckDB; remove the setting"
            )


# --------------------------------------------------------------------------------------------------------------
# models: section


@dataclass
class PotentialSettings:
    """LightGBM potential-value model (``segml.models.potential.PotentialValueModel``)."""

    objective: Literal["auto", "tweedie", "hurdle"] = "auto"
    n_estimators: int | None = field(default=None, metadata={"ge": 1})
    max_estimators: int = field(default=400, metadata={"ge": 1})
    categorical: Literal["auto", "drop"] = "auto"
    max_levels: int = field(default=50, metadata={"ge": 2})
    seasonality: Literal["auto", "flat"] = "auto"
    num_threads: int = field(default=1, metadata={"ge": 1})
    #: candidates with monotone (+1) constraints on money and count features: chosen on validation (auto)
    monotone: Literal["auto", "increasing", "none"] = "auto"
    #: blend the forecast with the past-spend run-rate and BG/NBD + Gamma-Gamma, weights chosen on validation
    blend: Literal["auto", "none"] = "auto"
    #: recency calibration (lapsed customers not above what similar lapsed customers realise), adopted on
    #: validation when it helps there (auto)
    lapse: Literal["auto", "none"] = "auto"


@dataclass
class ClusteringSettings:
    method: Literal["kmeans", "gmm"] = "kmeans"
    k_min: int = field(default=3, metadata={"ge": 2})
    k_max: int = field(default=8, metadata={"ge": 2})
    selection: Literal["silhouette", "bic"] | None = None
    silhouette_sample: int = field(default=5000, metadata={"ge": 10})
    features: list[str] | None = None

    def check(self, where: str) -> None:
        if self.k_min > self.k_max:
            raise ConfigError(f"{where}.k_min: {self.k_min} is above {where}.k_max {self.k_max}")


@dataclass
class TreeSettings:
    max_depth: int = field(default=3, metadata={"ge": 1})
    min_samples_leaf: float = field(default=0.01, metadata={"gt": 0})
    target: Literal["auto", "log1p", "raw"] = "auto"
    #: depth of the tree distilled from the final grades (rules for the sales team)
    rules_max_depth: int = field(default=4, metadata={"ge": 1})


@dataclass
class BaselineSettings:
    rfm_bins: int = field(default=5, metadata={"ge": 2})
    btyd_penalizer: float = field(default=0.0, metadata={"ge": 0})
    gg_penalizer: float = field(default=0.0, metadata={"ge": 0})


@dataclass
class EvaluationSettings:
    #: paired bootstrap replicates for the Gini-difference CI
    n_boot: int = field(default=1000, metadata={"ge": 10})
    #: run the backtest over cutoffs.backtest in `segml train`
    backtest: bool = True


@dataclass
class ModelsConfig:
    potential: PotentialSettings = field(default_factory=PotentialSettings)
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    tree: TreeSettings = field(default_factory=TreeSettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)


# --------------------------------------------------------------------------------------------------------------
# tracking:, notebooks:, export:, monitor: sections


@dataclass
class TrackingSettings:
    """``tracking:`` section. ``experiment`` defaults to the YAML's name, ``registered_model`` to
    ``<experiment>-grading`` (see :meth:`ExperimentConfig.tracking_settings`)."""

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


@dataclass
class ExportSettings:
    """``export:`` section: artifact name (default the experiment name) and version (default: next patch)."""

    name: str | None = None
    version: str | None = None


@dataclass
class MonitorSettings:
    """``monitor:`` section: alert thresholds of ``segml monitor`` (and of the monitoring stage).

    An alert fires when a value is strictly above its threshold."""

    #: PSI above which a feature (or the score) is reported as shifted
    psi_threshold: float = field(default=0.25, metadata={"ge": 0})
    #: PSI of the score above which the score is reported as shifted
    score_psi_threshold: float = field(default=0.2, metadata={"ge": 0})
    #: share of customers changing grade between two steps above which it is reported
    update_rate_threshold: float = field(default=0.3, metadata={"ge": 0, "le": 1})
    #: days of realised value checked after a monitoring cutoff (default: the training horizon)
    realised_horizon_days: int | None = field(default=None, metadata={"ge": 1})
    #: drop of the realised normalized Gini below the training (holdout) Gini above which it is reported
    gini_drop_threshold: float = field(default=0.05, metadata={"ge": 0})
    #: rise (between two steps) of the share of the two best grades' customers carrying a risk flag (pays late,
    #: overdue invoices, complaints; only with invoices or interactions) above which it is reported
    flag_rise_threshold: float = field(default=0.05, metadata={"ge": 0, "le": 1})


@dataclass
class ExperimentConfig:
    data: DataConfig
    cutoffs: CutoffConfig
    features: FeatureConfig = field(default_factory=FeatureConfig)
    #: engine for ingest, features and scoring (``features.engine`` is an alias)
    engine: Engine = "duckdb"
    spark: SparkSettings = field(default_factory=SparkSettings)
    seed: int = 42
    description: str = ""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    #: the raw ``policy:`` mapping, merged over the shipped defaults by ``GradePolicy.from_config``; it is
    #: validated against the ``GradePolicy`` dataclass when the experiment is loaded
    policy: dict[str, Any] = field(default_factory=dict)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    notebooks: NotebookSettings = field(default_factory=NotebookSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)

    # set by load_experiment, not by YAML
    name: str = field(default="experiment", metadata={"internal": True})
    source_path: Path | None = field(default=None, metadata={"internal": True})
    root: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    #: the ``--set`` strings applied when loading
    overrides: list[str] = field(default_factory=list, metadata={"internal": True})

    def __post_init__(self) -> None:
        # a configuration built in code may name the engine in either place: one of them saying spark is
        # enough (a loaded YAML has them equal already, see _resolve_engine)
        if self.engine == "spark" or getattr(self.features, "engine", "duckdb") == "spark":
            self.engine = "spark"
            if getattr(self.features, "engine", None) != "spark" and isinstance(self.features, FeatureConfig):
                self.features = dataclasses.replace(self.features, engine="spark")

    @property
    def paths(self) -> ExperimentPaths:
        return ExperimentPaths(self.root, self.name)

    def resolve(self, path: str | Path) -> Path:
        """Resolve a path from the YAML against the project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def mlflow_experiment(self) -> str:
        """The MLflow experiment name (``tracking.experiment``, default the experiment's name)."""
        return self.tracking.experiment or self.name

    @property
    def registered_model(self) -> str:
        """The registry model name (``tracking.registered_model``, default ``<experiment>-grading``)."""
        return self.tracking.registered_model or f"{self.name}-grading"

    @property
    def label(self) -> str:
        """The experiment file as written in messages: relative to the project root when inside it."""
        if self.source_path is None:
            return f"experiments/{self.name}.yaml"
        try:
            return self.source_path.relative_to(self.root).as_posix()
        except ValueError:
            return str(self.source_path)


# --------------------------------------------------------------------------------------------------------------
# Loading and validation


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, root: Path | None = None
) -> ExperimentConfig:
    """Load and validate an experiment YAML.

    Parameters
    ----------
    path:
        The experiment file. Its stem becomes the experiment name used in every output path.
    overrides:
        ``dotted.key=value`` strings (values parsed as YAML scalars/lists), applied before validation.
    root:
        Project root for relative paths; default :func:`project_root`.
    """
    path = Path(path)
    raw = read_yaml(path, "experiment file")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    try:
        _resolve_engine(raw)
        cfg = from_mapping(ExperimentConfig, raw, "")
        check_experiment(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.name = path.stem
    cfg.source_path = path.resolve()
    cfg.root = (root or project_root()).resolve()
    cfg.overrides = list(overrides or [])
    return cfg


def _resolve_engine(raw: dict[str, Any]) -> None:
    """Top-level ``engine`` and its alias ``features.engine``: whichever is set names both; set to different
    values they are refused."""
    features = raw.get("features")
    alias = features.get("engine") if isinstance(features, dict) else None
    engine = raw.get("engine")
    if engine is not None and alias is not None and engine != alias:
        raise ConfigError(
            f"engine: {engine!r} differs from features.engine: {alias!r} (its alias); set only one of them"
        )
    chosen = engine if engine is not None else alias
    if chosen is not None:
        raw["engine"] = chosen
        if isinstance(features, dict) or features is None:
            raw["features"] = {**(features or {}), "engine": chosen}


def check_experiment(cfg: ExperimentConfig) -> None:
    """Checks across sections, at load for every command: the policy against its dataclass, and every setting
    that names a feature against the features this configuration builds.

    Raises
    ------
    ConfigError
        Naming the key path (e.g. ``policy.value_feature``) and what is wrong.
    """
    # late imports: both modules build on this one
    from segml.features import NUMERIC_FEATURES
    from segml.policy import GradePolicy

    with_margin = any(
        role in source.columns for source in cfg.data.transactions for role in ("cost", "margin")
    )
    built = set(
        NUMERIC_FEATURES(
            cfg.features,
            with_margin=with_margin,
            with_invoices=cfg.data.invoices is not None,
            with_interactions=cfg.data.interactions is not None,
        )
    )
    measure = cfg.policy.get("value_measure") if isinstance(cfg.policy, dict) else None
    if measure == "margin" and not with_margin:
        raise ConfigError(
            "policy.value_measure: margin needs a 'cost' or 'margin' role in data.transactions[].columns "
            "(none is mapped)"
        )
    if measure is None and with_margin:
        measure = "margin"  # a mapped cost makes margin the value measure unless the policy says revenue
        cfg.policy = {**cfg.policy, "value_measure": measure}
    default_value = GradePolicy.from_config({}).value_feature
    if "value_feature" not in cfg.policy:
        # the default current-value measure is spend (or margin) over the longest window this configuration
        # builds
        longest = max(cfg.features.windows)
        if measure == "margin":
            cfg.policy = {**cfg.policy, "value_feature": f"margin_{longest}d"}
        elif default_value not in built:
            cfg.policy = {**cfg.policy, "value_feature": f"spend_{longest}d"}
    policy = GradePolicy.from_config(cfg.policy)
    windows = ", ".join(str(w) for w in cfg.features.windows)
    named = {"policy.value_feature": policy.value_feature, "policy.loyalty.feature": policy.loyalty.feature}
    for i, name in enumerate(cfg.models.clustering.features or []):
        named[f"models.clustering.features.{i}"] = name
    for where, name in named.items():
        if name and name not in built:
            raise ConfigError(
                f"{where}: feature {name!r} is not built by this configuration (features.windows: [{windows}])"
            )


def raw_experiment(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The experiment mapping after overrides, before validation (for logging as MLflow params)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides or []:
        apply_override(raw, item)
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place. List indices are written as numbers
    (``data.transactions.0.path=…``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, value_text = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() != "" else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an impossible date such as 2025-02-30
        value = value_text
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: no list item {where}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"--set {key}: {where} is not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: no list item {key}")
        node[int(last)] = value
    else:
        node[last] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and type mismatches raise
    :class:`ConfigError` naming the dotted key path."""
    label = where or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        path = f"{where}.{unknown[0]}" if where else str(unknown[0])
        hint = " — YAML reads a bare on/off/yes/no key as true/false" if isinstance(unknown[0], bool) else ""
        raise ConfigError(f"unknown key '{path}' (allowed here: {', '.join(sorted(fields))}){hint}")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key_path}'")
        if name in kwargs:
            _check_range(kwargs[name], f.metadata, key_path)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None) if dataclasses.is_dataclass(obj) else None
    if callable(check):
        check(where or "<top level>")
    relation = _RELATIONS.get(cls)
    if relation is not None:
        relation(obj, where or "<top level>")
    return obj


def _check_range(value: Any, metadata: Any, where: str) -> None:
    """Bounds declared in a field's metadata (``ge``, ``gt``, ``le``), applied to a number or to each number
    of a list."""
    if not metadata or value is None:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        if "ge" in metadata and v < metadata["ge"]:
            raise ConfigError(f"{where}: {v!r} is below the minimum {metadata['ge']}")
        if "gt" in metadata and v <= metadata["gt"]:
            raise ConfigError(f"{where}: {v!r} must be above {metadata['gt']}")
        if "le" in metadata and v > metadata["le"]:
            raise ConfigError(f"{where}: {v!r} is above the maximum {metadata['le']}")


def _check_cleaning(rules: Any, where: str) -> None:
    if not 0.0 <= rules.max_bad_share <= 1.0:
        raise ConfigError(f"{where}.max_bad_share: {rules.max_bad_share!r} is not a share in [0, 1]")
    if rules.max_date is not None and rules.min_date >= rules.max_date:
        raise ConfigError(
            f"{where}.min_date: {rules.min_date} is not before {where}.max_date {rules.max_date}"
        )


def _check_cutoffs(cutoffs: Any, where: str) -> None:
    if cutoffs.holdout_end is not None and cutoffs.holdout_end <= cutoffs.calibration_end:
        raise ConfigError(
            f"{where}.holdout_end: {cutoffs.holdout_end} is not after {where}.calibration_end "
            f"{cutoffs.calibration_end}"
        )


def _check_features(features: Any, where: str) -> None:
    bad = [w for w in features.windows if w < 1]
    if bad:
        raise ConfigError(f"{where}.windows: {bad[0]!r} is not a positive number of days")
    if not features.windows:
        raise ConfigError(f"{where}.windows: at least one window is needed")


#: relations between the keys of one section, checked after the section is built
_RELATIONS: dict[type, Any] = {}


def _register_relations() -> None:
    _RELATIONS.update(
        {CleaningRules: _check_cleaning, CutoffConfig: _check_cutoffs, FeatureConfig: _check_features}
    )


def _coerce(tp: Any, value: Any, where: str) -> Any:  # noqa: C901 - a small type dispatcher
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors, shaped = [], []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
                shaped.append(dataclasses.is_dataclass(arg) == isinstance(value, dict))
        if len(errors) > 1 and any(shaped):  # the message of the alternative shaped like the value
            errors = [e for e, s in zip(errors, shaped, strict=True) if s]
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if tp is Any:
        return value
    if tp is dt.date:
        return as_date(value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; a missing file, bad YAML or an impossible date is a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    except ValueError as exc:  # PyYAML builds dates itself: 2025-02-30 raises here
        raise ConfigError(f"{path}: impossible value ({exc})") from None


def as_date(value: Any, where: str) -> dt.date:
    """A date from a date, a datetime / pandas Timestamp (its day) or a YYYY-MM-DD string; else ConfigError."""
    if isinstance(value, dt.datetime):  # pandas.Timestamp is a datetime
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a date YYYY-MM-DD, got {value!r}")


def parse_date(text: str, what: str = "date") -> dt.date:
    """Parse a YYYY-MM-DD command-line date with a clear error."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what}: expected YYYY-MM-DD, got {text!r}") from None


_register_relations()
