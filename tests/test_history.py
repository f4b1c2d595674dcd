"""SCD2 membership history, migration matrices and PSI on small inline snapshots."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest
from pyspark.sql import functions as F

from segmentation.storage import history

D1, D2, D3 = dt.date(2025, 1, 31), dt.date(2025, 2, 28), dt.date(2025, 3, 31)
MODEL = "customer_segments"


def snapshot(spark, as_of, rows, version=1, model=MODEL):
    """Membership rows: (customer_id, segment_id)."""
    return spark.createDataFrame(
        [(c, as_of, s, f"Segment {s}", model, version) for c, s in rows],
        "customer_id string, as_of date, segment_id int, segment_name string, "
        "model_name string, model_version int",
    )


def rows_of(df):
    return sorted(
        (r["customer_id"], r["segment_id"], r["valid_from"], r["valid_to"], r["is_current"],
         r["model_version"])
        for r in df.collect()
    )  # fmt: skip


# a stays in 1; b moves 1 -> 2; c leaves at D2 and comes back at D3; d arrives at D2.
S1 = [("a", 1), ("b", 1), ("c", 2)]
S2 = [("a", 1), ("b", 2), ("d", 3)]
S3 = [("a", 1), ("b", 2), ("c", 2), ("d", 1)]
EXPECTED = [
    ("a", 1, D1, None, True, 1),
    ("b", 1, D1, D2, False, 1),
    ("b", 2, D2, None, True, 1),
    ("c", 2, D1, D2, False, 1),
    ("c", 2, D3, None, True, 1),
    ("d", 1, D3, None, True, 1),
    ("d", 3, D2, D3, False, 1),
]


def apply_all(spark, snapshots):
    h = None
    for as_of, rows in snapshots:
        h = history.apply_snapshot(h, snapshot(spark, as_of, rows), as_of=as_of, model_name=MODEL)
        h = spark.createDataFrame(h.collect(), history.HISTORY_SCHEMA)  # as if written and read
    return h


def test_merge_opens_and_closes_rows_on_the_snapshot_dates(spark):
    h = apply_all(spark, [(D1, S1), (D2, S2), (D3, S3)])
    assert rows_of(h) == EXPECTED
    assert h.schema == history.HISTORY_SCHEMA


def test_replaying_the_latest_snapshot_changes_nothing(spark):
    once = apply_all(spark, [(D1, S1), (D2, S2), (D3, S3)])
    twice = apply_all(spark, [(D1, S1), (D2, S2), (D3, S3), (D3, S3)])
    assert rows_of(twice) == rows_of(once)


def test_replaying_the_latest_snapshot_with_other_segments_replaces_it(spark):
    # D3 scored again (e.g. with another model version): b now in 3 instead of 2.
    s3b = [("a", 1), ("b", 3), ("c", 2), ("d", 1)]
    replayed = apply_all(spark, [(D1, S1), (D2, S2), (D3, S3), (D3, s3b)])
    direct = apply_all(spark, [(D1, S1), (D2, S2), (D3, s3b)])
    assert rows_of(replayed) == rows_of(direct)
    assert ("b", 2, D2, D3, False, 1) in rows_of(replayed)


def test_a_retrain_that_keeps_the_segment_id_keeps_the_row_open(spark):
    h = apply_all(spark, [(D1, S1)])
    h = history.apply_snapshot(h, snapshot(spark, D2, S1, version=2), as_of=D2, model_name=MODEL)
    assert rows_of(h) == [("a", 1, D1, None, True, 1), ("b", 1, D1, None, True, 1),
                          ("c", 2, D1, None, True, 1)]  # fmt: skip


def test_rebuild_from_snapshots_in_any_order_equals_the_merges(spark):
    membership = (
        snapshot(spark, D3, S3)
        .unionByName(snapshot(spark, D1, S1))
        .unionByName(snapshot(spark, D2, S2))
    )
    rebuilt = history.rebuild(membership, model_name=MODEL, snapshots=[D3, D1, D2])
    assert rows_of(rebuilt) == EXPECTED


def test_merge_and_rebuild_agree_on_random_sequences(spark):
    rng = random.Random(11)
    dates = [dt.date(2025, m, 1) for m in range(1, 6)]
    for _ in range(3):
        snaps = [
            (d, [(f"c{i}", rng.randint(1, 3)) for i in range(12) if rng.random() < 0.8])
            for d in dates
        ]
        merged = apply_all(spark, snaps)
        membership = None
        for d, rows in snaps:
            s = snapshot(spark, d, rows)
            membership = s if membership is None else membership.unionByName(s)
        rebuilt = history.rebuild(membership, model_name=MODEL, snapshots=dates)
        assert rows_of(merged) == rows_of(rebuilt)


def test_other_segmentations_rows_are_left_alone(spark):
    h = history.apply_snapshot(
        None, snapshot(spark, D1, [("a", 7)], model="rfm"), as_of=D1, model_name="rfm"
    )
    h = history.apply_snapshot(h, snapshot(spark, D2, S2), as_of=D2, model_name=MODEL)
    rfm = h.where(F.col("model_name") == "rfm")
    assert rows_of(rfm) == [("a", 7, D1, None, True, 1)]
    assert history.latest_change(h, "rfm") == D1
    assert history.latest_change(h, MODEL) == D2


def test_migration_matrix_counts_moves_entries_and_exits(spark):
    m = history.migration_matrix(
        snapshot(spark, D1, S1), snapshot(spark, D2, S2), as_of=D2, previous_as_of=D1,
        model_name=MODEL,
    )  # fmt: skip
    got = {(r["from_segment_id"], r["to_segment_id"]): (r["customers"], r["share_of_from"])
           for r in m.collect()}  # fmt: skip
    assert got == {(1, 1): (1, 0.5), (1, 2): (1, 0.5), (2, None): (1, 1.0), (None, 3): (1, 1.0)}
    assert {r["as_of"] for r in m.collect()} == {D2}
    assert {r["previous_as_of"] for r in m.collect()} == {D1}


def test_psi_by_hand():
    assert history.psi({1: 50, 2: 50}, {1: 50, 2: 50}) == 0.0
    expected = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert history.psi({1: 5, 2: 5}, {1: 70, 2: 30}) == pytest.approx(expected)
    # A bin empty on one side is floored, not infinite.
    assert math.isfinite(history.psi({1: 10}, {2: 10}))


def test_feature_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift(spark):
    rng = random.Random(3)
    base = spark.createDataFrame(
        [(rng.gauss(0, 1), float(i % 7)) for i in range(4000)], "x double, k double"
    )
    same = spark.createDataFrame(
        [(rng.gauss(0, 1), float(i % 7)) for i in range(4000)], "x double, k double"
    )
    shifted = spark.createDataFrame(
        [(rng.gauss(1, 1), None) for i in range(4000)], "x double, k double"
    )
    stable = {d.feature: d.psi for d in history.feature_psi(base, same, ["x", "k"])}
    moved = {d.feature: d.psi for d in history.feature_psi(base, shifted, ["x", "k"])}
    assert stable["x"] < 0.02 and stable["k"] < 0.01
    assert moved["x"] > 0.25
    assert moved["k"] > 1.0  # every value null: all in the null bin


def test_update_mode_creates_merges_forward_and_rebuilds_a_backfill():
    d1, d2 = dt.date(2025, 11, 30), dt.date(2025, 12, 31)
    assert history.update_mode(table_exists=False, latest=None, as_of=d1) == "created"
    assert history.update_mode(table_exists=True, latest=None, as_of=d1) == "merged"  # new model
    assert history.update_mode(table_exists=True, latest=d1, as_of=d2) == "merged"
    assert history.update_mode(table_exists=True, latest=d2, as_of=d2) == "merged"  # a replay
    assert history.update_mode(table_exists=True, latest=d2, as_of=d1) == "rebuilt"


def test_moves_from_migration_rows():
    rows = [
        {"from_segment_id": 3, "to_segment_id": 3, "customers": 2},
        {"from_segment_id": 3, "to_segment_id": 1, "customers": 1},
        {"from_segment_id": None, "to_segment_id": 1, "customers": 7},
    ]
    assert history.moves(rows) == {"stayed": 2, "moved": 1, "entered": 7, "left": 0}


def test_feature_psi_bins_match_numpy_at_the_edges_and_for_missing_values(spark):
    """Bin i holds values in (e_i-1, e_i]: a value equal to an edge stays below it (numpy's
    searchsorted, side="left"); null and NaN are bin -1."""
    import numpy as np

    rng = np.random.default_rng(5)
    base_k = rng.integers(0, 6, 500).astype(float)  # integers: many values equal the edges
    cur = [float(v) for v in rng.integers(0, 8, 300)] + [None, float("nan"), None]
    base = spark.createDataFrame([(float(v),) for v in base_k], "k double")
    current = spark.createDataFrame([(v,) for v in cur], "k double")
    (drift,) = history.feature_psi(base, current, ["k"], bins=4)
    edges = np.array(drift.edges)
    assert len(edges) > 0 and np.all(np.diff(edges) > 0)

    def expected(values):
        out = {}
        for v in values:
            b = -1 if v is None or np.isnan(v) else int(np.searchsorted(edges, v, side="left"))
            out[b] = out.get(b, 0) + 1
        return out

    assert dict(drift.baseline) == expected(list(base_k))
    assert dict(drift.current) == expected(cur)
    assert drift.psi == pytest.approx(history.psi(expected(list(base_k)), expected(cur)))
