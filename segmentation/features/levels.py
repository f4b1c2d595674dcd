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

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segmentation.config import FeatureConfig

OTHER_LEVEL = "other"


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

    def pairs(df: DataFrame, weight: int) -> DataFrame:
        exploded = F.explode(
            F.array(*[F.struct(F.lit(c).alias("col"), F.col(c).cast("string").alias("value"))
                      for c in columns])
        )  # fmt: skip
        return df.select(exploded.alias("p"), F.lit(weight).alias("w")).select(
            "p.col", "p.value", "w"
        )

    weighted = pairs(events, 1)
    if minus is not None:
        weighted = weighted.unionByName(pairs(minus, -1))
    counts = (
        weighted.where(F.col("value").isNotNull())
        .groupBy("col", "value")
        .agg(F.sum("w").alias("count"))
        .where(F.col("count") > 0)
    )
    rank = Window.partitionBy("col").orderBy(F.desc("count"), F.asc("value"))
    rows = (
        counts.withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= max_levels)
        .collect()
    )
    return {c: tuple(sorted(str(r["value"]) for r in rows if r["col"] == c)) for c in columns}


def resolve_levels(
    events: DataFrame, fc: FeatureConfig, present: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """The category, channel and device levels: configured (``features.categories`` ...), or
    discovered in one pass over ``events``; a column the input does not have gets none."""
    configured = {"category": fc.categories, "channel": fc.channels, "device": fc.devices}
    wanted = [c for c, lv in configured.items() if lv is None and c in present]
    levels = discover_all_levels(events, wanted, max_levels=fc.max_levels)
    for column, lv in configured.items():
        levels.setdefault(column, () if column not in present or lv is None else tuple(lv))
    return levels
