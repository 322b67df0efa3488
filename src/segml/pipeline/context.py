"""The training context every stage shares: the experiment's timeline, the evaluation population at the
calibration end and its realised holdout value.

The time axis of an experiment (all dates inclusive)::

    data start ......... calibration_end | holdout (calibration_end, holdout_end] ... data_end
    └─ models see only this ─────────────┘└─ scored once, after selection ─┘

* Every model and baseline is fit with rows up to ``calibration_end`` only and scored on the holdout spend of
  the customers who had bought by then. Potential-value candidate selection happens inside the calibration
  period (see :mod:`segml.models.potential`).
* The production potential model is then refit with the selected settings on all data up to ``data_end``
  (the last transaction day); it produces the current grades.

This module sits below the stages and the reports: both import it, it imports neither.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segml import features
from segml.config import ExperimentConfig, ModelsConfig, load_experiment, project_root
from segml.errors import ConfigError, SegmlError

#: holdout metric that decides selection and champion / challenger
SELECTION_METRIC = "normalized_gini"


@dataclass
class Timeline:
    data_start: dt.date
    calibration_end: dt.date
    holdout_end: dt.date
    data_end: dt.date
    horizon_days: int

    @property
    def holdout_days(self) -> int:
        return (self.holdout_end - self.calibration_end).days

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_start": self.data_start.isoformat(),
            "calibration_end": self.calibration_end.isoformat(),
            "holdout_end": self.holdout_end.isoformat(),
            "data_end": self.data_end.isoformat(),
            "horizon_days": self.horizon_days,
            "holdout_days": self.holdout_days,
        }


@dataclass(frozen=True)
class FeatureSources:
    """The clean files an experiment's features are built from, as ingest wrote them.

    Every feature call of every stage (training, backtest, grading, monitoring, export) takes its inputs from
    here, so a source the experiment configures (``data.customers``, ``data.invoices``) reaches every model and
    the grades alike (``data.interactions`` likewise). Build with :func:`feature_sources`.
    """

    transactions: Path
    customers: Path | None = None
    invoices: Path | None = None
    interactions: Path | None = None
    #: population rule for customers without a signup date (``data.customers.undated``)
    undated: str = "exclude"

    @property
    def extra(self) -> dict[str, Any]:
        """Keyword arguments of :func:`segml.features.build_features` / ``training_frame`` beyond the
        transactions and customers."""
        return {"undated": self.undated, **self.event_tables}

    @property
    def event_tables(self) -> dict[str, Any]:
        """The event sources alone (what :class:`~segml.models.base.TrainingInput` and the potential
        model's ``fit`` take)."""
        return {"invoices": self.invoices, "interactions": self.interactions}


def feature_sources(cfg: ExperimentConfig) -> FeatureSources:
    """The experiment's clean inputs; a configured event source whose clean file is missing is a one-line
    error (run ``segml ingest``), a configured customers file that ingest did not write is left out."""
    paths = cfg.paths
    customers = paths.clean_customers if cfg.data.customers and paths.clean_customers.is_file() else None
    events: dict[str, Path | None] = {}
    for key, clean in (("invoices", paths.clean_invoices), ("interactions", paths.clean_interactions)):
        events[key] = None
        if getattr(cfg.data, key) is not None:
            if not clean.is_file():
                raise SegmlError(
                    f"{clean}: clean {key} not found (data.{key} is configured) — run `segml ingest {cfg.label}` "
                    "first"
                )
            events[key] = clean
    undated = cfg.data.customers.undated if cfg.data.customers is not None else "exclude"
    return FeatureSources(paths.clean_transactions, customers, undated=undated, **events)


@dataclass
class TrainContext:
    """Inputs shared by the stages. Build with :func:`load_context`."""

    cfg: ExperimentConfig
    timeline: Timeline
    transactions_path: Path
    customers_path: Path | None
    #: features at calibration_end of customers who bought by then (the evaluation population)
    calibration_features: pd.DataFrame
    #: net spend of those customers in the holdout (aligned by position)
    holdout_spend: np.ndarray
    #: every clean input of the features (transactions and customers repeated from the fields above)
    sources: FeatureSources | None = None
    #: the last feature table built in this run, by cutoff and feature settings (the grade and monitor stages
    #: both read data_end's)
    _features: dict[tuple[dt.date, str], pd.DataFrame] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = FeatureSources(self.transactions_path, self.customers_path)

    @property
    def feature_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every feature call of this experiment (population rule, event sources)."""
        assert self.sources is not None
        return self.sources.extra

    @property
    def event_tables(self) -> dict[str, Any]:
        """Event sources for the potential model's ``fit`` / ``fit_production``."""
        assert self.sources is not None
        return self.sources.event_tables

    def features_at(self, cutoff: dt.date) -> pd.DataFrame:
        """Every customer's features at ``cutoff`` from all of the experiment's sources. The last table built is
        kept, so consecutive calls for one cutoff build it once; each call gets its own frame (a column added in
        one stage does not reach another)."""
        key = (cutoff, repr((self.cfg.features, self.transactions_path, self.customers_path, self.sources)))
        if key not in self._features:
            self._features.clear()  # keep one table: a big customer base cannot hold one per backtest cutoff
            self._features[key] = features.build_features(
                self.transactions_path, cutoff, self.cfg.features, self.customers_path, **self.feature_kwargs
            )
        return self._features[key].copy(deep=False)

    @property
    def models(self) -> ModelsConfig:
        return self.cfg.models

    @property
    def eval_ids(self) -> np.ndarray:
        return self.calibration_features["customer_id"].to_numpy()

    @property
    def processed(self) -> Path:
        return self.cfg.paths.processed

    @property
    def reports(self) -> Path:
        return self.cfg.paths.reports

    def predictions_file(self, family: str) -> Path:
        return self.processed / "holdout_predictions" / f"{family}.parquet"

    def model_report_file(self, family: str) -> Path:
        return self.reports / "models" / f"{family}.json"

    def model_state_file(self, name: str) -> Path:
        return self.processed / "models" / f"{name}.json"


def read_dq_report(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ingest stage's DQ report; a one-line error when ``segml ingest`` has not run."""
    path = cfg.paths.dq_report
    if not path.is_file() or not cfg.paths.clean_transactions.is_file():
        raise SegmlError(
            f"{cfg.paths.clean_transactions}: clean transactions not found — run `segml ingest {cfg.label}` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_timeline(cfg: ExperimentConfig) -> Timeline:
    """The experiment's timeline from the cutoffs and the clean data's first and last day."""
    dq = read_dq_report(cfg)
    data_start = dt.date.fromisoformat(dq["date_min"])
    data_end = dt.date.fromisoformat(dq["date_max"])
    cal_end = cfg.cutoffs.calibration_end
    holdout_end = min(cfg.cutoffs.holdout_end or data_end, data_end)
    if not data_start < cal_end < holdout_end:
        raise ConfigError(
            f"cutoffs.calibration_end {cal_end} must lie inside the data period {data_start}..{data_end} "
            f"and before the holdout end {holdout_end}"
        )
    return Timeline(data_start, cal_end, holdout_end, data_end, cfg.cutoffs.horizon_days)


def load_context(cfg: ExperimentConfig) -> TrainContext:
    """Read the clean data, fix the timeline and build the evaluation population and its holdout spend."""
    timeline = load_timeline(cfg)
    cal_end = timeline.calibration_end
    sources = feature_sources(cfg)
    transactions, customers = sources.transactions, sources.customers
    feats = features.build_features(transactions, cal_end, cfg.features, customers, **sources.extra)
    feats = feats[feats["has_purchases"].astype(bool)].reset_index(drop=True)
    # The holdout spend is observed over (calibration_end, holdout_end]; horizon_days sets what the money
    # models forecast, so the two must agree for money metrics to mean anything.
    labels = features.build_labels(transactions, cal_end, timeline.holdout_days)
    spend = (
        feats[["customer_id"]]
        .merge(labels[["customer_id", "future_spend"]], on="customer_id", how="left")["future_spend"]
        .fillna(0.0)
        .to_numpy(dtype=float)
    )
    return TrainContext(cfg, timeline, transactions, customers, feats, spend, sources)


def evaluation_key(cfg: ExperimentConfig, metric: str = SELECTION_METRIC) -> str:
    """What the registry metric was measured on: metric name and holdout window."""
    holdout_end = cfg.cutoffs.holdout_end.isoformat() if cfg.cutoffs.holdout_end else "data_end"
    return f"{metric}@holdout:{cfg.cutoffs.calibration_end.isoformat()}..{holdout_end}"


def current_features(cfg: ExperimentConfig) -> pd.DataFrame:
    """Features of every customer at the data end (what the current grades are computed from)."""
    timeline = load_timeline(cfg)
    sources = feature_sources(cfg)
    return features.build_features(
        sources.transactions, timeline.data_end, cfg.features, sources.customers, **sources.extra
    )


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
    """
    path = Path(experiment)
    root = project_root()
    if not path.is_absolute() and not path.is_file():
        path = root / path
    extra = [f"seed={int(seed)}"] if seed is not None else []
    cfg = load_experiment(path, [*overrides, *extra])
    if configure_tracking and not os.environ.get("MLFLOW_TRACKING_URI"):
        from segml import tracking

        tracking.configure(cfg.root, cfg.mlflow_experiment)
    return cfg


__all__ = [
    "SELECTION_METRIC",
    "FeatureSources",
    "Timeline",
    "current_features",
    "evaluation_key",
    "feature_sources",
    "TrainContext",
    "load_context",
    "load_timeline",
    "open_experiment",
    "read_dq_report",
]
