"""The levels of the categorical mixes (category, channel, device): which values get a share
column, what those columns are called, and the raw label each column keeps.

Levels are configured (``features.categories``, ``channels``, ``devices``) or discovered as the
most frequent values in one pass over the events. A column's name is unique and the same in
every run (``level_name``); its raw label travels in the column's metadata (``level_labels``).
Imports: pyspark and ``segmentation.config`` only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segmentation.config import FeatureConfig

OTHER_LEVEL = "other"
COLUMN, VALUE, EVENTS = "column", "value", "events"
"""The columns of :func:`value_counts` rows."""


def level_name(prefix: str, level: str) -> str:
    """Column name for one level of a categorical mix, unique and the same in every run.

    A label made of lower-case ASCII letters and digits (single underscores between) is its own
    name: ``category_share_home``. Any other label gets its ASCII slug plus the first 8 hex
    digits of the SHA-1 of its UTF-8 text after a double underscore, which no plain name
    contains: ``Home & Garden`` -> ``category_share_home_garden__<hash>``, ``家居`` ->
    ``category_share__<hash>``. The raw label is kept in the column's metadata.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", level.lower()).strip("_")
    if slug and slug == level:
        return f"{prefix}_share_{slug}"
    digest = hashlib.sha1(level.encode("utf-8")).hexdigest()[:8]
    return f"{prefix}_share_{slug}__{digest}" if slug else f"{prefix}_share__{digest}"


@dataclass(frozen=True)
class LevelLabel:
    """The raw label behind a level column, and the input column it comes from."""

    column: str
    label: str

    def text(self) -> str:
        """For people: ``category: Home & Garden``."""
        return f"{self.column}: {self.label}"


def level_labels(features: DataFrame) -> dict[str, LevelLabel]:
    """Level column -> its raw label, from the columns' metadata (``compute_features`` sets
    it; Delta keeps it)."""
    out = {}
    for field in features.schema.fields:
        meta = field.metadata or {}
        if "label" in meta and "source_column" in meta:
            out[field.name] = LevelLabel(str(meta["source_column"]), str(meta["label"]))
    return out


def display_name(column: str, labels: Mapping[str, LevelLabel]) -> str:
    """A feature as people read it: a level column whose name is not its label shows the raw
    label too (``category_share__1a2b3c4d (category: 家居)``); other columns, their name."""
    found = labels.get(column)
    if found is None or column == f"{found.column}_share_{found.label}":
        return column
    return f"{column} ({found.text()})"


def level_columns(prefix: str, levels: Sequence[str]) -> dict[str, str]:
    """Level -> column name; two levels with one name (a hash collision) are an error."""
    names = {level: level_name(prefix, level) for level in levels}
    if len(set(names.values())) < len(names):
        clash = sorted(lv for lv in levels if list(names.values()).count(names[lv]) > 1)
        raise ValueError(f"{prefix} levels {clash} give the same column name; rename one")
    return names


def discover_levels(events: DataFrame, column: str, *, max_levels: int) -> tuple[str, ...]:
    """The most frequent non-null values of ``column`` (at most ``max_levels``), sorted.

    This is one extra pass over the events; configure the levels to avoid it.
    """
    return discover_all_levels(events, [column], max_levels=max_levels)[column]


def discover_all_levels(
    events: DataFrame,
    columns: Sequence[str],
    *,
    max_levels: int,
    minus: DataFrame | None = None,
) -> dict[str, tuple[str, ...]]:
    """``discover_levels`` for several columns in one pass over the events (one aggregation
    of (column, value) pairs; ties broken by value).

    ``minus``: rows (with the same columns) whose values are not counted, e.g. the duplicate
    copies ``quality.split_events`` removes. Counting ``valid - duplicates`` gives the counts
    of the de-duplicated events without a second de-duplication pass over all events.
    """
    if not columns:
        return {}
    return top_levels(value_counts(events, columns, minus=minus), columns, max_levels=max_levels)


def value_counts(
    events: DataFrame, columns: Sequence[str], *, minus: DataFrame | None = None
) -> DataFrame:
    """Events per non-null value of each of ``columns`` (``column``, ``value``, ``events``;
    rows of ``minus`` count -1), values as text, only counts above 0."""
    if not columns:
        return events.sparkSession.createDataFrame([], f"{COLUMN} string, {VALUE} string, "
                                                       f"{EVENTS} long")  # fmt: skip

    def pairs(df: DataFrame, weight: int) -> DataFrame:
        exploded = F.explode(
            F.array(*[F.struct(F.lit(c).alias(COLUMN), F.col(c).cast("string").alias(VALUE))
                      for c in columns])
        )  # fmt: skip
        return df.select(exploded.alias("p"), F.lit(weight).alias("w")).select(
            f"p.{COLUMN}", f"p.{VALUE}", "w"
        )

    weighted = pairs(events, 1)
    if minus is not None:
        weighted = weighted.unionByName(pairs(minus, -1))
    return (
        weighted.where(F.col(VALUE).isNotNull())
        .groupBy(COLUMN, VALUE)
        .agg(F.sum("w").cast("long").alias(EVENTS))
        .where(F.col(EVENTS) > 0)
    )


def top_levels(
    counts: DataFrame, columns: Sequence[str], *, max_levels: int
) -> dict[str, tuple[str, ...]]:
    """The ``max_levels`` values of each column with the most events (ties: the smaller value
    first), sorted, from :func:`value_counts` rows (several rows of one value are summed)."""
    summed = counts.groupBy(COLUMN, VALUE).agg(F.sum(EVENTS).alias(EVENTS))
    rank = Window.partitionBy(COLUMN).orderBy(F.desc(EVENTS), F.asc(VALUE))
    rows = (
        summed.where(F.col(EVENTS) > 0)
        .withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= max_levels)
        .collect()
    )
    return {c: tuple(sorted(str(r[VALUE]) for r in rows if r[COLUMN] == c)) for c in columns}


def discovered_columns(fc: FeatureConfig, present: Collection[str]) -> list[str]:
    """The mapped mix columns whose levels are discovered (not configured)."""
    configured = {"category": fc.categories, "channel": fc.channels, "device": fc.devices}
    return [c for c, lv in configured.items() if lv is None and c in present]


def resolve_levels(
    events: DataFrame,
    fc: FeatureConfig,
    present: Collection[str],
    *,
    counted: DataFrame | None = None,
) -> dict[str, tuple[str, ...]]:
    """The category, channel and device levels: configured (``features.categories`` ...), or
    discovered in one pass over ``events`` (``counted``: their :func:`value_counts` already
    made); a column the input does not have gets none."""
    configured = {"category": fc.categories, "channel": fc.channels, "device": fc.devices}
    wanted = discovered_columns(fc, present)
    levels = (
        discover_all_levels(events, wanted, max_levels=fc.max_levels)
        if counted is None or not wanted
        else top_levels(counted, wanted, max_levels=fc.max_levels)
    )
    for column, lv in configured.items():
        levels.setdefault(column, () if column not in present or lv is None else tuple(lv))
    return levels


def counted_levels(
    events: DataFrame, fc: FeatureConfig, present: Collection[str]
) -> tuple[dict[str, tuple[str, ...]], DataFrame]:
    """:func:`resolve_levels`, and the :func:`value_counts` of the discovered columns they
    were ranked from, persisted (the caller unpersists them): the incremental feature state
    keeps them."""
    counted = value_counts(events, discovered_columns(fc, present))
    counted = counted.persist(StorageLevel.MEMORY_AND_DISK)
    return resolve_levels(events, fc, present, counted=counted), counted
