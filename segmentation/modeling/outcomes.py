"""Predictive validity: do segments as of T differ in what customers do in (T, T + h]?

Computed with Spark over all customers, from the clean events (``quality``), never fed back to
the model. Per segment: the share of customers who purchased (at least one order), revenue
per customer (the sum of order amounts; 0 for customers without orders) and the share who
returned something, with 95% confidence intervals (Wilson score intervals for shares, the
normal approximation for the mean revenue). Whether segments differ: Pearson's chi-square
test on purchase (segments x purchased, ``scipy.stats.chi2_contingency``) with Cramér's V, and
the Kruskal-Wallis test on revenue per customer (ranks computed with Spark over every customer,
ties averaged and corrected as ``scipy.stats.kruskal`` does) with epsilon-squared = H / (N - 1).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from scipy import stats

from segmentation.inputs.parsing import UTC, local_date
from segmentation.inputs.sources import ORDER, RETURN
from segmentation.modeling.validation import Measure
from segmentation.storage.tables import CUSTOMER_ID, SEGMENT_ID

Z95 = 1.959963984540054
ALPHA = 0.05


@dataclass(frozen=True)
class OutcomeWindow:
    """The outcome window: events after ``start`` (exclusive) up to ``end`` (inclusive), in
    calendar days; ``mode`` says whether it is a backtest or the real future."""

    start: dt.date
    end: dt.date
    mode: str

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def customer_outcomes(
    events: DataFrame, assignment: DataFrame, window: OutcomeWindow, *, time_zone: str = UTC
) -> DataFrame:
    """Per assigned customer: ``purchased`` (0/1), ``revenue`` and ``returned`` (0/1) in the
    window. Customers without events in it have 0, 0, 0.

    Args:
        events: clean canonical events (``customer_id``, ``event_time``, ``amount``,
            ``event_type``).
        assignment: ``customer_id`` and ``segment_id`` as of the window's start.
        window: the outcome days (local calendar days of ``time_zone``).
        time_zone: the business's zone (``input.events.time_zone``), as the features count days.
    """
    day = local_date(F.col("event_time"), time_zone)
    inside = (day > F.lit(window.start)) & (day <= F.lit(window.end))
    is_order = F.col("event_type") == ORDER
    per_customer = (
        events.where(inside)
        .groupBy(CUSTOMER_ID)
        .agg(
            F.max(is_order.cast("int")).alias("purchased"),
            F.sum(F.when(is_order, F.col("amount")).otherwise(0.0)).alias("revenue"),
            F.max((F.col("event_type") == RETURN).cast("int")).alias("returned"),
        )
    )
    return (
        assignment.select(CUSTOMER_ID, SEGMENT_ID)
        .join(per_customer, on=CUSTOMER_ID, how="left")
        .select(
            CUSTOMER_ID,
            SEGMENT_ID,
            F.coalesce("purchased", F.lit(0)).alias("purchased"),
            F.coalesce("revenue", F.lit(0.0)).cast("double").alias("revenue"),
            F.coalesce("returned", F.lit(0)).alias("returned"),
        )
    )


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (E. B. Wilson, JASA 1927)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def measures(outcomes: DataFrame) -> list[Measure]:
    """Per-segment outcomes with intervals, and the tests that segments differ."""
    rows = (
        outcomes.groupBy(SEGMENT_ID)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("purchased").alias("buyers"),
            F.sum("returned").alias("returners"),
            F.avg("revenue").alias("revenue"),
            F.stddev_samp("revenue").alias("sd"),
        )
        .orderBy(SEGMENT_ID)
        .collect()
    )
    total = sum(int(r["n"]) for r in rows)
    buyers = sum(int(r["buyers"]) for r in rows)
    overall = buyers / total if total else 0.0
    out = []
    for r in rows:
        sid, n = int(r[SEGMENT_ID]), int(r["n"])
        lo, hi = wilson(int(r["buyers"]), n)
        differs = "differs on outcome" if not lo <= overall <= hi else "does not differ"
        out.append(Measure(sid, "outcome_purchase_share", int(r["buyers"]) / n, lo, hi, differs))
        mean, sd = float(r["revenue"]), float(r["sd"] or 0.0)
        half = Z95 * sd / math.sqrt(n) if n > 1 else 0.0
        out.append(Measure(sid, "outcome_revenue_per_customer", mean, mean - half, mean + half))
        lo, hi = wilson(int(r["returners"]), n)
        out.append(Measure(sid, "outcome_return_rate", int(r["returners"]) / n, lo, hi))
        out.append(Measure(sid, "outcome_customers", float(n)))
    out.append(Measure(None, "outcome_purchase_share", overall, *wilson(buyers, total)))
    return out + purchase_test(rows) + revenue_test(outcomes)


def purchase_test(rows: Sequence[dict] | Sequence) -> list[Measure]:  # type: ignore[type-arg]
    """Pearson's chi-square on segments x purchased, with Cramér's V (effect size)."""
    table = [[int(r["buyers"]), int(r["n"]) - int(r["buyers"])] for r in rows]
    if len(table) < 2 or min(sum(col) for col in zip(*table, strict=True)) == 0:
        return [Measure(None, "outcome_purchase_chi2", None, verdict="not testable")]
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    n = sum(sum(row) for row in table)
    v = math.sqrt(chi2 / (n * (min(len(table), 2) - 1)))
    verdict = "segments differ" if p < ALPHA else "no difference found"
    return [
        Measure(None, "outcome_purchase_chi2", float(chi2), verdict=verdict),
        Measure(None, "outcome_purchase_p_value", float(p)),
        Measure(None, "outcome_purchase_cramers_v", v),
    ]


def revenue_test(outcomes: DataFrame) -> list[Measure]:
    """Kruskal-Wallis H on revenue per customer across segments, ranks over every customer."""
    values = outcomes.select(SEGMENT_ID, "revenue")
    ties = values.groupBy("revenue").count()
    cumulative = F.sum("count").over(
        Window.orderBy("revenue").rowsBetween(Window.unboundedPreceding, 0)
    )
    ranks = ties.select(
        "revenue",
        "count",
        (cumulative - (F.col("count") - 1) / 2.0).alias("rank"),
    )
    tie_row = ranks.agg(F.sum(F.pow("count", 3) - F.col("count"))).first()
    tie_sum = float(tie_row[0] or 0.0) if tie_row is not None else 0.0
    groups = (
        values.join(ranks.select("revenue", "rank"), on="revenue", how="inner")
        .groupBy(SEGMENT_ID)
        .agg(F.count(F.lit(1)).alias("n"), F.sum("rank").alias("r"))
        .collect()
    )
    n = sum(int(g["n"]) for g in groups)
    if len(groups) < 2 or n < 3 or tie_sum == n**3 - n:
        return [Measure(None, "outcome_revenue_kruskal_h", None, verdict="not testable")]
    h = 12.0 / (n * (n + 1)) * sum(float(g["r"]) ** 2 / int(g["n"]) for g in groups) - 3 * (n + 1)
    h /= 1 - float(tie_sum) / (n**3 - n)
    p = float(stats.chi2.sf(h, len(groups) - 1))
    verdict = "segments differ" if p < ALPHA else "no difference found"
    return [
        Measure(None, "outcome_revenue_kruskal_h", h, verdict=verdict),
        Measure(None, "outcome_revenue_p_value", p),
        Measure(None, "outcome_revenue_epsilon_squared", h / (n - 1)),
    ]
