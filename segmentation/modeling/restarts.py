"""The final fit on all customers: seeded k-means restarts against Lloyd's iterations from
the selection sample's centres, the lowest cost kept.

Spark ML's ``KMeans`` cannot start from given centres (it offers random and k-means|| starts
only), so :func:`refine` runs Lloyd's iterations as Spark SQL aggregations; the resulting model
assigns with the same nearest-centre SQL as training (``clustering.nearest_stage``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.features.scaling import Scaling
from segmentation.modeling.clustering import (
    SegmentationKMeans,
    SegmentModel,
    distances_sql,
    nearest_stage,
    segment_model,
)

log = logging.getLogger(__name__)


def fit_best(
    estimator: SegmentationKMeans,
    df: DataFrame,
    *,
    k: int,
    scaling: Scaling,
    seeds: Sequence[int],
    init_centers: Sequence[Sequence[float]] | None = None,
) -> tuple[SegmentModel, int | None]:
    """Fit ``k`` segments on every row: one fit per seed and, given ``init_centers`` (the
    selection sample's centres, k-means only), Lloyd's iterations from them (:func:`refine`);
    the lowest-cost model is kept.

    One k-means run can stop in a poor local optimum, on all rows as on a sample, and the
    seed that won on the sample need not win on all rows (measured: at 200k customers the
    sample's winner alone reached ARI 0.80 against scikit-learn's labelling; at 1M customers
    all three k-means|| restarts merged planted segments at 44% more cost than the sample's
    centres refined). For k-means every fit's cost is the sum of squared distances of the rows
    to its final centres, measured alike (Spark's ``trainingCost`` is that of the last
    assignment, before the last centre update). The fits run concurrently (each is seeded, so
    the result does not depend on their order). Equal costs (within 1e-9 relative) keep the
    refined fit, then the earliest seed. Returns the model and its seed (None: the refined fit).

    Raises:
        ValueError: ``init_centers`` does not have ``k`` centres.
    """
    if init_centers is not None and len(init_centers) != k:
        raise ValueError(f"init_centers has {len(init_centers)} centres, not k={k}")
    kmeans = estimator.algorithm == "kmeans"
    columns = list(scaling.scaled_columns)
    scaled = scaling.stage().transform(df).select(*columns).cache() if kmeans else None

    def fit(seed: int | None) -> tuple[int | None, SegmentModel]:
        if seed is None:
            assert scaled is not None and init_centers is not None
            return None, _refine_scaled(scaled, scaling, init_centers, estimator.max_iter)
        model = estimator.copy(k=k, seed=seed).fit(df, scaling=scaling)
        if scaled is not None:
            centers = [model.centers_scaled[model.cluster_to_segment[i]] for i in range(k)]
            model = dataclasses.replace(
                model, training_cost=_lloyd_step(scaled, columns, centers)[2]
            )
        return seed, model

    starts: list[int | None] = [None] if kmeans and init_centers is not None else []
    starts += list(seeds)
    parallel = max(1, min(len(starts), df.sparkSession.sparkContext.defaultParallelism))
    try:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            fits = list(pool.map(fit, starts))
    finally:
        if scaled is not None:
            scaled.unpersist()
    return _lowest_cost(fits)


def _lowest_cost(
    fits: Sequence[tuple[int | None, SegmentModel]],
) -> tuple[SegmentModel, int | None]:
    """The first fit whose cost is the lowest. Costs within 1e-9 (relative) are ties: the same
    optimum reached from two starts differs only in the last bits of its sums, which may vary
    with task order between runs."""
    lowest = min(m.training_cost for _, m in fits)
    best = next(i for i, (_, m) in enumerate(fits)
                if m.training_cost <= lowest + 1e-9 * abs(lowest))  # fmt: skip
    log.info(
        "final fit: cost by start %s; kept %s",
        {"sample centres" if s is None else f"seed {s}": round(m.training_cost, 6)
         for s, m in fits},
        "the sample centres" if fits[best][0] is None else f"seed {fits[best][0]}",
    )  # fmt: skip
    return fits[best][1], fits[best][0]


def final_start(seed: int | None) -> int | str:
    """How :func:`fit_best`'s kept model started, as a run parameter: its seed, or
    ``sample_centres``."""
    return "sample_centres" if seed is None else seed


TOLERANCE = 1e-4
"""Convergence of :func:`refine`: every centre moved at most this far (Spark ML's ``tol``)."""


def refine(
    df: DataFrame,
    scaling: Scaling,
    init_centers: Sequence[Sequence[float]],
    *,
    max_iter: int,
    tol: float = TOLERANCE,
) -> SegmentModel:
    """k-means on every row of ``df`` started from ``init_centers`` (Lloyd's algorithm,
    Lloyd 1982; starting from a sample's solution: Bradley & Fayyad 1998), in Spark SQL.

    Each iteration is one aggregation over the scaled rows (cached here): every row goes to
    its nearest centre (squared Euclidean distance, ties to the lower index), each centre
    moves to its rows' mean; a centre without rows stays where it is (as in Spark's
    KMeans). It stops when no centre moved more than ``tol`` or after ``max_iter``
    iterations. Spark ML's ``KMeans`` cannot start from given centres (it only offers
    random and k-means|| starts), hence this.

    Args:
        df: customer features (every row is clustered).
        scaling: the fitted scaling; init_centers: k centres in its scaled space.
    Returns: the model; its ``training_cost`` is the sum of squared distances of the rows to
        the final centres, ``sizes`` the rows per centre.
    """
    scaled = scaling.stage().transform(df).select(*scaling.scaled_columns).cache()
    try:
        return _refine_scaled(scaled, scaling, init_centers, max_iter, tol)
    finally:
        scaled.unpersist()


def _refine_scaled(
    scaled: DataFrame,
    scaling: Scaling,
    init_centers: Sequence[Sequence[float]],
    max_iter: int,
    tol: float = TOLERANCE,
) -> SegmentModel:
    """:func:`refine` on the already scaled (and cached) rows."""
    columns = list(scaling.scaled_columns)
    centers = [list(map(float, c)) for c in init_centers]
    iterations = 0
    while True:
        counts, sums, cost = _lloyd_step(scaled, columns, centers)
        if iterations == max_iter:
            break
        iterations += 1
        moved = 0.0
        for i, n in enumerate(counts):
            if n:
                new = [v / n for v in sums[i]]
                moved = max(moved, math.dist(new, centers[i]))
                centers[i] = new
        if moved <= tol:
            counts, sums, cost = _lloyd_step(scaled, columns, centers)
            break
    return segment_model(
        scaling, [nearest_stage(scaling, centers)], centers, counts, iterations=iterations,
        cost=cost,
    )  # fmt: skip


def _lloyd_step(
    scaled: DataFrame, columns: Sequence[str], centers: Sequence[Sequence[float]]
) -> tuple[list[int], list[list[float]], float]:
    """One assignment over ``scaled``: rows, per-column sums and the summed squared distance
    by nearest centre (one aggregation, k rows back)."""
    d = F.expr(distances_sql(columns, centers))
    nearest = (F.array_position(d, F.array_min(d)) - 1).cast("int")
    sums_by_column = [F.sum(c).alias(f"s{i}") for i, c in enumerate(columns)]
    rows = (
        scaled.select(nearest.alias("c"), F.array_min(d).alias("d"), *columns)
        .groupBy("c")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("d").alias("d"), *sums_by_column)
        .collect()
    )
    counts, sums = [0] * len(centers), [[0.0] * len(columns) for _ in centers]
    for r in rows:
        counts[r["c"]] = int(r["n"])
        sums[r["c"]] = [float(r[f"s{i}"]) for i in range(len(columns))]
    return counts, sums, float(sum(r["d"] for r in rows))
