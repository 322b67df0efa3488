"""Grade policy: scores → A–E grades, value × potential matrix cells and service strategies.

Everything comes from the ``policy:`` section of the experiment YAML, merged over the shipped defaults
(``segml/resources/default_policy.yaml``; see ``docs/policy.md`` for every key).

How a customer is graded
------------------------
1. Three raw measures per customer: current value (``value_feature``, default ``spend_365d``, or
   ``margin_<longest window>d`` when ``value_measure`` is ``margin``: see :data:`ValueMeasure`), potential
   value (the model's predicted future spend) and loyalty
   (``(1 - w) * active_months_share + w * repurchase``, ``w = loyalty.repurchase_weight``, default 0.25).
2. Each measure becomes a percentile rank against a reference distribution frozen at training (stored
   quantiles over customers with purchases). The rank of ``x`` is the fraction of the reference ≤ ``x``,
   interpolated linearly between stored quantiles (see :func:`percentile_rank`), so a customer's rank never
   depends on who else is scored in the same batch.
3. Composite score = weighted sum of the three ranks (0..1).
4. Grades: ``shares`` freezes score thresholds at training so that the grades hold the configured population
   shares; ``score_thresholds`` / ``value_thresholds`` use fixed lower bounds on the score / on predicted
   value. A customer exactly at a lower bound gets the better grade. Grades are monotone in what they
   threshold.
5. Customers without purchases get the ``new_customer`` grade; their score is NaN (their ranks are still
   reported: the potential rank tells a promising newcomer apart).
6. Matrix: the value rank × the potential axis. By default (``matrix.potential_axis: growth``) the potential axis
   is expected growth — the forecast relative to current value — ranked among training customers of similar
   current value (:func:`growth_rank`), so the matrix shows direction instead of repeating the value axis.

``weights`` may be a mapping, the preset ``classic`` (0.6 / 0.3 / 0.1) or ``auto``: chosen inside calibration by
:func:`segml.selection.inner_validation` and applied with :meth:`GradePolicy.with_weights` before fitting.

No pickle anywhere: a :class:`FittedPolicy` is a plain dict / YAML document.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from segml import storage
from segml.config import from_mapping
from segml.errors import ConfigError, InputFileError

#: format marker written into every fitted policy document
FITTED_POLICY_FORMAT = "segml.fitted_policy"
FITTED_POLICY_VERSION = 2
#: versions :meth:`FittedPolicy.from_dict` reads (version 1 has no growth reference: its potential axis is
#: the forecast's rank)
READABLE_FITTED_POLICY_VERSIONS = (1, 2)

#: stored quantiles per value band of the growth reference
GROWTH_REFERENCE_QUANTILES = 201
#: fewer purchasers than this in a value band at fit: the band ranks growth against all purchasers
MIN_GROWTH_BAND_CUSTOMERS = 30

#: the three levels of each matrix axis, worst first
MATRIX_LEVELS = ("low", "mid", "high")
MATRIX_CELL_KEYS = tuple(f"{value}_{potential}" for value in MATRIX_LEVELS for potential in MATRIX_LEVELS)

#: columns of the frame returned by :meth:`FittedPolicy.grade`
GRADE_COLUMNS = (
    "customer_id",
    "grade",
    "grade_name",
    "score",
    "value_rank",
    "potential_rank",
    "growth_rank",
    "loyalty_rank",
    "value_level",
    "potential_level",
    "matrix_cell",
    "strategy",
)

_SUM_TOLERANCE = 1e-9

# libyaml's safe dumper/loader when available: a fitted policy holds ~3000 floats
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# --------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Weights:
    """Weights of the three percentile ranks in the composite score. Omitted components are 0."""

    value: float = 0.0
    potential: float = 0.0
    loyalty: float = 0.0


#: named fixed weightings ``policy.weights`` may name instead of a mapping
WEIGHT_PRESETS = {"classic": {"value": 0.6, "potential": 0.3, "loyalty": 0.1}}
#: ``policy.weights: auto``: chosen inside calibration (:func:`segml.selection.inner_validation`)
AUTO_WEIGHTS = "auto"


@dataclass
class LoyaltyDefinition:
    """loyalty = (1 - repurchase_weight) * feature + repurchase_weight * repurchase_feature."""

    feature: str
    repurchase_feature: str
    repurchase_weight: float


@dataclass
class Grade:
    """One grade, in the order best → worst. Names and strategies may be in any language."""

    code: str
    name: str
    strategy: str = ""
    #: population share at training (method ``shares``)
    share: float | None = None
    #: yearly service cost per customer (currency), used for ROI-style summaries
    cost_per_customer: float | None = None


@dataclass
class NewCustomerGrade:
    """The grade of customers who have not bought yet (attributes only)."""

    code: str
    name: str
    strategy: str = ""
    cost_per_customer: float | None = None
    #: the matrix cell reported for new customers (default: the grade name)
    matrix_cell: str | None = None


@dataclass
class ValuePotentialMatrix:
    """3 × 3 matrix on the value rank and the potential-axis rank.

    Each axis is cut at two points: rank < ``cuts[0]`` is ``low``, < ``cuts[1]`` is ``mid``, else ``high``.
    ``cells`` names each ``<value level>_<potential level>`` cell (e.g. ``high_high: stars``).

    The potential axis (``potential_axis``) is ``growth`` by default: the customer's expected growth — the
    forecast relative to their current value — ranked among customers of similar current value (the same
    value-rank band, ``growth_bands`` equal bands), so it shows who is expected to grow or decline instead of
    repeating the value axis. ``forecast`` ranks the forecast itself (what the grade score uses).
    """

    value_cuts: list[float]
    potential_cuts: list[float]
    cells: dict[str, str]
    potential_axis: Literal["growth", "forecast"] = "growth"
    growth_bands: int = 10


@dataclass
class Hysteresis:
    """Grade stability between two gradings (``policy.hysteresis``): a customer changes grade only when the
    score crosses the boundary of the current grade by ``margin`` (on the score scale 0..1, i.e. 0.03 = 3
    composite-rank points; on predicted value with ``value_thresholds``), or once the plain grade has
    differed from the kept one for ``periods`` consecutive gradings. ``margin: 0`` switches it off."""

    margin: float = field(default=0.0, metadata={"ge": 0})
    periods: int = field(default=3, metadata={"ge": 1})

    @property
    def enabled(self) -> bool:
        return self.margin > 0


@dataclass
class RiskFlags:
    """Thresholds of the per-customer risk flags (``policy.risk_flags``; :mod:`segml.flags`). A flag is raised
    when its feature is above the threshold; flags whose feature the data does not have (no ``data.invoices``,
    no ``data.interactions``) are not computed, and without any such feature ``grades.parquet`` has no
    ``risk_flags`` column."""

    #: ``days_late_mean`` above this (days) → "pays late"
    pays_late_days: float = field(default=15.0, metadata={"ge": 0})
    #: ``overdue_amount`` above this (currency) → "overdue invoices"
    overdue_amount: float = field(default=0.0, metadata={"ge": 0})
    #: ``days_late_trend`` above this (days) → "paying later"
    paying_later_days: float = field(default=7.0, metadata={"ge": 0})
    #: ``complaints_90d`` above this → "recent complaints"
    complaints_90d: float = field(default=0.0, metadata={"ge": 0})
    #: ``complaints_trend`` above this → "complaints up"
    complaints_trend: float = field(default=0.0, metadata={"ge": 0})


#: what current value is measured in: net spend (``revenue``) or margin (``margin``, needs a ``cost`` or
#: ``margin`` role on the transaction sources). Unset, :func:`segml.config.check_experiment` picks margin when
#: the sources map one and revenue otherwise, and points the default ``value_feature`` at the longest window
#: of that measure (``margin_365d`` / ``spend_365d``); an explicit ``value_feature`` wins.
ValueMeasure = Literal["revenue", "margin"]


@dataclass
class GradePolicy:
    """A validated grade policy (unfitted). Build with :meth:`from_config`; fit with :meth:`fit`."""

    #: fixed weights, or the string ``"auto"`` (``policy.weights: auto``) until :meth:`with_weights` fixes them
    weights: Weights
    value_feature: str
    loyalty: LoyaltyDefinition
    method: Literal["shares", "score_thresholds", "value_thresholds"]
    grades: list[Grade]
    new_customer: NewCustomerGrade
    matrix: ValuePotentialMatrix
    #: lower bounds of every grade but the last, best first (score 0..1, or predicted value)
    thresholds: list[float] | None = None
    #: number of stored quantiles per reference distribution (levels 0, 1/(n-1), ..., 1)
    reference_quantiles: int = 1001
    #: grade stability between successive gradings (monitor steps, ``segml grade --previous``)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    #: ``revenue`` or ``margin`` (:data:`ValueMeasure`); None until the experiment check resolves it
    value_measure: ValueMeasure | None = None
    #: thresholds of the per-customer risk flags (payment and interaction features)
    risk_flags: RiskFlags = field(default_factory=RiskFlags)

    def __post_init__(self) -> None:
        _validate_policy(self)

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, policy: dict[str, Any] | None = None, *, merge_defaults: bool = True) -> GradePolicy:
        """Build a policy from the experiment's raw ``policy:`` mapping.

        Parameters
        ----------
        policy:
            The ``policy:`` section (``cfg.policy``); ``None`` or ``{}`` gives the defaults.
        merge_defaults:
            Merge ``policy`` over the shipped defaults (mappings key by key; lists and ``weights`` replaced
            as a whole). ``False`` requires a complete policy (used when reading a fitted policy back).

        Returns
        -------
        GradePolicy

        Raises
        ------
        ConfigError
            Unknown key (named by dotted path, e.g. ``policy.matrix.cels``), wrong type, or an invalid value.
        """
        policy = {} if policy is None else policy
        if not isinstance(policy, dict):
            raise ConfigError(f"policy: expected a mapping, got {type(policy).__name__}")
        data = merge_policy(default_policy_mapping(), policy) if merge_defaults else policy
        weights = data.get("weights") if isinstance(data, dict) else None
        if isinstance(weights, str):
            if weights == AUTO_WEIGHTS:
                # validated with a placeholder, then marked: fit() refuses until with_weights() is called
                built = from_mapping(cls, {**data, "weights": WEIGHT_PRESETS["classic"]}, "policy")
                built.weights = AUTO_WEIGHTS  # type: ignore[assignment]
                return built
            if weights not in WEIGHT_PRESETS:
                raise ConfigError(
                    f"policy.weights: expected a mapping {{value, potential, loyalty}}, 'auto' or a preset "
                    f"({', '.join(WEIGHT_PRESETS)}), got {weights!r}"
                )
            data = {**data, "weights": dict(WEIGHT_PRESETS[weights])}
        return from_mapping(cls, data, "policy")

    @property
    def auto_weights(self) -> bool:
        """True when ``policy.weights`` is ``auto`` (weights still to be chosen inside calibration)."""
        return isinstance(self.weights, str) and self.weights == AUTO_WEIGHTS

    def with_weights(self, weights: Weights | dict[str, float]) -> GradePolicy:
        """A copy of this policy with fixed weights (e.g. the ones :func:`segml.selection.inner_validation`
        chose for ``weights: auto``); validated like any policy."""
        if isinstance(weights, dict):
            weights = from_mapping(Weights, weights, "policy.weights")
        return dataclasses.replace(self, weights=weights)

    def to_dict(self) -> dict[str, Any]:
        """The complete policy as a plain mapping (round-trips through :meth:`from_config`). An unresolved
        ``value_measure`` (None: no margin mapped, none asked for) is left out, so such a policy writes the
        document it wrote before the key existed."""
        out = dataclasses.asdict(self)
        if out["value_measure"] is None:
            del out["value_measure"]
        return out

    # -- fitting -----------------------------------------------------------------------------------------------

    @property
    def threshold_on(self) -> Literal["score", "predicted_value"]:
        """What grade boundaries are lower bounds of."""
        return "predicted_value" if self.method == "value_thresholds" else "score"

    def loyalty_measure(self, features: pd.DataFrame) -> np.ndarray:
        """Raw loyalty per customer: ``(1 - w) * feature + w * repurchase_feature`` (missing values count 0)."""
        share = _numeric_column(features, self.loyalty.feature, "policy.loyalty.feature")
        weight = self.loyalty.repurchase_weight
        if weight == 0.0:
            return share
        repurchase = _numeric_column(
            features, self.loyalty.repurchase_feature, "policy.loyalty.repurchase_feature"
        )
        return (1.0 - weight) * share + weight * repurchase

    def fit(
        self,
        features: pd.DataFrame,
        potential: np.ndarray | pd.Series,
        *,
        axis_potential: np.ndarray | pd.Series | None = None,
    ) -> FittedPolicy:
        """Freeze reference distributions (and, for ``shares``, grade thresholds) on a training population.

        Parameters
        ----------
        features:
            Feature table (``segml.features`` contract): ``customer_id``, ``has_purchases``, the value feature
            and the loyalty feature(s). Only customers with purchases enter the references.
        potential:
            Predicted future spend, aligned by position with the rows of ``features``.
        axis_potential:
            The forecast the matrix's growth axis is measured on, when it differs from ``potential`` (e.g. the
            grade score uses a fallback scorer but the matrix keeps the potential model's forecast); pass the
            same to :meth:`FittedPolicy.grade`. Default: ``potential``.

        Returns
        -------
        FittedPolicy
        """
        if self.auto_weights:
            raise ConfigError(
                "policy.weights is auto: choose the weights inside calibration "
                "(segml.selection.inner_validation) and fix them with GradePolicy.with_weights before fitting"
            )
        measures = _measures(self, features, potential)
        purchased = measures["purchased"]
        n_train = int(purchased.sum())
        if n_train == 0:
            raise InputFileError(
                f"features: none of the {len(features)} rows has has_purchases = True; "
                "a policy needs customers with purchases to fit"
            )
        levels = self.reference_quantiles
        value_reference = frozen_quantiles(measures["value"][purchased], levels)
        growth = None
        if self.matrix.potential_axis == "growth":
            axis = measures["potential"] if axis_potential is None else _axis_values(axis_potential, features)
            growth = fit_growth_reference(
                measures["value"][purchased],
                axis[purchased],
                percentile_rank(measures["value"][purchased], value_reference),
                self.matrix.growth_bands,
            )
        fitted = FittedPolicy(
            policy=self,
            value_reference=value_reference,
            potential_reference=frozen_quantiles(measures["potential"][purchased], levels),
            loyalty_reference=frozen_quantiles(measures["loyalty"][purchased], levels),
            grade_thresholds=list(self.thresholds or []),
            n_training_customers=n_train,
            training_grade_counts={},
            growth_reference=growth,
        )
        if self.method == "shares":
            return fitted.refit_boundaries(features, potential)
        return fitted._with_training_counts(features, potential)


def default_policy_mapping() -> dict[str, Any]:
    """The shipped default ``policy:`` mapping (a fresh copy)."""
    text = resources.files("segml").joinpath("resources/default_policy.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["policy"]


def merge_policy(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge an experiment's ``policy:`` mapping over the defaults.

    Mappings merge key by key (so ``matrix: {cells: {low_low: 低价值}}`` renames one cell); lists and the
    ``weights`` mapping are replaced as a whole (the weights written are exactly the weights used).
    """
    return _merge(defaults, overrides, replace_whole={"weights"})


def _merge(base: Any, over: Any, replace_whole: set[str]) -> Any:
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    merged = dict(base)
    for key, value in over.items():
        if key in replace_whole or key not in base:
            merged[key] = value
        else:
            merged[key] = _merge(base[key], value, set())
    return merged


def _validate_policy(policy: GradePolicy) -> None:  # noqa: C901 - one check per rule, in reading order
    w = policy.weights
    if isinstance(w, str):
        if w != AUTO_WEIGHTS:
            raise ConfigError(f"policy.weights: expected a mapping or 'auto', got {w!r}")
        w = Weights(**WEIGHT_PRESETS["classic"])  # the rest of the policy is validated as usual
    for name in ("value", "potential", "loyalty"):
        weight = getattr(w, name)
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"policy.weights.{name}: must be a number ≥ 0, got {weight!r}")
    total = w.value + w.potential + w.loyalty
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ConfigError(
            f"policy.weights: value + potential + loyalty must sum to 1, got "
            f"{w.value:g} + {w.potential:g} + {w.loyalty:g} = {total:g}"
        )
    rw = policy.loyalty.repurchase_weight
    if not (math.isfinite(rw) and 0.0 <= rw <= 1.0):
        raise ConfigError(f"policy.loyalty.repurchase_weight: must be between 0 and 1, got {rw!r}")
    if not policy.value_feature:
        raise ConfigError("policy.value_feature: must name a feature column")

    grades = policy.grades
    if len(grades) < 2:
        raise ConfigError(f"policy.grades: need at least 2 grades, got {len(grades)}")
    codes = [g.code for g in grades] + [policy.new_customer.code]
    for i, grade in enumerate(grades):
        if not grade.code.strip() or not grade.name.strip():
            raise ConfigError(f"policy.grades.{i}: code and name must not be empty")
        if grade.cost_per_customer is not None and not (
            math.isfinite(grade.cost_per_customer) and grade.cost_per_customer >= 0
        ):
            raise ConfigError(
                f"policy.grades.{i}.cost_per_customer: must be ≥ 0, got {grade.cost_per_customer!r}"
            )
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise ConfigError(
            f"policy.grades: grade codes must be unique (new_customer included), repeated: {', '.join(duplicates)}"
        )
    if not policy.new_customer.name.strip():
        raise ConfigError("policy.new_customer.name: must not be empty")

    if policy.method == "shares":
        if policy.thresholds is not None:
            raise ConfigError(
                "policy.thresholds: only used with method score_thresholds or value_thresholds "
                "(method is shares); remove it or change policy.method"
            )
        for i, grade in enumerate(grades):
            if grade.share is None or not math.isfinite(grade.share) or grade.share <= 0:
                raise ConfigError(
                    f"policy.grades.{i}.share: method shares needs a positive share per grade, got {grade.share!r}"
                )
        share_total = sum(g.share for g in grades)  # type: ignore[misc]
        if abs(share_total - 1.0) > _SUM_TOLERANCE:
            raise ConfigError(f"policy.grades: shares must sum to 1, got {share_total:g}")
    else:
        thresholds = policy.thresholds
        if thresholds is None or len(thresholds) != len(grades) - 1:
            got = "none" if thresholds is None else str(len(thresholds))
            raise ConfigError(
                f"policy.thresholds: method {policy.method} needs {len(grades) - 1} lower bounds "
                f"(one per grade but the last, best first), got {got}"
            )
        if not all(math.isfinite(t) for t in thresholds):
            raise ConfigError(f"policy.thresholds: must be finite numbers, got {thresholds}")
        if any(a <= b for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ConfigError(
                f"policy.thresholds: must be strictly decreasing (best grade first), got {thresholds}"
            )
        if policy.method == "score_thresholds" and not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"policy.thresholds: score thresholds must lie in [0, 1], got {thresholds}")

    if policy.reference_quantiles < 101:
        raise ConfigError(f"policy.reference_quantiles: must be ≥ 101, got {policy.reference_quantiles}")

    matrix = policy.matrix
    for axis in ("value_cuts", "potential_cuts"):
        cuts = getattr(matrix, axis)
        if len(cuts) != 2 or not (0.0 < cuts[0] < cuts[1] < 1.0):
            raise ConfigError(
                f"policy.matrix.{axis}: need two increasing cut points strictly between 0 and 1, got {cuts}"
            )
    unknown = sorted(set(matrix.cells) - set(MATRIX_CELL_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key 'policy.matrix.cells.{unknown[0]}' (allowed here: {', '.join(MATRIX_CELL_KEYS)})"
        )
    missing = [key for key in MATRIX_CELL_KEYS if not str(matrix.cells.get(key, "")).strip()]
    if missing:
        raise ConfigError(f"policy.matrix.cells: all 9 cells need a name, missing: {', '.join(missing)}")
    if not 1 <= matrix.growth_bands <= 100:
        raise ConfigError(f"policy.matrix.growth_bands: must be between 1 and 100, got {matrix.growth_bands}")


# --------------------------------------------------------------------------------------------------------------
# Frozen reference distributions


def frozen_quantiles(values: np.ndarray, levels: int) -> list[float]:
    """``levels`` quantiles of ``values`` at 0, 1/(levels-1), ..., 1 (linear interpolation), as floats."""
    values = np.asarray(values, dtype=float)
    probabilities = np.linspace(0.0, 1.0, levels)
    return [float(q) for q in np.quantile(values, probabilities, method="linear")]


def percentile_rank(values: np.ndarray, reference: list[float] | np.ndarray) -> np.ndarray:
    """Percentile rank of each value against a frozen reference (stored quantiles).

    With stored quantiles ``q_0 ≤ … ≤ q_m`` at levels ``p_i = i/m``: ``x < q_0`` → 0; ``x > q_m`` → 1; a value
    equal to stored quantiles ``q_a = … = q_b`` (a run of ties, e.g. a spike of zero spend; ``a = b`` when
    not tied) → the middle of the run, ``(p_a + p_b) / 2``; otherwise, with ``j`` the last index with
    ``q_j < x`` and ``k = j + 1``, the rank is ``p_j + (p_k - p_j) (x - q_j) / (q_k - q_j)``. The rank is a
    non-decreasing function of ``x`` alone. NaN → NaN.
    """
    q = np.asarray(reference, dtype=float)
    x = np.asarray(values, dtype=float)
    if q.size >= 2 and x.ndim == 1 and not np.isnan(q).any() and (q[1:] >= q[:-1]).all():
        return _percentile_rank_sorted(q, x)
    p = np.linspace(0.0, 1.0, q.size)
    above = np.searchsorted(q, x, side="right")  # number of stored quantiles ≤ x
    below = np.searchsorted(q, x, side="left")  # number of stored quantiles < x
    lower = np.clip(above - 1, 0, q.size - 1)
    upper = np.clip(above, 0, q.size - 1)
    gap = q[upper] - q[lower]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(gap > 0, (x - q[lower]) / gap, 0.0)
    rank = p[lower] + (p[upper] - p[lower]) * fraction
    tied = above > below  # x equals the stored quantiles below..above-1
    run_mid = (p[np.clip(below, 0, q.size - 1)] + p[lower]) / 2.0
    rank = np.where(tied, run_mid, rank)
    rank = np.where(above == 0, 0.0, np.where(below >= q.size, 1.0, rank))
    return np.where(np.isnan(x), np.nan, np.clip(rank, 0.0, 1.0))


def _percentile_rank_sorted(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`percentile_rank` for sorted NaN-free quantiles, with the same floating-point operations per
    value but one binary search (the run of tied quantiles comes from a table) and per-interval tables
    instead of per-row index arithmetic."""
    m = q.size
    p = np.linspace(0.0, 1.0, m)
    # per interval a = number of quantiles ≤ x (0..m): lower / upper quantile index as in the general rule
    a = np.arange(m + 1)
    lower = np.clip(a - 1, 0, m - 1)
    upper = np.clip(a, 0, m - 1)
    q_lower = q[lower]
    with np.errstate(invalid="ignore"):
        gap = q[upper] - q[lower]
    gap_safe = np.where(gap > 0, gap, 1.0)  # gap is 0 only below q_0 or above q_m, where x is clipped
    p_lower = p[lower]
    p_step = p[upper] - p[lower]
    # a value equal to quantile a-1 sits in a run of ties starting at run_start: the rank is the run's middle
    run_start = np.searchsorted(q, q, side="left")
    run_mid = (p[run_start[lower]] + p[lower]) / 2.0
    above = _count_at_most(q, x)
    # outside [q_0, q_m] the rank is p_lower (0 or 1) exactly: clipping x makes the fraction 0 there and
    # leaves every value inside unchanged
    # rank = p_lower + p_step · ((x − q_lower) / gap), computed in place (same operations, fewer temporaries)
    fraction = np.clip(x, q[0], q[-1])
    start = q_lower.take(above)
    with np.errstate(invalid="ignore"):  # only infinite quantiles: those values take the tied rank below
        fraction -= start
        fraction /= gap_safe.take(above)
        rank = p_step.take(above)
        rank *= fraction
    rank += p_lower.take(above)
    tied = np.flatnonzero(x == start)  # never for a = 0 (x < q_0) or NaN
    if tied.size:
        rank[tied] = run_mid.take(above.take(tied))
    return np.clip(rank, 0.0, 1.0, out=rank)


#: buckets of the lookup table that replaces the binary search of :func:`_count_at_most`
_LOOKUP_BUCKETS = 65_536
#: most distinct quantiles one bucket may hold (else the plain binary search is used)
_LOOKUP_MAX_PER_BUCKET = 8


def _count_at_most(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.searchsorted(q, x, side="right")`` (the number of quantiles ≤ x) for sorted NaN-free ``q``, for
    every non-NaN x (NaN x get an arbitrary count; their rank is NaN whatever it is).

    A binary search per value costs ~10 mispredicted branches; instead the range of ``q`` is cut into equal
    buckets, a table gives the number of distinct quantiles in the buckets before x's bucket, and at most
    :data:`_LOOKUP_MAX_PER_BUCKET` vectorised compare-and-step passes count those in its own bucket. The
    bucket of a value is a non-decreasing function of it, so a quantile in an earlier bucket is ≤ x and one in
    a later bucket is > x: the count is exact.
    """
    distinct = np.unique(q)
    span = float(distinct[-1] - distinct[0]) if distinct.size >= 2 else 0.0
    scale = _LOOKUP_BUCKETS / span if span > 0 and math.isfinite(span) else math.inf
    if not math.isfinite(scale) or x.size < 4 * _LOOKUP_BUCKETS:
        return np.searchsorted(q, x, side="right")

    def bucket(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            t = np.fmax((values - distinct[0]) * scale, 0.0)  # NaN → 0
        return np.minimum(t, _LOOKUP_BUCKETS - 1).astype(np.intp)

    per_bucket = np.bincount(bucket(distinct), minlength=_LOOKUP_BUCKETS)
    steps = int(per_bucket.max())
    if steps > _LOOKUP_MAX_PER_BUCKET:
        return np.searchsorted(q, x, side="right")
    before = np.concatenate([[0], np.cumsum(per_bucket)[:-1]])
    guarded = np.append(distinct, np.nan)  # past the last quantile: NaN ≤ x is False, the steps stop
    count = before[bucket(x)]
    for _ in range(steps):
        count += guarded[count] <= x
    # distinct quantiles ≤ x → all quantiles ≤ x
    at_most = np.concatenate([[0], np.searchsorted(q, distinct, side="right")])
    return at_most[count]


# --------------------------------------------------------------------------------------------------------------
# Expected growth (the matrix's potential axis)


def _positive_median(values: np.ndarray) -> float:
    """Median of ``values`` if positive, else the mean of the positive values, else 1 (a scale, never 0)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size:
        median = float(np.median(values))
        if median > 0:
            return median
        positive = values[values > 0]
        if positive.size:
            return float(positive.mean())
    return 1.0


def growth_measure(
    value: np.ndarray, potential: np.ndarray, value_offset: float, forecast_offset: float
) -> np.ndarray:
    """Expected growth: ``log((max(forecast, 0) + f0) / (max(value, 0) + v0))``.

    The forecast relative to the customer's current value. Ranked within a value band, it orders customers as
    the forecast ÷ current run-rate over the horizon does (the run-rate is the current value rescaled to the
    horizon's length, a constant factor); the offsets ``f0``, ``v0`` (medians over the training purchasers,
    frozen) keep a customer with no current value from getting an infinite ratio. NaN forecast → NaN.
    """
    forecast = np.asarray(potential, dtype=float)
    current = np.asarray(value, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.log(
            (np.maximum(forecast, 0.0) + forecast_offset) / (np.maximum(current, 0.0) + value_offset)
        )


def _growth_band(value_rank: np.ndarray, bands: int) -> np.ndarray:
    """Band index 0..bands-1 of each value rank (equal-width bands of the 0..1 rank; NaN → band 0)."""
    rank = np.nan_to_num(np.asarray(value_rank, dtype=float), nan=0.0)
    return np.clip(np.floor(rank * bands), 0, bands - 1).astype(np.int64)


def fit_growth_reference(
    value: np.ndarray, potential: np.ndarray, value_rank: np.ndarray, bands: int
) -> dict[str, Any]:
    """Frozen reference of expected growth per value band, on the training purchasers.

    Returns
    -------
    dict
        ``value_offset``, ``forecast_offset`` (see :func:`growth_measure`), ``overall`` (quantiles over all
        purchasers) and ``bands`` (one quantile list per value band, None when the band holds fewer than
        :data:`MIN_GROWTH_BAND_CUSTOMERS` purchasers: it then ranks against ``overall``).
    """
    value = np.asarray(value, dtype=float)
    potential = np.asarray(potential, dtype=float)
    value_offset = _positive_median(value)
    forecast_offset = _positive_median(potential)
    growth = growth_measure(value, potential, value_offset, forecast_offset)
    band = _growth_band(value_rank, bands)
    per_band: list[list[float] | None] = []
    for b in range(bands):
        members = growth[band == b]
        members = members[np.isfinite(members)]
        per_band.append(
            frozen_quantiles(members, GROWTH_REFERENCE_QUANTILES)
            if members.size >= MIN_GROWTH_BAND_CUSTOMERS
            else None
        )
    finite = growth[np.isfinite(growth)]
    return {
        "value_offset": float(value_offset),
        "forecast_offset": float(forecast_offset),
        "overall": frozen_quantiles(finite if finite.size else np.zeros(1), GROWTH_REFERENCE_QUANTILES),
        "bands": per_band,
    }


def growth_rank(
    value: np.ndarray, potential: np.ndarray, value_rank: np.ndarray, reference: dict[str, Any]
) -> np.ndarray:
    """Percentile rank (0..1) of each customer's expected growth among training customers of the same value
    band (:func:`fit_growth_reference`). A function of the customer's own row and the frozen reference."""
    growth = growth_measure(value, potential, reference["value_offset"], reference["forecast_offset"])
    bands = reference["bands"]
    band = _growth_band(value_rank, len(bands))
    rank = np.full(growth.shape, np.nan)
    for b, quantiles in enumerate(bands):
        members = np.flatnonzero(band == b)
        if members.size:
            rank[members] = percentile_rank(growth[members], quantiles or reference["overall"])
    return rank


def _check_growth_reference(reference: Any, bands: int) -> dict[str, Any]:
    """Validate a stored growth reference (raises ConfigError naming what is wrong)."""
    try:
        checked = {
            "value_offset": float(reference["value_offset"]),
            "forecast_offset": float(reference["forecast_offset"]),
            "overall": [float(v) for v in reference["overall"]],
            "bands": [None if q is None else [float(v) for v in q] for q in reference["bands"]],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"fitted policy: malformed growth_reference ({exc.__class__.__name__}: {exc})"
        ) from None
    if not (checked["value_offset"] > 0 and checked["forecast_offset"] > 0):
        raise ConfigError("fitted policy: growth_reference offsets must be positive")
    if len(checked["bands"]) != bands:
        raise ConfigError(
            f"fitted policy: growth_reference has {len(checked['bands'])} bands, policy.matrix.growth_bands "
            f"is {bands}"
        )
    for quantiles in [checked["overall"], *(q for q in checked["bands"] if q is not None)]:
        if len(quantiles) < 2 or np.any(np.diff(quantiles) < 0):
            raise ConfigError("fitted policy: growth_reference quantiles must be non-decreasing lists")
    return checked


# --------------------------------------------------------------------------------------------------------------
# Fitted policy


@dataclass
class FittedPolicy:
    """A policy with its training-time references frozen. Grading is a pure function of one customer's row."""

    policy: GradePolicy
    value_reference: list[float]
    potential_reference: list[float]
    loyalty_reference: list[float]
    #: lower bounds of every grade but the last, best first, on the score or on predicted value
    grade_thresholds: list[float]
    n_training_customers: int
    #: customers per grade code on the training population (purchasers only)
    training_grade_counts: dict[str, int]
    #: expected-growth reference of the matrix's potential axis (None: the axis is the forecast's rank)
    growth_reference: dict[str, Any] | None = None

    @property
    def threshold_on(self) -> Literal["score", "predicted_value"]:
        """What :attr:`grade_thresholds` are lower bounds of."""
        return self.policy.threshold_on

    def grade(
        self,
        features: pd.DataFrame,
        potential: np.ndarray | pd.Series,
        *,
        axis_potential: np.ndarray | pd.Series | None = None,
    ) -> pd.DataFrame:
        """Grade customers.

        Parameters
        ----------
        features:
            Feature table rows (any batch: one customer or millions give the same row results).
        potential:
            Predicted future spend aligned by position with ``features`` (NaN allowed only for customers
            without purchases).

        Returns
        -------
        pd.DataFrame
            One row per input row, same order: ``customer_id, grade, grade_name, score, value_rank,
            potential_rank, loyalty_rank, value_level, potential_level, matrix_cell, strategy``. New customers
            (``has_purchases`` False) get the new-customer grade, score NaN, levels None.
        """
        columns = self.grade_columns(features, potential, axis_potential=axis_potential)
        return pd.DataFrame(columns, columns=list(GRADE_COLUMNS), copy=False)

    def grade_columns(
        self,
        features: pd.DataFrame,
        potential: np.ndarray | pd.Series,
        *,
        axis_potential: np.ndarray | pd.Series | None = None,
    ) -> dict[str, np.ndarray]:
        """The columns of :meth:`grade` as fresh arrays (the output frame is built once, without copies)."""
        policy = self.policy
        measures = _measures(policy, features, potential)
        purchased = measures["purchased"]
        value_rank = percentile_rank(measures["value"], self.value_reference)
        potential_rank = percentile_rank(measures["potential"], self.potential_reference)
        loyalty_rank = percentile_rank(measures["loyalty"], self.loyalty_reference)
        if self.growth_reference is not None:
            axis = measures["potential"] if axis_potential is None else _axis_values(axis_potential, features)
            growth = growth_rank(measures["value"], axis, value_rank, self.growth_reference)
            axis_rank = growth
        else:
            growth = np.full(potential_rank.shape, np.nan)
            axis_rank = potential_rank
        score, grade_index = self._score_and_index(
            purchased, measures["potential"], value_rank, potential_rank, loyalty_rank
        )

        all_grades = [*policy.grades, policy.new_customer]
        codes = np.array([g.code for g in all_grades], dtype=object)
        names = np.array([g.name for g in all_grades], dtype=object)
        strategies = np.array([g.strategy for g in all_grades], dtype=object)

        # levels and cells as small integer codes (the new-customer entry last), then one lookup per column
        value_level = _matrix_level(value_rank, policy.matrix.value_cuts)
        potential_level = _matrix_level(axis_rank, policy.matrix.potential_cuts)
        new_cell = policy.new_customer.matrix_cell or policy.new_customer.name
        cell_names = np.array(
            [*(policy.matrix.cells[key] for key in MATRIX_CELL_KEYS), new_cell], dtype=object
        )
        cell_index = value_level * len(MATRIX_LEVELS) + potential_level
        cell_index[~purchased] = len(MATRIX_CELL_KEYS)
        level_names = np.array([*MATRIX_LEVELS, None], dtype=object)
        value_level[~purchased] = len(MATRIX_LEVELS)
        potential_level[~purchased] = len(MATRIX_LEVELS)

        return {
            "customer_id": features["customer_id"].to_numpy(copy=True),
            "grade": codes.take(grade_index),
            "grade_name": names.take(grade_index),
            "score": score,
            "value_rank": value_rank,
            "potential_rank": potential_rank,
            "growth_rank": growth,
            "loyalty_rank": loyalty_rank,
            "value_level": level_names.take(value_level),
            "potential_level": level_names.take(potential_level),
            "matrix_cell": cell_names.take(cell_index),
            "strategy": strategies.take(grade_index),
        }

    def _score_and_index(
        self,
        purchased: np.ndarray,
        potential: np.ndarray,
        value_rank: np.ndarray,
        potential_rank: np.ndarray,
        loyalty_rank: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Composite score (NaN without purchases) and grade index (the new-customer grade last)."""
        policy = self.policy
        score = composite_score(policy.weights, value_rank, potential_rank, loyalty_rank)
        score = np.where(purchased, score, np.nan)
        graded_on = potential if policy.method == "value_thresholds" else score
        grade_index = grade_index_from_thresholds(graded_on, self.grade_thresholds)
        grade_index[~purchased] = len(policy.grades)
        return score, grade_index

    def grade_codes_at(
        self, features: pd.DataFrame, potentials: Sequence[np.ndarray | pd.Series]
    ) -> list[np.ndarray]:
        """The grade code of every row for each alternative potential forecast, value and loyalty unchanged
        (the ``grade`` column :meth:`grade_columns` would give, with the value and loyalty ranks computed
        once): what the grade range of :func:`segml.scoring.grade_range` grades the P10 and P90 with."""
        policy = self.policy
        if not potentials:
            return []
        measures = _measures(policy, features, potentials[0])
        value_rank = percentile_rank(measures["value"], self.value_reference)
        loyalty_rank = percentile_rank(measures["loyalty"], self.loyalty_reference)
        codes = np.array([g.code for g in [*policy.grades, policy.new_customer]], dtype=object)
        out = []
        purchased = measures["purchased"]
        for potential in potentials:
            measured = _checked_potential(features, potential, purchased)
            potential_rank = percentile_rank(measured, self.potential_reference)
            _, index = self._score_and_index(purchased, measured, value_rank, potential_rank, loyalty_rank)
            out.append(codes.take(index))
        return out

    def refit_boundaries(self, features: pd.DataFrame, potential: np.ndarray | pd.Series) -> FittedPolicy:
        """Re-derive share-based grade thresholds on a new population, keeping the frozen references.

        This is the explicit, deliberate way to let grade sizes follow the population again (plain
        :meth:`grade` never moves a boundary). Thresholds: sort the purchasers' scores best first; with
        ``c_k`` the cumulative share of grades 1..k and ``n`` purchasers, ``m_k = floor(c_k n + 0.5)`` and the
        lower bound of grade k is the ``m_k``-th best score (``m_k = 0``: just above the best score, so the
        grade is empty). Customers tied with that score are never split: the whole run of tied scores goes to
        the better grade, unless putting it in the worse grade brings the count above the boundary closer to
        ``m_k`` (then the bound is the next higher score). On the fitting population each boundary therefore
        holds exactly ``m_k`` customers above it unless scores tie at the boundary.

        Returns
        -------
        FittedPolicy
            A new fitted policy; ``self`` is unchanged.

        Raises
        ------
        ConfigError
            If the policy's method is not ``shares`` (fixed thresholds have nothing to re-derive).
        """
        policy = self.policy
        if policy.method != "shares":
            raise ConfigError(
                f"policy.method is {policy.method}: grade boundaries are fixed by policy.thresholds, "
                "there is nothing to re-derive from shares"
            )
        measures = _measures(policy, features, potential)
        purchased = measures["purchased"]
        if not purchased.any():
            raise InputFileError(
                f"features: none of the {len(features)} rows has has_purchases = True; cannot derive grade boundaries"
            )
        score = composite_score(
            policy.weights,
            percentile_rank(measures["value"][purchased], self.value_reference),
            percentile_rank(measures["potential"][purchased], self.potential_reference),
            percentile_rank(measures["loyalty"][purchased], self.loyalty_reference),
        )
        thresholds = share_thresholds(score, [g.share for g in policy.grades])  # type: ignore[misc]
        refitted = dataclasses.replace(
            self, grade_thresholds=thresholds, n_training_customers=int(purchased.sum())
        )
        return refitted._with_training_counts(features, potential)

    def _with_training_counts(
        self, features: pd.DataFrame, potential: np.ndarray | pd.Series
    ) -> FittedPolicy:
        graded = self.grade(features, potential)
        counts = graded.loc[features["has_purchases"].fillna(False).to_numpy(bool), "grade"].value_counts()
        codes = [g.code for g in self.policy.grades]
        return dataclasses.replace(self, training_grade_counts={c: int(counts.get(c, 0)) for c in codes})

    # -- serialisation -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-able document (no pickle). ``from_dict(to_dict())`` reproduces the object exactly."""
        policy = self.policy.to_dict()
        if self.policy.hysteresis == Hysteresis():
            policy.pop("hysteresis")  # default: documents stay as they were before the setting existed
        return {
            "format": FITTED_POLICY_FORMAT,
            "format_version": FITTED_POLICY_VERSION,
            "policy": policy,
            "grade_thresholds": {
                "on": self.threshold_on,
                "lower_bounds": [float(t) for t in self.grade_thresholds],
            },
            "training": {
                "n_customers": int(self.n_training_customers),
                "grade_counts": {str(k): int(v) for k, v in self.training_grade_counts.items()},
            },
            "reference": {
                "value": [float(v) for v in self.value_reference],
                "potential": [float(v) for v in self.potential_reference],
                "loyalty": [float(v) for v in self.loyalty_reference],
            },
            "growth_reference": None
            if self.growth_reference is None
            else _check_growth_reference(self.growth_reference, self.policy.matrix.growth_bands),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FittedPolicy:
        """Rebuild a fitted policy from :meth:`to_dict` output, validating it.

        Raises
        ------
        ConfigError
            Wrong format marker or version, invalid policy, or inconsistent references/thresholds.
        """
        if not isinstance(document, dict) or document.get("format") != FITTED_POLICY_FORMAT:
            raise ConfigError(f"fitted policy: not a {FITTED_POLICY_FORMAT} document")
        version = document.get("format_version")
        if version not in READABLE_FITTED_POLICY_VERSIONS:
            raise ConfigError(
                f"fitted policy: format_version {version!r} is not supported "
                f"(this segml reads versions {', '.join(map(str, READABLE_FITTED_POLICY_VERSIONS))})"
            )
        try:
            policy_mapping = document["policy"]
            if version == 1 and isinstance(policy_mapping, dict):
                # version 1 predates the growth axis: its matrix ranks the forecast itself
                matrix = policy_mapping.get("matrix")
                if isinstance(matrix, dict):
                    policy_mapping = {**policy_mapping, "matrix": {"potential_axis": "forecast", **matrix}}
            policy = GradePolicy.from_config(policy_mapping, merge_defaults=False)
            reference = document["reference"]
            references = {
                name: [float(v) for v in reference[name]] for name in ("value", "potential", "loyalty")
            }
            thresholds = [float(t) for t in document["grade_thresholds"]["lower_bounds"]]
            on = document["grade_thresholds"]["on"]
            training = document["training"]
            n_customers = int(training["n_customers"])
            counts = {str(k): int(v) for k, v in training["grade_counts"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"fitted policy: malformed document ({exc.__class__.__name__}: {exc})"
            ) from None
        for name, values in references.items():
            if len(values) != policy.reference_quantiles or np.any(np.diff(values) < 0):
                raise ConfigError(
                    f"fitted policy: reference.{name} must hold {policy.reference_quantiles} non-decreasing "
                    f"quantiles, got {len(values)}"
                )
        if on != policy.threshold_on or len(thresholds) != len(policy.grades) - 1:
            raise ConfigError(
                f"fitted policy: grade_thresholds must be {len(policy.grades) - 1} lower bounds on "
                f"{policy.threshold_on}, got {len(thresholds)} on {on}"
            )
        if np.any(np.diff(thresholds) > 0):
            raise ConfigError(f"fitted policy: grade_thresholds must be non-increasing, got {thresholds}")
        growth = document.get("growth_reference")
        if policy.matrix.potential_axis == "growth":
            if growth is None:
                raise ConfigError(
                    "fitted policy: policy.matrix.potential_axis is growth but the document has no growth_reference"
                )
            growth = _check_growth_reference(growth, policy.matrix.growth_bands)
        elif growth is not None:
            raise ConfigError(
                "fitted policy: growth_reference given but policy.matrix.potential_axis is forecast"
            )
        return cls(
            policy=policy,
            value_reference=references["value"],
            potential_reference=references["potential"],
            loyalty_reference=references["loyalty"],
            grade_thresholds=thresholds,
            n_training_customers=n_customers,
            training_grade_counts=counts,
            growth_reference=growth,
        )

    def to_yaml(self) -> str:
        """The :meth:`to_dict` document as YAML text (UTF-8, CJK kept as is, floats exact)."""
        return yaml.dump(self.to_dict(), Dumper=_YAML_DUMPER, allow_unicode=True, sort_keys=False, width=120)

    @classmethod
    def from_yaml(cls, text: str) -> FittedPolicy:
        """Read :meth:`to_yaml` text back."""
        try:
            document = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader
        except yaml.YAMLError as exc:
            raise ConfigError(f"fitted policy: not valid YAML ({exc.__class__.__name__})") from None
        return cls.from_dict(document)

    def save(self, path: str | Path) -> Path:
        """Write the policy as YAML, atomically."""
        return storage.write_text(path, self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> FittedPolicy:
        """Read a policy written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: fitted policy file not found")
        try:
            return cls.from_yaml(path.read_text(encoding="utf-8"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------
# Scoring pieces (pure, vectorised)


def composite_score(
    weights: Weights, value_rank: np.ndarray, potential_rank: np.ndarray, loyalty_rank: np.ndarray
) -> np.ndarray:
    """Weighted sum of the three ranks; a rank with weight 0 does not propagate NaN."""
    score = np.zeros(np.shape(value_rank), dtype=float)
    for weight, rank in (
        (weights.value, value_rank),
        (weights.potential, potential_rank),
        (weights.loyalty, loyalty_rank),
    ):
        if weight:
            score = score + weight * np.asarray(rank, dtype=float)
    return np.clip(score, 0.0, 1.0)


def grade_index_from_thresholds(values: np.ndarray, lower_bounds: list[float]) -> np.ndarray:
    """0-based grade index (0 = best): the number of lower bounds strictly above the value.

    A value exactly at a lower bound gets the better grade. NaN values get the worst grade.
    """
    values = np.asarray(values, dtype=float)
    index = np.zeros(values.shape, dtype=np.int64)
    for bound in lower_bounds:
        index += ~(values >= bound)
    return index


def apply_hysteresis(
    previous: pd.DataFrame,
    current: pd.DataFrame,
    margin: float,
    periods: int,
    *,
    thresholds: list[float],
    codes: list[str],
    on: str = "score",
) -> pd.DataFrame:
    """Keep each customer's previous grade unless the change is clear (see :class:`Hysteresis`).

    Parameters
    ----------
    previous:
        The earlier grading: ``customer_id``, ``grade`` (the grade kept then) and optionally
        ``hysteresis_pending`` (consecutive gradings the plain grade has differed from the kept one).
    current:
        The new grading: ``customer_id``, ``grade`` (the plain grade from the thresholds) and the column
        ``on`` the thresholds apply to.
    margin:
        How far past a boundary of the previous grade the value must lie for an immediate change.
    periods:
        Consecutive gradings after which a plain grade that differs from the kept one is taken anyway.
    thresholds:
        Lower bounds of every grade but the last, best first (``FittedPolicy.grade_thresholds``).
    codes:
        Grade codes best first (without the new-customer grade).
    on:
        ``score`` or ``predicted_value`` (``FittedPolicy.threshold_on``).

    Returns
    -------
    pandas.DataFrame
        Aligned with ``current``: ``customer_id``, ``grade`` (the grade to use), ``plain_grade``,
        ``hysteresis_pending`` and ``held`` (True where the kept grade differs from the plain one). Customers
        new since ``previous``, or with a grade outside ``codes`` on either side, take the plain grade.
    """
    rank = {str(code): i for i, code in enumerate(codes)}
    plain = current["grade"].astype(str).to_numpy()
    before = previous.set_index("customer_id")
    prev_grade = current["customer_id"].map(before["grade"].astype(str)).to_numpy(dtype=object)
    pending_before = (
        current["customer_id"].map(before["hysteresis_pending"]).fillna(0).to_numpy(dtype=np.int64)
        if "hysteresis_pending" in before.columns
        else np.zeros(len(current), dtype=np.int64)
    )
    value = pd.to_numeric(current[on], errors="coerce").to_numpy(dtype=float)
    prev_index = np.array([rank.get(g, -1) if isinstance(g, str) else -1 for g in prev_grade])
    plain_index = np.array([rank.get(g, -1) for g in plain])
    eligible = (prev_index >= 0) & (plain_index >= 0) & np.isfinite(value)
    up = grade_index_from_thresholds(value - margin, thresholds)
    down = grade_index_from_thresholds(value + margin, thresholds)
    kept = prev_index.copy()
    kept = np.where(up < prev_index, up, kept)
    kept = np.where(down > prev_index, down, kept)
    waiting = (kept == prev_index) & (plain_index != prev_index)
    pending = np.where(waiting, pending_before + 1, 0)
    switch = waiting & (pending >= periods)
    kept = np.where(switch, plain_index, kept)
    pending = np.where(switch, 0, pending)
    code_array = np.array([str(c) for c in codes], dtype=object)
    grade = np.where(eligible, code_array.take(np.clip(kept, 0, len(codes) - 1)), plain)
    pending = np.where(eligible, pending, 0)
    return pd.DataFrame(
        {
            "customer_id": current["customer_id"].to_numpy(),
            "grade": grade.astype(object),
            "plain_grade": plain.astype(object),
            "hysteresis_pending": pending.astype(np.int64),
            "held": grade != plain,
        }
    )


def share_thresholds(scores: np.ndarray, shares: list[float]) -> list[float]:
    """Score lower bounds that give ``shares`` (best first) on ``scores``; see
    :meth:`FittedPolicy.refit_boundaries` for the exact rule."""
    ordered = np.sort(np.asarray(scores, dtype=float))[::-1]
    n = ordered.size
    ascending = ordered[::-1]
    cumulative = np.cumsum(np.asarray(shares, dtype=float))[:-1]
    bounds: list[float] = []
    for count in np.floor(cumulative * n + 0.5).astype(int):
        if count <= 0:
            bound = float(np.nextafter(ordered[0], np.inf))
        else:
            tie = ordered[min(count, n) - 1]
            # the run of scores equal to `tie` goes up (bound = tie) or down (bound = next score above)
            above_up = n - int(np.searchsorted(ascending, tie, side="left"))
            above_down = n - int(np.searchsorted(ascending, tie, side="right"))
            higher = ordered[:above_down]
            if above_down > 0 and abs(above_down - count) < abs(above_up - count):
                bound = float(higher[-1])
            elif above_down == 0 and abs(above_down - count) < abs(above_up - count):
                bound = float(np.nextafter(ordered[0], np.inf))
            else:
                bound = float(tie)
        bounds.append(min(bound, bounds[-1]) if bounds else bound)
    return bounds


def _matrix_level(rank: np.ndarray, cuts: list[float]) -> np.ndarray:
    """0 = low, 1 = mid, 2 = high; a rank at a cut point goes up; NaN → low."""
    rank = np.asarray(rank, dtype=float)
    return (rank >= cuts[0]).astype(np.int64) + (rank >= cuts[1]).astype(np.int64)


def _numeric_column(features: pd.DataFrame, column: str, key: str) -> np.ndarray:
    if column not in features.columns:
        raise InputFileError(
            f"features: missing column '{column}' (named by {key}) in a table of {len(features)} rows"
        )
    values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return np.where(np.isfinite(values), values, 0.0)


def _axis_values(axis_potential: np.ndarray | pd.Series, features: pd.DataFrame) -> np.ndarray:
    values = np.asarray(axis_potential, dtype=float).reshape(-1)
    if values.size != len(features):
        raise InputFileError(
            f"axis_potential: {values.size} values for a feature table of {len(features)} rows "
            "(they must be aligned by position)"
        )
    return values


def _measures(
    policy: GradePolicy, features: pd.DataFrame, potential: np.ndarray | pd.Series
) -> dict[str, np.ndarray]:
    """Raw value, potential and loyalty per row plus the has-purchases mask, checked."""
    for column in ("customer_id", "has_purchases"):
        if column not in features.columns:
            raise InputFileError(f"features: missing column '{column}' in a table of {len(features)} rows")
    purchased = features["has_purchases"].fillna(False).to_numpy(dtype=bool)
    checked = _checked_potential(features, potential, purchased)  # its errors come before the value column's
    return {
        "purchased": purchased,
        "value": _numeric_column(features, policy.value_feature, "policy.value_feature"),
        "potential": checked,
        "loyalty": policy.loyalty_measure(features),
    }


def _checked_potential(
    features: pd.DataFrame, potential: np.ndarray | pd.Series, purchased: np.ndarray
) -> np.ndarray:
    """The potential forecast per row, checked: aligned with ``features``, finite for every purchaser."""
    predicted = np.asarray(potential, dtype=float).reshape(-1)
    if predicted.size != len(features):
        raise InputFileError(
            f"potential: {predicted.size} predictions for a feature table of {len(features)} rows "
            "(they must be aligned by position)"
        )
    bad = int((~np.isfinite(predicted) & purchased).sum())
    if bad:
        raise InputFileError(
            f"potential: {bad} of {int(purchased.sum())} customers with purchases have a missing or "
            "infinite predicted value"
        )
    return np.where(np.isfinite(predicted), predicted, np.nan)


# --------------------------------------------------------------------------------------------------------------
# Summaries


def grade_summary(
    grades: pd.DataFrame,
    value: np.ndarray | pd.Series,
    future_value: np.ndarray | pd.Series | None = None,
    policy: GradePolicy | FittedPolicy | None = None,
    future_margin: np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Per-grade table: size, value concentration, strategy and (with costs) ROI-style columns.

    Parameters
    ----------
    grades:
        Output of :meth:`FittedPolicy.grade`.
    value:
        Current value per row of ``grades`` (aligned by position), e.g. ``spend_365d``.
    future_value:
        Optional realised (or predicted) future spend per row, for value share and value per cost.
    future_margin:
        Optional predicted future margin per row (when the data carries a product cost): adds
        ``future_margin_total, future_margin_mean`` (+ ``future_margin_per_cost`` with costs).
    policy:
        Gives the grade order (best first, new customers last), every grade even when empty, and
        ``cost_per_customer``. Without it grades are ordered by mean score (new customers last) and no cost
        columns are produced.

    Returns
    -------
    pd.DataFrame
        ``grade, grade_name, n, share, value_total, value_share, value_mean`` (+ ``future_value_total,
        future_value_share, future_value_mean``) + ``strategy`` (+ ``cost_per_customer, cost_total`` and,
        with future value, ``future_value_per_cost``).
    """
    value = np.asarray(value, dtype=float).reshape(-1)
    if value.size != len(grades):
        raise InputFileError(
            f"value: {value.size} values for {len(grades)} graded customers (aligned by position)"
        )
    frame = pd.DataFrame(
        {"grade": grades["grade"].to_numpy(), "value": value, "score": grades["score"].to_numpy()}
    )
    if future_value is not None:
        future = np.asarray(future_value, dtype=float).reshape(-1)
        if future.size != len(grades):
            raise InputFileError(
                f"future_value: {future.size} values for {len(grades)} graded customers (aligned by position)"
            )
        frame["future_value"] = future
    if future_margin is not None:
        margin = np.asarray(future_margin, dtype=float).reshape(-1)
        if margin.size != len(grades):
            raise InputFileError(
                f"future_margin: {margin.size} values for {len(grades)} graded customers (aligned by position)"
            )
        frame["future_margin"] = margin
    sums = frame.groupby("grade", sort=False).agg(
        n=("value", "size"),
        value_total=("value", "sum"),
        score_mean=("score", "mean"),
        **({"future_value_total": ("future_value", "sum")} if future_value is not None else {}),
        **({"future_margin_total": ("future_margin", "sum")} if future_margin is not None else {}),
    )
    labels = grades.groupby("grade", sort=False)[["grade_name", "strategy"]].first()

    fitted_policy = policy.policy if isinstance(policy, FittedPolicy) else policy
    if fitted_policy is not None:
        specs = [*fitted_policy.grades, fitted_policy.new_customer]
        order = [g.code for g in specs]
        order += [code for code in sums.index if code not in order]
        table = sums.reindex(order)
        table["n"] = table["n"].fillna(0).astype(np.int64)
        total_columns = [c for c in table.columns if c.endswith("_total")]
        table[total_columns] = table[total_columns].fillna(0.0)
        by_code = {g.code: g for g in specs}
        table["grade_name"] = [
            by_code[c].name if c in by_code else labels.loc[c, "grade_name"] for c in order
        ]
        table["strategy"] = [
            by_code[c].strategy if c in by_code else labels.loc[c, "strategy"] for c in order
        ]
        costs = [by_code[c].cost_per_customer if c in by_code else None for c in order]
        table["cost_per_customer"] = np.array([np.nan if c is None else c for c in costs], dtype=float)
    else:
        table = sums.join(labels).sort_values(
            "score_mean", ascending=False, na_position="last", kind="stable"
        )

    n_total = max(len(grades), 1)
    table["share"] = table["n"] / n_total
    table["value_share"] = _safe_share(table["value_total"])
    table["value_mean"] = table["value_total"] / table["n"].where(table["n"] > 0)
    columns = ["grade_name", "n", "share", "value_total", "value_share", "value_mean"]
    if future_value is not None:
        table["future_value_share"] = _safe_share(table["future_value_total"])
        table["future_value_mean"] = table["future_value_total"] / table["n"].where(table["n"] > 0)
        columns += ["future_value_total", "future_value_share", "future_value_mean"]
    if future_margin is not None:
        table["future_margin_mean"] = table["future_margin_total"] / table["n"].where(table["n"] > 0)
        columns += ["future_margin_total", "future_margin_mean"]
    columns.append("strategy")
    if "cost_per_customer" in table.columns and table["cost_per_customer"].notna().any():
        table["cost_total"] = table["cost_per_customer"] * table["n"]
        columns += ["cost_per_customer", "cost_total"]
        if future_value is not None:
            table["future_value_per_cost"] = table["future_value_total"] / table["cost_total"].where(
                table["cost_total"] > 0
            )
            columns.append("future_value_per_cost")
        if future_margin is not None:
            table["future_margin_per_cost"] = table["future_margin_total"] / table["cost_total"].where(
                table["cost_total"] > 0
            )
            columns.append("future_margin_per_cost")
    table.index.name = "grade"
    return table[columns].reset_index()


def _safe_share(totals: pd.Series) -> pd.Series:
    grand = totals.sum()
    return totals / grand if grand else totals * np.nan


def matrix_table(grades: pd.DataFrame, policy: GradePolicy | FittedPolicy | None = None) -> pd.DataFrame:
    """3 × 3 customer counts of the value × potential matrix (customers with purchases only).

    Rows are value levels ``high, mid, low``; columns are potential levels ``high, mid, low``. With
    ``policy``, each count is labelled with its cell name (``"stars: 120"``) instead of a bare integer.
    """
    placed = grades[grades["value_level"].notna() & grades["potential_level"].notna()]
    order = list(reversed(MATRIX_LEVELS))
    counts = (
        pd.crosstab(placed["value_level"], placed["potential_level"])
        .reindex(index=order, columns=order, fill_value=0)
        .astype(np.int64)
    )
    counts.index.name = "value"
    counts.columns.name = "potential"
    if policy is None:
        return counts
    cells = (policy.policy if isinstance(policy, FittedPolicy) else policy).matrix.cells
    labelled = counts.astype(object)
    for value_level in order:
        for potential_level in order:
            name = cells[f"{value_level}_{potential_level}"]
            labelled.loc[value_level, potential_level] = f"{name}: {counts.loc[value_level, potential_level]}"
    return labelled
