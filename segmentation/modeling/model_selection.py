"""Model selection on a sample, on the driver: k-means with restarts and the silhouette per k.

The selection sample is small by design (``training.selection_sample_rows``, 20,000 customers
by default), so it is collected once to the driver as a matrix of the scaled features and every
candidate is fitted there with scikit-learn, where a fit takes milliseconds; Spark ML would run
one distributed job per iteration of every fit (35-49 s for 9 k x 3 restarts, measured). The
final model is then fitted on all customers with Spark (``restarts.fit_best``), starting
among others from the chosen candidate's centres (``Candidate.centers``).

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
from typing import Literal

import numpy as np

from segmentation.errors import InputError
from segmentation.modeling import sample_fit, validation

log = logging.getLogger(__name__)


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


KRule = Literal["balanced", "granular", "parsimony"]


@dataclass(frozen=True)
class SelectionRule:
    """How k is chosen (``training.*``).

    Attributes:
        rule: ``balanced`` (default): among admissible candidates (every segment at least
            ``min_segment_share``, every segment stable), the best mean rank of the silhouette
            and the Calinski-Harabasz index, ties to the smaller k. ``granular``: the largest
            admissible k (the most granular stable segmentation). ``parsimony``: the former
            rule, the smallest k whose silhouette is within ``tolerance`` of the best (no
            stability), kept for comparison.
        min_segment_share: a candidate whose smallest segment holds less is not admissible.
        tolerance: the parsimony rule's silhouette tolerance.
        stable_jaccard: a segment is stable when its mean bootstrap Jaccard reaches this
            (Hennig: 0.75).
        stability_samples: bootstrap samples per candidate k (0: no stability, every
            candidate counts as stable).
        stability_rows: the candidates' stability is estimated on at most this many rows of
            the sample (a seeded subsample).
    """

    rule: KRule = "balanced"
    min_segment_share: float = 0.02
    tolerance: float = 0.03
    stable_jaccard: float = 0.75
    stability_samples: int = 10
    stability_rows: int = 5000


@dataclass(frozen=True)
class Candidate:
    """One evaluated k during model selection."""

    k: int
    silhouette: float
    cost: float
    sizes: tuple[int, ...]
    seed: int
    calinski_harabasz: float = 0.0
    worst_jaccard: float | None = None
    """The least stable segment's mean bootstrap Jaccard (None: not measured)."""
    centers: tuple[tuple[float, ...], ...] = ()
    """The representing fit's centres in the sample's (scaled) space, k rows; the final fit
    starts from the chosen candidate's (``restarts.fit_best``). Logged with the candidates
    in the training run's ``k_selection.json``."""

    @property
    def min_share(self) -> float:
        total = sum(self.sizes)
        return min(self.sizes) / total if total else 0.0

    def stable(self, cut: float) -> bool:
        return self.worst_jaccard is None or self.worst_jaccard >= cut


@dataclass(frozen=True)
class KSelection:
    """The outcome of model selection: every candidate and the chosen k with the reason."""

    candidates: tuple[Candidate, ...]
    chosen_k: int
    reason: str
    sample_rows: int
    rule: str = "balanced"

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
    rule: SelectionRule,
) -> KSelection:
    """Evaluate every k on the sample ``x`` and choose one with ``rule`` (``choose``).

    Every k is fitted ``n_init`` times (seeds ``seed, seed + 1, ...``), the lowest inertia
    represents it; its silhouette, Calinski-Harabasz index and (unless the parsimony rule or
    ``stability_samples`` 0) the worst segment's bootstrap Jaccard are measured.

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
    sub = _subsample(x, rule.stability_rows, seed)
    candidates = []
    for k in usable:
        best = sample_fit.fit(x, k, algorithm=algorithm, seeds=seeds, max_iter=max_iter)
        distinct = sum(1 for s in best.sizes if s > 0)
        score = silhouette(x, best.labels) if distinct > 1 else -1.0
        ch = calinski_harabasz(x, best.labels) if distinct > 1 else 0.0
        worst = None
        measure = rule.rule != "parsimony" and rule.stability_samples > 0 and distinct == k
        if measure and min(best.sizes) / len(x) >= rule.min_segment_share:
            worst = _worst_jaccard(sub, best.centers, k, algorithm, seed, max_iter, rule)
        centers = tuple(tuple(map(float, c)) for c in best.centers)
        candidates.append(
            Candidate(k, score, best.inertia, best.sizes, best.seed, ch, worst, centers)
        )
        log.info("k=%d silhouette=%.4f CH=%.1f worst Jaccard=%s sizes=%s", k, score, ch, worst,
                 best.sizes)  # fmt: skip
    chosen, reason = choose(candidates, rule)
    return KSelection(tuple(candidates), chosen, reason, len(x), rule.rule)


def calinski_harabasz(x: np.ndarray, labels: np.ndarray) -> float:
    """The Calinski-Harabasz index (variance ratio criterion; Calinski & Harabasz 1974)."""
    from sklearn.metrics import calinski_harabasz_score

    return float(calinski_harabasz_score(x, labels))


def _subsample(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    if len(x) <= rows:
        return x
    return x[np.random.default_rng(seed).choice(len(x), rows, replace=False)]


def _worst_jaccard(
    x: np.ndarray,
    centers: np.ndarray,
    k: int,
    algorithm: str,
    seed: int,
    max_iter: int,
    rule: SelectionRule,
) -> float:
    """The least stable segment's mean bootstrap Jaccard (one fit per bootstrap sample)."""
    labels = sample_fit.nearest(x, centers)
    per_segment, _ = validation.bootstrap(
        x, labels, k, algorithm=algorithm, seed=seed, n_init=1, max_iter=max_iter,
        samples=rule.stability_samples,
    )  # fmt: skip
    return min((float(np.mean(v)) for v in per_segment.values() if v), default=0.0)


def choose(candidates: Sequence[Candidate], rule: SelectionRule) -> tuple[int, str]:
    """The chosen k and the reason, by ``rule`` (see ``SelectionRule``)."""
    # An empty segment means fewer distinct customer profiles than k: never a valid choice.
    complete = [c for c in candidates if min(c.sizes) > 0]
    if not complete:
        raise InputError(
            f"every k in {[c.k for c in candidates]} left a segment empty: the customers have "
            "fewer distinct feature profiles than k; lower training.k_min"
        )
    share = rule.min_segment_share
    big_enough = [c for c in complete if c.min_share >= share]
    if not big_enough:
        best = max(complete, key=lambda c: (c.silhouette, -c.k))
        return best.k, (
            f"no k had every segment >= {share:.1%} of customers; "
            f"k={best.k} has the best silhouette ({best.silhouette:.3f})"
        )
    if rule.rule == "parsimony":
        return _parsimony(big_enough, rule)
    admissible = [c for c in big_enough if c.stable(rule.stable_jaccard)]
    if not admissible:
        best = max(big_enough, key=lambda c: (c.worst_jaccard or 0.0, -c.k))
        return best.k, (
            f"no k had every segment stable (bootstrap Jaccard >= {rule.stable_jaccard}); "
            f"k={best.k} is the most stable (worst segment {best.worst_jaccard:.2f}): treat the "
            "segments with care"
        )
    if rule.rule == "granular":
        chosen = max(admissible, key=lambda c: c.k)
        return chosen.k, (
            f"k={chosen.k}: the most granular segmentation whose every segment is stable "
            f"(worst Jaccard {chosen.worst_jaccard:.2f}) and >= {share:.1%}"
        )
    return _balanced(admissible, rule)


def _balanced(admissible: Sequence[Candidate], rule: SelectionRule) -> tuple[int, str]:
    """Best mean rank of silhouette and Calinski-Harabasz among admissible k; ties: smaller k."""
    by_sil = sorted(admissible, key=lambda c: (-c.silhouette, c.k))
    by_ch = sorted(admissible, key=lambda c: (-c.calinski_harabasz, c.k))
    rank = {c.k: by_sil.index(c) + by_ch.index(c) + 2 for c in admissible}
    chosen = min(admissible, key=lambda c: (rank[c.k], c.k))
    stable = "" if chosen.worst_jaccard is None else f", worst Jaccard {chosen.worst_jaccard:.2f}"
    return chosen.k, (
        f"k={chosen.k}: best mean rank of silhouette ({chosen.silhouette:.3f}, rank "
        f"{by_sil.index(chosen) + 1}) and Calinski-Harabasz ({chosen.calinski_harabasz:.0f}, "
        f"rank {by_ch.index(chosen) + 1}) among the {len(admissible)} k whose every segment is "
        f"stable and >= {rule.min_segment_share:.1%}{stable}"
    )


def _parsimony(eligible: Sequence[Candidate], rule: SelectionRule) -> tuple[int, str]:
    best = max(eligible, key=lambda c: (c.silhouette, -c.k))
    within = [c for c in eligible if c.silhouette >= best.silhouette - rule.tolerance]
    chosen = min(within, key=lambda c: c.k)
    return chosen.k, (
        f"k={chosen.k}: smallest k with silhouette {chosen.silhouette:.3f} within "
        f"{rule.tolerance} of the best ({best.silhouette:.3f} at k={best.k}), every segment >= "
        f"{rule.min_segment_share:.1%}"
    )
