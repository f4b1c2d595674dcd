"""Reading the user's events: path and schema checks first, then one canonical schema.

Users map their column names, format and timestamp format in ``input.events``; everything after
this module sees the canonical columns of ``CANONICAL_SCHEMA``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import (
    CustomersSourceConfig,
    EdgesSourceConfig,
    EventSourceConfig,
    SurveySourceConfig,
)
from segmentation.errors import InputError, TableError
from segmentation.inputs import parsing
from segmentation.storage import delta_tables, tables

log = logging.getLogger(__name__)

ORDER, RETURN, VISIT, OTHER = "order", "return", "visit", "other"

CANONICAL_SCHEMA = tables.CANONICAL_EVENTS

# Arrow / Spark type families accepted for each canonical column.
_NUMERIC = "numeric"
_TEMPORAL = "timestamp, date, string or epoch number"
_EXPECTED = {"amount": _NUMERIC, "quantity": _NUMERIC, "discount": _NUMERIC}


ISSUE = "_issue"
"""The parse issue of an event (a quarantine reason), carried to ``quality.split_events``."""


@dataclass(frozen=True)
class ColumnCounts:
    """How the values of one mapped input column were read."""

    column: str
    """The canonical name (``amount``)."""
    source: str
    """The user's column name (``input.events.columns.<column>``)."""
    parsed: int
    null: int
    """Missing values: null, or empty text."""
    rejected: int
    """Present values that cannot be interpreted (their rows are quarantined where the column
    is needed)."""


@dataclass(frozen=True)
class InputCounts:
    """Counts over all input rows, from one aggregation."""

    rows: int
    columns: tuple[ColumnCounts, ...]
    timed: int
    """Events whose time is not a local midnight (0: the data has days, not times of day)."""

    @property
    def day_level(self) -> bool:
        """The events' times carry no time of day (every parsed time is a local midnight)."""
        parsed = next((c.parsed for c in self.columns if c.column == "event_time"), 0)
        return parsed > 0 and self.timed == 0


@dataclass(frozen=True)
class EventSource:
    """The events read and normalised, plus which optional columns the user's data has."""

    events: DataFrame
    """The canonical columns (``CANONICAL_SCHEMA``) and the parse issue (``ISSUE``)."""
    present: frozenset[str]
    checked: DataFrame
    """The events with per-column flags (missing, rejected), for :meth:`counts`."""
    mapped: dict[str, str]
    time_zone: str = parsing.UTC

    def counts(self) -> InputCounts:
        """Rows, per-column parsed/null/rejected counts and timed events, in one pass of
        their own (:meth:`observed` takes them from another pass instead)."""
        row = self.checked.agg(*self._count_columns()).first()
        assert row is not None
        return self._input_counts(row.asDict())

    def observed(self) -> tuple[DataFrame, Callable[[], InputCounts]]:
        """The canonical events (``events``) with :meth:`counts` attached as observed metrics
        (``DataFrame.observe``), and the function that returns those counts.

        The counts arrive with the first action that reads every row of the returned frame
        (for a persisted frame: the one that fills the cache), so the input is read once for
        both; calling the function before such an action waits for it.
        """
        observation = Observation()
        events = self.checked.observe(observation, *self._count_columns()).select(
            *CANONICAL_SCHEMA.names, ISSUE
        )
        return events, lambda: self._input_counts(observation.get)

    def _count_columns(self) -> list[Column]:
        time = F.col("event_time")
        aggregates = [
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(parsing.has_time_of_day(time, self.time_zone), 1)).alias("timed"),
        ]
        for c in self.mapped:
            aggregates += [
                F.count(F.when(F.col(_flag("null", c)), 1)).alias(f"null_{c}"),
                F.count(F.when(F.col(_flag("bad", c)), 1)).alias(f"bad_{c}"),
            ]
        return aggregates

    def _input_counts(self, row: Mapping[str, Any]) -> InputCounts:
        rows = int(row["rows"])
        columns = tuple(
            ColumnCounts(c, user, rows - row[f"null_{c}"] - row[f"bad_{c}"], int(row[f"null_{c}"]),
                         int(row[f"bad_{c}"]))
            for c, user in self.mapped.items()
        )  # fmt: skip
        return InputCounts(rows=rows, columns=columns, timed=int(row["timed"]))


def _flag(kind: str, column: str) -> str:
    return f"_{kind}_{column}"


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


def read_events(
    spark: SparkSession,
    source: EventSourceConfig,
    path: str,
    *,
    carry: Sequence[tuple[str, str]] = (),
) -> EventSource:
    """Read events from ``path`` and map them to ``CANONICAL_SCHEMA`` (``parsing`` reads ids,
    numbers and times as configured in ``input.events``).

    A present value that cannot be interpreted (a fractional customer id, an amount not in the
    configured number format, a NaN quantity) gives its row an issue (``ISSUE``), which
    ``quality.split_events`` turns into a quarantine reason.

    Args:
        carry: (config key, the user's column) pairs of further raw columns to carry, as read,
            in ``EventSource.checked`` under :func:`carried` names (identity stitching's
            identifier columns).

    Raises:
        InputError: the path is unreadable, or a mapped column is missing or of a wrong type;
            the message names the path or the column and its config key.
    """
    check_source(source, path)
    raw = read_raw(spark, source, path)
    families = {f.name: spark_family(f.dataType) for f in raw.schema.fields}
    _check_columns(source, families, path)
    extra = [_raw_column(raw, user, key, path).alias(carried(i))
             for i, (key, user) in enumerate(carry)]  # fmt: skip
    mapped = source.columns.mapped()
    fields = {f.name.lower(): f for f in raw.schema.fields}
    columns = {c: F.col(f"`{fields[user.lower()].name}`") for c, user in mapped.items()}
    types = {c: fields[user.lower()].dataType for c, user in mapped.items()}
    values, issues, rejected = _canonical(columns, types, source)
    checked = raw.select(
        *[values[c].alias(c) for c in CANONICAL_SCHEMA.names],
        F.coalesce(*issues).alias(ISSUE),
        *_flags(columns, rejected),
        *extra,
    )
    return EventSource(
        events=checked.select(*CANONICAL_SCHEMA.names, ISSUE), present=frozenset(mapped),
        checked=checked, mapped=mapped, time_zone=source.time_zone,
    )  # fmt: skip


def carried(index: int) -> str:
    """The name of the ``index``-th carried column in ``EventSource.checked``."""
    return f"_carry_{index}"


def _raw_column(raw: DataFrame, user: str, key: str, path: str) -> Column:
    by_lower = {f.name.lower(): f.name for f in raw.schema.fields}
    name = by_lower.get(user.lower())
    if name is None:
        raise InputError(
            f"column '{user}' ({key}) is not in {path}; its columns are: "
            f"{', '.join(sorted(raw.columns))}"
        )
    return F.col(f"`{name}`")


def _canonical(
    columns: dict[str, Column], types: dict[str, T.DataType], source: EventSourceConfig
) -> tuple[dict[str, Column], list[Column], dict[str, Column]]:
    """The canonical value of every column, the parse issues, and per mapped column the
    condition under which a present value is rejected."""
    fmt = parsing.NumberFormat(
        source.decimal_separator, source.thousands_separator, source.currency_symbols
    )
    customer = parsing.customer_id(columns["customer_id"], types["customer_id"])
    amount = parsing.number(
        columns["amount"], types["amount"], fmt, issue=parsing.UNPARSEABLE_AMOUNT
    )
    time = parsing.event_time(
        columns["event_time"], types["event_time"], timestamp_format=source.timestamp_format,
        time_zone=source.time_zone,
    )  # fmt: skip
    optional = {
        name: _optional_number(columns[name], types[name], fmt, issue=issue)
        for name, issue in (("quantity", parsing.INVALID_QUANTITY),
                            ("discount", parsing.INVALID_DISCOUNT))
        if name in columns
    }  # fmt: skip
    none_text, none_number = F.lit(None).cast("string"), F.lit(None).cast("double")

    def text(name: str, *, lower: bool = True) -> Column:
        if name not in columns:
            return none_text
        value = parsing.blank_is_null(columns[name])
        return F.lower(value) if lower else value

    values = {
        "customer_id": customer.value, "event_time": time, "amount": amount.value,
        "event_type": _event_type(columns.get("event_type"), source, amount.value),
        "category": text("category"), "channel": text("channel"), "device": text("device"),
        "quantity": optional["quantity"].value if "quantity" in optional else none_number,
        "discount": optional["discount"].value if "discount" in optional else none_number,
        "event_id": text("event_id", lower=False),
    }  # fmt: skip
    issues = [customer.issue, amount.issue, *[p.issue for p in optional.values()]]
    rejected = {"customer_id": customer.issue.isNotNull(), "event_time": time.isNull(),
                "amount": amount.issue.isNotNull() | ~parsing.finite(amount.value),
                **{n: p.issue.isNotNull() for n, p in optional.items()}}  # fmt: skip
    return values, issues, rejected


def _flags(raw: dict[str, Column], rejected: dict[str, Column]) -> list[Column]:
    """Per mapped column: missing (null or empty text), and present but rejected."""
    flags = []
    for c, column in raw.items():
        missing = parsing.blank_is_null(column).isNull()
        bad = ~missing & rejected.get(c, F.lit(False))
        flags += [missing.alias(_flag("null", c)), bad.alias(_flag("bad", c))]
    return flags


def _optional_number(
    column: Column, data_type: T.DataType, fmt: parsing.NumberFormat, *, issue: str
) -> parsing.Parsed:
    """A quantity or discount: NaN and infinity are issues too (they cannot be counted)."""
    parsed = parsing.number(column, data_type, fmt, issue=issue)
    non_finite = F.when(~parsing.finite(parsed.value), F.lit(issue))
    return parsing.Parsed(parsed.value, F.coalesce(parsed.issue, non_finite))


def read_raw(
    spark: SparkSession,
    source: EventSourceConfig | CustomersSourceConfig | SurveySourceConfig | EdgesSourceConfig,
    path: str,
) -> DataFrame:
    """The user's rows as Spark reads them; a Delta input through Delta itself, so deletion
    vectors and column mapping are honoured (deleted rows never come back).

    Raises:
        InputError: the path cannot be read in the configured format.
    """
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
        if canonical == "event_time" and family == "numeric" and source.timestamp_format not in (
            "epoch_seconds", "epoch_millis"
        ):  # fmt: skip
            raise InputError(
                f"column '{user}' (input.events.columns.event_time) is numeric: set "
                "input.events.timestamp_format to epoch_seconds or epoch_millis"
            )
        if canonical == "customer_id" and family not in ("string", "numeric"):
            raise InputError(
                f"column '{user}' (input.events.columns.customer_id) must be text or a number, "
                f"found {family}"
            )


def _event_type(column: Column | None, source: EventSourceConfig, amount: Column) -> Column:
    """order / return / visit / other from the configured raw values (compared lower-cased,
    trimmed); without an event_type column every event is an order. With
    ``input.events.negative_amounts: return``, a negative amount on a row without a type is a
    return (or cancellation)."""
    types = source.event_types
    if column is None:
        kind: Column = F.lit(ORDER)
        untyped: Column = F.lit(True)
    else:
        value = F.lower(parsing.blank_is_null(column))
        kind = (
            F.when(value.isin(*[t.lower() for t in types.order]), F.lit(ORDER))
            .when(value.isin(*[t.lower() for t in types.return_]), F.lit(RETURN))
            .when(value.isin(*[t.lower() for t in types.visit]), F.lit(VISIT))
            .otherwise(F.lit(OTHER))
        )
        untyped = value.isNull()
    if source.negative_amounts == "return":
        kind = F.when(untyped & (amount < 0), F.lit(RETURN)).otherwise(kind)
    return kind


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


def spark_family(data_type: T.DataType) -> str:
    """The type family of a Spark type: numeric, timestamp, date, string or its own name."""
    if isinstance(data_type, T.NumericType):
        return "numeric"
    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        return "timestamp"
    if isinstance(data_type, T.DateType):
        return "date"
    if isinstance(data_type, T.StringType):
        return "string"
    return data_type.simpleString()
