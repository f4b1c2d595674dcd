"""Row-level quality rules: every unusable event gets a reason; nothing is silently dropped.

Pure DataFrame -> DataFrame functions over canonical events (``sources.CANONICAL_SCHEMA``).
An event after ``as_of`` is not an error (it is simply outside the snapshot); one implausibly
far in the future or past is. Values the reader could not interpret (``sources.ISSUE``: a
fractional customer id, an amount not in the configured number format) keep their own reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.errors import parquet_type_mismatch
from segmentation.inputs import parsing, sources
from segmentation.inputs.sources import ISSUE, RAW, RETURN, EventSource, InputCounts
from segmentation.storage.tables import CANONICAL_EVENTS

REASON = "reason"
RAW_TYPE = "map<string,string>"
MISSING_CUSTOMER_ID = "missing_customer_id"
INVALID_EVENT_TIME = "invalid_event_time"
IMPLAUSIBLE_EVENT_TIME = "implausible_event_time"
INVALID_AMOUNT = "invalid_amount"
NEGATIVE_AMOUNT = "negative_amount"
DUPLICATE_EVENT = "duplicate_event"
UNKNOWN_IDENTIFIER = "unknown_identifier"
"""With identity stitching: none of the row's identifiers is in ``identity_map`` (set as the
row's ``sources.ISSUE`` by ``identity.keying``; its customer id is then null)."""
UNKNOWN_IDENTIFIER_AFTER_AS_OF = "unknown_identifier_after_as_of"
"""The same for an event after ``features.as_of``: the map of ``as_of`` cannot know its
identifiers yet (the map of its own day will). Outside the snapshot either way, so not counted
against ``quality.max_reject_share``."""
UNKNOWN = (UNKNOWN_IDENTIFIER, UNKNOWN_IDENTIFIER_AFTER_AS_OF)
"""The reasons of a row the map of ``as_of`` left unkeyed."""
NOT_COUNTED = (UNKNOWN_IDENTIFIER_AFTER_AS_OF,)
"""Reasons reported but left out of the rejected share."""
REASONS = (
    MISSING_CUSTOMER_ID,
    UNKNOWN_IDENTIFIER,
    UNKNOWN_IDENTIFIER_AFTER_AS_OF,
    parsing.NON_INTEGRAL_CUSTOMER_ID,
    parsing.INEXACT_CUSTOMER_ID,
    parsing.UNPARSEABLE_AMOUNT,
    parsing.INVALID_QUANTITY,
    parsing.INVALID_DISCOUNT,
    INVALID_EVENT_TIME,
    IMPLAUSIBLE_EVENT_TIME,
    INVALID_AMOUNT,
    NEGATIVE_AMOUNT,
    DUPLICATE_EVENT,
)
# What makes two events without an id exact copies: every canonical column but the id.
COPY = "_copy"
"""The copy number of a usable event among its identical ones (1: the copy kept)."""
CANONICAL = frozenset(CANONICAL_EVENTS.names)
CONTENT = ("event_time", "amount", "event_type", "category", "channel", "device", "quantity",
           "discount")  # fmt: skip
Duplicates = Literal["event_id", "exact", "off"]


def fingerprint() -> Column:
    """xxhash64 of an event's content (:data:`CONTENT`), with a null flag per column so that
    nulls in different columns never hash alike (the feature state's event identities)."""
    return F.xxhash64(*[F.col(c).isNull() for c in CONTENT], *[F.col(c) for c in CONTENT])


def duplicate_rule(configured: str, *, day_level: bool) -> Duplicates:
    """``quality.duplicates`` for one input: ``auto`` is ``exact`` when the event times carry a
    time of day, else ``event_id`` (exact copies of day-level events cannot be told apart from
    two real purchases, so they are kept and counted).

    Args:
        configured: ``auto``, ``event_id``, ``exact`` or ``off``.
        day_level: every event time is a local midnight (``sources.InputCounts.day_level``).
    """
    if configured == "auto":
        return "event_id" if day_level else "exact"
    if configured not in ("event_id", "exact", "off"):
        raise ValueError(f"quality.duplicates: unknown rule {configured!r}")
    return cast(Duplicates, configured)


@dataclass(frozen=True)
class Split:
    """Usable events, and rejected events with a ``reason`` column.

    ``clean`` is hash-partitioned by ``customer_id``: the per-customer aggregations over it
    (``features.compute_features``) need no further shuffle of the events.
    """

    clean: DataFrame
    rejected: DataFrame
    valid: DataFrame
    """Events that break no row rule, duplicates included (before de-duplication)."""
    kept_copies: DataFrame | None = None
    """With ``report_exact_copies``: the exact copies (events without an id) that were kept."""


def reject_reason(
    *, earliest: dt.date, latest: dt.date, time_zone: str = parsing.UTC, with_issue: bool = False
) -> Column:
    """The first rule a canonical event breaks, or null for a usable event.

    Args:
        earliest: events on local days before this one are implausible.
        latest: events on local days after this one are implausible (not merely outside the
            snapshot).
        time_zone: the zone whose calendar days count (``input.events.time_zone``).
        with_issue: the events carry ``sources.ISSUE``, the reason a value could not be read
            (checked right after the customer id).
    """
    customer, time, amount = F.col("customer_id"), F.col("event_time"), F.col("amount")
    day = parsing.local_date(time, time_zone)
    missing = customer.isNull() | (customer == "")
    if with_issue:
        issue = F.col(ISSUE)
        reason = (
            F.when(missing & issue.isin(*UNKNOWN), issue)
            .when(missing, F.lit(MISSING_CUSTOMER_ID))
            .when(issue.isNotNull(), issue)
        )
    else:
        reason = F.when(missing, F.lit(MISSING_CUSTOMER_ID))
    return (
        reason.when(time.isNull(), F.lit(INVALID_EVENT_TIME))
        .when((day < F.lit(earliest)) | (day > F.lit(latest)), F.lit(IMPLAUSIBLE_EVENT_TIME))
        .when(amount.isNull() | ~parsing.finite(amount), F.lit(INVALID_AMOUNT))
        .when((amount < 0) & (F.col("event_type") != RETURN), F.lit(NEGATIVE_AMOUNT))
    )


def stage_events(
    events: DataFrame,
    *,
    earliest: dt.date,
    latest: dt.date,
    time_zone: str = parsing.UTC,
    storage_level: StorageLevel | None = None,
) -> DataFrame:
    """Every event with its ``reason`` (null: usable) and its copy number, shuffled once by
    customer: the one exchange (and the one sort) that the quarantine, the de-duplication and
    every per-customer aggregation after it share.

    The copy number (``_copy``) counts, per customer, the usable events with the same identity:
    the same ``event_id``, or, without an id, the same content (:data:`CONTENT`). Copy 1 is the
    first in a fixed order of the canonical columns, so which copy is kept does not depend on
    input order or partitioning. It serves every duplicate rule (:func:`split_staged`).

    Args:
        events: canonical events, optionally with ``sources.ISSUE`` and other columns (the
            per-column flags of ``sources.EventSource.checked``), which are carried along.
        earliest, latest, time_zone: see :func:`reject_reason`.
        storage_level: persist the staged events at this level (the caller unpersists them);
            None: a plan only, recomputed by each consumer.
    """
    with_issue = ISSUE in events.columns
    rule = reject_reason(earliest=earliest, latest=latest, time_zone=time_zone,
                         with_issue=with_issue)  # fmt: skip
    flagged = events.withColumn(REASON, rule)
    canonical = [c for c in events.columns if c in CANONICAL]
    no_id = F.col("event_id").isNull()
    # The identity as columns (no string building per row); the content columns only count for
    # events without an id. The reason is part of it, so rejected events are never copies of
    # usable ones. Partitioned by customer_id (a subset of the window's keys), the window needs
    # no shuffle of its own.
    identity = [F.col(REASON), F.col("customer_id"), F.col("event_id"),
                *[F.when(no_id, F.col(c)) for c in CONTENT]]  # fmt: skip
    order = [F.col(c).asc_nulls_first() for c in canonical]
    staged = flagged.repartition("customer_id").withColumn(
        COPY, F.row_number().over(Window.partitionBy(*identity).orderBy(*order))
    )
    return staged.persist(storage_level) if storage_level is not None else staged


def stage_source(
    source: EventSource,
    *,
    earliest: dt.date,
    latest: dt.date,
    time_zone: str = parsing.UTC,
    keep: Column | None = None,
    extra: DataFrame | None = None,
) -> tuple[DataFrame, InputCounts]:
    """:func:`stage_events` over ``source``'s events (only the customers ``keep`` selects),
    persisted ``MEMORY_AND_DISK``, and the input counts over *every* input row: observed on
    the pass that fills the cache (``EventSource.observed``, before the ``keep`` filter), so
    the input is read once for both. The caller unpersists the staged rows.

    Args:
        extra: rows staged with the input's (its events' columns) but not counted as input
            rows (the feature state's quarantined rows checked again).
    """
    # With extra rows, the input's are counted on their own pass (the staging's tasks may
    # read none of them, and then observe no metrics).
    events, input_counts = source.observed() if extra is None else (source.columns(), None)
    events = events if keep is None else events.where(keep)
    staged = stage_events(
        events if extra is None else events.unionByName(extra), earliest=earliest,
        latest=latest, time_zone=time_zone, storage_level=StorageLevel.MEMORY_AND_DISK,
    )  # fmt: skip
    try:
        # An input without rows runs no task, so no metrics are observed: count it directly.
        rows = staged.count()
        counts = input_counts() if rows and input_counts else source.counts()
    except Exception as exc:
        staged.unpersist()
        mismatch = parquet_type_mismatch(exc)
        if mismatch is not None:
            raise mismatch from None
        raise
    return staged, counts


def split_staged(
    staged: DataFrame,
    *,
    duplicates: Duplicates = "exact",
    report_exact_copies: bool = False,
    carry: Sequence[str] = (),
) -> Split:
    """Usable, de-duplicated events and the rejected ones, from :func:`stage_events`' rows.

    Duplicates (``quality.duplicates``), always per customer (two customers' events sharing an
    id are both kept):

    * ``event_id``: events of the same customer with the same ``event_id``;
    * ``exact``: those, and events without an id that are exact copies (every canonical column
      equal: time, amount, type, category, channel, device, quantity, discount);
    * ``off``: none.

    Args:
        staged: :func:`stage_events`' rows.
        duplicates: the duplicate rule above.
        report_exact_copies: with ``event_id``, also return the exact copies that were kept
            (``Split.kept_copies``), to be counted and reported.
        carry: further staged columns to keep in ``clean`` and ``rejected`` (the stitched
            key's ``raw_id`` for the feature state).
    """
    canonical = [c for c in staged.columns if c in CANONICAL] + list(carry)
    usable = staged.where(F.col(REASON).isNull())
    no_id = F.col("event_id").isNull()
    copy = F.col(COPY) > 1
    is_duplicate = {"exact": copy, "event_id": copy & ~no_id, "off": F.lit(False)}[duplicates]
    clean = usable.where(~is_duplicate).select(*canonical)
    raw = F.col(RAW) if RAW in staged.columns else F.lit(None).cast(RAW_TYPE)
    copies = usable.where(is_duplicate).select(
        *canonical, F.lit(DUPLICATE_EVENT).alias(REASON), F.lit(None).cast(RAW_TYPE).alias(RAW)
    )
    invalid = staged.where(F.col(REASON).isNotNull()).select(*canonical, REASON, raw.alias(RAW))
    kept = usable.where(copy & no_id).select(*canonical) if report_exact_copies else None
    return Split(clean=clean, rejected=invalid.unionByName(copies),
                 valid=usable.select(*canonical), kept_copies=kept)  # fmt: skip


def split_events(
    events: DataFrame,
    *,
    earliest: dt.date,
    latest: dt.date,
    time_zone: str = parsing.UTC,
    duplicates: Duplicates = "exact",
    report_exact_copies: bool = False,
) -> Split:
    """Separate usable events from rejected ones; duplicates are kept once.

    :func:`stage_events` then :func:`split_staged` (see them), without persisting: the events
    are shuffled once, by customer, and that exchange serves the de-duplication and every
    per-customer aggregation after it.
    """
    staged = stage_events(events, earliest=earliest, latest=latest, time_zone=time_zone)
    return split_staged(staged, duplicates=duplicates, report_exact_copies=report_exact_copies)


def reason_counts(rejected: DataFrame) -> dict[str, int]:
    """Rejected rows per ``reason``."""
    return {r[REASON]: int(r["count"]) for r in rejected.groupBy(REASON).count().collect()}


@dataclass(frozen=True)
class CleanEvents:
    """A job's usable events: read, checked, de-duplicated as the feature job does."""

    staged: DataFrame
    """The staged rows (persisted: the caller releases them)."""
    clean: DataFrame
    """The usable, de-duplicated events (a plan over ``staged``)."""
    present: frozenset[str]
    """The optional input columns the user's data has."""
    counts: InputCounts
    shared: bool = False
    """The staged rows are shared with other steps (``stitched.sharing``): not released."""

    def release(self) -> None:
        """Unpersist the staged rows, unless they are shared."""
        if not self.shared:
            self.staged.unpersist()


def bounds(cfg: AppConfig) -> tuple[dt.date, dt.date]:
    """The event dates a job stages: ``quality.earliest_event_date`` to ``features.as_of``
    plus ``quality.max_days_after_as_of`` (never before ``as_of``)."""
    q = cfg.quality
    return q.earliest_event_date, cfg.features.as_of + dt.timedelta(
        days=max(q.max_days_after_as_of, 0)
    )


def cleaned(
    cfg: AppConfig,
    staged: DataFrame,
    counts: InputCounts,
    present: frozenset[str],
    *,
    shared: bool = False,
) -> CleanEvents:
    """The usable events of staged rows, by the duplicate rule the counts resolve."""
    rule = duplicate_rule(cfg.quality.duplicates, day_level=counts.day_level)
    clean = split_staged(staged, duplicates=rule).clean
    return CleanEvents(staged, clean, present, counts, shared)


def clean_events(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    keep: Column | None = None,
    source: EventSource | None = None,
) -> CleanEvents:
    """The usable events of the customers ``keep`` selects (all: None), with the feature job's
    reading, time zone, quarantine and duplicate rules, in one pass over the input.

    ``source``: the events as read already (identity stitching passes them with their stitched
    customer ids); None: read from ``input.events``.

    The events are read, checked and shuffled by customer once and those staged rows are
    persisted; the input counts the ``auto`` duplicate rule needs (do times have a time of
    day?) are observed over every input row on the pass that fills that cache, before the
    customer filter, so the rule is the feature job's whatever ``keep`` selects.
    """
    if source is None:
        source = sources.read_events(spark, cfg.input.events, cfg.events_path())
    earliest, latest = bounds(cfg)
    staged, counts = stage_source(
        source, keep=keep, earliest=earliest, latest=latest,
        time_zone=cfg.input.events.time_zone,
    )  # fmt: skip
    return cleaned(cfg, staged, counts, source.present)


def counts_text(counts: Mapping[str, int]) -> str:
    """``reason: n`` pairs, sorted, or ``none``."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
