"""Sample survey answers with planted attitudinal segments (``survey_responses``,
``attitude_truth``).

Respondents are a seeded share of the events sample's customers (the same ``C%08d`` ids). Each
belongs to one of five planted segments defined on three latent factors (price sensitivity,
brand and quality orientation, digital convenience); each factor is measured by four Likert
items on a 1-5 scale. A respondent's latent position is the segment's centre plus normal noise
(sd ``LATENT_SD``); an item's continuous response is ``loading * factor / sd + sqrt(1 -
loading^2) * noise`` (the common-factor model, Thurstone 1947), answered on the scale as
``round(3 + SPREAD * response)`` clipped to [1, 5]. Answers go missing at random
(``missing_share``), and a small planted share of respondents (``DROPOUT_SHARE``) stop after
``DROPOUT_ANSWERED`` items, so the exclusion rule has work to do.

The segment centres are centred and whitened under the segment shares (their weighted
covariance is diagonal), so the latent factors are uncorrelated in the population and an
orthogonal rotation can recover the planted loadings. Attributes: household size and region
(mildly segment-dependent), and the customers table's firmographics (``is_business``,
``employee_count``, ``industry``: the very same draws). Like ``generator``, every draw is a
hash of (seed, respondent, purpose): the output depends only on the seed and the sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.sample.generator import _normal, _pick_weighted, _uniform, firmographics

FACTORS = ("price_sensitivity", "brand_quality", "digital_convenience")
SCALE = (1, 5)
SPREAD = 1.2
LATENT_SD = 0.4
DROPOUT_SHARE = 0.01
DROPOUT_ANSWERED = 3
REGIONS = ("north", "south", "east", "west", "central", "islands")


@dataclass(frozen=True)
class Item:
    """A Likert item: its column, the factor it measures and its planted loading."""

    name: str
    factor: int
    loading: float


ITEMS = tuple(
    Item(name, factor, loading)
    for factor, names in enumerate(
        (
            ("price_compare", "price_wait_for_sales", "price_cheapest_option",
             "price_use_coupons"),
            ("brand_stay_loyal", "brand_pay_for_quality", "brand_prefer_premium",
             "brand_trust_known"),
            ("digital_prefer_app", "digital_fast_delivery", "digital_avoid_stores",
             "digital_subscribe"),
        )
    )
    for name, loading in zip(names, (0.85, 0.8, 0.75, 0.7), strict=True)
)  # fmt: skip
ITEM_NAMES = tuple(i.name for i in ITEMS)


@dataclass(frozen=True)
class Segment:
    """A planted attitudinal segment: its truth label, share, latent centre and attributes."""

    name: str
    share: float
    centre: tuple[float, float, float]
    household_mean: float
    region_weights: tuple[float, ...]


SEGMENTS = (
    Segment("thrifty_traditionalists", 0.28, (1.6, -0.3, -0.9), 3.2, (2, 1, 1, 1, 1, 1)),
    Segment("indifferent_pragmatists", 0.24, (-1.1, -1.5, 0.7), 2.4, (1, 1, 1, 1, 2, 1)),
    Segment("brand_loyalists", 0.20, (-0.8, 2.0, 0.0), 2.6, (1, 2, 1, 1, 1, 1)),
    Segment("digital_deal_hunters", 0.16, (0.8, 0.4, 2.0), 2.0, (1, 1, 1, 2, 2, 1)),
    Segment("offline_comfort_seekers", 0.12, (-1.3, -0.2, -2.0), 2.2, (1, 1, 2, 1, 1, 2)),
)

# The latent factors' population variance: the centres' (1.44 each, see the module docstring)
# plus the within-segment noise.
_FACTOR_SD = math.sqrt(1.44 + LATENT_SD**2)


@dataclass(frozen=True)
class SurveyData:
    """The generated survey tables (lazy DataFrames)."""

    responses: DataFrame
    truth: DataFrame


def planted_loadings() -> list[list[float]]:
    """The planted loadings: one row per item of ``ITEMS``, one column per factor."""
    return [[i.loading if i.factor == f else 0.0 for f in range(len(FACTORS))] for i in ITEMS]


def generate_survey(
    spark: SparkSession,
    *,
    customers: int,
    seed: int,
    share: float,
    missing_share: float,
    partitions: int | None = None,
) -> SurveyData:
    """Survey answers of about ``share * customers`` respondents, with planted segments.

    Args:
        spark: the active session.
        customers: the events sample's customer count (respondent ids are among its ids).
        seed: every draw derives from it; the same seed and sizes give the same rows.
        share: the share of customers who answered the survey.
        missing_share: the chance that any one answer is missing (at random).
        partitions: Spark partitions (default: one per million customers, at least 2).
    """
    n_parts = partitions or max(2, math.ceil(customers / 1_000_000))
    cid = F.col("cid")
    people = (
        spark.range(0, customers, numPartitions=n_parts)
        .withColumnRenamed("id", "cid")
        .where(_uniform(seed, "survey", cid) < share)
        .select(
            "cid",
            F.format_string("C%08d", cid).alias("customer_id"),
            _pick_weighted(
                _uniform(seed, "attitude_segment", cid),
                [s.name for s in SEGMENTS],
                [s.share for s in SEGMENTS],
            ).alias("true_segment"),
        )
    )
    latent = [
        _by_segment([s.centre[f] for s in SEGMENTS]) + LATENT_SD * _normal(seed, f"latent{f}", cid)
        for f in range(len(FACTORS))
    ]
    dropout = _uniform(seed, "dropout", cid) < DROPOUT_SHARE
    answers = [
        _answer(seed, item, i, latent[item.factor], missing_share, dropout, cid).alias(item.name)
        for i, item in enumerate(ITEMS)
    ]
    firm = firmographics(seed, cid)
    responses = people.select(
        "customer_id",
        *answers,
        _household(seed, cid).alias("household_size"),
        _region(seed, cid).alias("region"),
        *[column.alias(name) for name, column in firm.items()],
    )
    return SurveyData(responses=responses, truth=people.select("customer_id", "true_segment"))


def _by_segment(values: list[float]) -> Column:
    expr = F.lit(values[-1])
    for segment, value in zip(SEGMENTS[:-1], values[:-1], strict=True):
        expr = F.when(F.col("true_segment") == segment.name, F.lit(value)).otherwise(expr)
    return expr


def _answer(
    seed: int,
    item: Item,
    index: int,
    factor: Column,
    missing_share: float,
    dropout: Column,
    cid: Column,
) -> Column:
    """One Likert answer (INT), null when missing at random or after a dropout's last item."""
    noise = math.sqrt(1 - item.loading**2) * _normal(seed, f"item:{item.name}", cid)
    response = item.loading * factor / _FACTOR_SD + noise
    low, high = SCALE
    value = F.least(F.lit(high), F.greatest(F.lit(low), F.round(3 + SPREAD * response)))
    missing = (_uniform(seed, f"missing:{item.name}", cid) < missing_share) | (
        dropout & F.lit(index >= DROPOUT_ANSWERED)
    )
    return F.when(~missing, value.cast("int"))


def _household(seed: int, cid: Column) -> Column:
    """Household size 1-6 around the segment's mean."""
    mean = _by_segment([s.household_mean for s in SEGMENTS])
    size = F.round(mean + 1.1 * _normal(seed, "household", cid))
    return F.least(F.lit(6), F.greatest(F.lit(1), size)).cast("int")


def _region(seed: int, cid: Column) -> Column:
    u = _uniform(seed, "region", cid)
    expr: Column = F.lit(None).cast("string")
    for segment in reversed(SEGMENTS):
        pick = _pick_weighted(u, list(REGIONS), list(segment.region_weights))
        expr = F.when(F.col("true_segment") == segment.name, pick).otherwise(expr)
    return expr
