"""Is a segment real? Bootstrap stability, split-half replication and the structure verdict.

All three run on the k-selection sample (scaled features, on the driver), where a fit takes
milliseconds (``model_selection``):

* **Bootstrap stability** after Hennig's ``clusterboot`` (R package fpc; C. Hennig, "Cluster-wise
  assessment of cluster stability", Computational Statistics & Data Analysis 52, 2007): the
  chosen k is refitted on B bootstrap samples; each original segment, restricted to the
  distinct points drawn, is matched to its most similar bootstrap cluster by the Jaccard
  coefficient; the mean over B is the segment's stability. Hennig's reading (configurable):
  <= 0.5 dissolved, < 0.6 not to be trusted, 0.6-0.75 a pattern whose members are doubtful,
  >= 0.75 stable, >= 0.85 highly stable. The mean adjusted Rand index (ARI) of the original and
  bootstrap partitions on the drawn points measures the whole segmentation.
* **Split-half replication**: a model fitted on a random half assigns the other half; its
  agreement (ARI) with the full model's assignment of that half, and per segment the share of
  the segment's members that the half model puts in the matching cluster (Hungarian matching
  of centres).
* **Structure**: the mean silhouette with Euclidean distance (on at most
  ``silhouette_sample_rows`` points), read with Kaufman & Rousseeuw's scale ("Finding Groups in
  Data", 1990): <= 0.25 no substantial structure, 0.26-0.50 weak, 0.51-0.70 reasonable,
  > 0.70 strong.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from segmentation.config import ValidationConfig
from segmentation.modeling import sample_fit


@dataclass(frozen=True)
class Measure:
    """One row of ``segment_validation``: a measure of a segment (or of the whole model)."""

    segment_id: int | None
    measure: str
    value: float | None
    ci_lower: float | None = None
    ci_upper: float | None = None
    verdict: str | None = None


@dataclass
class Validation:
    """Every measure of one trained model, and why a part was skipped."""

    measures: list[Measure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    window: tuple[str, dt.date, dt.date] | None = None
    """The outcome window: (backtest | forward, start exclusive, end inclusive)."""

    def get(self, measure: str, segment_id: int | None = None) -> Measure | None:
        return next(
            (m for m in self.measures if m.measure == measure and m.segment_id == segment_id),
            None,
        )


def jaccard_verdict(value: float, cuts: Sequence[float]) -> str:
    """Hennig's reading of a mean bootstrap Jaccard; ``cuts`` = (dissolved, untrusted,
    stable, highly stable), by default (0.5, 0.6, 0.75, 0.85)."""
    dissolved, untrusted, stable, highly = cuts
    if value <= dissolved:
        return "dissolved"
    if value < untrusted:
        return "not to be trusted"
    if value < stable:
        return "pattern, members doubtful"
    return "highly stable" if value >= highly else "stable"


def structure_verdict(silhouette: float) -> str:
    """Kaufman & Rousseeuw's reading of a mean (Euclidean) silhouette."""
    if silhouette <= 0.25:
        return "no substantial structure"
    if silhouette <= 0.50:
        return "weak structure"
    if silhouette <= 0.70:
        return "reasonable structure"
    return "strong structure"


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def bootstrap(
    x: np.ndarray,
    labels: np.ndarray,
    k: int,
    *,
    algorithm: str,
    seed: int,
    n_init: int,
    max_iter: int,
    samples: int,
) -> tuple[dict[int, list[float]], list[float]]:
    """Jaccard of each original segment per bootstrap sample, and the ARI per sample.

    Args:
        x: the sample (rows of scaled features); labels: its segment id per row.
        k: clusters refitted on each bootstrap sample (``n_init`` restarts each).
        samples: B; bootstrap b draws with ``numpy.random.default_rng(seed + b)``.

    Returns:
        segment id -> B Jaccard values (a segment absent from a draw skips it), and B ARIs.
    """
    ids = sorted(set(int(v) for v in labels))

    def one(b: int) -> tuple[dict[int, float], float]:
        rng = np.random.default_rng(seed + b)
        draw = rng.integers(0, len(x), len(x))
        seeds = [seed + 1000 * (b + 1) + i for i in range(max(1, n_init))]
        fitted = sample_fit.fit(x[draw], k, algorithm=algorithm, seeds=seeds, max_iter=max_iter)
        distinct, first = np.unique(draw, return_index=True)
        boot, orig = fitted.labels[first], labels[distinct]
        out = {}
        for sid in ids:
            member = orig == sid
            if member.any():
                out[sid] = max(_jaccard(member, boot == j) for j in range(k))
        return out, adjusted_rand(orig, boot)

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(one, range(samples)))
    per_segment = {sid: [r[0][sid] for r in runs if sid in r[0]] for sid in ids}
    return per_segment, [r[1] for r in runs]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def split_half(
    x: np.ndarray,
    labels: np.ndarray,
    centers: Mapping[int, Sequence[float]],
    *,
    algorithm: str,
    seed: int,
    n_init: int,
    max_iter: int,
) -> tuple[float, dict[int, float]]:
    """ARI between the full model and a half model on the held-out half, and per segment the
    share of its held-out members the half model puts in the matching cluster."""
    order = np.random.default_rng(seed).permutation(len(x))
    train, held = order[: len(x) // 2], order[len(x) // 2 :]
    ids = sorted(centers)
    full = np.array([centers[s] for s in ids])
    half = sample_fit.fit(
        x[train], len(ids), algorithm=algorithm,
        seeds=[seed + i for i in range(max(1, n_init))], max_iter=max_iter,
    )  # fmt: skip
    dist = ((half.centers[:, None, :] - full[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(dist)
    half_to_segment = {int(r): ids[int(c)] for r, c in zip(rows, cols, strict=True)}
    by_half = np.array(
        [half_to_segment.get(int(j), -1) for j in sample_fit.nearest(x[held], half.centers)]
    )
    truth = labels[held]
    agreement = {
        sid: float((by_half[truth == sid] == sid).mean()) for sid in ids if (truth == sid).any()
    }
    return adjusted_rand(truth, by_half), agreement


def structure(x: np.ndarray, labels: np.ndarray, *, sample_rows: int, seed: int) -> float:
    """Mean Euclidean silhouette (scikit-learn) on at most ``sample_rows`` rows."""
    from sklearn.metrics import silhouette_score

    if len(set(labels.tolist())) < 2:
        return -1.0
    size = min(len(x), sample_rows)
    return float(silhouette_score(x, labels, sample_size=size, random_state=seed))


def stability_measures(
    x: np.ndarray,
    labels: np.ndarray,
    centers: Mapping[int, Sequence[float]],
    vc: ValidationConfig,
    *,
    algorithm: str,
    seed: int,
    n_init: int,
    max_iter: int,
) -> list[Measure]:
    """The bootstrap, split-half and structure measures of a model on its sample."""
    k = len(centers)
    per_segment, aris = bootstrap(
        x, labels, k, algorithm=algorithm, seed=seed, n_init=n_init, max_iter=max_iter,
        samples=vc.bootstrap_samples,
    )  # fmt: skip
    out = [_summary(None, "bootstrap_ari", aris, verdict=None)]
    for sid, values in per_segment.items():
        m = _summary(sid, "bootstrap_jaccard", values, verdict=None)
        verdict = jaccard_verdict(m.value, vc.jaccard_cuts) if m.value is not None else None
        out.append(Measure(sid, m.measure, m.value, m.ci_lower, m.ci_upper, verdict))
    ari, agreement = split_half(
        x, labels, centers, algorithm=algorithm, seed=seed, n_init=n_init, max_iter=max_iter
    )
    cut = vc.replication_min_agreement
    out.append(Measure(None, "split_half_ari", ari, verdict=_replicates(ari >= cut)))
    out += [
        Measure(sid, "split_half_agreement", a, verdict=_replicates(a >= cut))
        for sid, a in sorted(agreement.items())
    ]
    sil = structure(x, labels, sample_rows=vc.silhouette_sample_rows, seed=seed)
    out.append(Measure(None, "silhouette_euclidean", sil, verdict=structure_verdict(sil)))
    return out


def _replicates(ok: bool) -> str:
    return "replicates" if ok else "does not replicate"


def _summary(
    segment_id: int | None, measure: str, values: Sequence[float], *, verdict: str | None
) -> Measure:
    """Mean with the 2.5% and 97.5% percentiles of the bootstrap distribution."""
    if not values:
        return Measure(segment_id, measure, None, verdict=verdict)
    arr = np.asarray(values, dtype=float)
    lo, hi = np.percentile(arr, [2.5, 97.5])
    return Measure(segment_id, measure, float(arr.mean()), float(lo), float(hi), verdict)
