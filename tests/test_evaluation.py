from __future__ import annotations

import pytest

from segmentation.modeling.evaluation import adjusted_rand_index, adjusted_rand_index_from_counts


def counts(truth, pred):
    out: dict = {}
    for t, p in zip(truth, pred, strict=True):
        out[(t, p)] = out.get((t, p), 0) + 1
    return out


def test_ari_is_one_for_identical_partitions_up_to_relabelling():
    assert adjusted_rand_index_from_counts(counts("aabbcc", [2, 2, 0, 0, 1, 1])) == 1.0


def test_ari_matches_hand_computed_value():
    # truth {0,0,1,1}, pred {0,0,1,2}: index 1, expected 2*1/6 = 1/3, max 1.5 -> (1-1/3)/(1.5-1/3)
    assert adjusted_rand_index_from_counts(counts([0, 0, 1, 1], [0, 0, 1, 2])) == pytest.approx(
        4 / 7
    )


def test_ari_on_spark_columns(spark):
    df = spark.createDataFrame([("a", 1), ("a", 1), ("b", 2), ("b", 1)], "t string, p int")
    assert adjusted_rand_index(df, "t", "p") == pytest.approx(
        adjusted_rand_index_from_counts(counts("aabb", [1, 1, 2, 1]))
    )
