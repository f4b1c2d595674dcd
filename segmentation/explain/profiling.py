"""Segment profiles in the features' original units, and deterministic names from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from segmentation.features import behaviour as feat
from segmentation.modeling.clustering import SEGMENT_ID
from segmentation.storage import tables
from segmentation.value.segments import P_ALIVE

PROFILE_SCHEMA = tables.PROFILE_ROWS
_QUANTILES = (0.25, 0.5, 0.75)
# Standardised difference from the population above which a trait is called out.
_STRONG = 1.0
_NOTABLE = 0.5


@dataclass(frozen=True)
class FeatureStats:
    mean: float | None
    stddev: float | None
    min: float | None
    p25: float | None
    median: float | None
    p75: float | None
    max: float | None
    std_diff: float | None


@dataclass(frozen=True)
class SegmentProfile:
    """One segment's size, share and per-feature statistics."""

    segment_id: int
    size: int
    share: float
    stats: Mapping[str, FeatureStats]

    def z(self, feature: str) -> float:
        """Standardised difference of the segment mean from the population (0 if unknown)."""
        s = self.stats.get(feature)
        return s.std_diff if s is not None and s.std_diff is not None else 0.0


@dataclass(frozen=True)
class Profiles:
    segments: tuple[SegmentProfile, ...]
    population_mean: Mapping[str, float | None]
    features: tuple[str, ...]
    population_quantiles: Mapping[str, Mapping[float, float]] = field(default_factory=dict)
    """Feature -> {probability: quantile of the whole base} (``profile_segments(percentiles)``)."""


def profile_segments(
    assigned: DataFrame, features: Sequence[str], *, percentiles: Sequence[float] = (0.8,)
) -> Profiles:
    """Statistics per segment and per feature, in original units (two small aggregations).

    Args:
        assigned: customer features with ``segment_id`` (cache it: it is read twice).
        features: the numeric feature columns to profile.
        percentiles: quantiles of the whole base kept per feature (naming thresholds).
    """
    pop_exprs = []
    for i, f in enumerate(features):
        x = F.col(f).cast("double")
        pop_exprs += [F.avg(x).alias(f"m{i}"), F.stddev_pop(x).alias(f"s{i}")]
        pop_exprs.append(F.percentile_approx(x, list(percentiles), 10000).alias(f"pq{i}"))
    pop = assigned.agg(F.count(F.lit(1)).alias("n"), *pop_exprs).first()
    assert pop is not None
    total = int(pop["n"])
    seg_exprs = [F.count(F.lit(1)).alias("n")]
    for i, f in enumerate(features):
        x = F.col(f).cast("double")
        seg_exprs += [
            F.avg(x).alias(f"m{i}"),
            F.stddev_pop(x).alias(f"s{i}"),
            F.min(x).alias(f"lo{i}"),
            F.max(x).alias(f"hi{i}"),
            F.percentile_approx(x, list(_QUANTILES), 10000).alias(f"q{i}"),
        ]
    rows = assigned.groupBy(SEGMENT_ID).agg(*seg_exprs).orderBy(SEGMENT_ID).collect()
    segments = [
        SegmentProfile(
            segment_id=int(row[SEGMENT_ID]),
            size=int(row["n"]),
            share=int(row["n"]) / total if total else 0.0,
            stats={f: _feature_stats(row, pop, i) for i, f in enumerate(features)},
        )
        for row in rows
    ]
    return Profiles(
        segments=tuple(segments),
        population_mean={f: pop[f"m{i}"] for i, f in enumerate(features)},
        features=tuple(features),
        population_quantiles={
            f: dict(zip(percentiles, map(float, pop[f"pq{i}"] or []), strict=False))
            for i, f in enumerate(features)
        },
    )


def _feature_stats(row: Row, pop: Row, i: int) -> FeatureStats:
    """Feature ``i``'s statistics in one segment's row, against the population's."""
    mean, pop_mean, pop_std = row[f"m{i}"], pop[f"m{i}"], pop[f"s{i}"]
    quantiles = row[f"q{i}"] or [None, None, None]
    std_diff = (
        (mean - pop_mean) / pop_std
        if mean is not None and pop_mean is not None and pop_std
        else (0.0 if mean is not None else None)
    )
    return FeatureStats(
        mean=mean, stddev=row[f"s{i}"], min=row[f"lo{i}"], p25=_float(quantiles[0]),
        median=_float(quantiles[1]), p75=_float(quantiles[2]), max=row[f"hi{i}"],
        std_diff=std_diff,
    )  # fmt: skip


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def profile_rows(profiles: Profiles, names: Mapping[int, str]) -> list[tuple]:
    """Rows of ``PROFILE_SCHEMA``: one per segment and feature."""
    rows = []
    for seg in profiles.segments:
        for f in profiles.features:
            s = seg.stats[f]
            rows.append(
                (
                    seg.segment_id,
                    names[seg.segment_id],
                    seg.size,
                    seg.share,
                    f,
                    s.mean,
                    s.stddev,
                    s.min,
                    s.p25,
                    s.median,
                    s.p75,
                    s.max,
                    profiles.population_mean[f],
                    s.std_diff,
                )
            )
    return rows


def _absolute_name(seg: SegmentProfile, profiles: Profiles, rules: NamingRules) -> str | None:
    """A name from business thresholds on original units, or None (the relative rules then)."""

    def median(f: str) -> float | None:
        s = seg.stats.get(f)
        return s.median if s is not None else None

    recency, tenure, orders = median(feat.RECENCY), median(feat.TENURE), median(feat.FREQUENCY)
    if tenure is not None and tenure <= rules.new_within_days:
        return "New customers"
    high = _high_value(seg, profiles, rules)
    if recency is not None and recency > rules.lapsed_after_days:
        return "Lapsed big spenders" if high else "Lapsed customers"
    alive = seg.stats.get(P_ALIVE)
    at_risk = rules.at_risk_p_alive
    if high and at_risk is not None and alive is not None and alive.mean is not None:
        if alive.mean < at_risk:
            return "At-risk big spenders"
    if orders is not None and orders <= rules.one_time_max_orders:
        return "One-time buyers"
    if high and recency is not None and recency <= rules.recent_within_days:
        if seg.z(feat.FREQUENCY) > _STRONG:
            return "Champions"
    return None


def _high_value(seg: SegmentProfile, profiles: Profiles, rules: NamingRules) -> bool:
    cut = profiles.population_quantiles.get(feat.MONETARY, {}).get(rules.high_value_percentile)
    spend = seg.stats.get(feat.MONETARY)
    return cut is not None and spend is not None and spend.mean is not None and spend.mean >= cut


# Traits in the order they are checked: the first that fits names the segment.
def _base_name(seg: SegmentProfile) -> str:
    z = seg.z
    if z(feat.TENURE) < -_STRONG:
        return "New customers"
    if z(feat.RECENCY) > _STRONG:
        if z(feat.MONETARY) > _NOTABLE or z(feat.AOV) > _STRONG:
            return "Lapsed big spenders"
        return "Lapsed customers"
    if z(feat.FREQUENCY) > _STRONG and z(feat.MONETARY) > _STRONG:
        return "Champions"
    if z(feat.AOV) > _STRONG:
        return "Big-ticket occasional buyers"
    if z(feat.DISCOUNT_SHARE) > _STRONG:
        return "Bargain hunters"
    if z(feat.RETURN_RATE) > _STRONG:
        return "Frequent returners"
    if z(feat.RECENCY) < 0 and z(feat.FREQUENCY) > -_NOTABLE:
        return "Loyal regulars"
    return "Occasional buyers"


# Relative wording: used to tell apart segments that would otherwise share a name.
_TRAIT_WORDS = {
    feat.MONETARY: ("higher spend", "lower spend"),
    feat.FREQUENCY: ("more frequent", "less frequent"),
    feat.RECENCY: ("longer inactive", "more recently active"),
    feat.TENURE: ("longer-standing", "newer"),
    feat.AOV: ("larger baskets", "smaller baskets"),
    feat.DISCOUNT_SHARE: ("more discount-driven", "less discount-driven"),
    feat.RETURN_RATE: ("more returns", "fewer returns"),
}


@dataclass(frozen=True)
class NamingRules:
    """Business thresholds on original units (``naming.*``)."""

    lapsed_after_days: float = 365
    new_within_days: float = 90
    one_time_max_orders: float = 1
    high_value_percentile: float = 0.8
    recent_within_days: float = 30
    at_risk_p_alive: float | None = None
    """With customer value profiled: a high-value segment whose mean P(alive) is below this is
    "At-risk big spenders" (``value.at_risk_p_alive``)."""


def name_segments(profiles: Profiles, rules: NamingRules | None = None) -> dict[int, str]:
    """A descriptive, unique name per segment, derived only from the profiles.

    Business thresholds on original units come first (``rules``): new (median tenure at most
    ``new_within_days``), lapsed (median recency over ``lapsed_after_days``; "big spenders"
    when the mean spend reaches the base's ``high_value_percentile``), one-time buyers
    (median orders at most ``one_time_max_orders``), at risk (high value, mean P(alive) below
    ``at_risk_p_alive``, when customer value is profiled), champions (high value, median recency at
    most ``recent_within_days``, frequent). Other segments are named by how they differ from
    the population (standardised differences), and "High-value customers" rather than
    "Occasional buyers" when their spend is high. The same profiles always give the same names.
    Segments that would share a name get the trait on which each differs most from the others
    of that group, then their id if needed.
    """
    rules = rules or NamingRules()

    def base_name(seg: SegmentProfile) -> str:
        name = _absolute_name(seg, profiles, rules) or _base_name(seg)
        if name == "Occasional buyers" and _high_value(seg, profiles, rules):
            return "High-value customers"
        return name

    base = {seg.segment_id: base_name(seg) for seg in profiles.segments}
    groups: dict[str, list[SegmentProfile]] = {}
    for seg in profiles.segments:
        groups.setdefault(base[seg.segment_id], []).append(seg)
    names: dict[int, str] = {}
    for name, members in groups.items():
        for seg in members:
            names[seg.segment_id] = (
                f"{name} ({_distinguishing_trait(seg, members)})" if len(members) > 1 else name
            )
    seen: dict[str, int] = {}
    for seg_id in sorted(names):
        seen[names[seg_id]] = seen.get(names[seg_id], 0) + 1
        if seen[names[seg_id]] > 1:
            names[seg_id] = f"{names[seg_id]} #{seg_id}"
    return names


def _distinguishing_trait(seg: SegmentProfile, group: Sequence[SegmentProfile]) -> str:
    scored = []
    for feature in _TRAIT_WORDS:
        if feature not in seg.stats:
            continue
        group_mean = sum(other.z(feature) for other in group) / len(group)
        scored.append((abs(seg.z(feature) - group_mean), feature, seg.z(feature) - group_mean))
    if not scored:
        return f"segment {seg.segment_id}"
    _, feature, delta = max(scored, key=lambda t: (t[0], t[1]))
    more, less = _TRAIT_WORDS[feature]
    return more if delta > 0 else less
