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
from segml.report.formatting import format_value, html_table, present

#: Columns of a comparison table shown first on the index page, in this order.
COMPARISON_COLUMNS = ("model", *COMPARISON_METRICS, "gini_diff_ci")
#: Headings of the report list on the index, by notebook audience (``metadata.segml.audience``).
AUDIENCE_HEADINGS = {"stakeholder": "For sales and management", "analyst": "For analysts"}
#: Column names that mark customer-level data, refused on the (aggregate-only) index page.
_CUSTOMER_LEVEL_COLUMNS = {"customer_id", "customer", "customerid"}

_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, "segml CJK", "Noto Sans CJK SC",
       "PingFang SC", "Microsoft YaHei", sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
h3 { font-size: 1.02rem; margin: 1rem 0 0.3rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; max-width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; white-space: normal;
         overflow-wrap: anywhere; }
th { background: #f4f5f7; } td:first-child, th:first-child { text-align: left; }
ul.reports li { margin: 0.25rem 0; } .missing { color: #a33; }
figure { display: inline-block; margin: 0.5rem 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; width: 520px; border: 1px solid #eee; } figcaption { font-size: 0.85rem; color: #555; }
.muted { color: #666; font-size: 0.85rem; }
"""


def _records(table: Any) -> list[dict[str, Any]]:
    """Rows of a DataFrame or a list of mappings, as dicts."""
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    return [dict(row) for row in table]


def _html_table(
    rows: list[dict[str, Any]], preferred: Sequence[str] = (), currency: str | None = None
) -> str:
    columns = [c for c in preferred if any(c in row for row in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    refused = [c for c in columns if str(c).lower() in _CUSTOMER_LEVEL_COLUMNS]
    if refused:
        raise SegmlError(
            f"reports index shows aggregates only: table has customer-level column {refused[0]!r} "
            f"({len(rows)} rows)"
        )
    import pandas as pd

    frame = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    return html_table(present(frame, currency=currency))


def _group_reports(
    reports: Sequence[tuple[str, Path] | tuple[str, Path, str]],
) -> dict[str, list[tuple[str, Path]]]:
    groups: dict[str, list[tuple[str, Path]]] = {audience: [] for audience in AUDIENCE_HEADINGS}
    for item in reports:
        title, path = item[0], Path(item[1])
        audience = item[2] if len(item) > 2 else "analyst"
        groups.setdefault(audience if audience in AUDIENCE_HEADINGS else "analyst", []).append((title, path))
    return groups


def write_index(
    out_dir: Path,
    experiment_name: str,
    headline: Mapping[str, Any],
    reports: Sequence[tuple[str, Path] | tuple[str, Path, str]],
    *,
    currency: str | None = None,
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
        ``(title, html_path)`` or ``(title, html_path, audience)`` in display order; listed under
        :data:`AUDIENCE_HEADINGS` (no audience: analyst).
    currency:
        The experiment's currency, shown in the headers of money columns.

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
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(format_value(v, 'text'))}</td></tr>"
            for k, v in summary.items()
        ]
        parts.append("</tbody></table>")
    grades = _records(headline.get("grades"))
    if grades:
        parts += [
            "<h2>Grades: size and value share</h2>",
            _html_table(
                grades, ("grade", "grade_name", "n", "share", "value_share", "future_value_share"), currency
            ),
        ]
    comparison = _records(headline.get("comparison"))
    if comparison:
        parts += [
            "<h2>Model comparison (holdout)</h2>",
            _html_table(comparison, COMPARISON_COLUMNS, currency),
        ]
    charts = headline.get("charts") or {}
    if charts:
        parts.append("<h2>Charts</h2>")
        for caption, png_b64 in charts.items():
            parts.append(
                f'<figure><img alt="{html.escape(str(caption))}" src="data:image/png;base64,{png_b64}">'
                f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
            )
    parts.append("<h2>Reports</h2>")
    for audience, items in _group_reports(reports).items():
        if not items:
            continue
        parts.append(f'<h3>{html.escape(AUDIENCE_HEADINGS[audience])}</h3><ul class="reports">')
        for report_title, report_path in items:
            href = Path(os.path.relpath(report_path.resolve(), out_dir.resolve())).as_posix()
            missing = "" if report_path.exists() else ' <span class="missing">(not generated)</span>'
            parts.append(
                f'<li><a href="{html.escape(href, quote=True)}">{html.escape(str(report_title))}</a>{missing}</li>'
            )
        parts.append("</ul>")
    parts += ["</body>", "</html>", ""]
    return storage.write_text(out_dir / "index.html", embed_cjk_font("\n".join(parts)))
