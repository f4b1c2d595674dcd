"""Rule-based segmentations beside clustering: RFM scores with a named map, and B2B tiers.

Both are computed in Spark (a quantile aggregation and column expressions, no UDF) and give
``segment_id`` / ``segment_name`` per customer, so they are written to ``segment_membership``
like a clustering model, under their own ``model_name``.

RFM scores buyers only (customers with a purchase up to ``as_of``); the others get the segment
``rfm.no_purchase_segment`` and no scores. Scores are 1 + the number of the buyers' quintile
cut points strictly below the value (R reversed): equal values always share a score, so where
cut points coincide some scores are given to no one, and the run says which and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import B2bConfig, B2bTier, RfmConfig, RfmSegment
from segmentation.config.types import strip_blank
from segmentation.errors import InputError
from segmentation.inputs import parsing
from segmentation.storage import tables
from segmentation.storage.tables import DISTANCE, SEGMENT_ID

CUSTOMER_ID = tables.CUSTOMER_ID
R_SCORE, F_SCORE, M_SCORE = "r_score", "f_score", "m_score"
SCORES = (R_SCORE, F_SCORE, M_SCORE)
QUINTILES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class RfmCuts:
    """The buyers' quintile cut points per measure (4 each; none without buyers)."""

    recency: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]


@dataclass(frozen=True)
class EmptyScore:
    """A score (1-5) of one measure that no buyer got, and why."""

    measure: str
    """``R``, ``F`` or ``M``."""
    score: int
    reason: str

    def text(self) -> str:
        return f"{self.measure}{self.score}: {self.reason}"


def segment_names(names: Sequence[str]) -> dict[int, str]:
    """Segment ids 1..n for the distinct names, in first-listed order."""
    return {i + 1: name for i, name in enumerate(dict.fromkeys(names))}


def rfm_segment_names(cfg: RfmConfig) -> dict[int, str]:
    """The RFM segments' ids: the map's names in order, then ``rfm.no_purchase_segment``."""
    return segment_names([*(s.name for s in cfg.segments), cfg.no_purchase_segment])


def is_buyer(cfg: RfmConfig) -> Column:
    """A customer with at least one purchase: ``rfm.frequency_feature`` above 0."""
    return F.coalesce(F.col(cfg.frequency_feature).cast("double") > 0, F.lit(False))


def rfm_cuts(features: DataFrame, cfg: RfmConfig) -> RfmCuts:
    """Quintile cut points of recency, frequency and monetary value over the buyers (one
    aggregation): customers without a purchase have their own segment and never move them.

    Raises:
        InputError: a configured feature column is missing, or there are no customers.
    """
    _require(features, [cfg.recency_feature, cfg.frequency_feature, cfg.monetary_feature], "rfm")
    buyer = is_buyer(cfg)
    row = features.agg(
        F.count(F.lit(1)).alias("n"),
        *[
            F.percentile_approx(
                F.when(buyer, F.col(c).cast("double")), list(QUINTILES), cfg.quantile_accuracy
            ).alias(name)
            for name, c in (
                ("r", cfg.recency_feature),
                ("f", cfg.frequency_feature),
                ("m", cfg.monetary_feature),
            )
        ],
    ).first()
    if row is None or row["n"] == 0:
        raise InputError("rfm: customer_features has no rows to score")
    return RfmCuts(*(tuple(row[k] or ()) for k in ("r", "f", "m")))


def _score(value: Column, cuts: Sequence[float], *, higher_is_better: bool) -> Column:
    """1 + the number of cut points strictly below the value (reversed for recency).

    The tie rule: equal values always get equal scores. Where cut points coincide (most
    customers share one value), the scores between them are given to no one (see
    :func:`empty_scores`); a null counts as the worst score.
    """
    above: Column = F.lit(0)
    for c in cuts:
        above = above + (value > F.lit(float(c))).cast("int")
    score = (F.lit(1) + above) if higher_is_better else (F.lit(len(cuts) + 1) - above)
    return F.when(value.isNull(), F.lit(1)).otherwise(score).cast("int")


def score_rfm(features: DataFrame, cfg: RfmConfig, cuts: RfmCuts | None = None) -> DataFrame:
    """``customer_id``, R/F/M scores (1-5), ``segment_id`` and ``segment_name`` per customer.

    Buyers are scored against the buyers' quintiles and get the map's segment: its segments are
    matched in order, the first whose ranges hold all three scores wins (config validation
    guarantees every cell has one). Customers without a purchase get no scores (null) and the
    segment ``rfm.no_purchase_segment``, the last id.
    """
    cuts = cuts or rfm_cuts(features, cfg)
    buyer = is_buyer(cfg)

    def scored(feature: str, measure_cuts: Sequence[float], higher: bool) -> Column:
        value = F.col(feature).cast("double")
        return F.when(buyer, _score(value, measure_cuts, higher_is_better=higher))

    scored_df = features.select(
        CUSTOMER_ID,
        scored(cfg.recency_feature, cuts.recency, False).alias(R_SCORE),
        scored(cfg.frequency_feature, cuts.frequency, True).alias(F_SCORE),
        scored(cfg.monetary_feature, cuts.monetary, True).alias(M_SCORE),
    )
    ids = {name: sid for sid, name in rfm_segment_names(cfg).items()}
    segment: Column = F.lit(ids[cfg.no_purchase_segment])
    for s in reversed(cfg.segments):
        segment = F.when(_in_cell(s), F.lit(ids[s.name])).otherwise(segment)
    names = F.create_map(*[x for name, sid in ids.items() for x in (F.lit(sid), F.lit(name))])
    return scored_df.withColumn(SEGMENT_ID, segment).withColumn(
        "segment_name", F.element_at(names, F.col(SEGMENT_ID))
    )


def score_counts(scored: DataFrame) -> dict[str, dict[int, int]]:
    """Customers per score (1-5) of each measure, ``{"R": {1: n, ...}, ...}`` (one pass)."""
    measures = {"R": R_SCORE, "F": F_SCORE, "M": M_SCORE}
    row = scored.agg(
        *[F.count(F.when(F.col(c) == s, 1)).alias(f"{m}{s}")
          for m, c in measures.items() for s in range(1, 6)]
    ).first()  # fmt: skip
    assert row is not None
    return {m: {s: int(row[f"{m}{s}"]) for s in range(1, 6)} for m in measures}


def empty_scores(counts: dict[str, dict[int, int]], cuts: RfmCuts) -> list[EmptyScore]:
    """The scores no buyer got, each with the reason (coinciding cuts or nobody beyond one).

    A score covers the values between two neighbouring cut points (above the lower, up to the
    upper); for recency the scores run the other way (5 = fewest days).
    """
    out = []
    for measure, measure_cuts in (("R", cuts.recency), ("F", cuts.frequency),
                                  ("M", cuts.monetary)):  # fmt: skip
        if not measure_cuts:
            continue
        for score in range(1, 6):
            if counts[measure][score]:
                continue
            below = 5 - score if measure == "R" else score - 1  # cut points below the values
            out.append(EmptyScore(measure, score, _empty_reason(measure_cuts, below)))
    return out


def _empty_reason(cuts: Sequence[float], below: int) -> str:
    lo = cuts[below - 1] if below >= 1 else None
    hi = cuts[below] if below < len(cuts) else None
    pct = [f"{int(q * 100)}%" for q in QUINTILES]
    if lo is not None and hi is not None and lo == hi:
        return (
            f"the {pct[below - 1]} and {pct[below]} quintile cuts coincide at {lo:g}; tied "
            "customers share one score (equal values always get equal scores)"
        )
    if hi is None:
        return f"no customer is above the {pct[below - 1]} quintile cut {lo:g}"
    if lo is None:
        return f"no customer is at or below the {pct[0]} quintile cut {hi:g}"
    return f"no customer is above {lo:g} and at or below {hi:g}"


def _in_cell(s: RfmSegment) -> Column:
    return (
        F.col(R_SCORE).between(s.r[0], s.r[1])
        & F.col(F_SCORE).between(s.f[0], s.f[1])
        & F.col(M_SCORE).between(s.m[0], s.m[1])
    )


def b2b_tiers(
    features: DataFrame,
    customers: DataFrame,
    cfg: B2bConfig,
    *,
    true_values: Sequence[str] = ("true",),
    false_values: Sequence[str] = ("false",),
) -> DataFrame:
    """``customer_id``, ``segment_id`` and ``segment_name`` of every business account.

    Business accounts are the customers whose ``business_column`` is true (read with
    ``parsing.attribute_flag``: ``yes``, ``B2B`` and the other configured spellings); the rest
    are not accounts and get no row. Employee counts are read with ``parsing.attribute_number``
    (``1,000``, ``51-200`` as 51); an unreadable value is no count (:func:`b2b_issues` counts
    them). An account with no usable spend counts as spending 0.
    """
    _require(features, [cfg.spend_feature], "b2b.spend_feature")
    columns = _b2b_columns(customers, cfg, true_values, false_values)
    accounts = customers.where(F.coalesce(columns["business"].value, F.lit(False)))
    joined = accounts.select(
        CUSTOMER_ID,
        columns["employees"].value.alias("_employees"),
        F.lower(parsing.blank_is_null(columns["industry"].value)).alias("_industry"),
    ).join(
        features.select(CUSTOMER_ID, F.col(cfg.spend_feature).cast("double").alias("_spend")),
        on=CUSTOMER_ID,
        how="left",
    )
    ids = {name: sid for sid, name in segment_names([t.name for t in cfg.tiers]).items()}
    segment: Column = F.lit(None).cast("int")
    for tier in reversed(cfg.tiers):
        segment = F.when(_tier_holds(tier), F.lit(ids[tier.name])).otherwise(segment)
    names = F.create_map(*[x for name, sid in ids.items() for x in (F.lit(sid), F.lit(name))])
    return joined.select(
        CUSTOMER_ID,
        segment.alias(SEGMENT_ID),
        F.element_at(names, segment).alias("segment_name"),
        F.coalesce(F.col("_spend"), F.lit(0.0)).alias("spend"),
        F.col("_employees").alias("employees"),
        F.col("_industry").alias("industry"),
    )


def _b2b_columns(
    customers: DataFrame, cfg: B2bConfig, true_values: Sequence[str], false_values: Sequence[str]
) -> dict[str, parsing.Parsed]:
    """The business flag, employee count and industry read from the dimension's columns."""
    needed = {
        "b2b.business_column": cfg.business_column,
        "b2b.employees_column": cfg.employees_column,
        "b2b.industry_column": cfg.industry_column,
    }
    fields = {f.name.lower(): f for f in customers.schema.fields}
    for key, column in needed.items():
        if column is not None and column.lower() not in fields:
            raise InputError(
                f"{key} {column!r} is not a column of the customers dimension "
                f"(columns: {', '.join(customers.columns)}); set it to null if there is none"
            )
    none = parsing.Parsed(F.lit(None), F.lit(None).cast("string"))

    def field(column: str | None) -> tuple[Column, T.DataType] | None:
        if column is None:
            return None
        f = fields[column.lower()]
        return F.col(f"`{f.name}`"), f.dataType

    business, employees = field(cfg.business_column), field(cfg.employees_column)
    industry = field(cfg.industry_column)
    return {
        "business": none if business is None else parsing.attribute_flag(
            *business, true=true_values, false=false_values),
        "employees": none if employees is None else parsing.attribute_number(*employees),
        "industry": none if industry is None else parsing.Parsed(
            industry[0].cast("string"), F.lit(None).cast("string")),
    }  # fmt: skip


def b2b_issues(
    customers: DataFrame, cfg: B2bConfig, true_values: Sequence[str], false_values: Sequence[str]
) -> dict[str, int]:
    """Values of the dimension's business and employee columns that cannot be read, counted
    per config key and column (one aggregation): ``{"b2b.employees_column (employee_count)":
    3}``; those customers are not accounts, or have no employee count."""
    columns = _b2b_columns(customers, cfg, true_values, false_values)
    keys = {"business": ("b2b.business_column", cfg.business_column),
            "employees": ("b2b.employees_column", cfg.employees_column)}  # fmt: skip
    row = customers.agg(
        *[F.count(columns[k].issue).alias(k) for k, (_, column) in keys.items() if column]
    ).first()
    if row is None:
        return {}
    return {f"{key} ({column})": int(row[k]) for k, (key, column) in keys.items()
            if column and row[k]}  # fmt: skip


def _tier_holds(tier: B2bTier) -> Column:
    cond: Column = F.lit(True)
    if tier.min_spend is not None:
        cond = cond & (F.coalesce(F.col("_spend"), F.lit(0.0)) >= float(tier.min_spend))
    if tier.min_employees is not None:
        cond = cond & F.coalesce(F.col("_employees") >= float(tier.min_employees), F.lit(False))
    if tier.industries is not None:
        wanted = [strip_blank(i).lower() for i in tier.industries]
        cond = cond & F.coalesce(F.col("_industry").isin(wanted), F.lit(False))
    return cond


def as_assignment(df: DataFrame) -> DataFrame:
    """The columns ``publish`` expects of an assignment (rule segments have no distance)."""
    return df.select(CUSTOMER_ID, SEGMENT_ID, F.lit(None).cast("double").alias(DISTANCE))


def _require(df: DataFrame, columns: Sequence[str], key: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{key}: customer_features has no column(s) {missing}; available: "
            f"{', '.join(c for c in df.columns if c not in (CUSTOMER_ID, 'as_of'))}"
        )
