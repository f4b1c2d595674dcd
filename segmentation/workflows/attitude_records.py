"""An attitudinal training's fitted state (``Analysis``, ``Fitted``) and what it records:
names, MLflow params and artifacts, pictures, rows.

The MLflow and table side of ``workflows/attitudes``; the pieces both trainings share (profiles
rows, composition, the segments artifact the next training matches against, publishing) come
from ``records`` in the same formats, so ids and names stay stable across retrains alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig, flatten, to_dict
from segmentation.explain import model_report, profiling
from segmentation.explain import pictures as pictures_mod
from segmentation.features import attitude_space, factors
from segmentation.features.factors import FactorName
from segmentation.inputs import survey
from segmentation.modeling import restarts
from segmentation.runtime import tracking
from segmentation.storage import tables
from segmentation.workflows import records


@dataclass
class Analysis:
    """The factor analysis of the items."""

    items: tuple[str, ...]
    moments: factors.Moments
    parallel: factors.ParallelAnalysis
    n_factors: int
    rule: str
    solution: factors.Solution
    names: list[factors.FactorName]
    notes: list[str] = field(default_factory=list)
    """Items left out (redundant pairs) and Heywood cases, said in the summary and MLflow."""


@dataclass
class Fitted(records.Trained):
    """A fitted attitudinal segmentation, before anything is recorded or written."""

    checked: survey.Survey
    analysis: Analysis
    space: attitude_space.Space
    spaced: DataFrame
    behaviour_missing: int = 0

    @property
    def pipeline(self) -> PipelineModel:
        """The registered model: cleaning, imputation, encoding, factor scores, clustering."""
        return PipelineModel(stages=[*self.space.stages(), *self.model.pipeline.stages])


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
         "final_fit_seed": restarts.final_start(fitted.final_seed),
         "items": ",".join(an.items), "factor_rule": an.rule, "n_factors": an.n_factors,
         "factor_method": fc.method, "rotation": fc.rotation,
         "max_missing_share": ac.max_missing_share, "columns": ",".join(fitted.space.columns),
         "block_weights": f"factors:{ac.blocks.factors},attributes:{ac.blocks.attributes},"
                          f"behaviour:{ac.blocks.behaviour}",
         "as_of": cfg.features.as_of.isoformat()}
    )  # fmt: skip
    tracking.log_json(flatten(to_dict(cfg)), "config/resolved_config.json")
    if an.notes:
        tracking.set_tags({"factor_notes": "; ".join(an.notes)})
    ch = fitted.checked
    tracking.log_metrics(
        {"respondents_read": ch.read, "respondents": ch.retained - fitted.behaviour_missing,
         "n_factors": an.n_factors, "n_factors_kaiser": an.parallel.kaiser,
         "n_factors_parallel": an.parallel.n_factors, "chosen_k": sel.chosen_k,
         **{f"excluded_{r}": n for r, n in ch.exclusions.items()},
         **{f"declined_{i}": n for i, n in ch.declined.items()},
         **{f"invalid_answers_{i}": n for i, n in ch.invalid_answers.items()},
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


def pictures(analysis: Analysis) -> dict[str, bytes]:
    """The scree plot (with parallel analysis) and the loadings heatmap."""
    return {
        "scree": pictures_mod.scree_png(analysis.parallel, analysis.n_factors),
        "loadings": pictures_mod.loadings_png(
            analysis.solution.loadings, analysis.items, [n.label for n in analysis.names]
        ),
    }


def version_writes(
    spark: SparkSession,
    cfg: AppConfig,
    fitted: Fitted,
    explained: model_report.Explained,
    lineage: tables.Lineage,
    *,
    job: str,
) -> list[tables.Write]:
    """Profiles, factor loadings (and composition) of the new version, then its exclusions."""
    profiles = records.profile_rows(spark, fitted.profiles, fitted.names, lineage)
    loadings = tables.with_lineage(
        spark.createDataFrame(loading_rows(fitted.analysis), tables.FACTOR_LOADING_ROWS),
        lineage,
        tables.FACTOR_LOADINGS,
    )
    frames = [(tables.PROFILES, profiles), (tables.FACTOR_LOADINGS, loadings)]
    writes = records.version_writes(spark, cfg, frames, explained, fitted.names, lineage, job=job)
    excluded = tables.with_lineage(fitted.checked.excluded, lineage, tables.EXCLUSIONS)
    writes.append(
        tables.snapshot_write(
            spark, cfg.storage, tables.EXCLUSIONS, excluded, job=job, run_id=lineage.run_id,
            snapshot={tables.MODEL_NAME: lineage.model_name, tables.AS_OF: lineage.as_of},
            model_version=lineage.model_version,
        )
    )  # fmt: skip
    return writes
