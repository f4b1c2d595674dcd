"""Quarantined rows of the incremental feature state whose reason depends on ``as_of``, checked
again with a new day's rows (docs/incremental.md).

A full run checks every input row as of its own ``as_of``. Three reasons an earlier run gave
can read otherwise a day later, and the state's rows with them are staged again with the new
input rows (not counted as input again), exactly as the full run stages them:

* ``implausible_event_time`` for an event more than ``quality.max_days_after_as_of`` days
  after the state's day that the new ``as_of`` brings within that bound;
* with identity stitching, ``unknown_identifier`` and ``unknown_identifier_after_as_of`` of a
  raw id the new day's ``identity_map`` keys (identifiers first seen after an earlier
  ``as_of``: their events were in the input before the map knew them);
* ``unknown_identifier_after_as_of`` of an event on or before the new ``as_of`` that the map
  still does not key (the full run names it ``unknown_identifier``).

The state's ``feature_state_rejected`` is then rewritten without those rows (one Delta
commit): checked again, they are usable, or quarantined with the reason of the new day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.identity import keying, stitched
from segmentation.identity.keying import RAW_ID
from segmentation.inputs import parsing, quality, sources
from segmentation.storage import tables
from segmentation.workflows import feature_state as fs

_MEMORY = StorageLevel.MEMORY_AND_DISK
_NEW_KEY = "_new_key"
_AGAIN = "_again"


@dataclass(frozen=True)
class Recheck:
    """The state's quarantined rows split: those checked again, and those kept."""

    rows: DataFrame
    """The rows to check again, as the input's events (``sources.EventSource.events``:
    canonical columns, ``sources.ISSUE``, ``raw_values``; ``raw_id`` with stitching)."""
    kept: DataFrame
    """The other rows, as ``feature_state_rejected`` holds them."""
    count: int
    persisted: DataFrame
    """What both are read from (the owner unpersists it after the state's writes)."""


def recheck(
    cfg: AppConfig, rejected: DataFrame, since: dt.date, keys: DataFrame | None
) -> Recheck | None:
    """The state's quarantined rows (``rejected``, as of ``since``) that ``features.as_of``
    checks otherwise (see the module docstring), or None when there are none.

    Args:
        keys: with stitching, every raw id's key as of the new day (``feature_keys.Keys.keys``:
            ``raw_id``, ``customer_id``, null where the map does not key it); None without.
    """
    as_of, zone = cfg.features.as_of, cfg.input.events.time_zone
    after = cfg.quality.max_days_after_as_of
    day = parsing.local_date(F.col("event_time"), zone)
    reason = F.col(quality.REASON)
    again = (
        (reason == quality.IMPLAUSIBLE_EVENT_TIME)
        & (day > F.lit(since + dt.timedelta(days=after)))
        & (day <= F.lit(as_of + dt.timedelta(days=after)))
    )
    frame = rejected
    if keys is not None:
        unknown = reason.isin(*quality.UNKNOWN)
        relabelled = (reason == quality.UNKNOWN_IDENTIFIER_AFTER_AS_OF) & (day <= F.lit(as_of))
        again = again | (unknown & F.col(_NEW_KEY).isNotNull()) | relabelled
        new_keys = keys.select(RAW_ID, F.col(tables.CUSTOMER_ID).alias(_NEW_KEY))
        frame = rejected.join(new_keys, RAW_ID, "left")
    flagged = frame.withColumn(_AGAIN, F.coalesce(again, F.lit(False)))
    # Most days check nothing again: the quarantine is scanned once, and kept in memory
    # (for the rows checked again and the rewrite without them) only when something is.
    if flagged.where(F.col(_AGAIN)).isEmpty():
        return None
    flagged = flagged.persist(_MEMORY)
    count = flagged.where(F.col(_AGAIN)).count()
    kept = flagged.where(~F.col(_AGAIN)).select(*rejected.columns)
    rows = _as_events(flagged.where(F.col(_AGAIN)), stitched=keys is not None, cfg=cfg)
    return Recheck(rows=rows, kept=kept, count=count, persisted=flagged)


def stage(
    spark: SparkSession,
    cfg: AppConfig,
    plan: fs.Plan,
    *,
    stitched_rows: bool,
    again: Recheck | None,
) -> tuple[DataFrame, sources.InputCounts | None, tuple[str, ...]] | None:
    """The new input rows of ``plan`` and the rows checked ``again``, staged together
    (persisted), the input counts (None: no new input rows; the rows checked again are not
    counted) and the columns carried (``raw_id`` with stitching); None when there are
    neither."""
    assert plan.increment is not None
    q, zone = cfg.quality, cfg.input.events.time_zone
    earliest = q.earliest_event_date
    latest = cfg.features.as_of + dt.timedelta(days=q.max_days_after_as_of)
    extra = None if again is None else again.rows
    if plan.increment.raw is None:
        if extra is None:
            return None
        staged = quality.stage_events(extra, earliest=earliest, latest=latest, time_zone=zone,
                                      storage_level=_MEMORY)  # fmt: skip
        staged.count()
        return staged, None, (RAW_ID,) if stitched_rows else ()
    source = stitched.events(spark, cfg, raw=plan.increment.raw)
    staged, counts = quality.stage_source(
        source, earliest=earliest, latest=latest, time_zone=zone, extra=extra
    )
    return staged, counts, source.extra


def _as_events(rows: DataFrame, *, stitched: bool, cfg: AppConfig) -> DataFrame:
    """Quarantined rows as the reader gave them: with stitching, the key of the new day (or
    none, and the reason for an unknown identifier of the new day) and the raw values the row
    had before it was left unkeyed (``keying.unkeyed_raw``)."""
    canonical = [c for c in sources.CANONICAL_SCHEMA.names if c != tables.CUSTOMER_ID]
    if not stitched:
        issue = F.lit(None).cast("string")
        return rows.select(tables.CUSTOMER_ID, *canonical, issue.alias(sources.ISSUE), sources.RAW)
    key, raw = F.col(_NEW_KEY), F.col(sources.RAW)
    unknown = keying.unknown_reason(cfg.features.as_of, cfg.input.events.time_zone)
    was_unkeyed = F.col(quality.REASON).isin(*quality.UNKNOWN)
    return rows.select(
        key.alias(tables.CUSTOMER_ID), *canonical,
        F.when(key.isNull(), unknown).alias(sources.ISSUE),
        F.when(key.isNotNull() & was_unkeyed, keying.unkeyed_raw(raw)).otherwise(raw)
        .alias(sources.RAW),
        RAW_ID,
    )  # fmt: skip
