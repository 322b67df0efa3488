"""Explanations: SHAP global importance and per-customer reason codes in plain words.

Per-customer contributions come from LightGBM's own TreeSHAP (``Booster.predict(pred_contrib=True)``), so
the scoring path needs neither the ``shap`` package nor matplotlib: only :func:`shap_summary_plot` imports
them, lazily.

Reason-code rule
----------------
A customer's contributions (excluding the bias) sum to their raw prediction minus the average raw prediction.
With ``direction="auto"`` the reasons explain that gap: for a customer predicted above average, features that
*raise* the prediction come first, largest first; for a customer predicted below average, features that
*lower* it come first, most negative first. Features pushing the other way follow (largest first), and
features with zero contribution are never reasons. Every reason says which way it pushes ("raises" /
"lowers" predicted value). ``direction`` may also be ``"raises"``, ``"lowers"``, ``"magnitude"`` (largest
|contribution| whatever its sign) or a ±1 array per customer (e.g. from the customer's grade).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from segml import catalog
from segml.catalog import Wording
from segml.config import FeatureConfig
from segml.errors import InputFileError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

#: name of the bias (expected value) column in contribution frames
BIAS_COLUMN = "bias"

#: rows per block when ordering contributions (bounds memory at ~1M customers × 40 features)
_ORDER_BLOCK_ROWS = 200_000

Direction = Literal["auto", "raises", "lowers", "magnitude"]

# --------------------------------------------------------------------------------------------------------------
# Contributions


def _booster(model: Any) -> Any:
    """The LightGBM Booster inside ``model`` (a Booster, an LGBMModel, or a wrapper with ``booster_``)."""
    booster = getattr(model, "booster_", model)
    if not hasattr(booster, "feature_name") or not hasattr(booster, "predict"):
        raise TypeError(f"expected a LightGBM Booster or a model with .booster_, got {type(model).__name__}")
    return booster


def feature_contributions(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    """Per-customer TreeSHAP contributions from LightGBM (no shap package needed).

    Parameters
    ----------
    model:
        A ``lightgbm.Booster``, an ``LGBMModel`` or any object with a ``booster_`` attribute.
    X:
        Model input, the columns the booster was trained on.

    Returns
    -------
    pd.DataFrame
        One column per model feature plus ``bias``, same index as ``X``. Each row sums to
        ``predict(raw_score=True)`` (log scale for tweedie/poisson objectives).
    """
    booster = _booster(model)
    names = list(booster.feature_name())
    values = np.asarray(booster.predict(X, pred_contrib=True))
    if values.ndim != 2 or values.shape[1] != len(names) + 1:
        raise ValueError(
            f"pred_contrib returned shape {values.shape}; only single-output models are supported "
            f"({len(names)} features + bias expected)"
        )
    return pd.DataFrame(values, columns=[*names, BIAS_COLUMN], index=getattr(X, "index", None))


def global_importance(contrib: pd.DataFrame) -> pd.DataFrame:
    """Mean |contribution| per feature, largest first.

    Returns
    -------
    pd.DataFrame
        ``feature, mean_abs_contribution, mean_contribution, share`` (share of the total mean |contribution|).
    """
    features = contrib.drop(columns=[BIAS_COLUMN], errors="ignore")
    values = features.to_numpy(dtype=float)
    mean_abs = np.nanmean(np.abs(values), axis=0) if len(features) else np.zeros(values.shape[1])
    mean = np.nanmean(values, axis=0) if len(features) else np.zeros(values.shape[1])
    total = mean_abs.sum()
    table = pd.DataFrame(
        {
            "feature": list(features.columns),
            "mean_abs_contribution": mean_abs,
            "mean_contribution": mean,
            "share": mean_abs / total if total > 0 else np.zeros_like(mean_abs),
        }
    )
    return table.sort_values("mean_abs_contribution", ascending=False, kind="stable").reset_index(drop=True)


def shap_summary_plot(
    booster_or_model: Any,
    X: pd.DataFrame,
    ax: Axes | None = None,
    *,
    max_display: int = 20,
    plot_type: Literal["dot", "bar"] = "dot",
) -> Axes:
    """SHAP summary plot (beeswarm, or bar of mean |SHAP|) of a LightGBM model on ``X``.

    Contributions come from ``pred_contrib`` (identical to shap's TreeExplainer); shap draws them.
    shap and matplotlib are imported here only, so scoring never needs them.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    import shap

    contrib = feature_contributions(booster_or_model, X)
    names = [c for c in contrib.columns if c != BIAS_COLUMN]
    data = X[names].copy() if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=names)
    for column in data.columns:  # colour categorical features by their code
        if not pd.api.types.is_numeric_dtype(data[column]):
            data[column] = data[column].astype("category").cat.codes.astype(float).replace(-1.0, np.nan)
    explanation = shap.Explanation(
        values=contrib[names].to_numpy(dtype=float),
        base_values=contrib[BIAS_COLUMN].to_numpy(dtype=float),
        data=data.to_numpy(dtype=float),
        feature_names=names,
    )
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.35 * min(max_display, len(names)) + 1.5))
    if plot_type == "bar":
        shap.plots.bar(explanation, max_display=max_display, ax=ax, show=False)
    else:
        shap.plots.beeswarm(explanation, max_display=max_display, ax=ax, show=False, plot_size=None)
    return ax


# --------------------------------------------------------------------------------------------------------------
# Reference statistics


def reference_stats(features: pd.DataFrame, columns: list[str] | None = None) -> dict[str, float | None]:
    """Per-feature medians frozen at training, over customers with purchases (all rows if the table has no
    ``has_purchases`` column). JSON-able: a feature whose median is undefined maps to ``None``.

    Parameters
    ----------
    features:
        Training feature table.
    columns:
        Features to summarise; default every numeric or boolean column.
    """
    table = features
    if "has_purchases" in features.columns:
        table = features[features["has_purchases"].fillna(False).to_numpy(dtype=bool)]
    if columns is None:
        columns = [
            c
            for c in table.columns
            if c != "customer_id"
            and (pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]))
            and not pd.api.types.is_datetime64_any_dtype(table[c])
        ]
    medians: dict[str, float | None] = {}
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").astype(float)
        median = float(values.median()) if values.notna().any() else math.nan
        medians[column] = median if math.isfinite(median) else None
    return medians


# --------------------------------------------------------------------------------------------------------------
# Wording


def _wording(feature: str, values: pd.Series) -> Wording:
    """The catalog wording of ``feature``; a column the catalog does not know (a customer attribute) is worded
    as a category (``name = value``) unless it is numeric (``name: value, median is …``)."""
    wording = catalog.entry(feature, values.dtype).wording
    if wording is not None:
        return wording
    numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    return Wording("generic" if numeric else "category")


def _feature_descriptions(names: list[str]) -> dict[str, str]:
    """Catalog descriptions of the catalogued ``names`` (any window); other columns are named by themselves."""
    return {name: catalog.describe(name) for name in names if catalog.is_catalogued(name)}


def _money_text(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}".rstrip("0").rstrip(".")


def _count_text(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 10 else f"{x:,.1f}"


def _times_text(x: float) -> str:
    return f"{x:,.0f}×" if abs(x) >= 100 else f"{x:.1f}×"


def _percent_text(x: float) -> str:
    return f"{100 * x:.0f}%"


def _exp_quietly(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(values)


def _display_round(values: np.ndarray, kind: str) -> np.ndarray:
    """Round values to what their text shows, so equal texts share one key."""
    if kind == "percent":
        return np.round(values, 2)
    big = np.abs(values) >= (100 if kind in ("money", "times") else 10)
    return np.where(big, np.round(values), np.round(values, 2 if kind == "money" else 1))


@dataclass(frozen=True)
class _WordingContext:
    active_months: int
    trend_window: int
    descriptions: dict[str, str]
    #: suffix for a negative / positive contribution
    suffixes: tuple[str, str]


def _sentences(
    keys: np.ndarray,
    positive: np.ndarray,
    sentence: Callable[[float], str],
    missing_text: str,
    ctx: _WordingContext,
) -> np.ndarray:
    """Build texts vectorised: each distinct (key, sign) sentence is written once, then broadcast to rows."""
    codes, unique_index = pd.factorize(pd.Series(keys, dtype=float), use_na_sentinel=True)
    uniques = np.asarray(unique_index, dtype=float).tolist()
    codes = np.where(codes < 0, len(uniques), codes).astype(np.int64)
    pair_codes, pairs = pd.factorize(codes * 2 + positive.astype(np.int64))
    texts = np.array(
        [
            (sentence(uniques[p // 2]) if p // 2 < len(uniques) else missing_text) + ctx.suffixes[p % 2]
            for p in pairs.tolist()
        ],
        dtype=object,
    )
    return texts[pair_codes]


def _render(
    feature: str,
    wording: Wording,
    raw: np.ndarray,
    positive: np.ndarray,
    median: float,
    ctx: _WordingContext,
) -> np.ndarray:
    """Plain-words reasons for one feature, vectorised over the customers whose reason it is."""
    kind = wording.style
    if kind == "category":
        labels = pd.Series(raw, dtype=object)
        codes, uniques = pd.factorize(labels.astype(str).where(labels.notna()), use_na_sentinel=True)
        return _sentences(
            np.where(codes < 0, np.nan, codes.astype(float)),
            positive,
            lambda code: f"{feature} = {uniques[int(code)]}",
            f"{feature} unknown",
            ctx,
        )

    values = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=float)
    label = ctx.descriptions.get(feature, feature.replace("_", " "))
    missing_text = f"no value for {label}"
    median_known = median is not None and math.isfinite(median)
    before, after = wording.before, wording.after

    if kind == "money":
        median_positive = bool(median_known and median > 0)
        as_ratio = (values > 0) & median_positive
        median_text = _money_text(median) if median_known else "unknown"
        text = np.empty(values.size, dtype=object)
        ratios = values[as_ratio] / (median if median_positive else 1.0)
        text[as_ratio] = _sentences(
            _display_round(ratios, "times"),
            positive[as_ratio],
            lambda r: f"{before}{_times_text(r)} the median{after}",
            missing_text,
            ctx,
        )
        text[~as_ratio] = _sentences(
            _display_round(values[~as_ratio], "money"),
            positive[~as_ratio],
            lambda v: f"{before}{_money_text(v)}{after}, median is {median_text}",
            missing_text,
            ctx,
        )
        return text
    if kind in ("count", "days", "generic"):
        median_text = _count_text(median) if median_known else "unknown"
        keys = _display_round(values, kind)
        if kind == "generic":
            return _sentences(
                keys,
                positive,
                lambda v: f"{label}: {_count_text(v)}, median is {median_text}",
                missing_text,
                ctx,
            )
        return _sentences(
            keys,
            positive,
            lambda v: f"{before}{_count_text(v)}{after}, median is {median_text}",
            missing_text,
            ctx,
        )
    if kind == "percent":
        median_text = _percent_text(median) if median_known else "unknown"
        return _sentences(
            _display_round(values, kind),
            positive,
            lambda v: f"{before}{_percent_text(v)}{after}, median is {median_text}",
            missing_text,
            ctx,
        )
    if kind == "months":
        months = ctx.active_months
        median_text = f"{median * months:.0f}" if median_known else "unknown"
        return _sentences(
            np.round(values * months),
            positive,
            lambda v: f"active in {v:.0f} of the last {months} months, median is {median_text}",
            missing_text,
            ctx,
        )
    if kind == "binary":
        keys = np.where(np.isnan(values), np.nan, (values >= 0.5).astype(float))
        return _sentences(keys, positive, lambda v: before if v else after, missing_text, ctx)
    if kind == "trend":
        window = ctx.trend_window
        return _sentences(
            _display_round(_exp_quietly(values), "times"),
            positive,
            lambda r: f"spend in the last {window} days is {_times_text(r)} the {window} days before",
            missing_text,
            ctx,
        )
    # kind == "times"
    median_text = _times_text(median) if median_known else "unknown"
    return _sentences(
        _display_round(values, "times"),
        positive,
        lambda v: f"{before}{_times_text(v)}{after}, median is {median_text}",
        missing_text,
        ctx,
    )


# --------------------------------------------------------------------------------------------------------------
# Reason codes


def reason_codes(
    contrib: pd.DataFrame,
    features: pd.DataFrame,
    reference: dict[str, float | None],
    top_k: int = 3,
    *,
    direction: Direction | np.ndarray | pd.Series = "auto",
    feature_config: FeatureConfig | None = None,
    sign_words: bool = True,
) -> pd.DataFrame:
    """Top-``top_k`` reasons per customer, in plain words, vectorised (no loop over customers).

    Parameters
    ----------
    contrib:
        Per-feature contributions (one column per feature, optional ``bias``), rows aligned by position
        with ``features`` — e.g. :func:`feature_contributions`.
    features:
        Feature table with ``customer_id`` and every contribution column (raw values are quoted).
    reference:
        Per-feature medians frozen at training (:func:`reference_stats`).
    top_k:
        Number of reasons per customer.
    direction:
        Ordering rule, see the module docstring (default ``"auto"``: explain why the customer is above or
        below the average prediction).
    feature_config:
        Gives ``active_months`` and ``trend_window`` for wording (defaults of :class:`FeatureConfig`).
    sign_words:
        Append "(raises predicted value)" / "(lowers predicted value)" to each reason.

    Returns
    -------
    pd.DataFrame
        ``customer_id`` then, for i = 1..top_k, ``reason_i``, ``reason_i_feature``,
        ``reason_i_contribution``. Missing reasons (fewer non-zero contributions than ``top_k``) are None/NaN.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}")
    names = [c for c in contrib.columns if c != BIAS_COLUMN]
    if len(contrib) != len(features):
        raise InputFileError(
            f"contributions: {len(contrib)} rows for a feature table of {len(features)} rows (aligned by position)"
        )
    absent = [c for c in ["customer_id", *names] if c not in features.columns]
    if absent:
        raise InputFileError(
            f"features: missing column '{absent[0]}' needed for reason codes ({len(absent)} missing, "
            f"table of {len(features)} rows)"
        )
    values = np.array(contrib[names], dtype=float)
    values[~np.isfinite(values)] = 0.0
    n_rows = values.shape[0]
    sign = _direction(direction, values, n_rows)
    order, valid = _top_reasons(values, sign, min(top_k, len(names)))

    spec = feature_config or FeatureConfig()
    suffixes = (" (lowers predicted value)", " (raises predicted value)") if sign_words else ("", "")
    ctx = _WordingContext(spec.active_months, spec.trend_window, _feature_descriptions(names), suffixes)
    raw_columns = {name: features[name].to_numpy() for name in names}
    wordings = {name: _wording(name, features[name]) for name in names}
    rows = np.arange(n_rows)

    result: dict[str, Any] = {"customer_id": features["customer_id"].to_numpy()}
    feature_names = np.array(names, dtype=object)
    for rank in range(top_k):
        text = np.full(n_rows, None, dtype=object)
        feature_col = np.full(n_rows, None, dtype=object)
        contribution = np.full(n_rows, np.nan)
        if rank < order.shape[1]:
            index = order[:, rank]
            ok = valid[:, rank]
            contribution = np.where(ok, values[rows, index], np.nan)
            feature_col = np.where(ok, feature_names[index], None)
            for j, members in _group_rows(np.where(ok, index, -1)):
                name = names[j]
                text[members] = _render(
                    name,
                    wordings[name],
                    raw_columns[name][members],
                    contribution[members] > 0,
                    _median(reference, name),
                    ctx,
                )
        result[f"reason_{rank + 1}"] = text
        result[f"reason_{rank + 1}_feature"] = feature_col
        result[f"reason_{rank + 1}_contribution"] = contribution
    return pd.DataFrame(result, copy=False)  # fresh arrays: no consolidation copy


def _group_rows(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(label, row positions) for each label ≥ 0, rows in ascending order (one stable sort, no masks)."""
    by_label = np.argsort(labels, kind="stable")
    ordered = labels[by_label]
    present, starts = np.unique(ordered, return_index=True)
    ends = [*starts[1:], ordered.size]
    return [(int(j), by_label[a:b]) for j, a, b in zip(present, starts, ends, strict=True) if j >= 0]


def _median(reference: dict[str, float | None], name: str) -> float:
    median = reference.get(name)
    return math.nan if median is None else float(median)


def _direction(direction: Any, values: np.ndarray, n_rows: int) -> np.ndarray | None:
    """+1/−1 per row (which sign comes first), or None for pure magnitude ordering."""
    if isinstance(direction, str):
        if direction == "magnitude":
            return None
        if direction == "raises":
            return np.ones(n_rows)
        if direction == "lowers":
            return -np.ones(n_rows)
        if direction == "auto":
            return np.where(values.sum(axis=1) < 0, -1.0, 1.0)
        raise ValueError(
            f"direction must be auto, raises, lowers, magnitude or a ±1 array, got {direction!r}"
        )
    sign = np.sign(np.asarray(direction, dtype=float).reshape(-1))
    if sign.size != n_rows:
        raise ValueError(f"direction: {sign.size} values for {n_rows} customers")
    return np.where(sign < 0, -1.0, 1.0)


def _top_reasons(values: np.ndarray, sign: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the top-k reasons per row and whether each is a real (non-zero) reason.

    Order: contributions in the preferred direction first, then the others; within each, largest
    |contribution| first; ties go to the earlier column. Each row is ordered on its own values only (k exact
    argmax passes, no cross-row arithmetic), so a customer's reasons never depend on the batch.
    """
    order = np.zeros((values.shape[0], k), dtype=np.int64)
    valid = np.zeros((values.shape[0], k), dtype=bool)
    for start in range(0, values.shape[0], _ORDER_BLOCK_ROWS):
        block = values[start : start + _ORDER_BLOCK_ROWS]
        rows = np.arange(len(block))
        magnitude = np.abs(block)
        magnitude[block == 0.0] = -1.0  # -1: never a reason
        if sign is None:
            preferred, other = magnitude, np.full_like(magnitude, -1.0)
        else:
            same_sign = (block > 0.0) == (sign[start : start + _ORDER_BLOCK_ROWS, None] > 0.0)
            preferred = np.where(same_sign, magnitude, -1.0)
            other = magnitude
            other[same_sign] = -1.0
        for rank in range(k):
            best_preferred = preferred.argmax(axis=1)
            best_other = other.argmax(axis=1)
            use_preferred = preferred[rows, best_preferred] >= 0
            use_other = ~use_preferred & (other[rows, best_other] >= 0)
            order[start + rows, rank] = np.where(use_preferred, best_preferred, best_other)
            valid[start + rows, rank] = use_preferred | use_other
            preferred[rows[use_preferred], best_preferred[use_preferred]] = -1.0
            other[rows[use_other], best_other[use_other]] = -1.0
    return order, valid


def with_reasons(grades: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """Store reason codes next to the grades (rows aligned by position; customer ids must match)."""
    if len(grades) != len(reasons) or not np.array_equal(
        grades["customer_id"].to_numpy(), reasons["customer_id"].to_numpy()
    ):
        raise InputFileError(
            f"reasons: customer_id does not match the grades row for row ({len(reasons)} vs {len(grades)} rows)"
        )
    return pd.concat(
        [grades.reset_index(drop=True), reasons.drop(columns="customer_id").reset_index(drop=True)], axis=1
    )
