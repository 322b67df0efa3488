"""Ingest on Spark: the DuckDB ingest's own SQL texts, run through a SparkSession.

:mod:`segml.ingest` builds every step (role parsing, joins, filters, classification with its precedence,
duplicates, outliers, the quarantine and every count of the DQ report) as SQL text for a DuckDB connection.
:class:`SparkConnection` takes that connection's place when ``engine: spark``: it runs the same statements on
Spark, so both engines apply one set of rules, written once. What differs is confined here:

* **reading**: Spark reads the files (Parquet natively, numbered by ``_metadata.row_index``; CSV and
  ``whitespace`` as lines numbered in file order, split into the header's fields on the executors, a line
  with the wrong number of fields or a broken quote kept as a ``malformed_row`` with its text);
* **dialect**: a statement is rewritten token by token (string literals re-escaped for Spark, DuckDB's
  ``"identifiers"`` to backticks, ``fsum`` to ``sum``, ``trim`` to ``btrim``, ``EXCLUDE`` to ``EXCEPT``,
  ``VARCHAR`` to ``STRING``,
  ``read_parquet('f')`` to ``parquet.`f```), and the few DuckDB functions ingest uses (``isfinite``,
  ``regexp_matches``, ``starts_with``) are SQL functions of the session; a ``timestamp_format`` is translated
  from ``strftime`` to Spark's pattern letters by :func:`java_pattern`;
* **statements**: ``CREATE TABLE`` is a persisted temp view, ``CREATE VIEW`` a temp view, ``COPY (…) TO``
  a single Parquet file written atomically, ``DESCRIBE`` the schema in DuckDB's type names.

Timestamps are ``TIMESTAMP_NTZ`` while ingest runs (``spark.sql.timestampType``; restored on close), so the
files hold wall-clock UTC times like DuckDB's. The intermediate classified rows go to ``workdir``: on a cluster
of several machines it must be on storage every executor and the driver share (``spark.warehouse_dir``).
"""

from __future__ import annotations

import csv
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from segml.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkConnection", "SparkSQLError", "spark_sql", "java_pattern"]

#: the session settings ingest needs while it runs (the previous values are restored on close)
_SESSION_CONF = {"spark.sql.timestampType": "TIMESTAMP_NTZ", "spark.sql.ansi.enabled": "true"}

#: DuckDB functions the ingest SQL uses, as SQL functions of the session (same NULL semantics)
_FUNCTIONS = (
    "CREATE OR REPLACE TEMPORARY FUNCTION isfinite(x DOUBLE) RETURNS BOOLEAN "
    "RETURN NOT isnan(x) AND abs(x) <> double('inf')",
    "CREATE OR REPLACE TEMPORARY FUNCTION regexp_matches(s STRING, p STRING) RETURNS BOOLEAN RETURN s RLIKE p",
    "CREATE OR REPLACE TEMPORARY FUNCTION starts_with(s STRING, p STRING) RETURNS BOOLEAN "
    "RETURN startswith(s, p)",
)

#: rewrites applied to the SQL outside string literals and identifiers
_REWRITES = (
    (re.compile(r"\bfsum\s*\(", re.I), "sum("),
    (re.compile(r"\bEXCLUDE\s*\(", re.I), "EXCEPT ("),
    (re.compile(r"\bVARCHAR\s*\[\s*\]", re.I), "ARRAY<STRING>"),
    (re.compile(r"\bVARCHAR\b", re.I), "STRING"),
    (re.compile(r"\blist_value\s*\(", re.I), "array("),
    (re.compile(r"\bTIMESTAMPTZ\b", re.I), "TIMESTAMP_LTZ"),
    # DuckDB's trim(text, characters); Spark's two-argument trim takes them the other way round
    (re.compile(r"(?<![\w.])trim\s*\(", re.I), "btrim("),
)
_READ_PARQUET = re.compile(r"\bread_parquet\s*\(\s*$", re.I)

_CREATE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(VIEW|TABLE)\s+(\w+)\s+AS\s+(.*)$", re.S | re.I)
_DROP = re.compile(r"^\s*DROP\s+(?:VIEW|TABLE)\s+(?:IF\s+EXISTS\s+)?(\w+)\s*$", re.I)
_ALTER_DROP = re.compile(r"^\s*ALTER\s+TABLE\s+(\w+)\s+DROP\s+COLUMN\s+(\w+)\s*$", re.I)
_COPY = re.compile(
    r"^\s*COPY\s+\((.*)\)\s+TO\s+'((?:[^']|'')*)'\s*\(\s*FORMAT\s+parquet\s*\)\s*$", re.S | re.I
)
_DESCRIBE = re.compile(r"^\s*DESCRIBE\s+(\w+)\s*$", re.I)
_SET = re.compile(r"^\s*SET\s", re.I)

#: Spark type name (``simpleString``) -> DuckDB's, for the type tests of :mod:`segml.ingest`
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "float": "FLOAT",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "timestamp_ntz": "TIMESTAMP",
    "binary": "BLOB",
}

#: strftime directives -> Spark datetime pattern letters (those a transaction export uses)
_DIRECTIVES = {
    "Y": "yyyy",
    "y": "yy",
    "m": "MM",
    "d": "dd",
    "H": "HH",
    "I": "hh",
    "M": "mm",
    "S": "ss",
    "f": "SSSSSS",
    "p": "a",
    "b": "MMM",
    "B": "MMMM",
    "j": "DDD",
    "z": "Z",
}


class SparkSQLError(duckdb.Error):
    """A Spark statement failed: raised as a ``duckdb.Error`` so that ingest's handlers (which name the file
    and the column in one line) treat both engines alike."""


def java_pattern(fmt: str, where: str = "timestamp_format") -> str:
    """The Spark datetime pattern of a ``strftime`` format (``%Y%m%d`` -> ``yyyyMMdd``).

    Raises
    ------
    ConfigError
        A directive without a Spark equivalent (``where`` names the setting).
    """
    out: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            text = "".join(literal)
            out.append(text if not re.search(r"[A-Za-z']", text) else "'" + text.replace("'", "''") + "'")
            literal.clear()

    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "%" and i + 1 < len(fmt):
            directive = fmt[i + 1]
            if directive == "%":
                literal.append("%")
            elif directive in _DIRECTIVES:
                flush()
                out.append(_DIRECTIVES[directive])
            else:
                raise ConfigError(
                    f"{where}: %{directive} has no Spark equivalent (engine: spark reads "
                    f"{', '.join('%' + d for d in _DIRECTIVES)}); use engine: duckdb or another format"
                )
            i += 2
            continue
        literal.append(char)
        i += 1
    flush()
    return "".join(out)


def spark_sql(sql: str) -> str:
    """A DuckDB statement of :mod:`segml.ingest` in Spark SQL (see the module docstring for what changes)."""
    out: list[str] = []
    code: list[str] = []

    def flush_code() -> None:
        text = "".join(code)
        for pattern, replacement in _REWRITES:
            text = pattern.sub(replacement, text)
        out.append(text)
        code.clear()

    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char not in "'\"":
            code.append(char)
            i += 1
            continue
        j, buf = i + 1, []
        while True:
            if j >= n:
                raise SparkSQLError(
                    f"unterminated {'literal' if char == chr(39) else 'identifier'} in: {sql[:80]}"
                )
            if sql[j] == char:
                if j + 1 < n and sql[j + 1] == char:  # doubled quote: the quote itself
                    buf.append(char)
                    j += 2
                    continue
                break
            buf.append(sql[j])
            j += 1
        value = "".join(buf)
        i = j + 1
        if char == '"':
            code.append("`" + value.replace("`", "``") + "`")
            continue
        if _READ_PARQUET.search("".join(code)):  # read_parquet('file') -> parquet.`file`
            rest = sql[i:].lstrip()
            if rest.startswith(")"):
                prefix = _READ_PARQUET.sub("", "".join(code))
                code[:] = list(prefix)
                code.append("parquet.`" + value.replace("`", "``") + "`")
                i = n - len(rest) + 1
                continue
        flush_code()
        out.append("'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
    flush_code()
    return "".join(out)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _bind(sql: str, params: Sequence[Any] | None) -> str:
    """``?`` placeholders (outside literals) replaced by DuckDB literals of ``params``."""
    if not params:
        return sql
    parts = re.split(r"('(?:[^']|'')*')", sql)
    values = iter(params)
    for k in range(0, len(parts), 2):
        parts[k] = re.sub(r"\?", lambda _: _literal(next(values)), parts[k])
    return "".join(parts)


class _Result:
    """What a DuckDB ``execute`` / ``sql`` returns, as far as ingest reads it."""

    def __init__(self, frame: DataFrame | None, rows: list[tuple[Any, ...]] | None = None) -> None:
        self._frame = frame
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            self._rows = [] if self._frame is None else [tuple(row) for row in _run(self._frame.collect)]
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def df(self) -> pd.DataFrame:
        if self._frame is None:
            return pd.DataFrame(self._rows or [])
        return _run(self._frame.toPandas)


def _run(call: Any, *args: Any) -> Any:
    """``call(*args)`` with Spark's errors raised as :class:`SparkSQLError` (first line of the message)."""
    try:
        return call(*args)
    except SparkSQLError:
        raise
    except Exception as exc:  # noqa: BLE001 - py4j / pyspark errors have no common base worth naming
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SparkSQLError(message) from None
        raise


class SparkConnection:
    """The part of a DuckDB connection :mod:`segml.ingest` uses, on a SparkSession.

    Parameters
    ----------
    spark:
        The session (see :func:`segml.features.spark_session`).
    """

    dialect = "spark"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self._views: dict[str, Any] = {}
        self._restore = {key: spark.conf.get(key, None) for key in _SESSION_CONF}
        for key, value in _SESSION_CONF.items():
            spark.conf.set(key, value)
        for statement in _FUNCTIONS:
            _run(spark.sql, statement)

    # ----------------------------------------------------------------------------------------------------------
    # the DuckDB connection interface

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Result:
        sql = _bind(sql, params)
        if _SET.match(sql):
            return _Result(None, [])
        if match := _CREATE.match(sql):
            kind, name, query = match.groups()
            frame = self._frame(query)
            if kind.upper() == "TABLE":  # evaluated now, like DuckDB's table (errors surface here)
                frame = frame.persist()
                _run(frame.count)
            self._register(name, frame)
            return _Result(None, [])
        if match := _DROP.match(sql):
            self._drop(match.group(1))
            return _Result(None, [])
        if match := _ALTER_DROP.match(sql):
            name, column = match.groups()
            self._register(name, self.spark.table(name).drop(column))
            return _Result(None, [])
        if match := _COPY.match(sql):
            query, target = match.groups()
            self.write_parquet(self._frame(query), Path(target.replace("''", "'")))
            return _Result(None, [])
        if match := _DESCRIBE.match(sql):
            fields = self.spark.table(match.group(1)).schema.fields
            return _Result(None, [(f.name, _duckdb_type(f.dataType.simpleString())) for f in fields])
        return _Result(self._frame(sql))

    def sql(self, sql: str) -> _Result:
        return self.execute(sql)

    def close(self) -> None:
        for name in list(self._views):
            self._drop(name)
        for key, value in self._restore.items():
            if value is None:
                self.spark.conf.unset(key)
            else:
                self.spark.conf.set(key, value)

    # ----------------------------------------------------------------------------------------------------------
    # reading files (the DuckDB readers' counterparts; :func:`segml.ingest._read_file` checks the path first)

    def read_parquet(self, path: Path, table: str) -> None:
        """``table``: the file's columns, ``__source_row`` (1-based position in the file), ``__raw_line``."""
        from pyspark.sql import functions as F

        frame = _run(self.spark.read.parquet, str(path))
        frame = frame.select(
            *[F.col(f"`{c}`") for c in frame.columns],
            (F.col("_metadata.row_index") + F.lit(1)).cast("bigint").alias("__source_row"),
            F.lit(None).cast("string").alias("__raw_line"),
        )
        self._register(table, frame)

    def read_csv(self, path: Path, header: list[str], delimiter: str, encoding: str, table: str) -> int:
        """``table``: the data lines split into the header's fields (all text, empty = NULL) in file order,
        ``__source_row`` = line number - 1; a line that is not one row of those fields is a row of NULLs with
        its text in ``__raw_line``. Returns the number of such malformed lines."""
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        lines = self._lines(path, encoding).where("line_no > 1")
        width = len(header)
        schema = StructType(
            [StructField(f"c{i}", StringType()) for i in range(width)]
            + [StructField("__source_row", LongType()), StructField("__raw_line", StringType())]
        )

        def split(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                rows = []
                for line_no, line in zip(batch["line_no"], batch["line"], strict=True):
                    text = "" if line is None else line
                    try:
                        fields = next(csv.reader([text], delimiter=delimiter, quotechar='"', strict=True))
                    except (csv.Error, StopIteration):
                        fields = None
                    if fields is None or len(fields) != width:
                        rows.append([None] * width + [int(line_no) - 1, text])
                    else:
                        rows.append(
                            [value if value != "" else None for value in fields] + [int(line_no) - 1, None]
                        )
                yield pd.DataFrame(rows, columns=schema.fieldNames())

        frame = lines.mapInPandas(split, schema)
        frame = frame.select(
            *[frame[f"c{i}"].alias(name) for i, name in enumerate(header)], "__source_row", "__raw_line"
        )
        frame = frame.persist()
        self._register(table, frame)
        return int(_run(frame.where("__raw_line IS NOT NULL").count))

    def read_whitespace(self, path: Path, encoding: str, table: str) -> tuple[list[str], int]:
        """``table``: non-blank lines split on runs of blanks, the first one the header; ``__source_row`` counts
        the non-blank data lines. Returns the header and the number of lines with extra fields."""
        from pyspark.sql import functions as F

        blanks = " \t\n\r"
        lines = self._lines(path, encoding)
        kept = lines.where(F.trim(F.coalesce("line", F.lit("")), F.lit(blanks)) != "")
        numbered = self._numbered(kept.select("line"), "line_no")
        fields = numbered.select(
            "line_no", F.split(F.trim("line", F.lit(blanks)), r"[ \t]+").alias("fields")
        ).persist()
        first = _run(fields.where("line_no = 1").collect)
        if not first:
            return [], 0
        header = list(first[0]["fields"])
        width = len(header)
        frame = fields.where("line_no > 1").select(
            *[F.col("fields")[i].alias(name) for i, name in enumerate(header)],
            (F.col("line_no") - 1).cast("bigint").alias("__source_row"),
            F.lit(None).cast("string").alias("__raw_line"),
            (F.size("fields") > width).alias("__extra_fields"),
        )
        extra = int(_run(frame.where("__extra_fields").count))
        self._register(table, frame.drop("__extra_fields").persist())
        return header, extra

    def load_frame(self, frame: pd.DataFrame, table: str) -> None:
        """``table``: a DataFrame's rows with ``__source_row`` (1-based position) and ``__raw_line``."""
        data = frame.reset_index(drop=True).copy()
        data["__source_row"] = range(1, len(data) + 1)
        data["__raw_line"] = pd.Series([None] * len(data), dtype=object)
        self._register(table, _run(self.spark.createDataFrame, data))

    def write_parquet(self, frame: DataFrame, target: Path) -> None:
        """One Parquet file at ``target`` (rows in the frame's order; the caller makes it atomic)."""
        folder = target.parent / f".{target.name}.spark-{uuid.uuid4().hex}"
        try:
            _run(frame.coalesce(1).write.mode("overwrite").parquet, str(folder))
            parts = sorted(folder.glob("part-*.parquet"))
            if len(parts) == 1:
                shutil.move(str(parts[0]), str(target))
            else:  # an empty result may come without a file: write its schema
                import pyarrow.parquet as pq

                pq.write_table(_run(frame.limit(0).toArrow), target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ----------------------------------------------------------------------------------------------------------

    def _frame(self, sql: str) -> DataFrame:
        return _run(self.spark.sql, spark_sql(sql))

    def _register(self, name: str, frame: DataFrame) -> None:
        old = self._views.get(name)
        frame.createOrReplaceTempView(name)
        self._views[name] = frame
        if old is not None and old is not frame and old.is_cached:
            old.unpersist()

    def _drop(self, name: str) -> None:
        frame = self._views.pop(name, None)
        self.spark.catalog.dropTempView(name)
        if frame is not None and frame.is_cached:
            frame.unpersist()

    def _lines(self, path: Path, encoding: str) -> DataFrame:
        """The file's lines in order with their 1-based number (``line_no``, ``line``)."""
        reader = (
            self.spark.read.option("encoding", encoding)
            .option("sep", "\u0001")
            .option("quote", "")
            .option("escape", "")
            .option("header", "false")
            .option("nullValue", "\u0002")
            .schema("line STRING")
        )
        return self._numbered(_run(reader.csv, str(path)), "line_no")

    def _numbered(self, frame: DataFrame, column: str) -> DataFrame:
        """``frame`` with a 1-based row number in file order (partition order, then order within)."""
        from pyspark.sql.types import LongType, StructField, StructType

        schema = StructType([StructField(column, LongType()), *frame.schema.fields])
        rdd = frame.rdd.zipWithIndex().map(lambda pair: (pair[1] + 1, *pair[0]))
        return _run(self.spark.createDataFrame, rdd, schema)


def _duckdb_type(spark_type: str) -> str:
    if spark_type.startswith("decimal"):
        return spark_type.upper()
    return _DUCKDB_TYPES.get(spark_type, spark_type.upper())
