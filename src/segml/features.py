"""Point-in-time customer features and future-value labels, one SQL text for DuckDB and Spark.

Every definition is a SQL ``SELECT`` that DuckDB and Spark SQL both accept unchanged (see docs/features.md for
the dialect subset). The work is done in the engine in two steps:

1. ``purchase_days``: clean transactions with ``date(timestamp) <= max(cutoffs)`` aggregated once to one row per
   (customer, calendar day), with the gap to the customer's previous purchase day (a ``LAG`` window). Because a
   day's gap only looks backwards, the table serves every cutoff without leaking.
   Each purchase day also counts the products and order ids the customer bought for the first time that
   day, so distinct counts at any cutoff are sums over days.
2. One ``GROUP BY (as_of, customer_id)`` over ``purchase_days JOIN cutoffs ON day <= as_of`` computes all
   features for one or many cutoffs; the result is fetched through Arrow.

Invoice features (``invoices_n``, ``days_late_mean``, ``paid_on_time_share``, ``outstanding_amount``,
``overdue_amount``, ``days_late_trend``) are built only when clean invoices are given (``data.invoices``); an
invoice counts at a cutoff once issued on or before it, and its payment only when paid on or before it.

Interaction features (``interactions_90d``, ``complaints_90d``, ``complaint_rate``, ``response_rate``,
``days_since_complaint``, ``score_mean``, …) are built only when clean interactions are given
(``data.interactions``), from the events dated on or before the cutoff day.

Margin features (``margin_total``, ``margin_{w}d``, ``margin_rate``) are built only when the clean transactions
have a ``margin`` column (ingest writes it when a ``cost`` or ``margin`` role is mapped); without it the SQL and
the output are exactly those of a table without margin.

The cutoff (``as_of``) is inclusive: rows with ``date(timestamp) <= as_of`` are used, nothing later. ``is_outlier``
is deliberately not used: ingest's robust (median/MAD) outlier flag depends on every row in the file, including
rows after a cutoff, so a feature built on it would leak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segml import catalog
from segml.config import ExperimentConfig, FeatureConfig, SparkSettings, as_date
from segml.errors import ConfigError, InputFileError, SegmlError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession

__all__ = [
    "FEATURE_DESCRIPTIONS",
    "NUMERIC_FEATURES",
    "LABEL_COLUMNS",
    "MARGIN_LABEL",
    "build_features",
    "build_labels",
    "describe_feature",
    "feature_columns",
    "run_features",
    "normalise_feature_batch",
    "spark_features",
    "spark_session",
    "training_frame",
    "write_features",
]

Engine = Literal["duckdb", "spark"]
#: population rule for customers without a signup date (``data.customers.undated``)
Undated = Literal["exclude", "include"]
TableSource = str | Path | pd.DataFrame
_EngineSource = str | Path | pa.Table

#: transaction columns the features read (the rest of the clean schema is carried but unused)
REQUIRED_TRANSACTION_COLUMNS = ("customer_id", "timestamp", "amount")
OPTIONAL_TRANSACTION_COLUMNS = {"order_id": "STRING", "quantity": "DOUBLE", "product_id": "STRING"}
#: the line margin (ingest writes it when a cost or margin role is mapped); its presence adds the margin features
MARGIN_COLUMN = "margin"

#: label columns produced by :func:`build_labels` (besides customer_id), from the feature catalog
LABEL_COLUMNS = catalog.label_columns()
#: net margin in the label window: a label of training frames whose transactions carry ``margin`` (a cost or
#: margin role), never a model input
MARGIN_LABEL = catalog.MARGIN_LABEL

# --------------------------------------------------------------------------------------------------------------
# Column catalogue: names, descriptions and order come from segml.catalog (one entry per column)


def describe_feature(name: str) -> str:
    """Plain-words description of a feature column, including any trailing-window column.

    Parameters
    ----------
    name:
        A column of :func:`build_features` output, e.g. ``"recency_days"`` or ``"spend_45d"``.

    Returns
    -------
    str
        The catalog description (:func:`segml.catalog.describe`); an attribute column (a name the catalog
        does not know) is described as a customer attribute.
    """
    return catalog.describe(name)


#: plain-words description per column (default windows; :func:`describe_feature` covers any window)
FEATURE_DESCRIPTIONS: dict[str, str] = catalog.descriptions(FeatureConfig())


def NUMERIC_FEATURES(  # noqa: N802 - name fixed by the feature contract
    spec: FeatureConfig,
    *,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> list[str]:
    """The model-ready numeric feature columns, in a fixed order (the feature catalog's).

    Parameters
    ----------
    spec:
        Feature configuration (its ``windows`` decide the trailing-window columns).
    with_margin:
        Include the margin features (built when the clean transactions carry ``margin``).
    with_invoices:
        Include the invoice features (built when clean invoices are given: ``data.invoices``).
    with_interactions:
        Include the interaction features (built when clean interactions are given: ``data.interactions``).

    Returns
    -------
    list of str
        Column names, all float64 in :func:`build_features` output: the catalog's features with
        ``numeric=True`` (:func:`segml.catalog.numeric_features`). ``customer_id``, ``as_of``,
        ``has_purchases`` (same information as ``n_purchase_days > 0``) and attribute columns are excluded.
    """
    _check_spec(spec)
    return catalog.numeric_features(
        spec, with_margin=with_margin, with_invoices=with_invoices, with_interactions=with_interactions
    )


def feature_columns(
    spec: FeatureConfig,
    attributes: Sequence[str] = (),
    *,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> list[str]:
    """All columns of :func:`build_features` output, in order (margin features ``with_margin``, invoice
    features ``with_invoices``, interaction features ``with_interactions``)."""
    numeric = NUMERIC_FEATURES(
        spec, with_margin=with_margin, with_invoices=with_invoices, with_interactions=with_interactions
    )
    return ["customer_id", "as_of", "has_purchases", *numeric, *attributes]


def _check_spec(spec: FeatureConfig) -> None:
    windows = list(spec.windows)
    if not windows or any(not isinstance(w, int) or w < 1 for w in windows):
        raise ConfigError(f"features.windows: expected a list of positive day counts, got {windows!r}")
    if len(set(windows)) != len(windows):
        raise ConfigError(f"features.windows: duplicate window in {windows!r}")
    if spec.trend_window < 1:
        raise ConfigError(f"features.trend_window: expected a positive day count, got {spec.trend_window!r}")
    if spec.active_months < 1:
        raise ConfigError(
            f"features.active_months: expected a positive month count, got {spec.active_months!r}"
        )


# --------------------------------------------------------------------------------------------------------------
# SQL texts.  Only constructs both DuckDB and Spark SQL accept (docs/features.md): day differences are
# CAST(a - b AS INT), no datediff/strftime/epoch/VARCHAR, divisions guarded with NULLIF (Spark's ANSI mode
# raises on division by zero), LN not LOG (LOG is base 10 in DuckDB).


def _date_literal(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def _dates_table_sql(columns: dict[str, Sequence[dt.date]]) -> str:
    """A small inline table of dates as UNION ALL of constant SELECTs (portable, unlike VALUES aliases)."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    selects = [
        "SELECT " + ", ".join(f"{_date_literal(v)} AS {n}" for n, v in zip(names, row, strict=True))
        for row in rows
    ]
    return "\nUNION ALL\n".join(selects)


def _transactions_select_sql(source: str, present: set[str]) -> str:
    """Normalise the transactions source to the columns the features read (absent optional columns -> NULL;
    ``margin`` only when present, as an exact decimal like ``amount``)."""
    optional = [
        f"CAST({name} AS {sql_type}) AS {name}" if name in present else f"CAST(NULL AS {sql_type}) AS {name}"
        for name, sql_type in OPTIONAL_TRANSACTION_COLUMNS.items()
    ]
    margin = (
        f", CAST({MARGIN_COLUMN} AS DECIMAL(18, 6)) AS {MARGIN_COLUMN}" if MARGIN_COLUMN in present else ""
    )
    return (
        "SELECT CAST(customer_id AS STRING) AS customer_id, CAST(timestamp AS DATE) AS day, "
        "CAST(amount AS DECIMAL(18, 6)) AS amount, " + ", ".join(optional) + margin + f"\nFROM {source}\n"
        "WHERE customer_id IS NOT NULL AND timestamp IS NOT NULL AND amount IS NOT NULL"
    )


def _customers_select_sql(source: str, present: set[str], aliases: Sequence[str]) -> str:
    signup = "CAST(signup_date AS DATE)" if "signup_date" in present else "CAST(NULL AS DATE)"
    attrs = "".join(f", CAST({a} AS STRING) AS {a}" for a in aliases)
    return (
        f"SELECT CAST(customer_id AS STRING) AS customer_id, {signup} AS signup_date{attrs}\n"
        f"FROM {source}\nWHERE customer_id IS NOT NULL"
    )


def _invoices_select_sql(source: str) -> str:
    """Normalise clean invoices to the columns the invoice features read (dates as DATE, amounts exact)."""
    return (
        "SELECT CAST(customer_id AS STRING) AS customer_id, CAST(issued AS DATE) AS issued, "
        "CAST(due AS DATE) AS due, CAST(paid AS DATE) AS paid, CAST(amount AS DECIMAL(18, 6)) AS amount\n"
        f"FROM {source}\nWHERE customer_id IS NOT NULL AND issued IS NOT NULL AND due IS NOT NULL "
        "AND amount IS NOT NULL"
    )


def _invoice_stats_cte(trend_window: int) -> str:
    """CTE ``invoice_stats``: per (cutoff, customer), the invoices as known at the cutoff.

    Only invoices issued on or before the cutoff count; a payment is known only when its date is on or before
    the cutoff, so an invoice paid later is open at the cutoff. Days late = max(0, paid - due)."""
    known = "i.paid IS NOT NULL AND i.paid <= c.as_of"
    late = "CAST(GREATEST(CAST(i.paid - i.due AS INT), 0) AS DOUBLE)"
    paid_age = "CAST(c.as_of - i.paid AS INT)"
    return f"""
invoice_stats AS (
    SELECT c.as_of, i.customer_id,
           COUNT(*) AS invoices_n,
           AVG(CASE WHEN {known} THEN {late} END) AS days_late_mean,
           SUM(CASE WHEN i.due <= c.as_of THEN 1 ELSE 0 END) AS invoices_due,
           SUM(CASE WHEN i.due <= c.as_of AND {known} AND i.paid <= i.due THEN 1 ELSE 0 END)
               AS invoices_on_time,
           SUM(CASE WHEN {known} THEN 0.0 ELSE i.amount END) AS outstanding_amount,
           SUM(CASE WHEN NOT ({known}) AND i.due < c.as_of THEN i.amount ELSE 0.0 END) AS overdue_amount,
           AVG(CASE WHEN {known} AND {paid_age} < {int(trend_window)} THEN {late} END) AS late_recent,
           AVG(CASE WHEN {known} AND {paid_age} >= {int(trend_window)} THEN {late} END) AS late_earlier
    FROM invoices i
    JOIN cutoffs c ON i.issued <= c.as_of
    GROUP BY c.as_of, i.customer_id
)"""


#: invoice feature columns of the final SELECT (``iv`` = invoice_stats); customers without invoices get 0 for
#: counts and amounts, NULL for means and shares
_INVOICE_SELECT = (
    "CAST(COALESCE(iv.invoices_n, 0) AS DOUBLE) AS invoices_n",
    "CAST(iv.days_late_mean AS DOUBLE) AS days_late_mean",
    "CAST(iv.invoices_on_time AS DOUBLE) / CAST(NULLIF(iv.invoices_due, 0) AS DOUBLE) AS paid_on_time_share",
    "CAST(COALESCE(iv.outstanding_amount, 0.0) AS DOUBLE) AS outstanding_amount",
    "CAST(COALESCE(iv.overdue_amount, 0.0) AS DOUBLE) AS overdue_amount",
    "CAST(iv.late_recent - iv.late_earlier AS DOUBLE) AS days_late_trend",
)


def _interactions_select_sql(source: str) -> str:
    """Normalise clean interactions to the columns the interaction features read (the event's calendar day)."""
    return (
        "SELECT CAST(customer_id AS STRING) AS customer_id, CAST(timestamp AS DATE) AS day, "
        "CAST(kind AS STRING) AS kind, CAST(score AS DOUBLE) AS score\n"
        f"FROM {source}\nWHERE customer_id IS NOT NULL AND timestamp IS NOT NULL AND kind IS NOT NULL"
    )


def _interaction_stats_cte(last_day: dt.date, trend_window: int) -> str:
    """CTEs ``interaction_days`` and ``interaction_stats``: per (cutoff, customer), the interaction events dated
    on or before the cutoff day (``age`` = days before the cutoff, 0 on the cutoff day itself).

    Events are first counted per (customer, day, kind), so each cutoff joins one row per day and kind rather
    than one per event."""
    tw = int(trend_window)

    def count(condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN x.events ELSE 0 END)"

    complaint = "x.kind = 'complaint'"
    return f"""
interaction_days AS (
    SELECT customer_id, day, kind, COUNT(*) AS events,
           SUM(score) AS score_sum, COUNT(score) AS score_n
    FROM interactions
    WHERE day <= {_date_literal(last_day)}
    GROUP BY customer_id, day, kind
),
interaction_aged AS (
    SELECT c.as_of, x.*, CAST(c.as_of - x.day AS INT) AS age
    FROM interaction_days x
    JOIN cutoffs c ON x.day <= c.as_of
),
interaction_stats AS (
    SELECT x.as_of, x.customer_id,
           {count("x.age < 90")} AS interactions_90d,
           {count(f"{complaint} AND x.age < 90")} AS complaints_90d,
           {count(f"{complaint} AND x.age < 365")} AS complaints_365d,
           {count(f"{complaint} AND x.age < {tw}")} AS complaints_recent,
           {count(f"{complaint} AND x.age >= {tw} AND x.age < {2 * tw}")} AS complaints_previous,
           {count("x.kind = 'ticket' AND x.age < 90")} AS tickets_90d,
           {count("x.kind = 'campaign_send' AND x.age < 365")} AS campaign_sends_365d,
           {count("x.kind = 'campaign_response' AND x.age < 365")} AS campaign_responses_365d,
           {count("x.kind IN ('login', 'visit') AND x.age < 90")} AS visits_90d,
           MIN(x.age) AS days_since_interaction,
           MIN(CASE WHEN {complaint} THEN x.age END) AS days_since_complaint,
           SUM(CASE WHEN x.kind = 'survey' AND x.age < 365 THEN x.score_sum END) AS survey_score_sum,
           SUM(CASE WHEN x.kind = 'survey' AND x.age < 365 THEN x.score_n ELSE 0 END) AS survey_score_n
    FROM interaction_aged x
    GROUP BY x.as_of, x.customer_id
)"""


#: interaction feature columns of the final SELECT (``ix`` = interaction_stats, ``b`` = buyers, which carries
#: ``purchase_days_365d``); customers without events get 0 for counts, NULL for rates, means and days since
_INTERACTION_SELECT = (
    "CAST(COALESCE(ix.interactions_90d, 0) AS DOUBLE) AS interactions_90d",
    "CAST(COALESCE(ix.complaints_90d, 0) AS DOUBLE) AS complaints_90d",
    "CAST(COALESCE(ix.complaints_365d, 0) AS DOUBLE) AS complaints_365d",
    "CAST(COALESCE(ix.complaints_365d, 0) AS DOUBLE) / CAST(NULLIF(b.purchase_days_365d, 0) AS DOUBLE)"
    " AS complaint_rate",
    "CAST(COALESCE(ix.complaints_recent, 0) - COALESCE(ix.complaints_previous, 0) AS DOUBLE) AS complaints_trend",
    "CAST(COALESCE(ix.tickets_90d, 0) AS DOUBLE) AS tickets_90d",
    "CAST(COALESCE(ix.campaign_sends_365d, 0) AS DOUBLE) AS campaign_sends_365d",
    "CAST(COALESCE(ix.campaign_responses_365d, 0) AS DOUBLE) AS campaign_responses_365d",
    "CAST(ix.campaign_responses_365d AS DOUBLE) / CAST(NULLIF(ix.campaign_sends_365d, 0) AS DOUBLE)"
    " AS response_rate",
    "CAST(COALESCE(ix.visits_90d, 0) AS DOUBLE) AS visits_90d",
    "CAST(ix.days_since_interaction AS DOUBLE) AS days_since_interaction",
    "CAST(ix.days_since_complaint AS DOUBLE) AS days_since_complaint",
    "CAST(ix.survey_score_sum AS DOUBLE) / CAST(NULLIF(ix.survey_score_n, 0) AS DOUBLE) AS score_mean",
)


#: sample standard deviation of the whole-day gaps from exact integer sums (n·Σg² − (Σg)² is an integer), so
#: the value does not depend on the order threads combine rows in (STDDEV_SAMP over doubles varied in the last
#: bit from run to run) and is the same on DuckDB and Spark; NULL below two gaps, as STDDEV_SAMP
_GAP_STD = (
    "CASE WHEN COUNT(gap_days) > 1 THEN SQRT(GREATEST(CAST(COUNT(gap_days) * SUM(CAST(gap_days AS BIGINT) "
    "* CAST(gap_days AS BIGINT)) - SUM(CAST(gap_days AS BIGINT)) * SUM(CAST(gap_days AS BIGINT)) AS DOUBLE), "
    "0.0) / (CAST(COUNT(gap_days) AS DOUBLE) * CAST(COUNT(gap_days) - 1 AS DOUBLE))) END"
)


def _purchase_days_ctes(last_day: dt.date, with_margin: bool = False) -> str:
    """CTEs ``purchase_days`` and ``first_purchases`` over view ``transactions`` up to ``last_day``.

    ``purchase_days``: one row per (customer, day) with net spend and its parts, the gap to the previous purchase
    day and whether the day opens a calendar month (both look backwards only, so one table serves every
    cutoff). ``first_purchases``: per (customer, day), how many products and order ids the customer bought for
    the first time that day, so distinct counts at any cutoff are sums over days.
    """
    until = f"day <= {_date_literal(last_day)}"
    margin = "\n           SUM(margin) AS day_margin," if with_margin else ""
    return f"""
daily AS (
    SELECT customer_id, day,
           year(day) * 12 + month(day) AS month_index,
           SUM(amount) AS day_spend,
           SUM(CASE WHEN amount > 0 THEN amount ELSE 0.0 END) AS gross_spend,
           SUM(CASE WHEN amount < 0 THEN -amount ELSE 0.0 END) AS return_amount,{margin}
           SUM(quantity) AS quantity_total,
           MAX(CASE WHEN order_id IS NULL THEN 1 ELSE 0 END) AS has_unordered_rows
    FROM transactions
    WHERE {until}
    GROUP BY customer_id, day
),
purchase_days AS (
    SELECT daily.*,
           CAST(day - LAG(day) OVER (PARTITION BY customer_id ORDER BY day) AS INT) AS gap_days,
           CASE WHEN LAG(month_index) OVER (PARTITION BY customer_id ORDER BY day) = month_index
                THEN 0 ELSE 1 END AS opens_month
    FROM daily
),
first_seen AS (
    SELECT customer_id, product_id, order_id, MIN(day) AS first_day
    FROM transactions
    WHERE {until} AND (product_id IS NOT NULL OR order_id IS NOT NULL)
    GROUP BY GROUPING SETS ((customer_id, product_id), (customer_id, order_id))
),
first_purchases AS (
    SELECT customer_id, first_day,
           SUM(CASE WHEN product_id IS NOT NULL THEN 1 ELSE 0 END) AS new_products,
           SUM(CASE WHEN order_id IS NOT NULL THEN 1 ELSE 0 END) AS new_orders
    FROM first_seen
    GROUP BY customer_id, first_day
)"""


def _features_sql(
    spec: FeatureConfig,
    last_day: dt.date,
    attributes: Sequence[str],
    with_customers: bool,
    with_labels: bool = False,
    undated: Undated = "exclude",
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> str:
    """Features for every cutoff in table ``cutoffs(as_of)`` (all <= ``last_day``) from view ``transactions``
    (and view ``customers`` when ``with_customers``), as one query. ``with_labels`` joins table ``labels``
    and ``label_windows`` (see :func:`_labels_sql`), zero-filled, for training frames. ``with_margin`` adds
    the margin features (the view has a ``margin`` column); ``with_invoices`` the invoice features from view
    ``invoices``; ``with_interactions`` the interaction features from view ``interactions``."""
    window_aggs = []
    for w in spec.windows:
        window_aggs.append(f"SUM(CASE WHEN age < {w} THEN day_spend ELSE 0.0 END) AS spend_{w}d")
        window_aggs.append(f"SUM(CASE WHEN age < {w} THEN 1 ELSE 0 END) AS orders_{w}d")
    tw = spec.trend_window
    window_aggs.append(f"SUM(CASE WHEN age < {tw} THEN day_spend ELSE 0.0 END) AS trend_recent_spend")
    window_aggs.append(
        f"SUM(CASE WHEN age >= {tw} AND age < {2 * tw} THEN day_spend ELSE 0.0 END) AS trend_previous_spend"
    )
    months = spec.active_months
    window_aggs.append(f"SUM(CASE WHEN months_back < {months} THEN opens_month ELSE 0 END) AS active_months")
    margin_aggs = ""
    margin_select = ""
    if with_margin:
        parts = ["SUM(day_margin) AS margin_total"]
        parts += [
            f"SUM(CASE WHEN age < {w} THEN day_margin ELSE 0.0 END) AS margin_{w}d" for w in spec.windows
        ]
        margin_aggs = ",\n           " + ",\n           ".join(parts)
        cols = ["CAST(COALESCE(b.margin_total, 0.0) AS DOUBLE) AS margin_total"]
        cols += [f"CAST(COALESCE(b.margin_{w}d, 0.0) AS DOUBLE) AS margin_{w}d" for w in spec.windows]
        cols.append(
            "CASE WHEN b.gross_spend > 0 THEN CAST(b.margin_total AS DOUBLE) / CAST(b.gross_spend AS DOUBLE) "
            "ELSE CAST(NULL AS DOUBLE) END AS margin_rate"
        )
        margin_select = ",\n       " + ",\n       ".join(cols)
    if with_interactions:  # the denominator of complaint_rate, whatever the configured windows
        window_aggs.append("SUM(CASE WHEN age < 365 THEN 1 ELSE 0 END) AS purchase_days_365d")
    window_sql = ",\n           ".join(window_aggs) + margin_aggs

    window_cols = [f"CAST(COALESCE(b.spend_{w}d, 0.0) AS DOUBLE) AS spend_{w}d" for w in spec.windows]
    window_cols += [f"CAST(COALESCE(b.orders_{w}d, 0) AS DOUBLE) AS orders_{w}d" for w in spec.windows]
    window_select = ",\n       ".join(window_cols)

    if with_customers:
        # buyers FULL JOIN the customers eligible at each cutoff: signed up by then. A customer with no signup
        # date and no purchase by the cutoff may not have existed yet (a CRM snapshot lists everyone who
        # ever bought), so they enter only with their first purchase, unless undated = include.
        undated_sql = "cu.signup_date IS NULL OR " if undated == "include" else ""
        eligible = f""",
eligible AS (
    SELECT c.as_of, cu.customer_id FROM cutoffs c CROSS JOIN customers cu
    WHERE {undated_sql}cu.signup_date <= c.as_of
)"""
        source = (
            "FROM buyers b\nFULL OUTER JOIN eligible e ON e.as_of = b.as_of AND e.customer_id = b.customer_id\n"
            "LEFT JOIN customers cu ON cu.customer_id = COALESCE(b.customer_id, e.customer_id)"
        )
        customer_id, as_of = "COALESCE(b.customer_id, e.customer_id)", "COALESCE(b.as_of, e.as_of)"
        tenure = (
            f"CASE WHEN cu.signup_date IS NOT NULL THEN CAST(CAST({as_of} - cu.signup_date AS INT) AS DOUBLE) "
            "ELSE CAST(CAST(b.as_of - b.first_day AS INT) AS DOUBLE) END"
        )
        attr_select = "".join(f",\n       cu.{a} AS {a}" for a in _attribute_aliases(attributes))
    else:
        eligible = ""
        source = "FROM buyers b"
        customer_id, as_of = "b.customer_id", "b.as_of"
        tenure = "CAST(CAST(b.as_of - b.first_day AS INT) AS DOUBLE)"
        attr_select = ""

    if with_labels:
        label_select = (
            ",\n       COALESCE(l.future_spend, 0.0) AS future_spend"
            ",\n       COALESCE(l.future_orders, 0.0) AS future_orders"
            ",\n       COALESCE(l.future_active, 0.0) AS future_active"
            ",\n       CAST(CAST(w.label_end - w.cutoff AS INT) AS DOUBLE) AS label_days"
        )
        if with_margin:
            label_select += f",\n       COALESCE(l.{MARGIN_LABEL}, 0.0) AS {MARGIN_LABEL}"
        label_join = (
            f"\nLEFT JOIN labels l ON l.cutoff = {as_of} AND l.customer_id = {customer_id}"
            f"\nLEFT JOIN label_windows w ON w.cutoff = {as_of}"
        )
    else:
        label_select = label_join = ""

    if with_invoices:
        invoice_cte = "," + _invoice_stats_cte(spec.trend_window)
        invoice_select = ",\n       " + ",\n       ".join(_INVOICE_SELECT)
        invoice_join = (
            f"\nLEFT JOIN invoice_stats iv ON iv.as_of = {as_of} AND iv.customer_id = {customer_id}"
        )
    else:
        invoice_cte = invoice_select = invoice_join = ""

    if with_interactions:
        interaction_cte = "," + _interaction_stats_cte(last_day, spec.trend_window)
        interaction_select = ",\n       " + ",\n       ".join(_INTERACTION_SELECT)
        interaction_join = (
            f"\nLEFT JOIN interaction_stats ix ON ix.as_of = {as_of} AND ix.customer_id = {customer_id}"
        )
    else:
        interaction_cte = interaction_select = interaction_join = ""

    return f"""
WITH {_purchase_days_ctes(last_day, with_margin)},
aged AS (
    SELECT c.as_of, p.*,
           CAST(c.as_of - p.day AS INT) AS age,
           year(c.as_of) * 12 + month(c.as_of) - p.month_index AS months_back
    FROM purchase_days p
    JOIN cutoffs c ON p.day <= c.as_of
),
day_stats AS (
    SELECT as_of, customer_id,
           MIN(day) AS first_day,
           MAX(day) AS last_day,
           COUNT(*) AS n_purchase_days,
           SUM(day_spend) AS monetary_total,
           SUM(gross_spend) AS gross_spend,
           SUM(return_amount) AS return_amount,
           MAX(day_spend) AS monetary_max,
           SUM(quantity_total) AS quantity_total,
           SUM(has_unordered_rows) AS unordered_days,
           SUM(CASE WHEN gap_days IS NULL THEN 0.0 ELSE day_spend END) AS repeat_spend,
           AVG(CAST(gap_days AS DOUBLE)) AS interpurchase_mean_days,
           {_GAP_STD} AS interpurchase_std_days,
           {window_sql}
    FROM aged
    GROUP BY as_of, customer_id
),
first_counts AS (
    SELECT c.as_of, f.customer_id,
           SUM(f.new_products) AS product_breadth,
           SUM(f.new_orders) AS n_order_ids
    FROM first_purchases f
    JOIN cutoffs c ON f.first_day <= c.as_of
    GROUP BY c.as_of, f.customer_id
),
buyers AS (
    SELECT d.*, fc.product_breadth, fc.n_order_ids
    FROM day_stats d
    LEFT JOIN first_counts fc ON fc.as_of = d.as_of AND fc.customer_id = d.customer_id
){eligible}{invoice_cte}{interaction_cte}
SELECT {customer_id} AS customer_id,
       {as_of} AS as_of,
       b.customer_id IS NOT NULL AS has_purchases,
       CAST(CAST(b.as_of - b.last_day AS INT) AS DOUBLE) AS recency_days,
       CAST(CAST(b.as_of - b.first_day AS INT) AS DOUBLE) AS t_days,
       CAST(CAST(b.last_day - b.first_day AS INT) AS DOUBLE) AS btyd_recency_days,
       CAST(COALESCE(b.n_purchase_days - 1, 0) AS DOUBLE) AS frequency,
       CASE WHEN b.n_purchase_days > 1 THEN CAST(b.repeat_spend AS DOUBLE) / CAST(b.n_purchase_days - 1 AS DOUBLE)
            ELSE 0.0 END AS btyd_monetary,
       CAST(COALESCE(b.n_purchase_days, 0) AS DOUBLE) AS n_purchase_days,
       CAST(COALESCE(b.n_order_ids, 0) + COALESCE(b.unordered_days, 0) AS DOUBLE) AS n_orders,
       {tenure} AS tenure_days,
       CAST(COALESCE(b.monetary_total, 0.0) AS DOUBLE) AS monetary_total,
       CAST(COALESCE(b.gross_spend, 0.0) AS DOUBLE) AS gross_spend,
       CAST(COALESCE(b.return_amount, 0.0) AS DOUBLE) AS return_amount,
       CASE WHEN b.gross_spend > 0 THEN CAST(b.return_amount AS DOUBLE) / CAST(b.gross_spend AS DOUBLE)
            ELSE 0.0 END AS returns_rate,
       CAST(b.monetary_total AS DOUBLE) / CAST(b.n_purchase_days AS DOUBLE) AS monetary_mean,
       CAST(b.monetary_max AS DOUBLE) AS monetary_max,
       b.interpurchase_mean_days,
       b.interpurchase_std_days,
       {window_select},
       LN((GREATEST(CAST(COALESCE(b.trend_recent_spend, 0.0) AS DOUBLE), 0.0) + 1.0)
          / (GREATEST(CAST(COALESCE(b.trend_previous_spend, 0.0) AS DOUBLE), 0.0) + 1.0)) AS trend_ratio,
       CAST(COALESCE(b.active_months, 0) AS DOUBLE) / {float(months)} AS active_months_share,
       CASE WHEN b.n_purchase_days > 1 THEN 1.0 ELSE 0.0 END AS repurchase,
       CAST(NULLIF(b.product_breadth, 0) AS DOUBLE) AS product_breadth,
       CAST(b.quantity_total AS DOUBLE) AS quantity_total,
       CAST(CAST(b.as_of - b.last_day AS INT) AS DOUBLE) / NULLIF(b.interpurchase_mean_days, 0.0)
           AS churn_risk_ratio{margin_select}{invoice_select}{interaction_select}{attr_select}{label_select}
{source}{invoice_join}{interaction_join}{label_join}
ORDER BY as_of, customer_id
"""


def _labels_sql(
    first_cutoff: dt.date, last_end: dt.date, ordered: bool = True, with_margin: bool = False
) -> str:
    """Labels for every window in table ``label_windows(cutoff, label_end)``: purchases in (cutoff, label_end]
    (``with_margin``: also :data:`MARGIN_LABEL`, the net margin there)."""
    day_margin = ", SUM(margin) AS day_margin" if with_margin else ""
    future_margin = f"\n       CAST(SUM(d.day_margin) AS DOUBLE) AS {MARGIN_LABEL}," if with_margin else ""
    return f"""
WITH future_days AS (
    SELECT customer_id, day, SUM(amount) AS day_spend{day_margin}
    FROM transactions
    WHERE day > {_date_literal(first_cutoff)} AND day <= {_date_literal(last_end)}
    GROUP BY customer_id, day
)
SELECT w.cutoff, d.customer_id,{future_margin}
       CAST(SUM(d.day_spend) AS DOUBLE) AS future_spend,
       CAST(COUNT(*) AS DOUBLE) AS future_orders,
       1.0 AS future_active,
       CAST(CAST(w.label_end - w.cutoff AS INT) AS DOUBLE) AS label_days
FROM future_days d
JOIN label_windows w ON d.day > w.cutoff AND d.day <= w.label_end
GROUP BY w.cutoff, w.label_end, d.customer_id
""" + ("ORDER BY w.cutoff, d.customer_id\n" if ordered else "")


# --------------------------------------------------------------------------------------------------------------
# Engines: register inputs, materialise intermediate tables, fetch results. The SQL above is shared.


class _SqlEngine(Protocol):
    def register(self, name: str, source: _EngineSource) -> None: ...

    def create_view(self, name: str, sql: str) -> None: ...

    def materialise(self, name: str, sql: str) -> None: ...

    def fetch(self, sql: str) -> pa.Table: ...


class _DuckDBEngine:
    """An in-memory DuckDB connection with fixed resources and a private spill directory."""

    def __init__(self, threads: int | None, memory_limit: str | None) -> None:
        import duckdb

        self._spill = tempfile.TemporaryDirectory(prefix="segml-duckdb-")
        config: dict[str, Any] = {
            "temp_directory": self._spill.name,
            "preserve_insertion_order": False,
        }
        if threads:
            config["threads"] = int(threads)
        if memory_limit:
            config["memory_limit"] = str(memory_limit)
        self.con = duckdb.connect(":memory:", config=config)
        # inside a Jupyter kernel without ipywidgets DuckDB refuses the setting; the bar is off there anyway
        with contextlib.suppress(duckdb.InvalidInputException):
            self.con.execute("SET enable_progress_bar = false")
        # like the Spark session: a TIMESTAMPTZ input falls on its UTC calendar day on both engines
        self.con.execute("SET TimeZone = 'UTC'")

    def register(self, name: str, source: _EngineSource) -> None:
        if isinstance(source, pa.Table):
            self.con.register(name, source)
        else:
            pattern = Path(source) / "**" / "*.parquet" if Path(source).is_dir() else Path(source)
            path = str(pattern).replace("'", "''")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet('{path}')")

    def create_view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def materialise(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def fetch(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    @contextlib.contextmanager
    def stream(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatchReader]:
        """The result of ``sql`` as Arrow record batches of at most ``batch_rows`` rows, read as DuckDB
        produces them (never the whole result at once); the connection runs nothing else until it closes."""
        with self.con.sql(sql).to_arrow_reader(batch_size=batch_rows) as reader:
            yield reader

    def close(self) -> None:
        self.con.close()
        self._spill.cleanup()


def spark_session(settings: SparkSettings | None = None, shuffle_partitions: int = 4) -> SparkSession:
    """The Spark session of the ``spark:`` settings, configured like the DuckDB engine (UTC, few partitions).

    Parameters
    ----------
    settings:
        The ``spark:`` section (master, app name, extra conf, warehouse dir); default ``local[2]``.
    shuffle_partitions:
        ``spark.sql.shuffle.partitions`` unless ``settings.conf`` sets it (Spark's 200 is slow on one machine).

    Returns
    -------
    SparkSession
        The active session when its master is ``settings.master`` (its settings are kept, except the time
        zone, which is set to UTC), else a new session.

    Raises
    ------
    SegmlError
        pyspark is not installed (``pip install segml[spark]``), or another session is active on a different
        master (Spark runs one per process: stop it first).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - depends on the install
        raise SegmlError("engine: spark needs pyspark: pip install 'segml[spark]'") from None
    settings = settings or SparkSettings()
    settings.check("spark")
    active = SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if running != settings.master:
            raise SegmlError(
                f"spark.master: {settings.master} asked for, but a Spark session is already active on "
                f"{running}; stop it (spark.stop()) or set spark.master: {running}"
            )
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active
    options = {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "2g",
        **settings.conf,
        # after the user's conf: dates are UTC calendar days on both engines (the section refuses others)
        "spark.sql.session.timeZone": "UTC",
    }
    if settings.warehouse_dir is not None:
        options["spark.sql.warehouse.dir"] = settings.warehouse_dir
    # Python workers run PYSPARK_PYTHON (pyspark's default is whatever `python3` is on PATH): default to
    # this interpreter, or spark.pyspark.python when the executors' Python lives elsewhere
    os.environ.setdefault("PYSPARK_PYTHON", settings.conf.get("spark.pyspark.python", sys.executable))
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in options.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


class _SparkEngine:
    """Runs the same SQL texts through a SparkSession; intermediate tables are cached temp views."""

    def __init__(self, settings: SparkSettings | None = None) -> None:
        active = None
        if settings is None:  # the Python API without settings: an active session on any master is used
            with contextlib.suppress(ImportError):  # spark_session says how to install pyspark
                from pyspark.sql import SparkSession

                active = SparkSession.getActiveSession()
        self.spark = active or spark_session(settings)
        self._cached: list[Any] = []
        self._views: list[str] = []

    def register(self, name: str, source: _EngineSource) -> None:
        if isinstance(source, pa.Table):
            frame = self.spark.createDataFrame(source)
        else:
            frame = self.spark.read.parquet(str(source))
        frame.createOrReplaceTempView(name)
        self._views.append(name)

    def create_view(self, name: str, sql: str) -> None:
        self.spark.sql(sql).createOrReplaceTempView(name)
        self._views.append(name)

    def materialise(self, name: str, sql: str) -> None:
        frame = self.spark.sql(sql).cache()
        frame.createOrReplaceTempView(name)
        self._cached.append(frame)
        self._views.append(name)

    def fetch(self, sql: str) -> pa.Table:
        return self.spark.sql(sql).toArrow()

    def close(self) -> None:
        for frame in self._cached:
            frame.unpersist()
        for name in self._views:
            self.spark.catalog.dropTempView(name)


@contextlib.contextmanager
def _open_engine(
    engine: str, spec: FeatureConfig | None = None, spark: SparkSettings | None = None
) -> Iterator[_SqlEngine]:
    if engine == "duckdb":
        runner: Any = _DuckDBEngine(spec.threads if spec else None, spec.memory_limit if spec else None)
    elif engine == "spark":
        runner = _SparkEngine(spark)
    else:
        raise ConfigError(f"features.engine: {engine!r} is not one of 'duckdb', 'spark'")
    try:
        yield runner
    finally:
        runner.close()


# --------------------------------------------------------------------------------------------------------------
# Inputs


def _source_columns(source: TableSource, what: str) -> set[str]:
    if isinstance(source, pd.DataFrame):
        return {str(c) for c in source.columns}
    path = Path(source)
    if not path.exists():
        raise InputFileError(f"{path}: {what} file not found")
    try:
        return (
            set(pq.read_schema(path).names) if path.is_file() else set(pq.ParquetDataset(path).schema.names)
        )
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise InputFileError(f"{path}: cannot read {what} as parquet ({exc.__class__.__name__})") from None


def _label(source: TableSource, what: str) -> str:
    return f"{what} DataFrame" if isinstance(source, pd.DataFrame) else str(source)


def _typed_column(frame: pd.DataFrame, name: str, kind: pa.DataType) -> pa.Array:
    """One pandas column as an Arrow array of a fixed type (vectorised; ids become strings)."""
    col = frame[name]
    if pa.types.is_string(kind):
        return pa.array(col.astype("string"), type=pa.string(), from_pandas=True)
    if pa.types.is_floating(kind):
        return pa.array(
            pd.to_numeric(col, errors="coerce").astype("float64"), type=pa.float64(), from_pandas=True
        )
    stamps = pd.to_datetime(col, errors="coerce")
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):  # keep the wall-clock day the data was recorded in
        stamps = stamps.dt.tz_localize(None)
    stamps = pa.array(stamps.astype("datetime64[us]"), type=pa.timestamp("us"), from_pandas=True)
    return pc.cast(stamps, pa.date32()) if pa.types.is_date(kind) else stamps


def _typed_table(frame: pd.DataFrame, types: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({name: _typed_column(frame, name, kind) for name, kind in types.items()})


_TRANSACTION_ARROW_TYPES = {
    "customer_id": pa.string(),
    "timestamp": pa.timestamp("us"),
    "amount": pa.float64(),
    "order_id": pa.string(),
    "quantity": pa.float64(),
    "product_id": pa.string(),
    MARGIN_COLUMN: pa.float64(),
}


def _register_table(
    runner: _SqlEngine,
    source: TableSource,
    what: str,
    columns: dict[str, pa.DataType],
    select_sql: Callable[[str, set[str]], str],
    required: Sequence[str] | None = None,
) -> set[str]:
    """Register a clean table as view ``what`` (from ``{what}_source``, read through ``select_sql(name,
    present)``); a DataFrame is converted to the Arrow types of ``columns``. ``required`` (default: every
    one of ``columns``) must be present. Returns the source's column names."""
    present = _source_columns(source, what)
    required = list(columns) if required is None else required
    missing = [c for c in required if c not in present]
    if missing:
        raise InputFileError(
            f"{_label(source, what)}: missing column(s) {', '.join(missing)} "
            f"(clean {what} need {', '.join(required)})"
        )
    table: _EngineSource
    if isinstance(source, pd.DataFrame):
        table = _typed_table(source, {name: kind for name, kind in columns.items() if name in present})
    else:
        table = source
    runner.register(f"{what}_source", table)
    runner.create_view(what, select_sql(f"{what}_source", present))
    return present


def _register_transactions(runner: _SqlEngine, transactions: TableSource) -> bool:
    """Register clean transactions as view ``transactions``; True when they carry ``margin``."""
    present = _register_table(
        runner,
        transactions,
        "transactions",
        _TRANSACTION_ARROW_TYPES,
        _transactions_select_sql,
        REQUIRED_TRANSACTION_COLUMNS,
    )
    return MARGIN_COLUMN in present


#: clean invoice columns the invoice features read (ingest writes them, see docs/ingest.md)
INVOICE_COLUMNS = {
    "customer_id": pa.string(),
    "issued": pa.date32(),
    "due": pa.date32(),
    "paid": pa.date32(),
    "amount": pa.float64(),
}


def _register_invoices(runner: _SqlEngine, invoices: TableSource) -> None:
    """Register clean invoices as view ``invoices``."""
    _register_table(runner, invoices, "invoices", INVOICE_COLUMNS, lambda name, _: _invoices_select_sql(name))


#: clean interaction columns the interaction features read (ingest writes them, see docs/ingest.md)
INTERACTION_COLUMNS = {
    "customer_id": pa.string(),
    "timestamp": pa.timestamp("us"),
    "kind": pa.string(),
    "score": pa.float64(),
}


def _register_interactions(runner: _SqlEngine, interactions: TableSource) -> None:
    """Register clean interactions as view ``interactions``."""
    _register_table(
        runner,
        interactions,
        "interactions",
        INTERACTION_COLUMNS,
        lambda name, _: _interactions_select_sql(name),
    )


def _attribute_aliases(attributes: Sequence[str]) -> list[str]:
    """SQL-safe names for attribute columns (their own names may be keywords or contain spaces, and the two
    engines quote identifiers differently); the original names are restored on the Arrow result."""
    return [f"attribute_{i}" for i in range(len(attributes))]


def _register_customers(runner: _SqlEngine, customers: TableSource) -> list[str]:
    """Register clean customers as view ``customers`` (attributes under :func:`_attribute_aliases`);
    returns the attribute column names in file order."""
    present = _source_columns(customers, "customers")
    label = _label(customers, "customers")
    if "customer_id" not in present:
        raise InputFileError(f"{label}: missing column customer_id")
    frame = customers if isinstance(customers, pd.DataFrame) else pq.read_table(customers).to_pandas()
    attributes = [str(c) for c in frame.columns if c not in ("customer_id", "signup_date")]
    clash = [a for a in attributes if catalog.is_catalogued(a)]  # feature, label or any window name
    if clash:
        raise InputFileError(f"{label}: attribute column(s) {', '.join(clash)} clash with feature names")
    columns = {"customer_id": _typed_column(frame, "customer_id", pa.string())}
    if "signup_date" in present:
        columns["signup_date"] = _typed_column(frame, "signup_date", pa.date32())
    for alias, name in zip(_attribute_aliases(attributes), attributes, strict=True):
        columns[alias] = _typed_column(frame, name, pa.string())
    runner.register("customers_source", pa.table(columns))
    runner.create_view(
        "customers", _customers_select_sql("customers_source", present, _attribute_aliases(attributes))
    )
    counted = runner.fetch("SELECT COUNT(*) - COUNT(DISTINCT customer_id) AS n FROM customers")
    duplicates = int(counted["n"][0].as_py())
    if duplicates > 0:
        raise InputFileError(
            f"{label}: {duplicates} duplicate customer_id row(s); expected one row per customer"
        )
    return attributes


def _normalised_table(
    table: pa.Table,
    spec: FeatureConfig,
    attributes: Sequence[str],
    with_labels: bool = False,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> pa.Table:
    """The engine's result in the output's Arrow types and column order: string ids, timestamp[ns] cutoff,
    bool flag, float64 features, string attributes under their own names (and float64 labels plus a
    ``cutoff`` column ``with_labels``)."""
    as_of = table["as_of"].cast(pa.timestamp("ns"))
    columns = {"customer_id": table["customer_id"].cast(pa.string())}
    if with_labels:
        columns["cutoff"] = as_of
    columns["as_of"] = as_of
    columns["has_purchases"] = table["has_purchases"].cast(pa.bool_())
    numeric = NUMERIC_FEATURES(
        spec, with_margin=with_margin, with_invoices=with_invoices, with_interactions=with_interactions
    )
    columns.update({name: table[name].cast(pa.float64()) for name in numeric})
    for alias, name in zip(_attribute_aliases(attributes), attributes, strict=True):
        columns[name] = table[alias].cast(pa.string())
    if with_labels:
        columns.update({name: table[name].cast(pa.float64()) for name in LABEL_COLUMNS})
        if with_margin:
            columns[MARGIN_LABEL] = table[MARGIN_LABEL].cast(pa.float64())
    return pa.table(columns)


def _normalise_features(table: pa.Table, *args: Any, **options: Any) -> pd.DataFrame:
    """:func:`_normalised_table` (same arguments) as pandas: the same dtypes from both engines, converted in
    Arrow: str ids, datetime64[ns] cutoff, bool flag, float64 features, attributes as str or None."""
    return _normalised_table(table, *args, **options).to_pandas(split_blocks=True, self_destruct=True)


# --------------------------------------------------------------------------------------------------------------
# Public API


@dataclasses.dataclass(frozen=True)
class _FeatureQuery:
    """The feature query over registered inputs, and what its result's normalisation needs to know."""

    sql: str
    spec: FeatureConfig
    attributes: list[str]
    with_labels: bool
    with_margin: bool
    with_invoices: bool
    with_interactions: bool

    def _options(self) -> dict[str, bool]:
        return {
            "with_margin": self.with_margin,
            "with_invoices": self.with_invoices,
            "with_interactions": self.with_interactions,
        }

    def normalise(self, table: pa.Table) -> pd.DataFrame:
        """Rows of the result (all of it or one batch) as :func:`build_features` returns them."""
        return _normalise_features(table, self.spec, self.attributes, self.with_labels, **self._options())

    def arrow_schema(self, raw: pa.Schema) -> pa.Schema:
        """The Arrow types :meth:`normalise` gives, from the engine's result schema ``raw``."""
        return _normalised_table(
            raw.empty_table(), self.spec, self.attributes, self.with_labels, **self._options()
        ).schema


def _feature_query(
    runner: _SqlEngine,
    transactions: TableSource,
    cutoffs: Sequence[dt.date],
    spec: FeatureConfig,
    customers: TableSource | None,
    label_ends: Sequence[dt.date] | None = None,
    undated: Undated = "exclude",
    invoices: TableSource | None = None,
    interactions: TableSource | None = None,
) -> _FeatureQuery:
    """Register the inputs on ``runner`` and build the features query at each cutoff; with ``label_ends``
    (one per cutoff) it also selects the labels of (cutoff, end]."""
    _check_undated(undated, customers is not None)
    with_margin = _register_transactions(runner, transactions)
    attributes = _register_customers(runner, customers) if customers is not None else []
    with_invoices = invoices is not None
    if invoices is not None:
        _register_invoices(runner, invoices)
    with_interactions = interactions is not None
    if interactions is not None:
        _register_interactions(runner, interactions)
    runner.materialise("cutoffs", _dates_table_sql({"as_of": list(cutoffs)}))
    with_labels = label_ends is not None
    if label_ends is not None:
        runner.materialise(
            "label_windows", _dates_table_sql({"cutoff": list(cutoffs), "label_end": label_ends})
        )
        runner.materialise(
            "labels", _labels_sql(min(cutoffs), max(label_ends), ordered=False, with_margin=with_margin)
        )
    sql = _features_sql(
        spec,
        max(cutoffs),
        attributes,
        customers is not None,
        with_labels,
        undated,
        with_margin,
        with_invoices,
        with_interactions,
    )
    return _FeatureQuery(sql, spec, attributes, with_labels, with_margin, with_invoices, with_interactions)


def _features_at(
    runner: _SqlEngine,
    transactions: TableSource,
    cutoffs: Sequence[dt.date],
    spec: FeatureConfig,
    customers: TableSource | None,
    label_ends: Sequence[dt.date] | None = None,
    undated: Undated = "exclude",
    invoices: TableSource | None = None,
    interactions: TableSource | None = None,
) -> pd.DataFrame:
    """Features at each cutoff; with ``label_ends`` (one per cutoff) also the labels of (cutoff, end]."""
    query = _feature_query(
        runner, transactions, cutoffs, spec, customers, label_ends, undated, invoices, interactions
    )
    return query.normalise(runner.fetch(query.sql))


class UndatedCustomersWarning(UserWarning):
    """``data.customers.undated: include`` puts customers without a signup date into every cutoff."""


_undated_warned = False


def _check_undated(undated: str, with_customers: bool) -> None:
    global _undated_warned
    if undated not in ("exclude", "include"):
        raise ConfigError(f"data.customers.undated: expected exclude or include, got {undated!r}")
    if undated == "include" and with_customers and not _undated_warned:
        _undated_warned = True  # once per process: every cutoff of a run shares the same caveat
        warnings.warn(
            "data.customers.undated: include — customers without a signup date are in the population at "
            "every cutoff, also before their first purchase; if the customers file lists people who first "
            "bought later, the past is filled with future customers",
            UndatedCustomersWarning,
            stacklevel=3,
        )


def build_features(
    transactions: TableSource,
    as_of: dt.date,
    spec: FeatureConfig,
    customers: TableSource | None = None,
    *,
    engine: Engine = "duckdb",
    undated: Undated = "exclude",
    spark: SparkSettings | None = None,
    invoices: TableSource | None = None,
    interactions: TableSource | None = None,
) -> pd.DataFrame:
    """Point-in-time customer features at a cutoff.

    Parameters
    ----------
    transactions:
        Clean transactions: a parquet path (file or folder) or a DataFrame with the
        :data:`segml.schema.CLEAN_TRANSACTION_COLUMNS` (``customer_id``, ``timestamp`` and ``amount`` are
        required; ``order_id``, ``quantity`` and ``product_id`` are used when present; ``margin`` adds the
        margin features ``margin_total``, ``margin_{w}d`` and ``margin_rate``).
    as_of:
        Cutoff, inclusive: only rows with ``date(timestamp) <= as_of`` are read.
    spec:
        Feature configuration (windows, trend window, active months, DuckDB threads and memory limit).
    customers:
        Optional clean customers (path or DataFrame): ``customer_id``, optional ``signup_date`` and attribute
        columns, one row per customer. Customers with ``signup_date <= as_of`` who have not bought yet get a
        row with ``has_purchases = False``. A customer with no signup date and no purchase on or before
        ``as_of`` is not in the population (see ``undated``).
    engine:
        ``"duckdb"`` (default) or ``"spark"``; both run the same SQL and return identical frames.
    undated:
        ``"exclude"`` (default): customers without a signup date enter with their first purchase.
        ``"include"``: they are in the population at every cutoff (``data.customers.undated: include``;
        warns once per process with :class:`UndatedCustomersWarning`).
    spark:
        The ``spark:`` settings of the session for ``engine="spark"``; default: the active session (any
        master), else ``local[2]``.
    invoices:
        Optional clean invoices (path or DataFrame: ``customer_id``, ``issued``, ``due``, ``paid``,
        ``amount``), as ingest writes them from ``data.invoices``; adds the invoice features, computed from
        what is known at ``as_of`` (invoices issued by then; a payment after ``as_of`` leaves the invoice open).
    interactions:
        Optional clean interactions (path or DataFrame: ``customer_id``, ``timestamp``, ``kind``, ``score``),
        as ingest writes them from ``data.interactions``; adds the interaction features, computed from the
        events dated on or before ``as_of``. Events of customers outside the population are ignored.

    Returns
    -------
    pandas.DataFrame
        One row per customer, sorted by ``customer_id``, index ``0..n-1``, columns
        :func:`feature_columns` (``with_margin`` when the transactions carry ``margin``, ``with_invoices``
        when ``invoices`` are given, ``with_interactions`` when ``interactions`` are given; see
        docs/features.md for every definition).

    Raises
    ------
    InputFileError
        A file is missing or unreadable, or a required column is absent.
    ConfigError
        Invalid windows, engine or date.
    """
    _check_spec(spec)
    as_of = as_date(as_of, "as_of")
    with _open_engine(engine, spec, spark) as runner:
        return _features_at(
            runner,
            transactions,
            [as_of],
            spec,
            customers,
            undated=undated,
            invoices=invoices,
            interactions=interactions,
        )


#: rows per parquet row group of :func:`write_features`: pyarrow's default for a whole table, so the file is the
#: one ``write_parquet(build_features(...))`` writes
FEATURE_ROW_GROUP_ROWS = 1024 * 1024


def write_features(
    transactions: TableSource,
    as_of: dt.date,
    spec: FeatureConfig,
    out: str | Path,
    customers: TableSource | None = None,
    *,
    undated: Undated = "exclude",
    invoices: TableSource | None = None,
    interactions: TableSource | None = None,
    batch_rows: int = FEATURE_ROW_GROUP_ROWS,
) -> int:
    """Write the :func:`build_features` table at a cutoff to parquet in batches, on DuckDB, without building it
    in memory.

    The same query runs, its result is read back in Arrow batches as DuckDB produces them, each batch is typed
    as :func:`build_features` types its rows, and row groups of ``batch_rows`` rows are appended to a temporary
    file next to ``out`` that is renamed over ``out`` at the end (a failed run leaves no file). Reading the file
    back (``pandas.read_parquet(out)``) gives exactly the frame :func:`build_features` returns.

    Parameters
    ----------
    transactions, as_of, spec, customers, undated, invoices, interactions:
        As for :func:`build_features` (DuckDB with ``spec.threads`` / ``spec.memory_limit``).
    out:
        The parquet file to write (its folder is created).
    batch_rows:
        Rows per parquet row group, and the most rows of one batch read from DuckDB; Python holds at most
        one row group and one batch at a time. The default is the row group size of ``DataFrame.to_parquet``,
        so the bytes are those of ``segml.storage.write_parquet(build_features(...), out)`` (but for a column
        without any value, e.g. in a table without rows, which keeps its type instead of Arrow's null type).

    Returns
    -------
    int
        The number of rows written (customers in the population at ``as_of``).

    Raises
    ------
    InputFileError
        A file is missing or unreadable, or a required column is absent.
    ConfigError
        Invalid windows, date or ``batch_rows``.
    """
    from segml.storage import atomic_path

    _check_spec(spec)
    as_of = as_date(as_of, "as_of")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int | np.integer) or batch_rows < 1:
        raise ConfigError(f"batch_rows: expected a positive row count, got {batch_rows!r}")
    with contextlib.closing(_DuckDBEngine(spec.threads, spec.memory_limit)) as runner:
        query = _feature_query(
            runner,
            transactions,
            [as_of],
            spec,
            customers,
            undated=undated,
            invoices=invoices,
            interactions=interactions,
        )
        with runner.stream(query.sql, int(batch_rows)) as reader, atomic_path(out) as tmp:
            return _write_feature_batches(reader, query, tmp, int(batch_rows))


def _write_feature_batches(
    reader: pa.RecordBatchReader, query: _FeatureQuery, path: Path, row_group_rows: int
) -> int:
    """Normalise each batch of ``reader`` with ``query`` and write it to ``path`` in row groups of exactly
    ``row_group_rows`` rows (the last one shorter), so the file depends on the rows only, never on how the
    engine cut its batches. Each batch goes the way ``DataFrame.to_parquet`` sends a whole frame (to pandas,
    then ``Table.from_pandas``), so values, types and pandas metadata are those of ``write_parquet``."""
    # the schema comes from the query, not from the first batch: a column without any value in one batch (or
    # a result without rows) keeps its type
    types = query.arrow_schema(reader.schema)
    template = query.normalise(reader.schema.empty_table())
    schema = pa.Table.from_pandas(template, schema=types, preserve_index=False).schema
    pending: list[pa.Table] = []
    pending_rows = written = 0
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for batch in reader:
            frame = query.normalise(pa.Table.from_batches([batch]))
            pending.append(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            pending_rows += len(frame)
            del frame
            while pending_rows >= row_group_rows:
                rows = pa.concat_tables(pending)
                writer.write_table(rows.slice(0, row_group_rows), row_group_size=row_group_rows)
                written += row_group_rows
                rest = rows.slice(row_group_rows)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if pending_rows or not written:  # a table without rows is still written, as one empty row group
            rows = pa.concat_tables(pending) if pending else schema.empty_table()
            writer.write_table(rows, row_group_size=row_group_rows)
            written += rows.num_rows
    return written


@contextlib.contextmanager
def spark_features(
    transactions: str | Path,
    as_of: dt.date,
    spec: FeatureConfig,
    customers: TableSource | None = None,
    *,
    spark: SparkSettings | None = None,
    undated: Undated = "exclude",
    invoices: str | Path | None = None,
    interactions: str | Path | None = None,
) -> Iterator[tuple[SparkDataFrame, list[str]]]:
    """The :func:`build_features` query at one cutoff as a lazy Spark DataFrame (nothing is collected).

    Its columns are the engine's: attributes are under SQL-safe aliases, types as Spark computed them. Pass
    each batch through :func:`normalise_feature_batch` (with the attribute names yielded here) to get exactly
    the rows :func:`build_features` returns. The DataFrame is valid inside the ``with`` block only (its
    intermediate tables are cached views dropped on exit).

    Parameters
    ----------
    transactions:
        Clean transactions as a parquet path every executor can read.
    as_of, spec, customers, undated:
        As for :func:`build_features`.
    spark:
        The ``spark:`` settings, as for :func:`build_features`.
    invoices:
        Optional clean invoices as a parquet path every executor can read; adds the invoice features (pass
        ``with_invoices=True`` to :func:`normalise_feature_batch` then).
    interactions:
        Optional clean interactions as a parquet path every executor can read; adds the interaction features
        (pass ``with_interactions=True`` to :func:`normalise_feature_batch` then).

    Yields
    ------
    (pyspark.sql.DataFrame, list[str])
        The feature rows and the attribute column names (in alias order).
    """
    _check_spec(spec)
    as_of = as_date(as_of, "as_of")
    _check_undated(undated, customers is not None)
    with _open_engine("spark", spec, spark) as runner:
        with_margin = _register_transactions(runner, transactions)
        attributes = _register_customers(runner, customers) if customers is not None else []
        if invoices is not None:
            _register_invoices(runner, invoices)
        if interactions is not None:
            _register_interactions(runner, interactions)
        runner.materialise("cutoffs", _dates_table_sql({"as_of": [as_of]}))
        sql = _features_sql(
            spec,
            as_of,
            attributes,
            customers is not None,
            False,
            undated,
            with_margin=with_margin,
            with_invoices=invoices is not None,
            with_interactions=interactions is not None,
        )
        yield runner.spark.sql(sql), attributes


def normalise_feature_batch(
    batch: pa.Table,
    spec: FeatureConfig,
    attributes: Sequence[str],
    *,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> pd.DataFrame:
    """Rows of a :func:`spark_features` DataFrame (an Arrow batch) as :func:`build_features` types them
    (``with_invoices`` when it was given invoices, ``with_interactions`` when it was given interactions; the
    margin features are kept when the batch has them, i.e. when the transactions carry a ``margin``)."""
    return _normalise_features(
        batch,
        spec,
        attributes,
        with_margin="margin_total" in batch.column_names,
        with_invoices=with_invoices,
        with_interactions=with_interactions,
    )


def _label_windows(
    cutoffs: Sequence[dt.date], horizon_days: int, label_end: dt.date | None
) -> tuple[list[dt.date], list[dt.date]]:
    if not isinstance(horizon_days, int | np.integer) or horizon_days < 1:
        raise ConfigError(f"cutoffs.horizon_days: expected a positive day count, got {horizon_days!r}")
    ends = []
    for cutoff in cutoffs:
        end = cutoff + dt.timedelta(days=int(horizon_days))
        if label_end is not None:
            end = min(end, label_end)
        if end <= cutoff:
            raise ConfigError(
                f"label window after cutoff {cutoff} is empty: label_end {label_end} is not after the cutoff"
            )
        ends.append(end)
    return list(cutoffs), ends


def _labels_at(
    runner: _SqlEngine, cutoffs: Sequence[dt.date], horizon_days: int, label_end: dt.date | None
) -> pd.DataFrame:
    starts, ends = _label_windows(cutoffs, horizon_days, label_end)
    runner.materialise("label_windows", _dates_table_sql({"cutoff": starts, "label_end": ends}))
    raw = runner.fetch(_labels_sql(min(starts), max(ends)))
    columns = {
        "cutoff": raw["cutoff"].cast(pa.timestamp("ns")),
        "customer_id": raw["customer_id"].cast(pa.string()),
        **{name: raw[name].cast(pa.float64()) for name in LABEL_COLUMNS},
    }
    return pa.table(columns).to_pandas(split_blocks=True, self_destruct=True)


def build_labels(
    transactions: TableSource,
    cutoff: dt.date,
    horizon_days: int,
    *,
    label_end: dt.date | None = None,
    engine: Engine = "duckdb",
    spark: SparkSettings | None = None,
) -> pd.DataFrame:
    """Future-value labels for the window ``(cutoff, cutoff + horizon_days]``, clipped at ``label_end``.

    Parameters
    ----------
    transactions:
        Clean transactions (parquet path or DataFrame), as for :func:`build_features`.
    cutoff:
        Last day of the observed past; the label window starts the day after.
    horizon_days:
        Length of the label window in days.
    label_end:
        Last day with data (inclusive); the window is cut there. ``label_days`` records the observed length.
    engine:
        ``"duckdb"`` or ``"spark"``.
    spark:
        The ``spark:`` settings, as for :func:`build_features`.

    Returns
    -------
    pandas.DataFrame
        ``customer_id``, ``future_spend`` (net spend in the window), ``future_orders`` (purchase days),
        ``future_active`` (1.0), ``label_days``; only customers with rows in the window, sorted by id.
        Left-join onto features and fill the label columns with 0.

    Raises
    ------
    ConfigError
        ``horizon_days`` is not positive, or ``label_end`` is not after ``cutoff``.
    """
    cutoff = as_date(cutoff, "cutoff")
    label_end = as_date(label_end, "label_end") if label_end is not None else None
    with _open_engine(engine, spark=spark) as runner:
        _register_transactions(runner, transactions)
        labels = _labels_at(runner, [cutoff], horizon_days, label_end)
    return labels.drop(columns="cutoff").reset_index(drop=True)


def training_frame(
    transactions: TableSource,
    cutoffs: Sequence[dt.date],
    horizon_days: int,
    spec: FeatureConfig,
    customers: TableSource | None = None,
    *,
    label_end: dt.date | None = None,
    engine: Engine = "duckdb",
    undated: Undated = "exclude",
    spark: SparkSettings | None = None,
    invoices: TableSource | None = None,
    interactions: TableSource | None = None,
) -> pd.DataFrame:
    """Features at several historical cutoffs joined with the labels that followed each.

    All cutoffs are computed in one pass: purchase days are aggregated once and one grouped query over a
    ``cutoffs`` table yields every (cutoff, customer) row; labels likewise come from one query.

    Parameters
    ----------
    transactions, spec, customers, engine, undated, spark, invoices, interactions:
        As for :func:`build_features` (the population rule and the point-in-time rules of invoices and
        interactions apply at every cutoff).
    cutoffs:
        Cutoff dates (duplicates are ignored).
    horizon_days:
        Label window length after each cutoff.
    label_end:
        Last day with data; label windows are clipped there (``label_days`` < ``horizon_days``).

    Returns
    -------
    pandas.DataFrame
        The :func:`build_features` columns plus ``cutoff`` (= ``as_of``), ``future_spend``, ``future_orders``,
        ``future_active`` (0 for customers without purchases in the window) and ``label_days``, sorted by
        cutoff then customer_id, index ``0..n-1``.
    """
    _check_spec(spec)
    dates = sorted({as_date(c, "cutoffs") for c in cutoffs})
    if not dates:
        raise ConfigError("cutoffs: at least one cutoff date is needed for a training frame")
    label_end = as_date(label_end, "label_end") if label_end is not None else None
    _, ends = _label_windows(dates, horizon_days, label_end)
    with _open_engine(engine, spec, spark) as runner:
        return _features_at(
            runner,
            transactions,
            dates,
            spec,
            customers,
            label_ends=ends,
            undated=undated,
            invoices=invoices,
            interactions=interactions,
        )


def _clean_events(cfg: ExperimentConfig, source: str, experiment: str | Path) -> Path | None:
    """The clean ``source`` file ingest wrote when ``data.<source>`` is configured (None when it is not)."""
    if getattr(cfg.data, source) is None:
        return None
    path: Path = getattr(cfg.paths, f"clean_{source}")
    if not path.is_file():
        raise SegmlError(
            f"{path}: clean {source} not found (data.{source} is configured); run "
            f"`segml ingest {experiment}` first"
        )
    return path


def run_features(cfg: ExperimentConfig, as_of: dt.date) -> tuple[Path, int]:
    """Build the feature table of an experiment at a cutoff and write it as parquet.

    On DuckDB (``engine: duckdb``) the table is streamed to the file in row groups (:func:`write_features`),
    never held whole in memory; on Spark it is collected (:func:`build_features`) and then written. The file
    reads back as the :func:`build_features` frame either way.

    Parameters
    ----------
    cfg:
        The experiment; reads ``cfg.paths.clean_transactions`` and, when ``data.customers`` is configured and
        ingest wrote it, ``cfg.paths.clean_customers`` (restricted to ``data.customers.attributes`` if set);
        with ``data.invoices``, ``cfg.paths.clean_invoices`` (required then); with ``data.interactions``,
        ``cfg.paths.clean_interactions`` (required then).
    as_of:
        Cutoff date (inclusive).

    Returns
    -------
    (Path, int)
        ``data/processed/<experiment>/features_<as_of>.parquet`` (written atomically) and the customer count.

    Raises
    ------
    SegmlError
        The clean transactions do not exist yet (run ``segml ingest`` first).
    """
    from rich.console import Console

    from segml.storage import write_parquet

    as_of = as_date(as_of, "as_of")
    tx_path = cfg.paths.clean_transactions
    experiment = cfg.source_path or f"experiments/{cfg.name}.yaml"
    if not tx_path.is_file():
        raise SegmlError(f"{tx_path}: clean transactions not found; run `segml ingest {experiment}` first")
    customers: TableSource | None = None
    if cfg.data.customers is not None and cfg.paths.clean_customers.is_file():
        customers = cfg.paths.clean_customers
        wanted = cfg.data.customers.attributes
        if wanted is not None:
            names = pq.read_schema(customers).names
            missing = [a for a in wanted if a not in names]
            if missing:
                raise InputFileError(
                    f"{customers}: attribute column(s) {', '.join(missing)} listed in "
                    "data.customers.attributes are not in the clean customers file"
                )
            keep = ["customer_id", *(["signup_date"] if "signup_date" in names else []), *wanted]
            customers = pd.read_parquet(customers, columns=keep)
    invoices = _clean_events(cfg, "invoices", experiment)
    interactions = _clean_events(cfg, "interactions", experiment)
    console = Console(stderr=True)
    target = cfg.paths.features_file(as_of)
    undated = cfg.data.customers.undated if cfg.data.customers is not None else "exclude"
    with console.status(f"features {cfg.name} as of {as_of} ({cfg.engine})"):
        if cfg.engine == "duckdb":  # streamed to the file: the table is never whole in memory
            n_customers = write_features(
                tx_path,
                as_of,
                cfg.features,
                target,
                customers,
                undated=undated,
                invoices=invoices,
                interactions=interactions,
            )
            return target, n_customers
        frame = build_features(
            tx_path,
            as_of,
            cfg.features,
            customers,
            engine=cfg.engine,
            undated=undated,
            spark=cfg.spark,
            invoices=invoices,
            interactions=interactions,
        )
        write_parquet(frame, target)
    return target, len(frame)
