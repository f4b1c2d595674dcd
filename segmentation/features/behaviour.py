"""Per-customer behavioural features as of a date, with Spark built-ins only.

One pass over the events: they are first aggregated to one row per customer and day (which
also yields active days without a distinct count), then to one row per customer. Days are
calendar days of the business's time zone (``input.events.time_zone``): an event counts on its
local day, and events after the end of the local day ``as_of`` never count. All "days ago"
figures count whole local days back from ``as_of``; a window of ``w`` days holds ``as_of`` and
the ``w - 1`` days before it.

Feature definitions (customers with at least one usable event up to ``as_of``):

* ``recency_days``: days since the last order; with no order, days since the first event.
* ``tenure_days``: days since the first event of any type.
* ``frequency``: orders; ``orders_<w>d`` orders in the last ``w`` days.
* ``monetary_total``: order amount; ``monetary_<w>d`` in the last ``w`` days (gross spend).
* ``monetary_net``: order amount minus returned amount; ``monetary_net_<w>d`` in the last
  ``w`` days (a return counts on its own day, whatever the sign of its amount).
* ``has_purchase``: 1 with at least one order up to ``as_of``, else 0 (then ``recency_days``
  counts from the first event and every spend feature is 0).
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

Level columns are named by :func:`level_name` (unique and stable for any label); each carries
its raw label in the column's metadata (kept by Delta), read back by :func:`level_labels`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from segmentation.config import FeatureConfig
from segmentation.features.levels import OTHER_LEVEL, level_columns, level_name
from segmentation.inputs import parsing
from segmentation.inputs.sources import ORDER, RETURN
from segmentation.storage import tables

CUSTOMER_ID = tables.CUSTOMER_ID
AS_OF = tables.AS_OF

RECENCY = "recency_days"
TENURE = "tenure_days"
FREQUENCY = "frequency"
MONETARY = "monetary_total"
MONETARY_NET = "monetary_net"
HAS_PURCHASE = "has_purchase"
AOV = "avg_order_value"
ACTIVE_DAYS = "active_days"
IPI_MEAN = "ipi_mean_days"
IPI_STD = "ipi_std_days"
IPI_MAX = "ipi_max_days"
TREND = "spend_trend"
RETURN_RATE = "return_rate"
DISCOUNT_SHARE = "discount_share"
EVENT_DATE = "event_date"
DAILY_SUMS = ("events", "orders", "order_amount", "return_amount", "discounted_orders")
"""The additive columns of :func:`daily_aggregates` besides the level sums."""


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
    time_zone: str = parsing.UTC,
) -> DataFrame:
    """One row per customer with the features above, as of the end of the local day ``as_of``.

    Args:
        events: canonical events (``sources.CANONICAL_SCHEMA``), usable rows only.
        as_of: the snapshot date; later events are ignored.
        windows_days: trailing windows for ``orders_<w>d`` and ``monetary_<w>d``.
        trend_window_days: length of each of the two periods ``spend_trend`` compares.
        categories: category levels for ``category_share_*``; empty: no category features.
        channels: channel levels for ``channel_share_*``; empty: none.
        devices: device levels for ``device_share_*``; empty: none.
        with_discount: compute ``discount_share`` (the events have a discount column).
        time_zone: the IANA zone whose calendar days count (``input.events.time_zone``).

    Returns:
        ``customer_id``, ``as_of`` and the feature columns, in a fixed order; level columns
        carry their raw label in their metadata.

    Raises:
        ValueError: two levels of one column would get the same column name.
    """
    # "other" collects every category not listed; listing it as well would name it twice.
    categories = tuple(c for c in categories if c != OTHER_LEVEL)
    for prefix, levels in (
        ("category", (*categories, OTHER_LEVEL)),
        ("channel", channels),
        ("device", devices),
    ):
        level_columns(prefix, levels)
    daily = _daily(events, as_of, categories, channels, devices, time_zone)
    gaps = _with_order_gaps(daily)
    per_customer = _per_customer(
        gaps, windows_days, trend_window_days, categories, channels, devices
    )
    return finalise(per_customer, as_of, windows_days, categories, channels, devices, with_discount)


def compute_configured(
    events: DataFrame,
    fc: FeatureConfig,
    *,
    as_of: dt.date,
    levels: Mapping[str, Sequence[str]],
    present: Collection[str],
    time_zone: str,
) -> DataFrame:
    """:func:`compute_features` with the ``features.*`` windows, the resolved ``levels`` and
    ``discount_share`` when the input has a discount column."""
    return compute_features(
        events, as_of=as_of, windows_days=fc.windows_days,
        trend_window_days=fc.trend_window_days, categories=levels["category"],
        channels=levels["channel"], devices=levels["device"],
        with_discount="discount" in present, time_zone=time_zone,
    )  # fmt: skip


def required_input(feature: str) -> str | None:
    """The optional input column (``input.events.columns.<name>``) a feature is computed
    from, or None when the required columns suffice: ``discount_share`` needs ``discount``,
    ``category_share_*`` ``category``, ``channel_share_*`` ``channel``, ``device_share_*``
    ``device``."""
    if feature == DISCOUNT_SHARE:
        return "discount"
    prefix, sep, _ = feature.partition("_share_")
    return prefix if sep and prefix in ("category", "channel", "device") else None


def feature_columns(df: DataFrame) -> list[str]:
    """The feature columns of a ``customer_features`` frame (all but the keys)."""
    return [c for c in df.columns if c not in (CUSTOMER_ID, AS_OF)]


def _daily(
    events: DataFrame,
    as_of: dt.date,
    categories: Sequence[str],
    channels: Sequence[str],
    devices: Sequence[str],
    time_zone: str,
) -> DataFrame:
    return (
        daily_aggregates(events, categories, channels, devices, time_zone)
        .where(F.col(EVENT_DATE) <= F.lit(as_of))
        .withColumn("days_ago", F.datediff(F.lit(as_of), F.col(EVENT_DATE)))
    )


def daily_aggregates(
    events: DataFrame,
    categories: Sequence[str],
    channels: Sequence[str],
    devices: Sequence[str],
    time_zone: str,
) -> DataFrame:
    """One row per customer and local day (``event_date``) with the additive aggregates every
    feature is computed from (:data:`DAILY_SUMS` and :func:`level_sum_columns`), whatever the
    day: the incremental feature state (``features.state``) keeps these rows."""
    event_date = parsing.local_date(F.col("event_time"), time_zone)
    is_order = F.col("event_type") == ORDER
    is_return = F.col("event_type") == RETURN
    amount = F.abs(F.col("amount"))
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
        events.withColumn(EVENT_DATE, event_date).groupBy(CUSTOMER_ID, EVENT_DATE).agg(*aggregates)
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
    order_day = F.col("orders") > 0
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
        *window_aggregates(windows_days, trend_window_days),
    ]
    level_cols = level_sum_columns(categories, channels, devices)
    aggregates += [F.sum(c).alias(c) for c in level_cols]
    return gaps.groupBy(CUSTOMER_ID).agg(*aggregates)


def window_aggregates(windows_days: Sequence[int], trend_window_days: int) -> list[Column]:
    """The windowed sums over daily rows with ``days_ago``: ``trend_recent``,
    ``trend_earlier``, and ``orders_<w>d``, ``monetary_<w>d``, ``monetary_net_<w>d`` per
    window."""
    days_ago = F.col("days_ago")
    t = trend_window_days
    aggregates = [
        F.sum(F.when(days_ago < t, F.col("order_amount")).otherwise(0.0)).alias("trend_recent"),
        F.sum(
            F.when((days_ago >= t) & (days_ago < 2 * t), F.col("order_amount")).otherwise(0.0)
        ).alias("trend_earlier"),
    ]
    net = F.col("order_amount") - F.col("return_amount")
    for w in windows_days:
        aggregates.append(
            F.sum(F.when(days_ago < w, F.col("orders")).otherwise(0)).alias(f"orders_{w}d")
        )
        aggregates.append(
            F.sum(F.when(days_ago < w, F.col("order_amount")).otherwise(0.0)).alias(
                f"monetary_{w}d"
            )
        )
        aggregates.append(
            F.sum(F.when(days_ago < w, net).otherwise(0.0)).alias(f"{MONETARY_NET}_{w}d")
        )
    return aggregates


def level_sum_columns(
    categories: Sequence[str], channels: Sequence[str], devices: Sequence[str]
) -> list[str]:
    """The per-level sums of the daily rows: order amount per category (``other`` last),
    events per channel and device, and events with a known channel / device."""
    level_cols = [level_name("category", c) for c in categories]
    if categories:
        level_cols.append(level_name("category", OTHER_LEVEL))
    for prefix, levels in (("channel", channels), ("device", devices)):
        level_cols += [level_name(prefix, lvl) for lvl in levels]
        if levels:
            level_cols.append(f"{prefix}_known_events")
    return level_cols


def _ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, 0 where the denominator is 0 (ANSI mode forbids x / 0)."""
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def finalise(
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
    columns.append((monetary - F.col("return_amount")).cast("double").alias(MONETARY_NET))
    columns += [
        F.col(f"{MONETARY_NET}_{w}d").cast("double").alias(f"{MONETARY_NET}_{w}d")
        for w in windows_days
    ]
    columns.append((frequency > 0).cast("long").alias(HAS_PURCHASE))
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
            _labelled(_ratio(F.col(level_name("category", c)), monetary), "category", c)
            for c in (*categories, OTHER_LEVEL)
        ]
    for prefix, levels in (("channel", channels), ("device", devices)):
        known = F.col(f"{prefix}_known_events")
        columns += [
            _labelled(_ratio(F.col(level_name(prefix, lvl)), known), prefix, lvl) for lvl in levels
        ]
    return per_customer.select(*columns)


def _labelled(value: Column, prefix: str, level: str) -> Column:
    """A level column named by :func:`level_name`, its raw label in the column's metadata."""
    return value.alias(
        level_name(prefix, level), metadata={"label": level, "source_column": prefix}
    )
