"""Pictures of a training (PNG): k-selection curves, segment sizes, a profile heatmap
(standardised differences), the validation measures, a 2-D PCA projection of a sample coloured
by segment, and for the attitudinal basis the scree plot and the loadings heatmap.

matplotlib draws off-screen (Agg); every picture is returned as PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml.feature import PCA, VectorAssembler
from pyspark.sql import DataFrame

from segmentation.explain import profiling
from segmentation.features.factors import ParallelAnalysis
from segmentation.features.scaling import Scaling
from segmentation.modeling import model_selection
from segmentation.modeling.validation import Measure, Validation
from segmentation.storage import tables

_PCA_VECTOR, _PCA_OUT = "_pca_in", "_pca_out"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    return buf.getvalue()


def _label(segment_id: int, names: Mapping[int, str]) -> str:
    return f"{segment_id}: {names.get(segment_id, '?')}"


def k_selection_png(selection: model_selection.KSelection) -> bytes:
    """Each criterion of model selection against k; dashed: the chosen k."""
    plt = pyplot()
    cands = selection.candidates
    ks = [c.k for c in cands]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(ks, [c.silhouette for c in cands], marker="o")
    axes[0].set(title="Silhouette by k", xlabel="k", ylabel="silhouette")
    axes[1].plot(ks, [c.calinski_harabasz for c in cands], marker="o", color="tab:orange")
    axes[1].set(title="Calinski-Harabasz by k", xlabel="k", ylabel="variance ratio")
    stab = [(c.k, c.worst_jaccard) for c in cands if c.worst_jaccard is not None]
    axes[2].plot([k for k, _ in stab], [j for _, j in stab], marker="o", color="tab:green")
    axes[2].axhline(0.75, color="grey", linewidth=1)
    axes[2].set(title="Worst segment's bootstrap Jaccard", xlabel="k", ylim=(0, 1.05))
    for ax in axes:
        ax.axvline(selection.chosen_k, color="grey", linestyle="--")
    fig.tight_layout()
    return png(fig)


def sizes_png(profiles: profiling.Profiles, names: Mapping[int, str]) -> bytes:
    plt = pyplot()
    segs = sorted(profiles.segments, key=lambda s: s.size)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(segs) + 1.2))
    bars = ax.barh([_label(s.segment_id, names) for s in segs], [s.size for s in segs],
                   color="tab:blue")  # fmt: skip
    for bar, s in zip(bars, segs, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {s.share:.1%}",
                va="center")  # fmt: skip
    ax.set(title="Segment sizes", xlabel="customers")
    ax.margins(x=0.15)
    fig.tight_layout()
    return png(fig)


def heatmap_png(
    profiles: profiling.Profiles, names: Mapping[int, str], features: Sequence[str]
) -> bytes:
    """Standardised difference of each segment's mean from the population, per feature."""
    plt = pyplot()
    segs = list(profiles.segments)
    values = [[seg.z(f) for f in features] for seg in segs]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(features) + 3), 0.5 * len(segs) + 2.2))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-3, vmax=3, aspect="auto")
    ax.set_xticks(range(len(features)), labels=list(features), rotation=60, ha="right")
    ax.set_yticks(range(len(segs)), labels=[_label(s.segment_id, names) for s in segs])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 1.8 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, label="std. difference from population")
    ax.set_title("Segment profiles (standardised difference from the population)")
    fig.tight_layout()
    return png(fig)


def validation_png(v: Validation, names: Mapping[int, str]) -> bytes:
    """Bootstrap Jaccard per segment, and the purchase share per segment with intervals."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.45 * len(names) + 2.0))
    jac = [m for m in v.measures if m.measure == "bootstrap_jaccard" and m.value is not None]
    _bars(left, jac, names, color="tab:green")
    for cut in (0.6, 0.75):
        left.axvline(cut, color="grey", linestyle="--")
    left.set(title="Bootstrap stability (mean Jaccard)", xlim=(0, 1.05))
    share = [m for m in v.measures if m.measure == "outcome_purchase_share"]
    per_segment = [m for m in share if m.segment_id is not None]
    if per_segment:
        _bars(right, per_segment, names, color="tab:purple")
        overall = next((m for m in share if m.segment_id is None), None)
        if overall is not None and overall.value is not None:
            right.axvline(overall.value, color="black", linewidth=1)
        right.set(title="Purchase share in the outcome window")
    else:
        right.axis("off")
        right.text(0, 0.5, "Outcome check skipped:\n" + v.skipped.get("outcome", "-"), wrap=True)
    fig.tight_layout()
    return png(fig)


def _bars(ax: Any, measures: Sequence[Measure], names: Mapping[int, str], *, color: str) -> None:
    ordered = sorted(measures, key=lambda m: -(m.segment_id or 0))
    values = [m.value or 0.0 for m in ordered]
    lower = [max(0.0, (m.value or 0.0) - (m.ci_lower if m.ci_lower is not None else m.value or 0.0))
             for m in ordered]  # fmt: skip
    upper = [max(0.0, (m.ci_upper if m.ci_upper is not None else m.value or 0.0) - (m.value or 0.0))
             for m in ordered]  # fmt: skip
    labels = [_label(m.segment_id or 0, names) for m in ordered]
    ax.barh(labels, values, xerr=[lower, upper], color=color, alpha=0.8, capsize=3)


@dataclass(frozen=True)
class Projection:
    points: list[tuple[float, float, int]]
    explained_variance: tuple[float, float]


def pca_projection(
    assigned: DataFrame, scaling: Scaling, *, sample_rows: int, seed: int
) -> Projection:
    """A seeded sample of customers in the model's scaled space, projected on 2 components."""
    total = assigned.count()
    fraction = min(1.0, sample_rows / total) if total else 1.0
    sample = assigned.sample(fraction=fraction, seed=seed).limit(sample_rows)
    vectors = VectorAssembler(inputCols=scaling.scaled_columns, outputCol=_PCA_VECTOR).transform(
        scaling.stage().transform(sample)
    )
    k = min(2, len(scaling.features))
    model = PCA(k=k, inputCol=_PCA_VECTOR, outputCol=_PCA_OUT).fit(vectors)
    rows = model.transform(vectors).select(_PCA_OUT, tables.SEGMENT_ID).collect()
    points = [(float(r[0][0]), float(r[0][1]) if k > 1 else 0.0, int(r[1])) for r in rows]
    ev = [float(v) for v in model.explainedVariance.toArray()] + [0.0]
    return Projection(points=points, explained_variance=(ev[0], ev[1]))


def pca_png(projection: Projection, names: Mapping[int, str]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, sid in enumerate(sorted({p[2] for p in projection.points})):
        xs = [p[0] for p in projection.points if p[2] == sid]
        ys = [p[1] for p in projection.points if p[2] == sid]
        ax.scatter(xs, ys, s=6, alpha=0.6, color=cmap(i % cmap.N), label=_label(sid, names))
    ev = projection.explained_variance
    ax.set(
        title=f"PCA of {len(projection.points):,} sampled customers (scaled features)",
        xlabel=f"PC1 ({ev[0]:.0%} of variance)",
        ylabel=f"PC2 ({ev[1]:.0%} of variance)",
    )
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    return png(fig)


# --- HTML -----------------------------------------------------------------------------------


def scree_png(pa: ParallelAnalysis, n_factors: int) -> bytes:
    """The scree plot with parallel analysis's random eigenvalues and the retained count."""
    plt = pyplot()
    ranks = list(range(1, len(pa.observed) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(ranks, pa.observed, marker="o", label="observed")
    ax.plot(ranks, pa.threshold, linestyle="--", label=f"random ({pa.percentile:g}th pct)")
    ax.axhline(1.0, color="grey", linewidth=1, label="eigenvalue 1")
    ax.axvline(n_factors, color="grey", linestyle=":")
    ax.set(title="Scree plot and parallel analysis", xlabel="factor", ylabel="eigenvalue")
    ax.legend()
    fig.tight_layout()
    return png(fig)


def loadings_png(loadings: np.ndarray, items: Sequence[str], factors: Sequence[str]) -> bytes:
    """The rotated loadings as a heatmap, items by factors, each cell labelled."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * loadings.shape[1] + 4, 0.35 * len(items) + 1.8))
    image = ax.imshow(loadings, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(loadings.shape[1]), labels=list(factors))
    ax.set_yticks(range(len(items)), labels=list(items))
    for i in range(loadings.shape[0]):
        for k in range(loadings.shape[1]):
            ax.text(k, i, f"{loadings[i, k]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="loading")
    ax.set_title("Rotated factor loadings")
    fig.tight_layout()
    return png(fig)
