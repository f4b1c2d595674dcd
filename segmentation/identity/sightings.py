"""Where identifiers are seen: the identifier columns of every input, normalised, one row per
input row with the identifiers it holds (they belong together) and when it was seen.

Inputs: the events (``identity.identifiers``; seen at the event's time, only events on or
before ``features.as_of``), the customers dimension (``identity.customers``) and the survey
(``identity.survey``), both undated, and the edges input (``identity.edges``: pairs, or
groups, of identifiers known to belong together, optionally dated). Per input column the
values that are identifiers, missing, placeholders and invalid are counted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, Identifier, IdentityConfig
from segmentation.config.identity import EdgesSourceConfig
from segmentation.errors import InputError
from segmentation.identity.normalise import MISSING, PLACEHOLDER, Spec, normalised_frame
from segmentation.inputs import parsing, sources
from segmentation.inputs.columns import find_column
from segmentation.runtime.blocks import SharedWithin
from segmentation.storage import delta_tables

IDS = "ids"
"""The row's identifiers: ``array<struct<identifier_type, identifier>>``, distinct."""
SEEN = "seen"
"""When the row was seen (TIMESTAMP; null: undated)."""
KIND, VALUE = "identifier_type", "identifier"


@dataclass(frozen=True)
class ColumnCounts:
    """How one identifier column of one input was read."""

    source: str
    """``events``, ``customers``, ``survey`` or ``edges``."""
    column: str
    kind: str
    identifiers: int
    missing: int
    placeholder: int
    invalid: int


@dataclass(frozen=True)
class Sightings:
    """Every input's rows of identifiers (persisted: call :meth:`unpersist`) and counts."""

    rows: DataFrame
    """``ids`` and ``seen``, one row per input row holding at least one identifier."""
    counts: tuple[ColumnCounts, ...]
    parts: tuple[DataFrame, ...] = ()

    def unpersist(self) -> None:
        for part in self.parts:
            part.unpersist()


@dataclass(frozen=True)
class _Input:
    name: str
    frame: DataFrame
    identifiers: Sequence[Identifier]
    columns: Sequence[str]
    """The frame's column holding each identifier."""
    seen: Column
    key: str
    normalised: bool = False
    """The frame holds each identifier normalised (:func:`normalised_events`' columns)."""


@dataclass(frozen=True)
class NormalisedEvents:
    """The events as ``sources.read_events`` reads them, the identifier columns carried
    (``sources.carried(i)``), normalised (:func:`value_column`) and their statuses
    (:func:`status_column`)."""

    source: sources.EventSource
    frame: DataFrame
    """``source.checked`` and the normalised columns."""
    shared: bool
    """Persisted by :func:`sharing` for the block: not the caller's to persist or release."""


def value_column(i: int) -> str:
    """The normalised value of the ``i``-th of ``identity.identifiers`` (null: none)."""
    return f"_n{i}"


def status_column(i: int) -> str:
    """Its status (``normalise.Spec.status``)."""
    return f"_s{i}"


_EVENTS: SharedWithin[NormalisedEvents] = SharedWithin(lambda events: events.frame.unpersist())


def sharing() -> contextlib.AbstractContextManager[None]:
    """Within the block, the events' identifier columns are read and normalised once per
    configuration (the events' location and mapping, the stitching) and persisted, for every
    date: the identity job and the keyed read of the feature job, customer value and
    assignment (``keying.keyed_source``) read them. The input must not change inside the
    block (``make run`` after its generation); the block's end releases them."""
    return _EVENTS.block()


def normalised_events(
    spark: SparkSession, cfg: AppConfig, identity: IdentityConfig, *, raw: DataFrame | None = None
) -> NormalisedEvents:
    """The events with their identifier columns normalised (``raw``: these input rows only);
    within :func:`sharing` and without ``raw``, the block's persisted read.

    Raises:
        InputError: as ``sources.read_events``, or an identifier column neither text nor a
            number.
    """
    ev = cfg.input.events
    carry = [(f"identity.identifiers[{i}].column", ident.column)
             for i, ident in enumerate(identity.identifiers)]  # fmt: skip

    def read(shared: bool) -> NormalisedEvents:
        source = sources.read_events(spark, ev, cfg.events_path(), carry=carry, raw=raw)
        specs = [Spec(sources.carried(i), ident.type, key, value_column(i), status_column(i))
                 for i, ((key, _), ident) in enumerate(zip(carry, identity.identifiers,
                                                           strict=True))]  # fmt: skip
        frame = normalised_frame(source.checked, specs, identity)
        return NormalisedEvents(source, frame.persist(StorageLevel.MEMORY_AND_DISK) if shared
                                else frame, shared)  # fmt: skip

    if raw is not None or not _EVENTS.open:
        return read(False)
    key = (cfg.events_path(), ev.model_dump_json(), identity.model_dump_json())
    return _EVENTS.get(key, lambda: read(True))


def read(spark: SparkSession, cfg: AppConfig, identity: IdentityConfig) -> Sightings:
    """Every configured input's identifier rows as of ``features.as_of`` and their counts.

    Raises:
        InputError: an input or a mapped identifier column is missing (the message names the
            config key), or a column is neither text nor a number.
    """
    inputs = [_events(spark, cfg, identity)]
    inputs += [i for i in (_customers(spark, cfg, identity), _survey(spark, cfg, identity),
                           _edges(spark, cfg, identity)) if i is not None]  # fmt: skip
    parts, persisted, counts = [], [], []
    for source in inputs:
        part, part_counts, frame = _normalised(source, identity)
        parts.append(part)
        persisted.append(frame)
        counts += part_counts
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    return Sightings(rows.where(F.size(IDS) > 0), tuple(counts), tuple(persisted))


def rows_of(
    frame: DataFrame,
    identifiers: Sequence[Identifier],
    identity: IdentityConfig,
    *,
    seen: Column | None = None,
    name: str = "rows",
) -> tuple[DataFrame, list[ColumnCounts]]:
    """Identifier rows (``ids``, ``seen``) of any frame whose columns are named by
    ``identifiers``, and their counts: what :func:`read` does for each input. The rows are read
    from a persisted frame that only ``spark.catalog.clearCache()`` releases: for small frames."""
    seen = F.lit(None).cast("timestamp") if seen is None else seen
    columns = [i.column for i in identifiers]
    rows, counts, _ = _normalised(_Input(name, frame, identifiers, columns, seen, ""), identity)
    return rows, counts


def _normalised(
    source: _Input, identity: IdentityConfig
) -> tuple[DataFrame, list[ColumnCounts], DataFrame]:
    """The input's rows with normalised identifiers, per column its counts, and the persisted
    frame they are read from (unpersisting a projection of it would release nothing)."""
    n = len(source.identifiers)
    frame = source.frame
    if not source.normalised:
        specs = [Spec(column, ident.type, f"{source.key}[{i}].column" if source.key else
                      source.name, value_column(i), status_column(i))
                 for i, (ident, column) in enumerate(zip(source.identifiers, source.columns,
                                                         strict=True))]  # fmt: skip
        frame = normalised_frame(frame, specs, identity)
    values = [F.struct(F.lit(ident.type).alias(KIND), F.col(value_column(i)).alias(VALUE))
              for i, ident in enumerate(source.identifiers)]  # fmt: skip
    statuses = [F.col(status_column(i)).alias(f"_status_{i}") for i in range(n)]
    ids = F.array_distinct(F.filter(F.array(*values), lambda x: x[VALUE].isNotNull()))
    part = frame.select(ids.alias(IDS), source.seen.alias(SEEN), *statuses).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    aggregates = []
    for i in range(len(source.identifiers)):
        status = F.col(f"_status_{i}")
        aggregates += [
            F.count(F.when(status.isNull(), 1)).alias(f"ok_{i}"),
            *[F.count(F.when(status == s, 1)).alias(f"{s}_{i}") for s in (MISSING, PLACEHOLDER)],
            F.count(F.when(status == "invalid", 1)).alias(f"invalid_{i}"),
        ]
    row = part.agg(*aggregates).first()
    assert row is not None
    counts = [
        ColumnCounts(source.name, ident.column, ident.type, int(row[f"ok_{i}"]),
                     int(row[f"missing_{i}"]), int(row[f"placeholder_{i}"]),
                     int(row[f"invalid_{i}"]))
        for i, ident in enumerate(source.identifiers)
    ]  # fmt: skip
    return part.select(IDS, SEEN), counts, part


def _events(spark: SparkSession, cfg: AppConfig, identity: IdentityConfig) -> _Input:
    """The events' identifier columns, seen at the event's time, up to ``features.as_of``."""
    read = normalised_events(spark, cfg, identity)
    time = F.col("event_time")
    on_or_before = parsing.local_date(time, cfg.input.events.time_zone) <= F.lit(cfg.features.as_of)
    frame = read.frame.where(time.isNotNull() & on_or_before)
    columns = [sources.carried(i) for i in range(len(identity.identifiers))]
    return _Input("events", frame, identity.identifiers, columns, time, "identity.identifiers",
                  normalised=True)  # fmt: skip


def seen_after(
    spark: SparkSession, cfg: AppConfig, identity: IdentityConfig, after: dt.date
) -> str | None:
    """The first input, ``events`` or ``edges``, holding a row seen on a local day after
    ``after`` and up to ``features.as_of`` (None: none). Without one, the identifier rows of
    :func:`read` as of ``after`` and as of ``features.as_of`` are the same, provided the inputs
    did not change in between (the customers dimension and the survey are undated)."""
    zone = cfg.input.events.time_zone

    def within(time: Column) -> Column:
        day = parsing.local_date(time, zone)
        return time.isNotNull() & (day > F.lit(after)) & (day <= F.lit(cfg.features.as_of))

    events = normalised_events(spark, cfg, identity).frame
    if not events.where(within(F.col("event_time"))).isEmpty():
        return "events"
    edges = _edges(spark, cfg, identity)
    if edges is not None and not edges.frame.where(within(edges.seen)).isEmpty():
        return "edges"
    return None


def dimension_identifiers(
    identity: IdentityConfig, configured: Sequence[Identifier], id_column: str
) -> tuple[Identifier, ...]:
    """A per-customer input's identifiers: the configured ones, else its id column as an
    identifier of ``identity.customer_id_type``."""
    return tuple(configured) or (Identifier(column=id_column, type=identity.customer_id_type),)


def _customers(spark: SparkSession, cfg: AppConfig, identity: IdentityConfig) -> _Input | None:
    path = cfg.customers_path()
    if path is None or ("://" not in path and not os.path.exists(path)):
        return None
    source = cfg.input.customers
    ids = dimension_identifiers(identity, identity.customers, source.customer_id)
    raw = sources.read_raw(spark, source, path)
    return _undated("customers", raw, ids, "identity.customers", path)


def _survey(spark: SparkSession, cfg: AppConfig, identity: IdentityConfig) -> _Input | None:
    path = cfg.survey_path()
    if not cfg.attitudes.enabled or not delta_or_files_exist(spark, path):
        return None
    source = cfg.attitudes.survey
    ids = dimension_identifiers(identity, identity.survey, source.customer_id)
    raw = sources.read_raw(spark, source, path)
    return _undated("survey", raw, ids, "identity.survey", path)


def _edge_times(raw: DataFrame, edges: EdgesSourceConfig, zone: str) -> Column:
    """When each link was made (null: the row's time is missing, so the link is undated).

    Raises:
        InputError: a present time that does not parse (the message names the column, the
            config keys and examples; never read as undated), or a numeric column without an
            epoch ``identity.edges.timestamp_format``.
    """
    assert edges.time is not None and edges.path is not None
    name = find_column(raw, edges.time, "identity.edges.time", edges.path)
    column = F.col(f"`{name}`")
    seen = parsing.event_time(
        column, raw.schema[name].dataType, timestamp_format=edges.timestamp_format,
        time_zone=zone, keys=("identity.edges.time", "identity.edges.timestamp_format"),
    )  # fmt: skip
    present = parsing.blank_is_null(column).isNotNull()
    bad = raw.where(present & seen.isNull()).select(column.cast("string").alias("v"))
    examples = [r["v"] for r in bad.limit(3).collect()]
    if examples:
        raise InputError(
            f"column '{name}' (identity.edges.time) of {edges.path} holds values that are not "
            f"times, e.g. {', '.join(repr(v) for v in examples)}: fix them, or set "
            "identity.edges.timestamp_format to how they are written (a link is never "
            "guessed to be undated)"
        )
    return seen


def delta_or_files_exist(spark: SparkSession, path: str) -> bool:
    """A table or files at ``path`` (an object store is assumed to hold them)."""
    return "://" in path or os.path.exists(path) or delta_tables.exists(spark, path)


def _undated(name: str, raw: DataFrame, ids: Sequence[Identifier], key: str, path: str) -> _Input:
    columns = [find_column(raw, i.column, f"{key}[{n}].column", path) for n, i in enumerate(ids)]
    return _Input(name, raw, ids, columns, F.lit(None).cast("timestamp"), key)


def _edges(spark: SparkSession, cfg: AppConfig, identity: IdentityConfig) -> _Input | None:
    """The edges input, each row dated by ``identity.edges.time`` (null: undated); rows seen
    after ``features.as_of`` are left out."""
    edges = identity.edges
    if edges.path is None:
        return None
    if not delta_or_files_exist(spark, edges.path):
        raise InputError(f"identity.edges.path {edges.path} does not exist")
    raw = sources.read_raw(spark, edges, edges.path)
    key = "identity.edges.identifiers"
    columns = [find_column(raw, i.column, f"{key}[{n}].column", edges.path)
               for n, i in enumerate(edges.identifiers)]  # fmt: skip
    seen: Column = F.lit(None).cast("timestamp")
    if edges.time is not None:
        seen = _edge_times(raw, edges, cfg.input.events.time_zone)
        raw = raw.where(
            seen.isNull() | (parsing.local_date(seen, cfg.input.events.time_zone)
                             <= F.lit(cfg.features.as_of))
        )  # fmt: skip
    return _Input("edges", raw, edges.identifiers, columns, seen, key)
