"""The quick benchmark (1M events): Spark and the DuckDB + scikit-learn baseline agree.

It checks results, never speed: the same customers and features (every one of the job's
feature columns, recomputed by DuckDB's SQL), the same segment sizes and labels.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from segmentation.config import load_config
from segmentation.storage import delta_tables
from segmentation.workflows import generate
from tests.conftest import ROOT
from tools import bench as bench_job
from tools import benchmark

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def add_dirt(spark, cfg):
    """Append events both sides must quarantine: copies, rule breakers, a late duplicate."""
    path = cfg.events_path()
    events = delta_tables.read(spark, path)
    orders = events.where("event_type = 'order'").orderBy("event_id").limit(40)
    dirt = (
        orders.limit(25)  # exact copies of 25 orders
        .unionByName(orders.limit(3).withColumn("customer_id", F.lit("  ")))
        .unionByName(orders.limit(4).withColumn("amount", F.lit(-5.0)))
        .unionByName(orders.limit(2).withColumn("amount", F.lit(float("nan"))))
        .unionByName(
            orders.limit(2).withColumn("event_time", F.lit(dt.datetime(2031, 1, 1, tzinfo=dt.UTC)))
        )
        # the same id with other content: the copy kept is the first in the fixed order
        .unionByName(orders.limit(5).withColumn("amount", F.col("amount") + 1))
    )
    delta_tables.write(spark, dirt, path, delta_tables.WriteOptions(mode="append"))
    return 25 + 3 + 4 + 2 + 2 + 5


# The smallest size that still has every archetype and every stage (make bench runs 1M-100M).
EVENTS = 250_000


@pytest.fixture(scope="module")
def quick(spark, tmp_path_factory):
    base = load_config(ROOT / "conf" / "local.yaml")
    workdir = tmp_path_factory.mktemp("bench")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        cfg = benchmark.bench_config(base, EVENTS, workdir)
        generate.run(spark, cfg)
        dirt = add_dirt(spark, cfg)
        result = benchmark.run_size(spark, base, EVENTS, workdir)
        result.checks["dirt"] = dirt
        yield result
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_baseline_and_job_agree_on_features_and_segments(quick):
    c = quick.checks
    assert quick.customers == 5_000
    assert c["customers_equal"] is True
    assert c["features_missing_in_baseline"] == []
    assert c["features_compared"] == 39
    assert c["max_relative_feature_diff"] < 1e-9
    assert c["max_size_diff_share"] <= 0.01
    assert c["ari_spark_vs_sklearn"] >= 0.95
    # One k-means run from the sample's centres: Spark SQL (restarts.refine) and
    # scikit-learn reach the same within-cluster sum of squares; the kept model is no worse.
    assert c["spark_single_cost"] == pytest.approx(c["sklearn_cost"], rel=1e-9)
    assert c["spark_cost"] <= c["sklearn_cost"] * (1 + 1e-9)
    # Both sides quarantine exactly the dirt: 25 copies, 11 rule breakers, 5 conflicting ids.
    assert c["spark_rejected"] == c["duckdb_rejected"] == c["dirt"]
    assert c["rejected_equal"] is True
    assert bench_job.failures(quick) == []


def test_every_stage_is_timed_and_reported(quick):
    spark_stages = [s.name for s in quick.spark]
    assert spark_stages == [
        "features", "write customer_features, rejected_events (Delta)",
        "read customer_features (cached)", "k selection", "final fit (sample centres and restarts)",
        "segment validation", "final fit",
        "assignment", "write segment_membership (Delta)",
    ]  # fmt: skip
    assert [s.name for s in quick.baseline] == ["features", "final fit", "assignment"]
    assert all(s.seconds > 0 and s.peak_rss_mb > 0 for s in quick.spark + quick.baseline)
    text = benchmark.render_markdown([quick], machine="test machine", command="cmd")
    for name in spark_stages:
        assert f"| {name} |" in text
    assert "250,000 events, 5,000 customers" in text


def test_a_disagreement_is_reported(quick):
    import dataclasses

    broken = dataclasses.replace(
        quick, checks={**quick.checks, "max_relative_feature_diff": 0.5, "worst_feature": "x"}
    )
    assert bench_job.failures(broken) == ["features differ: x by 5.0e-01"]


def test_size_arguments_parse():
    assert bench_job.parse_size("10M") == 10_000_000
    assert bench_job.parse_size("500k") == 500_000
    assert bench_job.parse_size("2000000") == 2_000_000
