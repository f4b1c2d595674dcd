"""Sample event histories with planted behavioural archetypes.

Everything is computed on the executors from ``spark.range``: every random draw is a hash of
(seed, customer, event index, purpose), so the output depends only on the seed and the sizes,
never on partitioning, and the driver holds nothing per customer or per event. It scales to
100M events by adding partitions.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

CATEGORIES = ("electronics", "home", "apparel", "beauty", "grocery", "sports", "toys", "books")
CHANNELS = ("web", "app", "store")
DEVICES = ("desktop", "mobile", "tablet", "pos")
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "CA")
COUNTRY_WEIGHTS = (0.35, 0.12, 0.12, 0.09, 0.07, 0.07, 0.05, 0.04, 0.05, 0.04)
INDUSTRIES = ("retail", "hospitality", "manufacturing", "services", "education", "health")
# Events per customer are capped so a heavy tail cannot explode one customer.
MAX_EVENTS_FACTOR = 25
_HASH_RANGE = 1 << 31


@dataclass(frozen=True)
class Archetype:
    """One planted behaviour. Times are days before the history's end date.

    Attributes:
        name: the truth label written to ``segment_truth``.
        weight: share of customers.
        intensity: relative expected number of events.
        first_days_ago: range of days before the end at which the customer's history starts.
        last_days_ago: range of days before the end of the customer's last order.
        aov: median order value; ``aov_sigma`` its log-normal spread.
        p_visit, p_return: share of events that are visits / returns.
        p_discount: share of orders with a discount.
        category_weights, channel_weights: preferences over CATEGORIES and CHANNELS.
    """

    name: str
    weight: float
    intensity: float
    first_days_ago: tuple[int, int]
    last_days_ago: tuple[int, int]
    aov: float
    aov_sigma: float
    p_visit: float
    p_return: float
    p_discount: float
    category_weights: tuple[float, ...]
    channel_weights: tuple[float, float, float]


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "champions", 0.12, 4.0, (700, 1095), (0, 5), 160.0, 0.30, 0.25, 0.04, 0.10,
        (3, 2, 2, 1, 1, 1, 1, 1), (0.25, 0.6, 0.15),
    ),
    Archetype(
        "loyal_regulars", 0.22, 1.0, (500, 1095), (0, 30), 40.0, 0.30, 0.30, 0.04, 0.12,
        (1, 2, 1, 1, 3, 1, 1, 1), (0.35, 0.35, 0.3),
    ),
    Archetype(
        "big_ticket", 0.10, 0.22, (500, 1095), (20, 120), 650.0, 0.30, 0.35, 0.10, 0.08,
        (5, 4, 1, 0.5, 0.2, 1, 0.5, 0.3), (0.4, 0.1, 0.5),
    ),
    Archetype(
        "bargain_hunters", 0.18, 1.0, (400, 1095), (0, 40), 22.0, 0.35, 0.35, 0.12, 0.85,
        (0.5, 1, 4, 2, 1, 1, 1, 0.5), (0.7, 0.25, 0.05),
    ),
    Archetype(
        "new_customers", 0.14, 0.10, (8, 60), (0, 7), 55.0, 0.40, 0.40, 0.03, 0.20,
        (1, 1, 2, 2, 1, 1, 1, 1), (0.45, 0.45, 0.1),
    ),
    Archetype(
        "lapsed", 0.24, 0.40, (800, 1095), (380, 700), 60.0, 0.40, 0.30, 0.06, 0.15,
        (1, 1, 1, 1, 1, 1, 1, 1), (0.4, 0.2, 0.4),
    ),
)  # fmt: skip

EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("event_type", T.StringType(), False),
        T.StructField("amount", T.DoubleType(), False),
        T.StructField("quantity", T.IntegerType(), False),
        T.StructField("discount", T.DoubleType(), False),
        T.StructField("category", T.StringType(), True),
        T.StructField("channel", T.StringType(), False),
        T.StructField("device", T.StringType(), False),
    ]
)


@dataclass(frozen=True)
class SampleData:
    """The generated tables (lazy DataFrames)."""

    events: DataFrame
    customers: DataFrame
    segment_truth: DataFrame


def generate(
    spark: SparkSession,
    *,
    customers: int,
    events: int,
    seed: int,
    start_date: dt.date,
    end_date: dt.date,
    partitions: int | None = None,
    archetypes: Sequence[Archetype] = ARCHETYPES,
    overlap: float = 0.0,
) -> SampleData:
    """Build the sample tables for ``customers`` customers and about ``events`` events.

    Args:
        spark: the active session.
        customers: number of customers.
        events: target total number of events (the realised total is within a few percent).
        seed: every draw derives from it; the same seed and sizes give the same rows.
        start_date: first day of the history; archetype windows are clipped to it.
        end_date: last day of the history (the natural ``as_of`` for features).
        partitions: Spark partitions to generate with; default one per ~1M events, at least 2.
        archetypes: the planted behaviours and their shares.
        overlap: 0 (default) for well-separated archetypes; up to 1 for behaviours that blur
            into each other (over-dispersed counts, varied baskets, wider activity windows).
    """
    n_parts = partitions or max(2, math.ceil(events / 1_000_000))
    history_days = (end_date - start_date).days
    mean_intensity = sum(a.weight * a.intensity for a in archetypes)
    events_per_unit = events / customers / mean_intensity
    base = spark.range(0, customers, numPartitions=n_parts).withColumnRenamed("id", "cid")
    people = base.select(
        "cid",
        F.format_string("C%08d", F.col("cid")).alias("customer_id"),
        _pick_weighted(
            _uniform(seed, "archetype", F.col("cid")),
            [a.name for a in archetypes],
            [a.weight for a in archetypes],
        ).alias("archetype"),
    )
    people = _with_archetype_params(
        people, archetypes, seed, history_days, events_per_unit, overlap
    )
    return SampleData(
        events=_events(people, seed, end_date, archetypes),
        customers=_customers(people, seed, end_date),
        segment_truth=people.select("customer_id", F.col("archetype").alias("true_segment")),
    )


def _by_archetype(archetypes: Sequence[Archetype], values: Sequence[float]) -> Column:
    """``values[i]`` for customers of ``archetypes[i]`` (the last one for any other)."""
    expr = F.lit(values[-1])
    for a, v in zip(archetypes[:-1], values[:-1], strict=True):
        expr = F.when(F.col("archetype") == a.name, F.lit(v)).otherwise(expr)
    return expr


def _with_archetype_params(
    people: DataFrame,
    archetypes: Sequence[Archetype],
    seed: int,
    history_days: int,
    events_per_unit: float,
    overlap: float = 0.0,
) -> DataFrame:
    """Per-customer parameters of the planted behaviours.

    ``overlap`` (0 to 1) blurs the archetypes into each other, as real behaviours do: activity
    counts more over-dispersed, each customer's typical basket and discount propensity drawn
    around the archetype's, and activity windows widened. 0 gives exactly the well-separated
    default (every extra draw is multiplied by 0).
    """

    def by_archetype(values: Sequence[float]) -> Column:
        return _by_archetype(archetypes, values)

    cid = F.col("cid")
    first_lo = by_archetype([min(a.first_days_ago[0], history_days) for a in archetypes])
    first_hi = by_archetype([min(a.first_days_ago[1], history_days) for a in archetypes])
    last_lo = by_archetype([a.last_days_ago[0] * (1 - 0.6 * overlap) for a in archetypes])
    last_hi = by_archetype([a.last_days_ago[1] * (1 + 0.6 * overlap) for a in archetypes])
    first_ago = first_lo + _uniform(seed, "first", cid) * (first_hi - first_lo)
    last_ago = last_lo + _uniform(seed, "last", cid) * (last_hi - last_lo)
    # Heavy-tailed activity: a log-normal multiplier with mean 1.
    sigma = 0.6 + 0.5 * overlap
    tail = F.exp(sigma * _normal(seed, "tail", cid) - sigma * sigma / 2)
    n_events = F.greatest(
        F.lit(1),
        F.least(
            F.round(by_archetype([a.intensity for a in archetypes]) * events_per_unit * tail),
            F.lit(MAX_EVENTS_FACTOR * events_per_unit * max(a.intensity for a in archetypes)),
        ),
    ).cast("int")
    return people.select(
        "*",
        # Seconds before the end of the history.
        (first_ago * 86400).cast("long").alias("first_ago_s"),
        (F.least(last_ago, first_ago) * 86400).cast("long").alias("last_ago_s"),
        n_events.alias("n_events"),
        (
            by_archetype([math.log(a.aov) for a in archetypes])
            + 0.6 * overlap * _normal(seed, "basket", cid)
        ).alias("aov_mu"),
        by_archetype([a.aov_sigma for a in archetypes]).alias("aov_sigma"),
        by_archetype([a.p_visit for a in archetypes]).alias("p_visit"),
        by_archetype([a.p_return for a in archetypes]).alias("p_return"),
        F.least(
            F.lit(1.0),
            F.greatest(
                F.lit(0.0),
                by_archetype([a.p_discount for a in archetypes])
                + 0.3 * overlap * _normal(seed, "deal", cid),
            ),
        ).alias("p_discount"),
    )


def _events(
    people: DataFrame, seed: int, end_date: dt.date, archetypes: Sequence[Archetype]
) -> DataFrame:
    end_ts = dt.datetime.combine(end_date, dt.time(23, 59, 59), tzinfo=dt.UTC)
    exploded = people.select("*", F.explode(F.sequence(F.lit(1), F.col("n_events"))).alias("k"))
    cid, k = F.col("cid"), F.col("k")
    # Event 1 is the last order and event 2 the first event: recency and tenure are planted.
    ago_s = (
        F.when(k == 1, F.col("last_ago_s"))
        .when(k == 2, F.col("first_ago_s"))
        .otherwise(
            F.col("last_ago_s")
            + _uniform(seed, "time", cid, k) * (F.col("first_ago_s") - F.col("last_ago_s"))
        )
        .cast("long")
    )
    u_type = _uniform(seed, "type", cid, k)
    event_type = (
        F.when(k <= 2, F.lit("order"))
        .when(u_type < F.col("p_visit"), F.lit("visit"))
        .when(u_type < F.col("p_visit") + F.col("p_return"), F.lit("return"))
        .otherwise(F.lit("order"))
    )
    value = F.exp(F.col("aov_mu") + F.col("aov_sigma") * _normal(seed, "amount", cid, k))
    discounted = _uniform(seed, "discount", cid, k) < F.col("p_discount")
    depth = 0.1 + 0.4 * _uniform(seed, "depth", cid, k)
    channel = _pick_by_archetype(
        archetypes, _uniform(seed, "channel", cid, k), CHANNELS, lambda a: a.channel_weights
    )
    u_dev = _uniform(seed, "device", cid, k)
    device = (
        F.when(channel == "store", F.lit("pos"))
        .when(channel == "app", F.when(u_dev < 0.85, "mobile").otherwise("tablet"))
        .otherwise(F.when(u_dev < 0.6, "desktop").when(u_dev < 0.9, "mobile").otherwise("tablet"))
    )
    typed = exploded.select(
        "cid",
        "customer_id",
        "k",
        "p_discount",
        (F.lit(end_ts).cast("long") - ago_s).cast("timestamp").alias("event_time"),
        event_type.alias("event_type"),
        value.alias("value"),
        discounted.alias("discounted"),
        depth.alias("depth"),
        _category(archetypes, seed, cid, k).alias("category"),
        channel.alias("channel"),
        device.alias("device"),
    )
    return _event_rows(typed, seed)


def _category(archetypes: Sequence[Archetype], seed: int, cid: Column, k: Column) -> Column:
    return _pick_by_archetype(
        archetypes, _uniform(seed, "category", cid, k), CATEGORIES, lambda a: a.category_weights
    )


def _event_rows(typed: DataFrame, seed: int) -> DataFrame:
    """The sample's event columns from the per-event draws (amounts, quantities, discounts)."""
    is_order = F.col("event_type") == "order"
    is_visit = F.col("event_type") == "visit"
    discount = F.when(is_order & F.col("discounted"), F.col("value") * F.col("depth"))
    return typed.select(
        F.format_string("E%08d-%06d", F.col("cid"), F.col("k")).alias("event_id"),
        "customer_id",
        "event_time",
        "event_type",
        F.round(
            F.when(is_visit, 0.0)
            # A return refunds what was paid: the typical discounted price of this customer.
            .when(
                F.col("event_type") == "return",
                F.col("value") * (1 - F.col("p_discount") * 0.3),
            )
            .otherwise(F.col("value") - F.coalesce(discount, F.lit(0.0))),
            2,
        ).alias("amount"),
        F.when(is_visit, 0)
        .otherwise(1 + F.floor(_uniform(seed, "qty", F.col("cid"), F.col("k")) * 3))
        .cast("int")
        .alias("quantity"),
        F.round(F.coalesce(discount, F.lit(0.0)), 2).alias("discount"),
        F.when(is_visit, F.lit(None).cast("string")).otherwise(F.col("category")).alias("category"),
        "channel",
        "device",
    )


def firmographics(seed: int, cid: Column) -> dict[str, Column]:
    """``is_business``, ``employee_count`` and ``industry`` of customer ``cid`` (the same draws
    for the customers table and the survey sample, so both say the same of a customer)."""
    is_business = _uniform(seed, "business", cid) < 0.06
    return {
        "is_business": is_business,
        "employee_count": F.when(
            is_business, F.round(F.exp(2.5 + 1.5 * _normal(seed, "employees", cid)))
        ).cast("int"),
        "industry": F.when(
            is_business, _pick_weighted(_uniform(seed, "industry", cid), list(INDUSTRIES), None)
        ),
    }


def _customers(people: DataFrame, seed: int, end_date: dt.date) -> DataFrame:
    cid = F.col("cid")
    firm = firmographics(seed, cid)
    is_business = firm["is_business"]
    end = F.lit(end_date)
    first_day = F.date_sub(end, (F.col("first_ago_s") / 86400).cast("int"))
    return people.select(
        "customer_id",
        F.date_sub(first_day, (_uniform(seed, "signup", cid) * 30).cast("int")).alias(
            "signup_date"
        ),
        _pick_weighted(
            _uniform(seed, "country", cid), list(COUNTRIES), list(COUNTRY_WEIGHTS)
        ).alias("country"),
        F.when(is_business, F.lit(None).cast("int"))
        .otherwise((18 + _uniform(seed, "age", cid) * 62).cast("int"))
        .alias("age"),
        F.when(is_business, F.lit(None).cast("string"))
        .otherwise(
            _pick_weighted(_uniform(seed, "gender", cid), ["female", "male", "other"], [49, 49, 2])
        )
        .alias("gender"),
        _pick_weighted(
            _uniform(seed, "os", cid),
            ["android", "ios", "windows", "macos", "linux"],
            [34, 30, 22, 11, 3],
        ).alias("os"),
        is_business.alias("is_business"),
        firm["employee_count"].alias("employee_count"),
        firm["industry"].alias("industry"),
    )


def _pick_by_archetype(
    archetypes: Sequence[Archetype],
    u: Column,
    values: Sequence[str],
    weights: Callable[[Archetype], Sequence[float]],
) -> Column:
    """The customer's archetype's weighted pick among ``values`` for the draw ``u``."""
    expr: Column = F.lit(None).cast("string")
    for a in reversed(archetypes):
        pick = _pick_weighted(u, list(values), list(weights(a)))
        expr = F.when(F.col("archetype") == a.name, pick).otherwise(expr)
    return expr


def _uniform(seed: int, purpose: str, *cols: Column) -> Column:
    """A deterministic uniform draw in [0, 1) from a hash of seed, purpose and the columns."""
    h = F.xxhash64(F.lit(seed), F.lit(purpose), *cols)
    return F.pmod(h, F.lit(_HASH_RANGE)).cast("double") / float(_HASH_RANGE)


def _normal(seed: int, purpose: str, *cols: Column) -> Column:
    """A deterministic standard normal draw (Box-Muller over two hashed uniforms)."""
    u1 = F.greatest(_uniform(seed, purpose + ":1", *cols), F.lit(1e-12))
    u2 = _uniform(seed, purpose + ":2", *cols)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2 * math.pi * u2)


def _pick_weighted(u: Column, values: Sequence[str], weights: Sequence[float] | None) -> Column:
    """The value whose cumulative weight interval holds ``u``."""
    w = list(weights) if weights is not None else [1.0] * len(values)
    total = float(sum(w))
    expr: Column = F.lit(values[-1])
    cumulative = 0.0
    bounds = []
    for weight in w[:-1]:
        cumulative += weight / total
        bounds.append(cumulative)
    for value, bound in reversed(list(zip(values[:-1], bounds, strict=True))):
        expr = F.when(u < bound, F.lit(value)).otherwise(expr)
    return expr
