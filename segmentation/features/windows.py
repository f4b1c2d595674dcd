"""The window sums an incremental feature state keeps per customer, moved from day to day by
the days that enter and leave each window (``features.state``).

A customer row of ``feature_state_customers`` keeps, as of the state's day ``C`` and for each
window length ``n`` (each of ``features.windows_days``; ``trend_window_days`` and twice it for
``spend_trend``), the sums over the daily rows of the days ``(C - n, C]``
(:func:`kept_columns`): orders and net amount per window, the order amount per length. Moved
to a day ``A``, each is the kept one plus (:func:`changes`)

* the run's own rows with a day in ``(A - n, A]`` (the new days', and late rows of older
  days),
* the earlier runs' rows with a day in ``(max(C, A - n), A]`` (the days entering), less
* the earlier runs' rows with a day in ``(C - n, min(C, A - n)]`` (the days leaving),

so a daily run reads, besides its own rows, the days entering and leaving a window: a few
days instead of the window's year, as feature stores keep pre-aggregated "tiles" (Tecton,
Feast). Where the change would read as many days as the window itself (a long gap since the
state's day) or the state kept other lengths (another ``trend_window_days``), the sums are
summed again from the daily rows instead (:func:`sums`): no rebuild.

**Exact.** Amounts are kept as ``decimal(36, 18)`` (:data:`EXACT`): a daily double converts
with a rounding of at most 5e-19 and every sum after that is exact, so adding and subtracting
days year after year carries no floating-point drift. (A sum of doubles kept and adjusted
would: an amount that leaves the window would leave its rounding behind.) Adding two such
values is ``decimal(37, 18)``, exact, within Spark's 38 digits. An amount or sum of ``1e18``
or more does not fit: it is null, never an ANSI cast error, and the customer's features are
summed in double from the daily rows instead (:func:`values`), as the full computation does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.features import behaviour as feat

CUSTOMER_ID = feat.CUSTOMER_ID
DAY = feat.EVENT_DATE
MONTH = "event_month"
INCREMENT = "increment"
EXACT = T.DecimalType(36, 18)
"""The kept amounts: 18 digits on each side of the point (``1e18`` and above do not fit)."""
CHANGED = "_window_changed"
"""Marks the rows of :func:`changes` (a customer without one keeps his sums)."""


def span(windows_days: Sequence[int], trend_window_days: int) -> int:
    """Days of daily rows the windowed features need (``spend_trend`` compares two periods)."""
    return max(max(windows_days, default=0), 2 * trend_window_days)


def lengths(windows_days: Sequence[int], trend_window_days: int) -> list[int]:
    """The window lengths whose sums are kept: the windows, the trend window and twice it."""
    return sorted({*windows_days, trend_window_days, 2 * trend_window_days})


def kept_columns(windows_days: Sequence[int], trend_window_days: int) -> list[tuple[str, int, str]]:
    """``(column, length, measure)`` of each kept sum: ``window_orders_<n>d`` and
    ``window_net_<n>d`` (order less returned amount) per window, ``window_amount_<n>d`` (order
    amount) per length."""
    out = []
    for n in lengths(windows_days, trend_window_days):
        if n in windows_days:
            out.append((f"window_orders_{n}d", n, "orders"))
        out.append((f"window_amount_{n}d", n, "amount"))
        if n in windows_days:
            out.append((f"window_net_{n}d", n, "net"))
    return out


def names(windows_days: Sequence[int], trend_window_days: int) -> list[str]:
    return [c for c, _, _ in kept_columns(windows_days, trend_window_days)]


def _measure(kind: str) -> Column:
    """A daily row's value of ``kind`` (amounts as :data:`EXACT`: null where one does not
    fit)."""
    if kind == "orders":
        return F.coalesce(F.col("orders"), F.lit(0)).cast("long")
    amount = F.coalesce(F.col("order_amount"), F.lit(0.0)).try_cast(EXACT)
    if kind == "amount":
        return amount
    return amount - F.coalesce(F.col("return_amount"), F.lit(0.0)).try_cast(EXACT)


def _total(kind: str, sign: Column) -> Column:
    """Per group, the sum of ``kind`` over its rows with ``sign`` 1, less over those with -1
    (0 without any); amounts exact, null where a value or the total does not fit."""
    value = _measure(kind)
    signed = F.when(sign > 0, value).when(sign < 0, -value)
    if kind == "orders":
        return F.coalesce(F.sum(signed), F.lit(0)).cast("long")
    counted = F.count(F.when(sign != 0, 1))
    unfit = F.count(F.when((sign != 0) & value.isNull(), 1))
    return (
        F.when(counted == 0, F.lit(0).cast(EXACT))
        .when(unfit == 0, F.try_sum(signed).try_cast(EXACT))
        .cast(EXACT)
    )


def _days(first: dt.date, last: dt.date) -> Column:
    """Daily rows of the days ``[first, last]`` (the month partitions outside pruned)."""
    month, day = F.col(MONTH), F.col(DAY)
    return month.between(F.lit(first.replace(day=1)), F.lit(last.replace(day=1))) & day.between(
        F.lit(first), F.lit(last)
    )


def _months(first: dt.date, last: dt.date) -> list[dt.date]:
    """The first days of the months from ``first``'s to ``last``'s."""
    out, month = [], first.replace(day=1)
    while month <= last:
        out.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return out


def sums(
    daily: DataFrame,
    *,
    as_of: dt.date,
    windows_days: Sequence[int],
    trend_window_days: int,
    only: DataFrame | None = None,
) -> DataFrame:
    """Per customer (of ``only``'s ``customer_id`` when given) with a daily row in the last
    :func:`span` days up to ``as_of``, the kept sums as of ``as_of`` from those rows."""
    first = as_of - dt.timedelta(days=span(windows_days, trend_window_days) - 1)
    rows = daily.where(_days(first, as_of))
    if only is not None:
        rows = rows.join(F.broadcast(only.select(CUSTOMER_ID)), CUSTOMER_ID, "left_semi")
    days_ago = F.datediff(F.lit(as_of), F.col(DAY))
    return rows.groupBy(CUSTOMER_ID).agg(*[
        _total(kind, F.when(days_ago < n, 1).otherwise(0)).alias(name)
        for name, n, kind in kept_columns(windows_days, trend_window_days)
    ])  # fmt: skip


def changes(
    daily_all: DataFrame,
    daily_new: DataFrame,
    *,
    increment: int,
    since: dt.date,
    as_of: dt.date,
    windows_days: Sequence[int],
    trend_window_days: int,
) -> DataFrame | None:
    """Per customer, what moving the kept sums from ``since`` to ``as_of`` adds (see the
    module): from ``daily_new`` (the run's rows, ``increment``) and the earlier runs' rows of
    ``daily_all`` (every row). None where that would read as many days as :func:`sums`."""
    window = span(windows_days, trend_window_days)
    moved = (as_of - since).days
    if moved < 0 or moved * (len(lengths(windows_days, trend_window_days)) + 1) >= window:
        return None
    day, one = F.col(DAY), dt.timedelta(days=1)
    ranges = [(since + one, as_of)]  # entering: (C, A]
    for n in lengths(windows_days, trend_window_days):  # leaving: (C - n, min(C, A - n)]
        last = min(since, as_of - dt.timedelta(days=n))
        if last > since - dt.timedelta(days=n):
            ranges.append((since - dt.timedelta(days=n) + one, last))
    months = sorted({m for lo, hi in ranges for m in _months(lo, hi)})
    earlier = (
        daily_all.where(F.col(MONTH).isin(*months))  # partition pruning as a conjunct of its own
        .where(reduce(lambda a, b: a | b, [_days(lo, hi) for lo, hi in ranges]))
        .where(F.col(INCREMENT) < increment)
    )
    own = daily_new.where(_days(as_of - dt.timedelta(days=window - 1), as_of))
    rows = earlier.unionByName(own)
    new = F.col(INCREMENT) == increment
    totals = []
    for name, n, kind in kept_columns(windows_days, trend_window_days):
        start = as_of - dt.timedelta(days=n)  # the window as of `as_of` is (start, as_of]
        sign = (
            F.when(new, F.when(day > F.lit(start), 1).otherwise(0))
            .when(day > F.lit(max(since, start)), 1)
            .when((day > F.lit(since - dt.timedelta(days=n))) & (day <= F.lit(min(since, start))),
                  -1)
            .otherwise(0)
        )  # fmt: skip
        totals.append(_total(kind, sign).alias(name))
    return rows.groupBy(CUSTOMER_ID).agg(*totals, F.lit(True).alias(CHANGED))


def added(kept: str, change: str, *, in_kept: Column, changed: Column, dtype: T.DataType) -> Column:
    """A kept sum moved by its change: the change alone for a customer new to the kept rows,
    the kept sum alone without a change; null where either is null or the sum does not fit."""
    total = F.try_add(F.col(kept), F.col(change))
    return (
        F.when(~changed, F.col(kept)).when(~in_kept, F.col(change)).otherwise(total).try_cast(dtype)
    )


def dtypes(windows_days: Sequence[int], trend_window_days: int) -> dict[str, T.DataType]:
    return {
        name: T.LongType() if kind == "orders" else EXACT
        for name, _, kind in kept_columns(windows_days, trend_window_days)
    }


def plus(kept: DataFrame, change: DataFrame, columns: Sequence[str]) -> DataFrame:
    """``kept`` rows (``customer_id`` and ``columns``) moved by :func:`changes` rows."""
    k, c = kept.alias("k"), change.alias("c")
    types = {f.name: f.dataType for f in kept.schema.fields}
    in_kept, changed = F.col(f"k.{CUSTOMER_ID}").isNotNull(), F.col(f"c.{CHANGED}").isNotNull()
    return k.join(c, F.col(f"k.{CUSTOMER_ID}") == F.col(f"c.{CUSTOMER_ID}"), "full").select(
        F.coalesce(F.col(f"k.{CUSTOMER_ID}"), F.col(f"c.{CUSTOMER_ID}")).alias(CUSTOMER_ID),
        *[added(f"k.{n}", f"c.{n}", in_kept=in_kept, changed=changed, dtype=types[n]).alias(n)
          for n in columns],
    )  # fmt: skip


def with_sums(customers: DataFrame, kept: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Customer rows with their kept sums (in place of any they had; 0 for a customer without
    a row in ``kept``: none of his days is in a window; a null sum stays null)."""
    found = kept.select(CUSTOMER_ID, *columns, F.lit(True).alias("_kept"))
    joined = customers.drop(*columns).join(found, CUSTOMER_ID, "left")
    zero = {n: F.lit(0).cast(t) for n, t in _types(kept, columns).items()}
    return joined.select(
        *[c for c in customers.columns if c not in columns],
        *[F.when(F.col("_kept").isNull(), zero[n]).otherwise(F.col(n)).alias(n) for n in columns],
    )


def _types(df: DataFrame, columns: Sequence[str]) -> dict[str, T.DataType]:
    types = {f.name: f.dataType for f in df.schema.fields}
    return {n: types[n] for n in columns}


def unfit(columns: Sequence[str]) -> Column:
    """A customer row with a kept sum that did not fit (null)."""
    return reduce(lambda a, b: a | b, [F.col(n).isNull() for n in columns])


def values(
    customers: DataFrame, daily: DataFrame, *, as_of: dt.date, windows_days: Sequence[int],
    trend_window_days: int, unfit_ids: DataFrame | None = None,
) -> DataFrame:  # fmt: skip
    """Customer rows with the windowed sums ``behaviour.finalise`` reads (``orders_<w>d``,
    ``monetary_<w>d``, ``monetary_net_<w>d``, ``trend_recent``, ``trend_earlier``) from the
    kept sums as of ``as_of``; for a customer with a sum that does not fit (among
    ``unfit_ids``: None, every sum fits), summed in double from his ``daily`` rows as the full
    computation sums them."""
    w, t = windows_days, trend_window_days
    exact = {f"orders_{n}d": F.col(f"window_orders_{n}d") for n in w}
    exact |= {f"monetary_{n}d": F.col(f"window_amount_{n}d").cast("double") for n in w}
    exact |= {f"{feat.MONETARY_NET}_{n}d": F.col(f"window_net_{n}d").cast("double") for n in w}
    exact["trend_recent"] = F.col(f"window_amount_{t}d").cast("double")
    earlier = F.col(f"window_amount_{2 * t}d") - F.col(f"window_amount_{t}d")
    exact["trend_earlier"] = earlier.cast("double")
    if unfit_ids is None:  # the usual case
        return customers.select("*", *[v.alias(k) for k, v in exact.items()])
    first = as_of - dt.timedelta(days=span(w, t) - 1)
    summed = (
        daily.where(_days(first, as_of))
        .join(F.broadcast(unfit_ids), CUSTOMER_ID, "left_semi")
        .withColumn("days_ago", F.datediff(F.lit(as_of), F.col(DAY)))
        .groupBy(CUSTOMER_ID)
        .agg(*feat.window_aggregates(w, t))
    )
    doubles = summed.select(CUSTOMER_ID, *[F.col(k).alias(f"_double_{k}") for k in exact])
    bad = unfit(names(w, t))
    return customers.join(doubles, CUSTOMER_ID, "left").select(
        *customers.columns,
        *[F.when(bad, F.coalesce(F.col(f"_double_{k}"), F.lit(0))).otherwise(v).alias(k)
          for k, v in exact.items()],
    )  # fmt: skip


def healed(
    customers: DataFrame, daily: DataFrame, unfit_ids: DataFrame, *, as_of: dt.date,
    windows_days: Sequence[int], trend_window_days: int,
) -> DataFrame:  # fmt: skip
    """``customers`` with their window sums that did not fit (null; the customers of
    ``unfit_ids``) summed again from the ``daily`` rows: they fit again once the large amounts
    leave the windows (a null kept sum moved by a change stays null)."""
    columns = names(windows_days, trend_window_days)
    again = sums(daily, as_of=as_of, windows_days=windows_days,
                 trend_window_days=trend_window_days, only=unfit_ids)  # fmt: skip
    found = again.select(CUSTOMER_ID, *[F.col(n).alias(f"_again_{n}") for n in columns],
                         F.lit(True).alias("_again"))  # fmt: skip
    types = _types(customers, columns)
    summed = {  # a customer without a row in the windows now: 0
        n: F.when(F.col("_again").isNull(), F.lit(0).cast(types[n])).otherwise(F.col(f"_again_{n}"))
        for n in columns
    }
    bad = unfit(columns)
    return customers.join(found, CUSTOMER_ID, "left").select(
        *[F.when(bad, summed[c]).otherwise(F.col(c)).alias(c) if c in summed else F.col(c)
          for c in customers.columns]
    )  # fmt: skip


def unfit_ids(spark: SparkSession, customers: DataFrame, columns: Sequence[str]) -> DataFrame:
    """The ids of ``customers`` with a kept sum that did not fit, as a local frame (a handful
    of rows: a plan that refers to it stays small, where one that refers to ``customers``
    again would print their whole plan at every reference)."""
    rows = customers.where(unfit(columns)).select(CUSTOMER_ID).collect()
    return spark.createDataFrame(rows, customers.select(CUSTOMER_ID).schema)
