"""Row-level quality rules: every unusable event gets a reason; nothing is silently dropped.

Pure DataFrame -> DataFrame functions over canonical events (``sources.CANONICAL_SCHEMA``).
An event after ``as_of`` is not an error (it is simply outside the snapshot); one implausibly
far in the future or past is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from segmentation.sources import RETURN

REASON = "reason"
MISSING_CUSTOMER_ID = "missing_customer_id"
INVALID_EVENT_TIME = "invalid_event_time"
IMPLAUSIBLE_EVENT_TIME = "implausible_event_time"
INVALID_AMOUNT = "invalid_amount"
NEGATIVE_AMOUNT = "negative_amount"
DUPLICATE_EVENT = "duplicate_event"
REASONS = (
    MISSING_CUSTOMER_ID,
    INVALID_EVENT_TIME,
    IMPLAUSIBLE_EVENT_TIME,
    INVALID_AMOUNT,
    NEGATIVE_AMOUNT,
    DUPLICATE_EVENT,
)


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


def reject_reason(*, earliest: dt.date, latest: dt.date) -> Column:
    """The first rule a canonical event breaks, or null for a usable event.

    Args:
        earliest: events before this day are implausible.
        latest: events after this day are implausible (not merely outside the snapshot).
    """
    customer, time, amount = F.col("customer_id"), F.col("event_time"), F.col("amount")
    too_early = time < F.lit(dt.datetime.combine(earliest, dt.time(), tzinfo=dt.UTC))
    too_late = time >= F.lit(
        dt.datetime.combine(latest + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    )
    return (
        F.when(customer.isNull() | (customer == ""), F.lit(MISSING_CUSTOMER_ID))
        .when(time.isNull(), F.lit(INVALID_EVENT_TIME))
        .when(too_early | too_late, F.lit(IMPLAUSIBLE_EVENT_TIME))
        .when(
            amount.isNull() | F.isnan(amount) | (F.abs(amount) == float("inf")),
            F.lit(INVALID_AMOUNT),
        )
        .when((amount < 0) & (F.col("event_type") != RETURN), F.lit(NEGATIVE_AMOUNT))
    )


def split_events(events: DataFrame, *, earliest: dt.date, latest: dt.date) -> Split:
    """Separate usable events from rejected ones; exact duplicates are kept once.

    Duplicates are events of the same customer with the same ``event_id``, or, without an id,
    the same time, amount and type. The copy kept is the first in a fixed order of all
    columns, so the result does not depend on input order or partitioning. (Two customers'
    events sharing an id are not duplicates of each other: both are kept.)

    The valid events are shuffled once, by customer: that one exchange serves the
    de-duplication and every per-customer aggregation after it.
    """
    flagged = events.withColumn(REASON, reject_reason(earliest=earliest, latest=latest))
    invalid = flagged.where(F.col(REASON).isNotNull())
    valid = flagged.where(F.col(REASON).isNull()).drop(REASON)
    no_id = F.col("event_id").isNull()
    # The identity as columns (no string building per row); the content columns only count
    # for events without an id.
    identity = [
        F.col("customer_id"),
        F.col("event_id"),
        *[F.when(no_id, F.col(c)) for c in ("event_time", "amount", "event_type")],
    ]
    order = [F.col(c).asc_nulls_first() for c in events.columns]
    ranked = valid.repartition("customer_id").withColumn(
        "_copy", F.row_number().over(Window.partitionBy(*identity).orderBy(*order))
    )
    clean = ranked.where(F.col("_copy") == 1).drop("_copy")
    duplicates = (
        ranked.where(F.col("_copy") > 1).drop("_copy").withColumn(REASON, F.lit(DUPLICATE_EVENT))
    )
    return Split(clean=clean, rejected=invalid.unionByName(duplicates), valid=valid)
