"""Reading the user's events: path and schema checks first, then one canonical schema.

Users map their column names, format and timestamp format in ``input.events``; everything after
this module sees the canonical columns of ``CANONICAL_SCHEMA``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import (
    ConsentSourceConfig,
    CustomersSourceConfig,
    EdgesSourceConfig,
    EventSourceConfig,
    SuppressionSourceConfig,
    SurveySourceConfig,
)
from segmentation.config.types import strip_blank
from segmentation.errors import InputError, TableError
from segmentation.inputs import parsing
from segmentation.inputs.columns import check_columns, check_source, header_key, spark_family
from segmentation.storage import delta_tables, tables

log = logging.getLogger(__name__)

ORDER, RETURN, VISIT, OTHER = "order", "return", "visit", "other"

CANONICAL_SCHEMA = tables.CANONICAL_EVENTS


ISSUE = "_issue"
"""The parse issue of an event (a quarantine reason), carried to ``quality.split_events``."""
RAW = "raw_values"
"""The user's text of every mapped column (canonical name -> text), on rows whose values could
not all be read: what ``rejected_events`` shows, so the user finds the value to fix."""


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
    scanned_twice: DataFrame | None = None
    """A frame that the plan of ``events`` reads twice (the stitched key: the identifier
    combinations, then the join back): whoever stages the events may persist it for the
    staging's pass and release it after (``identity.stitched.stage``)."""
    extra: tuple[str, ...] = ()
    """Further columns of ``checked`` that ``events`` carries (the stitched key's ``raw_id``),
    staged with the events and dropped by ``quality.split_staged`` unless it is asked for
    them."""

    def counts(self) -> InputCounts:
        """Rows, per-column parsed/null/rejected counts and timed events, in one pass of
        their own (:meth:`observed` takes them from another pass instead)."""
        row = self.checked.agg(*self._count_columns()).first()
        assert row is not None
        return self._input_counts(row.asDict())

    def columns(self) -> DataFrame:
        """The canonical events with ``ISSUE``, ``RAW`` and :attr:`extra` (what
        :meth:`observed` returns, without the counts)."""
        return self.checked.select(*self._names())

    def _names(self) -> list[str]:
        return [*CANONICAL_SCHEMA.names, ISSUE, RAW, *self.extra]

    def observed(self) -> tuple[DataFrame, Callable[[], InputCounts]]:
        """The canonical events (``events``) with :meth:`counts` attached as observed metrics
        (``DataFrame.observe``), and the function that returns those counts.

        The counts arrive with the first action that reads every row of the returned frame
        (for a persisted frame: the one that fills the cache), so the input is read once for
        both; calling the function before such an action waits for it.
        """
        observation = Observation()
        observed = self.checked.observe(observation, *self._count_columns())
        events = observed.select(*self._names())
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


def read_events(
    spark: SparkSession,
    source: EventSourceConfig,
    path: str,
    *,
    carry: Sequence[tuple[str, str]] = (),
    raw: DataFrame | None = None,
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
        raw: these rows (``read_raw``'s, of part of the input) instead of the whole input.

    Raises:
        InputError: the path is unreadable, or a mapped column is missing or of a wrong type;
            the message names the path or the column and its config key.
    """
    arrow = check_source(source, path)
    if raw is None:
        raw = read_raw(spark, source, path)
    else:
        raw = _trimmed_names(raw, path)
    longs = {f.name for f in raw.schema.fields if isinstance(f.dataType, T.LongType)}
    # Only where Spark read the column as the nanoseconds it holds (INT96 is read as a time).
    nanos = {name: utc for name, utc in _nanosecond_times(arrow).items() if name in longs}
    families = {f.name: "timestamp" if f.name in nanos else spark_family(f.dataType)
                for f in raw.schema.fields}  # fmt: skip
    check_columns(source, families, path)
    fields = {header_key(f.name): f for f in raw.schema.fields}
    extra = [_raw_column(fields, user, key, path).alias(carried(i))
             for i, (key, user) in enumerate(carry)]  # fmt: skip
    mapped = source.columns.mapped()
    columns = {c: F.col(f"`{fields[header_key(user)].name}`") for c, user in mapped.items()}
    types = {c: fields[header_key(user)].dataType for c, user in mapped.items()}
    user_time = fields[header_key(mapped["event_time"])].name
    values, issues = _canonical(columns, types, source, nanos.get(user_time))
    checked = _checked(raw, columns, types, values, issues, extra)
    return EventSource(
        events=checked.select(*CANONICAL_SCHEMA.names, ISSUE, RAW), present=frozenset(mapped),
        checked=checked, mapped=mapped, time_zone=source.time_zone,
    )  # fmt: skip


def carried(index: int) -> str:
    """The name of the ``index``-th carried column in ``EventSource.checked``."""
    return f"_carry_{index}"


def _raw_column(fields: Mapping[str, T.StructField], user: str, key: str, path: str) -> Column:
    """The user's column ``user`` among ``fields`` (keyed by ``header_key``, as read_events
    matches the mapped columns)."""
    found = fields.get(header_key(user))
    if found is None:
        names = sorted(f.name for f in fields.values())
        raise InputError(
            f"column '{user}' ({key}) is not in {path}; its columns are: "
            f"{', '.join(repr(c) for c in names)}"
        )
    return F.col(f"`{found.name}`")


def _nanosecond_times(schema: pa.Schema | None) -> dict[str, bool]:
    """The Parquet columns written as INT64 TIMESTAMP(NANOS) (pandas' default), which Spark
    reads as the nanoseconds they hold (``spark.sql.legacy.parquet.nanosAsLong``): name ->
    whether the values are UTC instants (``isAdjustedToUTC``, a time zone in Arrow)."""
    if schema is None:
        return {}
    return {
        strip_blank(f.name): f.type.tz is not None
        for f in schema
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
    }


def _canonical(
    columns: dict[str, Column],
    types: dict[str, T.DataType],
    source: EventSourceConfig,
    nanos_utc: bool | None = None,
) -> tuple[dict[str, Column], dict[str, Column]]:
    """The canonical value of every column and the parse issues (``customer_id``,
    ``amount``, the optional numbers; coalesced in this order). ``nanos_utc`` (not None):
    the time column holds Parquet nanosecond timestamps, UTC instants or (False) local
    times."""
    fmt = parsing.NumberFormat(
        source.decimal_separator, source.thousands_separator, source.currency_symbols
    )
    customer = parsing.customer_id(columns["customer_id"], types["customer_id"])
    amount = parsing.number(
        columns["amount"], types["amount"], fmt, issue=parsing.UNPARSEABLE_AMOUNT
    )
    if nanos_utc is None:
        time = parsing.event_time(
            columns["event_time"], types["event_time"], timestamp_format=source.timestamp_format,
            time_zone=source.time_zone,
        )  # fmt: skip
    else:
        time = parsing.epoch(columns["event_time"], "epoch_nanos")
        time = time if nanos_utc else parsing.wall_clock(time, source.time_zone)
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
    issues = {"customer_id": customer.issue, "amount": amount.issue,
              **{n: p.issue for n, p in optional.items()}}  # fmt: skip
    return values, issues


def _checked(
    raw: DataFrame,
    columns: dict[str, Column],
    types: dict[str, T.DataType],
    values: dict[str, Column],
    issues: dict[str, Column],
    extra: list[Column],
) -> DataFrame:
    """``EventSource.checked``: the canonical values, ``ISSUE``, ``RAW``, per mapped column
    the flags (missing; present but rejected) and ``extra``, in two projections. The first
    parses each value once; the second derives the rest from the parsed columns (in one
    projection, Spark parsed a value again at each reference: 8.0 s where the canonical
    columns alone took 2.4 s on a million events)."""
    issue = {c: f"__issue_{c}" for c in issues}
    kept = {c: f"__raw_{c}" for c in columns}
    missing = {c: f"__missing_{c}" for c in columns}
    parsed = raw.select(
        *[values[c].alias(c) for c in CANONICAL_SCHEMA.names],
        *[v.alias(issue[c]) for c, v in issues.items()],
        *[col.alias(kept[c]) for c, col in columns.items()],
        *[_missing(col, types[c]).alias(missing[c]) for c, col in columns.items()],
        *extra,
    )
    found = {c: F.col(name) for c, name in issue.items()}
    rejected = {c: v.isNotNull() for c, v in found.items()}
    rejected["event_time"] = F.col("event_time").isNull()
    rejected["amount"] = rejected["amount"] | ~parsing.finite(F.col("amount"))
    unreadable = F.coalesce(*found.values()).isNotNull() | F.col("event_time").isNull()
    unreadable = unreadable | F.col("customer_id").isNull() | F.col("amount").isNull()
    raw_text = F.create_map(
        *[x for c, name in kept.items() for x in (F.lit(c), F.col(name).cast("string"))]
    )
    flags = []
    for c in columns:
        null = F.col(missing[c])
        flags += [null.alias(_flag("null", c)),
                  (~null & rejected.get(c, F.lit(False))).alias(_flag("bad", c))]  # fmt: skip
    return parsed.select(
        *CANONICAL_SCHEMA.names,
        F.coalesce(*found.values()).alias(ISSUE),
        F.when(unreadable, raw_text).alias(RAW),
        *flags,
        *[carried(i) for i in range(len(extra))],
    )


def _missing(column: Column, data_type: T.DataType) -> Column:
    """The raw value is missing: null, or text of blanks only (``parsing.blank_is_null``; the
    text of a number, time or boolean is never blank)."""
    if isinstance(data_type, T.NumericType | T.TimestampType | T.TimestampNTZType | T.DateType
                  | T.BooleanType):  # fmt: skip
        return column.isNull()
    return column.isNull() | (parsing.trim_blank(column) == "")


def _optional_number(
    column: Column, data_type: T.DataType, fmt: parsing.NumberFormat, *, issue: str
) -> parsing.Parsed:
    """A quantity or discount: NaN and infinity are issues too (they cannot be counted)."""
    parsed = parsing.number(column, data_type, fmt, issue=issue)
    non_finite = F.when(~parsing.finite(parsed.value), F.lit(issue))
    return parsing.Parsed(parsed.value, F.coalesce(parsed.issue, non_finite))


def read_raw(
    spark: SparkSession,
    source: EventSourceConfig
    | CustomersSourceConfig
    | SurveySourceConfig
    | EdgesSourceConfig
    | ConsentSourceConfig
    | SuppressionSourceConfig,
    path: str,
    *,
    files: Sequence[str] | None = None,
    schema: T.StructType | None = None,
    trim: bool = True,
) -> DataFrame:
    """The user's rows as Spark reads them; a Delta input through Delta itself, so deletion
    vectors and column mapping are honoured (deleted rows never come back).

    ``files``: only these files under ``path`` (a CSV, JSON or Parquet input; partition
    columns still discovered from ``path``), as an incremental feature run reads new files;
    ``schema``: read them with it (the whole input's, so a new file's own types never decide);
    ``trim``: False keeps the names as stored (the schema to read part of the input with).

    Raises:
        InputError: the path cannot be read in the configured format.
    """
    try:
        if source.format == "delta":
            raw = delta_tables.read(spark, path)
        else:
            reader = spark.read.options(**dict(source.options))
            where: str | list[str] = path
            if files is not None:
                reader, where = reader.option("basePath", path), list(files)
            if schema is not None:
                reader = reader.schema(schema)
            if source.format == "csv":
                raw = reader.option("header", source.options.get("header", "true")).csv(where)
            elif source.format == "json":
                raw = reader.json(where)
            else:
                raw = reader.parquet(*([where] if isinstance(where, str) else where))
    except AnalysisException as exc:
        raise InputError(f"cannot read input path {path} as {source.format}: {exc}") from exc
    except TableError as exc:
        raise InputError(f"cannot read input path {path}: {exc}") from exc
    return _trimmed_names(raw, path) if trim else raw


def _trimmed_names(raw: DataFrame, path: str) -> DataFrame:
    """The columns renamed without leading or trailing blanks (a hand-edited CSV header
    ``customer_id, event_time``), so every mapping matches them; two names that become one
    are an error naming both."""
    names = {c: strip_blank(c) for c in raw.columns}
    if all(old == new for old, new in names.items()):
        return raw
    seen: dict[str, str] = {}
    for old, new in names.items():
        if new.lower() in seen:
            raise InputError(
                f"input path {path}: columns {seen[new.lower()]!r} and {old!r} are the same "
                "name once leading and trailing blanks are removed; rename one"
            )
        seen[new.lower()] = old
    return raw.select(*[F.col(f"`{old}`").alias(new) for old, new in names.items()])


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

        def listed(values: tuple[str, ...]) -> Column:
            return value.isin(*[strip_blank(v).lower() for v in values])

        kind = (
            F.when(listed(types.order), F.lit(ORDER))
            .when(listed(types.return_), F.lit(RETURN))
            .when(listed(types.visit), F.lit(VISIT))
            .otherwise(F.lit(OTHER))
        )
        untyped = value.isNull()
    if source.negative_amounts == "return":
        kind = F.when(untyped & (amount < 0), F.lit(RETURN)).otherwise(kind)
    return kind
