"""Property-based checks of feature invariants over random event histories (Hypothesis)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.testing import assertDataFrameEqual

from segmentation.features import behaviour as feat
from segmentation.features.levels import level_name
from segmentation.inputs.sources import CANONICAL_SCHEMA

AS_OF = dt.date(2025, 6, 30)
END = dt.datetime.combine(AS_OF, dt.time(23, 59, 59), tzinfo=dt.UTC)
CATEGORIES = ("x", "y")

event = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(min_value=-30 * 86400, max_value=400 * 86400),  # seconds before the end of as_of
    st.floats(min_value=0.01, max_value=1000, allow_nan=False),
    st.sampled_from(["order", "order", "return", "visit", "other"]),
    st.sampled_from(["x", "y", "z", None]),
    st.sampled_from(["web", "app", None]),
)


def compute(spark, rows, partitions=None):
    data = [
        (c, END - dt.timedelta(seconds=ago), amt, et, cat, ch, None, None, 0.0, None)
        for c, ago, amt, et, cat, ch in rows
    ]
    df = spark.createDataFrame(data, CANONICAL_SCHEMA)
    if partitions:
        df = df.repartition(partitions)
    return feat.compute_features(
        df, as_of=AS_OF, windows_days=(7, 30), trend_window_days=30,
        categories=CATEGORIES, channels=("web", "app"),
    )  # fmt: skip


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(event, min_size=1, max_size=25))
def test_feature_invariants_hold_for_random_histories(spark, rows):
    result = compute(spark, rows)
    got = {r["customer_id"]: r for r in result.collect()}
    in_snapshot = [r for r in rows if r[1] >= 0]
    assert set(got) == {r[0] for r in in_snapshot}
    orders = Counter(r[0] for r in in_snapshot if r[3] == "order")
    for customer, row in got.items():
        assert row[feat.FREQUENCY] == orders.get(customer, 0)
        assert 0 <= row[feat.RECENCY] <= row[feat.TENURE]
        assert row[feat.ACTIVE_DAYS] >= 1
        assert row["orders_7d"] <= row["orders_30d"] <= row[feat.FREQUENCY]
        assert -1.0 <= row[feat.TREND] <= 1.0
        shares = sum(row[level_name("category", c)] for c in (*CATEGORIES, "other"))
        expected = 1.0 if row[feat.MONETARY] > 0 else 0.0
        assert abs(shares - expected) < 1e-9
    # Row order and partitioning never change the result.
    assertDataFrameEqual(compute(spark, list(reversed(rows)), partitions=3), result)
