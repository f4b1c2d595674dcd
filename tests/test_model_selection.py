"""Model selection on the driver: the squared-Euclidean silhouette against two independent
implementations (scikit-learn's and Spark's ClusteringEvaluator), restarts, and the k rule."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.linalg import Vectors
from sklearn.metrics import silhouette_score

from segmentation.errors import InputError
from segmentation.modeling import model_selection as ms
from segmentation.modeling import sample_fit


def blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, 0.5, (60, 3)) for c in (0.0, 4.0, 9.0)])


def test_silhouette_equals_scikit_learn_sqeuclidean_with_a_singleton_cluster():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (40, 4))
    labels = np.array([0] * 25 + [1] * 14 + [2])
    assert ms.silhouette(x, labels) == pytest.approx(
        silhouette_score(x, labels, metric="sqeuclidean"), abs=1e-12
    )


def test_silhouette_equals_spark_clustering_evaluator(spark):
    x = blobs()
    labels = sample_fit.fit(x, 3, algorithm="kmeans", seeds=[1], max_iter=40).labels
    df = spark.createDataFrame(
        [(Vectors.dense(row.tolist()), int(lab)) for row, lab in zip(x, labels, strict=True)],
        ["features", "prediction"],
    )
    spark_value = ClusteringEvaluator(metricName="silhouette").evaluate(df)
    assert ms.silhouette(x, labels) == pytest.approx(spark_value, abs=1e-9)


def test_silhouette_of_one_cluster_is_minus_one():
    assert ms.silhouette(blobs(), np.zeros(180, dtype=int)) == -1.0


def test_fit_keeps_the_lowest_inertia_over_seeds():
    x = blobs(1)
    single = [sample_fit.fit(x, 5, algorithm="kmeans", seeds=[s], max_iter=40) for s in range(6)]
    best = sample_fit.fit(x, 5, algorithm="kmeans", seeds=range(6), max_iter=40)
    assert best.inertia == min(f.inertia for f in single)
    assert best.seed == min(single, key=lambda f: (f.inertia, f.seed)).seed
    assert sum(best.sizes) == 180


def test_select_k_recovers_three_blobs_and_says_why():
    selection = ms.select_k(
        blobs(), k_values=range(2, 7), algorithm="kmeans", seed=3, n_init=2, max_iter=40,
        rule=ms.SelectionRule(min_segment_share=0.05),
    )  # fmt: skip
    assert selection.chosen_k == 3
    assert [c.k for c in selection.candidates] == [2, 3, 4, 5, 6]
    assert max(selection.candidates, key=lambda c: c.silhouette).k == 3
    assert selection.reason.startswith("k=3: best mean rank of silhouette")
    assert selection.chosen.worst_jaccard > 0.97


def test_select_k_bisecting_also_recovers_three_blobs():
    selection = ms.select_k(
        blobs(2), k_values=range(2, 6), algorithm="bisecting_kmeans", seed=3, n_init=1,
        max_iter=40, rule=ms.SelectionRule(min_segment_share=0.05),
    )  # fmt: skip
    assert selection.chosen_k == 3


def test_select_k_with_a_sample_smaller_than_every_k_is_a_clear_error():
    with pytest.raises(InputError, match=r"only 3 customers in the selection sample"):
        ms.select_k(blobs()[:3], k_values=[3, 4], algorithm="kmeans", seed=1, n_init=1,
                    max_iter=10, rule=ms.SelectionRule())  # fmt: skip


def cand(k, sil, ch, worst, sizes=(50, 50)):
    return ms.Candidate(k, sil, 0.0, sizes, 1, ch, worst)


def test_balanced_rule_needs_stable_segments_and_ranks_silhouette_with_calinski_harabasz():
    candidates = [
        cand(4, 0.614, 3600.0, 0.99),
        cand(5, 0.648, 4200.0, 0.99),
        cand(6, 0.664, 4700.0, 0.98),  # the planted k: best on both
        cand(7, 0.646, 4300.0, 0.60),  # splits a real segment: unstable
    ]
    k, reason = ms.choose(candidates, ms.SelectionRule())
    assert k == 6 and "among the 3 k whose every segment is stable" in reason
    # The former parsimony rule takes the smallest k within 0.03 of the best silhouette: 5.
    assert ms.choose(candidates, ms.SelectionRule("parsimony"))[0] == 5


def test_balanced_rule_ties_go_to_the_smaller_k():
    candidates = [cand(5, 0.52, 2800.0, 0.95), cand(6, 0.51, 2810.0, 0.98)]
    assert ms.choose(candidates, ms.SelectionRule())[0] == 5


def test_granular_rule_takes_the_largest_stable_k():
    candidates = [cand(3, 0.7, 10.0, 0.9), cand(5, 0.5, 9.0, 0.8), cand(6, 0.6, 8.0, 0.7)]
    k, reason = ms.choose(candidates, ms.SelectionRule("granular"))
    assert k == 5 and reason.startswith("k=5: the most granular")


def test_without_any_stable_k_the_most_stable_is_taken_and_the_reason_warns():
    candidates = [cand(3, 0.3, 10.0, 0.55), cand(4, 0.35, 12.0, 0.61)]
    k, reason = ms.choose(candidates, ms.SelectionRule())
    assert k == 4 and "no k had every segment stable" in reason


def test_select_k_measures_stability_on_structureless_data():
    x = np.random.default_rng(4).normal(0, 1, (800, 4))
    selection = ms.select_k(x, k_values=[3, 4], algorithm="kmeans", seed=1, n_init=1,
                            max_iter=20, rule=ms.SelectionRule(stability_samples=5))  # fmt: skip
    assert all(c.worst_jaccard is not None and c.worst_jaccard < 0.75
               for c in selection.candidates)  # fmt: skip
    assert "no k had every segment stable" in selection.reason
