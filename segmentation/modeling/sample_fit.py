"""k-means fits on the driver-side sample: the seeded sample itself, the best of several
restarts (scikit-learn), and the nearest-centre labelling.

The selection sample is small by design (``training.selection_sample_rows``), so it is collected
once as a matrix of the scaled features; model selection (``model_selection``) and validation
(``validation``) refit on it in milliseconds.

Imports: numpy, scikit-learn, pyspark and ``segmentation.errors`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame

from segmentation.errors import InputError


@dataclass(frozen=True)
class Fit:
    """One k-means fit on the sample: labels 0..k-1, centres, inertia and its seed."""

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    seed: int

    @property
    def sizes(self) -> tuple[int, ...]:
        k = len(self.centers)
        return tuple(int(n) for n in np.bincount(self.labels, minlength=k))


def sample_matrix(
    prepared: DataFrame, columns: Sequence[str], *, sample_rows: int, seed: int
) -> np.ndarray:
    """A seeded sample of at most about ``sample_rows`` rows of ``columns``, as a float matrix.

    Args:
        prepared: customers with the scaled feature columns (``Scaling.stage`` applied).
        columns: the scaled columns, in the model's feature order.
        sample_rows: the sample's target size (Spark's Bernoulli sample: about this many).
        seed: the sample's seed (the same seed and data give the same sample).

    Raises:
        InputError: fewer than 2 customers.
    """
    total = prepared.count()
    if total < 2:
        raise InputError(f"cannot select k from {total} customer(s): at least 2 are needed")
    fraction = min(1.0, sample_rows / total)
    sample = prepared.select(*columns)
    if fraction < 1.0:
        sample = sample.sample(withReplacement=False, fraction=fraction, seed=seed)
    rows = sample.collect()
    return np.array([[float(v) for v in r] for r in rows], dtype=np.float64).reshape(
        len(rows), len(columns)
    )


def fit(x: np.ndarray, k: int, *, algorithm: str, seeds: Sequence[int], max_iter: int) -> Fit:
    """The lowest-inertia fit of ``k`` clusters over ``seeds`` (ties: the earliest seed)."""
    from sklearn.cluster import BisectingKMeans, KMeans

    best: Fit | None = None
    for seed in seeds:
        if algorithm == "bisecting_kmeans":
            model = BisectingKMeans(n_clusters=k, random_state=seed, max_iter=max_iter)
        else:
            model = KMeans(
                n_clusters=k, init="k-means++", n_init=1, random_state=seed, max_iter=max_iter
            )
        labels = model.fit_predict(x)
        candidate = Fit(
            labels.astype(np.int64), model.cluster_centers_, float(model.inertia_), seed
        )
        if best is None or candidate.inertia < best.inertia:
            best = candidate
    assert best is not None
    return best


def nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each row of ``x``."""
    d = (x * x).sum(axis=1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(axis=1)
    return np.asarray(d.argmin(axis=1))
