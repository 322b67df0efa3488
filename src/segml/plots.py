"""Plots for the notebooks and the reports index: every ``plot_*`` takes ``ax=None`` and returns the Axes.

Grade names may be Chinese (高净值客户, VIP客户 …): importing this module registers Noto Sans CJK SC, shipped by
the ``mplfonts`` package, with matplotlib (:func:`setup_fonts`), so labels render without missing-glyph
boxes. Nothing here selects a backend or shows a figure, so the functions work under Agg (scripts, tests)
and inline (notebooks) alike.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

CJK_FONT_FAMILY = "Noto Sans CJK SC"
_MPLFONTS_FILE = "NotoSansCJKsc-Regular.otf"
_PERCENT = PercentFormatter(xmax=1.0, decimals=0)
_MAX_CURVE_POINTS = 1000


def cjk_font_file() -> Path | None:
    """``<site-packages>/mplfonts/fonts/NotoSansCJKsc-Regular.otf`` without importing mplfonts."""
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "fonts" / _MPLFONTS_FILE
    return candidate if candidate.is_file() else None


def setup_fonts() -> str | None:
    """Register a CJK font and make it the first sans-serif choice (idempotent; called on import).

    Uses Noto Sans CJK SC from the installed ``mplfonts`` package, else a system-installed Noto Sans CJK SC
    (Debian ``fonts-noto-cjk``). DejaVu Sans stays as fallback for glyphs the CJK font lacks.

    Returns
    -------
    str | None
        The CJK family name, or None (with a warning) when no CJK font is available.
    """
    path = cjk_font_file()
    if path is not None and not any(f.fname == str(path) for f in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(str(path))
    available = {f.name for f in font_manager.fontManager.ttflist}
    if CJK_FONT_FAMILY not in available:
        warnings.warn(
            f"{CJK_FONT_FAMILY} not found (install the 'mplfonts' package or fonts-noto-cjk): "
            "Chinese labels will render as boxes",
            stacklevel=2,
        )
        return None
    sans = [CJK_FONT_FAMILY, "DejaVu Sans"]
    mpl.rcParams["font.sans-serif"] = sans + [f for f in mpl.rcParams["font.sans-serif"] if f not in sans]
    mpl.rcParams["font.family"] = "sans-serif"
    return CJK_FONT_FAMILY


setup_fonts()


# --------------------------------------------------------------------------------------------------------------
# Helpers


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.2)) -> Axes:
    if ax is not None:
        return ax
    _, new_ax = plt.subplots(figsize=figsize, layout="constrained")
    return new_ax


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; got {list(frame.columns)}")


def _cumulative_share_curve(actual: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of customers, cumulative share of actual value) when customers are taken in ``order``."""
    total = actual.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(actual[order])]) / (total if total != 0 else 1.0)
    share = np.arange(len(actual) + 1) / max(len(actual), 1)
    if len(share) > _MAX_CURVE_POINTS:  # thin the curve: a line of a million points is slow and no clearer
        keep = np.unique(np.linspace(0, len(share) - 1, _MAX_CURVE_POINTS).round().astype(int))
        share, cumulative = share[keep], cumulative[keep]
    return share, cumulative


def _short_number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _descending_order(values: np.ndarray) -> np.ndarray:
    # stable, so tied scores keep input order: the same inputs always draw the same curve
    return np.argsort(-values, kind="stable")


def _annotated_heatmap(
    ax: Axes, values: np.ndarray, labels: np.ndarray, cmap: str, diverging: bool = False
) -> None:
    finite = values[np.isfinite(values)]
    if diverging:  # centre the colour scale on 0 so blue/red read as below/above the other rows
        limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=-limit, vmax=limit)
        dark = np.abs(values) > 0.6 * limit
    else:
        image = ax.imshow(values, cmap=cmap, aspect="auto")
        midpoint = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        dark = values > midpoint
    for (row, col), text in np.ndenumerate(labels):
        color = "white" if np.isfinite(values[row, col]) and dark[row, col] else "black"
        ax.text(col, row, text, ha="center", va="center", color=color, fontsize=9)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _matrix_heatmap(
    matrix: pd.DataFrame,
    values: np.ndarray,
    labels: np.ndarray,
    ax: Axes | None,
    cmap: str,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Axes:
    """Annotated heatmap of ``values`` laid out like ``matrix``: its index and columns label the axes (their
    names, when set, replace ``xlabel`` / ``ylabel``)."""
    ax = _axes(ax, figsize=(5.6, 4.4))
    _annotated_heatmap(ax, values, labels, cmap=cmap)
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), [str(i) for i in matrix.index])
    ax.set(title=title, xlabel=str(matrix.columns.name or xlabel), ylabel=str(matrix.index.name or ylabel))
    return ax


# --------------------------------------------------------------------------------------------------------------
# Ranking quality


def plot_gain_curve(
    actual: Sequence[float] | np.ndarray | pd.Series,
    predictions: Mapping[str, Sequence[float] | np.ndarray | pd.Series],
    ax: Axes | None = None,
) -> Axes:
    """Cumulative gain: share of holdout value captured vs share of customers, ranked by each model.

    Parameters
    ----------
    actual:
        Holdout value per customer (the thing to capture).
    predictions:
        Model name → score per customer (same order as ``actual``); higher = more valuable.
    ax:
        Axes to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
    """
    actual_values = np.asarray(actual, dtype=float)
    ax = _axes(ax)
    share, perfect = _cumulative_share_curve(actual_values, _descending_order(actual_values))
    ax.plot(share, perfect, color="0.3", linestyle="--", linewidth=1, label="perfect")
    for name, scores in predictions.items():
        score_values = np.asarray(scores, dtype=float)
        if score_values.shape != actual_values.shape:
            raise ValueError(
                f"plot_gain_curve: {name!r} has {score_values.size} scores for {actual_values.size} customers"
            )
        share, captured = _cumulative_share_curve(actual_values, _descending_order(score_values))
        ax.plot(share, captured, linewidth=1.6, label=str(name))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="random")
    ax.set(
        title="Cumulative gain on the holdout",
        xlabel="Share of customers (ranked by score)",
        ylabel="Share of holdout value captured",
        xlim=(0, 1),
    )
    ax.xaxis.set_major_formatter(_PERCENT)
    ax.yaxis.set_major_formatter(_PERCENT)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_lift(
    actual: Sequence[float] | np.ndarray | pd.Series,
    predictions: Mapping[str, Sequence[float] | np.ndarray | pd.Series],
    bins: int = 10,
    ax: Axes | None = None,
) -> Axes:
    """Lift per score decile: mean holdout value in the decile / overall mean, one bar group per model.

    Decile 1 holds the highest scores. Customers are split into ``bins`` equal-count groups by rank.
    """
    actual_values = np.asarray(actual, dtype=float)
    overall = actual_values.mean() if actual_values.size else np.nan
    ax = _axes(ax)
    width = 0.8 / max(len(predictions), 1)
    positions = np.arange(1, bins + 1)
    for i, (name, scores) in enumerate(predictions.items()):
        order = _descending_order(np.asarray(scores, dtype=float))
        groups = np.array_split(actual_values[order], bins)
        lift = np.array([g.mean() / overall if g.size and overall else np.nan for g in groups])
        ax.bar(positions + (i - (len(predictions) - 1) / 2) * width, lift, width=width, label=str(name))
    ax.axhline(1.0, color="0.4", linestyle=":", linewidth=1)
    ax.set(title="Lift by score decile", xlabel="Score decile (1 = highest)", ylabel="Lift (× average)")
    ax.set_xticks(positions)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_decile_calibration(decile_table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean predicted vs mean actual value per decile (columns ``decile``, ``mean_pred``, ``mean_actual``)."""
    _require_columns(decile_table, ["decile", "mean_pred", "mean_actual"], "plot_decile_calibration")
    table = decile_table.sort_values("decile")
    ax = _axes(ax)
    ax.plot(table["decile"], table["mean_actual"], marker="o", label="actual (mean)")
    ax.plot(table["decile"], table["mean_pred"], marker="s", linestyle="--", label="predicted (mean)")
    ax.set(
        title="Calibration by decile", xlabel="Decile of predicted value", ylabel="Mean value per customer"
    )
    ax.set_xticks(table["decile"].tolist())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_backtest(backtest: pd.DataFrame, metric: str = "normalized_gini", ax: Axes | None = None) -> Axes:
    """A metric per backtest cutoff, one line per model (columns ``cutoff``, ``model``, ``metric``)."""
    _require_columns(backtest, ["cutoff", "model", metric], "plot_backtest")
    table = backtest.assign(cutoff=pd.to_datetime(backtest["cutoff"])).sort_values(["model", "cutoff"])
    ax = _axes(ax)
    for name, rows in table.groupby("model", sort=True):
        ax.plot(rows["cutoff"], rows[metric], marker="o", label=str(name))
    cutoffs = sorted(table["cutoff"].unique())
    # per-Axes tick labels (Figure.autofmt_xdate would hide the tick labels of other subplots)
    ax.set_xticks(cutoffs, [pd.Timestamp(c).strftime("%Y-%m-%d") for c in cutoffs], rotation=30, ha="right")
    ax.set(title=f"Backtest: {metric} by cutoff", xlabel="Cutoff", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_feature_importance(importance: pd.DataFrame, top: int = 15, ax: Axes | None = None) -> Axes:
    """Horizontal bars of mean |SHAP| per feature (columns ``feature``, ``mean_abs``), largest on top."""
    _require_columns(importance, ["feature", "mean_abs"], "plot_feature_importance")
    table = importance.nlargest(top, "mean_abs").iloc[::-1]
    ax = _axes(ax, figsize=(6.4, 0.3 * len(table) + 1.5))
    ax.barh(table["feature"].astype(str), table["mean_abs"], color="tab:blue")
    ax.set(title="Feature importance (mean |SHAP|)", xlabel="Mean |SHAP value|", ylabel="")
    ax.grid(axis="x", alpha=0.3)
    return ax


# --------------------------------------------------------------------------------------------------------------
# Grades and segments


def plot_grade_sizes(summary: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Customers per grade (columns ``grade``, ``n``), bars annotated with count and share."""
    _require_columns(summary, ["grade", "n"], "plot_grade_sizes")
    ax = _axes(ax)
    total = summary["n"].sum()
    bars = ax.bar(summary["grade"].astype(str), summary["n"], color="tab:blue")
    labels = [f"{n:,}\n({n / total:.0%})" if total else f"{n:,}" for n in summary["n"]]
    ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    ax.set(title="Customers per grade", xlabel="Grade", ylabel="Customers")
    ax.margins(y=0.2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return ax


def plot_value_share(summary: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Share of customers vs share of value per grade, side by side (columns ``grade``, ``n``,
    ``value_share``): the concentration of value in the top grades at a glance."""
    _require_columns(summary, ["grade", "n", "value_share"], "plot_value_share")
    ax = _axes(ax)
    positions = np.arange(len(summary))
    total = summary["n"].sum()
    customer_share = summary["n"] / total if total else summary["n"] * 0.0
    ax.bar(positions - 0.2, customer_share, width=0.4, label="share of customers", color="0.65")
    bars = ax.bar(
        positions + 0.2, summary["value_share"], width=0.4, label="share of value", color="tab:orange"
    )
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in summary["value_share"]], fontsize=8, padding=2)
    ax.set_xticks(positions, summary["grade"].astype(str))
    ax.set(title="Customers and value by grade", xlabel="Grade", ylabel="Share")
    ax.yaxis.set_major_formatter(_PERCENT)
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    return ax


def plot_matrix_heatmap(matrix: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Value × potential matrix: customer counts per cell (rows = value level, columns = potential level).

    The index and column labels of ``matrix`` are the axis labels; cells show the count and the share of
    all customers.
    """
    counts = matrix.to_numpy(dtype=float)
    total = np.nansum(counts)
    labels = np.array(
        [[f"{c:,.0f}\n{c / total:.0%}" if total else f"{c:,.0f}" for c in row] for row in counts],
        dtype=object,
    )
    return _matrix_heatmap(
        matrix,
        counts,
        labels,
        ax,
        "Blues",
        "Value × potential matrix (customers)",
        "Potential",
        "Current value",
    )


def plot_migration(matrix: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Grade migration between two cutoffs: row-normalised shares (rows = grade before, columns = after).

    ``matrix`` holds customer counts; each row is shown as the share of that grade's customers moving to each
    grade, annotated with share and count.
    """
    counts = matrix.to_numpy(dtype=float)
    row_totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(row_totals > 0, counts / row_totals, np.nan)
    labels = np.array(
        [
            [f"{s:.0%}\n({c:,.0f})" if np.isfinite(s) else "–" for s, c in zip(srow, crow, strict=True)]
            for srow, crow in zip(shares, counts, strict=True)
        ],
        dtype=object,
    )
    return _matrix_heatmap(
        matrix,
        shares,
        labels,
        ax,
        "Purples",
        "Grade migration (share of each row)",
        "Grade after",
        "Grade before",
    )


#: words for the columns of a cluster profile (``y`` is the holdout spend the clusters are scored on)
_PROFILE_WORDS = {
    "y": "holdout spend",
    "size": "customers",
    "cluster_value": "value per customer",
    "share_customers": "share of customers",
    "share_value": "share of value",
}


def profile_label(name: str) -> str:
    """Plain words for a cluster-profile column: ``mean_y`` → "mean holdout spend", ``share_value`` →
    "share of value", ``mean_monetary_total`` → "mean monetary total"."""
    name = str(name)
    if name in _PROFILE_WORDS:
        return _PROFILE_WORDS[name]
    for prefix in ("mean", "median", "share", "sum"):
        if name.startswith(prefix + "_"):
            rest = name[len(prefix) + 1 :]
            words = _PROFILE_WORDS.get(rest, rest.replace("_", " "))
            return f"{prefix} of {words}" if prefix == "share" else f"{prefix} {words}"
    return name.replace("_", " ")


def _wrapped(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width=width)) or str(text)


def plot_cluster_profile(profile: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Cluster profiles: one row per cluster, one column per feature, coloured by the column's z-score
    (how far the cluster sits from the others) and annotated with the raw mean.

    A ``cluster`` column, if present, labels the rows (else the index does); non-numeric columns are ignored.
    Clusters without customers (``size`` 0 or an empty ``share_customers``) are left out; columns are labelled
    in words (:func:`profile_label`).
    """
    table = profile.set_index("cluster") if "cluster" in profile.columns else profile
    for column in ("size", "share_customers"):
        if column in table.columns:
            sizes = pd.to_numeric(table[column], errors="coerce")
            table = table[sizes.fillna(0) > 0]
    numeric = table.select_dtypes("number")
    if numeric.empty:
        raise ValueError(f"plot_cluster_profile: no numeric columns in {list(profile.columns)}")
    values = numeric.to_numpy(dtype=float)
    spread = values.std(axis=0)
    zscores = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    labels = np.array([[_short_number(v) for v in row] for row in values], dtype=object)
    ax = _axes(ax, figsize=(max(6.4, 0.9 * numeric.shape[1] + 2), 0.6 * len(numeric) + 2))
    _annotated_heatmap(ax, zscores, labels, cmap="RdBu_r", diverging=True)
    ax.set_xticks(
        range(numeric.shape[1]),
        [_wrapped(profile_label(c), 18) for c in numeric.columns],
        rotation=35,
        ha="right",
    )
    ax.set_yticks(range(len(numeric)), [str(i) for i in numeric.index])
    ax.set(title="Cluster profiles (colour: z-score across clusters)", xlabel="", ylabel="Cluster")
    return ax


# --------------------------------------------------------------------------------------------------------------
# Data, explanations and drift


def plot_monthly_activity(
    monthly: pd.DataFrame, markers: Mapping[str, object] | None = None, ax: Axes | None = None
) -> Axes:
    """Net spend per month (bars) and active customers per month (line, right axis).

    Parameters
    ----------
    monthly:
        Columns ``month`` (date-like), ``spend`` and ``customers``.
    markers:
        Optional label → date, drawn as vertical lines (e.g. ``{"calibration end": date}``).
    """
    _require_columns(monthly, ["month", "spend", "customers"], "plot_monthly_activity")
    ax = _axes(ax, figsize=(8.0, 3.8))
    months = pd.to_datetime(monthly["month"])
    ax.bar(months, monthly["spend"], width=20, color="tab:blue", alpha=0.75, label="net spend")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set(title="Monthly activity", xlabel="Month", ylabel="Net spend")
    right = ax.twinx()
    right.plot(months, monthly["customers"], color="tab:orange", marker="o", markersize=3, label="customers")
    right.set_ylabel("Active customers")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for i, (label, when) in enumerate((markers or {}).items()):
        ax.axvline(pd.Timestamp(when), color="0.3", linestyle="--" if i % 2 == 0 else ":", linewidth=1)
        ax.annotate(
            str(label),
            (pd.Timestamp(when), 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="0.3",
        )
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    return ax


def plot_shap_summary(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    max_display: int = 15,
    ax: Axes | None = None,
    *,
    describe: bool = True,
) -> Axes:
    """SHAP beeswarm from precomputed contributions (e.g. ``PotentialValueModel.predict_contrib``).

    Parameters
    ----------
    contributions:
        One column per feature plus ``bias``; rows aligned with ``features``.
    features:
        Feature values (colour of the dots); non-numeric columns are coloured by category code.
    max_display:
        Features shown (largest mean |contribution| first).
    describe:
        Label features with the feature catalog's wording (:func:`segml.catalog.describe`) instead of their
        column names.
    """
    import shap

    from segml import catalog

    names = [c for c in contributions.columns if c != "bias"]
    data = pd.DataFrame(index=contributions.index)
    for name in names:
        column = features[name] if name in features.columns else pd.Series(np.nan, index=features.index)
        if not pd.api.types.is_numeric_dtype(column):
            column = column.astype("category").cat.codes.astype(float).replace(-1.0, np.nan)
        data[name] = pd.to_numeric(column, errors="coerce").astype(float)
    explanation = shap.Explanation(
        values=contributions[names].to_numpy(dtype=float),
        base_values=contributions["bias"].to_numpy(dtype=float) if "bias" in contributions else None,
        data=data.to_numpy(dtype=float),
        feature_names=[_wrapped(catalog.describe(n), 44) for n in names] if describe else names,
    )
    ax = _axes(ax, figsize=(7.5, 0.32 * min(max_display, len(names)) + 1.6))
    shap.plots.beeswarm(explanation, max_display=max_display, ax=ax, show=False, plot_size=None)
    ax.set_title("What drives predicted value (SHAP, log scale)")
    return ax


def plot_psi(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Population stability index per feature (columns ``feature``, ``psi``), with the 0.1 / 0.25 bands."""
    _require_columns(table, ["feature", "psi"], "plot_psi")
    data = table.sort_values("psi", kind="stable")
    ax = _axes(ax, figsize=(6.4, 0.3 * len(data) + 1.6))
    colours = ["tab:green" if p < 0.1 else "tab:orange" if p < 0.25 else "tab:red" for p in data["psi"]]
    ax.barh(data["feature"].astype(str), data["psi"], color=colours)
    for limit in (0.1, 0.25):
        ax.axvline(limit, color="0.4", linestyle="--", linewidth=1)
    ax.set(title="Feature drift (PSI; < 0.1 stable, > 0.25 major shift)", xlabel="PSI", ylabel="")
    return ax


# --------------------------------------------------------------------------------------------------------------
# Embedding


def fig_to_base64_png(fig: Figure | Axes, dpi: int = 110) -> str:
    """PNG bytes of a figure as base64 text, for ``<img src="data:image/png;base64,…">``.

    The PNG carries no software/date metadata, so the same figure gives the same bytes.
    """
    figure = fig.figure if isinstance(fig, Axes) else fig
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = [
    "CJK_FONT_FAMILY",
    "fig_to_base64_png",
    "plot_backtest",
    "plot_cluster_profile",
    "plot_decile_calibration",
    "plot_feature_importance",
    "plot_gain_curve",
    "plot_grade_sizes",
    "plot_lift",
    "plot_matrix_heatmap",
    "plot_migration",
    "plot_monthly_activity",
    "plot_psi",
    "plot_shap_summary",
    "profile_label",
    "plot_value_share",
    "setup_fonts",
]
