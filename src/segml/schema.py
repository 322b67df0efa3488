"""The data contract: column roles, clean-transaction schema and quarantine reasons.

A user's file may use any column names; the experiment YAML maps them to these roles. Ingest produces
clean transactions with exactly :data:`CLEAN_TRANSACTION_COLUMNS` (plus ``margin`` when a ``cost`` or ``margin``
role is mapped, see :func:`clean_transaction_columns`) and a quarantine file holding the
original columns plus ``reason`` (one of :class:`QuarantineReason` or :class:`SourceReason`) and, for a malformed CSV line, its raw
text (``raw_line``).
"""

from __future__ import annotations

from enum import StrEnum

#: roles a transaction source may map
TRANSACTION_ROLES = (
    "customer_id",
    "timestamp",
    "amount",
    "order_id",
    "quantity",
    "unit_price",
    "product_id",
    "channel",
    "cost",  # line cost (same currency as amount): margin = amount - cost
    "margin",  # line margin as the file records it (instead of cost)
)
#: the roles that give clean transactions a ``margin`` column; a source maps at most one of them
MARGIN_ROLES = ("cost", "margin")
REQUIRED_TRANSACTION_ROLES = ("customer_id", "timestamp")  # plus amount, or quantity and unit_price

#: clean transactions written by ingest, in this order, with these DuckDB types
CLEAN_TRANSACTION_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "order_id": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "amount": "DOUBLE",  # currency, negative = return/refund
    "quantity": "DOUBLE",
    "product_id": "VARCHAR",
    "channel": "VARCHAR",
    "source": "VARCHAR",  # which transaction file the row came from
    "source_row": "BIGINT",  # 1-based data row number in that file
    "is_return": "BOOLEAN",
    "is_outlier": "BOOLEAN",  # flagged, kept (see OutlierRule)
}
#: written after ``amount`` only when the sources map ``cost`` or ``margin`` (may be negative; returns net)
MARGIN_COLUMN = ("margin", "DOUBLE")


def clean_transaction_columns(with_margin: bool) -> dict[str, str]:
    """The clean-transaction schema: :data:`CLEAN_TRANSACTION_COLUMNS`, plus ``margin`` after ``amount``
    when ``with_margin`` (the sources map a ``cost`` or ``margin`` role)."""
    if not with_margin:
        return dict(CLEAN_TRANSACTION_COLUMNS)
    out: dict[str, str] = {}
    for name, sql_type in CLEAN_TRANSACTION_COLUMNS.items():
        out[name] = sql_type
        if name == "amount":
            out[MARGIN_COLUMN[0]] = MARGIN_COLUMN[1]
    return out


#: customer attribute roles with a meaning of their own; any other mapped role is a free attribute
CUSTOMER_ROLES = ("customer_id", "signup_date")


class QuarantineReason(StrEnum):
    """Why a row was quarantined. A row with several faults gets the first reason in this order
    (the order is the precedence: structure, identity, then time, then money, then business rules)."""

    MALFORMED_ROW = "malformed_row"  # a CSV line with too few/many fields or an unterminated quote
    MISSING_CUSTOMER_ID = "missing_customer_id"
    UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # before cleaning.min_date
    FUTURE_TIMESTAMP = "future_timestamp"  # after cleaning.max_date (default: ingest day)
    NON_NUMERIC_AMOUNT = (
        "non_numeric_amount"  # amount, quantity, unit price, cost or margin not a finite number
    )
    NON_PRODUCT = "non_product"  # postage, fees, manual adjustments (code list / pattern)
    DUPLICATE_ROW = "duplicate_row"  # see CleaningRules.duplicates
    ZERO_AMOUNT = "zero_amount"  # only when cleaning.zero_amount = quarantine
    RETURN = "return"  # only when cleaning.returns = quarantine
    OUTLIER_AMOUNT = "outlier_amount"  # only when cleaning.outliers.quarantine_above is set


#: precedence of the data-quality reasons, highest first
QUARANTINE_PRECEDENCE: tuple[QuarantineReason, ...] = tuple(QuarantineReason)


class SourceReason(StrEnum):
    """Why a row was set aside by its source's own declaration (``joins:``, ``where:`` / ``exclude:``) rather
    than for a fault in its values. Such rows go to the quarantine file too, so every row is accounted for."""

    UNMATCHED_LOOKUP = "unmatched_lookup"  # its ``on`` value has no row in a lookup of ``joins:``
    FILTERED = "filtered"  # left out by the source's ``where:`` / ``exclude:`` row filter


#: precedence of every reason ingest gives, highest first: a malformed line first (it has no fields), then a
#: row a lookup cannot complete (its joined columns are empty), then rows outside the declared scope (their
#: values are not examined further), then the data-quality reasons
ROW_PRECEDENCE: tuple[str, ...] = (
    QuarantineReason.MALFORMED_ROW,
    SourceReason.UNMATCHED_LOOKUP,
    SourceReason.FILTERED,
    *QUARANTINE_PRECEDENCE[1:],
)
