"""Clustering as one Spark ``PipelineModel``: scaling, the clusterer, the segment labeller.

The fitted pipeline is plain Spark ML (SQL transformers, a vector assembler and a KMeans or
BisectingKMeans model), so the model registered in MLflow loads anywhere Spark runs and assigns
``segment_id`` and ``distance`` by itself:

1. ``SQLTransformer``: the fitted skew transforms and scaling (``features.scaling``).
2. ``VectorAssembler`` of the scaled columns.
3. ``KMeansModel`` / ``BisectingKMeansModel``; for a k-means fit refined from the selection
   sample's centres (``restarts.refine``), instead of 2-3 one ``SQLTransformer`` that assigns
   the nearest centre (squared Euclidean distance, ties to the lower index, as ``KMeansModel``).
4. ``SQLTransformer``: cluster index -> ``segment_id`` and the Euclidean ``distance`` to the
   segment's centre in the scaled space. A first model numbers its segments by size (1 =
   largest); a retrained model keeps the ids of the champion's matching segments
   (``matching.py``, ``SegmentModel.with_segment_ids``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.sql import DataFrame

from segmentation.errors import InputError
from segmentation.features.scaling import (
    PREFIX,
    Scaling,
    ScalingMethod,
    TransformName,
    fit_scaling,
    sql_double,
)
from segmentation.modeling import model_selection, sample_fit
from segmentation.modeling.model_selection import KSelection
from segmentation.storage.tables import DISTANCE, SEGMENT_ID

FEATURES_VECTOR = f"{PREFIX}features"
"""The scaled feature vector column the clusterer trains on (``SegmentationKMeans.prepare``)."""
_CLUSTER = f"{PREFIX}cluster"

Algorithm = Literal["kmeans", "bisecting_kmeans"]


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
        scaling: ScalingMethod = "standard",
        clip: float | None = None,
    ) -> None:
        """Args:
        features: feature columns to cluster on.
        k: number of segments.
        algorithm: ``kmeans`` (k-means||) or ``bisecting_kmeans``.
        seed: random seed of the clustering; the same seed and data give the same model.
        max_iter: maximum iterations of the clustering.
        transforms: per-feature skew transform (``log1p`` or ``none``).
        default_transform: the transform of features not in ``transforms``.
        scaling: ``robust`` (median and IQR) or ``standard`` (mean and standard deviation).
        clip: scaled values are capped at this many (robust) standard deviations (None: not).
        """
        self.features = tuple(features)
        self.k = k
        self.algorithm = algorithm
        self.seed = seed
        self.max_iter = max_iter
        self.transforms = dict(transforms or {})
        self.default_transform = default_transform
        self.scaling = scaling
        self.clip = clip

    def copy(
        self, *, k: int, seed: int | None = None, features: Sequence[str] | None = None
    ) -> SegmentationKMeans:
        """The same estimator with another ``k`` (and optionally another seed or features)."""
        return SegmentationKMeans(
            features=self.features if features is None else tuple(features),
            k=k,
            algorithm=self.algorithm,
            seed=self.seed if seed is None else seed,
            max_iter=self.max_iter,
            transforms=self.transforms,
            default_transform=self.default_transform,
            scaling=self.scaling,
            clip=self.clip,
        )

    def fit_scaling(self, df: DataFrame) -> Scaling:
        return fit_scaling(
            df,
            self.features,
            transforms=self.transforms,
            default_transform=self.default_transform,
            offset=1.0 if self.algorithm == "bisecting_kmeans" else 0.0,
            method=self.scaling,  # type: ignore[arg-type]
            clip=self.clip,
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
        return segment_model(
            scaling, [assembler, model], [list(map(float, c)) for c in model.clusterCenters()],
            list(model.summary.clusterSizes), iterations=int(model.summary.numIter),
            cost=float(model.summary.trainingCost),
        )  # fmt: skip


def _squared_sql(columns: Sequence[str], center: Sequence[float]) -> str:
    """A row's squared Euclidean distance to ``center`` over ``columns``, as SQL."""
    return " + ".join(
        f"POW(`{c}` - {sql_double(v)}, 2)" for c, v in zip(columns, center, strict=True)
    )


def distances_sql(columns: Sequence[str], centers: Sequence[Sequence[float]]) -> str:
    """``ARRAY(d_0, ..., d_{k-1})``: a row's squared Euclidean distance to every centre (one
    SQL expression, used for training and by the pipeline, so both assign alike)."""
    return "ARRAY(" + ", ".join(f"({_squared_sql(columns, c)})" for c in centers) + ")"


def nearest_stage(scaling: Scaling, centers: Sequence[Sequence[float]]) -> SQLTransformer:
    """The pipeline stage giving each row its nearest centre's index (``_CLUSTER``); the
    distances are computed once per row (a subquery column, dropped by :func:`assign`)."""
    d = f"{PREFIX}squared_distances"
    return SQLTransformer(
        statement=f"SELECT *, CAST(ARRAY_POSITION(`{d}`, ARRAY_MIN(`{d}`)) - 1 AS INT) AS "
        f"`{_CLUSTER}` FROM (SELECT *, {distances_sql(scaling.scaled_columns, centers)} AS "
        f"`{d}` FROM __THIS__)"
    )


def segment_model(
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
    x = sample_fit.sample_matrix(
        scaling.stage().transform(df), scaling.scaled_columns, sample_rows=sample_rows,
        seed=estimator.seed,
    )  # fmt: skip
    return model_selection.select_k(
        x, k_values=k_values, algorithm=estimator.algorithm, seed=estimator.seed, n_init=n_init,
        max_iter=estimator.max_iter, rule=rule,
    )  # fmt: skip
