"""Plot functions on tiny frames: they return Axes, draw under Agg, and render Chinese labels without
missing glyphs."""

from __future__ import annotations

import base64
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from segml import plots  # noqa: E402

GRADES = ["高净值客户", "VIP客户", "普通客户", "潜力客户"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _draw_and_collect_glyph_warnings(fig) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


def test_setup_fonts_registers_noto_cjk_from_mplfonts():
    assert plots.setup_fonts() == plots.CJK_FONT_FAMILY
    assert matplotlib.rcParams["font.sans-serif"][:2] == ["Noto Sans CJK SC", "DejaVu Sans"]
    from matplotlib import font_manager

    registered = [f.fname for f in font_manager.fontManager.ttflist if f.name == plots.CJK_FONT_FAMILY]
    assert any(path.endswith("mplfonts/fonts/NotoSansCJKsc-Regular.otf") for path in registered)
    plots.setup_fonts()  # idempotent: the font is not added twice
    again = [f.fname for f in font_manager.fontManager.ttflist if f.name == plots.CJK_FONT_FAMILY]
    assert again == registered


def test_chinese_labels_render_without_missing_glyphs():
    fig, ax = plt.subplots()
    ax.bar(GRADES, [-1.5, 2, 3, 4])  # negative value: the minus sign must render too
    ax.set_title("客户分级 · 价值占比 −5%")
    ax.set_xlabel("等级")
    assert _draw_and_collect_glyph_warnings(fig) == []


def test_default_fonts_would_miss_glyphs():
    """Control: without the CJK font the same drawing warns, so the test above can fail."""
    with matplotlib.rc_context({"font.sans-serif": ["DejaVu Sans"]}):
        fig, ax = plt.subplots()
        ax.set_title("客户分级")
        assert _draw_and_collect_glyph_warnings(fig) != []


def _summary() -> pd.DataFrame:
    return pd.DataFrame({"grade": GRADES, "n": [50, 150, 600, 200], "value_share": [0.41, 0.30, 0.19, 0.10]})


def _gain_inputs():
    rng = np.random.default_rng(0)
    actual = rng.gamma(0.5, 100, size=200)
    return actual, {"lightgbm": actual + rng.normal(0, 20, size=200), "rfm 基线": rng.random(200)}


LEVELS = ["高", "中", "低"]
CASES = {
    "gain_curve": lambda ax: plots.plot_gain_curve(*_gain_inputs(), ax=ax),
    "lift": lambda ax: plots.plot_lift(*_gain_inputs(), ax=ax),
    "decile_calibration": lambda ax: plots.plot_decile_calibration(
        pd.DataFrame(
            {"decile": range(1, 11), "mean_pred": np.arange(10.0), "mean_actual": np.arange(10.0) * 1.1}
        ),
        ax=ax,
    ),
    "grade_sizes": lambda ax: plots.plot_grade_sizes(_summary(), ax=ax),
    "value_share": lambda ax: plots.plot_value_share(_summary(), ax=ax),
    "matrix_heatmap": lambda ax: plots.plot_matrix_heatmap(
        pd.DataFrame(np.arange(9).reshape(3, 3), index=LEVELS, columns=LEVELS), ax=ax
    ),
    "cluster_profile": lambda ax: plots.plot_cluster_profile(
        pd.DataFrame(
            {"cluster": ["高价值", "流失风险"], "recency_days": [10.0, 300.0], "spend_365": [5e4, 800.0]}
        ),
        ax=ax,
    ),
    "feature_importance": lambda ax: plots.plot_feature_importance(
        pd.DataFrame({"feature": ["spend_365", "recency_days", "行业"], "mean_abs": [0.5, 0.2, 0.1]}), ax=ax
    ),
    "migration": lambda ax: plots.plot_migration(
        pd.DataFrame([[5, 1, 0], [2, 7, 1], [0, 0, 0]], index=list("ABC"), columns=list("ABC")), ax=ax
    ),
    "backtest": lambda ax: plots.plot_backtest(
        pd.DataFrame(
            {
                "cutoff": ["2024-12-31", "2025-03-31"] * 2,
                "model": ["lightgbm", "lightgbm", "rfm", "rfm"],
                "normalized_gini": [0.6, 0.62, 0.5, 0.49],
            }
        ),
        ax=ax,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plot_functions_return_axes_and_draw_cleanly(name):
    draw = CASES[name]
    own = draw(None)  # creates its own figure
    assert isinstance(own, matplotlib.axes.Axes)
    assert own.get_title()
    assert _draw_and_collect_glyph_warnings(own.figure) == []

    fig, given = plt.subplots()
    assert draw(given) is given  # draws on the Axes it is given


def test_gain_curve_geometry():
    actual = np.array([0.0, 10.0, 30.0, 60.0])
    ax = plots.plot_gain_curve(actual, {"oracle": actual, "reversed": -actual})
    curves = {line.get_label(): line.get_xydata() for line in ax.lines}
    np.testing.assert_allclose(curves["perfect"][:, 1], [0, 0.6, 0.9, 1.0, 1.0])
    np.testing.assert_allclose(curves["oracle"], curves["perfect"])
    np.testing.assert_allclose(curves["reversed"][:, 1], [0, 0, 0.1, 0.4, 1.0])
    np.testing.assert_allclose(curves["random"], [[0, 0], [1, 1]])


def test_gain_curve_thins_long_curves_and_checks_lengths():
    actual = np.arange(50_000, dtype=float)
    ax = plots.plot_gain_curve(actual, {"m": actual})
    line = next(line for line in ax.lines if line.get_label() == "m")
    assert len(line.get_xdata()) <= 1000 and line.get_xdata()[-1] == 1.0 and line.get_ydata()[-1] == 1.0
    with pytest.raises(ValueError, match="'m' has 3 scores for 4 customers"):
        plots.plot_gain_curve([1, 2, 3, 4], {"m": [1, 2, 3]})


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"plot_grade_sizes: missing column\(s\) \['n'\]"):
        plots.plot_grade_sizes(pd.DataFrame({"grade": ["A"]}))


def test_migration_shares_per_row():
    matrix = pd.DataFrame([[3, 1], [0, 0]], index=["A", "B"], columns=["A", "B"])
    ax = plots.plot_migration(matrix)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["75%\n(3)", "25%\n(1)", "–", "–"]


def test_fig_to_base64_png_is_deterministic_png():
    ax = plots.plot_grade_sizes(_summary())
    first = plots.fig_to_base64_png(ax.figure)
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.fig_to_base64_png(ax) == first  # Axes accepted; same bytes twice
