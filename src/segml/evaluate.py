"""Holdout metrics and model comparison tables.

Every model is judged on the customers known at the calibration cutoff, against what they actually spent in
the holdout window that follows. Each metric is defined once, in ``docs/metrics.md``; the functions here are
its only implementation. All functions take plain 1-d arrays (or anything ``numpy.asarray`` accepts), are
vectorised, and take about a second per metric for a million customers (sorting dominates; the paired
bootstrap scales with ``n_boot × n``).

Conventions shared by every function:

- ``actual`` is the realised holdout value per customer (money, or any non-negative outcome);
  ``predicted`` is a score where higher means "more valuable". Both must be finite.
- Orderings are by ``predicted`` descending. Where a metric needs a strict order (top-k capture, deciles),
  tied scores are broken by ``ids`` ascending (position in the input when ``ids`` is None). The normalized
  Gini instead averages over ties (tied customers form one block of the gain curve).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = [
    "BEST_BASELINE_CANDIDATES",
    "COMPARISON_METRICS",
    "comparison_table",
    "decile_mape",
    "decile_table",
    "evaluate_predictions",
    "grade_table",
    "grades_monotone",
    "normalized_gini",
    "paired_bootstrap_gini_diff",
    "spearman",
    "top_decile_lift",
    "top_k_capture",
    "total_error",
]

#: the baselines a model is compared with; ``gini_diff*`` of :func:`comparison_table` is against the one with
#: the highest holdout Gini (``rfm`` = R+F+M with ties broken by M, ``rfm_sum`` = plain R+F+M)
BEST_BASELINE_CANDIDATES = ("rfm", "rfm_sum", "past_spend", "btyd")

#: how many float64 cells one bootstrap chunk may hold (reps × customers); bounds memory at ~100 MB
BOOTSTRAP_CELLS_PER_CHUNK = 2_000_000

#: holdout metrics of each row of :func:`comparison_table` (and of ``comparison.json``), in order
COMPARISON_METRICS = (
    "normalized_gini",
    "spearman",
    "top10_capture",
    "top20_capture",
    "decile_mape",
    "total_error",
)


# --------------------------------------------------------------------------------------------------------------
# Input checks


def _as_finite_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(
            f"{name}: {bad} of {array.size} values are NaN or infinite; metrics need finite values"
        )
    return array


def _paired_arrays(actual: Any, predicted: Any) -> tuple[np.ndarray, np.ndarray]:
    actual_array = _as_finite_array(actual, "actual")
    predicted_array = _as_finite_array(predicted, "predicted")
    if actual_array.size != predicted_array.size:
        raise ValueError(
            f"actual has {actual_array.size} values but predicted has {predicted_array.size}; "
            "they must describe the same customers"
        )
    if actual_array.size == 0:
        raise ValueError("actual and predicted are empty: no customers to evaluate")
    return actual_array, predicted_array


def strict_order(predicted: np.ndarray, ids: Any) -> np.ndarray:
    """Positions sorted by predicted descending, ties by ids ascending (input position when ids is None)."""
    if ids is None:
        return np.argsort(-predicted, kind="stable")
    id_array = np.asarray(ids).ravel()
    if id_array.size != predicted.size:
        raise ValueError(f"ids has {id_array.size} values but there are {predicted.size} customers")
    if id_array.dtype.kind not in "biufU":
        id_array = id_array.astype(str)  # object ids compare as strings: "00001" < "00010"
    # stable sort by id, then stable sort by score: ties keep id order (cheaper than lexsort on strings)
    by_id = np.argsort(id_array, kind="stable")
    return by_id[np.argsort(-predicted[by_id], kind="stable")]


# --------------------------------------------------------------------------------------------------------------
# Ranking metrics


def _gain_gini(actual: np.ndarray, score: np.ndarray) -> float:
    """Gini of the gain curve of ``actual`` ordered by ``score`` descending, tied scores as one block.

    Gini = 2 × (area under the gain curve) − 1, where the gain curve joins the points (share of customers,
    share of total actual) at the end of each block of tied scores with straight lines.
    """
    order = np.argsort(-score, kind="stable")
    sorted_score = score[order]
    block_ends = np.flatnonzero(np.r_[sorted_score[1:] != sorted_score[:-1], True])
    cum_actual = np.cumsum(actual[order])[block_ends] / actual.sum()
    cum_customers = (block_ends + 1) / actual.size
    previous_actual = np.r_[0.0, cum_actual[:-1]]
    previous_customers = np.r_[0.0, cum_customers[:-1]]
    area = np.sum((cum_customers - previous_customers) * (cum_actual + previous_actual) / 2.0)
    return float(2.0 * area - 1.0)


def normalized_gini(actual: Any, predicted: Any) -> float:
    """Normalized Gini: Gini of the model's gain curve divided by the Gini of the perfect ordering.

    Parameters
    ----------
    actual:
        Realised holdout value per customer.
    predicted:
        Score per customer, higher = more valuable. Tied scores are averaged (one straight block of the
        gain curve), so the result does not depend on input order.

    Returns
    -------
    float
        1.0 for the perfect ordering, about 0 for a random one, negative for a reversed one; NaN when the
        total of ``actual`` is not positive or every customer has the same ``actual`` (no ordering to find).
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    if actual_array.sum() <= 0:
        return float("nan")
    perfect = _gain_gini(actual_array, actual_array)
    if perfect == 0:
        return float("nan")
    return _gain_gini(actual_array, predicted_array) / perfect


def spearman(actual: Any, predicted: Any) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks; ties get their mean rank).

    Returns NaN when either input is constant.
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    actual_rank = rankdata(actual_array, method="average")
    predicted_rank = rankdata(predicted_array, method="average")
    actual_rank -= actual_rank.mean()
    predicted_rank -= predicted_rank.mean()
    denominator = math.sqrt(float(actual_rank @ actual_rank) * float(predicted_rank @ predicted_rank))
    if denominator == 0:
        return float("nan")
    return float(actual_rank @ predicted_rank) / denominator


def _top_count(k: float, n: int) -> int:
    if not 0 < k <= 1:
        raise ValueError(f"k must be a share of customers in (0, 1], got {k}")
    # the epsilon keeps 0.1 × 30 = 3.0000000000000004 from becoming 4
    return max(1, math.ceil(k * n - 1e-9))


def _capture_in_order(actual_in_order: np.ndarray, k: float) -> float:
    total = actual_in_order.sum()
    if total <= 0:
        return float("nan")
    return float(actual_in_order[: _top_count(k, actual_in_order.size)].sum() / total)


def top_k_capture(actual: Any, predicted: Any, k: float, ids: Any = None) -> float:
    """Share of total holdout ``actual`` captured by the top ``ceil(k·n)`` customers by ``predicted``.

    Parameters
    ----------
    actual, predicted:
        Realised value and score per customer.
    k:
        Share of customers targeted, in (0, 1] (0.1 = top 10%).
    ids:
        Customer ids; tied scores are broken by id ascending (input position when None).

    Returns
    -------
    float
        Captured share (NaN when the total of ``actual`` is not positive).
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    return _capture_in_order(actual_array[strict_order(predicted_array, ids)], k)


def _lift_in_order(actual_in_order: np.ndarray) -> float:
    n = actual_in_order.size
    return _capture_in_order(actual_in_order, 0.1) * n / _top_count(0.1, n)


def top_decile_lift(actual: Any, predicted: Any, ids: Any = None) -> float:
    """Mean ``actual`` of the top ``ceil(0.1·n)`` customers divided by the mean over all customers.

    Equals ``top_k_capture(actual, predicted, 0.1, ids) × n / ceil(0.1·n)``; 1.0 means no better than random.
    NaN when the total of ``actual`` is not positive.
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    return float(_lift_in_order(actual_array[strict_order(predicted_array, ids)]))


# --------------------------------------------------------------------------------------------------------------
# Calibration of money predictions


def _decile_table_in_order(actual_in_order: np.ndarray, predicted_in_order: np.ndarray) -> pd.DataFrame:
    n = actual_in_order.size
    decile_of_position = np.arange(n) * 10 // n
    counts = np.bincount(decile_of_position, minlength=10)
    sum_pred = np.bincount(decile_of_position, weights=predicted_in_order, minlength=10)
    sum_actual = np.bincount(decile_of_position, weights=actual_in_order, minlength=10)
    present = counts > 0
    return pd.DataFrame(
        {
            "decile": np.arange(1, 11)[present],
            "n": counts[present],
            "mean_pred": sum_pred[present] / counts[present],
            "mean_actual": sum_actual[present] / counts[present],
            "sum_pred": sum_pred[present],
            "sum_actual": sum_actual[present],
        }
    )


def decile_table(actual: Any, predicted: Any, ids: Any = None) -> pd.DataFrame:
    """Equal-count deciles of the prediction with predicted and actual means and sums.

    Customers are ordered by ``predicted`` descending, ties by ``ids`` ascending; the customer at position
    ``p`` (0-based) of ``n`` goes to decile ``floor(10·p / n) + 1``, so decile 1 holds the highest
    predictions and decile sizes differ by at most one. With fewer than 10 customers some deciles are empty
    and left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``decile`` (int, 1..10), ``n``, ``mean_pred``, ``mean_actual``, ``sum_pred``, ``sum_actual``.
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    order = strict_order(predicted_array, ids)
    return _decile_table_in_order(actual_array[order], predicted_array[order])


def decile_mape(table: pd.DataFrame) -> float | None:
    """Mean absolute percentage error of decile means.

    Mean, over the deciles of :func:`decile_table` whose ``mean_actual > 0``, of
    ``|mean_pred − mean_actual| / mean_actual``. Returns a fraction (0.2 = 20 %), or None when no decile has
    a positive actual mean.
    """
    positive = table["mean_actual"].to_numpy(dtype=float) > 0
    if not positive.any():
        return None
    mean_actual = table["mean_actual"].to_numpy(dtype=float)[positive]
    mean_pred = table["mean_pred"].to_numpy(dtype=float)[positive]
    return float(np.mean(np.abs(mean_pred - mean_actual) / mean_actual))


def total_error(actual: Any, predicted: Any) -> float:
    """Relative error of the predicted total: ``sum(predicted) / sum(actual) − 1``.

    NaN when the total of ``actual`` is not positive.
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    total = actual_array.sum()
    if total <= 0:
        return float("nan")
    return float(predicted_array.sum() / total - 1.0)


# --------------------------------------------------------------------------------------------------------------
# Grades


def grade_table(actual: Any, grades: Any, order: Sequence[str] | str = "ABCDE") -> pd.DataFrame:
    """Realised holdout value per grade, in grade order.

    Parameters
    ----------
    actual:
        Realised holdout value per customer.
    grades:
        Grade label per customer; every label must appear in ``order``.
    order:
        Grade labels from best to worst: a string of one-character labels ("ABCDE") or a sequence.

    Returns
    -------
    pandas.DataFrame
        One row per grade in ``order`` (empty grades included with ``n = 0`` and NaN mean): ``grade``,
        ``n``, ``share_customers``, ``mean_actual``, ``sum_actual``, ``share_actual``.
    """
    actual_array = _as_finite_array(actual, "actual")
    grade_array = np.asarray(grades).ravel().astype(str)
    if grade_array.size != actual_array.size:
        raise ValueError(f"grades has {grade_array.size} values but actual has {actual_array.size}")
    labels = [str(label) for label in order]
    if len(set(labels)) != len(labels):
        raise ValueError(f"grade order {labels} repeats a label")
    label_index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(label) for label in np.unique(grade_array)} - set(labels))
    if unknown:
        count = int(np.isin(grade_array, unknown).sum())
        raise ValueError(f"grades: {count} customers have labels {unknown} not in the grade order {labels}")
    codes = pd.Categorical(grade_array, categories=labels).codes
    counts = np.bincount(codes, minlength=len(labels))
    sums = np.bincount(codes, weights=actual_array, minlength=len(labels))
    total = actual_array.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(
        {
            "grade": labels,
            "n": counts,
            "share_customers": counts / max(actual_array.size, 1),
            "mean_actual": means,
            "sum_actual": sums,
            "share_actual": sums / total if total > 0 else np.full(len(labels), np.nan),
        },
        index=pd.RangeIndex(len(label_index)),
    )


def grades_monotone(table: pd.DataFrame) -> bool:
    """True when realised mean value strictly decreases from each non-empty grade to the next one.

    Empty grades (``n = 0``) are skipped; a table with fewer than two non-empty grades is trivially
    monotone.
    """
    means = table.loc[table["n"] > 0, "mean_actual"].to_numpy(dtype=float)
    return bool(np.all(np.diff(means) < 0))


# --------------------------------------------------------------------------------------------------------------
# Paired bootstrap of the normalized-Gini difference


class _BlockGain:
    """One ordering (by a score) prepared for weighted gain-curve Ginis over many bootstrap replicates."""

    def __init__(self, actual: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(-score, kind="stable")
        sorted_score = score[self.order]
        self.sorted_actual = actual[self.order]
        starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        self.block_starts = None if starts.size == score.size else starts

    def gini(self, counts: np.ndarray) -> np.ndarray:
        """Gini per replicate; ``counts`` is (reps, n): how often each customer was drawn."""
        # np.take on small integer counts is far faster than fancy-indexing a float matrix
        sorted_counts = np.take(counts, self.order, axis=1)
        weighted_actual = sorted_counts * self.sorted_actual
        if self.block_starts is not None:
            weights = np.add.reduceat(sorted_counts, self.block_starts, axis=1, dtype=np.float64)
            weighted_actual = np.add.reduceat(weighted_actual, self.block_starts, axis=1)
        else:
            weights = sorted_counts.astype(np.float64)
        total_weight = weights.sum(axis=1)
        total_actual = weighted_actual.sum(axis=1)
        # area = Σ_b w_b · (A_<b + A_b / 2) / (W · A): the trapezoids of the block-wise gain curve
        height = np.cumsum(weighted_actual, axis=1)
        height -= weighted_actual / 2.0
        area = np.einsum("ij,ij->i", weights, height)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2.0 * area / (total_weight * total_actual) - 1.0


def bootstrap_counts(rng: np.random.Generator, reps: int, n: int) -> np.ndarray:
    """(reps, n) matrix: how often each customer is drawn in each of ``reps`` samples of size n."""
    draws = rng.integers(0, n, size=(reps, n))
    draws += (np.arange(reps) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n)
    return counts.astype(np.uint8) if counts.max() < 256 else counts


def paired_bootstrap_gini_diff(
    actual: Any, pred_a: Any, pred_b: Any, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Normalized-Gini difference ``gini(pred_a) − gini(pred_b)`` with a paired bootstrap 95% interval.

    Each replicate draws ``n`` customers with replacement (seeded) and evaluates BOTH predictions (and the
    perfect ordering) on that same sample, so the interval reflects the difference between the models, not
    the sampling noise they share. The interval is the 2.5 and 97.5 percentiles of the replicate
    differences. Cost grows with ``n_boot × n``: about 2 s for 1000 replicates of 25,000 customers and
    0.1–0.2 s per replicate per million customers.

    Parameters
    ----------
    actual, pred_a, pred_b:
        Realised value and the two scores per customer.
    n_boot:
        Number of bootstrap replicates.
    seed:
        Seed of ``numpy.random.default_rng``; same seed, same interval.

    Returns
    -------
    tuple of float
        ``(diff, lo, hi)``: the full-sample difference and the interval bounds.
    """
    actual_array, pred_a_array = _paired_arrays(actual, pred_a)
    _, pred_b_array = _paired_arrays(actual_array, pred_b)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    diff = normalized_gini(actual_array, pred_a_array) - normalized_gini(actual_array, pred_b_array)
    n = actual_array.size
    perfect = _BlockGain(actual_array, actual_array)
    model_a = _BlockGain(actual_array, pred_a_array)
    model_b = _BlockGain(actual_array, pred_b_array)
    rng = np.random.default_rng(seed)
    reps_per_chunk = max(1, BOOTSTRAP_CELLS_PER_CHUNK // n)
    differences = np.empty(n_boot)
    for start in range(0, n_boot, reps_per_chunk):
        reps = min(reps_per_chunk, n_boot - start)
        counts = bootstrap_counts(rng, reps, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            differences[start : start + reps] = (model_a.gini(counts) - model_b.gini(counts)) / perfect.gini(
                counts
            )
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return float(diff), float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(diff), float(low), float(high)


# --------------------------------------------------------------------------------------------------------------
# Per-model summary and comparison


def _none_if_nan(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def evaluate_predictions(actual: Any, predicted: Any, ids: Any, predicts_money: bool) -> dict[str, Any]:
    """All holdout metrics of one model.

    Parameters
    ----------
    actual:
        Realised holdout value per customer.
    predicted:
        The model's score (expected spend when ``predicts_money``).
    ids:
        Customer ids, used to break ties in top-k capture and deciles.
    predicts_money:
        Whether ``predicted`` is in the currency of ``actual``; calibration metrics (``decile_mape``,
        ``total_error``) are only defined then and are None otherwise.

    Returns
    -------
    dict
        ``normalized_gini``, ``spearman``, ``top10_capture``, ``top20_capture``, ``top_decile_lift``,
        ``decile_mape``, ``total_error`` (floats; None where undefined) and ``decile_table`` (list of row
        dicts; None unless ``predicts_money``).
    """
    actual_array, predicted_array = _paired_arrays(actual, predicted)
    order = strict_order(predicted_array, ids)  # one sort shared by capture, lift and deciles
    actual_in_order = actual_array[order]
    result: dict[str, Any] = {
        "normalized_gini": _none_if_nan(normalized_gini(actual_array, predicted_array)),
        "spearman": _none_if_nan(spearman(actual_array, predicted_array)),
        "top10_capture": _none_if_nan(_capture_in_order(actual_in_order, 0.1)),
        "top20_capture": _none_if_nan(_capture_in_order(actual_in_order, 0.2)),
        "top_decile_lift": _none_if_nan(_lift_in_order(actual_in_order)),
        "decile_mape": None,
        "total_error": None,
        "decile_table": None,
    }
    if predicts_money:
        table = _decile_table_in_order(actual_in_order, predicted_array[order])
        result["decile_mape"] = decile_mape(table)
        result["total_error"] = _none_if_nan(total_error(actual_array, predicted_array))
        result["decile_table"] = table.to_dict(orient="records")
    return result


def comparison_table(
    results: Mapping[str, Mapping[str, Any]],
    actual: Any,
    predictions: Mapping[str, Any],
    baseline_names: Sequence[str] = BEST_BASELINE_CANDIDATES,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per model with its metrics and its normalized-Gini difference to the best baseline.

    Parameters
    ----------
    results:
        Model name -> output of :func:`evaluate_predictions`, in the order the rows should appear.
    actual:
        Realised holdout value per customer (same customers, same order as every prediction).
    predictions:
        Model name -> score array; needed for every name in ``results``.
    baseline_names:
        Which of the models are baselines (default :data:`BEST_BASELINE_CANDIDATES`: ``rfm``, ``rfm_sum``,
        ``past_spend``, ``btyd``; names not in ``results`` are ignored). The best baseline is the one with the
        highest normalized Gini; ties go to the first in ``baseline_names``.
    n_boot, seed:
        Paired bootstrap settings (see :func:`paired_bootstrap_gini_diff`); every model is resampled with
        the same seed, hence on the same customers.

    Returns
    -------
    list of dict
        Keys ``model``, ``normalized_gini``, ``spearman``, ``top10_capture``, ``top20_capture``,
        ``decile_mape``, ``total_error``, ``gini_diff`` (model − best baseline), ``gini_diff_ci``
        ([lo, hi], 95%) and ``gini_diff_vs`` (the best baseline's name). The best baseline itself gets
        ``gini_diff = 0`` and ``[0, 0]``.
    """
    missing = [name for name in results if name not in predictions]
    if missing:
        raise ValueError(f"predictions missing for models {missing}")
    baselines = [name for name in baseline_names if name in results]
    if not baselines:
        raise ValueError(f"none of the baselines {list(baseline_names)} is in results {list(results)}")

    def gini_of(name: str) -> float:
        value = results[name].get("normalized_gini")
        return -math.inf if value is None or not math.isfinite(value) else float(value)

    best = max(baselines, key=gini_of)
    rows = []
    for name, metrics in results.items():
        if name == best:
            diff, low, high = 0.0, 0.0, 0.0
        else:
            diff, low, high = paired_bootstrap_gini_diff(
                actual, predictions[name], predictions[best], n_boot=n_boot, seed=seed
            )
        rows.append(
            {
                "model": name,
                **{key: metrics.get(key) for key in COMPARISON_METRICS},
                "gini_diff": _none_if_nan(diff),
                "gini_diff_ci": [_none_if_nan(low), _none_if_nan(high)],
                "gini_diff_vs": best,
            }
        )
    return rows
