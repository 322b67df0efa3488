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
class TransactionSource:
    """One transaction file and how its columns map to the data contract roles."""

    path: str
    #: role -> column name in this file.  Roles: customer_id, timestamp, amount, order_id, quantity,
    #: unit_price, product_id, channel.  ``amount`` may be omitted when quantity and unit_price are mapped.
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
    #: text encoding of a CSV or whitespace file
    encoding: TextEncoding = "utf-8"


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
class CleaningRules:
    """How ingest decides what to keep. Each rule is stated in the DQ report."""

    #: duplicates: "auto" = an order line repeated under the same order id is a duplicate; rows without
    #: order ids are kept even when identical (they may be real repeat purchases).  "drop_identical" also
    #: quarantines identical rows without order ids; "keep" never quarantines duplicates.
    duplicates: Literal["auto", "drop_identical", "keep"] = "auto"
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
    horizon_days: int = 365
    #: extra cutoffs for backtests (each evaluated over the following ``horizon_days`` or to data end)
    backtest: list[dt.date] = field(default_factory=list)


@dataclass
class FeatureConfig:
    engine: Literal["duckdb", "spark"] = "duckdb"
    #: trailing windows (days) for spend / order counts
    windows: list[int] = field(default_factory=lambda: [30, 90, 180, 365])
    #: window (days) of the recent-vs-previous spend trend
    trend_window: int = 90
    #: months counted in the loyalty "active months" share
    active_months: int = 12
    #: DuckDB resources (fixed for reproducible benchmarks)
    threads: int | None = None
    memory_limit: str | None = None


@dataclass
class ExperimentConfig:
    data: DataConfig
    cutoffs: CutoffConfig
    features: FeatureConfig = field(default_factory=FeatureConfig)
    seed: int = 42
    description: str = ""
    #: sections owned by later pipeline stages; validated by their own modules
    models: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)
    notebooks: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)

    # set by load_experiment, not by YAML
    name: str = field(default="experiment", metadata={"internal": True})
    source_path: Path | None = field(default=None, metadata={"internal": True})
    root: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    @property
    def paths(self) -> ExperimentPaths:
        return ExperimentPaths(self.root, self.name)

    def resolve(self, path: str | Path) -> Path:
        """Resolve a path from the YAML against the project root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)


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
        cfg = from_mapping(ExperimentConfig, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.name = path.stem
    cfg.source_path = path.resolve()
    cfg.root = (root or project_root()).resolve()
    return cfg


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
    except yaml.YAMLError:
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
    unknown = sorted(set(data) - set(fields))
    if unknown:
        path = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"unknown key '{path}' (allowed here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key_path}'")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:  # noqa: C901 - a small type dispatcher
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
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
    """Parse a YAML file; a missing file or bad YAML is a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None


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
