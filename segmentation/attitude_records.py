"""What an attitudinal training records: names, MLflow params and artifacts, pictures, rows.

The MLflow and table side of ``workflows/attitudes``; the behavioural training's own pieces
(profiles rows, composition, the segments artifact the next training matches against) are
reused in the same formats, so ids and names stay stable across retrains in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

from segmentation import clustering, matching, model_report, profiling, report, tables, tracking
from segmentation.config import AppConfig, flatten, to_dict
from segmentation.factors import FactorName

if TYPE_CHECKING:
    from segmentation.workflows.attitudes import Analysis, Fitted
    from segmentation.workflows.train import SegmentSummary

_NOTABLE = 0.5
_TRAITS = 2


def name_segments(
    profiles: profiling.Profiles, factor_columns: Sequence[str], names: Sequence[FactorName]
) -> dict[int, str]:
    """Each segment named by its most distinctive factors (standardised difference from the
    population of at least 0.5, at most two): ``High price, low digital``; a segment with no
    such factor is ``Average attitudes``. Repeated names get ``#<id>``."""
    out: dict[int, str] = {}
    for seg in profiles.segments:
        ranked = sorted(
            zip(factor_columns, names, strict=True), key=lambda fn: (-abs(seg.z(fn[0])), fn[0])
        )
        traits = [
            f"{'high' if seg.z(col) > 0 else 'low'} {name.label}"
            for col, name in ranked[:_TRAITS]
            if abs(seg.z(col)) >= _NOTABLE
        ]
        text = ", ".join(traits) if traits else "average attitudes"
        out[seg.segment_id] = text[0].upper() + text[1:]
    seen: dict[str, int] = {}
    for sid in sorted(out):
        seen[out[sid]] = seen.get(out[sid], 0) + 1
        if seen[out[sid]] > 1:
            out[sid] = f"{out[sid]} #{sid}"
    return out


def factor_note(analysis: Analysis) -> str:
    pa = analysis.parallel
    return (
        f"{analysis.n_factors} factor(s) from {len(analysis.items)} items by {analysis.rule}; "
        f"eigenvalue > 1 (Kaiser) would keep {pa.kaiser}. Factors: "
        + "; ".join(n.full for n in analysis.names)
    )


def loading_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """One row per item and factor (``factor_loadings`` without lineage)."""
    sol = analysis.solution
    return [
        {"item": item, "factor": k + 1, "factor_name": name.label,
         "loading": float(sol.loadings[i, k]), "structure": float(sol.structure[i, k]),
         "score_weight": float(sol.weights[i, k]),
         "communality": float(sol.communalities[i]), "uniqueness": float(sol.uniquenesses[i]),
         "explained_variance": float(sol.variance[k])}
        for k, name in enumerate(analysis.names)
        for i, item in enumerate(analysis.items)
    ]  # fmt: skip


def record_training(cfg: AppConfig, fitted: Fitted, congruence: Sequence[float] | None) -> None:
    """Params, the factor analysis and the model selection, to the active run."""
    ac, sel, an = cfg.attitudes, fitted.selection, fitted.analysis
    cc, fc = ac.clustering, ac.factors
    tracking.log_params(
        {"algorithm": cc.algorithm, "k_min": cc.k_min, "k_max": cc.k_max, "seed": cc.seed,
         "n_init": cc.n_init, "k_rule": cc.k_rule, "k": cc.k,
         "final_fit_seed": clustering.final_start(fitted.final_seed),
         "items": ",".join(an.items), "factor_rule": an.rule, "n_factors": an.n_factors,
         "factor_method": fc.method, "rotation": fc.rotation,
         "max_missing_share": ac.max_missing_share, "columns": ",".join(fitted.space.columns),
         "block_weights": f"factors:{ac.blocks.factors},attributes:{ac.blocks.attributes},"
                          f"behaviour:{ac.blocks.behaviour}",
         "as_of": cfg.features.as_of.isoformat()}
    )  # fmt: skip
    tracking.log_json(flatten(to_dict(cfg)), "config/resolved_config.json")
    ch = fitted.checked
    tracking.log_metrics(
        {"respondents_read": ch.read, "respondents": ch.retained - fitted.behaviour_missing,
         "n_factors": an.n_factors, "n_factors_kaiser": an.parallel.kaiser,
         "n_factors_parallel": an.parallel.n_factors, "chosen_k": sel.chosen_k,
         **{f"excluded_{r}": n for r, n in ch.exclusions.items()},
         **{f"explained_variance_{n.label}": float(v)
            for n, v in zip(an.names, an.solution.variance, strict=True)}}
    )  # fmt: skip
    if congruence is not None:
        tracking.log_metrics({f"tucker_congruence_{i + 1}": c for i, c in enumerate(congruence)})
    for c in sel.candidates:
        tracking.log_metrics(
            {"silhouette": c.silhouette, "cost": c.cost, "min_segment_share": c.min_share,
             "calinski_harabasz": c.calinski_harabasz}, step=c.k,
        )  # fmt: skip
    tracking.set_tags({"k_selection_reason": sel.reason, "k_selection_rule": sel.rule})
    pa = an.parallel
    tracking.log_json(
        {"rule": an.rule, "n_factors": an.n_factors, "kaiser": pa.kaiser,
         "parallel_analysis": {"observed": pa.observed, "random_mean": pa.random_mean,
                               "threshold": pa.threshold, "percentile": pa.percentile,
                               "iterations": pa.iterations, "retained": pa.n_factors},
         "factors": [{"label": n.label, "items": list(n.items)} for n in an.names],
         "loadings": loading_rows(an), "imputation": ch.impute,
         "correlation": an.moments.corr.tolist()},
        "factors/factor_analysis.json",
    )  # fmt: skip


def record_segments(cfg: AppConfig, fitted: Fitted) -> None:
    """The segments artifact the next training matches its ids and names against."""
    model, m = fitted.model, fitted.matched
    centers = model.centers_original()
    tracking.log_json(
        {"as_of": cfg.features.as_of.isoformat(), "features": list(model.scaling.features),
         "max_segment_id": m.max_segment_id,
         "previous_model_version": fitted.champion.version if fitted.champion else None,
         "segments": [
             {"segment_id": s.segment_id, "name": fitted.names[s.segment_id], "size": s.size,
              "share": s.share,
              "center": dict(zip(model.scaling.features, centers[s.segment_id], strict=True))}
             for s in fitted.profiles.segments]},
        matching.SEGMENTS_ARTIFACT,
    )  # fmt: skip
    tracking.log_json({str(k): v for k, v in fitted.names.items()}, "profiles/segment_names.json")


def pictures(analysis: Analysis) -> dict[str, bytes]:
    """The scree plot (with parallel analysis) and the loadings heatmap."""
    plt = report._pyplot()
    pa = analysis.parallel
    ranks = list(range(1, len(pa.observed) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(ranks, pa.observed, marker="o", label="observed")
    ax.plot(ranks, pa.threshold, linestyle="--", label=f"random ({pa.percentile:g}th pct)")
    ax.axhline(1.0, color="grey", linewidth=1, label="eigenvalue 1")
    ax.axvline(analysis.n_factors, color="grey", linestyle=":")
    ax.set(title="Scree plot and parallel analysis", xlabel="factor", ylabel="eigenvalue")
    ax.legend()
    fig.tight_layout()
    scree = report._png(fig)
    loadings = analysis.solution.loadings
    fig, ax = plt.subplots(figsize=(1.2 * loadings.shape[1] + 4, 0.35 * len(analysis.items) + 1.8))
    image = ax.imshow(loadings, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(loadings.shape[1]), labels=[n.label for n in analysis.names])
    ax.set_yticks(range(len(analysis.items)), labels=list(analysis.items))
    for i in range(loadings.shape[0]):
        for k in range(loadings.shape[1]):
            ax.text(k, i, f"{loadings[i, k]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="loading")
    ax.set_title("Rotated factor loadings")
    fig.tight_layout()
    return {"scree": scree, "loadings": report._png(fig)}


def version_writes(
    spark: SparkSession,
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    lineage: tables.Lineage,
    *,
    job: str,
) -> list[tables.Write]:
    """Profiles, factor loadings, exclusions (and composition) of the new version."""
    profiles = tables.with_lineage(
        spark.createDataFrame(
            profiling.profile_rows(fitted.profiles, fitted.names), tables.PROFILE_ROWS
        ),
        lineage,
        tables.PROFILES,
    )
    tracking.log_json(
        [dict(zip(profiles.columns, r, strict=True)) for r in profiles.collect()],
        "profiles/segment_profiles.json",
    )
    loadings = tables.with_lineage(
        spark.createDataFrame(loading_rows(fitted.analysis), tables.FACTOR_LOADING_ROWS),
        lineage,
        tables.FACTOR_LOADINGS,
    )
    excluded = tables.with_lineage(fitted.checked.excluded, lineage, tables.EXCLUSIONS)
    version = {tables.MODEL_NAME: lineage.model_name, tables.MODEL_VERSION: lineage.model_version}
    frames: list[tuple[tables.Table, DataFrame, Mapping[str, Any]]] = [
        (tables.PROFILES, profiles, version),
        (tables.FACTOR_LOADINGS, loadings, version),
    ]
    if explained.composition is not None:
        rows = model_report.composition_rows(spark, explained.composition, fitted.names)
        comp = tables.with_lineage(rows, lineage, tables.COMPOSITION)
        frames.append((tables.COMPOSITION, comp, version))
    writes = [
        tables.snapshot_write(spark, cfg.storage, t, df, job=job, run_id=lineage.run_id,
                              snapshot=snap)
        for t, df, snap in frames
    ]  # fmt: skip
    writes.append(
        tables.snapshot_write(
            spark,
            cfg.storage,
            tables.EXCLUSIONS,
            excluded,
            job=job,
            run_id=lineage.run_id,
            snapshot={tables.MODEL_NAME: lineage.model_name, tables.AS_OF: lineage.as_of},
            model_version=lineage.model_version,
        )
    )
    return writes


def summaries(fitted: Fitted) -> list[SegmentSummary]:
    from segmentation.workflows.train import SegmentSummary

    profiles = fitted.profiles
    return [
        SegmentSummary(
            segment_id=seg.segment_id,
            name=fitted.names[seg.segment_id],
            size=seg.size,
            share=seg.share,
            means={f: seg.stats[f].mean for f in fitted.space.factors},
        )
        for seg in profiles.segments
    ]
