"""The model-family interface every segml model follows, so the pipeline, the comparison and production
scoring treat all families alike.

A model family is a scikit-learn style estimator (``BaseEstimator``: parameters set in ``__init__`` and
nothing else done there, learned state in trailing-underscore attributes, ``check_is_fitted`` before
predicting) with:

- ``fit(X, y) -> self``;
- ``predict_value(X) -> numpy.ndarray``: one score per row of the feature table ``X``, higher = more valuable;
- ``predicts_money``: True when ``predict_value`` is money over the forecast horizon (the money metrics —
  decile MAPE, total error — apply), False for a pure ranking score (the RFM score);
- ``to_dict()`` / classmethod ``from_dict(state)``: the fitted model as JSON-able values (no pickle), with a
  ``"family"`` key naming its registry family (:mod:`segml.models.registry`), so
  :func:`segml.models.registry.load_model` rebuilds any family from its state.

Models raise ``ValueError`` naming the offending parameter (:class:`InvalidParameter` carries the name as an
attribute), never a configuration error with a YAML path: the caller that read the YAML maps the parameter to
its key (``models.<family>.<parameter>``).

One documented deviation: :class:`~segml.models.potential.PotentialValueModel` learns from transactions over a
lattice of cutoffs, not from one feature matrix, so its ``fit`` takes a :class:`TrainingInput` (transactions,
calibration end, feature config, customers) as ``X`` and ignores ``y``; its ``predict_value`` takes a feature
table like every other family.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

    from segml.config import FeatureConfig

__all__ = ["InvalidParameter", "ModelFamily", "TrainingInput"]


@runtime_checkable
class ModelFamily(Protocol):
    """What every model family provides (``isinstance(model, ModelFamily)`` checks the members exist)."""

    #: True when :meth:`predict_value` is money over the horizon; False for a ranking score
    predicts_money: bool

    def fit(self, X: Any, y: Any = None) -> ModelFamily:
        """Learn from ``X`` (a feature table; :class:`TrainingInput` for the potential model) and ``y``."""
        ...

    def predict_value(self, X: pd.DataFrame) -> np.ndarray:
        """One score per row of the feature table ``X`` (higher = more valuable)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The fitted model as JSON-able values, with a ``"family"`` key."""
        ...

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ModelFamily:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        ...


@dataclass(frozen=True)
class TrainingInput:
    """What :meth:`PotentialValueModel.fit <segml.models.potential.PotentialValueModel.fit>` learns from, as one
    ``X``: it builds its own features at a lattice of cutoffs from the transactions.

    Attributes
    ----------
    transactions:
        Clean transactions (parquet path or DataFrame).
    calibration_end:
        Last day the model may see (inclusive).
    feature_config:
        Feature configuration (default :class:`~segml.config.FeatureConfig`).
    customers:
        Optional clean customers (path or DataFrame) with attribute columns.
    start:
        First day of history to use; default the first transaction day.
    invoices:
        Optional clean invoices (``data.invoices``): adds the payment features, as known at each cutoff.
    interactions:
        Optional clean interactions (``data.interactions``): adds the contact features, as known at each cutoff.
    """

    transactions: str | Path | pd.DataFrame
    calibration_end: dt.date
    feature_config: FeatureConfig | None = None
    customers: str | Path | pd.DataFrame | None = None
    start: dt.date | None = None
    invoices: str | Path | pd.DataFrame | None = None
    interactions: str | Path | pd.DataFrame | None = None


class InvalidParameter(ValueError):
    """A model parameter has an invalid value.

    ``parameter`` is the constructor parameter's name, so a caller can point at the configuration key it
    came from (e.g. ``models.potential.<parameter>``).
    """

    def __init__(self, model: str, parameter: str, problem: str) -> None:
        self.model = model
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"{model}: {parameter} {problem}")
