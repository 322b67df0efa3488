"""The reports index page: summary, grade and comparison tables, charts and links to every notebook report."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segml import storage
from segml.errors import SegmlError
from segml.evaluate import COMPARISON_METRICS
from segml.report.fonts import embed_cjk_font

#: Columns of a comparison table shown first on the index page, in this order.
COMPARISON_COLUMNS = ("model", *COMPARISON_METRICS, "gini_diff_ci")
#: Column names that mark customer-level data, refused on the (aggregate-only) index page.
_CUSTOMER_LEVEL_COLUMNS = {"customer_id", "customer", "customerid"}

_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, "segml CJK", "Noto Sans CJK SC",
       "PingFang SC", "Microsoft YaHei", sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f4f5f7; } td:first-child, th:first-child { text-align: left; }
ul.reports li { margin: 0.25rem 0; } .missing { color: #a33; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 520px; border: 1px solid #eee; } figcaption { font-size: 0.85rem; color: #555; }
.muted { color: #666; font-size: 0.85rem; }
"""


def _records(table: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame or a list of mappings, as dicts."""
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    return [dict(row) for row in table]


def _format_cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_cell(column, v) for v in value) + "]"
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if column.endswith(("_share", "share", "_capture", "capture", "_pct")):
            return f"{value:.1%}"
        if column.endswith(("_total", "_cost", "cost_per_customer")):  # money amounts
            return f"{value:,.0f}"
        if column.endswith(("_mean", "_per_cost")):
            return f"{value:,.2f}"
        return f"{value:,.3f}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _html_table(rows: list[dict[str, Any]], preferred: Sequence[str] = ()) -> str:
    columns = [c for c in preferred if any(c in row for row in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    refused = [c for c in columns if c.lower() in _CUSTOMER_LEVEL_COLUMNS]
    if refused:
        raise SegmlError(
            f"reports index shows aggregates only: table has customer-level column {refused[0]!r} "
            f"({len(rows)} rows)"
        )
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_format_cell(str(c), row.get(c)))}</td>" for c in columns)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_index(
    out_dir: Path,
    experiment_name: str,
    headline: Mapping[str, Any],
    reports: Sequence[tuple[str, Path]],
) -> Path:
    """Write ``out_dir/index.html``: the experiment's headline numbers and links to every report.

    The page is self-contained (inline CSS, charts as base64 PNG, no external asset) and holds aggregates
    only: a table with a customer-id column is refused.

    Parameters
    ----------
    out_dir:
        ``reports/<experiment>``; links to reports are written relative to it.
    experiment_name:
        Shown as the title.
    headline:
        Optional keys:

        - ``"summary"``: mapping label → value (cutoff, customers, run id, data fingerprint, …);
        - ``"grades"``: rows (DataFrame or list of dicts) with ``grade``, ``n``, ``value_share`` (+ any
          other aggregate columns);
        - ``"comparison"``: rows of ``comparison.json`` (``model``, ``normalized_gini``, ``spearman``,
          ``top10_capture``, ``top20_capture``, ``decile_mape``, ``total_error``, ``gini_diff_ci``; extra
          columns shown after these);
        - ``"charts"``: mapping title → base64 PNG (:func:`segml.plots.fig_to_base64_png`).
    reports:
        ``(title, html_path)`` pairs, in display order.

    Returns
    -------
    Path
        The written ``index.html``.
    """
    out_dir = Path(out_dir)
    title = f"segml · {experiment_name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_INDEX_CSS}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="muted">Aggregates only; customer-level outputs stay under data/processed.</p>',
    ]
    summary = headline.get("summary") or {}
    if summary:
        parts.append("<h2>Summary</h2><table><tbody>")
        parts += [
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format_cell(str(k), v))}</td></tr>"
            for k, v in summary.items()
        ]
        parts.append("</tbody></table>")
    grades = _records(headline.get("grades"))
    if grades:
        parts += ["<h2>Grades: size and value share</h2>", _html_table(grades, ("grade", "n", "value_share"))]
    comparison = _records(headline.get("comparison"))
    if comparison:
        parts += ["<h2>Model comparison (holdout)</h2>", _html_table(comparison, COMPARISON_COLUMNS)]
    charts = headline.get("charts") or {}
    if charts:
        parts.append("<h2>Charts</h2>")
        for caption, png_b64 in charts.items():
            parts.append(
                f'<figure><img alt="{html.escape(str(caption))}" src="data:image/png;base64,{png_b64}">'
                f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
            )
    parts.append('<h2>Reports</h2><ul class="reports">')
    for report_title, report_path in reports:
        report_path = Path(report_path)
        href = Path(os.path.relpath(report_path.resolve(), out_dir.resolve())).as_posix()
        missing = "" if report_path.exists() else ' <span class="missing">(not generated)</span>'
        parts.append(
            f'<li><a href="{html.escape(href, quote=True)}">{html.escape(str(report_title))}</a>{missing}</li>'
        )
    parts += ["</ul>", "</body>", "</html>", ""]
    return storage.write_text(out_dir / "index.html", embed_cjk_font("\n".join(parts)))
