"""The one select-fit-match sequence every clustered segmentation shares.

k is chosen on a seeded sample on the driver (``model_selection``), the chosen k is fitted on
all rows with Spark (``restarts.fit_best``), and the new segments are matched to the champion's
so ids and names stay stable (``matching``). The behavioural training (``workflows/train``)
and the attitudinal one (``workflows/attitudes``) both call :func:`fit_matched`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import ClusteringConfig, TrainingConfig
from segmentation.features.scaling import Scaling
from segmentation.modeling import champion as champions
from segmentation.modeling import clustering, matching, model_selection, restarts, sample_fit

log = logging.getLogger(__name__)


def estimator(tc: TrainingConfig) -> clustering.SegmentationKMeans:
    """The unfitted estimator ``training.*`` describes (algorithm, seed, transforms)."""
    return clustering.SegmentationKMeans(
        features=tc.features, algorithm=tc.algorithm, seed=tc.seed, max_iter=tc.max_iter,
        transforms=dict(tc.transforms), default_transform=tc.default_transform,
        scaling=tc.scaling, clip=tc.clip,
    )  # fmt: skip


def selection_sample(tc: ClusteringConfig, features: DataFrame, scaling: Scaling) -> np.ndarray:
    """The seeded k-selection sample (``training.selection_sample_rows``), scaled, collected."""
    return sample_fit.sample_matrix(
        scaling.stage().transform(features), scaling.scaled_columns,
        sample_rows=tc.selection_sample_rows, seed=tc.seed,
    )  # fmt: skip


def select_k(tc: ClusteringConfig, sample: np.ndarray) -> model_selection.KSelection:
    """Model selection on the sample with the ``training.*`` k range, restarts and rules."""
    return model_selection.select_k(
        sample, k_values=tc.k_values, algorithm=tc.algorithm, seed=tc.seed, n_init=tc.n_init,
        max_iter=tc.max_iter, rule=selection_rule(tc),
    )  # fmt: skip


def selection_rule(tc: ClusteringConfig) -> model_selection.SelectionRule:
    """The k rule ``training.*`` describes."""
    return model_selection.SelectionRule(
        rule=tc.k_rule, min_segment_share=tc.min_segment_share,
        tolerance=tc.silhouette_tolerance, stable_jaccard=tc.stable_jaccard,
        stability_samples=tc.selection_bootstrap_samples, stability_rows=tc.stability_rows,
    )  # fmt: skip


def final_fit(
    tc: ClusteringConfig,
    est: clustering.SegmentationKMeans,
    features: DataFrame,
    scaling: Scaling,
    selection: model_selection.KSelection,
) -> tuple[clustering.SegmentModel, int | None]:
    """The chosen k fitted on all customers with Spark: k-means from the selection sample's
    centres of the chosen k (the solution whose silhouette and stability chose it) and
    ``training.n_init`` seeded restarts (seeds ``seed, seed + 1, ...``); the lowest cost is
    kept (ties: the sample's centres, then the earliest seed). The seed is None when the
    sample's centres won.

    When the selection sample is every customer, its centres are already the best of
    ``n_init`` restarts on these very rows, so the Spark restarts are skipped (the sample's
    centres refined on all rows, typically one iteration, is the model)."""
    seeds = list(range(tc.seed, tc.seed + max(1, tc.n_init)))
    if (
        selection.chosen.centers
        and tc.algorithm == "kmeans"
        and (selection.sample_rows >= features.count())
    ):
        seeds = []
    return restarts.fit_best(
        est, features, k=selection.chosen_k, scaling=scaling, seeds=seeds,
        init_centers=selection.chosen.centers or None,
    )  # fmt: skip


@dataclass(frozen=True)
class Matched:
    """:func:`fit_matched`'s result: the chosen k, the model numbered like the champion."""

    sample: np.ndarray
    selection: model_selection.KSelection
    model: clustering.SegmentModel
    """With the segment ids of ``matched`` (``SegmentModel.with_segment_ids``)."""
    final_seed: int | None
    """The kept restart's seed; None: the selection sample's centres refined."""
    matched: matching.Matching
    assigned: DataFrame
    """``model.transform(data)``, cached (the caller unpersists it)."""


def fit_matched(
    cc: ClusteringConfig,
    est: clustering.SegmentationKMeans,
    data: DataFrame,
    scaling: Scaling,
    champion: champions.Champion | None,
    previous_members: DataFrame | None = None,
) -> Matched:
    """k chosen on the selection sample, the final fit on all rows of ``data``, the segments
    matched to the champion's (stable ids, ``matching.match_segments``), every row assigned.

    ``previous_members``: the champion's membership (``customer_id``, ``segment_id``) when
    published: a new segment inherits an id only when its members overlap the old segment's
    (``training.match_min_jaccard``); without it their shares must agree as much.
    The one sequence behavioural (``fit``) and attitudinal training share.
    """
    sample = selection_sample(cc, data, scaling)
    selection = select_k(cc, sample)
    log.info("model selection: %s", selection.reason)
    model, final_seed = final_fit(cc, est, data, scaling, selection)
    centers, sizes = model.by_cluster()
    overlap = None
    if champion is not None and previous_members is not None:
        overlap = member_overlap(model, data, previous_members)
    matched = matching.match_segments(
        scaling=model.scaling, new_centers_scaled=centers, new_sizes=sizes,
        previous=champion.segments if champion else (),
        previous_max_id=champion.max_segment_id if champion else 0,
        max_distance=cc.match_max_distance, min_agreement=cc.match_min_jaccard, overlap=overlap,
    )  # fmt: skip
    model = model.with_segment_ids(matched.cluster_to_segment)
    assigned = model.transform(data).cache()
    return Matched(sample, selection, model, final_seed, matched, assigned)


def member_overlap(
    model: clustering.SegmentModel, data: DataFrame, previous_members: DataFrame
) -> matching.Overlap:
    """Customers each new cluster shares with each previous segment, and the previous
    segments' sizes (one join and two small aggregations)."""
    to_cluster = F.create_map(*[x for c, s in model.cluster_to_segment.items()
                                for x in (F.lit(s), F.lit(c))])  # fmt: skip
    new = model.transform(data).select(
        "customer_id", F.element_at(to_cluster, F.col("segment_id")).alias("cluster")
    )
    old = previous_members.select("customer_id", F.col("segment_id").alias("previous"))
    both = {
        (int(r["cluster"]), int(r["previous"])): int(r["count"])
        for r in new.join(old, "customer_id").groupBy("cluster", "previous").count().collect()
    }
    sizes = {int(r["previous"]): int(r["count"]) for r in old.groupBy("previous").count().collect()}
    return matching.Overlap(both, sizes)
