"""The sample generator: deterministic, partition-independent, planted archetypes."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from segmentation.sample import generator as gen

START, END = dt.date(2024, 1, 1), dt.date(2025, 12, 31)


def sample(spark, *, customers=300, events=9000, seed=5, partitions=None):
    return gen.generate(
        spark, customers=customers, events=events, seed=seed, start_date=START, end_date=END,
        partitions=partitions,
    )  # fmt: skip


def test_generate_is_deterministic_and_independent_of_partitioning(spark):
    a = sample(spark, partitions=2)
    b = sample(spark, partitions=5)
    assertDataFrameEqual(a.events, b.events)
    assertDataFrameEqual(a.customers, b.customers)
    assertDataFrameEqual(a.segment_truth, b.segment_truth)


def test_generate_different_seed_gives_different_events(spark):
    a = sample(spark, seed=1).events.select("customer_id", "event_time", "amount")
    b = sample(spark, seed=2).events.select("customer_id", "event_time", "amount")
    assert a.exceptAll(b).count() > 0.9 * a.count()


def test_generate_sizes_and_time_range(spark):
    data = sample(spark, customers=3000, events=60000)
    stats = data.events.agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("customer_id").alias("customers"),
        F.countDistinct("event_id").alias("ids"),
        F.min("event_time").alias("first"),
        F.max("event_time").alias("last"),
    ).first()
    assert 0.9 * 60000 <= stats["n"] <= 1.1 * 60000
    assert stats["customers"] == 3000  # every customer has at least one event
    assert stats["ids"] == stats["n"]  # event ids are unique
    assert stats["first"].date() >= START
    assert stats["last"] <= dt.datetime(2025, 12, 31, 23, 59, 59)
    assert data.customers.count() == 3000
    assert data.segment_truth.select("customer_id").distinct().count() == 3000


def test_generate_archetype_shares_follow_weights(spark):
    truth = sample(spark, customers=6000, events=6000 * 3).segment_truth
    counts = {
        r["true_segment"]: r["count"] for r in truth.groupBy("true_segment").count().collect()
    }
    for archetype in gen.ARCHETYPES:
        assert counts[archetype.name] / 6000 == pytest.approx(archetype.weight, abs=0.025)


def test_generate_amounts_follow_event_types(spark):
    ev = sample(spark).events
    by_type = {
        r["event_type"]: r
        for r in ev.groupBy("event_type")
        .agg(
            F.min("amount").alias("lo"),
            F.max("amount").alias("hi"),
            F.count("category").alias("cat"),
        )
        .collect()
    }
    assert set(by_type) == {"order", "return", "visit"}
    assert by_type["visit"]["hi"] == 0.0 and by_type["visit"]["cat"] == 0
    assert by_type["order"]["lo"] > 0 and by_type["return"]["lo"] > 0


def test_generate_plants_recency_of_lapsed_and_tenure_of_new(spark):
    data = sample(spark, customers=1000, events=30000)
    orders = data.events.where("event_type = 'order'").join(data.segment_truth, "customer_id")
    per = orders.groupBy("customer_id", "true_segment").agg(
        F.datediff(F.lit(END), F.max(F.to_date("event_time"))).alias("recency"),
        F.datediff(F.lit(END), F.min(F.to_date("event_time"))).alias("tenure"),
    )
    lapsed = per.where("true_segment = 'lapsed'").agg(F.min("recency")).first()[0]
    newest = per.where("true_segment = 'new_customers'").agg(F.max("tenure")).first()[0]
    assert lapsed >= 380
    assert newest <= 60
