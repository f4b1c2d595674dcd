"""Outcome validation against hand-computed values and independent implementations (scipy's
Wilson interval, chi-square and Kruskal-Wallis)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from scipy import stats

from segmentation.modeling import outcomes

T = dt.date(2025, 9, 30)
WINDOW = outcomes.OutcomeWindow(T, dt.date(2025, 12, 29), "backtest")


@pytest.fixture(scope="module")
def example(spark):
    # Segment 1: a (orders 10 + 30 in the window, one return), b (an order the day before the
    # window: not counted), c (nothing). Segment 2: d (order 100), e (order 50 on the window's
    # last day), f (an order the day after the window: not counted).
    events = spark.createDataFrame(
        [("a", dt.datetime(2025, 10, 1, 0, 0), 10.0, "order"),
         ("a", dt.datetime(2025, 11, 5, 9, 0), 30.0, "order"),
         ("a", dt.datetime(2025, 11, 6, 9, 0), 30.0, "return"),
         ("b", dt.datetime(2025, 9, 30, 23, 59), 99.0, "order"),
         ("d", dt.datetime(2025, 12, 1, 8, 0), 100.0, "order"),
         ("d", dt.datetime(2025, 12, 2, 8, 0), 0.0, "visit"),
         ("e", dt.datetime(2025, 12, 29, 23, 0), 50.0, "order"),
         ("f", dt.datetime(2025, 12, 30, 0, 0), 70.0, "order")],
        "customer_id string, event_time timestamp, amount double, event_type string",
    )  # fmt: skip
    assignment = spark.createDataFrame(
        [("a", 1), ("b", 1), ("c", 1), ("d", 2), ("e", 2), ("f", 2)],
        "customer_id string, segment_id int",
    )
    rows = outcomes.customer_outcomes(events, assignment, WINDOW)
    return {r["customer_id"]: r.asDict() for r in rows.collect()}, rows


def test_customer_outcomes_count_only_the_window(example):
    per, _ = example
    assert per["a"] == {"customer_id": "a", "segment_id": 1, "purchased": 1, "revenue": 40.0,
                        "returned": 1}  # fmt: skip
    assert (per["b"]["purchased"], per["b"]["revenue"]) == (0, 0.0)
    assert (per["c"]["purchased"], per["c"]["revenue"], per["c"]["returned"]) == (0, 0.0, 0)
    assert (per["d"]["purchased"], per["d"]["revenue"]) == (1, 100.0)
    assert (per["e"]["purchased"], per["e"]["revenue"]) == (1, 50.0)
    assert (per["f"]["purchased"], per["f"]["revenue"]) == (0, 0.0)


def test_customer_outcomes_count_local_days_of_the_business_time_zone(spark, example):
    """In New York, a's 00:00 UTC order of 1 October is 20:00 on 30 September (before the
    window) and f's 00:00 UTC order of 30 December is 19:00 on 29 December (its last day)."""
    _, rows = example
    events = spark.createDataFrame(
        [("a", dt.datetime(2025, 10, 1, 0, 0), 10.0, "order"),
         ("a", dt.datetime(2025, 11, 5, 9, 0), 30.0, "order"),
         ("f", dt.datetime(2025, 12, 30, 0, 0), 70.0, "order")],
        "customer_id string, event_time timestamp, amount double, event_type string",
    )  # fmt: skip
    assignment = rows.select("customer_id", "segment_id").where("customer_id in ('a', 'f')")
    local = outcomes.customer_outcomes(
        events, assignment, WINDOW, time_zone="America/New_York"
    ).collect()
    assert {r["customer_id"]: (r["purchased"], r["revenue"]) for r in local} == {
        "a": (1, 30.0),
        "f": (1, 70.0),
    }


def test_measures_per_segment_with_intervals(example):
    _, rows = example
    ms = {(m.segment_id, m.measure): m for m in outcomes.measures(rows)}
    share1, share2 = ms[(1, "outcome_purchase_share")], ms[(2, "outcome_purchase_share")]
    assert share1.value == pytest.approx(1 / 3) and share2.value == pytest.approx(2 / 3)
    wilson = stats.binomtest(1, 3).proportion_ci(confidence_level=0.95, method="wilson")
    assert (share1.ci_lower, share1.ci_upper) == pytest.approx((wilson.low, wilson.high))
    assert ms[(None, "outcome_purchase_share")].value == pytest.approx(3 / 6)
    revenue = ms[(2, "outcome_revenue_per_customer")]
    assert revenue.value == pytest.approx(50.0)  # (100 + 50 + 0) / 3
    sd = math.sqrt(((100 - 50) ** 2 + 0 + (0 - 50) ** 2) / 2)  # sample sd = 50
    half = 1.959963984540054 * sd / math.sqrt(3)
    assert (revenue.ci_lower, revenue.ci_upper) == pytest.approx((50 - half, 50 + half))
    assert ms[(1, "outcome_return_rate")].value == pytest.approx(1 / 3)
    assert ms[(2, "outcome_return_rate")].value == 0.0
    assert ms[(1, "outcome_customers")].value == 3.0


def test_tests_equal_scipy(example):
    _, rows = example
    ms = {m.measure: m for m in outcomes.measures(rows) if m.segment_id is None}
    # Segments x purchased: [[1, 2], [2, 1]] -> chi-square 2/3 by hand (expected 1.5 each).
    assert ms["outcome_purchase_chi2"].value == pytest.approx(2 / 3)
    assert ms["outcome_purchase_cramers_v"].value == pytest.approx(math.sqrt((2 / 3) / 6))
    assert ms["outcome_purchase_chi2"].verdict == "no difference found"
    h, p = stats.kruskal([40.0, 0.0, 0.0], [100.0, 50.0, 0.0])
    assert ms["outcome_revenue_kruskal_h"].value == pytest.approx(h)
    assert ms["outcome_revenue_p_value"].value == pytest.approx(p)
    assert ms["outcome_revenue_epsilon_squared"].value == pytest.approx(h / 5)


def test_wilson_of_zero_and_all():
    assert outcomes.wilson(0, 10)[0] == 0.0
    low, high = outcomes.wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(
        stats.binomtest(10, 10).proportion_ci(method="wilson").low
    )


def test_customer_share_caps_the_outcome_check():
    from segmentation.modeling import backtest

    assert backtest.customer_share(None, 10**9) == 1.0
    assert backtest.customer_share(200, 200) == 1.0
    assert backtest.customer_share(200_000, 2_000_000) == 0.1


def test_customer_sample_is_seeded_sized_and_independent_of_partitioning(spark):
    from pyspark.sql import functions as F

    from segmentation.modeling import backtest

    ids = spark.range(20_000).select(F.concat(F.lit("c"), F.col("id")).alias("customer_id"))
    keep = backtest.sampled(0.1, seed=7)
    one = {r[0] for r in ids.where(keep).collect()}
    other = {r[0] for r in ids.repartition(7).orderBy(F.rand(3)).where(keep).collect()}
    assert one == other  # the same customers whatever the order and partitioning
    assert abs(len(one) - 2000) < 4 * (20_000 * 0.1 * 0.9) ** 0.5  # 4 binomial sigmas
    reseeded = {r[0] for r in ids.where(backtest.sampled(0.1, seed=8)).collect()}
    assert reseeded != one and len(one & reseeded) < 400  # another seed, another sample
    assert ids.where(backtest.sampled(1.0, seed=7)).count() == 20_000


def test_backtest_events_take_the_duplicate_rule_from_every_input_row(spark, tmp_path):
    """The sampled backtest de-duplicates as the feature job does: ``auto`` looks at whether
    *all* input times have a time of day, not only the sampled customers' times. Here the
    sampled customer has only midnights (alone: day-level data, rule ``event_id``, which keeps
    copies without an id), another customer has a timed event, so the rule is ``exact`` and
    the sampled customer's copy without an id is removed; its bad-amount row is quarantined."""
    from pyspark.sql import functions as F

    from segmentation.inputs import quality
    from segmentation.modeling import backtest
    from tests.conftest import local_config

    ids = spark.range(5000).select(F.concat(F.lit("c"), F.col("id")).alias("customer_id"))
    keep = backtest.sampled(0.5, seed=3)
    inside = ids.where(keep).orderBy("customer_id").first()[0]
    outside = ids.where(~keep).orderBy("customer_id").first()[0]
    midnight, timed = "2025-06-01 00:00:00", "2025-06-02 10:30:00"
    rows = [
        (inside, midnight, "20.0", "order", None),
        (inside, midnight, "20.0", "order", None),  # an exact copy without an id
        (inside, "2025-06-03 00:00:00", "5.0", "order", "e1"),
        (inside, "2025-06-04 00:00:00", "abc", "order", "e2"),  # a bad amount
        (outside, timed, "7.0", "order", "e3"),
    ]
    path = str(tmp_path / "events.csv")
    spark.createDataFrame(
        rows, "customer_id string, event_time string, amount string, event_type string, "
        "event_id string"
    ).coalesce(1).write.option("header", "true").csv(path)  # fmt: skip
    cfg = local_config(
        tmp_path, f"input.events.path={path}", "input.events.format=csv",
        'input.events.options={"header": "true"}', "quality.duplicates=auto",
        "features.as_of=2025-12-31",
        *[f"input.events.columns.{c}=null" for c in
          ("category", "channel", "device", "quantity", "discount")],
    )  # fmt: skip
    events = quality.clean_events(spark, cfg, keep=keep)
    try:
        got = sorted((r.customer_id, r.amount) for r in events.clean.collect())
    finally:
        events.staged.unpersist()
    assert got == [(inside, 5.0), (inside, 20.0)]
    assert "discount" not in events.present and "event_id" in events.present
