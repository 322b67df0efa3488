"""Aggregates for the stakeholder reports (never customer rows): monthly activity, top reasons per grade,
resources and return per grade; and the one customer-level export, each grade's customer list for the sales
team (:func:`write_grade_lists`, under ``data/processed``, never in a report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def monthly_activity(transactions_path: Path) -> Any:
    """Net spend, rows and distinct customers per calendar month of a clean transactions parquet.

    Returns
    -------
    pandas.DataFrame
        ``month`` (first day), ``spend``, ``transactions``, ``customers``, sorted by month.
    """
    import duckdb

    con = duckdb.connect()
    try:
        frame = con.execute(
            "SELECT CAST(date_trunc('month', timestamp) AS DATE) AS month, SUM(amount) AS spend, "
            "COUNT(*) AS transactions, COUNT(DISTINCT customer_id) AS customers "
            "FROM read_parquet(?) GROUP BY 1 ORDER BY 1",
            [str(transactions_path)],
        ).df()
    finally:
        con.close()
    return frame


def top_reasons_per_grade(grades: Any, order: Sequence[str] | None = None, top: int = 3) -> Any:
    """The most frequent first reason per grade: which feature most often decides a customer's value.

    Parameters
    ----------
    grades:
        ``grades.parquet`` rows (``grade``, ``grade_name``, ``reason_1_feature``, ``reason_1_contribution``).
    order:
        Grade codes in display order (default: sorted).
    top:
        Reasons per grade.

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, rank, feature, meaning, share_of_grade, effect`` where ``effect`` says whether the
        reason mostly raises or lowers predicted value. Aggregates only.
    """
    import pandas as pd

    from segml.features import describe_feature

    rows = []
    present = [
        g for g in (order or sorted(grades["grade"].dropna().unique())) if (grades["grade"] == g).any()
    ]
    for code in present:
        part = grades[(grades["grade"] == code) & grades["reason_1_feature"].notna()]
        if part.empty:
            continue
        counts = part.groupby("reason_1_feature")["reason_1_contribution"].agg(["size", "mean"])
        counts = counts.sort_values("size", ascending=False, kind="stable").head(top)
        for rank, (feature, stats) in enumerate(counts.iterrows(), start=1):
            rows.append(
                {
                    "grade": code,
                    "grade_name": str(part["grade_name"].iloc[0]),
                    "rank": rank,
                    "feature": str(feature),
                    "meaning": describe_feature(str(feature)),
                    "share_of_grade": float(stats["size"]) / len(part),
                    "effect": "raises value" if stats["mean"] > 0 else "lowers value",
                }
            )
    return pd.DataFrame(
        rows, columns=["grade", "grade_name", "rank", "feature", "meaning", "share_of_grade", "effect"]
    )


#: the flag shown next to a service cost nobody set for the experiment
PLACEHOLDER_COST = "placeholder — set policy.grades[].cost_per_customer"
PLACEHOLDER_NEW_CUSTOMER_COST = "placeholder — set policy.new_customer.cost_per_customer"


def placeholder_cost_codes(policy: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[str]:
    """Grade codes whose service cost is a placeholder: not set, or still the shipped default.

    Parameters
    ----------
    policy:
        The merged (or fitted) policy mapping (``GradePolicy.from_config(cfg.policy).to_dict()``, or the
        ``policy`` of ``models/policy.yaml``): ``grades`` and ``new_customer`` with ``code`` and
        ``cost_per_customer``.
    defaults:
        The shipped defaults (default: :func:`segml.policy.default_policy_mapping`).

    Returns
    -------
    list[str]
        In policy order (grades best → worst, then the new-customer grade).
    """
    from segml.policy import default_policy_mapping

    defaults = default_policy_mapping() if defaults is None else defaults
    shipped = {str(g["code"]): g.get("cost_per_customer") for g in defaults.get("grades", [])}
    new_default = defaults.get("new_customer") or {}
    shipped[str(new_default.get("code"))] = new_default.get("cost_per_customer")
    grades = list(policy.get("grades", []))
    if policy.get("new_customer"):
        grades.append(policy["new_customer"])
    codes = []
    for grade in grades:
        cost = grade.get("cost_per_customer")
        code = str(grade.get("code"))
        default = shipped.get(code)
        if cost is None or (default is not None and float(cost) == float(default)):
            codes.append(code)
    return codes


def predicted_margin(features: Any, predicted_value: Any) -> Any | None:
    """Predicted margin over the horizon: the predicted spend × the customer's own margin rate, shrunk
    towards the population's (None when the data carries no product cost).

    The rate is ``(margin_total + m · r) / (gross_spend + m)``: ``r`` the population's margin ÷ gross spend,
    ``m`` the median gross spend of the buyers, so a customer with a typical spend weighs their own history and
    the population's equally and a customer with little history gets about the population's rate (a single
    loss-making line does not make a customer's whole forecast negative). Customers without purchases get ``r``.
    """
    import numpy as np
    import pandas as pd

    if "margin_total" not in features.columns or "gross_spend" not in features.columns:
        return None
    margin = pd.to_numeric(features["margin_total"], errors="coerce").to_numpy(dtype=float)
    gross = pd.to_numeric(features["gross_spend"], errors="coerce").to_numpy(dtype=float)
    known = np.isfinite(margin) & np.isfinite(gross) & (gross > 0)
    if not known.any() or gross[known].sum() <= 0:
        return None
    population = float(margin[known].sum() / gross[known].sum())
    prior = float(np.median(gross[known]))
    rate = np.full(len(features), population)
    rate[known] = (margin[known] + prior * population) / (gross[known] + prior)
    return np.asarray(predicted_value, dtype=float) * rate


def resource_table(
    summary: Any, placeholder_codes: Sequence[str] = (), new_customer_code: str | None = None
) -> Any:
    """Service cost against predicted revenue per grade, with the incremental view a budget decision needs.

    Parameters
    ----------
    summary:
        :func:`segml.policy.grade_summary` rows (``grade``, ``grade_name``, ``n``, ``cost_per_customer``,
        ``cost_total``, ``future_value_total``, ``future_value_mean``), grades best → worst, the new-customer
        grade last.
    placeholder_codes:
        Grades whose cost is a placeholder (:func:`placeholder_cost_codes`): flagged in ``cost_source``.
    new_customer_code:
        The grade of customers without purchases (``policy.new_customer.code``): outside the grade ladder, so
        it has no incremental figure and is not the "grade below" of the lowest grade.

    Returns
    -------
    pandas.DataFrame
        ``grade, grade_name, n, cost_per_customer, cost_source, cost_total, revenue_total, revenue_mean,
        revenue_per_cost, incremental_revenue_per_cost`` (+ ``margin_total, margin_mean, margin_per_cost,
        incremental_margin_per_cost`` when the summary has ``future_margin_total``: the data carries a product
        cost). Revenue is the predicted spend over the horizon; margin is :func:`predicted_margin`. ``incremental_revenue_per_cost`` compares a grade with the
        grade below it: (revenue per customer − the lower grade's) ÷ (cost per customer − the lower grade's),
        what one more unit of cost per customer comes with when a customer is served at this grade's level
        instead of the next one's; empty for the lowest grade, the new-customer grade and equal costs.
    """
    import numpy as np
    import pandas as pd

    def column(name: str) -> Any:
        return summary[name] if name in summary else pd.Series(np.nan, index=summary.index)

    table = pd.DataFrame(
        {
            "grade": summary["grade"],
            "grade_name": summary["grade_name"],
            "n": summary["n"],
            "cost_per_customer": pd.to_numeric(column("cost_per_customer"), errors="coerce"),
        }
    ).reset_index(drop=True)
    placeholder = set(map(str, placeholder_codes))
    table["cost_source"] = [
        (PLACEHOLDER_NEW_CUSTOMER_COST if str(code) == str(new_customer_code) else PLACEHOLDER_COST)
        if str(code) in placeholder or pd.isna(cost)
        else "set in the experiment"
        for code, cost in zip(table["grade"], table["cost_per_customer"], strict=True)
    ]
    table["cost_total"] = pd.to_numeric(column("cost_total"), errors="coerce").to_numpy()
    table["revenue_total"] = pd.to_numeric(column("future_value_total"), errors="coerce").to_numpy()
    table["revenue_mean"] = pd.to_numeric(column("future_value_mean"), errors="coerce").to_numpy()
    cost = table["cost_total"].where(table["cost_total"] > 0)
    table["revenue_per_cost"] = table["revenue_total"] / cost
    incremental = [np.nan] * len(table)
    ladder = [i for i, code in enumerate(table["grade"]) if str(code) != str(new_customer_code)]
    for upper, lower in zip(ladder, ladder[1:], strict=False):
        extra_cost = table.at[upper, "cost_per_customer"] - table.at[lower, "cost_per_customer"]
        if pd.notna(extra_cost) and extra_cost > 0:
            extra_revenue = table.at[upper, "revenue_mean"] - table.at[lower, "revenue_mean"]
            incremental[upper] = extra_revenue / extra_cost
    table["incremental_revenue_per_cost"] = incremental
    if "future_margin_total" in summary:
        # the data carries a product cost: the same view on predicted margin, what the business keeps
        table["margin_total"] = pd.to_numeric(summary["future_margin_total"], errors="coerce").to_numpy()
        table["margin_mean"] = pd.to_numeric(summary["future_margin_mean"], errors="coerce").to_numpy()
        table["margin_per_cost"] = table["margin_total"] / cost
        incremental = [np.nan] * len(table)
        for upper, lower in zip(ladder, ladder[1:], strict=False):
            extra_cost = table.at[upper, "cost_per_customer"] - table.at[lower, "cost_per_customer"]
            if pd.notna(extra_cost) and extra_cost > 0:
                extra_margin = table.at[upper, "margin_mean"] - table.at[lower, "margin_mean"]
                incremental[upper] = extra_margin / extra_cost
        table["incremental_margin_per_cost"] = incremental
    return table


#: columns of a grade's customer list (CSV for the sales team), with their headers
GRADE_LIST_COLUMNS = {
    "customer_id": "Customer",
    "grade": "Grade",
    "grade_name": "Grade name",
    "strategy": "Service strategy",
    "predicted_value": "Predicted revenue",
    "predicted_p10": "Predicted revenue, low (P10)",
    "predicted_p90": "Predicted revenue, high (P90)",
    "grade_low": "Grade at the low forecast",
    "grade_high": "Grade at the high forecast",
    "matrix_cell": "Value × potential",
    "reason_1": "Main reason",
    "reason_2": "Second reason",
    "reason_3": "Third reason",
    "risk_flags": "Risk flags",
}


def _file_safe(code: str) -> str:
    import re

    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", str(code)).strip("_")
    return safe or "grade"


def write_grade_lists(
    grades: Any, out_dir: Path, order: Sequence[str] | None = None, currency: str | None = None
) -> dict[str, Path]:
    """Write one CSV per grade with its customers, for the sales team (customer-level: never in a report).

    Parameters
    ----------
    grades:
        ``grades.parquet`` rows (:data:`GRADE_LIST_COLUMNS`; missing optional columns are left out).
    out_dir:
        ``data/processed/<exp>/grade_lists``: receives ``grade_<code>.csv`` per grade (UTF-8 with a byte-order
        mark, so that spreadsheet programs show Chinese names), customers by predicted revenue (highest first,
        ties by customer id). Files of grades no longer present are removed.
    order:
        Grade codes in policy order (default: the codes present, sorted).
    currency:
        Added to the predicted-revenue header.

    Returns
    -------
    dict[str, Path]
        Grade code → written file, in ``order``.
    """
    import pandas as pd

    from segml import storage

    out_dir = Path(out_dir)
    present = [str(code) for code in grades["grade"].dropna().unique()]
    codes = [str(c) for c in (order or sorted(present)) if str(c) in present]
    columns = [c for c in GRADE_LIST_COLUMNS if c in grades.columns]
    headers = {c: GRADE_LIST_COLUMNS[c] for c in columns}
    for money in ("predicted_value", "predicted_p10", "predicted_p90"):
        if currency and money in headers:
            headers[money] = f"{headers[money]} ({currency})"
    written: dict[str, Path] = {}
    for code in codes:
        part = grades.loc[grades["grade"].astype(str) == code, columns].copy()
        sort_by = [c for c in ("predicted_value", "customer_id") if c in part.columns]
        part = part.sort_values(sort_by, ascending=[c != "predicted_value" for c in sort_by], kind="stable")
        for money in ("predicted_value", "predicted_p10", "predicted_p90"):
            if money in part.columns:
                part[money] = pd.to_numeric(part[money], errors="coerce").round(2)
        text = part.rename(columns=headers).to_csv(index=False, lineterminator="\n", float_format="%.2f")
        path = out_dir / f"grade_{_file_safe(code)}.csv"
        storage.write_bytes(path, ("\ufeff" + text).encode("utf-8"))
        written[code] = path
    if out_dir.is_dir():
        for stale in out_dir.glob("grade_*.csv"):
            if stale not in written.values():
                stale.unlink()
    return written


def grade_lists_dir(cfg: Any) -> Path:
    """``data/processed/<exp>/grade_lists``: where :func:`write_grade_lists` puts an experiment's lists."""
    return Path(cfg.paths.processed) / "grade_lists"


# Data quality in words (notebook 01)

#: plain words for the quarantine reasons (:class:`segml.schema.QuarantineReason`) and ingest counts
REASON_LABELS = {
    "missing_customer_id": "no customer id",
    "unparseable_timestamp": "date or time not readable",
    "timestamp_out_of_range": "dated before the first accepted date",
    "future_timestamp": "dated after the last accepted date",
    "non_numeric_amount": "amount, quantity or price not a number",
    "non_product": "not a product (postage, fees, adjustments)",
    "duplicate_row": "duplicate of another row",
    "zero_amount": "amount of zero",
    "return": "return or refund",
    "outlier_amount": "amount above the accepted maximum",
    "unmatched_lookup": "no matching row in a lookup table",
    "filtered": "left out by a row filter of the experiment",
    "duplicate_customer": "duplicate customer record",
}

#: plain words for the cleaning settings the DQ report lists
RULE_LABELS = {
    "duplicates": "Duplicate rows",
    "max_bad_share": "Largest share of bad rows accepted",
    "max_date": "Last accepted date",
    "max_date_from": "Last accepted date comes from",
    "min_date": "First accepted date",
    "returns": "Returns and refunds",
    "zero_amount": "Rows with an amount of zero",
}


def reason_label(code: str) -> str:
    """Plain words for a quarantine reason code (unknown codes: underscores to spaces)."""
    return REASON_LABELS.get(str(code), str(code).replace("_", " "))


def dq_reason_table(dq: Mapping[str, Any]) -> Any:
    """Quarantined rows per reason, in the report's precedence order: ``reason`` (words), ``rows``,
    ``share`` (of the rows received)."""
    import pandas as pd

    by_reason = dict(dq.get("by_reason") or {})
    precedence = list((dq.get("rules") or {}).get("precedence") or [])
    ordered = [r for r in precedence if r in by_reason] + sorted(r for r in by_reason if r not in precedence)
    rows_in = max(int(dq.get("rows_in") or 0), 1)
    return pd.DataFrame(
        [
            {"reason": reason_label(r), "rows": int(by_reason[r]), "share": by_reason[r] / rows_in}
            for r in ordered
        ],
        columns=["reason", "rows", "share"],
    )


def dq_rules_table(dq: Mapping[str, Any]) -> Any:
    """The cleaning settings in words: ``rule``, ``setting`` (text)."""
    import pandas as pd

    rules = dict(dq.get("rules") or {})
    rows = []
    for key in sorted(k for k in rules if k not in ("precedence", "outliers")):
        value = rules[key]
        if isinstance(value, float):
            value = f"{value:.0%}" if key.endswith("share") else f"{value:,.2f}"
        elif value is None:
            value = "not set"
        rows.append({"rule": RULE_LABELS.get(key, key.replace("_", " ").capitalize()), "setting": str(value)})
    outliers = rules.get("outliers") or {}
    if outliers.get("quarantine_above") is not None:
        rows.append(
            {"rule": "Amounts set aside above", "setting": f"{float(outliers['quarantine_above']):,.0f}"}
        )
    if outliers.get("flag_threshold_amount") is not None:
        rows.append(
            {
                "rule": "Amounts flagged (kept) above",
                "setting": f"{float(outliers['flag_threshold_amount']):,.0f}",
            }
        )
    return pd.DataFrame(rows, columns=["rule", "setting"])


def dq_joins_table(dq: Mapping[str, Any]) -> Any:
    """One row per lookup joined onto a transaction source (``data.transactions[].joins``): ``source``,
    ``lookup`` (the file name), ``key``, ``lookup rows``, ``lookup rows without key`` and ``rows without a
    match`` (source rows the lookup had no key for: quarantined as ``unmatched_lookup``); empty without joins."""
    import pandas as pd

    columns = ["source", "lookup", "key", "lookup rows", "lookup rows without key", "rows without a match"]
    rows = []
    for source in dq.get("sources") or []:
        for join in source.get("joins") or []:
            rows.append(
                {
                    "source": source.get("name"),
                    "lookup": Path(str(join.get("path", ""))).name,
                    "key": f"{join.get('on_column')} = {join.get('key')}",
                    "lookup rows": join.get("lookup_rows"),
                    "lookup rows without key": join.get("lookup_rows_without_key"),
                    "rows without a match": join.get("rows_unmatched"),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def dq_customers_table(dq: Mapping[str, Any]) -> Any:
    """The customers file's own results (``measure``, ``value``), empty without a customers file."""
    import pandas as pd

    info = dq.get("customers_file") or {}
    if not info:
        return pd.DataFrame(columns=["measure", "value"])
    labels = [
        ("rows_in", "Customer records received"),
        ("rows_kept", "Customer records kept"),
        ("rows_quarantined", "Customer records set aside"),
        ("customers_without_transactions", "Customers without any purchase (graded as new)"),
        ("transaction_customers_without_attributes", "Buying customers missing from the customers file"),
        ("signup_date_unparseable", "Signup dates not readable"),
    ]
    rows = [{"measure": label, "value": f"{int(info[key]):,}"} for key, label in labels if key in info]
    for reason, count in sorted((info.get("by_reason") or {}).items()):
        rows.append({"measure": f"Set aside: {reason_label(reason)}", "value": f"{int(count):,}"})
    return pd.DataFrame(rows, columns=["measure", "value"])
