"""Grade-level evaluation on the holdout: are the shipped A–E grades better than a rule of thumb?

The document built here is ``reports/<exp>/grading_evaluation.json``. Every grading is judged on the same
evaluation population (the customers in the population at ``calibration_end``), against what each customer
realised in the holdout window:

- ``policy``: the letters the fitted grade policy gave (new customers get the new-customer grade, ``N``);
- one comparison grading per score (``rfm``, ``rfm_sum``, ``past_spend``, ``potential``): customers ranked by
  that score over the whole population, best first (ties by customer id ascending), and cut so that every
  letter (``N`` included, last) holds exactly as many customers as the policy gave it. Grade sizes are
  therefore identical across gradings and only the ordering differs.

Per grade: ``customers``, ``share`` (of the population), ``capture`` (the grade's realised value ÷ that of the
whole population, new customers included in the denominator), ``mean_value`` and ``lift`` (capture ÷ share).
``top_capture`` is the capture of the top grades (by default the best grades that together hold 20 % of the
policy's grade shares: A + B with the shipped policy). ``top_capture_diff_vs_rfm`` is a grading's top capture
minus the RFM grading's, with a paired-bootstrap 95 % interval: each replicate draws customers with
replacement (seeded, as :func:`segml.evaluate.paired_bootstrap_gini_diff`) and evaluates both gradings, with
their grade assignments fixed, on that same sample. ``monotone`` is True when the mean realised value does not
increase from one non-empty grade to the next, A to E (``N`` excluded).

``matrix`` lists the nine value × potential cells of the policy (``<value level>_<potential level>``), each
with its size, mean current value (spend over the holdout's length before the cutoff), mean realised value and
``realised_growth = Σ realised ÷ Σ current − 1`` (``None`` when Σ current is 0). New customers are reported
apart under ``new_customers``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from segml.evaluate import BOOTSTRAP_CELLS_PER_CHUNK, bootstrap_counts, strict_order
from segml.policy import MATRIX_CELL_KEYS, MATRIX_LEVELS, FittedPolicy, GradePolicy

if TYPE_CHECKING:  # pragma: no cover
    from segml.features import TableSource

__all__ = [
    "COMPARISON_GRADINGS",
    "MATRIX_REPORT_ORDER",
    "cells_from_grades",
    "comparison_grades",
    "current_value_before",
    "grading_evaluation",
    "paired_bootstrap_capture_diff",
    "top_grade_codes",
]

#: comparison gradings in report order (each needs a score of that name)
COMPARISON_GRADINGS = ("rfm", "rfm_sum", "past_spend", "potential")

#: matrix cells in report order: high value first, high potential first within a value level
MATRIX_REPORT_ORDER = tuple(f"{v}_{p}" for v in reversed(MATRIX_LEVELS) for p in reversed(MATRIX_LEVELS))
assert set(MATRIX_REPORT_ORDER) == set(MATRIX_CELL_KEYS)


def _policy_of(policy: GradePolicy | FittedPolicy) -> GradePolicy:
    return policy.policy if isinstance(policy, FittedPolicy) else policy


def _finite(values: Any, name: str, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size != n:
        raise ValueError(f"{name}: {array.size} values for {n} customers (aligned by position)")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name}: {bad} of {n} values are NaN or infinite")
    return array


def _none_if_nan(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# --------------------------------------------------------------------------------------------------------------
# Building blocks


def top_grade_codes(policy: GradePolicy | FittedPolicy, top_share: float = 0.2) -> list[str]:
    """The best grades that together hold ``top_share`` of the policy's grade shares (A + B by default).

    The prefix of grades (best first) whose cumulative share first reaches ``top_share`` (within 1e-9); for
    threshold methods (no shares) the two best grades.
    """
    spec = _policy_of(policy)
    if spec.method != "shares":
        return [g.code for g in spec.grades[:2]]
    codes: list[str] = []
    cumulative = 0.0
    for grade in spec.grades:
        codes.append(grade.code)
        cumulative += float(grade.share or 0.0)
        if cumulative >= top_share - 1e-9:
            break
    return codes


def cells_from_grades(grades: pd.DataFrame) -> np.ndarray:
    """Matrix cell key (``<value level>_<potential level>``) per row of :meth:`FittedPolicy.grade` output;
    None for new customers (no levels)."""
    value = grades["value_level"].to_numpy(dtype=object)
    potential = grades["potential_level"].to_numpy(dtype=object)
    return np.array(
        [None if v is None or p is None else f"{v}_{p}" for v, p in zip(value, potential, strict=True)],
        dtype=object,
    )


def comparison_grades(
    score: Any, customer_ids: Any, grade_counts: Mapping[str, int], order: Sequence[str]
) -> np.ndarray:
    """Grade letters from a score with prescribed grade sizes.

    Parameters
    ----------
    score:
        One finite score per customer, higher = more valuable.
    customer_ids:
        Ties in ``score`` are broken by id ascending.
    grade_counts:
        Customers per letter (every letter of ``order``; missing letters count 0). The counts must add up
        to the number of customers.
    order:
        Letters best first (the new-customer letter last, if it is graded).

    Returns
    -------
    numpy.ndarray
        Letter per customer (object array): the ``grade_counts[order[0]]`` best-scored customers get
        ``order[0]``, the next ones ``order[1]``, and so on.
    """
    score_array = np.asarray(score, dtype=np.float64).ravel()
    counts = [int(grade_counts.get(code, 0)) for code in order]
    if sum(counts) != score_array.size:
        raise ValueError(
            f"grade counts add up to {sum(counts)} but there are {score_array.size} customers to grade"
        )
    ranked = strict_order(score_array, customer_ids)
    letters = np.empty(score_array.size, dtype=object)
    letters[ranked] = np.repeat(np.array(list(order), dtype=object), counts)
    return letters


def paired_bootstrap_capture_diff(
    actual: Any, top_a: Any, top_b: Any, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Top-grade capture difference ``capture(top_a) − capture(top_b)`` with a paired bootstrap 95 % interval.

    Parameters
    ----------
    actual:
        Realised holdout value per customer.
    top_a, top_b:
        Boolean masks: the customers each grading puts in its top grades (assignments are fixed; only the
        customers are resampled).
    n_boot, seed:
        Replicates and the seed of ``numpy.random.default_rng`` (same draws as
        :func:`segml.evaluate.paired_bootstrap_gini_diff` for the same ``n`` and seed).

    Returns
    -------
    tuple of float
        ``(diff, lo, hi)``: the full-sample difference and the 2.5 / 97.5 percentiles of the replicate
        differences (NaN when the total is not positive).
    """
    values = np.asarray(actual, dtype=np.float64).ravel()
    mask_a = np.asarray(top_a, dtype=bool).ravel()
    mask_b = np.asarray(top_b, dtype=bool).ravel()
    if not values.size == mask_a.size == mask_b.size:
        raise ValueError(f"actual, top_a, top_b sizes differ: {values.size}, {mask_a.size}, {mask_b.size}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    total = values.sum()
    if values.size == 0 or total <= 0:
        return float("nan"), float("nan"), float("nan")
    diff = float(values[mask_a].sum() / total - values[mask_b].sum() / total)
    n = values.size
    weight_diff = values * (mask_a.astype(np.float64) - mask_b.astype(np.float64))
    rng = np.random.default_rng(seed)
    reps_per_chunk = max(1, BOOTSTRAP_CELLS_PER_CHUNK // n)
    differences = np.empty(n_boot)
    for start in range(0, n_boot, reps_per_chunk):
        reps = min(reps_per_chunk, n_boot - start)
        counts = bootstrap_counts(rng, reps, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            differences[start : start + reps] = (counts @ weight_diff) / (counts @ values)
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return diff, float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return diff, float(low), float(high)


def _grading_summary(
    actual: np.ndarray, letters: np.ndarray, order: Sequence[str], new_code: str, top_grades: Sequence[str]
) -> dict[str, Any]:
    """``top_capture``, ``monotone`` and ``per_grade`` of one grading (letters per customer)."""
    n = actual.size
    total = float(actual.sum())
    per_grade = []
    means = []
    for code in [*order, new_code]:
        member = letters == code
        customers = int(member.sum())
        value = float(actual[member].sum())
        share = customers / n if n else float("nan")
        capture = value / total if total > 0 else float("nan")
        mean_value = value / customers if customers else float("nan")
        lift = capture / share if customers and total > 0 else float("nan")
        per_grade.append(
            {
                "grade": code,
                "customers": customers,
                "share": _none_if_nan(share),
                "capture": _none_if_nan(capture),
                "mean_value": _none_if_nan(mean_value),
                "lift": _none_if_nan(lift),
            }
        )
        if code != new_code and customers:
            means.append(mean_value)
    top = np.isin(letters, list(top_grades))
    top_capture = float(actual[top].sum() / total) if total > 0 else float("nan")
    return {
        "top_capture": _none_if_nan(top_capture),
        "monotone": bool(np.all(np.diff(np.asarray(means)) <= 0)),
        "per_grade": per_grade,
        "_top_mask": top,
    }


def _matrix_entry(
    name: str, member: np.ndarray, holdout: np.ndarray, current: np.ndarray, n: int
) -> dict[str, Any]:
    customers = int(member.sum())
    realised_total = float(holdout[member].sum())
    current_total = float(current[member].sum())
    return {
        "name": name,
        "customers": customers,
        "share": _none_if_nan(customers / n if n else float("nan")),
        "current_value_mean": _none_if_nan(current_total / customers if customers else float("nan")),
        "realised_value_mean": _none_if_nan(realised_total / customers if customers else float("nan")),
        "realised_growth": (realised_total / current_total - 1.0) if current_total != 0 else None,
    }


# --------------------------------------------------------------------------------------------------------------
# The document


def grading_evaluation(
    customer_ids: Any,
    holdout_value: Any,
    current_value: Any,
    grades: Any,
    cells: Any,
    scores: Mapping[str, Any],
    policy: GradePolicy | FittedPolicy,
    *,
    selected_scorer: str,
    top_share: float = 0.2,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``grading_evaluation.json`` document.

    Parameters
    ----------
    customer_ids:
        The evaluation population (customers in the population at ``calibration_end``), one per row.
    holdout_value:
        Realised value per customer in the holdout (0 for customers who did not buy).
    current_value:
        Value per customer over the same length before the cutoff (see :func:`current_value_before`).
    grades:
        The policy's letter per customer (new customers: the policy's new-customer code).
    cells:
        The policy's matrix cell key (``<value level>_<potential level>``) per customer; None (or anything
        not a cell key) for new customers (see :func:`cells_from_grades`).
    scores:
        Score per customer for each comparison grading (:data:`COMPARISON_GRADINGS`: ``rfm`` — the ``rfm``
        row of ``comparison.json``, ``rfm_sum``, ``past_spend``, ``potential``); a missing name is skipped,
        ``rfm`` is required.
    policy:
        The (fitted) grade policy: grade order, new-customer code, shares and cell names.
    selected_scorer:
        The scorer actually behind the potential axis (``potential`` unless the fallback was taken).
    top_share:
        Share of the policy's grade shares counted as the top grades (see :func:`top_grade_codes`).
    n_boot, seed:
        Paired-bootstrap settings of the top-capture difference.

    Returns
    -------
    dict
        ``{"population": {...}, "selected_scorer": str, "top_grades": [...], "gradings": [...],
        "matrix": [nine cells], "new_customers": {...}}``, JSON-able (NaN as None).
    """
    ids = np.asarray(customer_ids).ravel()
    n = ids.size
    if n == 0:
        raise ValueError("grading evaluation: the evaluation population is empty")
    holdout = _finite(holdout_value, "holdout_value", n)
    current = _finite(current_value, "current_value", n)
    letters = np.asarray(grades, dtype=object).ravel()
    cell_keys = np.asarray(cells, dtype=object).ravel()
    if letters.size != n or cell_keys.size != n:
        raise ValueError(f"grades ({letters.size}) and cells ({cell_keys.size}) must describe {n} customers")
    if "rfm" not in scores:
        raise ValueError("scores: the 'rfm' score is required (every grading is compared with it)")
    unknown = sorted(set(scores) - set(COMPARISON_GRADINGS))
    if unknown:
        raise ValueError(f"scores: unknown grading(s) {unknown} (allowed: {', '.join(COMPARISON_GRADINGS)})")

    spec = _policy_of(policy)
    order = [g.code for g in spec.grades]
    new_code = spec.new_customer.code
    stray = sorted({str(x) for x in letters} - {*order, new_code})
    if stray:
        raise ValueError(
            f"grades: letters {stray} are not grades of the policy ({', '.join(order)}, {new_code})"
        )
    top_grades = top_grade_codes(spec, top_share)
    graded_order = [*order, new_code]
    counts = {code: int(np.count_nonzero(letters == code)) for code in graded_order}

    summaries: dict[str, dict[str, Any]] = {
        "policy": _grading_summary(holdout, letters, order, new_code, top_grades)
    }
    for name in COMPARISON_GRADINGS:
        if name in scores:
            score = _finite(scores[name], f"scores.{name}", n)
            assigned = comparison_grades(score, ids, counts, graded_order)
            summaries[name] = _grading_summary(holdout, assigned, order, new_code, top_grades)

    rfm_top = summaries["rfm"]["_top_mask"]
    gradings = []
    for name, summary in summaries.items():
        if name == "rfm":
            diff, low, high = 0.0, 0.0, 0.0
        else:
            diff, low, high = paired_bootstrap_capture_diff(
                holdout, summary["_top_mask"], rfm_top, n_boot=n_boot, seed=seed
            )
        gradings.append(
            {
                "grading": name,
                "top_grades": list(top_grades),
                "top_capture": summary["top_capture"],
                "top_capture_diff_vs_rfm": _none_if_nan(diff),
                "top_capture_diff_vs_rfm_ci": [_none_if_nan(low), _none_if_nan(high)],
                "monotone": summary["monotone"],
                "per_grade": summary["per_grade"],
            }
        )

    matrix = [
        {"cell": key, **_matrix_entry(spec.matrix.cells[key], cell_keys == key, holdout, current, n)}
        for key in MATRIX_REPORT_ORDER
    ]
    is_new = letters == new_code
    new_name = spec.new_customer.matrix_cell or spec.new_customer.name
    new_customers = {"grade": new_code, **_matrix_entry(new_name, is_new, holdout, current, n)}
    return {
        "population": {
            "customers": n,
            "customers_with_holdout_value": int(np.count_nonzero(holdout > 0)),
            "holdout_value_total": float(holdout.sum()),
            "current_value_total": float(current.sum()),
        },
        "selected_scorer": str(selected_scorer),
        "top_grades": list(top_grades),
        "gradings": gradings,
        "matrix": matrix,
        "new_customers": new_customers,
    }


def current_value_before(
    transactions: TableSource, cutoff: dt.date, length_days: int, customer_ids: Any
) -> np.ndarray:
    """Net spend per customer over ``(cutoff − length_days, cutoff]``: the "current value over the same length
    as the holdout" that realised growth is measured against (0 for customers without purchases there).

    Parameters
    ----------
    transactions:
        Clean transactions (parquet path or DataFrame).
    cutoff:
        The calibration end.
    length_days:
        The holdout's length in days.
    customer_ids:
        The evaluation population, in the order the result is aligned with.
    """
    from segml.features import build_labels

    start = cutoff - dt.timedelta(days=int(length_days))
    labels = build_labels(transactions, start, int(length_days))
    spend = labels.set_index("customer_id")["future_spend"]
    ids = pd.Index(np.asarray(customer_ids).astype(str))
    return spend.reindex(ids).fillna(0.0).to_numpy(dtype=np.float64)
