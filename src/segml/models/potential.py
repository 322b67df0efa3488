"""Potential value: a LightGBM forecast of each customer's net spend over the horizon after a cutoff.

How it is trained (details and measured results in ``docs/potential.md``):

- **Stacked cutoffs, per-day rate labels.** Features are built at a lattice of cutoffs inside the training
  period (spacing derived from the period's length). Each row's label is the customer's net spend in the
  window after its cutoff — the rest of the training period, at most ``horizon_days`` — divided by the
  seasonal weight of that window (its length in days when the season profile is flat), and the row is
  weighted by the window's length. The model therefore learns a per-day spend rate from every window, and
  the forecast is ``rate × Σ_{days of the horizon} profile(day)``.
- **Season-aware money.** ``profile`` is a month-of-year profile of total spend estimated from the
  training data when it spans at least 12 full months (with a log-linear trend removed), flat otherwise, so
  a rate learned from windows around a seasonal peak is not repeated over a full year. Seasonal money and
  count features are divided by the profile's mean over the days they cover (:func:`deseasonalise`).
- **Zero-inflated target.** Candidates compete: a tweedie booster on the rate (with or without the window
  length as an input), and a hurdle ``P(spend > 0 in the window) × E[rate | spend > 0]`` (binary × gamma).
- **Selection inside the training period.** A half-size copy of the task (validation cutoff in the
  middle of the training period, or one horizon before its end when it is long enough) is fit on cutoffs
  before the validation cutoff, with labels clipped there; every candidate is trained with early stopping
  on the spend in (validation cutoff, training end] and scored there at a grid of tree counts, after an
  order-preserving power recalibration of its spread fitted on the same fold. The highest validation Gini
  within the calibration limits wins and is refit on all cutoffs with labels up to the training end.
  Nothing after the training end is read: :meth:`PotentialValueModel.fit` drops later transactions
  before anything else happens.
- **Production.** :meth:`PotentialValueModel.fit_production` refits the selected settings on all data up
  to the latest date (no new selection).

Everything is seeded and LightGBM runs with ``deterministic=True`` and a fixed thread count, so two fits on
the same data give bit-identical boosters. Models serialise to JSON-able dicts (booster text, no pickle).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from segml import catalog
from segml.config import FeatureConfig
from segml.errors import ConfigError, InputFileError
from segml.models.base import InvalidParameter, TrainingInput

__all__ = [
    "PotentialValueModel",
    "cutoff_lattice",
    "deseasonalise",
    "estimate_season_profile",
    "season_weight",
]

#: version tag of :meth:`PotentialValueModel.to_dict` output
SERIAL_FORMAT = "segml.potential_value/1"

#: the model families; "auto" lets validation choose
OBJECTIVES = ("tweedie", "hurdle")
#: what the model forecasts over the horizon
TARGETS = ("spend", "margin")

#: columns of the feature table that are identifiers or labels, never model inputs (feature catalog)
_NON_FEATURE_COLUMNS = catalog.non_feature_columns()

#: model column holding the length (days) of the window a rate is averaged over (hurdle candidates)
WINDOW_COLUMN = "window_days"

#: candidates compared on the validation fold: (family, window_days column). The hurdle always gets the
#: window length: both P(active in the window) and the conditional per-day rate depend on it strongly.
#: Each family is tried with and without monotone constraints on past spend and purchase counts. (A tweedie
#: booster with the window length as an input was a third family; it was never the best on the validation
#: folds of CDNOW, Ta Feng or synthetic data and is no longer tried: docs/potential.md.)
_CANDIDATES = tuple(
    (family, window, monotone)
    for family, window in (("tweedie", False), ("hurdle", True))
    for monotone in (True, False)
)

#: boosters of each family
_BOOSTER_NAMES = {"tweedie": ("tweedie",), "hurdle": ("active", "spend")}

#: tree counts scored on the validation fold (the best one is the early-stopping point)
_ITERATION_GRID = (10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 125, 150, 200, 250, 300, 400)

#: early stopping: rounds without improvement of the validation metric before training stops
_PATIENCE = 50

#: target number of cutoffs in the lattice: the spacing is the training span divided by this
_CUTOFFS_PER_SPAN = 20


# --------------------------------------------------------------------------------------------------------------
# Time axis: cutoff lattice and season profile


def cutoff_lattice(start: dt.date, label_end: dt.date, anchor: dt.date, step_days: int) -> list[dt.date]:
    """Cutoffs ``anchor + k·step_days`` (k any integer) with at least ``step_days`` of history after
    ``start`` and at least ``step_days`` of label window before ``label_end``.

    Parameters
    ----------
    start:
        First day of the data used.
    label_end:
        Last day labels may use (inclusive).
    anchor:
        A date the lattice passes through (the validation cutoff), so that the cutoffs of the selection
        task and of the final fit coincide and their features are built once.
    step_days:
        Spacing of the lattice.

    Returns
    -------
    list of datetime.date
        Sorted cutoffs; empty when the period is shorter than two steps.
    """
    first = start + dt.timedelta(days=step_days)
    last = label_end - dt.timedelta(days=step_days)
    if last < first:
        return []
    k_min = math.ceil((first - anchor).days / step_days)
    k_max = math.floor((last - anchor).days / step_days)
    return [anchor + dt.timedelta(days=k * step_days) for k in range(k_min, k_max + 1)]


def _monthly_spend(transactions: pd.DataFrame, start: dt.date, end: dt.date) -> pd.Series:
    """Net spend per calendar month for the full months inside [start, end]."""
    month = transactions["timestamp"].dt.to_period("M")
    totals = transactions["amount"].groupby(month).sum()
    first_full = pd.Period(start, "M") if start.day == 1 else pd.Period(start, "M") + 1
    last_month = pd.Period(end, "M")
    last_full = last_month if (end + dt.timedelta(days=1)).day == 1 else last_month - 1
    months = pd.period_range(first_full, last_full, freq="M") if last_full >= first_full else []
    return totals.reindex(months, fill_value=0.0)


def estimate_season_profile(transactions: pd.DataFrame, start: dt.date, end: dt.date) -> np.ndarray:
    """Month-of-year profile of total net spend per day, mean 1 over a year.

    With at least 12 full months in [start, end] the log of each month's spend per day is regressed on a
    linear trend (only when 13+ months make it identifiable) plus month-of-year effects; the exponentiated
    month effects, rescaled to a day-weighted mean of 1, are the profile. Months without spend, or fewer than
    12 full months, give a flat profile (all ones): no seasonality is assumed that the data cannot show.

    Parameters
    ----------
    transactions:
        Clean transactions (``timestamp``, ``amount``), already limited to the training period.
    start, end:
        The training period (inclusive).

    Returns
    -------
    numpy.ndarray
        12 multipliers, January first.
    """
    flat = np.ones(12)
    monthly = _monthly_spend(transactions, start, end)
    if len(monthly) < 12 or (monthly <= 0).any():
        return flat
    days = monthly.index.days_in_month.to_numpy(dtype=float)
    log_rate = np.log(monthly.to_numpy(dtype=float) / days)
    month_of_year = monthly.index.month.to_numpy() - 1
    design = np.zeros((len(monthly), 12))
    design[np.arange(len(monthly)), month_of_year] = 1.0
    if len(monthly) >= 13:
        trend = np.arange(len(monthly), dtype=float)
        design = np.column_stack([design, trend - trend.mean()])
    coefficients, *_ = np.linalg.lstsq(design, log_rate, rcond=None)
    profile = np.exp(coefficients[:12] - coefficients[:12].max())
    days_in_month = np.array([31, 28.25, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    # rounded: the least-squares solver may differ in the last bit between runs, the model must not
    return np.round(profile / np.average(profile, weights=days_in_month), 10)


def season_weight(profile: np.ndarray, cutoffs: Any, window_days: Any) -> np.ndarray:
    """Σ of the daily profile over the days (cutoff, cutoff + window_days], per row.

    Equals ``window_days`` for a flat profile. Computed once per distinct (cutoff, window) pair.

    Parameters
    ----------
    profile:
        12 month-of-year multipliers.
    cutoffs:
        Cutoff date per row (anything ``pandas.to_datetime`` accepts).
    window_days:
        Window length per row (scalar or array).

    Returns
    -------
    numpy.ndarray
        Seasonal weight per row.
    """
    day = _one_day(cutoffs)
    windows = np.asarray(window_days, dtype=float)
    if day is not None and windows.ndim == 0 and len(cutoffs) > 1:
        # one cutoff and one window, the scoring case: compute it once, no per-row date parsing
        return np.full(len(cutoffs), season_weight(profile, [day], float(windows))[0])
    cutoff_days = pd.to_datetime(pd.Series(np.asarray(cutoffs).ravel())).dt.normalize()
    windows = np.broadcast_to(windows, (len(cutoff_days),))
    pairs = pd.DataFrame({"cutoff": cutoff_days.to_numpy(), "window": windows})
    distinct = pairs.drop_duplicates().reset_index(drop=True)
    weights = np.empty(len(distinct))
    for i, (cutoff, window) in enumerate(distinct.itertuples(index=False)):
        days = pd.date_range(cutoff + pd.Timedelta(days=1), periods=int(window), freq="D")
        weights[i] = profile[days.month.to_numpy() - 1].sum()
    lookup = distinct.assign(weight=weights)
    return pairs.merge(lookup, on=["cutoff", "window"], how="left")["weight"].to_numpy()


#: feature columns measured over the trailing window in their name ("spend_90d", "orders_90d"), deseasonalised
#: over that window (feature catalog: seasonality "window"; group 2 is the window in days)
_WINDOW_FEATURE = catalog.seasonal_window_pattern()

#: feature columns that accumulate over the customer's whole history (feature catalog: seasonality "history")
_HISTORY_TOTALS = catalog.history_totals()


def _one_day(values: Any) -> pd.Timestamp | None:
    """The day (normalised) when every value is the same non-missing naive datetime64, else None.

    One integer comparison pass instead of per-row date parsing; anything else (dates as objects, time zones,
    missing values, several values) returns None and callers take their general path.
    """
    array = values.to_numpy() if isinstance(values, pd.Series | pd.Index) else np.asarray(values)
    if array.dtype.kind != "M" or array.ndim != 1 or array.size == 0:
        return None
    ticks = array.view(np.int64)
    if ticks[0] == np.iinfo(np.int64).min or not (ticks == ticks[0]).all():
        return None
    return pd.Timestamp(array[0]).normalize()


def _seasonal_adjustment(
    features: pd.DataFrame, profile: np.ndarray, columns: Any = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(values, divisor)`` per column :func:`deseasonalise` changes (of ``columns``, default all): the
    adjusted column is ``values / divisor``.

    Empty when nothing changes. The frame itself is not copied and the quotients are left to the caller (the
    model matrix writes them straight into place).
    """
    if np.allclose(profile, 1.0) or features.empty or "as_of" not in features.columns:
        return {}
    wanted = list(features.columns) if columns is None else [c for c in columns if c in features.columns]
    day = _one_day(features["as_of"])
    if day is not None:  # one cutoff (the scoring case): one exposure lookup table over 1..4000 days
        first_day = day - pd.Timedelta(days=4000)
        calendar = pd.date_range(first_day, day, freq="D")
        end_index = np.int64((day - first_day).days + 1)
    else:
        as_of = pd.to_datetime(features["as_of"]).dt.normalize()
        first_day = as_of.min() - pd.Timedelta(days=4000)
        calendar = pd.date_range(first_day, as_of.max(), freq="D")
        end_index = ((as_of - first_day).dt.days + 1).to_numpy()
    cumulative = np.concatenate([[0.0], np.cumsum(profile[calendar.month.to_numpy() - 1])])
    age = features["t_days"].to_numpy(dtype=float) + 1 if "t_days" in features.columns else None

    if day is not None:
        span = np.arange(4001, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            table = (cumulative[end_index] - cumulative[np.maximum(end_index - span, 0)]) / span
        # day counts as exposure() clips them; min(window, age) commutes with the clip for whole windows
        age_days = None if age is None else np.clip(np.nan_to_num(age, nan=1.0), 1, 4000).astype(int)

        cache: dict[float | None, np.ndarray] = {}  # spend_90d and orders_90d share one exposure

        def exposure_of(window: float | None) -> np.ndarray:
            if window in cache:
                return cache[window]
            if window is None:
                result = table.take(age_days)
            elif age_days is not None and float(window).is_integer() and 1 <= window <= 4000:
                result = table.take(np.minimum(age_days, int(window)))
            else:
                covered = np.full(len(features), window) if age is None else np.minimum(window, age)
                result = table.take(np.clip(np.nan_to_num(covered, nan=1.0), 1, 4000).astype(int))
            cache[window] = result
            return result

    else:

        def exposure(days: np.ndarray) -> np.ndarray:
            days = np.clip(np.nan_to_num(days, nan=1.0), 1, 4000).astype(int)
            return (cumulative[end_index] - cumulative[np.maximum(end_index - days, 0)]) / days

        def exposure_of(window: float | None) -> np.ndarray:
            if window is None:
                return exposure(age)
            full = np.full(len(features), window)
            return exposure(full if age is None else np.minimum(full, age))

    adjusted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in wanted:
        match = _WINDOW_FEATURE.match(column)
        if match:
            adjusted[column] = (features[column].to_numpy(dtype=float), exposure_of(float(match.group(2))))
    if age is not None:
        history = None
        for column in _HISTORY_TOTALS:
            if column in wanted:
                history = exposure_of(None) if history is None else history
                adjusted[column] = (features[column].to_numpy(dtype=float), history)
    return adjusted


def deseasonalise(features: pd.DataFrame, profile: np.ndarray) -> pd.DataFrame:
    """Divide seasonal money and count features by the mean profile over the days they cover.

    A customer seen just after the peak season has inflated recent spend; without this the model would read
    the season as a higher personal rate. ``spend_{w}d`` / ``orders_{w}d`` are divided by the mean profile
    over ``(as_of − w, as_of]`` (only the days since the first purchase, when fewer), the history totals
    (``monetary_total``, ``n_purchase_days``, …) by the mean profile since the first purchase. A flat
    profile returns ``features`` unchanged.

    Parameters
    ----------
    features:
        Feature table with ``as_of`` and ``t_days``.
    profile:
        12 month-of-year multipliers.

    Returns
    -------
    pandas.DataFrame
        A copy with the adjusted columns (or ``features`` itself when the profile is flat).
    """
    if np.allclose(profile, 1.0) or features.empty or "as_of" not in features.columns:
        return features
    changed = _seasonal_adjustment(features, profile)
    adjusted = features.copy()
    for column, (values, divisor) in changed.items():
        adjusted[column] = values / divisor
    return adjusted


# --------------------------------------------------------------------------------------------------------------
# Inputs


def _read_transactions(transactions: str | Path | pd.DataFrame, data_end: dt.date) -> pd.DataFrame:
    """Clean transactions on or before ``data_end`` (inclusive): later rows never enter the model."""
    if isinstance(transactions, pd.DataFrame):
        frame = transactions
        where = "transactions frame"
    else:
        path = Path(transactions)
        if not path.is_file():
            raise InputFileError(f"{path}: clean transactions file not found")
        frame = pd.read_parquet(path)
        where = str(path)
    missing = [c for c in ("customer_id", "timestamp", "amount") if c not in frame.columns]
    if missing:
        raise InputFileError(f"{where}: missing column(s) {', '.join(missing)} ({len(frame):,} rows)")
    timestamps = pd.to_datetime(frame["timestamp"])
    keep = (timestamps < pd.Timestamp(data_end) + pd.Timedelta(days=1)).to_numpy()
    kept = frame.loc[keep].copy()
    kept["timestamp"] = timestamps[keep]
    if kept.empty:
        raise InputFileError(f"{where}: no transactions on or before {data_end} (of {len(frame):,} rows)")
    return kept.reset_index(drop=True)


def _history(
    transactions: str | Path | pd.DataFrame, data_end: dt.date, start: dt.date | None
) -> tuple[pd.DataFrame, dt.date]:
    """Transactions in [start, data_end] and the start actually used (default: first transaction day)."""
    history = _read_transactions(transactions, data_end)
    start = start or history["timestamp"].min().date()
    history = history[history["timestamp"] >= pd.Timestamp(start)].reset_index(drop=True)
    return history, start


def _features_module():
    from segml import features  # imported lazily: the feature engine is heavy and optional at import

    return features


# --------------------------------------------------------------------------------------------------------------
# Design matrix


#: rows per block when the model matrix is laid out row-major (a block of ~30 columns stays in cache)
_MATRIX_BLOCK_ROWS = 8_192


@dataclass(frozen=True)
class _Design:
    """How a feature table becomes the model's float matrix."""

    feature_names: tuple[str, ...]
    categorical_levels: dict[str, list[str]]

    def matrix(
        self,
        features: pd.DataFrame,
        adjusted: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        extra: tuple[np.ndarray, ...] = (),
        order: Literal["C", "F"] = "C",
    ) -> np.ndarray:
        """The model matrix of ``features``: the columns ``adjusted`` names get ``values / divisor`` (see
        :func:`_seasonal_adjustment`), ``extra`` columns are appended; row-major (``order="C"``) or
        column-major (``"F"``)."""
        adjusted = adjusted or {}
        n_rows = len(features)
        width = len(self.feature_names) + len(extra)
        if width == 0:
            return np.empty((n_rows, 0))
        columns = [self._values(name, features, adjusted) for name in self.feature_names]
        columns.extend(extra)
        if order == "F":
            matrix = np.empty((n_rows, width), order="F")
            for j, values in enumerate(columns):
                if isinstance(values, tuple):
                    np.divide(*values, out=matrix[:, j])
                else:
                    matrix[:, j] = values
            return matrix
        # row-major, the layout LightGBM reads fastest, filled one block of rows at a time so the strided
        # writes stay in cache: about twice as fast as np.column_stack on a million rows, same values
        matrix = np.empty((n_rows, width))
        for start in range(0, n_rows, _MATRIX_BLOCK_ROWS):
            stop = min(start + _MATRIX_BLOCK_ROWS, n_rows)
            block = matrix[start:stop]
            for j, values in enumerate(columns):
                if isinstance(values, tuple):  # seasonally adjusted: the quotient is written in place
                    np.divide(values[0][start:stop], values[1][start:stop], out=block[:, j])
                else:
                    block[:, j] = values[start:stop]
        return matrix

    def _values(
        self, name: str, features: pd.DataFrame, adjusted: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One model column as floats (category codes or the numeric feature), or ``(values, divisor)``."""
        if name in self.categorical_levels:
            levels = pd.Index(self.categorical_levels[name])
            values = features[name].astype("string") if name in features.columns else None
            codes = (
                levels.get_indexer(values.fillna("\0missing")).astype(float)
                if values is not None
                else np.full(len(features), -1.0)
            )
            codes[codes < 0] = np.nan  # unseen level or missing: LightGBM's missing branch
            return codes
        if name in adjusted:
            return adjusted[name]
        if name in features.columns:
            return pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float)
        raise InputFileError(
            f"feature table: missing model column '{name}' ({len(features):,} rows); "
            "build it with the same feature config as the model"
        )

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names) if name in self.categorical_levels]


def _design_from_frame(
    frame: pd.DataFrame, numeric_features: list[str], categorical: str, max_levels: int
) -> _Design:
    """Model columns: the contract's numeric features present in ``frame``, ``has_purchases``, and (when
    ``categorical='auto'``) the attribute columns as LightGBM categoricals with at most ``max_levels``
    levels (more levels than that, e.g. free-text ids, are dropped)."""
    names = [c for c in numeric_features if c in frame.columns]
    if "has_purchases" in frame.columns:
        names.append("has_purchases")
    levels: dict[str, list[str]] = {}
    if categorical == "auto":
        known = set(names) | _NON_FEATURE_COLUMNS | {"has_purchases"}
        for column in frame.columns:
            if column in known or pd.api.types.is_numeric_dtype(frame[column]):
                continue
            values = frame[column].dropna().astype("string").unique()
            if 0 < len(values) <= max_levels:
                names.append(column)
                levels[column] = sorted(str(v) for v in values)
    return _Design(tuple(names), levels)


# --------------------------------------------------------------------------------------------------------------
# Boosters


#: money and count features whose effect on the forecast may only be non-decreasing (``monotone="auto"``)
_MONOTONE_INCREASING = re.compile(
    r"^(monetary_total|gross_spend|n_purchase_days|n_orders|frequency|spend_\d+d|orders_\d+d)$"
)


def monotone_constraints(names: list[str]) -> list[int]:
    """LightGBM ``monotone_constraints`` for model columns: +1 for past spend and purchase counts (more of
    them never lowers the forecast, all else equal), 0 for everything else."""
    return [1 if _MONOTONE_INCREASING.match(name) else 0 for name in names]


def _base_params(random_state: int, num_threads: int, n_rows: int) -> dict[str, Any]:
    return {
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": int(max(20, n_rows // 2000)),
        "min_sum_hessian_in_leaf": 1e-3,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "max_bin": 255,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "seed": random_state,
        "verbosity": -1,
    }


@dataclass(frozen=True)
class _Columns:
    """The columns a booster sees: the customer features of a :class:`_Design` with their money and count
    columns divided by the seasonal exposure of the period they cover (see :func:`deseasonalise`), then
    (when ``window_feature``) ``window_days``, the length of the window the rate is averaged over: the label
    window in training, the horizon when forecasting."""

    design: _Design
    window_feature: bool
    profile: tuple[float, ...]

    @property
    def names(self) -> list[str]:
        return [*self.design.feature_names, *([WINDOW_COLUMN] if self.window_feature else [])]

    @property
    def categorical(self) -> list[int]:
        return self.design.categorical_indices

    def matrix(self, features: pd.DataFrame, window_days: Any, order: Literal["C", "F"] = "C") -> np.ndarray:
        """Model matrix (row-major by default; LightGBM predicts from either layout with the same values)."""
        adjusted = _seasonal_adjustment(features, np.asarray(self.profile), self.design.feature_names)
        extra = ()
        if self.window_feature:
            extra = (np.broadcast_to(np.asarray(window_days, dtype=float), (len(features),)),)
        return self.design.matrix(features, adjusted, extra, order)


@dataclass
class _Target:
    """Rows a booster family learns from (or is validated on): model matrix, per-day rate, row weight."""

    matrix: np.ndarray
    rate: np.ndarray
    weight: np.ndarray

    def subset(self, rows: np.ndarray) -> _Target:
        return _Target(self.matrix[rows], self.rate[rows], self.weight[rows])


def _train(
    params: dict[str, Any],
    train: _Target,
    label: np.ndarray,
    columns: _Columns,
    rounds: int,
    validation: tuple[_Target, np.ndarray] | None,
) -> lgb.Booster:
    """Train one booster; with ``validation`` (rows, labels) stop ``_PATIENCE`` rounds after the normalized
    Gini of the booster's prediction against its validation labels last improved (all trees trained up to
    then are kept, so later counts can still be scored).

    The Gini is used instead of the objective's own deviance because it ignores the level: the validation
    window is longer than most training windows, so its rates and activity shares sit at another level and
    deviance-based stopping would stop after a handful of trees."""

    def dataset(target: _Target, labels: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            target.matrix,
            label=labels,
            weight=target.weight,
            feature_name=columns.names,
            categorical_feature=columns.categorical or "auto",
            reference=reference,
            params={"verbosity": -1, "max_bin": params["max_bin"], "seed": params["seed"]},
        )

    train_set = dataset(train, label)
    if validation is None:
        return lgb.train(params, train_set, num_boost_round=int(rounds))
    valid_set = dataset(validation[0], validation[1], reference=train_set)
    return lgb.train(
        {**params, "metric": "None"},
        train_set,
        num_boost_round=int(rounds),
        valid_sets=[valid_set],
        feval=_gini_metric,
        callbacks=[lgb.early_stopping(_PATIENCE, verbose=False)],
        keep_training_booster=True,  # keep the trees after the best iteration: they are scored too
    )


def _gini_metric(predicted: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
    from segml.evaluate import normalized_gini

    return "normalized_gini", normalized_gini(data.get_label(), predicted), True


@dataclass
class _Fitted:
    """The boosters of one candidate and their tree counts."""

    objective: str
    boosters: dict[str, lgb.Booster]
    rounds: dict[str, int]

    def rate(self, matrix: np.ndarray) -> np.ndarray:
        if self.objective == "tweedie":
            return self.boosters["tweedie"].predict(matrix, num_iteration=self.rounds["tweedie"])
        active = self.boosters["active"].predict(matrix, num_iteration=self.rounds["active"])
        spend = self.boosters["spend"].predict(matrix, num_iteration=self.rounds["spend"])
        return active * spend


def _fit_candidate(
    objective: str,
    columns: _Columns,
    train: _Target,
    rounds: dict[str, int],
    random_state: int,
    num_threads: int,
    validation: _Target | None = None,
    monotone: bool = False,
) -> _Fitted:
    """Fit one family. Tweedie: the rate. Hurdle: ``P(rate > 0)`` (binary, all rows) and ``E[rate | rate > 0]``
    (gamma, positive rows). With ``validation`` each booster stops early on its own validation metric."""
    params = _base_params(random_state, num_threads, len(train.rate))
    if monotone:
        constraints = monotone_constraints(columns.names)
        if any(constraints):
            params["monotone_constraints"] = constraints
    if objective == "tweedie":
        booster = _train(
            {**params, "objective": "tweedie", "tweedie_variance_power": 1.5},
            train,
            train.rate,
            columns,
            rounds["tweedie"],
            None if validation is None else (validation, validation.rate),
        )
        return _Fitted(objective, {"tweedie": booster}, dict(rounds))
    positive = train.rate > 0
    active = _train(
        {**params, "objective": "binary"},
        train,
        positive.astype(float),
        columns,
        rounds["active"],
        None if validation is None else (validation, (validation.rate > 0).astype(float)),
    )
    spend_params = {**params, "objective": "gamma"}
    spend_params["min_data_in_leaf"] = int(max(20, positive.sum() // 2000))
    positive_train = train.subset(positive)
    if validation is None:
        spend_validation = None
    else:
        positive_validation = validation.subset(validation.rate > 0)
        spend_validation = (positive_validation, positive_validation.rate)
    spend = _train(
        spend_params, positive_train, positive_train.rate, columns, rounds["spend"], spend_validation
    )
    return _Fitted(objective, {"active": active, "spend": spend}, dict(rounds))


# --------------------------------------------------------------------------------------------------------------
# Training frames


@dataclass
class _Frame:
    """Stacked training rows: features at each cutoff, per-day rate label and window weight."""

    features: pd.DataFrame
    rate: np.ndarray
    weight: np.ndarray
    spend: np.ndarray


def _events(invoices: Any, interactions: Any) -> dict[str, Any]:
    """The event tables given, as keyword arguments of the feature calls."""
    return {
        name: table
        for name, table in (("invoices", invoices), ("interactions", interactions))
        if table is not None
    }


def _numeric(spec: FeatureConfig, events: dict[str, Any], target: str = "spend") -> list[str]:
    """The numeric feature columns the model may read: the transaction features, those of the event sources
    given, and the margin features when it forecasts margin."""
    return list(
        _features_module().NUMERIC_FEATURES(
            spec,
            with_margin=target == "margin",
            with_invoices="invoices" in events,
            with_interactions="interactions" in events,
        )
    )


def _stack(
    transactions: pd.DataFrame,
    cutoffs: list[dt.date],
    horizon_days: int,
    label_end: dt.date,
    spec: FeatureConfig,
    customers: str | Path | pd.DataFrame | None,
    profile: np.ndarray,
    events: dict[str, Any] | None = None,
    target: str = "spend",
) -> _Frame:
    """Features at every cutoff with the net spend (≥ 0) in (cutoff, min(cutoff + horizon, label_end)],
    turned into a per-day rate (spend / seasonal weight of the window) weighted by the window's length.
    ``events`` (``invoices`` / ``interactions``: clean tables, optional) add their features, each as known at its
    cutoff."""
    stacked = _features_module().training_frame(
        transactions, cutoffs, horizon_days, spec, customers, label_end=label_end, **(events or {})
    )
    label = "future_spend" if target == "spend" else _features_module().MARGIN_LABEL
    if label not in stacked.columns:
        raise ConfigError(
            "models.potential.target: margin needs a 'cost' or 'margin' role in data.transactions[].columns "
            "(the clean transactions carry no margin)"
        )
    spend = stacked[label].to_numpy(dtype=float).clip(min=0.0)
    window = stacked["label_days"].to_numpy(dtype=float)
    seasonal = season_weight(profile, stacked["cutoff"], window)
    return _Frame(stacked, spend / seasonal, window, spend)


# --------------------------------------------------------------------------------------------------------------
# Selection


def _score(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from segml.evaluate import decile_mape, decile_table, normalized_gini, top_k_capture, total_error

    mape = decile_mape(decile_table(actual, predicted))
    return {
        "gini": normalized_gini(actual, predicted),
        "top20_capture": top_k_capture(actual, predicted, 0.2),
        "decile_mape": float("nan") if mape is None else mape,
        "total_error": total_error(actual, predicted),
    }


def _staged_predictions(
    booster: lgb.Booster, matrix: np.ndarray, grid: list[int], logistic: bool
) -> dict[int, np.ndarray]:
    """Predictions (response scale: sigmoid when ``logistic``, else exp) after each tree count in ``grid``,
    adding the raw scores of successive blocks of trees so that every tree is evaluated once."""
    raw = np.zeros(matrix.shape[0])
    done = 0
    staged = {}
    for count in grid:
        raw = raw + booster.predict(matrix, start_iteration=done, num_iteration=count - done, raw_score=True)
        done = count
        staged[count] = _sigmoid(raw) if logistic else np.exp(raw)
    return staged


def _fit_spread(rate: np.ndarray, actual_rate: np.ndarray) -> dict[str, float] | None:
    """Order-preserving recalibration of the spread of predicted rates, fitted on the validation fold.

    Few, shrunken trees compress predictions towards the mean (top deciles under-, bottom deciles
    over-forecast). With equal-count deciles of the prediction, ``log(mean actual)`` is regressed on
    ``log(mean predicted)``; the slope ``exponent`` (clipped to [0.5, 2]) stretches the rates as
    ``level · reference · (rate / reference)^exponent``, where ``reference`` is the mean validation
    rate and ``level`` keeps the mean validation prediction unchanged (the level stays the model's own).
    Returns None when fewer than three deciles have positive actual and predicted means.
    """
    from segml.evaluate import decile_table

    table = decile_table(actual_rate, rate)
    usable = (table["mean_actual"] > 0) & (table["mean_pred"] > 0)
    if usable.sum() < 3:
        return None
    x = np.log(table.loc[usable, "mean_pred"].to_numpy(dtype=float))
    y = np.log(table.loc[usable, "mean_actual"].to_numpy(dtype=float))
    if np.ptp(x) <= 0:
        return None
    slope = float(np.dot(x - x.mean(), y - y.mean()) / np.dot(x - x.mean(), x - x.mean()))
    # rounded: BLAS-backed fits can differ in the last bit between runs, the model must not
    exponent = round(float(np.clip(slope, 0.5, 2.0)), 10)
    reference = float(rate.mean())
    stretched = (rate / reference) ** exponent
    return {"exponent": exponent, "reference": reference, "level": float(1.0 / stretched.mean())}


def _apply_spread(rate: np.ndarray, spread: dict[str, float] | None) -> np.ndarray:
    if spread is None:
        return rate
    return spread["level"] * spread["reference"] * (rate / spread["reference"]) ** spread["exponent"]


def _iteration_grid(trained: int, best: int) -> list[int]:
    """Tree counts scored on the validation fold: the fixed grid up to the trees trained, the early-stopping
    optimum of the objective's own metric, and the last tree."""
    return sorted({n for n in _ITERATION_GRID if n <= trained} | {max(best, 1), trained})


# --------------------------------------------------------------------------------------------------------------
# The model


class PotentialValueModel(BaseEstimator):
    """Expected net spend of each customer over ``horizon_days`` after a cutoff (LightGBM).

    A model family (:class:`segml.models.base.ModelFamily`) with one documented deviation: it learns from
    transactions at a lattice of cutoffs, so :meth:`fit` takes a :class:`~segml.models.base.TrainingInput`
    (or today's positional ``transactions, calibration_end, spec, customers``) instead of a feature matrix.
    Invalid settings raise :class:`~segml.models.base.InvalidParameter` (a ``ValueError``) naming the
    parameter; the caller maps it to its configuration key (``models.potential.<parameter>``).

    Parameters
    ----------
    horizon_days:
        Forecast horizon in days.
    objective:
        ``"auto"`` (tweedie and hurdle compete on the validation fold), ``"tweedie"`` or ``"hurdle"``.
    n_estimators:
        Trees per booster; None chooses the count on the validation fold (early stopping).
    max_estimators:
        Largest tree count tried when ``n_estimators`` is None.
    categorical:
        ``"auto"`` uses non-numeric attribute columns of the feature table (at most ``max_levels`` levels)
        as LightGBM categoricals; ``"drop"`` ignores them.
    max_levels:
        Attribute columns with more distinct values than this are not used.
    seasonality:
        ``"auto"`` estimates a month-of-year profile when 12+ full months exist; ``"flat"`` never does.
    max_decile_mape, max_total_error:
        Calibration limits on the validation fold: among candidates within both, the highest validation
        Gini wins (when none is within, the lowest decile MAPE wins).
    recalibrate:
        Fit an order-preserving power stretch of the predicted rates on the validation fold (see
        ``docs/potential.md``); the limits above are then checked on the recalibrated predictions.
    random_state:
        Seed of every LightGBM random step.
    num_threads:
        LightGBM threads (fixed: results do not depend on the machine's core count).
    target:
        ``"spend"`` (net spend over the horizon) or ``"margin"`` (net margin: the transactions need a ``cost``
        or ``margin`` role). The margin label of each stacked window is clipped at 0 like spend (a Tweedie /
        hurdle target cannot be negative), so the forecast is the expected positive margin; money metrics are
        meant against the unclipped realised margin (``benchmarks/margin.py``). No blend with the spend-based
        run rate and BG/NBD for margin.

    Attributes
    ----------
    objective_:
        Selected family.
    boosters_:
        ``{"tweedie": Booster}`` or ``{"active": Booster, "spend": Booster}``.
    n_estimators_:
        Tree count per booster.
    feature_names_:
        Model columns in order; ``categorical_levels_`` their category lists.
    season_profile_:
        12 month-of-year multipliers (all ones when flat).
    selection_:
        One row per candidate: validation cutoff, label end, tree counts and validation scores; ``selected``
        marks the winner.
    params_:
        The settings :meth:`fit_production` reuses.
    training_end_, cutoffs_:
        Last day of data the model saw; cutoffs of its training rows.
    """

    def __init__(
        self,
        horizon_days: int,
        objective: str = "auto",
        n_estimators: int | None = None,
        max_estimators: int = 400,
        categorical: str = "auto",
        max_levels: int = 50,
        seasonality: str = "auto",
        max_decile_mape: float = 0.18,
        max_total_error: float = 0.10,
        recalibrate: bool = True,
        random_state: int = 42,
        num_threads: int = 1,
        blend: str = "auto",
        monotone: str = "auto",
        lapse: str = "auto",
        target: str = "spend",
    ) -> None:
        self.horizon_days = horizon_days
        self.objective = objective
        self.n_estimators = n_estimators
        self.max_estimators = max_estimators
        self.categorical = categorical
        self.max_levels = max_levels
        self.seasonality = seasonality
        self.max_decile_mape = max_decile_mape
        self.max_total_error = max_total_error
        self.recalibrate = recalibrate
        self.random_state = random_state
        self.num_threads = num_threads
        self.blend = blend
        self.monotone = monotone
        self.lapse = lapse
        self.target = target

    #: model-family interface: :meth:`predict_value` is net spend over ``horizon_days``
    predicts_money: ClassVar[bool] = True
    #: registry family name written into :meth:`to_dict` (:mod:`segml.models.registry`)
    family: ClassVar[str] = "potential"

    # ---------------------------------------------------------------------------------------------- checks

    def _check_settings(self) -> None:
        """Raise :class:`InvalidParameter` (a ``ValueError``) naming the first invalid setting."""
        who = "PotentialValueModel"
        if not isinstance(self.horizon_days, int) or self.horizon_days < 1:
            raise InvalidParameter(
                who, "horizon_days", f"must be a positive integer, got {self.horizon_days!r}"
            )
        if self.objective not in ("auto", *OBJECTIVES):
            raise InvalidParameter(
                who, "objective", f"{self.objective!r} is not one of auto, tweedie, hurdle"
            )
        if self.categorical not in ("auto", "drop"):
            raise InvalidParameter(who, "categorical", f"{self.categorical!r} is not one of auto, drop")
        if self.monotone not in ("auto", "increasing", "none"):
            raise InvalidParameter(who, "monotone", f"{self.monotone!r} is not one of auto, increasing, none")
        if self.blend not in ("auto", "none"):
            raise InvalidParameter(who, "blend", f"{self.blend!r} is not one of auto, none")
        if self.lapse not in ("auto", "none"):
            raise InvalidParameter(who, "lapse", f"{self.lapse!r} is not one of auto, none")
        if self.target not in TARGETS:
            raise InvalidParameter(who, "target", f"{self.target!r} is not one of {', '.join(TARGETS)}")
        if self.seasonality not in ("auto", "flat"):
            raise InvalidParameter(who, "seasonality", f"{self.seasonality!r} is not one of auto, flat")
        if self.n_estimators is not None and self.n_estimators < 1:
            raise InvalidParameter(
                who, "n_estimators", f"must be a positive integer, got {self.n_estimators}"
            )

    def _check_fitted(self) -> None:
        check_is_fitted(
            self, "boosters_", msg="PotentialValueModel is not fitted: call fit() or from_dict() first"
        )

    # ----------------------------------------------------------------------------------------------- time

    def _step_days(self, start: dt.date, end: dt.date) -> int:
        span = (end - start).days
        return max(7, round(span / _CUTOFFS_PER_SPAN))

    def _profile(self, transactions: pd.DataFrame, start: dt.date, end: dt.date) -> np.ndarray:
        if self.seasonality == "flat":
            return np.ones(12)
        return estimate_season_profile(transactions, start, end)

    # ------------------------------------------------------------------------------------------------ fit

    def fit(
        self,
        transactions: str | Path | pd.DataFrame | TrainingInput,
        calibration_end: dt.date | None = None,
        spec: FeatureConfig | None = None,
        customers: str | Path | pd.DataFrame | None = None,
        *,
        start: dt.date | None = None,
        invoices: str | Path | pd.DataFrame | None = None,
        interactions: str | Path | pd.DataFrame | None = None,
    ) -> PotentialValueModel:
        """Select and fit the model on data up to ``calibration_end`` (inclusive) only.

        Parameters
        ----------
        transactions:
            Clean transactions (parquet path or DataFrame). Rows after ``calibration_end`` are dropped first.
            Or a :class:`~segml.models.base.TrainingInput` holding every input (the model-family call
            ``fit(X, y)``: ``calibration_end`` is then the ignored ``y`` and must be None, and the other
            arguments must not be given).
        calibration_end:
            Last day the model may see.
        spec:
            Feature configuration (default :class:`~segml.config.FeatureConfig`).
        customers:
            Optional clean customers (path or DataFrame) with attribute columns.
        start:
            First day of history to use; default the first transaction day.
        invoices:
            Optional clean invoices (``data.invoices``): the payment features join the model's inputs, each
            as known at its cutoff (an invoice paid after a cutoff is open at it).
        interactions:
            Optional clean interactions (``data.interactions``): the contact features (complaints, campaign
            responses, visits, survey scores) join the model's inputs, each as known at its cutoff.

        Returns
        -------
        PotentialValueModel
            ``self``, fitted.
        """
        if isinstance(transactions, TrainingInput):
            given = (calibration_end, spec, customers, start, invoices, interactions)
            if any(value is not None for value in given):
                raise ValueError(
                    "PotentialValueModel.fit: pass either a TrainingInput or the separate inputs, not both"
                )
            transactions, calibration_end, spec, customers, start, invoices, interactions = (
                transactions.transactions,
                transactions.calibration_end,
                transactions.feature_config,
                transactions.customers,
                transactions.start,
                transactions.invoices,
                transactions.interactions,
            )
        if calibration_end is None:
            raise ValueError("PotentialValueModel.fit: calibration_end is required")
        self._check_settings()
        spec = spec or FeatureConfig()
        history, start = _history(transactions, calibration_end, start)
        span = (calibration_end - start).days
        step = self._step_days(start, calibration_end)
        # validation cutoff: a half-size copy of the task, or one full horizon before the end when it fits
        validation_cutoff = max(
            start + dt.timedelta(days=span // 2),
            calibration_end - dt.timedelta(days=self.horizon_days),
        )
        inner_cutoffs = cutoff_lattice(start, validation_cutoff, validation_cutoff, step)
        outer_cutoffs = cutoff_lattice(start, calibration_end, validation_cutoff, step)
        if not inner_cutoffs or validation_cutoff not in outer_cutoffs:
            raise ConfigError(
                f"cutoffs: the training period {start}..{calibration_end} ({span} days) is too short to "
                f"select a model on a validation cutoff inside it (needs at least {4 * step} days)"
            )
        events = _events(invoices, interactions)
        numeric = _numeric(spec, events, self.target)

        # final-fit rows; the rows at the validation cutoff double as the validation fold, because their
        # label window (validation cutoff, calibration end] is exactly the inner task's horizon
        self.season_profile_ = self._profile(history, start, calibration_end)
        outer = _stack(
            history,
            outer_cutoffs,
            self.horizon_days,
            calibration_end,
            spec,
            customers,
            self.season_profile_,
            events,
            target=self.target,
        )
        at_validation = (outer.features["cutoff"] == pd.Timestamp(validation_cutoff)).to_numpy()
        validation = outer.features.loc[at_validation].reset_index(drop=True)
        validation_spend = outer.spend[at_validation]
        inner_horizon = (calibration_end - validation_cutoff).days  # ≤ horizon_days by construction

        # selection on the half-size task: cutoffs before the validation cutoff, labels clipped there
        inner_profile = self._profile(history, start, validation_cutoff)
        inner = _stack(
            history,
            inner_cutoffs,
            inner_horizon,
            validation_cutoff,
            spec,
            customers,
            inner_profile,
            events,
            target=self.target,
        )
        validation_weight = season_weight(inner_profile, [validation_cutoff], inner_horizon)[0]
        design = _design_from_frame(inner.features, numeric, self.categorical, self.max_levels)
        selection, validation_prediction = self._select(
            design, inner, validation, validation_spend, validation_weight, inner_horizon, inner_profile
        )
        selection.insert(0, "validation_cutoff", validation_cutoff)
        selection.insert(1, "train_label_end", validation_cutoff)
        selection.insert(2, "validation_end", calibration_end)
        best = selection.loc[selection["selected"]].iloc[0]

        self.selection_ = selection
        blend_params, validation_components = self._choose_blend(
            validation, validation_spend, validation_prediction, start, validation_cutoff, inner_horizon
        )
        self.params_ = {
            "objective": str(best["objective"]),
            "window_feature": bool(best["window_feature"]),
            "monotone": bool(best["monotone"]),
            "spread": None if best["spread"] is None else dict(best["spread"]),
            "rounds": dict(best["rounds"]),
            "step_days": step,
            "blend": blend_params,
            "lapse": None,
            "interval": None,
        }
        self._fit_final(
            outer, outer_cutoffs, start, calibration_end, numeric, spec, customers, history, events
        )
        # the recency calibration is measured on the forecast it will correct: this final model's own, at the
        # validation cutoff (its rows are in the final fit, so the measured miscalibration is if anything
        # smaller than out of sample: the calibration stays conservative)
        self.params_["lapse"] = self._choose_lapse(
            validation, validation_spend, validation_components, validation_cutoff, inner_horizon
        )
        self.params_["interval"] = self._choose_interval(
            validation, validation_spend, validation_components, inner_horizon
        )
        return self

    def _choose_interval(
        self,
        validation: pd.DataFrame,
        validation_spend: np.ndarray,
        components: dict[str, np.ndarray],
        horizon_days: int,
    ) -> dict[str, Any] | None:
        """P10 / P90 multipliers of the point forecast (:mod:`segml.models.intervals`), measured on the
        validation fold against its *out-of-sample* forecast: the selected candidate trained without the
        fold's labels, blended with the chosen weights and recency-calibrated as the shipped forecast is."""
        from segml.models import blend, intervals, lapse

        blend_params = self.params_.get("blend")
        forecast = (
            components["gbm"]
            if blend_params is None
            else blend.blend_predictions(components, blend_params["weights"])
        )
        forecast = forecast * lapse.lapse_factors(self.params_.get("lapse"), validation)
        return intervals.fit_intervals(validation, validation_spend, forecast, horizon_days)

    def _choose_blend(
        self,
        validation: pd.DataFrame,
        validation_spend: np.ndarray,
        validation_prediction: np.ndarray,
        start: dt.date,
        validation_cutoff: dt.date,
        horizon_days: int,
    ) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
        """Blend weights of the GBM forecast, the past-spend run-rate and BG/NBD + Gamma-Gamma, chosen on the
        validation fold (see :func:`segml.models.blend.choose_blend`; None when ``blend="none"``), and the
        validation components (``gbm`` alone when there is no blend)."""
        self.blend_selection_ = None
        if self.blend == "none" or self.target == "margin":
            # the blend's other parts (past-spend run rate, BG/NBD + Gamma-Gamma) forecast spend, not margin
            return None, {"gbm": validation_prediction}
        from segml.models import blend

        components = blend.component_predictions(
            validation,
            validation_prediction,
            (validation_cutoff - start).days + 1,
            horizon_days,
            blend.fit_btyd(validation),
        )
        weights, table = blend.choose_blend(validation_spend, components)
        self.blend_selection_ = table
        return {"weights": weights}, components

    def _choose_lapse(
        self,
        validation: pd.DataFrame,
        validation_spend: np.ndarray,
        components: dict[str, np.ndarray],
        validation_cutoff: dt.date,
        horizon_days: int,
    ) -> dict[str, Any] | None:
        """Recency calibration of the fitted model's (blended) forecast over the validation window, fitted
        and adopted or not on the validation fold (see :mod:`segml.models.lapse`); None when
        ``lapse="none"``. The blend's run-rate and BTYD components are the ones of the blend choice (as of the
        validation cutoff); the GBM component is this model's."""
        if self.lapse == "none":
            return None
        from segml.models import blend, lapse

        fitted = _Fitted(self.objective_, self.boosters_, self.n_estimators_)
        rate = _apply_spread(
            fitted.rate(self._columns().matrix(validation, horizon_days)), self.params_["spread"]
        )
        gbm = rate * season_weight(self.season_profile_, [validation_cutoff], horizon_days)[0]
        blend_params = self.params_.get("blend")
        forecast = (
            gbm
            if blend_params is None
            else blend.blend_predictions({**components, "gbm": gbm}, blend_params["weights"])
        )
        return lapse.choose_lapse(validation, validation_spend, forecast)

    def _select(
        self,
        design: _Design,
        inner: _Frame,
        validation: pd.DataFrame,
        validation_spend: np.ndarray,
        validation_weight: float,
        validation_weight_days: int,
        profile: np.ndarray,
    ) -> pd.DataFrame:
        """Fit each candidate on the inner frame and score it on the validation fold at each tree count.

        The winner has the highest validation Gini among the candidates whose validation decile MAPE and
        total error are within ``max_decile_mape`` / ``max_total_error``; when none is, the lowest decile
        MAPE wins. Fewer trees win exact ties.
        """
        allowed = {"auto": (True, False), "increasing": (True,), "none": (False,)}[self.monotone]
        candidates = [c for c in _CANDIDATES if self.objective in ("auto", c[0]) and c[2] in allowed]
        validation_rate = validation_spend / validation_weight
        max_rounds = self.n_estimators or self.max_estimators
        rows = []
        predictions = []
        for objective, window_feature, monotone in candidates:
            columns = _Columns(design, window_feature, tuple(profile))
            train = _Target(columns.matrix(inner.features, inner.weight), inner.rate, inner.weight)
            holdout_fold = _Target(
                columns.matrix(validation, validation_weight_days),
                validation_rate,
                np.full(len(validation_rate), float(validation_weight_days)),
            )
            fitted = _fit_candidate(
                objective,
                columns,
                train,
                dict.fromkeys(_BOOSTER_NAMES[objective], max_rounds),
                self.random_state,
                self.num_threads,
                validation=None if self.n_estimators else holdout_fold,
                monotone=monotone,
            )
            by_count = {}
            for name, booster in fitted.boosters.items():
                trained = booster.current_iteration()
                grid = (
                    [self.n_estimators]
                    if self.n_estimators
                    else _iteration_grid(trained, booster.best_iteration)
                )
                by_count[name] = _staged_predictions(
                    booster, holdout_fold.matrix, grid, logistic=name == "active"
                )
            for counts in itertools.product(*(list(staged) for staged in by_count.values())):
                rounds = dict(zip(by_count, counts, strict=True))
                rate = np.prod([by_count[name][n] for name, n in rounds.items()], axis=0)
                spread = _fit_spread(rate, validation_spend / validation_weight) if self.recalibrate else None
                calibrated = rate if spread is None else _apply_spread(rate, spread)
                rows.append(
                    {
                        "objective": objective,
                        "window_feature": window_feature,
                        "monotone": monotone,
                        "rounds": rounds,
                        "total_trees": sum(counts),
                        "n_train_rows": len(inner.rate),
                        "spread": spread,
                        "raw_decile_mape": _score(validation_spend, rate * validation_weight)["decile_mape"],
                        **_score(validation_spend, calibrated * validation_weight),
                    }
                )
                predictions.append(calibrated * validation_weight)
        table = pd.DataFrame(rows)
        table["eligible"] = (table["decile_mape"] <= self.max_decile_mape) & (
            table["total_error"].abs() <= self.max_total_error
        )
        if table["eligible"].any():
            key = np.where(table["eligible"], table["gini"], -np.inf)
            winner = int(np.lexsort((table["total_trees"].to_numpy(), -key))[0])
        else:
            winner = int(
                np.lexsort((table["total_trees"].to_numpy(), table["decile_mape"].fillna(np.inf).to_numpy()))[
                    0
                ]
            )
        table["selected"] = False
        table.loc[winner, "selected"] = True
        return table, predictions[winner]

    def _fit_final(
        self,
        frame: _Frame,
        cutoffs: list[dt.date],
        start: dt.date,
        data_end: dt.date,
        numeric: list[str],
        spec: FeatureConfig,
        customers: str | Path | pd.DataFrame | None,
        history: pd.DataFrame,
        events: dict[str, Any] | None = None,
    ) -> None:
        blend_params = self.params_.get("blend")
        if blend_params is not None:
            # the blend's other components, as of the training end: the run-rate's history length and a
            # BG/NBD + Gamma-Gamma fit on the customers' features there
            blend_params = {
                "weights": dict(blend_params["weights"]),
                "history_days": (data_end - start).days + 1,
            }
            blend_params["btyd"] = None
            if blend_params["weights"].get("btyd", 0.0) > 0:
                from segml.models import blend

                latest = _features_module().build_features(
                    history, data_end, spec, customers, **(events or {})
                )
                fitted_btyd = blend.fit_btyd(latest)
                if fitted_btyd is None:  # cannot happen when it fitted on the validation fold; be safe
                    weights = blend_params["weights"]
                    weights["gbm"] += weights.pop("btyd")
                    weights["btyd"] = 0.0
                else:
                    blend_params["btyd"] = blend.btyd_state(fitted_btyd)
            self.params_["blend"] = blend_params
        design = _design_from_frame(frame.features, numeric, self.categorical, self.max_levels)
        columns = _Columns(design, self.params_["window_feature"], tuple(self.season_profile_))
        fitted = _fit_candidate(
            self.params_["objective"],
            columns,
            _Target(columns.matrix(frame.features, frame.weight), frame.rate, frame.weight),
            self.params_["rounds"],
            self.random_state,
            self.num_threads,
            monotone=bool(self.params_.get("monotone", False)),
        )
        if self.params_.get("spread") is not None:
            # the exponent comes from the validation fold; reference and level are re-anchored on this fit's
            # own rows at its latest cutoff, so the stretch keeps this model's mean rate there
            latest = (frame.features["cutoff"] == frame.features["cutoff"].max()).to_numpy()
            latest_rate = fitted.rate(columns.matrix(frame.features.loc[latest], self.horizon_days))
            exponent = self.params_["spread"]["exponent"]
            reference = float(latest_rate.mean())
            level = float(1.0 / ((latest_rate / reference) ** exponent).mean())
            self.params_["spread"] = {"exponent": exponent, "reference": reference, "level": level}
        self.objective_ = fitted.objective
        self.boosters_ = fitted.boosters
        self.n_estimators_ = dict(fitted.rounds)
        self.feature_names_ = list(design.feature_names)
        self.categorical_levels_ = {k: list(v) for k, v in design.categorical_levels.items()}
        self.cutoffs_ = list(cutoffs)
        self.training_start_ = start
        self.training_end_ = data_end
        self.n_training_rows_ = len(frame.rate)

    def fit_production(
        self,
        transactions: str | Path | pd.DataFrame,
        data_end: dt.date,
        spec: FeatureConfig | None = None,
        customers: str | Path | pd.DataFrame | None = None,
        *,
        start: dt.date | None = None,
        invoices: str | Path | pd.DataFrame | None = None,
        interactions: str | Path | pd.DataFrame | None = None,
    ) -> PotentialValueModel:
        """Refit the selected settings on all data up to ``data_end`` (no new selection).

        The cutoff lattice, season profile and feature columns are derived again from the longer period;
        the family and tree counts are the ones selected by :meth:`fit`.

        Parameters
        ----------
        transactions, spec, customers, start, invoices, interactions:
            As in :meth:`fit`.
        data_end:
            Latest day of data (inclusive), usually the last transaction day.

        Returns
        -------
        PotentialValueModel
            A new fitted model (``self`` keeps the calibration-period fit); its ``selection_`` is the one
            that chose the settings.
        """
        self._check_fitted()
        spec = spec or FeatureConfig()
        history, start = _history(transactions, data_end, start)
        step = self._step_days(start, data_end)
        cutoffs = cutoff_lattice(start, data_end, data_end - dt.timedelta(days=step), step)
        if not cutoffs:
            raise ConfigError(f"cutoffs: the data period {start}..{data_end} is too short to fit a model")
        production = PotentialValueModel(**self.get_params())
        production.params_ = {**self.params_, "rounds": dict(self.params_["rounds"]), "step_days": step}
        production.selection_ = self.selection_.copy()
        production.season_profile_ = production._profile(history, start, data_end)
        events = _events(invoices, interactions)
        frame = _stack(
            history,
            cutoffs,
            self.horizon_days,
            data_end,
            spec,
            customers,
            production.season_profile_,
            events,
            target=self.target,
        )
        numeric = _numeric(spec, events, self.target)
        production.blend_selection_ = getattr(self, "blend_selection_", None)
        production._fit_final(frame, cutoffs, start, data_end, numeric, spec, customers, history, events)
        return production

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (sklearn convention)."""
        return {
            "horizon_days": self.horizon_days,
            "objective": self.objective,
            "n_estimators": self.n_estimators,
            "max_estimators": self.max_estimators,
            "categorical": self.categorical,
            "max_levels": self.max_levels,
            "seasonality": self.seasonality,
            "max_decile_mape": self.max_decile_mape,
            "max_total_error": self.max_total_error,
            "recalibrate": self.recalibrate,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
            "blend": self.blend,
            "monotone": self.monotone,
            "lapse": self.lapse,
            "target": self.target,
        }

    # -------------------------------------------------------------------------------------------- predict

    def _columns(self) -> _Columns:
        design = _Design(tuple(self.feature_names_), self.categorical_levels_)
        return _Columns(design, bool(self.params_["window_feature"]), tuple(self.season_profile_))

    def _horizon_weight(self, features: pd.DataFrame) -> np.ndarray:
        if "as_of" not in features.columns:
            raise InputFileError(
                f"feature table: missing column 'as_of' ({len(features):,} rows); the forecast window "
                "starts the day after each row's as_of"
            )
        return season_weight(self.season_profile_, features["as_of"], self.horizon_days)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Expected net spend over ``horizon_days`` after each row's ``as_of``.

        Parameters
        ----------
        features:
            A feature table from ``segml.features.build_features`` (same feature config as in fit).

        Returns
        -------
        numpy.ndarray
            One finite, non-negative value per row, in the currency of the transactions.
        """
        self._check_fitted()
        return self._predict_matrix(features, self._columns().matrix(features, self.horizon_days))

    def predict_value(self, features: pd.DataFrame) -> np.ndarray:
        """Model-family score: :meth:`predict` (expected net spend over ``horizon_days``)."""
        return self.predict(features)

    def predict_interval(
        self, features: pd.DataFrame, point: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """P10 and P90 of each row's spend over ``horizon_days`` (:mod:`segml.models.intervals`).

        Parameters
        ----------
        features:
            A feature table, as for :meth:`predict`.
        point:
            The precomputed ``predict(features)``; computed when None.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Lower and upper bounds per row; NaN for rows without a purchase and for models fitted before
            intervals existed (no ``params_["interval"]``).
        """
        self._check_fitted()
        from segml.models import intervals

        point = self.predict(features) if point is None else np.asarray(point, dtype=float)
        lower, upper = intervals.interval_bounds(self.params_.get("interval"), point, self.horizon_days)
        if "has_purchases" in features.columns:
            none = ~features["has_purchases"].astype(bool).to_numpy()
            lower[none] = np.nan
            upper[none] = np.nan
        return lower, upper

    def _predict_matrix(self, features: pd.DataFrame, matrix: np.ndarray) -> np.ndarray:
        """:meth:`predict` from the ready model matrix of ``features`` (shared with the contributions)."""
        fitted = _Fitted(self.objective_, self.boosters_, self.n_estimators_)
        return self._from_rate(fitted.rate(matrix), features)

    # -- scoring building blocks for production scoring (the artifact) and its ONNX parity -------------------

    def check_fitted(self) -> None:
        """Raise ``NotFittedError`` unless the model is fitted."""
        self._check_fitted()

    def design_matrix(self, features: pd.DataFrame) -> np.ndarray:
        """The model matrix of ``features`` (shared by :meth:`predict_matrix` and :meth:`contrib_matrix`)."""
        return self._columns().matrix(features, self.horizon_days)

    def predict_matrix(self, features: pd.DataFrame, matrix: np.ndarray) -> np.ndarray:
        """:meth:`predict` from a prebuilt :meth:`design_matrix`."""
        return self._predict_matrix(features, matrix)

    def contrib_matrix(self, features: pd.DataFrame, matrix: np.ndarray) -> pd.DataFrame:
        """:meth:`predict_contrib` from a prebuilt :meth:`design_matrix`."""
        return self._contrib_matrix(features, matrix)

    def value_from_rate(self, rate: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        """The prediction from the boosters' combined rate (tweedie response, or active × spend)."""
        return self._from_rate(rate, features)

    def _from_rate(self, rate: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        """The prediction from the boosters' combined rate (tweedie response, or active × spend): spread
        recalibration, horizon weight, then the blend with the run-rate and BTYD forecasts."""
        rate = _apply_spread(rate, self.params_["spread"])
        gbm = rate * self._horizon_weight(features)
        return self._lapsed(self._blended(gbm, features), features)

    def _blended(self, gbm: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        blend_params = self.params_.get("blend")
        if blend_params is None or blend_params["weights"].get("gbm", 1.0) == 1.0:
            return gbm
        from segml.models import blend

        btyd = None if blend_params.get("btyd") is None else blend.btyd_from_state(blend_params["btyd"])
        components = blend.component_predictions(
            features, gbm, blend_params["history_days"], self.horizon_days, btyd
        )
        return blend.blend_predictions(components, blend_params["weights"])

    def _lapsed(self, forecast: np.ndarray, features: pd.DataFrame) -> np.ndarray:
        state = self.params_.get("lapse")
        if state is None or not state.get("adopted"):
            return forecast
        from segml.models import lapse

        return forecast * lapse.lapse_factors(state, features)

    def _adjusts_gbm(self) -> bool:
        """Whether the prediction is more than the GBM forecast (a blend or an adopted recency calibration)."""
        blend_params = self.params_.get("blend")
        blended = blend_params is not None and blend_params["weights"].get("gbm", 1.0) != 1.0
        lapse_state = self.params_.get("lapse")
        return blended or bool(lapse_state and lapse_state.get("adopted"))

    def predict_contrib(self, features: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to ``log(predicted spend)``.

        Columns are :attr:`feature_names_` plus ``bias``; each row sums to ``log(predict(features))``.

        - tweedie: LightGBM's exact TreeSHAP values of the log-link score; ``bias`` also holds
          ``log(Σ profile over the horizon)``.
        - hurdle: ``log(predicted) = log P(active) + log E[rate | active] + log(horizon weight)``. The spend
          booster's log-link contributions are exact. The classifier's contributions are in the logit,
          where ``log P`` is not additive, so they are rescaled to share out the change of ``log P`` from
          the classifier's base value in proportion to each feature's logit contribution (exact in total,
          order-preserving per customer). ``bias`` holds both base values and the horizon weight.

        Parameters
        ----------
        features:
            A feature table (as for :meth:`predict`).

        Returns
        -------
        pandas.DataFrame
            Same index as ``features``.
        """
        self._check_fitted()
        return self._contrib_matrix(features, self._columns().matrix(features, self.horizon_days))

    def _contrib_matrix(self, features: pd.DataFrame, matrix: np.ndarray) -> pd.DataFrame:
        """:meth:`predict_contrib` from the ready model matrix of ``features``."""
        columns = self._columns()
        log_horizon = np.log(self._horizon_weight(features))
        if self.objective_ == "tweedie":
            contrib = self.boosters_["tweedie"].predict(
                matrix, num_iteration=self.n_estimators_["tweedie"], pred_contrib=True
            )
        else:
            logit = self.boosters_["active"].predict(
                matrix, num_iteration=self.n_estimators_["active"], pred_contrib=True
            )
            spend = self.boosters_["spend"].predict(
                matrix, num_iteration=self.n_estimators_["spend"], pred_contrib=True
            )
            base_logit = logit[:, -1]
            total_logit = logit.sum(axis=1)
            change_logit = total_logit - base_logit
            change_log_p = _log_sigmoid(total_logit) - _log_sigmoid(base_logit)
            # d log σ(z) / dz = σ(−z): the limit of the ratio when the logit barely moves
            near = np.abs(change_logit) < 1e-12
            ratio = np.where(near, _sigmoid(-total_logit), change_log_p / np.where(near, 1.0, change_logit))
            classifier = logit[:, :-1] * ratio[:, None]
            contrib = np.column_stack([classifier + spend[:, :-1], _log_sigmoid(base_logit) + spend[:, -1]])
        contrib = contrib.copy()
        spread = self.params_["spread"]
        if spread is not None:
            # log of the recalibrated rate = exponent · log(rate) + log(level · reference^(1 − exponent))
            contrib *= spread["exponent"]
            contrib[:, -1] += np.log(spread["level"]) + (1.0 - spread["exponent"]) * np.log(
                spread["reference"]
            )
        contrib[:, -1] += log_horizon
        if self._adjusts_gbm():
            # the blend with the run-rate and BTYD forecasts and the recency calibration are a per-customer
            # factor on the GBM forecast; it goes to the bias so that each row still sums to log(prediction)
            gbm = np.exp(contrib.sum(axis=1))
            blended = self._predict_matrix(features, matrix)
            with np.errstate(divide="ignore"):
                contrib[:, -1] += np.log(blended) - np.log(gbm)
        if columns.window_feature:
            # window_days is the horizon for every customer: its share belongs to the baseline
            contrib[:, -1] += contrib[:, -2]
            contrib = np.delete(contrib, -2, axis=1)
        return pd.DataFrame(contrib, columns=[*self.feature_names_, "bias"], index=features.index)

    # ---------------------------------------------------------------------------------------- serialise

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: settings, booster text, feature names, categories, season profile, selection."""
        self._check_fitted()
        selection = self.selection_.copy()
        for column in ("validation_cutoff", "train_label_end", "validation_end"):
            selection[column] = selection[column].astype(str)
        return {
            "family": self.family,
            "format": SERIAL_FORMAT,
            "settings": self.get_params(),
            "params": {**self.params_, "rounds": dict(self.params_["rounds"])},
            "objective": self.objective_,
            "n_estimators": dict(self.n_estimators_),
            "boosters": {name: booster.model_to_string() for name, booster in self.boosters_.items()},
            "feature_names": list(self.feature_names_),
            "categorical_levels": {k: list(v) for k, v in self.categorical_levels_.items()},
            "season_profile": [float(v) for v in self.season_profile_],
            "cutoffs": [c.isoformat() for c in self.cutoffs_],
            "training_start": self.training_start_.isoformat(),
            "training_end": self.training_end_.isoformat(),
            "n_training_rows": int(self.n_training_rows_),
            "selection": _json_records(selection),
            "blend_selection": (
                None
                if getattr(self, "blend_selection_", None) is None
                else _json_records(self.blend_selection_)
            ),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PotentialValueModel:
        """Rebuild a fitted model from :meth:`to_dict` output (predicts identically)."""
        if state.get("format") != SERIAL_FORMAT:
            raise InputFileError(
                f"potential-value model: unknown format {state.get('format')!r}, expected {SERIAL_FORMAT}"
            )
        model = cls(**state["settings"])
        model.params_ = dict(state["params"])
        model.objective_ = state["objective"]
        model.n_estimators_ = {k: int(v) for k, v in state["n_estimators"].items()}
        model.boosters_ = {name: lgb.Booster(model_str=text) for name, text in state["boosters"].items()}
        model.feature_names_ = list(state["feature_names"])
        model.categorical_levels_ = {k: list(v) for k, v in state["categorical_levels"].items()}
        model.season_profile_ = np.asarray(state["season_profile"], dtype=float)
        model.cutoffs_ = [dt.date.fromisoformat(c) for c in state["cutoffs"]]
        model.training_start_ = dt.date.fromisoformat(state["training_start"])
        model.training_end_ = dt.date.fromisoformat(state["training_end"])
        model.n_training_rows_ = int(state["n_training_rows"])
        selection = pd.DataFrame(state["selection"])
        for column in ("validation_cutoff", "train_label_end", "validation_end"):
            selection[column] = selection[column].map(dt.date.fromisoformat)
        model.selection_ = selection
        blend_selection = state.get("blend_selection")
        model.blend_selection_ = None if blend_selection is None else pd.DataFrame(blend_selection)
        return model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[key] = value
        records.append(clean)
    return records
