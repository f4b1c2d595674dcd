"""The incremental feature state: additive aggregates that give every feature of
``behaviour.compute_features`` without re-reading old events.

Two levels of state, both plain DataFrames here (``workflows.feature_state`` keeps them in
Delta):

* **daily rows** (``feature_state_daily``): per customer and local day, the additive sums of
  ``behaviour.daily_aggregates`` (events, orders, order and returned amount, discounted
  orders, per-level sums). Each run appends the rows of the events it read, tagged with its
  ``increment``; a day that two runs both saw (late data) simply has two rows, which every
  reader sums first. Days after ``as_of`` (events inside ``quality.max_days_after_as_of``) are
  kept for the runs that reach them.
* **customer rows** (``feature_state_customers``): per customer, the all-time aggregates up
  to the state's ``as_of``: first event day, first and last order day, sums, active and order
  days, and the gaps between consecutive order days as count, sum, sum of squares and maximum
  (integers, so the mean and the population standard deviation follow exactly).

Moving the state from day ``C`` to ``A``: a customer with no new row on a day up to ``C``
(no late data) has his aggregates *advanced* with the days in ``(C, A]`` (the gap from his old
last order day to the first new one included); a customer with late rows is rebuilt from all
his daily rows. The windowed features (``orders_<w>d``, ``monetary_<w>d``, ``spend_trend``)
are summed from the daily rows of the last ``max(max(windows), 2 * trend_window)`` days at
feature time, so a window change needs no rebuild. Every feature then goes through
``behaviour.finalise``, the same final step as the full computation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from segmentation.features import behaviour as feat

CUSTOMER_ID = feat.CUSTOMER_ID
DAY = feat.EVENT_DATE
MONTH = "event_month"
INCREMENT = "increment"
GAPS = ("gap_count", "gap_sum", "gap_sumsq")
"""Additive gap statistics (integers) of a customer row; ``gap_max`` combines by max."""
CUSTOMER_SUMS = (feat.FREQUENCY, feat.MONETARY, "return_amount", "discounted_orders", "events",
                 feat.ACTIVE_DAYS, "order_days", *GAPS)  # fmt: skip
"""Additive columns of a customer row besides the level sums."""
_DAILY_TO_CUSTOMER = {"orders": feat.FREQUENCY, "order_amount": feat.MONETARY}


def daily_rows(
    events: DataFrame, levels: dict[str, tuple[str, ...]], time_zone: str, increment: int
) -> DataFrame:
    """The daily state rows of ``events`` (clean, de-duplicated), tagged with ``increment``
    and their month (the table's partition)."""
    categories = _categories(levels)
    return (
        feat.daily_aggregates(events, categories, levels["channel"], levels["device"], time_zone)
        .withColumn(MONTH, F.trunc(F.col(DAY), "month"))
        .withColumn(INCREMENT, F.lit(increment).cast("long"))
    )


def level_sums(levels: dict[str, tuple[str, ...]]) -> list[str]:
    """The per-level sum columns of the daily and customer rows."""
    return feat.level_sum_columns(_categories(levels), levels["channel"], levels["device"])


def summed_days(daily: DataFrame, levels: dict[str, tuple[str, ...]]) -> DataFrame:
    """One row per customer and day: the rows several increments wrote for it, summed."""
    sums = [*feat.DAILY_SUMS, *level_sums(levels)]
    return daily.groupBy(CUSTOMER_ID, DAY).agg(*[F.sum(c).alias(c) for c in sums])


def customer_rows(
    days: DataFrame, levels: dict[str, tuple[str, ...]], *, seeds: DataFrame | None = None
) -> DataFrame:
    """Customer rows from :func:`summed_days` rows.

    ``seeds`` (``customer_id``, ``last_order_date``): each customer's last order day before
    ``days``; the gap from it to his first order day in ``days`` counts, the seed itself
    adds nothing else (:func:`advance`).
    """
    rows = days.withColumn("_seed", F.lit(False))
    if seeds is not None:
        rows = rows.unionByName(
            seeds.where(F.col("last_order_date").isNotNull()).select(
                CUSTOMER_ID, F.col("last_order_date").alias(DAY), F.lit(True).alias("_seed"),
                F.lit(1).cast("long").alias("orders"),
            ),
            allowMissingColumns=True,
        )  # fmt: skip
    is_order = F.col("orders") > 0
    previous = (
        Window.partitionBy(CUSTOMER_ID).orderBy(DAY).rowsBetween(Window.unboundedPreceding, -1)
    )
    prev_order = F.last(F.when(is_order, F.col(DAY)), ignorenulls=True).over(previous)
    gap = F.when(is_order & ~F.col("_seed"), F.datediff(F.col(DAY), prev_order).cast("long"))
    rows = rows.withColumn("_gap", gap).where(~F.col("_seed"))
    aggregates = [
        F.min(DAY).alias("first_event_date"),
        F.min(F.when(is_order, F.col(DAY))).alias("first_order_date"),
        F.max(F.when(is_order, F.col(DAY))).alias("last_order_date"),
        *[_total(c).alias(_DAILY_TO_CUSTOMER.get(c, c)) for c in feat.DAILY_SUMS],
        F.count(F.lit(1)).cast("long").alias(feat.ACTIVE_DAYS),
        F.count(F.when(is_order, 1)).cast("long").alias("order_days"),
        F.count("_gap").cast("long").alias("gap_count"),
        F.coalesce(F.sum("_gap"), F.lit(0)).cast("long").alias("gap_sum"),
        F.coalesce(F.sum(F.col("_gap") * F.col("_gap")), F.lit(0)).cast("long").alias("gap_sumsq"),
        F.max("_gap").alias("gap_max"),
        *[_total(c).alias(c) for c in level_sums(levels)],
    ]
    return rows.groupBy(CUSTOMER_ID).agg(*aggregates)


def _total(column: str) -> Column:
    """The sum, 0 where every value is null (a channel count of events without a channel:
    the feature is 0 either way, and 0 adds up where null would not)."""
    return F.coalesce(F.sum(column), F.lit(0))


def advance(old: DataFrame, days: DataFrame, levels: dict[str, tuple[str, ...]]) -> DataFrame:
    """``old`` customer rows moved forward by ``days`` (summed days all after each customer's
    state: no late day), customers without new days unchanged, new customers added."""
    new = customer_rows(
        days, levels, seeds=old.join(days.select(CUSTOMER_ID).distinct(), CUSTOMER_ID)
    )
    o, n = old.alias("o"), new.alias("n")
    columns: list[Column] = [
        F.coalesce(F.col(f"o.{CUSTOMER_ID}"), F.col(f"n.{CUSTOMER_ID}")).alias(CUSTOMER_ID),
        F.least("o.first_event_date", "n.first_event_date").alias("first_event_date"),
        F.least("o.first_order_date", "n.first_order_date").alias("first_order_date"),
        F.greatest("o.last_order_date", "n.last_order_date").alias("last_order_date"),
    ]
    for c in (*CUSTOMER_SUMS, *level_sums(levels)):
        columns.append(
            (F.coalesce(F.col(f"o.{c}"), F.lit(0)) + F.coalesce(F.col(f"n.{c}"), F.lit(0))).alias(c)
        )
    columns.append(F.greatest("o.gap_max", "n.gap_max").alias("gap_max"))
    return o.join(n, F.col(f"o.{CUSTOMER_ID}") == F.col(f"n.{CUSTOMER_ID}"), "full").select(
        *columns
    )


def window_span(windows_days: Sequence[int], trend_window_days: int) -> int:
    """Days of daily rows the windowed features need (``spend_trend`` compares two periods)."""
    return max(max(windows_days, default=0), 2 * trend_window_days)


def features(
    customers: DataFrame,
    daily: DataFrame,
    *,
    as_of: dt.date,
    windows_days: Sequence[int],
    trend_window_days: int,
    levels: dict[str, tuple[str, ...]],
    with_discount: bool,
) -> DataFrame:
    """The ``customer_features`` rows as of ``as_of`` from customer rows up to ``as_of`` and
    the daily rows (only the last :func:`window_span` days are read: the month partitions
    before them are pruned)."""
    span = window_span(windows_days, trend_window_days)
    first = as_of - dt.timedelta(days=span - 1)
    recent = (
        daily.where(F.col(MONTH) >= F.lit(first.replace(day=1)))
        .where(F.col(DAY).between(F.lit(first), F.lit(as_of)))
        .withColumn("days_ago", F.datediff(F.lit(as_of), F.col(DAY)))
        .groupBy(CUSTOMER_ID)
        .agg(*feat.window_aggregates(windows_days, trend_window_days))
    )
    window_columns = [c for c in recent.columns if c != CUSTOMER_ID]
    n, total = F.col("gap_count"), F.col("gap_sum")
    spread = (n * F.col("gap_sumsq") - total * total).cast("double")
    per_customer = (
        customers.join(recent, CUSTOMER_ID, "left")
        .fillna(0, subset=window_columns)
        .withColumn("gap_mean", F.when(n > 0, total.cast("double") / n))
        .withColumn("gap_std", F.when(n > 0, F.sqrt(spread / (n * n).cast("double"))))
    )
    return feat.finalise(
        per_customer, as_of, windows_days, _categories(levels), levels["channel"],
        levels["device"], with_discount,
    )  # fmt: skip


def _categories(levels: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(c for c in levels["category"] if c != feat.OTHER_LEVEL)
