"""Model selection on a sample, on the driver: k-means with restarts and the silhouette per k.

The selection sample is small by design (``training.selection_sample_rows``, 20,000 customers
by default), so it is collected once to the driver as a matrix of the scaled features and every
candidate is fitted there with scikit-learn, where a fit takes milliseconds; Spark ML would run
one distributed job per iteration of every fit (35-49 s for 9 k x 3 restarts, measured). The
final model is then fitted on all customers with Spark (``clustering.fit_best``).

What matches the Spark side:

* **Initialisation**: scikit-learn's ``KMeans(init="k-means++")``, the sequential algorithm of
  which Spark's ``k-means||`` is the parallel version (Bahmani et al., "Scalable K-Means++",
  VLDB 2012); ``bisecting_kmeans`` uses scikit-learn's ``BisectingKMeans``.
* **Restarts**: ``training.n_init`` fits per k with the seeds ``seed, seed + 1, ...``; the
  lowest inertia (Spark's training cost: the sum of squared distances) represents the k.
* **Silhouette**: Spark's ``ClusteringEvaluator`` definition, with squared Euclidean distance
  (its default), computed exactly in O(n k) from per-cluster sums (``silhouette``), the same
  value as ``sklearn.metrics.silhouette_score(X, labels, metric="sqeuclidean")`` without its
  O(n^2) pairwise distances.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame

from segmentation.errors import InputError

log = logging.getLogger(__name__)


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


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with squared Euclidean distance (Spark's ``ClusteringEvaluator``).

    For point i in cluster A: a(i) is the mean squared distance to the other points of A,
    b(i) the smallest mean squared distance to the points of another cluster, and
    s(i) = (b - a) / max(a, b) (0 for a point alone in its cluster). Uses
    sum_{y in C} ||x - y||^2 = |C| ||x||^2 - 2 x . sum_C y + sum_C ||y||^2.

    Returns:
        The mean of s(i) over all points; -1.0 with fewer than two non-empty clusters.
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    if len(ids) < 2:
        return -1.0
    n_per = np.bincount(inverse).astype(np.float64)
    sums = np.zeros((len(ids), x.shape[1]))
    np.add.at(sums, inverse, x)
    sq = np.einsum("ij,ij->i", x, x)
    sq_sums = np.bincount(inverse, weights=sq)
    # total[i, c]: sum of squared distances from point i to every point of cluster c.
    total = n_per[None, :] * sq[:, None] - 2.0 * x @ sums.T + sq_sums[None, :]
    total = np.maximum(total, 0.0)
    rows = np.arange(len(x))
    own_n = n_per[inverse]
    a = np.where(own_n > 1, total[rows, inverse] / np.maximum(own_n - 1, 1), 0.0)
    mean_other = total / n_per[None, :]
    mean_other[rows, inverse] = np.inf
    b = mean_other.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where((own_n > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(s.mean())


@dataclass(frozen=True)
class Candidate:
    """One evaluated k during model selection."""

    k: int
    silhouette: float
    cost: float
    sizes: tuple[int, ...]
    seed: int

    @property
    def min_share(self) -> float:
        total = sum(self.sizes)
        return min(self.sizes) / total if total else 0.0


@dataclass(frozen=True)
class KSelection:
    """The outcome of model selection: every candidate and the chosen k with the reason."""

    candidates: tuple[Candidate, ...]
    chosen_k: int
    reason: str
    sample_rows: int

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.k == self.chosen_k)


def select_k(
    x: np.ndarray,
    *,
    k_values: Sequence[int],
    algorithm: str,
    seed: int,
    n_init: int,
    max_iter: int,
    min_segment_share: float,
    tolerance: float,
) -> KSelection:
    """Choose k on the sample ``x``: silhouette, a minimum segment share, a preference for
    small k.

    Every k is fitted ``n_init`` times (seeds ``seed, seed + 1, ...``), the lowest inertia
    represents it. Among candidates whose smallest segment holds at least
    ``min_segment_share`` of the sample, the smallest k whose silhouette is within
    ``tolerance`` of the best wins. If none meets the share, the best silhouette wins and the
    reason says so.

    Raises:
        InputError: no k is smaller than the sample, or every k left a segment empty.
    """
    usable = [k for k in k_values if k < len(x)]
    if not usable:
        raise InputError(
            f"only {len(x)} customers in the selection sample: every k in "
            f"{list(k_values)} needs more (lower training.k_min)"
        )
    seeds = [seed + i for i in range(max(1, n_init))]
    candidates = []
    for k in usable:
        best = fit(x, k, algorithm=algorithm, seeds=seeds, max_iter=max_iter)
        distinct = sum(1 for s in best.sizes if s > 0)
        score = silhouette(x, best.labels) if distinct > 1 else -1.0
        candidates.append(Candidate(k, score, best.inertia, best.sizes, best.seed))
        log.info("k=%d silhouette=%.4f cost=%.1f sizes=%s", k, score, best.inertia, best.sizes)
    chosen, reason = choose(candidates, min_segment_share, tolerance)
    return KSelection(tuple(candidates), chosen, reason, len(x))


def choose(
    candidates: Sequence[Candidate], min_segment_share: float, tolerance: float
) -> tuple[int, str]:
    """The parsimony rule on the candidates: returns the chosen k and the reason."""
    # An empty segment means fewer distinct customer profiles than k: never a valid choice.
    complete = [c for c in candidates if min(c.sizes) > 0]
    if not complete:
        raise InputError(
            f"every k in {[c.k for c in candidates]} left a segment empty: the customers have "
            "fewer distinct feature profiles than k; lower training.k_min"
        )
    eligible = [c for c in complete if c.min_share >= min_segment_share]
    if not eligible:
        best = max(complete, key=lambda c: (c.silhouette, -c.k))
        return best.k, (
            f"no k had every segment >= {min_segment_share:.1%} of customers; "
            f"k={best.k} has the best silhouette ({best.silhouette:.3f})"
        )
    best = max(eligible, key=lambda c: (c.silhouette, -c.k))
    within = [c for c in eligible if c.silhouette >= best.silhouette - tolerance]
    chosen = min(within, key=lambda c: c.k)
    return chosen.k, (
        f"k={chosen.k}: smallest k with silhouette {chosen.silhouette:.3f} within {tolerance} of "
        f"the best ({best.silhouette:.3f} at k={best.k}), every segment >= "
        f"{min_segment_share:.1%}"
    )
