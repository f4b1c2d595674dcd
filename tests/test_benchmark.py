"""The quick benchmark (1M events): Spark and the DuckDB + scikit-learn baseline agree.

It checks results, never speed: the same customers and features (every one of the job's
feature columns, recomputed by DuckDB's SQL), the same segment sizes and labels.
"""

from __future__ import annotations

import pytest

from jobs import benchmark as bench_job
from segmentation import benchmark
from segmentation.config import load_config
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def quick(spark, tmp_path_factory):
    base = load_config(ROOT / "conf" / "local.yaml")
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        yield benchmark.run_size(spark, base, 1_000_000, tmp_path_factory.mktemp("bench"))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_baseline_and_job_agree_on_features_and_segments(quick):
    c = quick.checks
    assert quick.customers == 20_000
    assert c["customers_equal"] is True
    assert c["features_missing_in_baseline"] == []
    assert c["features_compared"] == 34
    assert c["max_relative_feature_diff"] < 1e-9
    assert c["max_size_diff_share"] <= 0.01
    assert c["ari_spark_vs_sklearn"] >= 0.95
    assert bench_job.failures(quick) == []


def test_every_stage_is_timed_and_reported(quick):
    spark_stages = [s.name for s in quick.spark]
    assert spark_stages == [
        "features", "write customer_features (Delta)", "k selection", "final fit (restarts)",
        "final fit", "assignment", "write segment_membership (Delta)",
    ]  # fmt: skip
    assert [s.name for s in quick.baseline] == ["features", "final fit", "assignment"]
    assert all(s.seconds > 0 and s.peak_rss_mb > 0 for s in quick.spark + quick.baseline)
    text = benchmark.render_markdown([quick], machine="test machine", command="cmd")
    for name in spark_stages:
        assert f"| {name} |" in text
    assert "1,000,000 events, 20,000 customers" in text


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
