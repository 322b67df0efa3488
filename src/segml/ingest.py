"""Ingest: read transaction files, map columns to contract roles, validate, clean, quarantine, report.

Everything runs in a fresh in-memory DuckDB connection; no row is ever looped over in Python.

Flow per transaction source (a file, or a DataFrame for tests):

1. **read** the file into a table of its original columns plus a 1-based ``source_row``
   (CSV as text, Parquet natively through a view numbered by file position, never copied, ``whitespace`` by
   splitting lines on runs of blanks). A CSV header is
   read first (duplicate or case-ambiguous names are an error naming both); lines with too few or too many
   fields or an unterminated quote are kept as ``malformed_row`` rows with their raw text, so one bad line
   never refuses the file; a file that is not in its ``encoding:`` is refused naming the line;
2. **join** the source's lookups (``joins:``, each keyed by a unique column; a row without a match gets
   ``unmatched_lookup``), so that the roles, filters and duplicate key may name the joined columns;
3. **map and parse** the contract roles (customer id as trimmed text, timestamp, numbers) and refuse the
   file when one role fails on more than ``cleaning.max_bad_share`` of its rows (wrong column or type);
4. **classify** every row of every source: each reason is a boolean condition and a row gets the first true
   one in :data:`segml.schema.ROW_PRECEDENCE` (rows left out by ``where:`` / ``exclude:`` get ``filtered``);
   duplicates (identical rows, or rows repeating ``cleaning.duplicates.key``) are looked for only among
   rows that passed the reasons ranked above ``duplicate_row``;
5. **flag** outliers on kept rows (``is_outlier``) and write clean transactions, the quarantine (original
   columns as text + ``source``, ``source_row``, ``reason``) and ``dq_report.json``.

The rows are parsed and classified in one streamed query whose result, the only copy of the rows ingest keeps,
is a Parquet file in a private temporary folder (under ``TMPDIR``); the clean rows, the quarantine and the
report are views and queries over it, so memory stays within DuckDB's ``memory_limit`` at any row count.

``rows_in == rows_kept + rows_quarantined`` is checked before anything is written (unmatched and filtered
rows are in the quarantine file and its counts, under their own reasons).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from segml.config import (
    IGNORE_KIND,
    INTERACTION_KINDS,
    INTERACTION_ROLES,
    INVOICE_ROLES,
    CleaningRules,
    CustomerSource,
    DuplicateKey,
    ExperimentConfig,
    InteractionSource,
    InvoiceSource,
    SourceJoin,
    TransactionSource,
)
from segml.errors import ConfigError, InputFileError, SegmlError
from segml.ingest_spark import SparkConnection, java_pattern
from segml.schema import (
    CUSTOMER_ROLES,
    MARGIN_ROLES,
    ROW_PRECEDENCE,
    TRANSACTION_ROLES,
    QuarantineReason,
    SourceReason,
    clean_transaction_columns,
)
from segml.storage import atomic_path, write_json

__all__ = [
    "IngestResult",
    "FrameIngest",
    "run_ingest",
    "ingest_frames",
    "QUARANTINE_CUSTOMERS_FILE",
    "InvoiceReason",
    "CLEAN_INVOICE_COLUMNS",
    "InteractionReason",
    "CLEAN_INTERACTION_COLUMNS",
]

#: file name of quarantined customer-attribute rows, next to the other ingest outputs
QUARANTINE_CUSTOMERS_FILE = "quarantine_customers.parquet"


class InvoiceReason(StrEnum):
    """Why an invoice row was quarantined; a row with several faults gets the first reason in this order."""

    MALFORMED_ROW = "malformed_row"  # a CSV line with too few/many fields or an unterminated quote
    MISSING_INVOICE_ID = "missing_invoice_id"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    BAD_DATE = "bad_date"  # issued or due empty or not a date, or paid not empty and not a date
    NON_NUMERIC_AMOUNT = "non_numeric_amount"  # amount empty or not a finite number
    DUE_BEFORE_ISSUED = "due_before_issued"
    PAID_BEFORE_ISSUED = "paid_before_issued"
    NEGATIVE_AMOUNT = "negative_amount"
    #: an invoice id seen before: among rows with no other fault, the earliest issued is kept (then the first
    #: in file order), so a later invoice can never displace an earlier one
    DUPLICATE_INVOICE = "duplicate_invoice"


#: clean invoices written by ingest (``invoices.parquet``), in this order, with these DuckDB types
CLEAN_INVOICE_COLUMNS: dict[str, str] = {
    "invoice_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "issued": "DATE",
    "due": "DATE",
    "paid": "DATE",  # NULL = not paid (yet)
    "amount": "DOUBLE",
    "source_row": "BIGINT",  # 1-based data row number in the invoices file
}
_INVOICES_QUERY = "SELECT * FROM invoices_out ORDER BY customer_id, issued, invoice_id, source_row"
_QUARANTINE_INVOICES_QUERY = "SELECT * FROM quarantine_invoices_out ORDER BY source_row"


class InteractionReason(StrEnum):
    """Why an interaction row was quarantined; a row with several faults gets the first reason in this order."""

    MALFORMED_ROW = "malformed_row"  # a CSV line with too few/many fields or an unterminated quote
    #: mapped to ``ignore`` under ``kinds:``: an event type segml does not model, set aside on purpose (its
    #: other faults do not matter and it never counts towards refusing the file)
    IGNORED_KIND = "ignored_kind"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    BAD_TIMESTAMP = "bad_timestamp"  # empty or not a date/timestamp
    FUTURE_TIMESTAMP = "future_timestamp"  # after cleaning.max_date (default: the ingest day)
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # before cleaning.min_date
    UNKNOWN_KIND = "unknown_kind"  # empty, or neither listed in ``kinds:`` nor a segml kind
    BAD_SCORE = "bad_score"  # a score is given but is not a finite number
    #: the same customer, timestamp, kind, channel, outcome and score as an earlier row (among rows with no
    #: other fault; the first in file order is kept)
    DUPLICATE_EVENT = "duplicate_event"


#: clean interactions written by ingest (``interactions.parquet``), in this order, with these DuckDB types
CLEAN_INTERACTION_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "kind": "VARCHAR",  # one of segml.config.INTERACTION_KINDS
    "channel": "VARCHAR",  # NULL when the role is not mapped or the field is empty
    "outcome": "VARCHAR",
    "score": "DOUBLE",
    "source_row": "BIGINT",  # 1-based data row number in the interactions file
}
_INTERACTIONS_QUERY = "SELECT * FROM interactions_out ORDER BY customer_id, timestamp, kind, source_row"
_QUARANTINE_INTERACTIONS_QUERY = "SELECT * FROM quarantine_interactions_out ORDER BY source_row"

_ROW = "__source_row"  # internal 1-based row number column of raw tables
_RAW = "__raw_line"  # internal: the raw text of a malformed CSV line (NULL for parsed rows)
_UNMATCHED = (
    "__unmatched_join"  # internal: index of the first join a row found no match in (NULL: all matched)
)
#: roles with a ``fail_<role>`` flag in the typed rows, in the order a refusal names the first failing one
_FAIL_ROLES = ("customer_id", "timestamp", "amount", "quantity", "unit_price", "cost", "margin")
#: the 0-based position column ``read_parquet`` adds on request
_FILE_ROW_NUMBER = "file_row_number"
_QUARANTINE_TAIL = ("source", "source_row", "reason", "raw_line")
#: delimiters tried on a CSV header line when ``delimiter:`` is not set
_DELIMITERS = (",", ";", "\t", "|")
_BLANKS = "chr(32) || chr(9) || chr(10) || chr(13)"
#: on Spark, the timestamp texts DuckDB's cast accepts: a full date, then nothing or at least hours:minutes
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}($|[ T][0-9]{1,2}:[0-9]{2})"
_SLASHED_DATE = r"^([0-9]{4})/([0-9]{1,2})/([0-9]{1,2})"
_NUMERIC_TYPES = set(
    [
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
        "FLOAT",
        "DOUBLE",
        "DECIMAL",
    ]
)
#: output order: deterministic whatever the thread count
_CLEAN_QUERY = "SELECT * FROM clean_out ORDER BY customer_id, timestamp, source, source_row"
_QUARANTINE_QUERY = "SELECT * EXCLUDE (source_index) FROM quarantine_out ORDER BY source_index, source_row"
#: a rejected line's text without the line breaks DuckDB keeps around it
_TRIMMED_LINE = "trim({}, chr(13) || chr(10))"
_MALFORMED_ERRORS = ("MISSING COLUMNS", "TOO MANY COLUMNS", "UNQUOTED VALUE", "LINE SIZE OVER MAXIMUM")
#: parsed role columns; rows equal on all of them (within a source) are "identical"
_ROLE_COLUMNS = (
    "customer_id",
    "order_id",
    "timestamp",
    "amount",
    "quantity",
    "unit_price",
    "product_id",
    "channel",
    "cost",
    "margin",
)


# --------------------------------------------------------------------------------------------------------------
# Public API


@dataclass
class IngestResult:
    """Where :func:`run_ingest` wrote its outputs, and the DQ report it wrote."""

    transactions_path: Path
    quarantine_path: Path
    report_path: Path
    customers_path: Path | None
    report: dict[str, Any]
    #: ``invoices.parquet`` (None without ``data.invoices``)
    invoices_path: Path | None = None
    #: ``interactions.parquet`` (None without ``data.interactions``)
    interactions_path: Path | None = None


@dataclass
class FrameIngest:
    """In-memory result of :func:`ingest_frames`: clean rows, quarantined rows and the DQ report."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    report: dict[str, Any]
    customers: pd.DataFrame | None = None
    quarantine_customers: pd.DataFrame | None = None
    invoices: pd.DataFrame | None = None
    quarantine_invoices: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    quarantine_interactions: pd.DataFrame | None = None


def run_ingest(cfg: ExperimentConfig, *, today: dt.date | None = None) -> IngestResult:
    """Read, map, validate and clean the experiment's transactions; write clean data, quarantine and report.

    Parameters
    ----------
    cfg:
        The loaded experiment. Reads ``cfg.data`` (sources, customers file, cleaning rules) and
        ``cfg.features.threads`` / ``memory_limit`` for DuckDB.
    today:
        The ingest day, used as ``max_date`` when ``cleaning.max_date`` is not set (default: the real today).

    Returns
    -------
    IngestResult
        Paths of ``transactions.parquet``, ``quarantine.parquet``, ``dq_report.json`` and
        ``customers.parquet`` (None without a customers file) under ``data/interim/<experiment>/``, plus
        the report as a dict.

    Raises
    ------
    InputFileError
        A file is missing, empty, unreadable, lacks a mapped column, or one role fails to parse on more
        than ``cleaning.max_bad_share`` of its rows.
    ConfigError
        The mapping or rules are inconsistent (e.g. no amount role, invalid pattern).
    """
    data = cfg.data
    # on Spark the executors write the intermediate rows: next to the outputs, on storage they share
    workdir = _workdir(cfg.paths.interim if cfg.engine == "spark" else None)
    con = _open_engine(cfg)
    try:
        raws = _transaction_tables(data.transactions, [str(cfg.resolve(s.path)) for s in data.transactions])
        for raw in raws:
            _read_file(con, Path(raw.label), raw.source.format, raw.source.delimiter, raw)
        _read_lookups(con, raws, cfg.resolve)
        customers_raw = None
        if data.customers is not None:
            customers_raw = _customer_table(data.customers, str(cfg.resolve(data.customers.path)))
            _read_file(
                con, Path(customers_raw.label), data.customers.format, data.customers.delimiter, customers_raw
            )
        invoices_raw = None
        if data.invoices is not None:
            invoices_raw = _invoice_table(data.invoices, str(cfg.resolve(data.invoices.path)))
            _read_file(
                con, Path(invoices_raw.label), data.invoices.format, data.invoices.delimiter, invoices_raw
            )
        interactions_raw = None
        if data.interactions is not None:
            interactions_raw = _interaction_table(data.interactions, str(cfg.resolve(data.interactions.path)))
            _read_file(
                con,
                Path(interactions_raw.label),
                data.interactions.format,
                data.interactions.delimiter,
                interactions_raw,
            )
        report = _ingest_tables(
            con,
            raws,
            data.cleaning,
            today=today,
            customers=customers_raw,
            invoices=invoices_raw,
            interactions=interactions_raw,
            workdir=workdir,
        )
        report["experiment"] = cfg.name

        paths = cfg.paths
        _copy_parquet(con, _CLEAN_QUERY, paths.clean_transactions)
        _copy_parquet(con, _QUARANTINE_QUERY, paths.quarantine)
        customers_path = _write_optional(
            con,
            customers_raw is not None,
            (paths.clean_customers, "SELECT * FROM customers_out ORDER BY customer_id"),
            (
                paths.interim / QUARANTINE_CUSTOMERS_FILE,
                "SELECT * FROM quarantine_customers_out ORDER BY source_row",
            ),
        )
        invoices_path = _write_optional(
            con,
            invoices_raw is not None,
            (paths.clean_invoices, _INVOICES_QUERY),
            (paths.quarantine_invoices, _QUARANTINE_INVOICES_QUERY),
        )
        interactions_path = _write_optional(
            con,
            interactions_raw is not None,
            (paths.clean_interactions, _INTERACTIONS_QUERY),
            (paths.quarantine_interactions, _QUARANTINE_INTERACTIONS_QUERY),
        )
        report = _portable_paths(report, cfg.root)
        write_json(paths.dq_report, report)
    finally:
        con.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return IngestResult(
        transactions_path=paths.clean_transactions,
        quarantine_path=paths.quarantine,
        report_path=paths.dq_report,
        customers_path=customers_path,
        report=report,
        invoices_path=invoices_path,
        interactions_path=interactions_path,
    )


def _portable_paths(report: Any, root: Path) -> Any:
    """The report with every ``path`` inside the project root written relative to it (POSIX), so the same
    inputs give the same report on any machine or clone; paths outside the root stay as given."""
    if isinstance(report, dict):
        out = {}
        for key, value in report.items():
            if key == "path" and isinstance(value, str):
                with contextlib.suppress(ValueError):  # outside the root: kept as configured
                    value = Path(value).relative_to(root).as_posix()
            out[key] = _portable_paths(value, root)
        return out
    if isinstance(report, list):
        return [_portable_paths(value, root) for value in report]
    return report


def ingest_frames(
    frames: Sequence[pd.DataFrame],
    sources: Sequence[TransactionSource],
    rules: CleaningRules | None = None,
    *,
    today: dt.date | None = None,
    customers: pd.DataFrame | None = None,
    customer_source: CustomerSource | None = None,
    threads: int | None = 1,
    invoices: pd.DataFrame | None = None,
    invoice_source: InvoiceSource | None = None,
    interactions: pd.DataFrame | None = None,
    interaction_source: InteractionSource | None = None,
) -> FrameIngest:
    """Run the same cleaning as :func:`run_ingest` on in-memory raw tables (no files read or written).

    Parameters
    ----------
    frames:
        One raw DataFrame per source, with the source's original column names (as read from a file).
    sources:
        The matching source configurations (``path`` is only used as a label; ``format`` is ignored).
        Lookup files of ``joins:`` are read from their paths as given.
    rules:
        Cleaning rules (default: :class:`~segml.config.CleaningRules` defaults).
    today:
        The ingest day used when ``rules.max_date`` is not set.
    customers, customer_source:
        Optional raw customer-attribute frame and its configuration.
    invoices, invoice_source:
        Optional raw invoices frame and its configuration (``data.invoices``).
    interactions, interaction_source:
        Optional raw interactions frame and its configuration (``data.interactions``).
    threads:
        DuckDB threads.

    Returns
    -------
    FrameIngest
        Clean transactions (sorted like the parquet output), quarantined rows and the DQ report.
    """
    if len(frames) != len(sources):
        raise ValueError(f"got {len(frames)} frames for {len(sources)} sources")
    rules = rules or CleaningRules()
    workdir = _workdir()
    con = _connect(threads, None)
    try:
        raws = _transaction_tables(sources, [source.path for source in sources])
        for frame, raw in zip(frames, raws, strict=True):
            _load_frame(con, frame, raw)
        _read_lookups(con, raws, Path)
        customers_raw = None
        if customers is not None:
            if customer_source is None:
                raise ValueError("customers frame given without customer_source")
            customers_raw = _customer_table(customer_source, customer_source.path)
            _load_frame(con, customers, customers_raw)
        invoices_raw = None
        if invoices is not None:
            if invoice_source is None:
                raise ValueError("invoices frame given without invoice_source")
            invoices_raw = _invoice_table(invoice_source, invoice_source.path)
            _load_frame(con, invoices, invoices_raw)
        interactions_raw = None
        if interactions is not None:
            if interaction_source is None:
                raise ValueError("interactions frame given without interaction_source")
            interactions_raw = _interaction_table(interaction_source, interaction_source.path)
            _load_frame(con, interactions, interactions_raw)
        report = _ingest_tables(
            con,
            raws,
            rules,
            today=today,
            customers=customers_raw,
            invoices=invoices_raw,
            interactions=interactions_raw,
            workdir=workdir,
        )
        clean = con.sql(_CLEAN_QUERY).df()
        quarantine = con.sql(_QUARANTINE_QUERY).df()
        result = FrameIngest(clean=clean, quarantine=quarantine, report=report)
        if customers_raw is not None:
            result.customers = con.sql("SELECT * FROM customers_out ORDER BY customer_id").df()
            result.quarantine_customers = con.sql(
                "SELECT * FROM quarantine_customers_out ORDER BY source_row"
            ).df()
        if invoices_raw is not None:
            result.invoices = con.sql(_INVOICES_QUERY).df()
            result.quarantine_invoices = con.sql(_QUARANTINE_INVOICES_QUERY).df()
        if interactions_raw is not None:
            result.interactions = con.sql(_INTERACTIONS_QUERY).df()
            result.quarantine_interactions = con.sql(_QUARANTINE_INTERACTIONS_QUERY).df()
    finally:
        con.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class _RawTable:
    """A source loaded into DuckDB: original columns plus ``__source_row``."""

    table: str
    name: str  # value of the ``source`` column
    label: str  # how error messages name the file
    config_key: str  # where the source sits in the YAML, for ConfigErrors
    source: TransactionSource | CustomerSource | InvoiceSource | InteractionSource | SourceJoin
    columns: list[str] = field(default_factory=list)  # original column names, file order
    types: dict[str, str] = field(default_factory=dict)
    rows_in: int = 0
    rows_with_extra_fields: int | None = None  # whitespace format only
    format: str = ""  # format actually read (after ``auto`` is resolved)
    nulls: tuple[str, ...] = ("",)  # field values that mean missing (``cleaning.null_values``)
    #: column -> the name of its trimmed text in :func:`_trimmed_from`
    trimmed: dict[str, str] = field(default_factory=dict)
    malformed: int = 0  # malformed CSV lines (kept as rows with reason malformed_row)
    lookups: list[_RawTable] = field(default_factory=list)  # one per ``joins:`` entry, in order
    joins_report: list[dict[str, Any]] = field(default_factory=list)
    #: the SQL dialect of the connection the table was read into (``duckdb`` or ``spark``)
    dialect: str = "duckdb"


def _workdir(parent: Path | None = None) -> Path:
    """A private folder for ingest's intermediate Parquet files (under ``parent``, default ``TMPDIR``),
    removed at the end."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".segml-ingest-" if parent else "segml-ingest-", dir=parent))


def _open_engine(cfg: ExperimentConfig) -> Any:
    """The connection ingest runs its SQL on: DuckDB, or the ``spark:`` session when ``engine: spark``."""
    if cfg.engine != "spark":
        return _connect(cfg.features.threads, cfg.features.memory_limit)
    from segml.features import spark_session

    session = spark_session(cfg.spark)
    try:
        return SparkConnection(session)
    except duckdb.Error as exc:  # a session that cannot run SQL functions (Spark before 4.0)
        raise SegmlError(f"engine: spark: ingest needs Spark 4 SQL functions ({_first_line(exc)})") from None


def _connect(threads: int | None, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_literal(memory_limit)}")
    # timestamps with offsets are converted to UTC wall time, whatever the machine's zone
    # (DuckDB builds without ICU have no time zones at all)
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")
    return con


def _transaction_tables(sources: Sequence[TransactionSource], labels: Sequence[str]) -> list[_RawTable]:
    """One (not yet loaded) raw table per source; the configuration is checked before any file is read."""
    _check_source_names(sources)
    raws = []
    for index, (source, label) in enumerate(zip(sources, labels, strict=True)):
        raw = _RawTable(
            table=f"raw_{index}",
            name=_source_name(source),
            label=label,
            config_key=f"data.transactions.{index}",
            source=source,
        )
        _check_required_roles(raw)
        raws.append(raw)
    with_margin = [any(role in source.columns for role in MARGIN_ROLES) for source in sources]
    if any(with_margin) and not all(with_margin):
        lacking = with_margin.index(False)
        raise ConfigError(
            f"data.transactions.{lacking}.columns: map 'cost' or 'margin' on every transaction source or on "
            "none (another source maps one, and margin cannot be summed over sources that lack it)"
        )
    return raws


def _customer_table(source: CustomerSource, label: str) -> _RawTable:
    if "customer_id" not in source.columns:
        raise ConfigError("data.customers.columns: role 'customer_id' must be mapped")
    return _RawTable(
        table="raw_customers", name="customers", label=label, config_key="data.customers", source=source
    )


def _invoice_table(source: InvoiceSource, label: str) -> _RawTable:
    source.check("data.invoices")  # also checked at load; frames built in code come here directly
    return _RawTable(
        table="raw_invoices", name="invoices", label=label, config_key="data.invoices", source=source
    )


def _interaction_table(source: InteractionSource, label: str) -> _RawTable:
    source.check("data.interactions")  # also checked at load; frames built in code come here directly
    return _RawTable(
        table="raw_interactions",
        name="interactions",
        label=label,
        config_key="data.interactions",
        source=source,
    )


def _check_source_names(sources: Sequence[TransactionSource]) -> None:
    seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        name = _source_name(source)
        if name in seen:
            raise ConfigError(
                f"data.transactions.{index}: source name '{name}' is already used by "
                f"data.transactions.{seen[name]}; set a distinct `name:`"
            )
        seen[name] = index
    if not sources:
        raise ConfigError("data.transactions: at least one transaction source is needed")


def _source_name(source: TransactionSource) -> str:
    return source.name or _stem(source.path)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    return Path(name).stem or name


def _resolve_format(path: Path, fmt: str, config_key: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    ext = Path(name).suffix
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".csv", ".txt", ".tsv"):
        return "csv"
    raise ConfigError(
        f"{config_key}.format: cannot tell the format of {path} from its extension '{ext}'; "
        "set format: csv, parquet or whitespace"
    )


def _read_file(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, delimiter: str | None, raw: _RawTable
) -> None:
    """Load ``path`` into ``raw.table``; raise InputFileError naming the file on any problem."""
    if not path.exists():
        raise InputFileError(f"{path}: file not found")
    if not path.is_file():
        raise InputFileError(f"{path}: not a file")
    fmt = raw.format = _resolve_format(path, fmt, raw.config_key)
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: file is empty")
    try:
        if isinstance(con, SparkConnection):
            _read_on_spark(con, path, fmt, delimiter, raw)
        elif fmt == "parquet":
            _read_parquet(con, path, raw)
        elif fmt == "csv":
            _read_csv(con, path, delimiter, raw)
        else:
            _read_whitespace(con, path, raw)
    except duckdb.Error as exc:
        if "unicode" in str(exc).lower() or "encoding" in str(exc).lower():
            raise InputFileError(
                f"{path}: not valid {raw.source.encoding} text ({_first_line(exc)}); set `encoding:` on this "
                "source (utf-8, latin-1 or utf-16)"
            ) from None
        raise InputFileError(f"{path}: cannot read as {fmt} ({_first_line(exc)})") from None
    _describe(con, raw)
    if raw.rows_in == 0:
        raise InputFileError(f"{path}: no data rows (the file holds only a header or no rows)")


def _read_on_spark(con: SparkConnection, path: Path, fmt: str, delimiter: str | None, raw: _RawTable) -> None:
    """The Spark readers (:class:`segml.ingest_spark.SparkConnection`): the same table as the DuckDB ones."""
    raw.dialect = con.dialect
    encoding = getattr(raw.source, "encoding", "utf-8")
    if fmt == "parquet":
        _check_header(path, _parquet_names(path))
        con.read_parquet(path, raw.table)
    elif fmt == "csv":
        header, delimiter = _csv_header(con, path, delimiter, encoding)  # type: ignore[arg-type]
        raw.malformed = con.read_csv(path, header, delimiter, encoding, raw.table)
    else:
        header, raw.rows_with_extra_fields = con.read_whitespace(path, encoding, raw.table)
        if not header:
            raise InputFileError(f"{path}: file is empty (no header line)")
        _check_header(path, header)


def _read_parquet(con: duckdb.DuckDBPyConnection, path: Path, raw: _RawTable) -> None:
    """A view over the file, numbered by its position in the file: the rows are read where they are (every
    later step streams them), never copied into a table, which at 100M rows would be spilled to disk."""
    literal = _literal(str(path))
    names = _parquet_names(path)
    if _FILE_ROW_NUMBER not in {name.lower() for name in names}:
        con.execute(
            f"CREATE VIEW {raw.table} AS SELECT * EXCLUDE ({_FILE_ROW_NUMBER}), {_FILE_ROW_NUMBER} + 1 AS {_ROW}, "
            f"CAST(NULL AS VARCHAR) AS {_RAW} FROM read_parquet({literal}, file_row_number = true)"
        )
        _check_header(path, names)
        return
    # the file has a column of that name: number a copy by its insertion order instead
    stage = f"{raw.table}_stage"
    con.execute(f"CREATE TABLE {stage} AS SELECT * FROM read_parquet({literal})")
    _check_header(path, names)
    con.execute(
        f"CREATE TABLE {raw.table} AS SELECT *, rowid + 1 AS {_ROW}, CAST(NULL AS VARCHAR) AS {_RAW} FROM {stage}"
    )
    con.execute(f"DROP TABLE {stage}")


def _read_whitespace(con: duckdb.DuckDBPyConnection, path: Path, raw: _RawTable) -> None:
    """Read a file whose fields are separated by runs of spaces/tabs, header on the first non-blank line.

    Lines are read as single text values and split in SQL (DuckDB's CSV sniffer cannot read such files);
    CRLF line ends and blank lines are tolerated.
    """
    lines, tokens = f"{raw.table}_lines", f"{raw.table}_tokens"
    con.execute(
        f"CREATE TABLE {lines} AS SELECT line FROM read_csv({_literal(str(path))}, columns = {{'line': 'VARCHAR'}}, "
        "header = false, delim = chr(1), quote = '', escape = '', auto_detect = false, "
        f"encoding = {_literal(raw.source.encoding)})"
    )
    con.execute(
        f"CREATE TABLE {tokens} AS SELECT row_number() OVER (ORDER BY rowid) AS line_no, "
        f"regexp_split_to_array(trim(line, {_BLANKS}), '[ \\t]+') AS fields FROM {lines} "
        f"WHERE trim(coalesce(line, ''), {_BLANKS}) <> ''"
    )
    header_row = con.execute(f"SELECT fields FROM {tokens} WHERE line_no = 1").fetchall()
    if not header_row:
        raise InputFileError(f"{path}: file is empty (no header line)")
    header = list(header_row[0][0])
    _check_header(path, header)
    selects = ", ".join(f"fields[{i + 1}] AS {_ident(name)}" for i, name in enumerate(header))
    con.execute(
        f"CREATE TABLE {raw.table} AS SELECT {selects}, line_no - 1 AS {_ROW}, "
        f"CAST(NULL AS VARCHAR) AS {_RAW}, "
        f"len(fields) > {len(header)} AS __extra_fields FROM {tokens} WHERE line_no > 1 ORDER BY line_no"
    )
    raw.rows_with_extra_fields = con.execute(
        f"SELECT count(*) FROM {raw.table} WHERE __extra_fields"
    ).fetchall()[0][0]
    con.execute(f"ALTER TABLE {raw.table} DROP COLUMN __extra_fields")
    con.execute(f"DROP TABLE {tokens}")
    con.execute(f"DROP TABLE {lines}")


def _load_frame(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, raw: _RawTable) -> None:
    view = f"{raw.table}_frame"
    con.register(view, frame)
    try:  # a registered DataFrame has no rowid: copy it first, a table keeps the frame's row order
        con.execute(f"CREATE TABLE {raw.table}_stage AS SELECT * FROM {view}")
    finally:
        con.unregister(view)
    _check_header(Path(raw.label), [str(c) for c in frame.columns])
    con.execute(
        f"CREATE TABLE {raw.table} AS SELECT *, rowid + 1 AS {_ROW}, CAST(NULL AS VARCHAR) AS {_RAW} "
        f"FROM {raw.table}_stage"
    )
    con.execute(f"DROP TABLE {raw.table}_stage")
    raw.format = "dataframe"
    _describe(con, raw)
    if raw.rows_in == 0:
        raise InputFileError(f"{raw.label}: no data rows")


def _describe(con: duckdb.DuckDBPyConnection, raw: _RawTable) -> None:
    described = con.execute(f"DESCRIBE {raw.table}").fetchall()
    raw.types = {
        name: str(col_type) for name, col_type, *_ in described if name not in (_ROW, _RAW, _UNMATCHED)
    }
    raw.columns = list(raw.types)
    raw.rows_in = con.execute(f"SELECT count(*) FROM {raw.table}").fetchall()[0][0]


def _check_header(path: Path, names: Sequence[str]) -> None:
    """Column names must be unique ignoring case: otherwise a mapping could silently read the wrong one."""
    seen: dict[str, tuple[int, str]] = {}
    for position, name in enumerate(names, start=1):
        key = str(name).lower()
        if key in seen:
            first_position, first = seen[key]
            how = "twice" if first == name else "in two spellings that differ only in case"
            raise InputFileError(
                f"{path}: the header names column '{first}' (column {first_position}) and '{name}' (column "
                f"{position}) — the same name {how}; rename one so every column name is unique ignoring case"
            )
        seen[key] = (position, str(name))


def _parquet_names(path: Path) -> list[str]:
    """Column names as stored in a Parquet file (DuckDB renames names that differ only in case)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001 - DuckDB reads the file next and names the problem
        return []


def _first_line_of(path: Path, encoding: str) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            first = handle.readline(1 << 20)
            if encoding == "utf-16" and first.endswith(b"\n"):
                first += handle.read(1)  # the second byte of the UTF-16 newline
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the header line ({exc})") from None
    try:
        return first.decode(_PYTHON_ENCODING[encoding]).rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path}: line 1 is not valid {encoding} text (byte 0x{first[exc.start]:02x} at offset "
            f"{exc.start}); set `encoding:` on this source (utf-8, latin-1 or utf-16)"
        ) from None


_PYTHON_ENCODING = {"utf-8": "utf-8-sig", "latin-1": "latin-1", "utf-16": "utf-16"}


def _csv_header(
    con: duckdb.DuckDBPyConnection, path: Path, delimiter: str | None, encoding: str
) -> tuple[list[str], str]:
    """The header line's column names and the delimiter (given, else the most frequent candidate)."""
    if path.name.lower().endswith(".zst"):  # no zstd module in Python: DuckDB decompresses the first line
        first_line = con.execute(
            f"SELECT line FROM read_csv({_literal(str(path))}, columns = {{'line': 'VARCHAR'}}, header = false, "
            f"delim = chr(1), quote = '', escape = '', auto_detect = false, encoding = {_literal(encoding)}) "
            "LIMIT 1"
        ).fetchall()
        text = (first_line[0][0] or "") if first_line else ""
    else:
        text = _first_line_of(path, encoding)
    if not text.strip():
        raise InputFileError(f"{path}: the first line is empty; a CSV file starts with a header line")
    if delimiter is None:
        counts = {d: sum(len(row) - 1 for row in csv.reader([text], delimiter=d)) for d in _DELIMITERS}
        delimiter = max(_DELIMITERS, key=lambda d: counts[d]) if max(counts.values()) else ","
    names = next(csv.reader([text], delimiter=delimiter))
    names = [name.strip() or f"column{i}" for i, name in enumerate(names)]
    _check_header(path, names)
    return names, delimiter


def _read_csv(con: duckdb.DuckDBPyConnection, path: Path, delimiter: str | None, raw: _RawTable) -> None:
    """Read a CSV file into ``raw.table``: header, parsed rows and malformed lines, in file order.

    DuckDB parses the file with the header's columns and the dialect fixed (no sniffing, so a bad line cannot
    make the whole file unreadable) and stores lines it cannot parse in a rejects table; those become rows of
    their own with NULL columns and their raw text in ``__raw_line`` (reason ``malformed_row``). ``source_row``
    is the file line number minus the header line, for parsed and malformed rows alike. An unterminated quote
    swallows the rest of the file into one field, so the lines after it are read again without quoting.
    """
    encoding = raw.source.encoding
    header, delimiter = _csv_header(con, path, delimiter, encoding)
    columns = "{" + ", ".join(f"{_literal(name)}: 'VARCHAR'" for name in header) + "}"
    options = (
        f"columns = {columns}, header = false, auto_detect = false, delim = {_literal(delimiter)}, "
        f"encoding = {_literal(encoding)}, store_rejects = true, strict_mode = true, null_padding = false"
    )
    quoted = _scan_csv(con, path, f"{options}, quote = '\"', escape = '\"'", 1, f"{raw.table}_q")
    parts = [quoted]
    swallowed = con.execute(
        f"SELECT min(line) FROM {quoted}_rej_all WHERE error = 'UNQUOTED VALUE' "
        f"AND contains({_TRIMMED_LINE.format('csv_line')}, chr(10))"
    ).fetchall()[0][0]
    if swallowed is not None:
        con.execute(f"DELETE FROM {quoted} WHERE line > {int(swallowed)}")
        con.execute(f"DELETE FROM {quoted}_rej WHERE line > {int(swallowed)}")
        con.execute(
            f"UPDATE {quoted}_rej SET raw_line = rtrim(split_part(raw_line, chr(10), 1), chr(13)) "
            f"WHERE line = {int(swallowed)}"
        )
        parts.append(
            _scan_csv(con, path, f"{options}, quote = '', escape = ''", int(swallowed), f"{raw.table}_u")
        )
    names = ", ".join(_ident(name) for name in header)
    nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {_ident(name)}" for name in header)
    selects = []
    for part in parts:
        selects.append(f"SELECT {names}, line - 1 AS {_ROW}, CAST(NULL AS VARCHAR) AS {_RAW} FROM {part}")
        selects.append(
            f"SELECT {nulls}, CAST(line - 1 AS BIGINT) AS {_ROW}, raw_line AS {_RAW} FROM {part}_rej"
        )
    rejected = sum(con.execute(f"SELECT count(*) FROM {part}_rej").fetchall()[0][0] for part in parts)
    if rejected or len(parts) > 1:
        con.execute(f"CREATE TABLE {raw.table} AS {' UNION ALL '.join(selects)} ORDER BY {_ROW}")
    else:  # no malformed line: the parsed rows are in file order already
        con.execute(f"CREATE TABLE {raw.table} AS {selects[0]}")
    invalid = con.execute(
        " UNION ALL ".join(
            f"SELECT line, error FROM {part}_rej_all WHERE error = 'INVALID ENCODING'" for part in parts
        )
        + " ORDER BY line LIMIT 1"
    ).fetchall()
    if invalid:
        count = sum(
            con.execute(f"SELECT count(*) FROM {part}_rej_all WHERE error = 'INVALID ENCODING'").fetchall()[
                0
            ][0]
            for part in parts
        )
        raise InputFileError(
            f"{path}: line {invalid[0][0]} (and {count - 1:,} more) is not valid {encoding} text; set "
            "`encoding:` on this source (utf-8, latin-1 or utf-16)"
        )
    for part in parts:
        for suffix in ("", "_rej", "_rej_all", "_steps"):
            con.execute(f"DROP TABLE IF EXISTS {part}{suffix}")
    raw.malformed = con.execute(f"SELECT count(*) FROM {raw.table} WHERE {_RAW} IS NOT NULL").fetchall()[0][0]


def _scan_csv(con: duckdb.DuckDBPyConnection, path: Path, options: str, skip: int, tag: str) -> str:
    """Parse ``path`` from line ``skip + 1`` into ``tag`` (columns + file ``line``) and ``tag_rej``.

    DuckDB drops the lines it rejects, so a parsed row's line number is its position plus the number of
    rejected lines before it (an as-of join on the rejects, as few as they usually are).
    """
    con.execute(
        f"CREATE TABLE {tag}_raw AS SELECT * FROM read_csv({_literal(str(path))}, {options}, skip = {skip}, "
        f"rejects_table = '{tag}_errors', rejects_scan = '{tag}_scans')"
    )
    con.execute(f"CREATE TABLE {tag}_rej_all AS SELECT line, error_type AS error, csv_line FROM {tag}_errors")
    con.execute(f"DROP TABLE {tag}_errors")
    con.execute(f"DROP TABLE {tag}_scans")
    malformed = ", ".join(_literal(e) for e in _MALFORMED_ERRORS)
    con.execute(
        f"CREATE TABLE {tag}_rej AS SELECT line, min(error) AS error, "
        f"{_TRIMMED_LINE.format('first(csv_line)')} AS raw_line "
        f"FROM {tag}_rej_all WHERE error IN ({malformed}) GROUP BY line"
    )
    if not con.execute(f"SELECT count(*) FROM {tag}_rej_all").fetchall()[0][0]:  # the usual case
        con.execute(f"CREATE TABLE {tag} AS SELECT *, rowid + {skip + 1} AS line FROM {tag}_raw")
        con.execute(f"DROP TABLE {tag}_raw")
        return tag
    con.execute(
        # consecutive rejected lines share one kept_before: keep the step with all of them
        f"CREATE TABLE {tag}_steps AS SELECT kept_before, max(rejected) AS rejected FROM ("
        f"SELECT line - {skip + 1} - (row_number() OVER (ORDER BY line) - 1) AS kept_before, "
        f"row_number() OVER (ORDER BY line) AS rejected FROM {tag}_rej) GROUP BY kept_before"
    )
    con.execute(
        f"CREATE TABLE {tag} AS SELECT r.* EXCLUDE (position), CAST({skip + 1} + r.position + "
        f"coalesce(s.rejected, 0) AS BIGINT) AS line FROM (SELECT *, rowid AS position FROM {tag}_raw) r "
        f"ASOF LEFT JOIN {tag}_steps s ON r.position >= s.kept_before ORDER BY r.position"
    )
    con.execute(f"DROP TABLE {tag}_raw")
    return tag


# --------------------------------------------------------------------------------------------------------------
# Lookups (``joins:``) and row filters (``where:`` / ``exclude:``)


def _read_lookups(con: duckdb.DuckDBPyConnection, raws: Sequence[_RawTable], resolve: Any) -> None:
    """Load the lookup file of every ``joins:`` entry of every source (``raw_<i>_lookup_<j>``)."""
    for raw in raws:
        for j, join in enumerate(getattr(raw.source, "joins", None) or []):
            lookup = _RawTable(
                table=f"{raw.table}_lookup_{j}",
                name=_stem(join.path),
                label=str(resolve(join.path)),
                config_key=f"{raw.config_key}.joins.{j}",
                source=join,
            )
            _read_file(con, Path(lookup.label), join.format, join.delimiter, lookup)
            raw.lookups.append(lookup)


def _apply_joins(con: duckdb.DuckDBPyConnection, raw: _RawTable, max_bad_share: float) -> None:
    """Join the source's lookups onto its raw table, in order, and make the result the source's raw table.

    A left join on trimmed text (the lookup key unique, so the row count never changes); the index of the
    first join a row finds no match in is kept in ``__unmatched_join`` (reason ``unmatched_lookup``). The
    brought columns then count as the source's own: the role mapping, filters, duplicate key and the
    quarantine file see them.
    """
    joins: list[SourceJoin] = getattr(raw.source, "joins", None) or []
    if not joins:
        return
    rows_in = raw.rows_in
    table = f"{raw.table}_joined_0"
    con.execute(f"CREATE TABLE {table} AS SELECT *, CAST(NULL AS INTEGER) AS {_UNMATCHED} FROM {raw.table}")
    for j, (join, lookup) in enumerate(zip(joins, raw.lookups, strict=True)):
        where = f"{raw.config_key}.joins.{j}"
        lookup.nulls = raw.nulls
        on = _find_column(raw, join.on_column, f"{where}.on_column")
        key = _find_column(lookup, join.key, f"{where}.key")
        brought = [_find_column(lookup, c, f"{where}.columns.{i}") for i, c in enumerate(join.columns)]
        present = {c.lower() for c in raw.columns}
        for i, column in enumerate(brought):
            if column.lower() in present:
                raise ConfigError(
                    f"{where}.columns.{i}: '{column}' of {lookup.label} is already a column of {raw.label} "
                    "(or of an earlier join); leave it out of columns"
                )
        key_text = _text_expr(lookup, key)
        without_key = con.execute(f"SELECT count(*) FROM {lookup.table} WHERE {key_text} IS NULL").fetchall()[
            0
        ][0]
        repeated, example = con.execute(
            f"SELECT count(*), min(k) FROM (SELECT k FROM (SELECT {key_text} AS k FROM {lookup.table}) "
            "WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1)"
        ).fetchall()[0]
        if repeated:
            raise InputFileError(
                f"{lookup.label}: column '{key}' ({where}.key) is not a unique key: {repeated:,} "
                f"{'value appears' if repeated == 1 else 'values appear'} more than once (e.g. {example!r}); "
                "a lookup needs one row per key"
            )
        joined = f"{raw.table}_joined_{j + 1}"
        con.execute(
            f"""
            CREATE TABLE {joined} AS
            SELECT b.* EXCLUDE ({_UNMATCHED}, __on), {", ".join(f"l.{_ident(c)}" for c in brought)},
                CASE WHEN b.{_UNMATCHED} IS NULL AND l.__key IS NULL THEN {j} ELSE b.{_UNMATCHED} END
                    AS {_UNMATCHED}
            FROM (SELECT *, {_text_expr(raw, on)} AS __on FROM {table}) b
            LEFT JOIN (
                SELECT {key_text} AS __key, {", ".join(_ident(c) for c in brought)} FROM {lookup.table}
                WHERE {key_text} IS NOT NULL
            ) l ON b.__on = l.__key
            ORDER BY b.{_ROW}
            """
        )
        con.execute(f"DROP TABLE {table}")
        table = raw.table = joined
        _describe(con, raw)
        unmatched = con.execute(
            f"SELECT count(*) FROM {table} WHERE {_UNMATCHED} = {j} AND {_RAW} IS NULL"
        ).fetchall()[0][0]
        if unmatched > max_bad_share * rows_in:
            raise InputFileError(
                f"{raw.label}: {unmatched:,} of {rows_in:,} rows find no row of {lookup.label} whose "
                f"'{key}' equals their '{on}' ({where}) — wrong on_column or key?"
            )
        raw.joins_report.append(
            {
                "path": lookup.label,
                "format": lookup.format,
                "on_column": on,
                "key": key,
                "columns": brought,
                "lookup_rows": int(lookup.rows_in),
                "lookup_rows_without_key": int(without_key),  # empty key or a malformed line: never matched
                "rows_unmatched": int(unmatched),
            }
        )
    if raw.rows_in != rows_in:  # pragma: no cover - a unique key cannot multiply rows
        raise RuntimeError(f"join changed the row count of {raw.label}: {rows_in} -> {raw.rows_in}")


def _filter_expr(raw: _RawTable) -> str:
    """True for a row the source's ``where:`` / ``exclude:`` leaves out (compared as trimmed text; an empty
    value is in no list, so ``where:`` leaves it out and ``exclude:`` keeps it)."""
    source = raw.source
    conditions = []
    for section in ("where", "exclude"):
        for column, values in (getattr(source, section, None) or {}).items():
            actual = _find_column(raw, column, f"{raw.config_key}.{section}.{column}")
            listed = ", ".join(_literal(str(v).strip()) for v in values)
            member = f"coalesce({_text_expr(raw, actual)} IN ({listed}), false)"
            conditions.append(f"NOT {member}" if section == "where" else member)
    return f"({' OR '.join(conditions)})" if conditions else "false"


def _duplicate_key_expr(raw: _RawTable, rules: CleaningRules) -> str:
    """The ``cleaning.duplicates.key`` columns of a row as a text list (NULL when one is empty)."""
    if not isinstance(rules.duplicates, DuplicateKey):
        return "CAST(NULL AS VARCHAR[])"
    parts = [
        _text_expr(raw, _find_column(raw, column, f"data.cleaning.duplicates.key.{i}"))
        for i, column in enumerate(rules.duplicates.key)
    ]
    empty = " OR ".join(f"{part} IS NULL" for part in parts)
    return f"CASE WHEN {empty} THEN CAST(NULL AS VARCHAR[]) ELSE list_value({', '.join(parts)}) END"


def _find_column(raw: _RawTable, column: str, what: str) -> str:
    """The actual name of ``column`` in ``raw`` (exact, else the one column equal ignoring case)."""
    if column in raw.types:
        return column
    matches = [col for col in raw.columns if col.lower() == column.lower()]
    if len(matches) == 1:  # DuckDB identifiers are case-insensitive anyway
        return matches[0]
    raise InputFileError(
        f"{raw.label}: column '{column}' ({what}) not found; columns are: {', '.join(raw.columns)}"
    )


# --------------------------------------------------------------------------------------------------------------
# Mapping and parsing


def _map_columns(raw: _RawTable, roles: Sequence[str]) -> dict[str, str]:
    """Role -> actual column name in ``raw``; InputFileError naming the file when a column is absent."""
    mapping = {}
    for role, column in raw.source.columns.items():
        if role not in roles:
            raise ConfigError(f"{raw.config_key}.columns: unknown role '{role}' (roles: {', '.join(roles)})")
        mapping[role] = _find_column(raw, column, f"role {role}")
    return mapping


def _base_type(col_type: str) -> str:
    return col_type.split("(")[0].strip().upper()


def _text_expr(raw: _RawTable, column: str) -> str:
    """Trimmed text, NULL when empty or a null token (``cleaning.null_values``). Never goes through a number:
    ids keep leading zeros."""
    trimmed = (
        _ident(raw.trimmed[column])
        if column in raw.trimmed
        else f"trim(CAST({_ident(column)} AS VARCHAR), {_BLANKS})"
    )
    tokens = ", ".join(_literal(token) for token in sorted({"", *raw.nulls}))
    return f"CASE WHEN {trimmed} IN ({tokens}) THEN NULL ELSE {trimmed} END"


def _trimmed_from(raw: _RawTable, mapping: dict[str, str]) -> str:
    """``FROM`` source of the raw table with each mapped column's trimmed text computed once per row
    (:func:`_text_expr` then reads it twice: the null-token test and the value)."""
    raw.trimmed = {column: f"__trimmed_{i}" for i, column in enumerate(dict.fromkeys(mapping.values()))}
    extra = ", ".join(
        f"trim(CAST({_ident(column)} AS VARCHAR), {_BLANKS}) AS {_ident(alias)}"
        for column, alias in raw.trimmed.items()
    )
    return f"(SELECT *, {extra} FROM {raw.table})"


def _number_expr(raw: _RawTable, column: str) -> str:
    if _base_type(raw.types[column]) in _NUMERIC_TYPES:
        return f"CAST({_ident(column)} AS DOUBLE)"
    return f"try_cast({_text_expr(raw, column)} AS DOUBLE)"


def _timestamp_expr(raw: _RawTable, column: str, timestamp_format: str | None) -> str:
    base = _base_type(raw.types[column])
    if base == "DATE" or base.startswith("TIMESTAMP"):
        return f"CAST({_ident(column)} AS TIMESTAMP)"
    text = _text_expr(raw, column)
    if raw.dialect == "spark":
        if timestamp_format:
            pattern = java_pattern(timestamp_format, f"{raw.config_key}.timestamp_format")
            return f"CAST(try_to_timestamp({text}, {_literal(pattern)}) AS TIMESTAMP)"
        # DuckDB's forms only (Spark also reads '2024', '2024-05' or '2024-01-01 10'), and its slashes
        dashed = f"regexp_replace({text}, {_literal(_SLASHED_DATE)}, '$1-$2-$3')"
        return (
            f"CASE WHEN regexp_matches({dashed}, {_literal(_ISO_TIMESTAMP)}) "
            f"THEN CAST(try_cast({dashed} AS TIMESTAMPTZ) AS TIMESTAMP) END"
        )
    if timestamp_format:
        return f"CAST(try_strptime({text}, {_literal(timestamp_format)}) AS TIMESTAMP)"
    # via TIMESTAMPTZ so an explicit offset is honoured (converted to UTC); plain values are read as UTC
    return f"CAST(try_cast({text} AS TIMESTAMPTZ) AS TIMESTAMP)"


def _check_format_and_pattern(con: duckdb.DuckDBPyConnection, raw: _RawTable) -> None:
    source = raw.source
    if source.timestamp_format and raw.dialect == "spark":
        java_pattern(source.timestamp_format, f"{raw.config_key}.timestamp_format")
    elif source.timestamp_format:
        try:
            con.execute("SELECT try_strptime('', ?)", [source.timestamp_format]).fetchall()
        except duckdb.Error as exc:
            raise ConfigError(f"{raw.config_key}.timestamp_format: {_first_line(exc)}") from None
    pattern = getattr(source, "non_product_pattern", None)
    if pattern:
        try:
            con.execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
        except duckdb.Error as exc:
            raise ConfigError(
                f"{raw.config_key}.non_product_pattern: invalid regular expression ({_first_line(exc)})"
            ) from None


def _check_required_roles(raw: _RawTable) -> None:
    source = raw.source
    columns = source.columns
    key = raw.config_key
    unknown = [role for role in columns if role not in TRANSACTION_ROLES]
    if unknown:
        raise ConfigError(
            f"{key}.columns: unknown role '{unknown[0]}' (roles: {', '.join(TRANSACTION_ROLES)})"
        )
    for role in ("customer_id", "timestamp"):
        if role not in columns:
            raise ConfigError(f"{key}.columns: role '{role}' must be mapped")
    if "amount" not in columns and not ("quantity" in columns and "unit_price" in columns):
        raise ConfigError(f"{key}.columns: map 'amount', or both 'quantity' and 'unit_price'")
    if all(role in columns for role in MARGIN_ROLES):
        raise ConfigError(f"{key}.columns: map 'cost' or 'margin', not both (margin = amount - cost)")
    if (source.non_product_codes or source.non_product_pattern) and "product_id" not in columns:
        raise ConfigError(f"{key}: non_product_codes/non_product_pattern need columns.product_id")
    if source.cancellation_prefix and "order_id" not in columns:
        raise ConfigError(f"{key}: cancellation_prefix needs columns.order_id")


def _typed_transactions(
    con: duckdb.DuckDBPyConnection, raw: _RawTable, index: int, rules: CleaningRules, *, refuse: bool = True
) -> str:
    """Create the view ``typed_<index>``: one row per raw row with parsed roles, per-role failure flags, the
    lookup and filter flags and the duplicate key (a view: the rows are parsed as they stream into the
    refusal counts and the classification, never stored).

    With ``refuse`` the file is refused here when one role fails on too many rows; without it the caller
    runs :func:`_refuse_source` on the classified rows instead (one parsing pass fewer)."""
    source: TransactionSource = raw.source  # type: ignore[assignment]
    max_bad_share = rules.max_bad_share
    _check_format_and_pattern(con, raw)
    mapping = _map_columns(raw, TRANSACTION_ROLES)
    source_table = _trimmed_from(raw, mapping)
    unmatched = f"{_UNMATCHED} IS NOT NULL" if source.joins else "false"

    def text(role: str) -> str:
        return _text_expr(raw, mapping[role]) if role in mapping else "CAST(NULL AS VARCHAR)"

    def number(role: str) -> str:
        return _number_expr(raw, mapping[role]) if role in mapping else "CAST(NULL AS DOUBLE)"

    amount = number("amount") if "amount" in mapping else f"({number('quantity')} * {number('unit_price')})"
    # a malformed line has no fields, an unmatched or filtered row is set aside before its values are
    # examined: they fail no role (and do not count towards refusing the file)
    examined = "NOT (is_malformed OR is_unmatched OR is_filtered)"
    fails = [
        f"({examined} AND customer_id IS NULL) AS fail_customer_id",
        f"({examined} AND timestamp IS NULL) AS fail_timestamp",
    ]
    for role in ("amount", "quantity", "unit_price", "cost", "margin"):
        parsed = "amount_parsed" if role == "amount" else role
        fails.append(
            f"({examined} AND {_literal(role in mapping)} AND NOT coalesce(isfinite({parsed}), false)) "
            f"AS fail_{role}"
        )
    non_product = []
    if source.non_product_codes:
        codes = ", ".join(_literal(code.strip().upper()) for code in source.non_product_codes)
        non_product.append(f"upper(product_id) IN ({codes})")
    if source.non_product_pattern:
        non_product.append(f"regexp_matches(product_id, {_literal(source.non_product_pattern)})")
    non_product_expr = f"coalesce({' OR '.join(non_product)}, false)" if non_product else "false"
    if source.cancellation_prefix:
        cancellation = f"coalesce(starts_with(order_id, {_literal(source.cancellation_prefix)}), false)"
    else:
        cancellation = "false"
    table = f"typed_{index}"
    sql = f"""
        CREATE VIEW {table} AS
        WITH parsed AS (
            SELECT
                {index} AS source_index,
                {_literal(raw.name)} AS source,
                {_ROW} AS source_row,
                {text("customer_id")} AS customer_id,
                {text("order_id")} AS order_id,
                {_timestamp_expr(raw, mapping["timestamp"], source.timestamp_format)} AS timestamp,
                {amount} AS amount_parsed,
                {number("quantity")} AS quantity,
                {number("unit_price")} AS unit_price,
                {number("cost")} AS cost,
                {number("margin")} AS margin,
                {text("product_id")} AS product_id,
                {text("channel")} AS channel,
                {_RAW} IS NOT NULL AS is_malformed,
                {unmatched} AS is_unmatched,
                {_filter_expr(raw)} AS is_filtered,
                {_duplicate_key_expr(raw, rules)} AS duplicate_key
            FROM {source_table}
        )
        SELECT
            source_index, source, source_row, customer_id, order_id, timestamp,
            amount_parsed AS amount, quantity, unit_price, cost, margin, product_id, channel, is_malformed,
            is_unmatched, is_filtered, duplicate_key,
            {", ".join(fails)},
            {non_product_expr} AS is_non_product,
            {cancellation} AS is_cancellation
        FROM parsed
    """
    _create_parsed(con, raw, sql)
    if refuse:
        _refuse_mostly_bad(con, raw, table, mapping, source.timestamp_format, max_bad_share)
    return table


def _refuse_source(con: duckdb.DuckDBPyConnection, raw: _RawTable, index: int, rules: CleaningRules) -> None:
    """:func:`_refuse_mostly_bad` for a source whose typed rows were not counted before classification:
    the same counts, read from its classified rows (which keep the ``fail_*`` flags)."""
    mapping = _map_columns(raw, TRANSACTION_ROLES)
    rows = f"(SELECT * FROM classified_rows WHERE source_index = {index})"
    _refuse_mostly_bad(con, raw, rows, mapping, raw.source.timestamp_format, rules.max_bad_share)


def _refuse_mostly_bad(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTable,
    table: str,
    mapping: dict[str, str],
    timestamp_format: str | None,
    max_bad_share: float,
) -> None:
    """Refuse the whole file when one role fails on more than max_bad_share of rows (wrong column/type), or
    more than that share of its lines are malformed (wrong delimiter or not a CSV file)."""
    if raw.malformed > max_bad_share * raw.rows_in:
        first_row, first_text = con.execute(
            f"SELECT {_ROW}, {_RAW} FROM {raw.table} WHERE {_RAW} IS NOT NULL ORDER BY {_ROW} LIMIT 1"
        ).fetchall()[0]
        raise InputFileError(
            f"{raw.label}: {raw.malformed:,} of {raw.rows_in:,} lines are malformed (wrong number of fields "
            f"or an unterminated quote; first: line {first_row + 1}, {first_text[:80]!r}) — wrong delimiter? "
            f"(columns read from the header: {', '.join(raw.columns)})"
        )
    roles = [r for r in _FAIL_ROLES if r in mapping]
    try:  # the first statement that evaluates the view's expressions on the rows
        counts = con.execute(
            f"SELECT {', '.join(f'count(*) FILTER (WHERE fail_{r})' for r in roles)} FROM {table}"
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise InputFileError(
            f"{raw.label}: cannot interpret the mapped columns ({_first_line(exc)})"
        ) from None
    what = {"customer_id": "empty — wrong column?", "timestamp": _timestamp_words(timestamp_format)}
    for role, bad in zip(roles, counts, strict=True):
        if bad > max_bad_share * raw.rows_in:
            raise InputFileError(
                f"{raw.label}: column '{mapping[role]}' (role {role}): {bad:,} of {raw.rows_in:,} rows are "
                f"{what.get(role, 'not numbers — wrong column or type?')}"
            )


# --------------------------------------------------------------------------------------------------------------
# Classification


def _reason_conditions(rules: CleaningRules, max_date: dt.date) -> dict[QuarantineReason, str]:
    """SQL condition per reason on the unioned typed rows (before precedence is applied)."""
    R = QuarantineReason
    outliers = rules.outliers
    conditions = {
        R.MALFORMED_ROW: "is_malformed",
        SourceReason.UNMATCHED_LOOKUP: "is_unmatched",
        SourceReason.FILTERED: "is_filtered",
        R.MISSING_CUSTOMER_ID: "fail_customer_id",
        R.UNPARSEABLE_TIMESTAMP: "fail_timestamp",
        R.TIMESTAMP_OUT_OF_RANGE: f"coalesce(timestamp < TIMESTAMP '{rules.min_date.isoformat()}', false)",
        R.FUTURE_TIMESTAMP: f"coalesce(CAST(timestamp AS DATE) > DATE '{max_date.isoformat()}', false)",
        R.NON_NUMERIC_AMOUNT: (
            "(fail_amount OR fail_quantity OR fail_unit_price OR fail_cost OR fail_margin "
            "OR NOT coalesce(isfinite(amount), false))"
        ),
        R.NON_PRODUCT: "is_non_product",
        R.DUPLICATE_ROW: "is_duplicate",  # computed in a second step, among rows passing earlier reasons
        R.ZERO_AMOUNT: "coalesce(amount = 0, false)" if rules.zero_amount == "quarantine" else "false",
        R.RETURN: "is_return" if rules.returns == "quarantine" else "false",
        R.OUTLIER_AMOUNT: (
            f"coalesce(abs(amount) > {float(outliers.quarantine_above)!r}, false)"
            if outliers.quarantine_above is not None
            else "false"
        ),
    }
    missing = set(ROW_PRECEDENCE) - set(conditions)
    if missing:  # pragma: no cover - guards schema.py and this module drifting apart
        raise RuntimeError(f"ingest has no rule for quarantine reasons {sorted(missing)}")
    return conditions


def _duplicate_condition(rules: CleaningRules) -> str:
    if isinstance(rules.duplicates, DuplicateKey):
        return "duplicate_key IS NOT NULL"  # rows with an empty key column are kept
    if rules.duplicates == "keep":
        return "false"
    if rules.duplicates == "drop_identical":
        return "true"
    return "order_id IS NOT NULL"  # auto: only order lines repeated under the same order id


def _classify(
    con: duckdb.DuckDBPyConnection,
    typed_tables: Sequence[str],
    rules: CleaningRules,
    max_date: dt.date,
    workdir: Path,
    labels: Sequence[str],
) -> None:
    """Create ``classified_rows``: every row with its single ``reason`` (NULL = kept), signed amounts, flags.

    One query from the typed views, written to a Parquet file in ``workdir`` and read back through a view:
    the only copy of the rows ingest keeps, compressed (a DuckDB table of 100M rows would be spilled
    uncompressed). It holds only the columns the outputs and the report read, and ``is_repeat``: the row
    repeats an earlier kept row of the same source on every role column (``identical_rows_kept``), and the
    per-role ``fail_*`` flags (for :func:`_refuse_source`). ``labels`` name the files in an error.
    """
    conditions = _reason_conditions(rules, max_date)
    dup_rank = ROW_PRECEDENCE.index(QuarantineReason.DUPLICATE_ROW)
    before_dup = [conditions[r] for r in ROW_PRECEDENCE[:dup_rank]]
    eligible = f"NOT ({' OR '.join(before_dup)})" if before_dup else "true"
    role_identity = ", ".join(["source", *_ROLE_COLUMNS])
    by_key = isinstance(rules.duplicates, DuplicateKey)
    identity = "source, duplicate_key" if by_key else role_identity
    if by_key:
        # the duplicate window is over the key: repeats of the role columns need their own window
        repeat = (
            f"CASE WHEN reason IS NULL THEN row_number() OVER (PARTITION BY reason IS NULL, {role_identity} "
            "ORDER BY source_row) > 1 ELSE false END"
        )
    else:
        # same window: the reasons ranked below duplicate_row (zero amount, return, outlier amount) and the
        # duplicate condition depend on the role columns only, so an eligible row's earlier twins are kept
        # exactly when it is kept and is not a duplicate; the earliest twin is kept whenever this row is
        repeat = "dup_eligible AND __n > 1"
    union = " UNION ALL ".join(f"SELECT * FROM {t}" for t in typed_tables)
    reason_case = " ".join(f"WHEN {conditions[r]} THEN '{r.value}'" for r in ROW_PRECEDENCE)
    target = workdir / "classified.parquet"
    query = f"""
        WITH unioned AS ({union}),
        flagged AS (
            SELECT *,
                coalesce(amount < 0 OR quantity < 0, false) OR is_cancellation AS is_return,
                {eligible} AS dup_eligible
            FROM unioned
        ),
        numbered AS (
            SELECT *, row_number() OVER (PARTITION BY dup_eligible, {identity} ORDER BY source_row) AS __n
            FROM flagged
        ),
        checked AS (
            SELECT *,
                CASE WHEN dup_eligible AND ({_duplicate_condition(rules)}) THEN __n > 1 ELSE false END
                    AS is_duplicate
            FROM numbered
        ),
        reasoned AS (
            SELECT *,
                CASE {reason_case} ELSE NULL END AS reason,
                CASE WHEN is_return THEN -abs(amount) ELSE amount END AS amount_signed,
                CASE WHEN is_return THEN -abs(quantity) ELSE quantity END AS quantity_signed,
                {_MARGIN_SIGNED} AS margin_signed
            FROM checked
        )
        SELECT source_index, source, source_row, customer_id, order_id, timestamp, product_id, channel,
            is_return, reason, amount_signed, quantity_signed, margin_signed, {repeat} AS is_repeat,
            {", ".join(f"fail_{role}" for role in _FAIL_ROLES)}
        FROM reasoned
    """
    try:
        con.execute(f"COPY ({query}) TO {_literal(str(target))} (FORMAT parquet)")
    except duckdb.Error as exc:  # the first statement that reads every row of every source
        raise InputFileError(
            f"{', '.join(labels)}: cannot interpret the mapped columns ({_first_line(exc)})"
        ) from None
    for table in typed_tables:
        con.execute(f"DROP VIEW {table}")
    con.execute(f"CREATE VIEW classified_rows AS SELECT * FROM read_parquet({_literal(str(target))})")


def _flag_outliers(con: duckdb.DuckDBPyConnection, rules: CleaningRules) -> dict[str, Any]:
    """Create the view ``classified``: ``classified_rows`` with ``is_outlier`` (meaningful on kept rows
    only); return the rule actually applied (for the report)."""
    outliers = rules.outliers
    if outliers.flag_above is not None:
        threshold = float(outliers.flag_above)
        applied: dict[str, Any] = {"method": "flag_above", "flag_threshold_amount": threshold}
    else:
        median, mad = con.execute(
            "WITH k AS (SELECT ln(1 + abs(amount_signed)) AS x FROM classified_rows WHERE reason IS NULL) "
            "SELECT median(x), median(abs(x - (SELECT median(x) FROM k))) FROM k"
        ).fetchall()[0]
        applied = {"method": "mad", "log1p_median": median, "log1p_mad": mad}
        if median is None or not mad:  # no kept rows, or no spread: nothing stands out
            threshold = None
        else:
            cut = median + outliers.flag_mad * 1.4826 * mad
            threshold = float(con.execute("SELECT exp(?) - 1", [cut]).fetchall()[0][0])
        applied["flag_threshold_amount"] = threshold
    flag = "false" if threshold is None else f"abs(amount_signed) > {threshold!r}"
    # only kept rows are ever read with their flag (clean_out, the report), so it needs no CASE on the reason
    con.execute(
        f"CREATE VIEW classified AS SELECT *, CAST({flag} AS BOOLEAN) AS is_outlier FROM classified_rows"
    )
    return applied


# --------------------------------------------------------------------------------------------------------------
# Orchestration and report


def _ingest_tables(
    con: duckdb.DuckDBPyConnection,
    raws: Sequence[_RawTable],
    rules: CleaningRules,
    *,
    today: dt.date | None,
    customers: _RawTable | None,
    invoices: _RawTable | None = None,
    interactions: _RawTable | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Clean loaded raw tables into ``clean_out`` / ``quarantine_out`` (+ customers, + invoices,
    + interactions); return the DQ report (an ``invoices`` / ``interactions`` section only with that file, so
    a report without them is unchanged). ``workdir`` holds the classified rows (see :func:`_classify`) and
    must outlive the queries on ``clean_out`` / ``quarantine_out``."""
    max_date = rules.max_date or today or dt.date.today()
    extra = [table for table in (customers, invoices, interactions) if table is not None]
    for raw in [*raws, *extra]:
        raw.nulls = tuple(rules.null_values)
    typed = []
    last = len(raws) - 1
    for index, raw in enumerate(raws):
        _apply_joins(con, raw, rules.max_bad_share)
        # nothing reads or refuses a file between the last source's parsing and the classification, so its
        # refusal counts come from the classified rows: the same checks in the same order, one pass fewer
        typed.append(_typed_transactions(con, raw, index, rules, refuse=index < last))
    _classify(con, typed, rules, max_date, workdir, [raw.label for raw in raws])
    _refuse_source(con, raws[last], last, rules)
    outlier_rule = _flag_outliers(con, rules)

    with_margin = _with_margin(raws)
    clean_select = ", ".join(
        f"CAST({_CLEAN_SOURCES.get(col, col)} AS {col_type}) AS {col}"
        for col, col_type in clean_transaction_columns(with_margin).items()
    )
    con.execute(f"CREATE VIEW clean_out AS SELECT {clean_select} FROM classified WHERE reason IS NULL")
    _build_quarantine(con, raws, "classified", "quarantine_out", with_source=True)

    report = _transaction_report(con, raws, rules, max_date, today, outlier_rule)
    if with_margin:
        report["margin"] = _margin_report(con)
    report["customers_file"] = _ingest_customers(con, customers, rules) if customers is not None else None
    if invoices is not None:
        report["invoices"] = _ingest_invoices(con, invoices, rules)
    if interactions is not None:
        report["interactions"] = _ingest_interactions(
            con, interactions, rules, max_date, with_customers=customers is not None
        )
    return report


_CLEAN_SOURCES = {"amount": "amount_signed", "quantity": "quantity_signed", "margin": "margin_signed"}
#: a return nets its margin as its amount nets: a mapped cost is reversed with the amount (margin of a return
#: = -(|amount| - |cost|)); a mapped margin changes sign exactly when the amount does (a positive amount made
#: negative by a negative quantity or a cancellation), so a file that records returns signed keeps its margins
_MARGIN_SIGNED = (
    "CASE WHEN cost IS NOT NULL THEN (CASE WHEN is_return THEN -abs(amount) ELSE amount END)"
    " - (CASE WHEN is_return THEN -abs(cost) ELSE cost END)"
    " WHEN is_return AND amount > 0 THEN -margin ELSE margin END"
)


def _with_margin(raws: Sequence[_RawTable]) -> bool:
    """True when the sources map ``cost`` or ``margin`` (all of them do, or none: see _transaction_tables)."""
    return any(role in raw.source.columns for raw in raws for role in MARGIN_ROLES)


def _margin_report(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Margin of the kept rows: total, returns' share of it and the lines sold below cost."""
    total, returns_margin, negative = con.execute(
        """
        SELECT round(coalesce(fsum(margin_signed), 0), 6),
               round(coalesce(fsum(margin_signed) FILTER (WHERE is_return), 0), 6),
               count(*) FILTER (WHERE margin_signed < 0 AND NOT is_return)
        FROM classified WHERE reason IS NULL
        """
    ).fetchall()[0]
    return {
        "margin_total_kept": float(total),
        "returns_margin": float(returns_margin),
        "negative_margin_lines": int(negative),
    }


def _build_quarantine(
    con: duckdb.DuckDBPyConnection, raws: Sequence[_RawTable], classified: str, out: str, *, with_source: bool
) -> None:
    """Original columns as text (union by name over sources), then source, source_row, reason."""
    union_columns: list[str] = []
    seen: set[str] = set()
    for raw in raws:
        for col in raw.columns:
            if col.lower() not in seen:
                seen.add(col.lower())
                union_columns.append(col)
    parts = []
    for index, raw in enumerate(raws):
        own = {col.lower(): col for col in raw.columns}
        selects = []
        for col in union_columns:
            alias = f"{col}_original" if col.lower() in _QUARANTINE_TAIL else col
            value = (
                f"CAST(r.{_ident(own[col.lower()])} AS VARCHAR)"
                if col.lower() in own
                else "CAST(NULL AS VARCHAR)"
            )
            selects.append(f"{value} AS {_ident(alias)}")
        tail = f"{index} AS source_index, c.source, " if with_source else ""
        selects.append(f"{tail}r.{_ROW} AS source_row, c.reason, r.{_RAW} AS raw_line")
        source_filter = f"AND c.source_index = {index}" if with_source else ""
        parts.append(
            f"SELECT {', '.join(selects)} FROM {raw.table} r JOIN {classified} c "
            f"ON c.source_row = r.{_ROW} {source_filter} WHERE c.reason IS NOT NULL"
        )
    con.execute(f"CREATE VIEW {out} AS {' UNION ALL '.join(parts)}")


def _by_reason(rows: Sequence[tuple[str, int]], reasons: Any = ROW_PRECEDENCE) -> dict[str, int]:
    counts = dict(rows)
    return {r.value: int(counts[r.value]) for r in reasons if counts.get(r.value)}


def _transaction_report(
    con: duckdb.DuckDBPyConnection,
    raws: Sequence[_RawTable],
    rules: CleaningRules,
    max_date: dt.date,
    today: dt.date | None,
    outlier_rule: dict[str, Any],
) -> dict[str, Any]:
    rows_in = sum(raw.rows_in for raw in raws)
    (
        kept,
        quarantined,
        customers,
        date_min,
        date_max,
        amount_total,
        returns_n,
        returns_amount,
        outliers_n,
        zero_kept,
        identical_kept,
    ) = con.execute(
        """
        SELECT count(*) FILTER (WHERE reason IS NULL),
               count(*) FILTER (WHERE reason IS NOT NULL),
               count(DISTINCT customer_id) FILTER (WHERE reason IS NULL),
               min(CAST(timestamp AS DATE)) FILTER (WHERE reason IS NULL),
               max(CAST(timestamp AS DATE)) FILTER (WHERE reason IS NULL),
               round(coalesce(fsum(amount_signed) FILTER (WHERE reason IS NULL), 0), 6),
               count(*) FILTER (WHERE reason IS NULL AND is_return),
               round(coalesce(fsum(amount_signed) FILTER (WHERE reason IS NULL AND is_return), 0), 6),
               count(*) FILTER (WHERE reason IS NULL AND is_outlier),
               count(*) FILTER (WHERE reason IS NULL AND amount_signed = 0),
               count(*) FILTER (WHERE reason IS NULL AND is_repeat)
        FROM classified
        """
    ).fetchall()[0]
    if kept + quarantined != rows_in:
        raise RuntimeError(
            f"ingest invariant violated: rows_in {rows_in} != kept {kept} + quarantined {quarantined}"
        )
    per_source_counts = con.execute(
        "SELECT source_index, reason, count(*) FROM classified GROUP BY ALL"
    ).fetchall()
    totals: dict[str, int] = {}
    for _, reason, n in per_source_counts:
        if reason is not None:
            totals[reason] = totals.get(reason, 0) + n
    by_reason = _by_reason(list(totals.items()))
    sources = []
    for index, raw in enumerate(raws):
        src: TransactionSource = raw.source  # type: ignore[assignment]
        own = [(reason, n) for i, reason, n in per_source_counts if i == index and reason is not None]
        src_kept = sum(n for i, reason, n in per_source_counts if i == index and reason is None)
        entry = {
            "name": raw.name,
            "path": raw.label,
            "format": raw.format,
            "columns": dict(src.columns),
            "timestamp_format": src.timestamp_format,
            "cancellation_prefix": src.cancellation_prefix,
            "non_product_codes": list(src.non_product_codes),
            "non_product_pattern": src.non_product_pattern,
            "rows_in": raw.rows_in,
            "rows_kept": int(src_kept),
            "rows_quarantined": int(sum(n for _, n in own)),
            "by_reason": _by_reason(own),
            "joins": list(raw.joins_report),
            "where": {column: list(values) for column, values in src.where.items()},
            "exclude": {column: list(values) for column, values in src.exclude.items()},
        }
        if raw.rows_with_extra_fields is not None:
            entry["rows_with_extra_fields"] = int(raw.rows_with_extra_fields)
        sources.append(entry)
    outliers = rules.outliers
    rules_report = {
        "precedence": [r.value for r in ROW_PRECEDENCE],
        "duplicates": (
            f"key: {', '.join(rules.duplicates.key)}"
            if isinstance(rules.duplicates, DuplicateKey)
            else rules.duplicates
        ),
        "zero_amount": rules.zero_amount,
        "returns": rules.returns,
        "min_date": rules.min_date.isoformat(),
        "max_date": max_date.isoformat(),
        "max_date_from": "config" if rules.max_date else ("today argument" if today else "ingest day"),
        "max_bad_share": rules.max_bad_share,
        "outliers": {
            "flag_above": outliers.flag_above,
            "flag_mad": outliers.flag_mad,
            "quarantine_above": outliers.quarantine_above,
            **outlier_rule,
        },
    }
    return {
        "rows_in": int(rows_in),
        "rows_kept": int(kept),
        "rows_quarantined": int(quarantined),
        "by_reason": by_reason,
        "customers": int(customers),
        "date_min": date_min.isoformat() if date_min else None,
        "date_max": date_max.isoformat() if date_max else None,
        "amount_total_kept": float(amount_total),
        "returns": {"count": int(returns_n), "amount": float(returns_amount)},
        "outliers_flagged": int(outliers_n),
        "zero_amount_kept": int(zero_kept),
        "identical_rows_kept": int(identical_kept),
        "sources": sources,
        "rules": rules_report,
    }


# --------------------------------------------------------------------------------------------------------------
# Shared by the customers, invoices and interactions files

_MALFORMED_WORDS = "malformed lines (wrong number of fields) — wrong delimiter?"
_NOT_DATES = "not dates — wrong column, or set timestamp_format?"


def _timestamp_words(timestamp_format: str | None) -> str:
    """What rows whose timestamp does not parse are, in a refusal message."""
    if timestamp_format:
        return f"not timestamps in format {timestamp_format!r} — wrong column or format?"
    return "not dates/timestamps — wrong column, or set timestamp_format?"


def _create_parsed(con: duckdb.DuckDBPyConnection, raw: _RawTable, sql: str) -> None:
    """Run the statement that parses the mapped columns; a value DuckDB cannot interpret refuses the file."""
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise InputFileError(
            f"{raw.label}: cannot interpret the mapped columns ({_first_line(exc)})"
        ) from None


def _fault_case(faults: Sequence[tuple[StrEnum, str]]) -> str:
    """SQL naming a row's first fault: ``faults`` are (reason, condition) in precedence order."""
    return "CASE " + " ".join(f"WHEN {cond} THEN '{r.value}'" for r, cond in faults) + " END"


def _mark_duplicates(
    con: duckdb.DuckDBPyConnection, name: str, key: str, order: str, duplicate: StrEnum
) -> None:
    """``{name}_checked``: ``{name}_faults`` with a ``reason``, the row's fault, else ``duplicate`` for every
    row with no fault but the first (by ``order``) of those sharing ``key``."""
    con.execute(
        f"""
        CREATE TABLE {name}_checked AS
        SELECT *, CASE WHEN fault IS NOT NULL THEN fault
                       WHEN row_number() OVER (PARTITION BY fault, {key} ORDER BY {order}) > 1
                       THEN '{duplicate.value}' END AS reason
        FROM {name}_faults
        """
    )


def _bad_counts(
    con: duckdb.DuckDBPyConnection, table: str, checks: Sequence[tuple[str, str, str]]
) -> list[tuple[str, int, str]]:
    """(role, rows of ``table`` meeting the condition, what they are) for each (role, condition, what)."""
    if not checks:
        return []
    counts = con.execute(
        f"SELECT {', '.join(f'count(*) FILTER (WHERE {cond})' for _, cond, _ in checks)} FROM {table}"
    ).fetchall()[0]
    return [(role, int(n), what) for (role, _, what), n in zip(checks, counts, strict=True)]


def _refuse_bad_columns(
    raw: _RawTable,
    mapping: dict[str, str],
    checks: Sequence[tuple[str, int, str]],
    rules: CleaningRules,
) -> None:
    """Refuse the whole file when its malformed lines, then one of ``checks`` (role, bad rows, what they are),
    pass max_bad_share of its rows; the malformed lines are reported under the customer_id column."""
    for role, count, what in [("customer_id", raw.malformed, _MALFORMED_WORDS), *checks]:
        if count > rules.max_bad_share * raw.rows_in:
            raise InputFileError(
                f"{raw.label}: column '{mapping[role]}' (role {role}): {count:,} of {raw.rows_in:,} rows are "
                f"{what}"
            )


def _write_checked(
    con: duckdb.DuckDBPyConnection, raw: _RawTable, name: str, columns: dict[str, str]
) -> None:
    """``{name}_out``: the rows of ``{name}_checked`` with no reason, cast to ``columns``;
    ``quarantine_{name}_out``: the others, as the file had them."""
    clean_select = ", ".join(f"CAST({col} AS {col_type}) AS {col}" for col, col_type in columns.items())
    con.execute(f"CREATE TABLE {name}_out AS SELECT {clean_select} FROM {name}_checked WHERE reason IS NULL")
    _build_quarantine(con, [raw], f"{name}_checked", f"quarantine_{name}_out", with_source=False)


def _checked_counts(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTable,
    name: str,
    extra: Sequence[str],
    *,
    with_clause: str = "",
) -> tuple[Any, ...]:
    """Rows kept and quarantined for ``{name}``, then the result of each ``extra`` scalar query; refuse to go
    on when kept + quarantined is not the rows read (a bug, not bad input)."""
    subqueries = [f"SELECT count(*) FROM {name}_out", f"SELECT count(*) FROM quarantine_{name}_out", *extra]
    kept, quarantined, *rest = con.execute(
        f"{with_clause} SELECT {', '.join(f'({q})' for q in subqueries)}"
    ).fetchall()[0]
    if kept + quarantined != raw.rows_in:
        raise RuntimeError(
            f"ingest invariant violated for {raw.label}: rows_in {raw.rows_in} != "
            f"kept {kept} + quarantined {quarantined}"
        )
    return (kept, quarantined, *rest)


def _reason_counts(con: duckdb.DuckDBPyConnection, checked: str, reasons: Any) -> dict[str, int]:
    """Rows of ``checked`` per reason, in the order of ``reasons``, reasons with no row left out."""
    return _by_reason(
        con.execute(
            f"SELECT reason, count(*) FROM {checked} WHERE reason IS NOT NULL GROUP BY reason"
        ).fetchall(),
        reasons,
    )


# --------------------------------------------------------------------------------------------------------------
# Customer attributes


def _ingest_customers(con: duckdb.DuckDBPyConnection, raw: _RawTable, rules: CleaningRules) -> dict[str, Any]:
    """Create ``customers_out`` / ``quarantine_customers_out``; return the ``customers_file`` report section."""
    source: CustomerSource = raw.source  # type: ignore[assignment]
    key = raw.config_key
    roles = list(source.columns)
    _check_format_and_pattern(con, raw)
    mapping = _map_columns(raw, roles)
    source_table = _trimmed_from(raw, mapping)
    default_attributes = [r for r in roles if r not in CUSTOMER_ROLES]
    attributes = list(source.attributes) if source.attributes is not None else default_attributes
    for attribute in attributes:
        if attribute not in default_attributes:
            raise ConfigError(
                f"{key}.attributes: '{attribute}' is not a mapped attribute role "
                f"(mapped: {', '.join(default_attributes) or 'none'})"
            )
    if "signup_date" in mapping:
        signup = f"CAST({_timestamp_expr(raw, mapping['signup_date'], source.timestamp_format)} AS DATE)"
        signup_present = f"{_text_expr(raw, mapping['signup_date'])} IS NOT NULL"
    else:
        signup, signup_present = "CAST(NULL AS DATE)", "false"
    attribute_selects = "".join(f", {_text_expr(raw, mapping[a])} AS {_ident(a)}" for a in attributes)
    _create_parsed(
        con,
        raw,
        f"""
        CREATE TABLE customers_checked AS
        WITH parsed AS (
            SELECT {_ROW} AS source_row, {_text_expr(raw, mapping["customer_id"])} AS customer_id,
                   {signup} AS signup_date, {signup_present} AS signup_present {attribute_selects},
                   {_RAW} IS NOT NULL AS is_malformed
            FROM {source_table}
        )
        SELECT *,
            CASE WHEN is_malformed THEN '{QuarantineReason.MALFORMED_ROW.value}'
                 WHEN customer_id IS NULL THEN '{QuarantineReason.MISSING_CUSTOMER_ID.value}'
                 WHEN row_number() OVER (PARTITION BY customer_id ORDER BY source_row) > 1
                 THEN '{QuarantineReason.DUPLICATE_ROW.value}' END AS reason
        FROM parsed
        """,
    )
    missing_ids, bad_signup = con.execute(
        "SELECT count(*) FILTER (WHERE customer_id IS NULL AND NOT is_malformed), "
        "count(*) FILTER (WHERE signup_present AND signup_date IS NULL) FROM customers_checked"
    ).fetchall()[0]
    _refuse_bad_columns(
        raw,
        mapping,
        [("customer_id", missing_ids, "empty — wrong column?"), ("signup_date", bad_signup, _NOT_DATES)],
        rules,
    )
    attribute_columns = "".join(f", {_ident(a)}" for a in attributes)
    con.execute(
        f"CREATE TABLE customers_out AS SELECT customer_id, signup_date{attribute_columns} "
        "FROM customers_checked WHERE reason IS NULL"
    )
    _build_quarantine(con, [raw], "customers_checked", "quarantine_customers_out", with_source=False)
    kept, quarantined, transaction_customers_missing, customers_without_transactions = _checked_counts(
        con,
        raw,
        "customers",
        [
            "SELECT count(DISTINCT customer_id) FROM clean_out "
            "WHERE customer_id NOT IN (SELECT customer_id FROM customers_out)",
            "SELECT count(*) FROM customers_out WHERE customer_id NOT IN (SELECT customer_id FROM clean_out)",
        ],
    )
    by_reason = _reason_counts(con, "customers_checked", ROW_PRECEDENCE)
    return {
        "path": raw.label,
        "columns": dict(source.columns),
        "attributes": attributes,
        "rows_in": int(raw.rows_in),
        "rows_kept": int(kept),
        "rows_quarantined": int(quarantined),
        "by_reason": by_reason,
        "signup_date_unparseable": int(bad_signup),
        "transaction_customers_without_attributes": int(transaction_customers_missing),
        "customers_without_transactions": int(customers_without_transactions),
    }


def _ingest_invoices(con: duckdb.DuckDBPyConnection, raw: _RawTable, rules: CleaningRules) -> dict[str, Any]:
    """Create ``invoices_out`` / ``quarantine_invoices_out``; return the ``invoices`` report section.

    Every rule but the duplicate one looks at the row alone; duplicates are looked for among rows with no
    other fault, the earliest issued kept (then the first in file order)."""
    source: InvoiceSource = raw.source  # type: ignore[assignment]
    _check_format_and_pattern(con, raw)
    mapping = _map_columns(raw, INVOICE_ROLES)
    source_table = _trimmed_from(raw, mapping)

    def date(role: str) -> str:
        return f"CAST({_timestamp_expr(raw, mapping[role], source.timestamp_format)} AS DATE)"

    paid_present = f"{_text_expr(raw, mapping['paid'])} IS NOT NULL"
    reason = InvoiceReason
    faults = (
        (reason.MALFORMED_ROW, "is_malformed"),
        (reason.MISSING_INVOICE_ID, "invoice_id IS NULL"),
        (reason.MISSING_CUSTOMER_ID, "customer_id IS NULL"),
        (reason.BAD_DATE, "issued IS NULL OR due IS NULL OR (paid_present AND paid IS NULL)"),
        (reason.NON_NUMERIC_AMOUNT, "NOT coalesce(isfinite(amount), false)"),
        (reason.DUE_BEFORE_ISSUED, "due < issued"),
        (reason.PAID_BEFORE_ISSUED, "paid < issued"),
        (reason.NEGATIVE_AMOUNT, "amount < 0"),
    )
    _create_parsed(
        con,
        raw,
        f"""
        CREATE TABLE invoices_faults AS
        WITH parsed AS (
            SELECT {_ROW} AS source_row,
                   {_text_expr(raw, mapping["invoice_id"])} AS invoice_id,
                   {_text_expr(raw, mapping["customer_id"])} AS customer_id,
                   {date("issued")} AS issued, {date("due")} AS due, {date("paid")} AS paid,
                   {paid_present} AS paid_present,
                   {_number_expr(raw, mapping["amount"])} AS amount,
                   {_RAW} IS NOT NULL AS is_malformed
            FROM {source_table}
        )
        SELECT *, {_fault_case(faults)} AS fault FROM parsed
        """,
    )
    _mark_duplicates(con, "invoices", "invoice_id", "issued, source_row", reason.DUPLICATE_INVOICE)
    checks = [
        ("customer_id", "customer_id IS NULL AND NOT is_malformed", "empty — wrong column?"),
        ("issued", "issued IS NULL AND NOT is_malformed", _NOT_DATES),
        ("due", "due IS NULL AND NOT is_malformed", _NOT_DATES),
        ("paid", "paid_present AND paid IS NULL", _NOT_DATES),
        (
            "amount",
            "NOT coalesce(isfinite(amount), false) AND NOT is_malformed",
            "not numbers — wrong column?",
        ),
    ]
    _refuse_bad_columns(raw, mapping, _bad_counts(con, "invoices_checked", checks), rules)
    _write_checked(con, raw, "invoices", CLEAN_INVOICE_COLUMNS)
    kept, quarantined, unpaid, without_transactions = _checked_counts(
        con,
        raw,
        "invoices",
        [
            "SELECT count(*) FROM invoices_out WHERE paid IS NULL",
            "SELECT count(DISTINCT customer_id) FROM invoices_out "
            "WHERE customer_id NOT IN (SELECT customer_id FROM clean_out)",
        ],
    )
    return {
        "path": raw.label,
        "format": raw.format,
        "columns": dict(source.columns),
        "rows_in": int(raw.rows_in),
        "rows_kept": int(kept),
        "rows_quarantined": int(quarantined),
        "by_reason": _reason_counts(con, "invoices_checked", InvoiceReason),
        "invoices_unpaid": int(unpaid),
        "invoice_customers_without_transactions": int(without_transactions),
    }


def _ingest_interactions(
    con: duckdb.DuckDBPyConnection,
    raw: _RawTable,
    rules: CleaningRules,
    max_date: dt.date,
    *,
    with_customers: bool,
) -> dict[str, Any]:
    """Create ``interactions_out`` / ``quarantine_interactions_out``; return the ``interactions`` report section.

    Every rule but the duplicate one looks at the row alone (the date rules are those of transactions);
    duplicates are looked for among rows with no other fault, the first in file order kept. Kept events of
    customers found neither in the clean transactions nor in the clean customers are counted
    (``unknown_customer``) and kept: the features only read events of customers in the population."""
    source: InteractionSource = raw.source  # type: ignore[assignment]
    _check_format_and_pattern(con, raw)
    mapping = _map_columns(raw, INTERACTION_ROLES)
    source_table = _trimmed_from(raw, mapping)

    def text(role: str) -> str:
        return _text_expr(raw, mapping[role]) if role in mapping else "CAST(NULL AS VARCHAR)"

    kind_cases = " ".join(
        f"WHEN {_literal(value)} THEN {_literal(kind)}" for value, kind in sorted(source.kind_map().items())
    )
    score_present = f"{text('score')} IS NOT NULL" if "score" in mapping else "false"
    score = _number_expr(raw, mapping["score"]) if "score" in mapping else "CAST(NULL AS DOUBLE)"
    reason = InteractionReason
    faults = (
        (reason.MALFORMED_ROW, "is_malformed"),
        (reason.IGNORED_KIND, f"kind = '{IGNORE_KIND}'"),
        (reason.MISSING_CUSTOMER_ID, "customer_id IS NULL"),
        (reason.BAD_TIMESTAMP, "timestamp IS NULL"),
        (reason.FUTURE_TIMESTAMP, f"CAST(timestamp AS DATE) > DATE '{max_date.isoformat()}'"),
        (reason.TIMESTAMP_OUT_OF_RANGE, f"timestamp < TIMESTAMP '{rules.min_date.isoformat()}'"),
        (reason.UNKNOWN_KIND, "kind IS NULL"),
        (reason.BAD_SCORE, "score_present AND NOT coalesce(isfinite(score), false)"),
    )
    _create_parsed(
        con,
        raw,
        f"""
        CREATE TABLE interactions_faults AS
        WITH parsed AS (
            SELECT {_ROW} AS source_row,
                   {text("customer_id")} AS customer_id,
                   {_timestamp_expr(raw, mapping["timestamp"], source.timestamp_format)} AS timestamp,
                   {text("kind")} AS kind_value,
                   CASE lower({text("kind")}) {kind_cases} END AS kind,
                   {text("channel")} AS channel,
                   {text("outcome")} AS outcome,
                   {score} AS score,
                   {score_present} AS score_present,
                   {_RAW} IS NOT NULL AS is_malformed
            FROM {source_table}
        )
        SELECT *, {_fault_case(faults)} AS fault FROM parsed
        """,
    )
    _mark_duplicates(
        con,
        "interactions",
        "customer_id, timestamp, kind, channel, outcome, score",
        "source_row",
        reason.DUPLICATE_EVENT,
    )
    # the values behind unknown_kind, most frequent first: what a ``kinds:`` mapping would have to list
    unknown_values = con.execute(
        f"""
        SELECT kind_value, count(*) AS n FROM interactions_checked
        WHERE fault = '{reason.UNKNOWN_KIND.value}' AND kind_value IS NOT NULL
        GROUP BY kind_value ORDER BY n DESC, kind_value LIMIT 10
        """
    ).fetchall()
    frequent = ", ".join(f"{value!r} ({n:,})" for value, n in unknown_values[:3])
    kind_words = (
        f"not known kinds (most frequent: {frequent}) — wrong column, or map them under "
        "data.interactions.kinds (kinds: " + ", ".join(INTERACTION_KINDS) + ")?"
        if frequent
        else "empty — wrong column?"
    )
    modelled = f"NOT is_malformed AND kind IS DISTINCT FROM '{IGNORE_KIND}'"  # set-aside rows never refuse
    checks = [
        ("customer_id", f"customer_id IS NULL AND {modelled}", "empty — wrong column?"),
        ("timestamp", f"timestamp IS NULL AND {modelled}", _timestamp_words(source.timestamp_format)),
        ("kind", f"kind IS NULL AND {modelled}", kind_words),
        (
            "score",
            f"score_present AND NOT coalesce(isfinite(score), false) AND {modelled}",
            "not numbers — wrong column?",
        ),
    ]
    checks = [check for check in checks if check[0] in mapping]
    _refuse_bad_columns(raw, mapping, _bad_counts(con, "interactions_checked", checks), rules)
    _write_checked(con, raw, "interactions", CLEAN_INTERACTION_COLUMNS)
    known = "SELECT customer_id FROM clean_out"
    if with_customers:
        known += " UNION SELECT customer_id FROM customers_out"
    kept, quarantined, unknown_customer, unknown_customer_ids = _checked_counts(
        con,
        raw,
        "interactions",
        ["SELECT count(*) FROM unknown", "SELECT count(DISTINCT customer_id) FROM unknown"],
        with_clause=f"WITH unknown AS (SELECT customer_id FROM interactions_out WHERE customer_id NOT IN ({known}))",
    )
    kinds = dict(con.execute("SELECT kind, count(*) FROM interactions_out GROUP BY kind").fetchall())
    return {
        "path": raw.label,
        "format": raw.format,
        "columns": dict(source.columns),
        "kinds": dict(source.kinds),
        "rows_in": int(raw.rows_in),
        "rows_kept": int(kept),
        "rows_quarantined": int(quarantined),
        "by_reason": _reason_counts(con, "interactions_checked", InteractionReason),
        "by_kind": {k: int(kinds[k]) for k in INTERACTION_KINDS if kinds.get(k)},
        "unknown_kind_values": {str(value): int(n) for value, n in unknown_values},
        "unknown_customer": int(unknown_customer),
        "unknown_customer_ids": int(unknown_customer_ids),
    }


# --------------------------------------------------------------------------------------------------------------
# Output and SQL text helpers


def _write_optional(
    con: duckdb.DuckDBPyConnection, configured: bool, clean: tuple[Path, str], quarantine: tuple[Path, str]
) -> Path | None:
    """An optional file's clean and quarantine parquet ((path, query) each) when it is configured; otherwise
    remove both (files from an earlier run with another config would be silently stale). Returns the clean
    path, or None."""
    if not configured:
        for stale, _ in (clean, quarantine):
            stale.unlink(missing_ok=True)
        return None
    for target, query in (clean, quarantine):
        _copy_parquet(con, query, target)
    return clean[0]


def _copy_parquet(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> None:
    """Write a query result to parquet atomically (temp name in the same folder, then rename)."""
    with atomic_path(target) as tmp:
        con.execute(f"COPY ({query}) TO {_literal(str(tmp))} (FORMAT parquet)")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[:1]).strip()
    return text if len(text) <= 240 else text[:237] + "..."
