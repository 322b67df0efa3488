"""Baselines every segml model has to beat: RFM quintile score, past spend and BG/NBD + Gamma-Gamma.

All three read the customer feature table of :func:`segml.features.build_features` (one row per customer at a
cutoff) and follow scikit-learn conventions: ``fit`` learns and freezes everything it needs (quintile edges,
calibration length, model parameters) so that scoring a customer gives the same answer alone or in any batch.

- :class:`RFMScore` — the classic R + F + M quintile score (3–15). Two baselines come from it: ``rfm``
  (:meth:`RFMScore.predict_rank_key`: R + F + M, ties broken by monetary value M) and ``rfm_sum``
  (:meth:`RFMScore.predict`: plain R + F + M, tied customers left tied).
- :class:`PastSpend` — calibration net spend, rescaled to the forecast horizon.
- :class:`BTYDModel` — BG/NBD (purchase count) × Gamma-Gamma (spend per purchase) from ``lifetimes``, with
  degenerate fits detected, refitted, and if need be replaced by a simple rate × mean-spend estimate; its
  predictions are always finite and non-negative, and ``diagnostics_`` says what happened.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import hyp2f1
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

__all__ = ["BASELINE_LABELS", "BASELINE_NAMES", "BTYDModel", "PastSpend", "RFMScore", "baseline_predictions"]

#: every baseline, in report order; the best baseline is the one of these with the highest holdout Gini
BASELINE_NAMES = ("rfm", "rfm_sum", "past_spend", "btyd")
#: what each baseline is, in words a reader of a report understands
BASELINE_LABELS = {
    "rfm": "RFM score R+F+M, ties broken by M (monetary value)",
    "rfm_sum": "plain R+F+M (3-15, ties left tied)",
    "past_spend": "past spend rescaled to the horizon",
    "btyd": "BG/NBD + Gamma-Gamma",
}
#: baselines whose prediction is money over the horizon (decile MAPE and total error apply)
BASELINE_PREDICTS_MONEY = {"rfm": False, "rfm_sum": False, "past_spend": True, "btyd": True}

#: learned parameters outside [PARAM_FLOOR, PARAM_CEILING] mark a degenerate fit (collapsed or exploded)
PARAM_FLOOR = 1e-8
PARAM_CEILING = 1e8
#: penalizer tried when the configured one (0) gives a degenerate fit; a configured penalizer > 0 retries 0
RETRY_PENALIZER = 1e-3
#: Gamma-Gamma needs a few repeat customers with positive spend to estimate its three parameters
MIN_GAMMA_GAMMA_CUSTOMERS = 10
#: days per BTYD time unit
TIME_UNIT_DAYS = {"D": 1.0, "W": 7.0}
#: version of the :meth:`to_dict` state of the baselines
FORMAT_VERSION = 1
#: registry family of the three baselines (:mod:`segml.models.registry`)
FAMILY = "baselines"


def _require_columns(features: pd.DataFrame, columns: Sequence[str], model: str) -> None:
    if not isinstance(features, pd.DataFrame):
        raise TypeError(f"{model}: features must be a pandas DataFrame, got {type(features).__name__}")
    missing = [column for column in columns if column not in features.columns]
    if missing:
        raise ValueError(
            f"{model}: feature table ({len(features)} rows) lacks column(s) {missing}; "
            "build it with segml.features.build_features"
        )


def _column(features: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=np.float64)


def _has_purchases(features: pd.DataFrame) -> np.ndarray:
    """Customers with a purchase on or before the cutoff (``t_days``/``recency_days`` defined)."""
    if "has_purchases" in features.columns:
        return features["has_purchases"].fillna(False).to_numpy(dtype=bool)
    reference = "t_days" if "t_days" in features.columns else "recency_days"
    return np.isfinite(_column(features, reference))


# --------------------------------------------------------------------------------------------------------------
# Model-family interface helpers: horizon, JSON state


def _horizon(given: float | None, configured: float | None, model: str) -> float:
    """The forecast horizon of a prediction: the argument, else the constructor's ``horizon_days``."""
    horizon = configured if given is None else given
    if horizon is None:
        raise ValueError(f"{model}: horizon_days is not set; pass it to predict() or to the constructor")
    return float(horizon)


def _state(model: BaseEstimator, fitted: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able :meth:`to_dict` state of a fitted baseline: family, class, parameters, fitted values."""
    cls = type(model)
    return {
        "family": FAMILY,
        "model": f"{cls.__module__}.{cls.__qualname__}",
        "format_version": FORMAT_VERSION,
        "params": _json_safe(model.get_params()),
        "fitted": _json_safe(fitted),
    }


def _params_from_state(cls: type, state: dict[str, Any]) -> dict[str, Any]:
    """Check that ``state`` is a :meth:`to_dict` state of ``cls`` and return its constructor parameters."""
    expected = f"{cls.__module__}.{cls.__qualname__}"
    if state.get("model") != expected:
        raise ValueError(f"not a {cls.__name__} export: model={state.get('model')!r}")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{cls.__name__} export format {state.get('format_version')!r} is not supported")
    return dict(state["params"])


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------------------
# RFM


class RFMScore(BaseEstimator):
    """Classic RFM quintile score: R + F + M, each 1..``n_bins`` (3..15 with quintiles).

    - R: ``recency_days`` (days since the last purchase), lower is better.
    - F: ``n_purchase_days`` (number of purchase days: the classic "number of purchases"; for BTYD's repeat
      count use ``frequency_column="frequency"``, which orders customers identically).
    - M: ``monetary_total`` (net spend up to the cutoff).

    ``fit`` learns the ``n_bins − 1`` quantile edges of each column (``numpy.quantile``, linear
    interpolation) over the customers who bought; they are frozen, so a customer's score does not depend on
    the batch it is scored with. A value equal to an edge gets the better of the two scores:
    F, M = 1 + #(edges ≤ value); R = n_bins − #(edges < value). Customers who never bought get R = 1;
    missing F or M values count as 0.

    Parameters
    ----------
    n_bins:
        Number of bins per dimension (5 = quintiles).
    frequency_column:
        Feature column used for F.
    score:
        What :meth:`predict_value` returns: ``"rank_key"`` (R+F+M with ties broken by M, the ``rfm``
        baseline) or ``"sum"`` (plain R+F+M, the ``rfm_sum`` baseline).
    """

    #: model-family interface: the rank key is a score, not money
    predicts_money: ClassVar[bool] = False
    family: ClassVar[str] = FAMILY

    def __init__(
        self, n_bins: int = 5, frequency_column: str = "n_purchase_days", score: str = "rank_key"
    ) -> None:
        self.n_bins = n_bins
        self.frequency_column = frequency_column
        self.score = score

    def _columns(self) -> tuple[str, str, str]:
        return ("recency_days", self.frequency_column, "monetary_total")

    def fit(self, features: pd.DataFrame, y: Any = None) -> RFMScore:
        """Learn the quantile edges of recency, frequency and monetary value.

        Parameters
        ----------
        features:
            Customer feature table.
        y:
            Ignored (scikit-learn compatibility).

        Returns
        -------
        RFMScore
            ``self``, with ``recency_edges_``, ``frequency_edges_``, ``monetary_edges_`` and
            ``monetary_scale_`` set.
        """
        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"RFMScore: n_bins must be an integer >= 2, got {self.n_bins!r}")
        _require_columns(features, self._columns(), "RFMScore")
        buyers = _has_purchases(features) & np.isfinite(_column(features, "recency_days"))
        if not buyers.any():
            raise ValueError(f"RFMScore: none of the {len(features)} customers has a purchase to learn from")
        probabilities = np.arange(1, self.n_bins) / self.n_bins
        recency, frequency, monetary = (np.nan_to_num(_column(features, c)[buyers]) for c in self._columns())
        self.recency_edges_ = np.quantile(recency, probabilities)
        self.frequency_edges_ = np.quantile(frequency, probabilities)
        self.monetary_edges_ = np.quantile(monetary, probabilities)
        scale = float(np.median(np.abs(monetary)))
        self.monetary_scale_ = scale if scale > 0 else 1.0
        self.n_customers_fit_ = int(buyers.sum())
        return self

    def predict_components(self, features: pd.DataFrame) -> pd.DataFrame:
        """The three bin scores and their sum.

        Returns
        -------
        pandas.DataFrame
            ``customer_id`` (when present), ``r_score``, ``f_score``, ``m_score`` (ints 1..n_bins) and
            ``rfm_score`` (their sum), in the row order of ``features``.
        """
        check_is_fitted(self, "recency_edges_")
        _require_columns(features, self._columns(), "RFMScore")
        recency = _column(features, "recency_days")
        frequency = np.nan_to_num(_column(features, self.frequency_column))
        monetary = np.nan_to_num(_column(features, "monetary_total"))
        bought = _has_purchases(features) & np.isfinite(recency)
        r_score = np.where(
            bought, self.n_bins - np.searchsorted(self.recency_edges_, np.nan_to_num(recency), side="left"), 1
        )
        f_score = 1 + np.searchsorted(self.frequency_edges_, frequency, side="right")
        m_score = 1 + np.searchsorted(self.monetary_edges_, monetary, side="right")
        components = pd.DataFrame(
            {
                "r_score": r_score.astype(np.int64),
                "f_score": f_score.astype(np.int64),
                "m_score": m_score.astype(np.int64),
            }
        )
        components["rfm_score"] = components[["r_score", "f_score", "m_score"]].sum(axis=1)
        if "customer_id" in features.columns:
            components.insert(0, "customer_id", features["customer_id"].to_numpy())
        return components

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """RFM score per customer (float64, 3..3·n_bins)."""
        return self.predict_components(features)["rfm_score"].to_numpy(dtype=np.float64)

    def predict_rank_key(self, features: pd.DataFrame) -> np.ndarray:
        """RFM score with ties broken by monetary value: ``score + 0.9 × m_rank``.

        ``m_rank = 1/2 + arctan(monetary_total / monetary_scale_) / π`` is strictly increasing in monetary
        value and lies in (0, 1), so ordering by the key equals ordering by (score, monetary value) and never
        moves a customer across a score. ``monetary_scale_`` (median |monetary| at fit) is frozen, so the
        key is batch-independent.
        """
        score = self.predict(features)
        monetary = np.nan_to_num(_column(features, "monetary_total"))
        m_rank = 0.5 + np.arctan(monetary / self.monetary_scale_) / np.pi
        return score + 0.9 * m_rank

    def predict_value(self, features: pd.DataFrame) -> np.ndarray:
        """Model-family score (a ranking score, not money): :meth:`predict_rank_key`, or :meth:`predict` (the
        plain sum) when ``score="sum"``."""
        if self.score not in ("rank_key", "sum"):
            raise ValueError(f"RFMScore: score must be 'rank_key' or 'sum', got {self.score!r}")
        return self.predict(features) if self.score == "sum" else self.predict_rank_key(features)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict, as JSON-able values (quantile edges, monetary scale)."""
        check_is_fitted(self, "recency_edges_")
        return _state(
            self,
            {
                "recency_edges": self.recency_edges_,
                "frequency_edges": self.frequency_edges_,
                "monetary_edges": self.monetary_edges_,
                "monetary_scale": self.monetary_scale_,
                "n_customers_fit": self.n_customers_fit_,
            },
        )

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RFMScore:
        """Rebuild a fitted :class:`RFMScore` from :meth:`to_dict` output (predicts identically)."""
        model = cls(**_params_from_state(cls, state))
        fitted = state["fitted"]
        model.recency_edges_ = np.asarray(fitted["recency_edges"], dtype=np.float64)
        model.frequency_edges_ = np.asarray(fitted["frequency_edges"], dtype=np.float64)
        model.monetary_edges_ = np.asarray(fitted["monetary_edges"], dtype=np.float64)
        model.monetary_scale_ = float(fitted["monetary_scale"])
        model.n_customers_fit_ = int(fitted["n_customers_fit"])
        return model


# --------------------------------------------------------------------------------------------------------------
# Past spend


class PastSpend(BaseEstimator):
    """Past-spend baseline: net calibration spend rescaled to the forecast horizon.

    ``prediction = max(monetary_total, 0) × horizon_days / calibration_days_``. The calibration length is
    one number for everyone, so the ordering is that of past spend.

    Parameters
    ----------
    calibration_days:
        Length of the calibration window in days. None learns it at fit as ``max(t_days) + 1`` (the days
        from the earliest first purchase to the cutoff, both included).
    horizon_days:
        Forecast horizon used when :meth:`predict` gets none (and by :meth:`predict_value`).
    """

    #: model-family interface: spend over the horizon
    predicts_money: ClassVar[bool] = True
    family: ClassVar[str] = FAMILY

    def __init__(self, calibration_days: float | None = None, horizon_days: float | None = None) -> None:
        self.calibration_days = calibration_days
        self.horizon_days = horizon_days

    def fit(self, features: pd.DataFrame, y: Any = None) -> PastSpend:
        """Learn ``calibration_days_``. Returns ``self``."""
        _require_columns(features, ("monetary_total",), "PastSpend")
        if self.calibration_days is not None:
            days = float(self.calibration_days)
        else:
            _require_columns(features, ("t_days",), "PastSpend")
            ages = _column(features, "t_days")
            ages = ages[np.isfinite(ages)]
            if ages.size == 0:
                raise ValueError(f"PastSpend: none of the {len(features)} customers has t_days")
            days = float(ages.max()) + 1.0
        if not days > 0:
            raise ValueError(f"PastSpend: calibration_days must be positive, got {days}")
        self.calibration_days_ = days
        return self

    def predict(self, features: pd.DataFrame, horizon_days: float | None = None) -> np.ndarray:
        """Expected spend over the next ``horizon_days`` (finite, ≥ 0); default the constructor's horizon."""
        check_is_fitted(self, "calibration_days_")
        horizon = _horizon(horizon_days, self.horizon_days, "PastSpend")
        _require_columns(features, ("monetary_total",), "PastSpend")
        spend = np.clip(np.nan_to_num(_column(features, "monetary_total"), posinf=0.0, neginf=0.0), 0, None)
        return spend * (horizon / self.calibration_days_)

    def predict_value(self, features: pd.DataFrame) -> np.ndarray:
        """Model-family score: :meth:`predict` over the constructor's ``horizon_days``."""
        return self.predict(features)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict, as JSON-able values."""
        check_is_fitted(self, "calibration_days_")
        return _state(self, {"calibration_days": self.calibration_days_})

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PastSpend:
        """Rebuild a fitted :class:`PastSpend` from :meth:`to_dict` output."""
        model = cls(**_params_from_state(cls, state))
        model.calibration_days_ = float(state["fitted"]["calibration_days"])
        return model


# --------------------------------------------------------------------------------------------------------------
# BG/NBD + Gamma-Gamma


def bgnbd_expected_purchases(
    params: dict[str, float], t: float, frequency: np.ndarray, recency: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """BG/NBD expected repeat purchases in the next ``t`` time units (Fader, Hardie & Lee 2005, eq. 10).

    Same computation as ``lifetimes.BetaGeoFitter.conditional_expected_number_of_purchases_up_to_time``,
    without needing a fitter object: ``params`` holds r, alpha, a, b; ``frequency`` = repeat purchases,
    ``recency`` = time from first to last purchase, ``age`` = time from first purchase to the cutoff (T).
    May return non-finite values for degenerate parameters; callers check.
    """
    r, alpha, a, b = (params[name] for name in ("r", "alpha", "a", "b"))
    x = frequency
    with np.errstate(all="ignore"):
        hyp_a, hyp_b, hyp_c = r + x, b + x, a + b + x - 1.0
        z = t / (alpha + age + t)
        log_hyp = np.log(hyp2f1(hyp_a, hyp_b, hyp_c, z))
        # Euler's transformation when the direct series overflows
        log_hyp_alt = np.log(hyp2f1(hyp_c - hyp_a, hyp_c - hyp_b, hyp_c, z)) + (
            hyp_c - hyp_a - hyp_b
        ) * np.log(1.0 - z)
        log_hyp = np.where(np.isinf(log_hyp), log_hyp_alt, log_hyp)
        first = (a + b + x - 1.0) / (a - 1.0)
        second = 1.0 - np.exp(log_hyp + (r + x) * np.log((alpha + age) / (alpha + t + age)))
        denominator = 1.0 + (x > 0) * (a / (b + x - 1.0)) * ((alpha + age) / (alpha + recency)) ** (r + x)
        return first * second / denominator


def gamma_gamma_expected_spend(
    params: dict[str, float], frequency: np.ndarray, monetary: np.ndarray
) -> np.ndarray:
    """Gamma-Gamma expected spend per purchase: a weighted mean of the customer's own mean spend and the
    population mean ``p·v / (q − 1)`` with weight ``p·x / (p·x + q − 1)`` on the customer (x = repeat
    purchases). ``params`` holds p, q, v with v in currency units."""
    p, q, v = (params[name] for name in ("p", "q", "v"))
    with np.errstate(all="ignore"):
        own_weight = p * frequency / (p * frequency + q - 1.0)
        population_mean = v * p / (q - 1.0)
        return (1.0 - own_weight) * population_mean + own_weight * monetary


def _params_out_of_range(params: dict[str, float]) -> str | None:
    bad = {
        name: value
        for name, value in params.items()
        if not (math.isfinite(value) and PARAM_FLOOR <= value <= PARAM_CEILING)
    }
    if bad:
        shown = ", ".join(f"{name}={value:.3g}" for name, value in bad.items())
        return f"parameters outside [{PARAM_FLOOR:g}, {PARAM_CEILING:g}]: {shown}"
    return None


def _lifetimes_fitters() -> tuple[type, type]:
    """Import lifetimes' fitters without letting its import-time ``warnings.simplefilter`` calls change the
    process-wide warning filters."""
    with warnings.catch_warnings():
        from lifetimes import BetaGeoFitter, GammaGammaFitter
    return BetaGeoFitter, GammaGammaFitter


def _quiet_call(function: Callable[[], Any], messages: list[str]) -> Any:
    """Run a lifetimes call with its prints and warnings captured into ``messages``."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        try:
            return function()
        finally:
            messages.extend(
                f"{w.category.__name__}: {w.message}"
                for w in caught
                if not issubclass(w.category, DeprecationWarning | FutureWarning)
            )


class BTYDModel(BaseEstimator):
    """BG/NBD purchase counts × Gamma-Gamma spend per purchase (``lifetimes``), made safe for grading.

    Fitted on the feature columns ``frequency`` (repeat purchase days), ``btyd_recency_days``, ``t_days``
    and ``btyd_monetary`` of the customers who bought. Gamma-Gamma is fitted only on repeat customers
    (``frequency > 0``) with positive mean repeat spend, on spend divided by its mean so that a penalizer acts
    on scale-free values (parameters are reported back in currency units). Customers with no repeat purchase
    get Gamma-Gamma's population mean spend; customers who never bought are predicted 0.

    Degenerate fits (convergence failure, a parameter outside [1e-8, 1e8] or non-finite, Gamma-Gamma with
    q ≤ 1, or non-finite/negative predictions on the training customers) are refitted with the other
    penalizer (0 ↔ 1e-3); if still degenerate the part is replaced by a fallback and ``diagnostics_`` says
    so:

    - purchases: ``(frequency + f̄) / (t_days + T̄) × horizon`` — each customer's repeat-purchase rate shrunk
      towards the population rate with the weight of one average customer (f̄, T̄ = means at fit);
    - spend per purchase: ``(x·m + m̄) / (x + 1)`` with m̄ the mean of the positive repeat spends.

    Parameters
    ----------
    penalizer:
        L2 penalizer of the BG/NBD fit (``lifetimes`` ``penalizer_coef``).
    gg_penalizer:
        L2 penalizer of the Gamma-Gamma fit (on spend scaled to mean 1).
    time_unit:
        "D" (days) or "W" (weeks): the unit of recency, T and the BG/NBD ``alpha``.
    horizon_days:
        Forecast horizon used when :meth:`predict` / :meth:`expected_purchases` get none (and by
        :meth:`predict_value`).
    """

    #: model-family interface: spend over the horizon
    predicts_money: ClassVar[bool] = True
    family: ClassVar[str] = FAMILY

    def __init__(
        self,
        penalizer: float = 0.0,
        gg_penalizer: float = 0.0,
        time_unit: str = "D",
        horizon_days: float | None = None,
    ) -> None:
        self.penalizer = penalizer
        self.gg_penalizer = gg_penalizer
        self.time_unit = time_unit
        self.horizon_days = horizon_days

    _COLUMNS = ("frequency", "btyd_recency_days", "t_days", "btyd_monetary")

    # -- inputs ------------------------------------------------------------------------------------------------

    def _unit_days(self) -> float:
        if self.time_unit not in TIME_UNIT_DAYS:
            raise ValueError(
                f"BTYDModel: time_unit must be one of {sorted(TIME_UNIT_DAYS)}, got {self.time_unit!r}"
            )
        return TIME_UNIT_DAYS[self.time_unit]

    def _histories(self, features: pd.DataFrame) -> dict[str, np.ndarray]:
        """Buyer mask and their frequency / recency / age (in time units) / repeat monetary value."""
        _require_columns(features, self._COLUMNS, "BTYDModel")
        unit_days = self._unit_days()
        frequency = _column(features, "frequency")
        recency_days = _column(features, "btyd_recency_days")
        age_days = _column(features, "t_days")
        monetary = _column(features, "btyd_monetary")
        buyers = _has_purchases(features) & np.isfinite(age_days) & np.isfinite(frequency)
        frequency, recency_days, age_days = frequency[buyers], recency_days[buyers], age_days[buyers]
        problems = {
            "frequency is negative or not a whole number": (frequency < 0)
            | (frequency != np.round(frequency)),
            "btyd_recency_days is missing, negative or larger than t_days": ~(
                (recency_days >= 0) & (recency_days <= age_days)
            ),
            "btyd_recency_days is not 0 although frequency is 0": (frequency == 0) & (recency_days != 0),
        }
        for what, mask in problems.items():
            if mask.any():
                raise ValueError(f"BTYDModel: {int(mask.sum())} of {buyers.sum()} customers: {what}")
        return {
            "buyers": buyers,
            "frequency": frequency,
            "recency": recency_days / unit_days,
            "age": age_days / unit_days,
            "age_days": age_days,
            "monetary": np.nan_to_num(monetary[buyers]),
        }

    # -- fitting -----------------------------------------------------------------------------------------------

    def _fit_bgnbd(self, history: dict[str, np.ndarray], penalizer: float, messages: list[str]) -> tuple:
        """One BG/NBD fit; returns (params or None, reason it is unusable or None)."""
        beta_geo_fitter = _lifetimes_fitters()[0]

        # identical histories share one likelihood term: fit on the distinct patterns with counts as weights
        patterns, counts = np.unique(
            np.column_stack([history["frequency"], history["recency"], history["age"]]),
            axis=0,
            return_counts=True,
        )
        if np.max(patterns[:, 2]) <= 0:
            return None, "every customer made their first purchase on the cutoff day (T = 0)"
        try:
            fitter = _quiet_call(
                lambda: beta_geo_fitter(penalizer_coef=penalizer).fit(
                    patterns[:, 0], patterns[:, 1], patterns[:, 2], weights=counts
                ),
                messages,
            )
        except Exception as exc:  # lifetimes raises ConvergenceError, LinAlgError, ValueError, ...
            return None, f"did not converge ({type(exc).__name__}: {str(exc).strip()})"
        params = {name: float(fitter.params_[name]) for name in ("r", "alpha", "a", "b")}
        reason = _params_out_of_range(params)
        if reason is None:
            probe = bgnbd_expected_purchases(
                params, float(patterns[:, 2].max()), patterns[:, 0], patterns[:, 1], patterns[:, 2]
            )
            if not np.all(np.isfinite(probe)) or np.any(probe < 0):
                bad = int(np.sum(~np.isfinite(probe) | (probe < 0)))
                reason = f"{bad} of {len(probe)} histories get non-finite or negative expected purchases"
        return params, reason

    def _fit_gamma_gamma(
        self, history: dict[str, np.ndarray], penalizer: float, messages: list[str]
    ) -> tuple:
        """One Gamma-Gamma fit on scaled spend; returns (params in currency units or None, reason or None)."""
        gamma_gamma_fitter = _lifetimes_fitters()[1]

        repeat = (history["frequency"] > 0) & (history["monetary"] > 0)
        if repeat.sum() < MIN_GAMMA_GAMMA_CUSTOMERS:
            return None, (
                f"only {int(repeat.sum())} repeat customers with positive spend "
                f"(needs {MIN_GAMMA_GAMMA_CUSTOMERS})"
            )
        frequency = history["frequency"][repeat]
        monetary = history["monetary"][repeat]
        scale = float(monetary.mean())
        try:
            fitter = _quiet_call(
                lambda: gamma_gamma_fitter(penalizer_coef=penalizer).fit(frequency, monetary / scale),
                messages,
            )
        except Exception as exc:
            return None, f"did not converge ({type(exc).__name__}: {str(exc).strip()})"
        params = {name: float(fitter.params_[name]) for name in ("p", "q", "v")}
        reason = _params_out_of_range(params)
        params["v"] *= scale
        if reason is None and params["q"] <= 1:
            reason = f"q = {params['q']:.3g} <= 1: the population mean spend is infinite"
        if reason is None:
            probe = gamma_gamma_expected_spend(
                params, history["frequency"], np.clip(history["monetary"], 0, None)
            )
            if not np.all(np.isfinite(probe)) or np.any(probe < 0):
                bad = int(np.sum(~np.isfinite(probe) | (probe < 0)))
                reason = f"{bad} customers get non-finite or negative expected spend"
        return params, reason

    def _fit_with_retry(
        self, fit_one: Callable, history: dict, penalizer: float, part: str
    ) -> dict[str, Any]:
        messages: list[str] = []
        attempts = []
        retry = 0.0 if penalizer > 0 else RETRY_PENALIZER
        for attempt_penalizer in (float(penalizer), retry):
            params, reason = fit_one(history, attempt_penalizer, messages)
            attempts.append({"penalizer": attempt_penalizer, "params": params, "problem": reason})
            if reason is None:
                break
        usable = attempts[-1]["problem"] is None
        for attempt in attempts:
            if attempt["problem"] is not None:
                messages.append(f"{part} with penalizer {attempt['penalizer']:g}: {attempt['problem']}")
        if not usable:
            messages.append(f"{part}: both fits degenerate, using the fallback estimate")
        return {
            "params": attempts[-1]["params"] if usable else None,
            "penalizer": attempts[-1]["penalizer"] if usable else None,
            "converged": attempts[0]["problem"] is None,
            "fallback_used": not usable,
            "refitted": len(attempts) > 1,
            "attempts": attempts,
            "warnings": messages,
        }

    def fit(self, features: pd.DataFrame, y: Any = None) -> BTYDModel:
        """Fit BG/NBD and Gamma-Gamma on the customers who bought.

        Parameters
        ----------
        features:
            Customer feature table with ``frequency``, ``btyd_recency_days``, ``t_days``, ``btyd_monetary``.
        y:
            Ignored (scikit-learn compatibility).

        Returns
        -------
        BTYDModel
            ``self`` with ``bgnbd_params_`` (r, alpha, a, b; None if the fallback is used), ``gg_params_``
            (p, q, v in currency units; None if the fallback is used), the fallback constants and
            ``diagnostics_`` (``params``, ``converged``, ``fallback_used``, ``warnings`` and per-model detail).
        """
        history = self._histories(features)
        if history["frequency"].size == 0:
            raise ValueError(f"BTYDModel: none of the {len(features)} customers has a purchase to learn from")
        bgnbd = self._fit_with_retry(self._fit_bgnbd, history, self.penalizer, "BG/NBD")
        gamma_gamma = self._fit_with_retry(self._fit_gamma_gamma, history, self.gg_penalizer, "Gamma-Gamma")
        self.bgnbd_params_ = bgnbd["params"]
        self.gg_params_ = gamma_gamma["params"]
        # fallback constants are always learned so that any customer can be scored by the fallback
        self.fallback_prior_purchases_ = float(history["frequency"].mean())
        self.fallback_prior_days_ = max(float(history["age_days"].mean()), 1.0)
        positive_repeat = (history["frequency"] > 0) & (history["monetary"] > 0)
        self.fallback_mean_spend_ = self._fallback_mean_spend(features, history, positive_repeat)
        self.diagnostics_ = {
            "params": {**(self.bgnbd_params_ or {}), **(self.gg_params_ or {})},
            "converged": bgnbd["converged"] and gamma_gamma["converged"],
            "fallback_used": bgnbd["fallback_used"] or gamma_gamma["fallback_used"],
            "warnings": bgnbd["warnings"] + gamma_gamma["warnings"],
            "time_unit": self.time_unit,
            "n_customers": int(history["frequency"].size),
            "n_gamma_gamma_customers": int(positive_repeat.sum()),
            "bgnbd": bgnbd,
            "gamma_gamma": gamma_gamma,
        }
        return self

    @staticmethod
    def _fallback_mean_spend(
        features: pd.DataFrame, history: dict[str, np.ndarray], positive_repeat: np.ndarray
    ) -> float:
        """Mean spend per purchase day for the fallback: over positive repeat spends, else (nobody repeated)
        over the customers' positive mean spend per purchase day (``monetary_mean``) when available."""
        if positive_repeat.any():
            return float(history["monetary"][positive_repeat].mean())
        if "monetary_mean" in features.columns:
            spend = _column(features, "monetary_mean")[history["buyers"]]
            spend = spend[np.isfinite(spend) & (spend > 0)]
            if spend.size:
                return float(spend.mean())
        return 0.0

    # -- prediction --------------------------------------------------------------------------------------------

    def _fallback_purchases(self, history: dict[str, np.ndarray], horizon_days: float) -> np.ndarray:
        rate = (history["frequency"] + self.fallback_prior_purchases_) / (
            history["age_days"] + self.fallback_prior_days_
        )
        return rate * horizon_days

    def expected_purchases(self, features: pd.DataFrame, horizon_days: float | None = None) -> np.ndarray:
        """Expected repeat purchase days in the next ``horizon_days`` (default the constructor's) per customer
        (finite, ≥ 0; 0 for customers who never bought)."""
        check_is_fitted(self, "diagnostics_")
        horizon_days = _horizon(horizon_days, self.horizon_days, "BTYDModel")
        history = self._histories(features)
        result = np.zeros(len(features))
        if self.bgnbd_params_ is None:
            purchases = self._fallback_purchases(history, float(horizon_days))
        else:
            purchases = bgnbd_expected_purchases(
                self.bgnbd_params_,
                float(horizon_days) / self._unit_days(),
                history["frequency"],
                history["recency"],
                history["age"],
            )
            bad = ~np.isfinite(purchases) | (purchases < 0)
            if bad.any():
                warnings.warn(
                    f"BTYDModel: {int(bad.sum())} of {bad.size} customers got non-finite or negative BG/NBD "
                    "expected purchases; the fallback rate estimate is used for them",
                    RuntimeWarning,
                    stacklevel=2,
                )
                purchases = np.where(bad, self._fallback_purchases(history, float(horizon_days)), purchases)
        result[history["buyers"]] = np.clip(purchases, 0.0, None)
        return result

    def expected_spend_per_purchase(self, features: pd.DataFrame) -> np.ndarray:
        """Expected spend of one future purchase day per customer (finite, ≥ 0). Customers with no repeat
        purchase get the population mean; a negative mean repeat spend counts as 0."""
        check_is_fitted(self, "diagnostics_")
        history = self._histories(features)
        frequency = history["frequency"]
        monetary = np.clip(history["monetary"], 0.0, None)
        fallback = (frequency * monetary + self.fallback_mean_spend_) / (frequency + 1.0)
        if self.gg_params_ is None:
            spend = fallback
        else:
            spend = gamma_gamma_expected_spend(self.gg_params_, frequency, monetary)
            spend = np.where(np.isfinite(spend) & (spend >= 0), spend, fallback)
        result = np.zeros(len(features))
        result[history["buyers"]] = np.clip(spend, 0.0, None)
        return result

    def predict(self, features: pd.DataFrame, horizon_days: float | None = None) -> np.ndarray:
        """Expected spend over the next ``horizon_days`` (default the constructor's): expected purchases ×
        expected spend per purchase.

        Returns
        -------
        numpy.ndarray
            One finite, non-negative value per row of ``features`` (0 for customers who never bought).
        """
        return self.expected_purchases(features, horizon_days) * self.expected_spend_per_purchase(features)

    def predict_value(self, features: pd.DataFrame) -> np.ndarray:
        """Model-family score: :meth:`predict` over the constructor's ``horizon_days``."""
        return self.predict(features)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict (parameters of both fits, fallback constants) and the diagnostics, as
        JSON-able values (non-finite numbers in the diagnostics become None)."""
        check_is_fitted(self, "diagnostics_")
        return _state(
            self,
            {
                "bgnbd_params": self.bgnbd_params_,
                "gg_params": self.gg_params_,
                "fallback_prior_purchases": self.fallback_prior_purchases_,
                "fallback_prior_days": self.fallback_prior_days_,
                "fallback_mean_spend": self.fallback_mean_spend_,
                "diagnostics": self.diagnostics_,
            },
        )

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BTYDModel:
        """Rebuild a fitted :class:`BTYDModel` from :meth:`to_dict` output (predicts identically)."""
        model = cls(**_params_from_state(cls, state))
        fitted = state["fitted"]

        def params(values: dict[str, Any] | None) -> dict[str, float] | None:
            return None if values is None else {name: float(v) for name, v in values.items()}

        model.bgnbd_params_ = params(fitted["bgnbd_params"])
        model.gg_params_ = params(fitted["gg_params"])
        model.fallback_prior_purchases_ = float(fitted["fallback_prior_purchases"])
        model.fallback_prior_days_ = float(fitted["fallback_prior_days"])
        model.fallback_mean_spend_ = float(fitted["fallback_mean_spend"])
        model.diagnostics_ = dict(fitted["diagnostics"])
        return model


def baseline_predictions(
    features: pd.DataFrame,
    horizon_days: float,
    *,
    fit_features: pd.DataFrame | None = None,
    rfm_bins: int = 5,
    btyd_penalizer: float = 0.0,
    gg_penalizer: float = 0.0,
    names: Sequence[str] = BASELINE_NAMES,
) -> dict[str, np.ndarray]:
    """Fit the baselines and score customers with them.

    Parameters
    ----------
    features:
        Customers to score (feature table at a cutoff).
    horizon_days:
        Forecast horizon of the money baselines (``past_spend``, ``btyd``).
    fit_features:
        Customers to fit on (default: ``features``), e.g. the buyers at the same cutoff.
    rfm_bins, btyd_penalizer, gg_penalizer:
        Settings of :class:`RFMScore` and :class:`BTYDModel`.
    names:
        Which of :data:`BASELINE_NAMES` to compute (BG/NBD is fitted only when ``btyd`` is asked for).

    Returns
    -------
    dict
        Baseline name -> one score per row of ``features``: ``rfm`` (R+F+M with ties broken by M),
        ``rfm_sum`` (plain R+F+M), ``past_spend`` and ``btyd`` (money over the horizon).
    """
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise ValueError(f"baselines: unknown name(s) {unknown} (known: {', '.join(BASELINE_NAMES)})")
    fit_on = features if fit_features is None else fit_features
    result: dict[str, np.ndarray] = {}
    if "rfm" in names or "rfm_sum" in names:
        rfm = RFMScore(n_bins=rfm_bins).fit(fit_on)
        if "rfm" in names:
            result["rfm"] = rfm.predict_rank_key(features)
        if "rfm_sum" in names:
            result["rfm_sum"] = rfm.predict(features)
    if "past_spend" in names:
        result["past_spend"] = PastSpend().fit(fit_on).predict(features, horizon_days)
    if "btyd" in names:
        btyd = BTYDModel(penalizer=btyd_penalizer, gg_penalizer=gg_penalizer).fit(fit_on)
        result["btyd"] = btyd.predict(features, horizon_days)
    return {name: result[name] for name in names}
