"""Each feature on tiny inline events, against values computed by hand in the comments."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation.features import behaviour as feat
from segmentation.features.levels import (
    discover_all_levels,
    discover_levels,
    display_name,
    level_labels,
    level_name,
)
from segmentation.inputs.sources import CANONICAL_SCHEMA

AS_OF = dt.date(2025, 1, 31)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def events(spark: SparkSession, rows: list[tuple]):
    """rows: (customer, time, amount, type, category, channel, device, discount)."""
    full = [
        (c, ts(t), float(a), et, cat, ch, dev, None, None if disc is None else float(disc), None)
        for c, t, a, et, cat, ch, dev, disc in rows
    ]
    return spark.createDataFrame(full, CANONICAL_SCHEMA)


# Customer A: days_ago 0, 10, 10, 21, 40. Customer B: one order 30 days ago.
# Customer C: one visit 16 days ago. Customer D: only events after as_of.
ROWS = [
    ("A", "2025-01-31T23:59:59", 100, "order", "a", "web", "mobile", 10),
    ("A", "2025-01-21T09:00:00", 50, "order", "b", "app", "mobile", 0),
    ("A", "2025-01-21T15:00:00", 0, "visit", None, "web", "mobile", None),
    ("A", "2025-01-10T12:00:00", 20, "return", "a", "web", "desktop", None),
    ("A", "2024-12-22T08:00:00", 30, "order", "c", "web", "desktop", 0),
    ("A", "2025-02-01T00:00:00", 999, "order", "a", "web", "mobile", 0),  # after as_of
    ("B", "2025-01-01T10:00:00", 40, "order", "a", "web", None, None),
    ("C", "2025-01-15T10:00:00", 0, "visit", None, "web", None, None),
    ("C", "2025-03-01T10:00:00", 500, "order", "a", "web", None, None),  # after as_of
    ("D", "2025-02-02T10:00:00", 75, "order", "a", "web", None, None),  # after as_of
]


def compute(df):
    """The features of the inline events, with the levels the expectations below assume."""
    return feat.compute_features(
        df,
        as_of=AS_OF,
        windows_days=(30, 90),
        trend_window_days=30,
        categories=("a", "b"),
        channels=("web", "app"),
        devices=("mobile",),
    )


@pytest.fixture(scope="module")
def computed(spark: SparkSession):
    return compute(events(spark, ROWS)).cache()


def by_customer(df, *cols):
    return {r["customer_id"]: tuple(r[c] for c in cols) for r in df.collect()}


def test_compute_features_one_row_per_customer_with_events_up_to_as_of(computed):
    rows = computed.select("customer_id", "as_of").collect()
    assert sorted(r["customer_id"] for r in rows) == ["A", "B", "C"]  # D only after as_of
    assert {r["as_of"] for r in rows} == {AS_OF}


def test_compute_features_as_of_cutoff_ignores_later_events(computed):
    # A's 999 order at 2025-02-01 00:00 and C's 500 order in March never count.
    got = by_customer(computed, feat.MONETARY, feat.FREQUENCY)
    assert got["A"] == (180.0, 3)
    assert got["C"] == (0.0, 0)


def test_compute_features_recency_tenure_frequency(spark, computed):
    expected = spark.createDataFrame(
        [("A", 0, 40, 3, 2, 3), ("B", 30, 30, 1, 0, 1), ("C", 16, 16, 0, 0, 0)],
        "customer_id string, recency_days int, tenure_days int, frequency long, "
        "orders_30d long, orders_90d long",
    )
    actual = computed.select(
        "customer_id", feat.RECENCY, feat.TENURE, feat.FREQUENCY, "orders_30d", "orders_90d"
    )
    assertDataFrameEqual(actual, expected)


def test_compute_features_monetary_windows_and_aov(spark, computed):
    expected = spark.createDataFrame(
        [("A", 180.0, 150.0, 180.0, 60.0), ("B", 40.0, 0.0, 40.0, 40.0), ("C", 0.0, 0.0, 0.0, 0.0)],
        "customer_id string, monetary_total double, monetary_30d double, monetary_90d double, "
        "avg_order_value double",
    )
    actual = computed.select("customer_id", feat.MONETARY, "monetary_30d", "monetary_90d", feat.AOV)
    assertDataFrameEqual(actual, expected)


def test_compute_features_active_days_counts_distinct_days(computed):
    # A: 12-22, 01-10, 01-21 (two events), 01-31 -> 4 days.
    assert by_customer(computed, feat.ACTIVE_DAYS) == {"A": (4,), "B": (1,), "C": (1,)}


def test_compute_features_inter_purchase_intervals(computed):
    # A orders on 12-22, 01-21, 01-31: gaps 30 and 10 -> mean 20, population std 10, max 30.
    # B (one order, 30 days ago) and C (no order, tenure 16) are censored.
    got = by_customer(computed, feat.IPI_MEAN, feat.IPI_STD, feat.IPI_MAX)
    assert got == {"A": (20.0, 10.0, 30.0), "B": (30.0, 0.0, 30.0), "C": (16.0, 0.0, 16.0)}


def test_compute_features_spend_trend(computed):
    # A: last 30 days 150, the 30 before 30 -> (150 - 30) / 180. B: 0 vs 40 -> -1. C: 0.
    got = by_customer(computed, feat.TREND)
    assert got["A"][0] == pytest.approx(120 / 180)
    assert got["B"] == (-1.0,)
    assert got["C"] == (0.0,)


def test_compute_features_return_rate_and_discount_share(computed):
    got = by_customer(computed, feat.RETURN_RATE, feat.DISCOUNT_SHARE)
    assert got["A"] == pytest.approx((20 / 180, 1 / 3))
    assert got["B"] == (0.0, 0.0)
    assert got["C"] == (0.0, 0.0)


def test_compute_features_category_shares_sum_to_one_with_other(computed):
    cols = ["category_share_a", "category_share_b", "category_share_other"]
    got = by_customer(computed, *cols)
    assert got["A"] == pytest.approx((100 / 180, 50 / 180, 30 / 180))
    assert got["B"] == (1.0, 0.0, 0.0)
    assert got["C"] == (0.0, 0.0, 0.0)  # no spend: no shares


def test_compute_features_channel_and_device_mix(computed):
    got = by_customer(computed, "channel_share_web", "channel_share_app", "device_share_mobile")
    # A: 5 events, web 4 / app 1; devices mobile 3 of 5.
    assert got["A"] == pytest.approx((0.8, 0.2, 0.6))
    assert got["B"] == (1.0, 0.0, 0.0)  # no device known -> 0
    assert got["C"] == (1.0, 0.0, 0.0)


def test_compute_features_single_event_customer(spark):
    df = feat.compute_features(
        events(spark, [("S", "2025-01-30T10:00:00", 25, "order", "a", "web", "app", None)]),
        as_of=AS_OF,
        windows_days=(30,),
        trend_window_days=30,
    )
    row = df.collect()[0].asDict()
    assert row[feat.RECENCY] == 1 and row[feat.TENURE] == 1
    assert row[feat.FREQUENCY] == 1 and row["orders_30d"] == 1
    assert row[feat.MONETARY] == 25.0 and row[feat.AOV] == 25.0
    assert row[feat.IPI_MEAN] == 1.0 and row[feat.IPI_STD] == 0.0
    assert row[feat.TREND] == 1.0
    # No categories / channels / devices configured: no share columns at all.
    assert not [c for c in df.columns if "_share_" in c]


def test_compute_features_is_independent_of_row_order_and_partitioning(spark, computed):
    shuffled = events(spark, list(reversed(ROWS))).repartition(3)
    assertDataFrameEqual(compute(shuffled), computed)


def test_compute_features_without_discount_column_has_no_discount_share(spark):
    df = feat.compute_features(
        events(spark, ROWS[:2]), as_of=AS_OF, windows_days=(30,), with_discount=False
    )
    assert feat.DISCOUNT_SHARE not in df.columns


def test_discover_levels_returns_most_frequent_sorted(spark):
    levels = discover_levels(events(spark, ROWS), "channel", max_levels=1)
    assert levels == ("web",)
    assert discover_levels(events(spark, ROWS), "category", max_levels=5) == ("a", "b", "c")


def test_level_name_keeps_plain_labels():
    assert level_name("category", "home") == "category_share_home"
    assert level_name("channel", "in_store2") == "channel_share_in_store2"


def test_level_name_gives_colliding_labels_distinct_stable_names():
    sha = lambda text: hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]  # noqa: E731
    # Both slug to home_garden; each keeps its own name, the same in every run.
    assert level_name("category", "home & garden") == (
        f"category_share_home_garden__{sha('home & garden')}"
    )
    assert level_name("category", "home-garden") == (
        f"category_share_home_garden__{sha('home-garden')}"
    )
    # No ASCII at all: the hash alone (both used to become "blank").
    assert level_name("category", "家居") == f"category_share__{sha('家居')}"
    assert level_name("category", "电子") == f"category_share__{sha('电子')}"
    assert sha("家居") != sha("电子") and sha("home & garden") != sha("home-garden")


def test_compute_features_level_columns_for_colliding_and_non_ascii_labels(spark):
    labels = ("home & garden", "home-garden", "家居", "电子")
    rows = [("A", "2025-01-30T10:00:00", amount, "order", c, None, None, None)
            for amount, c in zip((10, 20, 30, 40), labels, strict=True)]  # fmt: skip
    df = feat.compute_features(
        events(spark, rows), as_of=AS_OF, windows_days=(30,), categories=labels
    )
    row = df.first().asDict()
    # Spend 10 + 20 + 30 + 40 = 100: each label keeps its own share.
    for amount, label in zip((10, 20, 30, 40), labels, strict=True):
        assert row[level_name("category", label)] == pytest.approx(amount / 100)
    got = {c: (lv.column, lv.label) for c, lv in level_labels(df).items()}
    assert got == {
        **{level_name("category", lb): ("category", lb) for lb in labels},
        "category_share_other": ("category", "other"),
    }
    name = level_name("category", "家居")
    assert display_name(name, level_labels(df)) == f"{name} (category: 家居)"


NY = "America/New_York"


def test_compute_features_counts_local_days_of_the_business_time_zone(spark):
    """A New York shop's order at 21:30 on as_of (02:30 UTC the next day) is on as_of."""
    rows = [
        ("N", "2024-07-02T16:00:00", 10, "order", None, None, None, None),  # 12:00 EDT
        ("N", "2025-02-01T02:30:00", 20, "order", None, None, None, None),  # 21:30 EST 01-31
    ]
    df = events(spark, rows)
    local = feat.compute_features(df, as_of=AS_OF, windows_days=(30,), time_zone=NY).first()
    utc = feat.compute_features(df, as_of=AS_OF, windows_days=(30,)).first()
    # 2024-07-02 -> 2025-01-31: 29 + 31 + 30 + 31 + 30 + 31 + 31 = 213 days.
    assert (local[feat.FREQUENCY], local[feat.RECENCY], local[feat.TENURE]) == (2, 0, 213)
    assert (local["orders_30d"], local["monetary_30d"]) == (1, 20.0)
    assert (utc[feat.FREQUENCY], utc[feat.RECENCY]) == (1, 213)  # the fault, in UTC days


def test_compute_features_across_the_dst_change(spark):
    # New York moved to EDT (UTC-4) at 2025-03-09 07:00Z; as_of is that Sunday.
    rows = [
        ("D", "2025-03-09T04:30:00", 10, "order", None, None, None, None),  # 23:30 EST 03-08
        ("D", "2025-03-10T03:30:00", 20, "order", None, None, None, None),  # 23:30 EDT 03-09
        ("D", "2025-03-10T04:30:00", 40, "order", None, None, None, None),  # 00:30 EDT 03-10
    ]
    row = feat.compute_features(
        events(spark, rows), as_of=dt.date(2025, 3, 9), windows_days=(1,), time_zone=NY
    ).first()
    assert (row[feat.FREQUENCY], row[feat.MONETARY], row[feat.RECENCY]) == (2, 30.0, 0)
    assert (row[feat.TENURE], row[feat.ACTIVE_DAYS], row["orders_1d"]) == (1, 2, 1)


def test_compute_features_net_spend_subtracts_returns_of_either_sign(spark):
    rows = [
        ("G", "2025-01-10T10:00:00", 1000, "order", None, None, None, None),
        ("G", "2025-01-20T10:00:00", 1000, "return", None, None, None, None),
        ("P", "2024-12-01T10:00:00", 300, "order", None, None, None, None),
        ("P", "2025-01-25T10:00:00", -100, "return", None, None, None, None),  # negative
    ]
    df = feat.compute_features(events(spark, rows), as_of=AS_OF, windows_days=(30,))
    got = by_customer(df, feat.MONETARY, feat.MONETARY_NET, "monetary_30d", "monetary_net_30d")
    # G: gross 1000, net 0 (both in the last 30 days). P: the order is 61 days ago, the
    # return 6: net 200 in total, -100 in the window.
    assert got == {"G": (1000.0, 0.0, 1000.0, 0.0), "P": (300.0, 200.0, 0.0, -100.0)}


def test_compute_features_customers_without_purchases_say_so(spark):
    rows = [
        ("R", "2025-01-01T10:00:00", 50, "return", None, None, None, None),
        ("V", "2025-01-11T10:00:00", 0, "visit", None, None, None, None),
        ("B", "2025-01-21T10:00:00", 5, "order", None, None, None, None),
    ]
    df = feat.compute_features(events(spark, rows), as_of=AS_OF, windows_days=(30,))
    got = by_customer(df, feat.HAS_PURCHASE, feat.FREQUENCY, feat.MONETARY_NET)
    assert got == {"R": (0, 0, -50.0), "V": (0, 0, 0.0), "B": (1, 1, 5.0)}


def test_discover_levels_minus_rows_counts_what_is_left(spark):
    # ROWS' channels ranked "web" first; removing enough web rows changes the winner.
    all_rows = events(spark, ROWS)
    web = all_rows.where("channel = 'web'")
    others = all_rows.where("channel <> 'web'")
    assert discover_all_levels(all_rows, ["channel"], max_levels=1)["channel"] == ("web",)
    got = discover_all_levels(all_rows, ["channel"], max_levels=3, minus=web)
    expected = discover_all_levels(others, ["channel"], max_levels=3)
    assert got == expected
    assert "web" not in got["channel"]
