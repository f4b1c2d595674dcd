"""Reading the user's events: path and schema checks first, then one canonical schema.

Users map their column names, format and timestamp format in ``input.events``; everything after
this module sees the canonical columns of ``CANONICAL_SCHEMA``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation import delta_tables, tables
from segmentation.config import (
    CustomersSourceConfig,
    EventSourceConfig,
    EventTypes,
    SurveySourceConfig,
)
from segmentation.errors import InputError, TableError

ORDER, RETURN, VISIT, OTHER = "order", "return", "visit", "other"

CANONICAL_SCHEMA = tables.CANONICAL_EVENTS

# Arrow / Spark type families accepted for each canonical column.
_NUMERIC = "numeric"
_TEMPORAL = "timestamp, date, string or epoch number"
_EXPECTED = {"amount": _NUMERIC, "quantity": _NUMERIC, "discount": _NUMERIC}


@dataclass(frozen=True)
class EventSource:
    """The events read and normalised, plus which optional columns the user's data has."""

    events: DataFrame
    present: frozenset[str]


def check_source(source: EventSourceConfig, path: str) -> pa.Schema | None:
    """Fail fast, before any Spark job, if the path is unreadable or a mapped column is missing.

    Returns the source's Arrow schema where it can be read without Spark (Parquet), else None
    (Delta, CSV, JSON: their columns are checked when Spark reads the table's schema).
    """
    if "://" not in path and not os.path.exists(path):
        raise InputError(
            f"input path not found: {path} (config key input.events.path; "
            "run `make run` to generate the sample, or point the key at your events)"
        )
    schema: pa.Schema | None = None
    if source.format == "delta" and "://" not in path:
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            raise InputError(
                f"input path {path} is not a Delta table (no _delta_log; input.events.format "
                "is 'delta'): set input.events.format to the files' format"
            )
    elif source.format == "parquet" and "://" not in path:
        try:
            schema = pads.dataset(path, format="parquet", partitioning="hive").schema
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"input path {path} is not readable as Parquet: {exc}") from exc
    if schema is not None:
        _check_columns(source, {f.name: _family_arrow(f.type) for f in schema}, path)
    return schema


def read_events(spark: SparkSession, source: EventSourceConfig, path: str) -> EventSource:
    """Read events from ``path`` and map them to ``CANONICAL_SCHEMA``.

    Raises:
        InputError: the path is unreadable, or a mapped column is missing or of a wrong type;
            the message names the path or the column and its config key.
    """
    check_source(source, path)
    raw = _read_raw(spark, source, path)
    families = {f.name: _family_spark(f.dataType) for f in raw.schema.fields}
    _check_columns(source, families, path)
    mapped = source.columns.mapped()
    by_lower = {c.lower(): c for c in raw.columns}

    def col(canonical: str) -> Column | None:
        user = mapped.get(canonical)
        return F.col(f"`{by_lower[user.lower()]}`") if user else None

    customer = col("customer_id")
    assert customer is not None
    amount = col("amount")
    assert amount is not None
    event_time = _parse_time(col("event_time"), families, mapped["event_time"], source)
    event_type = col("event_type")

    def text(canonical: str) -> Column:
        c = col(canonical)
        return F.lower(F.trim(c.cast("string"))) if c is not None else F.lit(None).cast("string")

    def text_or_null(c: Column | None) -> Column:
        return c.cast("string") if c is not None else F.lit(None).cast("string")

    def number(canonical: str) -> Column:
        c = col(canonical)
        return c.try_cast("double") if c is not None else F.lit(None).cast("double")

    events = raw.select(
        F.trim(customer.cast("string")).alias("customer_id"),
        event_time.alias("event_time"),
        amount.try_cast("double").alias("amount"),
        (
            _event_type(event_type, source.event_types) if event_type is not None else F.lit(ORDER)
        ).alias("event_type"),
        text("category").alias("category"),
        text("channel").alias("channel"),
        text("device").alias("device"),
        number("quantity").alias("quantity"),
        number("discount").alias("discount"),
        text_or_null(col("event_id")).alias("event_id"),
    )
    return EventSource(events=events, present=frozenset(mapped))


def read_customers(
    spark: SparkSession, source: CustomersSourceConfig, path: str | None
) -> DataFrame | None:
    """The customers dimension with ``customer_id`` as a trimmed string, or None without one.

    A configured path that cannot be read is an error; the generator's default table that does
    not exist (yet) just means there is no dimension.

    Raises:
        InputError: unreadable path, missing id column, or customer ids that repeat (the
            message gives the count and examples).
    """
    if path is None:
        return None
    if "://" not in path and not os.path.exists(path):
        if source.path:
            raise InputError(f"input.customers.path {path} does not exist")
        return None
    return _read_per_customer(spark, source, path, "customers dimension", "input.customers")


def read_survey(spark: SparkSession, source: SurveySourceConfig, path: str) -> DataFrame:
    """The survey table (one row per respondent), ``customer_id`` normalised as the events' ids
    are (trimmed text); every other column as the source holds it.

    Raises:
        InputError: no table at ``path``, missing id column, or respondent ids that repeat.
    """
    if "://" not in path and not os.path.exists(path):
        hint = (
            "attitudes.survey.path" if source.path else
            "attitudes.survey.path is null: the generator's table; run `make run` or "
            "jobs/generate_events.py first"
        )  # fmt: skip
        raise InputError(f"survey table not found: {path} ({hint})")
    return _read_per_customer(spark, source, path, "survey table", "attitudes.survey")


def _read_per_customer(
    spark: SparkSession,
    source: CustomersSourceConfig | SurveySourceConfig,
    path: str,
    what: str,
    key: str,
) -> DataFrame:
    """One row per customer: the id column as a trimmed string named ``customer_id``."""
    raw = _read_raw(spark, source, path)
    by_lower = {c.lower(): c for c in raw.columns}
    id_col = by_lower.get(source.customer_id.lower())
    if id_col is None:
        raise InputError(
            f"{what} {path} has no column {source.customer_id!r} ({key}.customer_id); "
            f"columns: {', '.join(raw.columns)}"
        )
    rows = raw.select(
        F.trim(F.col(f"`{id_col}`").cast("string")).alias("customer_id"),
        *[F.col(f"`{c}`") for c in raw.columns if c != id_col and c.lower() != "customer_id"],
    )
    repeated = (
        rows.where(F.col("customer_id").isNotNull())
        .groupBy("customer_id")
        .count()
        .where(F.col("count") > 1)
        .limit(5)
        .collect()
    )
    if repeated:
        examples = ", ".join(f"{r['customer_id']!r} ({r['count']} rows)" for r in repeated)
        raise InputError(f"{what} {path} must hold one row per customer; repeated ids: {examples}")
    return rows


def _read_raw(
    spark: SparkSession,
    source: EventSourceConfig | CustomersSourceConfig | SurveySourceConfig,
    path: str,
) -> DataFrame:
    """The user's rows as Spark reads them; a Delta input through Delta itself, so deletion
    vectors and column mapping are honoured (deleted rows never come back)."""
    try:
        if source.format == "delta":
            return delta_tables.read(spark, path)
        reader = spark.read.options(**dict(source.options))
        if source.format == "csv":
            return reader.option("header", source.options.get("header", "true")).csv(path)
        if source.format == "json":
            return reader.json(path)
        return reader.parquet(path)
    except AnalysisException as exc:
        raise InputError(f"cannot read input path {path} as {source.format}: {exc}") from exc
    except TableError as exc:
        raise InputError(f"cannot read input path {path}: {exc}") from exc


def _check_columns(source: EventSourceConfig, families: dict[str, str], path: str) -> None:
    by_lower = {name.lower(): family for name, family in families.items()}
    for canonical, user in source.columns.mapped().items():
        family = by_lower.get(user.lower())
        if family is None:
            raise InputError(
                f"column '{user}' (config key input.events.columns.{canonical}) is not in "
                f"{path}; its columns are: {', '.join(sorted(families))}"
            )
        expected = _EXPECTED.get(canonical)
        if expected == _NUMERIC and family not in ("numeric", "string"):
            raise InputError(
                f"column '{user}' (input.events.columns.{canonical}) must be numeric, "
                f"found {family}"
            )
        if canonical == "event_time" and family not in ("timestamp", "date", "string", "numeric"):
            raise InputError(
                f"column '{user}' (input.events.columns.event_time) must be a {_TEMPORAL}, "
                f"found {family}"
            )


def _parse_time(
    column: Column | None, families: dict[str, str], user_name: str, source: EventSourceConfig
) -> Column:
    assert column is not None
    family = {k.lower(): v for k, v in families.items()}[user_name.lower()]
    fmt = source.timestamp_format
    if fmt == "epoch_seconds":
        return F.timestamp_seconds(column.try_cast("double"))
    if fmt == "epoch_millis":
        return F.timestamp_millis(column.try_cast("long"))
    if family in ("timestamp", "date"):
        return column.try_cast("timestamp")
    if family == "numeric":
        raise InputError(
            f"column '{user_name}' (input.events.columns.event_time) is numeric: set "
            "input.events.timestamp_format to epoch_seconds or epoch_millis"
        )
    text = F.trim(column.cast("string"))
    # try_to_timestamp: an unparseable value becomes null (and is reported), not a job failure.
    return F.try_to_timestamp(text, F.lit(fmt)) if fmt else F.try_to_timestamp(text)


def _event_type(column: Column, types: EventTypes) -> Column:
    value = F.lower(F.trim(column.cast("string")))
    return (
        F.when(value.isin(*[t.lower() for t in types.order]), F.lit(ORDER))
        .when(value.isin(*[t.lower() for t in types.return_]), F.lit(RETURN))
        .when(value.isin(*[t.lower() for t in types.visit]), F.lit(VISIT))
        .otherwise(F.lit(OTHER))
    )


def _family_arrow(data_type: pa.DataType) -> str:
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return "numeric"
    if pa.types.is_decimal(data_type):
        return "numeric"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_dictionary(data_type):
        return _family_arrow(data_type.value_type)
    return str(data_type)


def _family_spark(data_type: T.DataType) -> str:
    if isinstance(data_type, T.NumericType):
        return "numeric"
    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        return "timestamp"
    if isinstance(data_type, T.DateType):
        return "date"
    if isinstance(data_type, T.StringType):
        return "string"
    return data_type.simpleString()
