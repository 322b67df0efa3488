"""Tables a manager can read: human column names, money with the currency and thousands separators, shares as
percentages, at most two decimals, a dash for a missing value (never ``nan``, ``None``, ``NaT`` or ``inf``).

:func:`table` turns a DataFrame into an HTML table object a notebook displays (``display(report.table(df))``);
:func:`html_table` gives the markup (the index page). Both format every cell to text first, so what the page
shows is exactly what :func:`format_value` returns.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Kind = Literal["money", "share", "count", "number", "ratio", "interval", "text"]

#: shown for a missing or non-finite value
MISSING = "–"

#: plain-words headers of the columns the reports show (``{currency}`` is filled in)
COLUMN_LABELS: dict[str, str] = {
    "grade": "Grade",
    "grade_name": "Name",
    "name": "Name",
    "n": "Customers",
    "customers": "Customers",
    "share": "Share of customers",
    "share_customers": "Share of customers",
    "value_share": "Share of current value",
    "value_total": "Current value ({currency})",
    "value_mean": "Current value per customer ({currency})",
    "future_value_share": "Share of predicted revenue",
    "future_value_total": "Predicted revenue ({currency})",
    "future_value_mean": "Predicted revenue per customer ({currency})",
    "future_value_per_cost": "Predicted revenue per unit of cost",
    "cost_per_customer": "Service cost per customer ({currency})",
    "cost_total": "Service cost ({currency})",
    "strategy": "Service strategy",
    "revenue_total": "Predicted revenue ({currency})",
    "revenue_mean": "Predicted revenue per customer ({currency})",
    "revenue_per_cost": "Revenue per unit of cost",
    "revenue_p10_total": "Predicted revenue, low: P10 ({currency})",
    "revenue_p90_total": "Predicted revenue, high: P90 ({currency})",
    "firm_share": "Same grade at P10 and P90",
    "may_fall_share": "Lower grade at P10",
    "may_rise_share": "Higher grade at P90",
    "incremental_revenue_per_cost": "Extra revenue per extra unit of cost, vs the grade below",
    "margin_total": "Predicted margin ({currency})",
    "margin_mean": "Predicted margin per customer ({currency})",
    "margin_per_cost": "Margin per unit of cost",
    "incremental_margin_per_cost": "Extra margin per extra unit of cost, vs the grade below",
    "future_margin_total": "Predicted margin ({currency})",
    "future_margin_mean": "Predicted margin per customer ({currency})",
    "future_margin_per_cost": "Predicted margin per unit of cost",
    "cost_source": "Cost",
    "measure": "Measure",
    "value": "Value",
    "rule": "Rule",
    "setting": "Setting",
    "source": "Source",
    "mean_actual": "Realised spend per customer ({currency})",
    "sum_actual": "Realised spend ({currency})",
    "share_actual": "Share of realised spend",
    "mean_predicted": "Predicted spend per customer ({currency})",
    "model": "Model",
    "normalized_gini": "Ranking quality (normalized Gini)",
    "spearman": "Rank correlation (Spearman)",
    "top10_capture": "Spend captured by the top 10 %",
    "top20_capture": "Spend captured by the top 20 %",
    "decile_mape": "Decile error (MAPE)",
    "total_error": "Total forecast error",
    "gini_diff": "Gini difference to the best baseline",
    "gini_diff_ci": "95 % interval of the Gini difference",
    "gini_diff_vs": "Compared with",
    "reason": "Reason",
    "rows": "Rows",
    "rank": "Rank",
    "meaning": "Reason",
    "share_of_grade": "Share of the grade",
    "effect": "Effect",
    "cutoff": "Cutoff",
    "window_days": "Window (days)",
}

#: plain-words names of the models the comparison shows
MODEL_LABELS: dict[str, str] = {
    "potential": "Potential value model",
    "potential_transactions_only": "Potential value model, transactions only",
    "btyd": "Purchase-rate model (BTYD)",
    "rfm": "RFM score",
    "past_spend": "Past spend",
    "clustering": "Behaviour clusters",
    "spend_tree": "Spend decision tree",
}

_SHARE_NAMES = re.compile(r"(^|_)(share|capture|pct|mape)(_|$)|^total_error$")
_MONEY_NAMES = re.compile(r"(^|_)(value|cost|spend|revenue|margin|amount|actual|predicted)(_|$)")
_COUNT_NAMES = {"n", "customers", "rows", "rank", "window_days", "transactions"}
_RATIO_NAMES = re.compile(r"_per_cost$|^value_per_cost$|incremental")
#: what snake_case looks like (a header must never read like this)
SNAKE_CASE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


def human_label(name: Any, currency: str | None = None) -> str:
    """The header shown for column ``name``: :data:`COLUMN_LABELS`, else the name with spaces for underscores
    and its first letter capitalised. ``{currency}`` becomes ``currency`` (or is dropped when None)."""
    text = str(name)
    label = COLUMN_LABELS.get(text)
    if label is None:
        if not SNAKE_CASE.match(text) and text != text.lower():
            return text  # already written for people ("Share of grade", "高净值客户")
        label = text.replace("_", " ").strip()
        label = label[:1].upper() + label[1:]
    if currency:
        return label.replace("{currency}", currency)
    return label.replace(" ({currency})", "").replace("{currency}", "")


def model_label(name: Any) -> str:
    """Plain-words name of a model of the comparison (unknown names: underscores to spaces)."""
    return MODEL_LABELS.get(str(name), str(name).replace("_", " "))


def column_kind(name: Any) -> Kind:
    """The kind of a column, guessed from its name (used when a table gives no kind for it)."""
    text = str(name).lower()
    if text.endswith("_ci") or text.endswith(" interval"):
        return "interval"
    if text in _COUNT_NAMES:
        return "count"
    if _RATIO_NAMES.search(text):
        return "ratio"
    if _SHARE_NAMES.search(text) or text.endswith("%"):
        return "share"
    if _MONEY_NAMES.search(text):
        return "money"
    return "number"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, str | bytes | list | tuple) and pd.isna(value)):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, float) and not math.isfinite(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _number(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    if re.fullmatch(r"-0(\.0*)?", text):  # "-0.0": a tiny negative rounded away
        text = text[1:]
    return text


def format_value(value: Any, kind: Kind = "number", *, decimals: int | None = None) -> str:
    """One cell as text.

    Parameters
    ----------
    value:
        Any scalar (numpy scalars included), a list/tuple (``interval``), or a date.
    kind:
        ``money`` (thousands separators, no decimals from 100 up, else 2), ``share`` (a fraction shown as a
        percentage with one decimal), ``count`` (an integer with separators), ``ratio`` and ``number``
        (2 decimals), ``interval`` (``[low, high]`` with 2 decimals), ``text``.
    decimals:
        Override the number of decimals (capped at 2).

    Returns
    -------
    str
        :data:`MISSING` for None, NaN, NaT and infinities.
    """
    if isinstance(value, list | tuple):
        if kind == "interval" or kind in ("number", "ratio", "share", "money"):
            inner = "share" if kind == "share" else ("money" if kind == "money" else "number")
            parts = [format_value(v, inner, decimals=decimals) for v in value]  # type: ignore[arg-type]
            return MISSING if all(p == MISSING for p in parts) else "[" + ", ".join(parts) + "]"
        return ", ".join(format_value(v, "text") for v in value)
    if _is_missing(value):
        return MISSING
    value = _plain(value)
    if hasattr(value, "isoformat") and not isinstance(value, str):
        if hasattr(value, "hour") and (value.hour, value.minute, value.second) == (0, 0, 0):
            return value.date().isoformat() if hasattr(value, "date") else value.isoformat()
        return value.isoformat(sep=" ", timespec="minutes") if hasattr(value, "hour") else value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) or kind == "text":
        return str(value)
    if not isinstance(value, int | float):
        return str(value)
    places = None if decimals is None else max(0, min(2, decimals))
    if kind == "share":
        return _number(100.0 * value, 1 if places is None else places) + "%"
    if kind == "count":
        return _number(float(value), 0 if places is None else places)
    if kind == "money":
        if places is None:
            places = 0 if abs(value) >= 100 or float(value).is_integer() else 2
        return _number(float(value), places)
    if isinstance(value, int) and places is None:
        return _number(float(value), 0)
    return _number(float(value), 2 if places is None else places)


def present(
    frame: Any,
    *,
    currency: str | None = None,
    kinds: Mapping[str, Kind] | None = None,
    labels: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
    models: bool = True,
) -> Any:
    """A copy of ``frame`` with every cell formatted to text and human headers.

    Parameters
    ----------
    frame:
        A DataFrame (its index is dropped: show index values by resetting it into a column first) or a list
        of mappings.
    currency:
        Filled into money headers ("Predicted revenue (CNY)").
    kinds:
        Column → :data:`Kind` (default: :func:`column_kind` of the name).
    labels:
        Column → header, over :data:`COLUMN_LABELS`.
    columns:
        Columns to keep, in this order (default: all).
    models:
        Show the ``model`` column's values with :func:`model_label`.

    Returns
    -------
    pandas.DataFrame
        Strings only; columns renamed to their headers.
    """
    import pandas as pd

    table = frame.copy() if isinstance(frame, pd.DataFrame) else pd.DataFrame(list(frame or []))
    table = table.reset_index(drop=True)
    if columns is not None:
        table = table[[c for c in columns if c in table.columns]]
    kinds = dict(kinds or {})
    labels = dict(labels or {})
    out = {}
    text_headers = []
    titles: dict[str, list[str]] = {}
    for column in table.columns:
        kind = kinds.get(column) or column_kind(column)
        if table[column].dtype == object and kind != "interval":
            values = table[column].tolist()
            if all(isinstance(v, str) or _is_missing(v) for v in values):
                kind = "text"
        if column == "model" and models:
            codes = table[column].tolist()
            cells = [MISSING if _is_missing(v) else model_label(v) for v in codes]
            titles[labels.get(column) or human_label(column, currency)] = [str(v) for v in codes]
        else:
            cells = [format_value(v, kind) for v in table[column].tolist()]
        header = labels.get(column) or human_label(column, currency)
        header = header.replace("{currency}", currency or "").replace(" ()", "")
        out[header] = cells
        if kind == "text" or (column == "model" and models):
            text_headers.append(header)
    result = pd.DataFrame(out, columns=list(out))
    result.attrs["text_columns"] = text_headers
    #: header → per-row tooltip (the model column keeps each model's name in the comparison files)
    result.attrs["cell_titles"] = titles
    return result


class HtmlTable:
    """An HTML table a notebook displays as rich output (``_repr_html_``); no index column."""

    def __init__(self, markup: str) -> None:
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup


def html_table(presented: Any, *, css_class: str = "segml-table") -> str:
    """Markup of a :func:`present` frame: header row, one row per record, text columns left-aligned, numbers
    right-aligned; headers and long text wrap so that the table fits the page."""
    headers = list(presented.columns)
    text_columns = set(presented.attrs.get("text_columns", headers[:1]))
    rows = presented.to_numpy().tolist()
    style = (
        "<style>table.segml-table{border-collapse:collapse;margin:0.4rem 0 1rem;max-width:100%;"
        "font-size:0.9rem}table.segml-table th,table.segml-table td{padding:0.25rem 0.6rem;"
        "border-bottom:1px solid #ddd;text-align:right;white-space:normal;overflow-wrap:break-word;"
        "vertical-align:top}table.segml-table th{background:#f4f5f7;max-width:11rem}"
        "table.segml-table td.label,table.segml-table th.label{text-align:left}"
        "table.segml-table td.long{max-width:22rem;text-align:left;overflow-wrap:anywhere}</style>"
    )

    titles = presented.attrs.get("cell_titles", {})

    def cell(tag: str, position: int, text: str, row: int | None = None) -> str:
        classes = []
        if headers[position] in text_columns:
            classes.append("label")
        if tag == "td" and len(text) > 40:
            classes.append("long")
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        if row is not None and headers[position] in titles:
            attribute += f' title="{html.escape(titles[headers[position]][row], quote=True)}"'
        return f"<{tag}{attribute}>{html.escape(str(text))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v, r) for i, v in enumerate(row)) + "</tr>"
        for r, row in enumerate(rows)
    )
    return f'{style}<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table(frame: Any, **present_options: Any) -> HtmlTable:
    """:func:`present` then :func:`html_table`, as an object a notebook displays (options: :func:`present`)."""
    return HtmlTable(html_table(present(frame, **present_options)))


__all__ = [
    "COLUMN_LABELS",
    "MISSING",
    "MODEL_LABELS",
    "SNAKE_CASE",
    "HtmlTable",
    "column_kind",
    "format_value",
    "html_table",
    "human_label",
    "model_label",
    "present",
    "table",
]
