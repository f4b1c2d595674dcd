"""What a behavioural training records in its MLflow run: params, the resolved config, the
model selection, segment sizes, the id matching and the segments artifact the next training
matches against."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from segmentation import clustering, matching, tables, tracking
from segmentation.config import AppConfig, flatten, to_dict

if TYPE_CHECKING:
    from segmentation.workflows.train import Fitted


def record_training(cfg: AppConfig, fitted: Fitted) -> None:
    """Params, the resolved config and the model selection, to the active run."""
    t, sel, model = cfg.training, fitted.selection, fitted.model
    champion = fitted.champion
    transforms = zip(model.scaling.features, model.scaling.transforms, strict=True)
    tracking.log_params(
        {"algorithm": t.algorithm, "k_min": t.k_min, "k_max": t.k_max, "seed": t.seed,
         "max_iter": t.max_iter, "n_init": t.n_init, "selection_seed": sel.chosen.seed,
         "final_fit_seed": clustering.final_start(fitted.final_seed),
         "features": ",".join(t.features),
         "transforms": ",".join(f"{f}:{tr}" for f, tr in transforms),
         "selection_sample_rows": sel.sample_rows, "min_segment_share": t.min_segment_share,
         "silhouette_tolerance": t.silhouette_tolerance, "k_rule": t.k_rule, "k": t.k,
         "stable_jaccard": t.stable_jaccard,
         "selection_bootstrap_samples": t.selection_bootstrap_samples,
         "match_max_distance": t.match_max_distance,
         "previous_model_version": champion.version if champion else "none",
         "as_of": cfg.features.as_of.isoformat(),
         "input.customer_features.path": tables.path(cfg.storage, tables.FEATURES),
         "input.customer_features.version": fitted.features_version}
    )  # fmt: skip
    tracking.log_json(flatten(to_dict(cfg)), "config/resolved_config.json")
    for c in sel.candidates:
        per_k = {"silhouette": c.silhouette, "cost": c.cost, "min_segment_share": c.min_share,
                 "calinski_harabasz": c.calinski_harabasz}  # fmt: skip
        if c.worst_jaccard is not None:
            per_k["worst_jaccard"] = c.worst_jaccard
        tracking.log_metrics(per_k, step=c.k)
        tracking.log_metrics({f"silhouette_k{c.k}": c.silhouette, f"cost_k{c.k}": c.cost})
    tracking.log_metrics({"chosen_k": sel.chosen_k, "customers": fitted.customers})
    tracking.set_tags({"k_selection_reason": sel.reason, "k_selection_rule": sel.rule})
    for seg in fitted.profiles.segments:
        tracking.log_metrics(
            {
                f"segment_size_{seg.segment_id}": seg.size,
                f"segment_share_{seg.segment_id}": seg.share,
            }
        )
    candidates = [dataclasses.asdict(c) | {"min_share": c.min_share} for c in sel.candidates]
    tracking.log_json(
        {
            "chosen_k": sel.chosen_k,
            "rule": sel.rule,
            "reason": sel.reason,
            "candidates": candidates,
        },
        "k_selection.json",
    )


def record_segments(cfg: AppConfig, fitted: Fitted) -> None:
    """The id matching and the segments artifact the next training matches against."""
    m, champion, model = fitted.matched, fitted.champion, fitted.model
    previous = champion.version if champion else None
    tracking.log_metrics(
        {"segments_kept": len(m.kept), "segments_new": len(m.pairs) - len(m.kept),
         "segments_retired": len(m.retired)}
    )  # fmt: skip
    tracking.log_json({"previous_model_version": previous, **m.as_dict()}, "segments/matching.json")
    centers = model.centers_original()
    segments = [
        {"segment_id": seg.segment_id, "name": fitted.names[seg.segment_id], "size": seg.size,
         "share": seg.share,
         "center": dict(zip(model.scaling.features, centers[seg.segment_id], strict=True))}
        for seg in fitted.profiles.segments
    ]  # fmt: skip
    tracking.log_json(
        {"as_of": cfg.features.as_of.isoformat(), "features": list(model.scaling.features),
         "max_segment_id": m.max_segment_id, "previous_model_version": previous,
         "segments": segments},
        matching.SEGMENTS_ARTIFACT,
    )  # fmt: skip
