"""The BTYD summary of every customer as of a date, in Spark, from the clean events.

Purchases on one local day are one transaction, as in the BG/NBD paper (Fader, Hardie & Lee
2005: the CDNOW customers' "repeat transactions" are days with a purchase). Per customer with at
least one order up to the end of the local day ``as_of``:

* ``x``: repeat purchase days (purchase days after the first);
* ``t_x``: days from the first to the last purchase day, in the time unit;
* ``T``: days from the first purchase day to ``as_of`` (the ``recency_days`` convention: a first
  purchase on 1997-01-01 and ``as_of`` 1997-09-30 give 272 days, 38.86 weeks);
* ``repeat_value``: the mean value of the repeat transactions, gross by default (order amounts
  of the repeat days / x). ``value.spend: net`` subtracts every amount returned after the first
  purchase day; a customer whose net repeat spend is then not positive cannot be described by
  Gamma-Gamma and is flagged (``NON_POSITIVE_SPEND``), never fitted.

The time unit is ``value.time_unit``: a day, a week (7 days) or a month (365.25 / 12 days).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segmentation.inputs import parsing
from segmentation.inputs.sources import ORDER, RETURN
from segmentation.storage.tables import CUSTOMER_ID

TimeUnit = Literal["day", "week", "month"]
UNIT_DAYS: dict[str, float] = {"day": 1.0, "week": 7.0, "month": 365.25 / 12}
DAY = "purchase_day"
NON_POSITIVE_SPEND = "non_positive_repeat_spend"


def purchase_days(events: DataFrame, *, time_zone: str) -> DataFrame:
    """One row per customer and local day with an order or a return: the day's gross order
    amount, returned amount and whether it has an order (amounts by absolute value, as the
    feature job counts them)."""
    day = parsing.local_date(F.col("event_time"), time_zone)
    amount = F.abs(F.col("amount"))
    is_order = F.col("event_type") == ORDER
    is_return = F.col("event_type") == RETURN
    return (
        events.where(is_order | is_return)
        .groupBy(CUSTOMER_ID, day.alias(DAY))
        .agg(
            F.sum(F.when(is_order, amount).otherwise(0.0)).alias("order_amount"),
            F.sum(F.when(is_return, amount).otherwise(0.0)).alias("return_amount"),
            F.max(is_order).alias("has_order"),
        )
    )


def summarise(days: DataFrame, *, as_of: dt.date, unit: TimeUnit, net: bool = False) -> DataFrame:
    """The BTYD summary as of the end of ``as_of``: ``customer_id``, ``x``, ``t_x``, ``T``,
    ``repeat_value`` (null without a repeat purchase), ``first_purchase`` and ``flag``
    (``NON_POSITIVE_SPEND`` or null); one row per customer with an order up to ``as_of``."""
    scale = UNIT_DAYS[unit]
    order_day = F.col("has_order")
    upto = days.where(F.col(DAY) <= F.lit(as_of))
    returned = F.lit(0.0)
    if net:
        first_day = F.min(F.when(order_day, F.col(DAY))).over(Window.partitionBy(CUSTOMER_ID))
        returned = F.when(F.col(DAY) > first_day, F.col("return_amount")).otherwise(0.0)
    per_customer = (
        upto.withColumn("returned_later", returned)
        .groupBy(CUSTOMER_ID)
        .agg(
            F.min(F.when(order_day, F.struct(F.col(DAY), F.col("order_amount")))).alias("first"),
            F.max(F.when(order_day, F.col(DAY))).alias("last"),
            F.count(F.when(order_day, 1)).alias("purchase_days"),
            F.sum("order_amount").alias("gross"),
            F.sum("returned_later").alias("returned_later"),
        )
    )
    buyers = per_customer.where(F.col("purchase_days") > 0)
    x = F.col("purchase_days") - 1
    repeat = F.col("gross") - F.col("first.order_amount") - F.col("returned_later")
    value = F.when(x > 0, repeat / x)
    return buyers.select(
        CUSTOMER_ID,
        x.cast("long").alias("x"),
        (F.datediff(F.col("last"), F.col("first")[DAY]) / F.lit(scale)).alias("t_x"),
        (F.datediff(F.lit(as_of), F.col("first")[DAY]) / F.lit(scale)).alias("T"),
        value.cast("double").alias("repeat_value"),
        F.col("first")[DAY].alias("first_purchase"),
        F.when((x > 0) & (value <= 0), F.lit(NON_POSITIVE_SPEND)).alias("flag"),
    )


def holdout_purchases(days: DataFrame, *, start: dt.date, end: dt.date) -> DataFrame:
    """Per customer, the purchase days in ``(start, end]`` (the holdout period's actual
    transactions), for every customer with a purchase day in that window."""
    window = (F.col(DAY) > F.lit(start)) & (F.col(DAY) <= F.lit(end)) & F.col("has_order")
    return days.where(window).groupBy(CUSTOMER_ID).agg(F.count(F.lit(1)).alias("holdout_purchases"))
