"""The retrain rule on plain values."""

from __future__ import annotations

from segmentation.storage import drift


def test_retrain_reasons_name_every_psi_over_the_threshold():
    reasons = drift.retrain_reasons(0.3, {"recency_days": 5.0871, "frequency": 0.01}, 0.25)
    assert reasons == [
        "segment shares moved: PSI 0.300 > drift.psi_threshold 0.25",
        "feature recency_days drifted: PSI 5.087 > drift.psi_threshold 0.25",
    ]


def test_retrain_reasons_empty_at_or_under_the_threshold():
    assert drift.retrain_reasons(0.25, {"frequency": 0.25}, 0.25) == []


def test_publications_of_one_snapshot_share_the_feature_psi(spark, tmp_path, monkeypatch):
    """RFM and B2B tiers of one date bin the features once: the second publication reuses
    the first one's PSI (same values as measuring alone), and only measures what is new."""
    import datetime as dt

    from pyspark.sql import functions as F

    from segmentation.config import DriftConfig, StorageConfig
    from segmentation.storage import delta_tables, history, tables

    storage = StorageConfig(warehouse=str(tmp_path))
    base_day, day = dt.date(2025, 1, 31), dt.date(2025, 2, 28)
    rows = spark.range(200).select(
        F.col("id").cast("string").alias("customer_id"),
        F.lit(base_day).alias("as_of"),
        (F.col("id") % 10).cast("double").alias("x"),
        (F.col("id") % 4).cast("double").alias("k"),
        (F.col("id") % 7).cast("double").alias("m"),
    )
    delta_tables.write(
        spark, rows, tables.path(storage, tables.FEATURES),
        delta_tables.WriteOptions(mode="overwrite", partition_by=("as_of",)),
    )  # fmt: skip
    current = rows.select(
        "customer_id", F.lit(day).alias("as_of"), (F.col("x") + 3).alias("x"), "k", "m"
    )
    calls: list[list[str]] = []
    measure_psi = history.feature_psi

    def counted(base, cur, features, *, bins):
        calls.append(list(features))
        return measure_psi(base, cur, features, bins=bins)

    monkeypatch.setattr(history, "feature_psi", counted)
    dc = DriftConfig()

    def measured(model_features, shared):
        return drift.measure(
            spark, storage, dc, baseline_as_of=base_day, baseline_sizes={1: 100, 2: 100},
            sizes={1: 100, 2: 100}, features=current, model_features=model_features,
            shared=shared,
        )  # fmt: skip

    alone = measured(["x"], None)
    shared: drift.FeaturePsiCache = {}
    first, second = measured(["x"], shared), measured(["k"], shared)
    assert calls == [["x", "k", "m"], ["x", "k", "m"]]  # alone, then once for both
    assert first.feature_psi == alone.feature_psi and alone.feature_psi["x"] > 0.25
    assert second.feature_psi == {"k": alone.other_feature_psi["k"]}
    assert second.other_feature_psi == {
        "x": alone.feature_psi["x"],
        "m": alone.other_feature_psi["m"],
    }
    assert second.retrain_reasons == [] and first.retrain_reasons
