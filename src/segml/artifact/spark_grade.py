"""``segml grade --engine spark``: grade a Parquet dataset with an artifact on a Spark session or cluster.

The steps are those of :func:`segml.artifact.load.grade`, with the row-wise work on Spark:

1. the raw input is mapped and cleaned on Spark (:func:`segml.artifact.load.clean_inputs`, ``segml ingest``
   with ``engine: spark``: the same rules and SQL as on DuckDB), written as clean Parquet under a work folder
   (DataFrames given in Python are cleaned by DuckDB on the driver);
2. the feature SQL runs on Spark (:func:`segml.features.spark_features`, the same text DuckDB runs);
3. ``mapInArrow`` grades each Arrow batch with the artifact: the batch is typed exactly as
   :func:`segml.features.build_features` types its rows, then :meth:`GradingArtifact.score` grades it. Every
   grade is a function of its customer's feature row alone, so batching cannot change a grade;
4. the grades are written as Parquet, partitioned by the columns asked for.

The artifact is verified once on the driver and shipped to the executors with the task (its model and policy
are plain Python objects); executors need the same Python and segml as the driver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from segml.artifact.load import (
    GradingArtifact,
    TableInput,
    clean_for_grading,
    load_artifact,
    read_mapping,
    with_missing_attributes,
)
from segml.config import SparkSettings
from segml.errors import InputFileError

#: Parquet columns a grades dataset may be partitioned by (a few values each; never a customer-level column)
PARTITION_COLUMNS = ("grade", "value_level", "potential_level", "matrix_cell", "as_of")


def _grades_schema(artifact: GradingArtifact, reasons: bool, cutoff: dt.date) -> pa.Schema:
    """The Arrow schema of the grades, read off grading the artifact's probe customers (so it follows the
    scoring code: the column list depends on the policy and on ``reasons``)."""
    from segml.artifact.manifest import PROBE
    from segml.artifact.probe import read_probe

    probe, _ = read_probe(json.loads((artifact.path / PROBE).read_text(encoding="utf-8")))
    sample = artifact.score(probe, reasons=reasons, as_of=cutoff)
    fields = []
    for name, dtype in sample.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            kind = pa.timestamp("us")
        elif pd.api.types.is_bool_dtype(dtype):
            kind = pa.bool_()
        elif pd.api.types.is_integer_dtype(dtype):
            kind = pa.int64()
        elif pd.api.types.is_float_dtype(dtype):
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(str(name), kind))
    return pa.schema(fields)


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql import types as T

    kinds = {
        pa.string(): T.StringType(),
        pa.float64(): T.DoubleType(),
        pa.int64(): T.LongType(),
        pa.bool_(): T.BooleanType(),
        pa.timestamp("us"): T.TimestampNTZType(),
    }
    return T.StructType([T.StructField(f.name, kinds[f.type], True) for f in schema])


class _BatchGrader:
    """The function ``mapInArrow`` runs on the executors: feature batches in, grade batches out."""

    def __init__(
        self,
        artifact: GradingArtifact,
        attributes: Sequence[str],
        with_customers: bool,
        reasons: bool,
        cutoff: dt.date,
        schema: pa.Schema,
        with_invoices: bool = False,
        with_interactions: bool = False,
    ) -> None:
        # the verification result is driver-side bookkeeping; the executors need the model and policy only
        self.artifact = dataclasses.replace(artifact, verified=None)
        self.attributes = list(attributes)
        self.with_customers = with_customers
        self.reasons = reasons
        self.cutoff = cutoff
        self.schema = schema
        self.with_invoices = with_invoices
        self.with_interactions = with_interactions

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from segml.features import normalise_feature_batch

        spec = self.artifact.feature_config
        for batch in batches:
            if batch.num_rows == 0:
                continue
            features = normalise_feature_batch(
                pa.Table.from_batches([batch]),
                spec,
                self.attributes,
                with_invoices=self.with_invoices,
                with_interactions=self.with_interactions,
            )
            if not self.with_customers:
                features = with_missing_attributes(features, self.artifact.feature_spec)
            graded = self.artifact.score(features, reasons=self.reasons, as_of=self.cutoff)
            table = pa.Table.from_pandas(graded, schema=self.schema, preserve_index=False)
            yield from table.to_batches()


def _grade_counts(session: Any, folder: str) -> dict[str, int]:
    """Customers per grade in a written grades dataset (empty when no part file was written)."""
    from pyspark.errors import AnalysisException

    try:
        grades = session.read.parquet(folder)
    except AnalysisException:  # no rows: Spark wrote no part file to infer a schema from
        return {}
    rows = grades.groupBy("grade").count().withColumnRenamed("count", "n").collect()
    return {str(row["grade"]): int(row["n"]) for row in rows}


def _ingest_settings(spark: SparkSettings | None) -> SparkSettings:
    """The settings ingest opens its session with: ``spark``, else those naming the active session's master
    (so that ingest, features and grading share one session), else the defaults (``local[2]``)."""
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    return SparkSettings(master=active.sparkContext.master) if active is not None else SparkSettings()


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def grade_on_spark(
    artifact_dir: Path | str | GradingArtifact,
    transactions: TableInput | Sequence[TableInput],
    out: Path | str,
    customers: TableInput | None = None,
    as_of: dt.date | str | None = None,
    mapping: dict[str, Any] | Path | str | None = None,
    reasons: bool = True,
    *,
    partition_by: Sequence[str] = (),
    spark: SparkSettings | None = None,
    work_dir: Path | str | None = None,
    report: dict[str, Any] | None = None,
    invoices: Path | str | None = None,
    interactions: Path | str | None = None,
) -> dict[str, int]:
    """Grade customers with a verified artifact on Spark and write the grades as a Parquet dataset.

    Parameters
    ----------
    artifact_dir, transactions, customers, as_of, mapping, reasons:
        As for :func:`segml.artifact.load.grade` (share-based boundaries are never re-derived here).
    out:
        Output folder of the Parquet dataset (replaced when it exists). A local path is written next to
        itself and renamed into place; on a cluster it must be storage every executor can write.
    partition_by:
        Columns to partition the dataset by (:data:`PARTITION_COLUMNS`), e.g. ``["grade"]``.
    spark:
        The ``spark:`` settings (master, conf, ...); default: the active session (any master), else
        ``local[2]``.
    work_dir:
        Where the raw input is cleaned to (by the executors: ingest runs on Spark) and read back from for the
        features (default a temporary folder on the driver; on a multi-machine cluster give a folder every
        executor and the driver can read and write).
    report:
        When a dict is given, the ingest DQ summary is stored in it (``rows_in``, ``rows_kept``, ...).
    invoices, interactions:
        Raw invoices / interactions files, as for :func:`segml.artifact.load.grade`.

    Returns
    -------
    dict[str, int]
        Customers graded per grade code.

    Raises
    ------
    InputFileError
        Bad input (named), no row survived cleaning, no customer has data on or before the cutoff, or a
        partition column the grades do not have.
    """
    from segml.features import spark_features

    unknown = [c for c in partition_by if c not in PARTITION_COLUMNS]
    if unknown:
        raise InputFileError(
            f"--partition-by: {unknown[0]!r} is not a column to partition grades by "
            f"(one of {', '.join(PARTITION_COLUMNS)})"
        )
    artifact = artifact_dir if isinstance(artifact_dir, GradingArtifact) else load_artifact(artifact_dir)
    if isinstance(mapping, str | Path):
        mapping = read_mapping(mapping)
    target = str(out)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segml-grade-", dir=work_dir) as tmp:
        clean, cutoff = clean_for_grading(
            artifact,
            transactions,
            customers,
            mapping,
            Path(tmp),
            as_of,
            report,
            invoices,
            interactions,
            spark=_ingest_settings(spark),
        )
        schema = _grades_schema(artifact, reasons, cutoff)
        spec = dataclasses.replace(artifact.feature_config, engine="spark")
        undated = artifact.data.customers.undated if artifact.data.customers is not None else "exclude"
        with spark_features(
            clean.transactions,
            cutoff,
            spec,
            clean.customers,
            spark=spark,
            undated=undated if clean.customers is not None else "exclude",
            **clean.event_tables,
        ) as (features, attributes):
            session = features.sparkSession
            grader = _BatchGrader(
                artifact,
                attributes,
                clean.customers is not None,
                reasons,
                cutoff,
                schema,
                with_invoices=clean.invoices is not None,
                with_interactions=clean.interactions is not None,
            )
            graded = features.mapInArrow(grader, _spark_schema(schema))
            if partition_by:
                graded = graded.repartition(*partition_by)
            graded = graded.sortWithinPartitions("customer_id")
            staging = target
            if _is_local(target):
                parent = Path(target.removeprefix("file://")).parent
                parent.mkdir(parents=True, exist_ok=True)
                staging = str(parent / f".{Path(target).name}.{uuid.uuid4().hex}.tmp")
            writer = graded.write.mode("overwrite")
            if partition_by:
                writer = writer.partitionBy(*partition_by)
            try:
                writer.parquet(staging)
                counts = _grade_counts(session, staging)
            except BaseException:
                if staging != target:  # a failed write leaves nothing behind
                    shutil.rmtree(staging, ignore_errors=True)
                raise
    if not counts:
        if staging != target:
            shutil.rmtree(staging, ignore_errors=True)
        raise InputFileError(f"transactions: no customer has data on or before {cutoff}")
    if staging != target:
        final = Path(target.removeprefix("file://"))
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        Path(staging).rename(final)
    return dict(sorted(counts.items()))
