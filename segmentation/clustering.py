"""Skew handling, scaling and clustering as one Spark ``PipelineModel``.

The fitted pipeline is plain Spark ML (SQL transformers, a vector assembler and a KMeans or
BisectingKMeans model), so the model registered in MLflow loads anywhere Spark runs and assigns
``segment_id`` and ``distance`` by itself:

1. ``SQLTransformer``: per feature, optional signed ``log1p``, then standard scaling with the
   means and standard deviations of the training data (nulls become the mean).
2. ``VectorAssembler`` of the scaled columns.
3. ``KMeansModel`` / ``BisectingKMeansModel``; for a k-means fit refined from the selection
   sample's centres (:func:`refine`), instead of 2-3 one ``SQLTransformer`` that assigns the
   nearest centre (squared Euclidean distance, ties to the lower index, as ``KMeansModel``).
4. ``SQLTransformer``: cluster index -> ``segment_id`` and the Euclidean ``distance`` to the
   segment's centre in the scaled space. A first model numbers its segments by size (1 =
   largest); a retrained model keeps the ids of the champion's matching segments
   (``matching.py``, ``SegmentModel.with_segment_ids``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation import model_selection
from segmentation.errors import InputError
from segmentation.model_selection import KSelection

log = logging.getLogger(__name__)

SEGMENT_ID = "segment_id"
DISTANCE = "distance"
_PREFIX = "seg__"
FEATURES_VECTOR = f"{_PREFIX}features"
"""The scaled feature vector column the clusterer trains on (``SegmentationKMeans.prepare``)."""
_CLUSTER = f"{_PREFIX}cluster"
_STD_FLOOR = 1e-12

Algorithm = Literal["kmeans", "bisecting_kmeans"]
TransformName = Literal["log1p", "none"]


def _sql_double(value: float) -> str:
    return f"CAST('{value!r}' AS DOUBLE)"


def _transformed_sql(feature: str, transform: str) -> str:
    x = f"CAST(`{feature}` AS DOUBLE)"
    return f"(SIGN({x}) * LN(1 + ABS({x})))" if transform == "log1p" else x


@dataclass(frozen=True)
class Scaling:
    """Fitted skew transforms and standard scaling for the clustering features."""

    features: tuple[str, ...]
    transforms: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    # Added to every scaled value. Spark's BisectingKMeans splits a cluster by perturbing its
    # centre by 1e-4 * norm(centre): a root cluster centred exactly at the origin (which is
    # where standard scaling puts it) can never split. Distances do not change with a shift.
    offset: float = 0.0

    @property
    def scaled_columns(self) -> list[str]:
        return [f"{_PREFIX}z_{i}" for i in range(len(self.features))]

    def stage(self) -> SQLTransformer:
        """The SQL stage that adds the scaled columns."""
        parts = []
        for feature, transform, mean, std, out in zip(
            self.features, self.transforms, self.means, self.stds, self.scaled_columns, strict=True
        ):
            value = _transformed_sql(feature, transform)
            parts.append(
                f"COALESCE(({value} - {_sql_double(mean)}) / {_sql_double(std)}, 0D)"
                f" + {_sql_double(self.offset)} AS `{out}`"
            )
        return SQLTransformer(statement=f"SELECT *, {', '.join(parts)} FROM __THIS__")

    def to_original(self, scaled: Sequence[float]) -> list[float]:
        """Map a point of the scaled space back to the features' original units."""
        values = []
        for z, transform, mean, std in zip(
            scaled, self.transforms, self.means, self.stds, strict=True
        ):
            t = (z - self.offset) * std + mean
            values.append(math.copysign(math.expm1(abs(t)), t) if transform == "log1p" else t)
        return values


def fit_scaling(
    df: DataFrame,
    features: Sequence[str],
    *,
    transforms: Mapping[str, str] | None = None,
    default_transform: str = "log1p",
    offset: float = 0.0,
) -> Scaling:
    """Means and standard deviations of the transformed features, in one pass over ``df``.

    A feature with zero variance gets standard deviation 1 (its scaled value is 0 everywhere),
    so it cannot produce NaN; it simply has no influence on the clustering.
    """
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise InputError(
            f"clustering feature(s) {missing} (config key training.features) are not columns of "
            f"customer_features; available: {', '.join(sorted(df.columns))}"
        )
    chosen = tuple((transforms or {}).get(f, default_transform) for f in features)
    exprs = []
    for i, (feature, transform) in enumerate(zip(features, chosen, strict=True)):
        value = F.expr(_transformed_sql(feature, transform))
        exprs += [F.avg(value).alias(f"m{i}"), F.stddev_pop(value).alias(f"s{i}")]
    row = df.agg(*exprs).first()
    if row is None or row["m0"] is None:
        raise InputError("cannot fit scaling: customer_features has no rows")
    means = tuple(float(row[f"m{i}"]) for i in range(len(features)))
    constant = [f for i, f in enumerate(features) if not row[f"s{i}"] or row[f"s{i}"] <= _STD_FLOOR]
    if len(constant) == len(features):
        raise InputError(
            f"every clustering feature ({', '.join(features)}) has the same value for all "
            "customers: there is nothing to segment (check the input, features.as_of and "
            "training.features)"
        )
    for feature in constant:
        log.warning("feature %s has zero variance: it cannot influence the segments", feature)
    stds = tuple(
        1.0 if features[i] in constant else float(row[f"s{i}"]) for i in range(len(features))
    )
    return Scaling(tuple(features), chosen, means, stds, offset)


@dataclass
class SegmentModel:
    """A fitted segmentation: the Spark pipeline plus what explains it."""

    pipeline: PipelineModel
    scaling: Scaling
    k: int
    cluster_to_segment: dict[int, int]
    centers_scaled: dict[int, list[float]] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    iterations: int = 0
    """Iterations the clusterer ran."""
    training_cost: float = math.nan
    """Sum of squared distances to the centres (scaled space) on the rows it was fitted on
    (Spark's ``trainingCost`` for a plain fit; :func:`fit_best` measures k-means fits at their
    final centres)."""

    def transform(self, df: DataFrame) -> DataFrame:
        """``df`` plus ``segment_id`` (INT) and ``distance`` (DOUBLE)."""
        return assign(self.pipeline, df)

    def centers_original(self) -> dict[int, list[float]]:
        """Segment centres in the features' original units, keyed by segment id."""
        return {s: self.scaling.to_original(c) for s, c in self.centers_scaled.items()}

    def by_cluster(self) -> tuple[dict[int, list[float]], dict[int, int]]:
        """Centres (scaled) and sizes keyed by the clusterer's own cluster index."""
        return (
            {c: self.centers_scaled[s] for c, s in self.cluster_to_segment.items()},
            {c: self.sizes.get(s, 0) for c, s in self.cluster_to_segment.items()},
        )

    def with_segment_ids(self, cluster_to_segment: Mapping[int, int]) -> SegmentModel:
        """The same model numbering its segments differently (e.g. ids kept from a retrain)."""
        if sorted(cluster_to_segment) != sorted(self.cluster_to_segment):
            raise ValueError("cluster_to_segment must cover exactly the model's clusters")
        if len(set(cluster_to_segment.values())) != len(cluster_to_segment):
            raise ValueError("segment ids must be unique")
        centers, sizes = self.by_cluster()
        labeller = _labeller(
            self.scaling, [centers[c] for c in sorted(centers)], cluster_to_segment
        )
        return SegmentModel(
            pipeline=PipelineModel(stages=[*self.pipeline.stages[:-1], labeller]),
            scaling=self.scaling,
            k=self.k,
            cluster_to_segment=dict(cluster_to_segment),
            centers_scaled={cluster_to_segment[c]: v for c, v in centers.items()},
            sizes={cluster_to_segment[c]: n for c, n in sizes.items()},
            iterations=self.iterations,
            training_cost=self.training_cost,
        )


def assign(pipeline: Transformer, df: DataFrame) -> DataFrame:
    """Apply a fitted segmentation pipeline (also one loaded from MLflow) to ``df``."""
    out = pipeline.transform(df)
    return out.select(*df.columns, SEGMENT_ID, DISTANCE)


class SegmentationKMeans:
    """Unfitted estimator: skew transform, scaling and (bisecting) KMeans with a fixed ``k``.

    ``fit`` returns a separate ``SegmentModel``, as ``pyspark.ml`` estimators do.
    """

    def __init__(
        self,
        *,
        features: Sequence[str],
        k: int = 2,
        algorithm: Algorithm = "kmeans",
        seed: int = 42,
        max_iter: int = 40,
        transforms: Mapping[str, str] | None = None,
        default_transform: TransformName = "log1p",
    ) -> None:
        """Args:
        features: feature columns to cluster on.
        k: number of segments.
        algorithm: ``kmeans`` (k-means||) or ``bisecting_kmeans``.
        seed: random seed of the clustering; the same seed and data give the same model.
        max_iter: maximum iterations of the clustering.
        transforms: per-feature skew transform (``log1p`` or ``none``).
        default_transform: the transform of features not in ``transforms``.
        """
        self.features = tuple(features)
        self.k = k
        self.algorithm = algorithm
        self.seed = seed
        self.max_iter = max_iter
        self.transforms = dict(transforms or {})
        self.default_transform = default_transform

    def copy(self, *, k: int, seed: int | None = None) -> SegmentationKMeans:
        """The same estimator with another ``k`` (and optionally another seed)."""
        return SegmentationKMeans(
            features=self.features,
            k=k,
            algorithm=self.algorithm,
            seed=self.seed if seed is None else seed,
            max_iter=self.max_iter,
            transforms=self.transforms,
            default_transform=self.default_transform,
        )

    def fit_scaling(self, df: DataFrame) -> Scaling:
        return fit_scaling(
            df,
            self.features,
            transforms=self.transforms,
            default_transform=self.default_transform,
            offset=1.0 if self.algorithm == "bisecting_kmeans" else 0.0,
        )

    def clusterer(self) -> KMeans | BisectingKMeans:
        """The unfitted Spark clustering estimator on the scaled feature vector."""
        if self.algorithm == "bisecting_kmeans":
            return BisectingKMeans(
                k=self.k,
                seed=self.seed,
                maxIter=self.max_iter,
                featuresCol=FEATURES_VECTOR,
                predictionCol=_CLUSTER,
            )
        return KMeans(
            k=self.k,
            seed=self.seed,
            maxIter=self.max_iter,
            featuresCol=FEATURES_VECTOR,
            predictionCol=_CLUSTER,
        )

    def prepare(self, df: DataFrame, scaling: Scaling) -> DataFrame:
        """``df`` with the scaled feature vector the clusterer trains on."""
        assembler = VectorAssembler(inputCols=scaling.scaled_columns, outputCol=FEATURES_VECTOR)
        return assembler.transform(scaling.stage().transform(df))

    def fit(self, df: DataFrame, *, scaling: Scaling | None = None) -> SegmentModel:
        """Fit on every row of ``df`` (cache it first: clustering iterates over it).

        Args:
            df: customer features.
            scaling: an already fitted scaling (from model selection); fitted here if None.
        """
        scaling = scaling or self.fit_scaling(df)
        prepared = self.prepare(df, scaling)
        n_rows = prepared.count()
        if n_rows < self.k:
            raise InputError(
                f"cannot make {self.k} segments from {n_rows} customers: lower training.k_min / "
                "k_max or provide more customers"
            )
        model = self.clusterer().fit(prepared)
        assembler = VectorAssembler(inputCols=scaling.scaled_columns, outputCol=FEATURES_VECTOR)
        return _segment_model(
            scaling, [assembler, model], [list(map(float, c)) for c in model.clusterCenters()],
            list(model.summary.clusterSizes), iterations=int(model.summary.numIter),
            cost=float(model.summary.trainingCost),
        )  # fmt: skip


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
    # Costs within 1e-9 (relative) are ties: the same optimum reached from two starts differs
    # only in the last bits of its sums, which may vary with task order between runs.
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
    return _segment_model(
        scaling, [_nearest(scaling, centers)], centers, counts, iterations=iterations,
        cost=cost,
    )  # fmt: skip


def _squared_sql(columns: Sequence[str], center: Sequence[float]) -> str:
    """A row's squared Euclidean distance to ``center`` over ``columns``, as SQL."""
    return " + ".join(
        f"POW(`{c}` - {_sql_double(v)}, 2)" for c, v in zip(columns, center, strict=True)
    )


def _distances_sql(columns: Sequence[str], centers: Sequence[Sequence[float]]) -> str:
    """``ARRAY(d_0, ..., d_{k-1})``: a row's squared Euclidean distance to every centre (one
    SQL expression, used for training and by the pipeline, so both assign alike)."""
    return "ARRAY(" + ", ".join(f"({_squared_sql(columns, c)})" for c in centers) + ")"


def _lloyd_step(
    scaled: DataFrame, columns: Sequence[str], centers: Sequence[Sequence[float]]
) -> tuple[list[int], list[list[float]], float]:
    """One assignment over ``scaled``: rows, per-column sums and the summed squared distance
    by nearest centre (one aggregation, k rows back)."""
    d = F.expr(_distances_sql(columns, centers))
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


def _nearest(scaling: Scaling, centers: Sequence[Sequence[float]]) -> SQLTransformer:
    """The pipeline stage giving each row its nearest centre's index (``_CLUSTER``); the
    distances are computed once per row (a subquery column, dropped by :func:`assign`)."""
    d = f"{_PREFIX}squared_distances"
    return SQLTransformer(
        statement=f"SELECT *, CAST(ARRAY_POSITION(`{d}`, ARRAY_MIN(`{d}`)) - 1 AS INT) AS "
        f"`{_CLUSTER}` FROM (SELECT *, {_distances_sql(scaling.scaled_columns, centers)} AS "
        f"`{d}` FROM __THIS__)"
    )


def _segment_model(
    scaling: Scaling,
    stages: Sequence[Transformer],
    centers: Sequence[Sequence[float]],
    sizes: Sequence[int],
    *,
    iterations: int,
    cost: float,
) -> SegmentModel:
    """The pipeline (scaling, ``stages`` giving the cluster index, the labeller); segment ids
    1 for the largest cluster, then by size (ties by cluster index)."""
    order = sorted(range(len(centers)), key=lambda i: (-sizes[i], i))
    cluster_to_segment = {cluster: rank + 1 for rank, cluster in enumerate(order)}
    labeller = _labeller(scaling, centers, cluster_to_segment)
    return SegmentModel(
        pipeline=PipelineModel(stages=[scaling.stage(), *stages, labeller]),
        scaling=scaling,
        k=len(centers),
        cluster_to_segment=cluster_to_segment,
        centers_scaled={cluster_to_segment[i]: list(c) for i, c in enumerate(centers)},
        sizes={cluster_to_segment[i]: int(s) for i, s in enumerate(sizes)},
        iterations=iterations,
        training_cost=cost,
    )


def _labeller(
    scaling: Scaling, centers: Sequence[Sequence[float]], cluster_to_segment: Mapping[int, int]
) -> SQLTransformer:
    ids = " ".join(f"WHEN {c} THEN {s}" for c, s in sorted(cluster_to_segment.items()))
    squared = [
        f"WHEN {cluster} THEN {_squared_sql(scaling.scaled_columns, center)}"
        for cluster, center in enumerate(centers)
    ]
    return SQLTransformer(
        statement=(
            f"SELECT *, CAST(CASE `{_CLUSTER}` {ids} END AS INT) AS `{SEGMENT_ID}`, "
            f"SQRT(CASE `{_CLUSTER}` {' '.join(squared)} END) AS `{DISTANCE}` FROM __THIS__"
        )
    )


def select_k(
    estimator: SegmentationKMeans,
    df: DataFrame,
    *,
    k_values: Sequence[int],
    scaling: Scaling,
    sample_rows: int,
    rule: model_selection.SelectionRule,
    n_init: int = 1,
) -> KSelection:
    """Choose k on a seeded sample of ``df``, fitted on the driver (``model_selection``).

    The sample (about ``sample_rows`` customers, seeded with the estimator's seed) is scaled
    with ``scaling`` and collected once; every k in ``k_values`` is fitted ``n_init`` times and
    judged by ``rule`` (``model_selection.select_k``).
    """
    x = model_selection.sample_matrix(
        scaling.stage().transform(df), scaling.scaled_columns, sample_rows=sample_rows,
        seed=estimator.seed,
    )  # fmt: skip
    return model_selection.select_k(
        x, k_values=k_values, algorithm=estimator.algorithm, seed=estimator.seed, n_init=n_init,
        max_iter=estimator.max_iter, rule=rule,
    )  # fmt: skip
