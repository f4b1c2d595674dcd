"""Profiles in original units and deterministic names."""

from __future__ import annotations

import pytest

from segmentation.explain import profiling
from segmentation.explain.profiling import FeatureStats, Profiles, SegmentProfile
from segmentation.features import behaviour as feat


def test_profile_segments_sizes_shares_and_stats(spark):
    df = spark.createDataFrame(
        [(1, 10.0), (1, 20.0), (1, 30.0), (2, 100.0)], "segment_id int, spend double"
    )
    profiles = profiling.profile_segments(df, ["spend"])
    one, two = profiles.segments
    assert (one.segment_id, one.size, one.share) == (1, 3, 0.75)
    assert (two.segment_id, two.size, two.share) == (2, 1, 0.25)
    s = one.stats["spend"]
    assert (s.mean, s.min, s.median, s.max) == (20.0, 10.0, 20.0, 30.0)
    # population mean 40, population std sqrt(((30^2)+(20^2)+(10^2)+(60^2))/4) = sqrt(1250)
    assert profiles.population_mean["spend"] == 40.0
    assert s.std_diff == pytest.approx((20 - 40) / 1250**0.5)


def seg(segment_id, **z):
    stats = {
        f: FeatureStats(None, None, None, None, None, None, None, z.get(f, 0.0))
        for f in (feat.RECENCY, feat.TENURE, feat.FREQUENCY, feat.MONETARY, feat.AOV,
                  feat.DISCOUNT_SHARE, feat.RETURN_RATE)
    }  # fmt: skip
    return SegmentProfile(segment_id=segment_id, size=10, share=0.1, stats=stats)


def names_for(*segments):
    return profiling.name_segments(Profiles(tuple(segments), {}, ()))


def test_name_segments_from_planted_like_profiles():
    names = names_for(
        seg(1, tenure_days=-2.0, recency_days=-0.8),
        seg(2, recency_days=1.8, monetary_total=-0.4),
        seg(3, frequency_total=0, frequency=2.0, monetary_total=2.5, recency_days=-0.7),
        seg(4, avg_order_value=2.6, frequency=-0.5),
        seg(5, discount_share=2.0, avg_order_value=-0.6),
        seg(6, recency_days=-0.5, frequency=0.3),
    )
    assert names == {
        1: "New customers",
        2: "Lapsed customers",
        3: "Champions",
        4: "Big-ticket occasional buyers",
        5: "Bargain hunters",
        6: "Loyal regulars",
    }


def test_name_segments_are_unique_and_deterministic():
    a = seg(1, recency_days=1.5, monetary_total=-0.2, frequency=-1.2)
    b = seg(2, recency_days=1.6, monetary_total=-0.9)
    names = names_for(a, b)
    assert len(set(names.values())) == 2
    assert names == {1: "Lapsed customers (less frequent)", 2: "Lapsed customers (more frequent)"}
    assert names_for(a, b) == names


def abs_seg(segment_id, *, recency, tenure, orders, spend, z_freq=0.0):
    """A segment with medians in original units (the business thresholds read them)."""

    def stats(median, mean=None, z=0.0):
        return FeatureStats(mean, None, None, None, median, None, None, z)

    return SegmentProfile(segment_id, 10, 0.1, {
        feat.RECENCY: stats(recency), feat.TENURE: stats(tenure),
        feat.FREQUENCY: stats(orders, z=z_freq), feat.MONETARY: stats(None, mean=spend),
    })  # fmt: skip


def test_name_segments_use_business_thresholds_before_relative_traits():
    profiles = Profiles(
        (
            abs_seg(1, recency=489, tenure=900, orders=3, spend=120.0),  # "occasional" before
            abs_seg(2, recency=400, tenure=900, orders=9, spend=900.0),
            abs_seg(3, recency=60, tenure=300, orders=1, spend=40.0),
            abs_seg(4, recency=10, tenure=40, orders=2, spend=80.0),
            abs_seg(5, recency=3, tenure=800, orders=40, spend=2000.0, z_freq=2.0),
            abs_seg(6, recency=45, tenure=800, orders=6, spend=700.0),
        ),
        {},
        (),
        population_quantiles={feat.MONETARY: {0.8: 650.0}},
    )
    assert profiling.name_segments(profiles) == {
        1: "Lapsed customers",
        2: "Lapsed big spenders",
        3: "One-time buyers",
        4: "New customers",
        5: "Champions",
        6: "High-value customers",
    }
    # Thresholds are configurable: lapsed only after two years.
    later = profiling.NamingRules(lapsed_after_days=730)
    assert profiling.name_segments(profiles, later)[1] != "Lapsed customers"
