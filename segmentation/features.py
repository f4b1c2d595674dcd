"""Per-customer behavioural features as of a date, with Spark built-ins only.

One pass over the events: they are first aggregated to one row per customer and day (which
also yields active days without a distinct count), then to one row per customer. Events after
the end of ``as_of`` never count. All "days ago" figures count whole days back from ``as_of``;
a window of ``w`` days holds ``as_of`` and the ``w - 1`` days before it.

Feature definitions (customers with at least one usable event up to ``as_of``):

* ``recency_days``: days since the last order; with no order, days since the first event.
* ``tenure_days``: days since the first event of any type.
* ``frequency``: orders; ``orders_<w>d`` orders in the last ``w`` days.
* ``monetary_total``: order amount; ``monetary_<w>d`` in the last ``w`` days.
* ``avg_order_value``: ``monetary_total / frequency`` (0 without orders).
* ``active_days``: days with any event.
* ``ipi_mean_days`` / ``ipi_std_days`` / ``ipi_max_days``: statistics of the gaps between
  consecutive days with an order. With fewer than two order days the gap is censored: mean and
  max are the days since the first order (or the tenure without orders), std is 0.
* ``spend_trend``: ``(recent - earlier) / (recent + earlier)`` of order amount in the last
  ``trend_window`` days against the ``trend_window`` days before them; in [-1, 1], 0 if both 0.
* ``return_rate``: returned amount / order amount (0 without order amount).
* ``discount_share`` (when a discount column is mapped): share of orders with a discount > 0.
* ``category_share_<c>``: share of order amount in category ``c`` (``other`` holds the rest;
  the shares sum to 1 for customers with order amount, else all 0).
* ``channel_share_<c>`` / ``device_share_<d>``: share of events (any type) by channel / device.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from segmentation import tables
from segmentation.sources import ORDER, RETURN

CUSTOMER_ID = tables.CUSTOMER_ID
AS_OF = tables.AS_OF
OTHER_LEVEL = "other"

RECENCY = "recency_days"
TENURE = "tenure_days"
FREQUENCY = "frequency"
MONETARY = "monetary_total"
AOV = "avg_order_value"
ACTIVE_DAYS = "active_days"
IPI_MEAN = "ipi_mean_days"
IPI_STD = "ipi_std_days"
IPI_MAX = "ipi_max_days"
TREND = "spend_trend"
RETURN_RATE = "return_rate"
DISCOUNT_SHARE = "discount_share"


def level_name(prefix: str, level: str) -> str:
    """Column name for one level of a categorical mix, e.g. ``category_share_home``."""
    clean = re.sub(r"[^a-z0-9]+", "_", level.lower()).strip("_") or "blank"
    return f"{prefix}_share_{clean}"


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


def compute_features(
    events: DataFrame,
    *,
    as_of: dt.date,
    windows_days: Sequence[int] = (30, 90, 365),
    trend_window_days: int = 90,
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    devices: Sequence[str] = (),
    with_discount: bool = True,
) -> DataFrame:
    """One row per customer with the features above, as of the end of ``as_of``.

    Args:
        events: canonical events (``sources.CANONICAL_SCHEMA``), usable rows only.
        as_of: the snapshot date; later events are ignored.
        windows_days: trailing windows for ``orders_<w>d`` and ``monetary_<w>d``.
        trend_window_days: length of each of the two periods ``spend_trend`` compares.
        categories: category levels for ``category_share_*``; empty: no category features.
        channels: channel levels for ``channel_share_*``; empty: none.
        devices: device levels for ``device_share_*``; empty: none.
        with_discount: compute ``discount_share`` (the events have a discount column).

    Returns:
        ``customer_id``, ``as_of`` and the feature columns, in a fixed order.
    """
    # "other" collects every category not listed; listing it as well would name it twice.
    categories = tuple(c for c in categories if c != OTHER_LEVEL)
    daily = _daily(events, as_of, categories, channels, devices)
    gaps = _with_order_gaps(daily)
    per_customer = _per_customer(
        gaps, windows_days, trend_window_days, categories, channels, devices
    )
    return _finalise(
        per_customer, as_of, windows_days, categories, channels, devices, with_discount
    )


def feature_columns(df: DataFrame) -> list[str]:
    """The feature columns of a ``customer_features`` frame (all but the keys)."""
    return [c for c in df.columns if c not in (CUSTOMER_ID, AS_OF)]


def _daily(
    events: DataFrame,
    as_of: dt.date,
    categories: Sequence[str],
    channels: Sequence[str],
    devices: Sequence[str],
) -> DataFrame:
    end_exclusive = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    is_order = F.col("event_type") == ORDER
    is_return = F.col("event_type") == RETURN
    amount = F.abs(F.col("amount"))
    in_snapshot = F.col("event_time") < F.lit(end_exclusive)
    known_categories = F.col("category").isin(*categories) if categories else F.lit(False)
    aggregates = [
        F.count(F.lit(1)).alias("events"),
        F.sum(is_order.cast("long")).alias("orders"),
        F.sum(F.when(is_order, amount).otherwise(0.0)).alias("order_amount"),
        F.sum(F.when(is_return, amount).otherwise(0.0)).alias("return_amount"),
        F.sum((is_order & (F.coalesce(F.col("discount"), F.lit(0.0)) > 0)).cast("long")).alias(
            "discounted_orders"
        ),
    ]
    aggregates += [
        F.sum(F.when(is_order & (F.col("category") == c), amount).otherwise(0.0)).alias(
            level_name("category", c)
        )
        for c in categories
    ]
    if categories:
        aggregates.append(
            F.sum(F.when(is_order & ~F.coalesce(known_categories, F.lit(False)), amount)
                  .otherwise(0.0)).alias(level_name("category", OTHER_LEVEL))
        )  # fmt: skip
    for prefix, column, levels in (("channel", "channel", channels), ("device", "device", devices)):
        aggregates += [
            F.sum((F.col(column) == lvl).cast("long")).alias(level_name(prefix, lvl))
            for lvl in levels
        ]
        if levels:
            aggregates.append(F.count(F.col(column)).alias(f"{prefix}_known_events"))
    return (
        events.where(in_snapshot)
        .withColumn("event_date", F.to_date(F.col("event_time")))
        .groupBy(CUSTOMER_ID, "event_date")
        .agg(*aggregates)
        .withColumn("days_ago", F.datediff(F.lit(as_of), F.col("event_date")))
    )


def _with_order_gaps(daily: DataFrame) -> DataFrame:
    """Adds ``order_gap``: days since the previous day with an order, on days with an order."""
    previous = (
        Window.partitionBy(CUSTOMER_ID)
        .orderBy("event_date")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    order_day = F.col("orders") > 0
    prev_order_date = F.last(F.when(order_day, F.col("event_date")), ignorenulls=True).over(
        previous
    )
    return daily.withColumn(
        "order_gap",
        F.when(order_day, F.datediff(F.col("event_date"), prev_order_date)),
    )


def _per_customer(
    gaps: DataFrame,
    windows_days: Sequence[int],
    trend_window_days: int,
    categories: Sequence[str],
    channels: Sequence[str],
    devices: Sequence[str],
) -> DataFrame:
    days_ago = F.col("days_ago")
    order_day = F.col("orders") > 0
    t = trend_window_days
    aggregates = [
        F.min("event_date").alias("first_event_date"),
        F.min(F.when(order_day, F.col("event_date"))).alias("first_order_date"),
        F.max(F.when(order_day, F.col("event_date"))).alias("last_order_date"),
        F.sum("orders").alias(FREQUENCY),
        F.sum("order_amount").alias(MONETARY),
        F.sum("return_amount").alias("return_amount"),
        F.sum("discounted_orders").alias("discounted_orders"),
        F.sum("events").alias("events"),
        F.count(F.lit(1)).alias(ACTIVE_DAYS),
        F.count(F.when(order_day, 1)).alias("order_days"),
        F.avg("order_gap").alias("gap_mean"),
        F.stddev_pop("order_gap").alias("gap_std"),
        F.max("order_gap").alias("gap_max"),
        F.sum(F.when(days_ago < t, F.col("order_amount")).otherwise(0.0)).alias("trend_recent"),
        F.sum(
            F.when((days_ago >= t) & (days_ago < 2 * t), F.col("order_amount")).otherwise(0.0)
        ).alias("trend_earlier"),
    ]
    for w in windows_days:
        aggregates.append(
            F.sum(F.when(days_ago < w, F.col("orders")).otherwise(0)).alias(f"orders_{w}d")
        )
        aggregates.append(
            F.sum(F.when(days_ago < w, F.col("order_amount")).otherwise(0.0)).alias(
                f"monetary_{w}d"
            )
        )
    level_cols = [level_name("category", c) for c in categories]
    if categories:
        level_cols.append(level_name("category", OTHER_LEVEL))
    for prefix, levels in (("channel", channels), ("device", devices)):
        level_cols += [level_name(prefix, lvl) for lvl in levels]
        if levels:
            level_cols.append(f"{prefix}_known_events")
    aggregates += [F.sum(c).alias(c) for c in level_cols]
    return gaps.groupBy(CUSTOMER_ID).agg(*aggregates)


def _ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, 0 where the denominator is 0 (ANSI mode forbids x / 0)."""
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def _finalise(
    per_customer: DataFrame,
    as_of: dt.date,
    windows_days: Sequence[int],
    categories: Sequence[str],
    channels: Sequence[str],
    devices: Sequence[str],
    with_discount: bool,
) -> DataFrame:
    as_of_lit = F.lit(as_of)
    frequency = F.col(FREQUENCY)
    monetary = F.col(MONETARY)
    tenure = F.datediff(as_of_lit, F.col("first_event_date"))
    since_first_order = F.coalesce(F.datediff(as_of_lit, F.col("first_order_date")), tenure)
    censored = F.col("order_days") < 2
    recent, earlier = F.col("trend_recent"), F.col("trend_earlier")
    columns: list[Column] = [
        F.col(CUSTOMER_ID),
        as_of_lit.alias(AS_OF),
        F.coalesce(F.datediff(as_of_lit, F.col("last_order_date")), tenure).alias(RECENCY),
        tenure.alias(TENURE),
        frequency.cast("long").alias(FREQUENCY),
    ]
    columns += [F.col(f"orders_{w}d").cast("long").alias(f"orders_{w}d") for w in windows_days]
    columns.append(monetary.cast("double").alias(MONETARY))
    columns += [
        F.col(f"monetary_{w}d").cast("double").alias(f"monetary_{w}d") for w in windows_days
    ]
    gap_mean = F.when(censored, since_first_order).otherwise(F.col("gap_mean"))
    gap_std = F.when(censored, 0.0).otherwise(F.col("gap_std"))
    gap_max = F.when(censored, since_first_order).otherwise(F.col("gap_max"))
    columns += [
        _ratio(monetary, frequency).alias(AOV),
        F.col(ACTIVE_DAYS).cast("long").alias(ACTIVE_DAYS),
        gap_mean.cast("double").alias(IPI_MEAN),
        gap_std.cast("double").alias(IPI_STD),
        gap_max.cast("double").alias(IPI_MAX),
        _ratio(recent - earlier, recent + earlier).alias(TREND),
        _ratio(F.col("return_amount"), monetary).alias(RETURN_RATE),
    ]
    if with_discount:
        columns.append(_ratio(F.col("discounted_orders"), frequency).alias(DISCOUNT_SHARE))
    if categories:
        columns += [
            _ratio(F.col(level_name("category", c)), monetary).alias(level_name("category", c))
            for c in (*categories, OTHER_LEVEL)
        ]
    for prefix, levels in (("channel", channels), ("device", devices)):
        known = F.col(f"{prefix}_known_events")
        columns += [
            _ratio(F.col(level_name(prefix, lvl)), known).alias(level_name(prefix, lvl))
            for lvl in levels
        ]
    return per_customer.select(*columns)
