"""Scaling + clustering pipeline, k selection rules, and assignment."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.ml import PipelineModel
from pyspark.testing import assertDataFrameEqual

from segmentation.errors import InputError
from segmentation.features.scaling import Scaling
from segmentation.modeling import clustering, model_selection, restarts, training
from segmentation.modeling.clustering import SegmentationKMeans
from segmentation.modeling.model_selection import Candidate

CENTRES = {"big": (0.0, 0.0, 90), "mid": (10.0, 10.0, 60), "small": (0.0, 20.0, 30)}


@pytest.fixture(scope="module")
def blobs(spark):
    rng = random.Random(7)
    rows = []
    for label, (x, y, n) in CENTRES.items():
        for i in range(n):
            rows.append((f"{label}{i}", label, x + rng.gauss(0, 0.5), y + rng.gauss(0, 0.5), 5.0))
    return spark.createDataFrame(
        rows, "customer_id string, truth string, x double, y double, flat double"
    ).cache()


def estimator(**kw):
    return SegmentationKMeans(features=["x", "y", "flat"], default_transform="none", seed=3, **kw)


def test_select_k_recovers_three_blobs(blobs):
    est = estimator()
    scaling = est.fit_scaling(blobs)
    selection = clustering.select_k(
        est, blobs, k_values=range(2, 7), scaling=scaling, sample_rows=1000,
        rule=model_selection.SelectionRule(min_segment_share=0.05), n_init=2,
    )  # fmt: skip
    assert selection.chosen_k == 3
    assert [c.k for c in selection.candidates] == [2, 3, 4, 5, 6]
    assert selection.sample_rows == 180
    best = max(selection.candidates, key=lambda c: c.silhouette)
    assert best.k == 3


def test_fit_numbers_segments_by_size_and_assigns_every_row(blobs):
    model = estimator(k=3).fit(blobs)
    assigned = model.transform(blobs)
    pairs = {
        (r["truth"], r["segment_id"]) for r in assigned.select("truth", "segment_id").collect()
    }
    assert pairs == {("big", 1), ("mid", 2), ("small", 3)}
    assert model.sizes == {1: 90, 2: 60, 3: 30}
    assert assigned.count() == 180


def test_with_segment_ids_renumbers_rows_centres_and_sizes(blobs):
    model = estimator(k=3).fit(blobs)
    # Keep "big" as 1, give "mid" and "small" ids 7 and 4 (e.g. matched to a champion).
    by_id = {s: c for c, s in model.cluster_to_segment.items()}
    renumbered = model.with_segment_ids({by_id[1]: 1, by_id[2]: 7, by_id[3]: 4})
    pairs = {
        (r["truth"], r["segment_id"])
        for r in renumbered.transform(blobs).select("truth", "segment_id").collect()
    }
    assert pairs == {("big", 1), ("mid", 7), ("small", 4)}
    assert renumbered.sizes == {1: 90, 7: 60, 4: 30}
    assert renumbered.centers_scaled[7] == model.centers_scaled[2]
    before = model.transform(blobs).select("customer_id", "distance")
    after = renumbered.transform(blobs).select("customer_id", "distance")
    assertDataFrameEqual(before, after)
    with pytest.raises(ValueError, match="unique"):
        model.with_segment_ids({by_id[1]: 1, by_id[2]: 1, by_id[3]: 2})


def test_fit_distance_is_euclidean_in_scaled_space(blobs):
    model = estimator(k=3).fit(blobs)
    row = model.transform(blobs).where("customer_id = 'mid0'").first()
    s = model.scaling
    z = [(row["x"] - s.means[0]) / s.stds[0], (row["y"] - s.means[1]) / s.stds[1], 0.0]
    assert s.offset == 0.0
    centre = model.centers_scaled[row["segment_id"]]
    expected = math.sqrt(sum((a - b) ** 2 for a, b in zip(z, centre, strict=True)))
    assert row["distance"] == pytest.approx(expected, rel=1e-9)


def test_zero_variance_feature_scales_to_zero_not_nan(blobs):
    scaling = estimator().fit_scaling(blobs)
    assert scaling.stds[2] == 1.0
    model = estimator(k=3).fit(blobs, scaling=scaling)
    assert all(c[2] == 0.0 for c in model.centers_scaled.values())


def test_saved_pipeline_assigns_the_same_segments(blobs, tmp_path):
    model = estimator(k=3).fit(blobs)
    model.pipeline.save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assertDataFrameEqual(clustering.assign(loaded, blobs), model.transform(blobs))


def test_fit_with_fewer_customers_than_k_is_a_clear_error(blobs):
    with pytest.raises(InputError, match="cannot make 5 segments from 3 customers"):
        estimator(k=5).fit(blobs.limit(3))


def test_fit_scaling_missing_feature_names_config_key(blobs):
    with pytest.raises(InputError, match=r"\['nope'\] \(config key training.features\)"):
        SegmentationKMeans(features=["x", "nope"]).fit_scaling(blobs)


def test_bisecting_kmeans_also_recovers_blobs(blobs):
    # Standard scaling centres the data at the origin, where Spark's bisection cannot split.
    model = estimator(k=3, algorithm="bisecting_kmeans").fit(blobs)
    assert model.scaling.offset == 1.0
    pairs = {(r["truth"], r["segment_id"]) for r in model.transform(blobs).collect()}
    assert pairs == {("big", 1), ("mid", 2), ("small", 3)}


def test_scaling_to_original_inverts_log1p():
    s = Scaling(("m",), ("log1p",), (2.0,), (0.5,))
    z = (math.log1p(100.0) - 2.0) / 0.5
    assert s.to_original([z])[0] == pytest.approx(100.0)


def cand(k, sil, sizes):
    return Candidate(k=k, silhouette=sil, cost=0.0, sizes=sizes, seed=1)


def parsimony(share, tolerance):
    return model_selection.SelectionRule("parsimony", min_segment_share=share, tolerance=tolerance)


def test_choose_prefers_smallest_k_within_tolerance():
    k, reason = model_selection.choose(
        [cand(2, 0.60, (50, 50)), cand(3, 0.70, (40, 30, 30)), cand(4, 0.71, (25,) * 4)],
        parsimony(0.05, 0.02),
    )  # fmt: skip
    assert k == 3
    assert "smallest k" in reason


def test_choose_rejects_k_with_a_tiny_segment():
    k, _ = model_selection.choose(
        [cand(2, 0.50, (50, 50)), cand(3, 0.90, (98, 1, 1))],
        parsimony(0.05, 0.02),
    )  # fmt: skip
    assert k == 2


def test_choose_falls_back_to_best_silhouette_when_no_k_meets_share():
    k, reason = model_selection.choose(
        [cand(2, 0.50, (99, 1)), cand(3, 0.60, (98, 1, 1))], parsimony(0.05, 0.0)
    )
    assert k == 3 and "no k had every segment" in reason


def test_all_constant_features_is_a_clear_error(spark):
    df = spark.createDataFrame(
        [(f"c{i}", 1.0, 2.0) for i in range(5)], "customer_id string, a double, b double"
    )
    with pytest.raises(InputError, match=r"every clustering feature .* has the same value"):
        SegmentationKMeans(features=["a", "b"]).fit_scaling(df)


def test_select_k_with_one_customer_is_a_clear_error(spark):
    df = spark.createDataFrame([("c1", 1.0)], "customer_id string, a double")
    est = SegmentationKMeans(features=["a"], default_transform="none")
    with pytest.raises(InputError, match=r"cannot select k from 1 customer\(s\)"):
        clustering.select_k(
            est, df, k_values=[2, 3], scaling=Scaling(("a",), ("none",), (1.0,), (1.0,)),
            sample_rows=100, rule=model_selection.SelectionRule(min_segment_share=0.0),
        )  # fmt: skip


def test_select_k_skips_k_above_the_number_of_distinct_profiles(spark):
    # 40 customers but only two distinct profiles: any k > 2 leaves a segment empty.
    df = spark.createDataFrame(
        [(f"c{i}", float(i % 2)) for i in range(40)], "customer_id string, a double"
    )
    est = SegmentationKMeans(features=["a"], default_transform="none", seed=1)
    selection = clustering.select_k(
        est, df, k_values=[2, 3, 4], scaling=est.fit_scaling(df), sample_rows=100,
        rule=model_selection.SelectionRule(min_segment_share=0.0),
    )  # fmt: skip
    assert selection.chosen_k == 2


def test_choose_rejects_candidates_with_empty_segments():
    with pytest.raises(InputError, match="fewer distinct feature profiles than k"):
        model_selection.choose([cand(3, 0.9, (10, 0, 5))], parsimony(0.0, 0.0))


@pytest.fixture(scope="module")
def overlapping(spark):
    """Four overlapping Gaussian blobs in 3 features (Lloyd needs several iterations)."""
    rng = random.Random(11)
    centres = [(0, 0, 0), (3, 0, 1), (0, 3, 2), (3, 3, 0)]
    rows = [(f"c{i:04d}", *(m + rng.gauss(0, 1.2) for m in centres[i % 4])) for i in range(2000)]
    return spark.createDataFrame(rows, "customer_id string, a double, b double, c double").cache()


def test_refine_matches_scikit_learn_lloyd_from_the_same_centres(overlapping, tmp_path):
    import numpy as np
    from sklearn.cluster import KMeans

    est = SegmentationKMeans(features=["a", "b", "c"], default_transform="none", max_iter=100)
    scaling = est.fit_scaling(overlapping)
    scaled = (
        scaling.stage().transform(overlapping).orderBy("customer_id")
        .select("customer_id", *scaling.scaled_columns).toPandas()
    )  # fmt: skip
    x = scaled[list(scaling.scaled_columns)].to_numpy()
    init = x[[0, 1, 5, 9]]  # four rows as starting centres: a poor start, many iterations
    model = restarts.refine(overlapping, scaling, init.tolist(), max_iter=100)
    sk = KMeans(n_clusters=4, init=init, n_init=1, algorithm="lloyd", max_iter=100, tol=0.0)
    sk.fit(x)
    assert model.iterations >= 3
    centres, sizes = model.by_cluster()
    assert np.allclose([centres[i] for i in range(4)], sk.cluster_centers_, atol=1e-9)
    assert [sizes[i] for i in range(4)] == np.bincount(sk.labels_, minlength=4).tolist()
    assert model.training_cost == pytest.approx(sk.inertia_, rel=1e-9)
    # The pipeline assigns every row as scikit-learn does, also after a save and load.
    expected = [model.cluster_to_segment[int(c)] for c in sk.labels_]
    model.pipeline.write().save(str(tmp_path / "refined"))
    loaded = PipelineModel.load(str(tmp_path / "refined"))
    for pipeline in (model.pipeline, loaded):
        got = clustering.assign(pipeline, overlapping).orderBy("customer_id")
        assert [r["segment_id"] for r in got.select("segment_id").collect()] == expected
    dist = np.sqrt(((x - sk.cluster_centers_[sk.labels_]) ** 2).sum(axis=1))
    got_dist = [r["distance"] for r in clustering.assign(loaded, overlapping)
                .orderBy("customer_id").select("distance").collect()]  # fmt: skip
    assert np.allclose(got_dist, dist, atol=1e-9)


def test_fit_best_keeps_the_lowest_cost_start(blobs):
    """Two starting centres inside the biggest blob and one between the other two: Lloyd from
    there stays in a worse optimum (one centre for two blobs) than k-means||, so a restart's
    model is kept; from the blobs' own centres the refined fit reaches the same optimum and,
    costs being equal, is kept."""
    from pyspark.ml.feature import SQLTransformer

    est = estimator(k=3)
    scaling = est.fit_scaling(blobs)
    x = scaling.stage().transform(blobs).orderBy("customer_id").select(
        "truth", *scaling.scaled_columns).toPandas()  # fmt: skip
    blob = {t: x[x.truth == t][list(scaling.scaled_columns)].to_numpy() for t in CENTRES}
    between = (blob["mid"].mean(axis=0) + blob["small"].mean(axis=0)) / 2
    poor = [blob["big"][0].tolist(), blob["big"][1].tolist(), between.tolist()]
    stuck = restarts.refine(blobs, scaling, poor, max_iter=est.max_iter)
    kept, seed = restarts.fit_best(est, blobs, k=3, scaling=scaling, seeds=[3, 4],
                                     init_centers=poor)  # fmt: skip
    assert seed in (3, 4) and kept.sizes == {1: 90, 2: 60, 3: 30}
    assert stuck.training_cost > 1.5 * kept.training_cost
    # The kept cost is the within-cluster sum of squares at its final centres.
    centres = kept.centers_scaled
    truth_of = {"big": 1, "mid": 2, "small": 3}
    sse = sum(((blob[t] - centres[s]) ** 2).sum() for t, s in truth_of.items())
    assert kept.training_cost == pytest.approx(sse, rel=1e-9)
    truth = [blob[t].mean(axis=0).tolist() for t in CENTRES]
    kept, seed = restarts.fit_best(est, blobs, k=3, scaling=scaling, seeds=[3, 4],
                                     init_centers=truth)  # fmt: skip
    assert seed is None and isinstance(kept.pipeline.stages[1], SQLTransformer)
    assert kept.training_cost == pytest.approx(sse, rel=1e-9)
    with pytest.raises(ValueError, match="2 centres, not k=3"):
        restarts.fit_best(est, blobs, k=3, scaling=scaling, seeds=[3], init_centers=truth[:2])


def test_refine_stops_after_max_iter_as_scikit_learn_does(overlapping):
    import numpy as np
    from sklearn.cluster import KMeans

    est = SegmentationKMeans(features=["a", "b", "c"], default_transform="none")
    scaling = est.fit_scaling(overlapping)
    x = scaling.stage().transform(overlapping).orderBy("customer_id").select(
        *scaling.scaled_columns).toPandas().to_numpy()  # fmt: skip
    init = x[[0, 1, 5, 9]]
    model = restarts.refine(overlapping, scaling, init.tolist(), max_iter=2)
    sk = KMeans(n_clusters=4, init=init, n_init=1, algorithm="lloyd", max_iter=2, tol=0.0).fit(x)
    centres, sizes = model.by_cluster()
    assert model.iterations == 2
    assert np.allclose([centres[i] for i in range(4)], sk.cluster_centers_, atol=1e-9)
    assert [sizes[i] for i in range(4)] == np.bincount(sk.labels_, minlength=4).tolist()
    assert model.training_cost == pytest.approx(sk.inertia_, rel=1e-9)


def test_refine_keeps_a_centre_without_rows_where_it_is(overlapping):
    """A centre no row is nearest to keeps its place and size 0 (as Spark's KMeans); the other
    three move exactly as scikit-learn's Lloyd with those three."""
    import numpy as np
    from sklearn.cluster import KMeans

    est = SegmentationKMeans(features=["a", "b", "c"], default_transform="none")
    scaling = est.fit_scaling(overlapping)
    x = scaling.stage().transform(overlapping).orderBy("customer_id").select(
        *scaling.scaled_columns).toPandas().to_numpy()  # fmt: skip
    init = x[[0, 1, 5]]
    far = [1e6, 1e6, 1e6]
    model = restarts.refine(overlapping, scaling, [*init.tolist(), far], max_iter=50)
    sk = KMeans(n_clusters=3, init=init, n_init=1, algorithm="lloyd", max_iter=50, tol=0.0).fit(x)
    centres, sizes = model.by_cluster()
    assert centres[3] == far and sizes[3] == 0
    assert np.allclose([centres[i] for i in range(3)], sk.cluster_centers_, atol=1e-9)
    assert model.training_cost == pytest.approx(sk.inertia_, rel=1e-9)


def test_final_fit_on_a_sample_of_every_customer_refines_it_without_restarts(blobs, caplog):
    """The selection sample is every customer (180 < 20,000 rows): its centres are already the
    best of n_init restarts on these rows, so the model is them refined, with no Spark
    restarts; the selection's centres are what the final fit starts from."""
    import logging

    import numpy as np

    from segmentation.config import load_config
    from tests.conftest import ROOT

    tc = load_config(ROOT / "conf" / "local.yaml").training.model_copy(
        update={"features": ("x", "y", "flat"), "default_transform": "none", "k": 3}
    )
    est = training.estimator(tc)
    scaling = est.fit_scaling(blobs)
    selection = training.select_k(tc, training.selection_sample(tc, blobs, scaling))
    assert selection.sample_rows == 180 and len(selection.chosen.centers) == 3
    with caplog.at_level(logging.INFO, logger="segmentation.modeling.restarts"):
        model, seed = training.final_fit(tc, est, blobs, scaling, selection)
    assert seed is None and model.iterations <= 1
    assert "'sample centres'" in caplog.text and "'seed " not in caplog.text
    got = sorted(map(tuple, np.round(list(model.centers_scaled.values()), 9)))
    assert got == sorted(map(tuple, np.round(selection.chosen.centers, 9)))
