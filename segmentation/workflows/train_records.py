"""A behavioural training's fitted state (``Fitted``) and what it records in its MLflow run:
params, the resolved config, the model selection, segment sizes and the id matching. The pieces
both trainings share (the segments artifact, profiles, publishing) are in ``records``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame

from segmentation.config import AppConfig, flatten, to_dict
from segmentation.modeling import clustering, restarts
from segmentation.modeling.validation import Validation
from segmentation.runtime import tracking
from segmentation.storage import tables
from segmentation.value import segments
from segmentation.workflows import records


@dataclass
class Fitted(records.Trained):
    """A fitted model on one snapshot, before anything is recorded or written."""

    features: DataFrame
    features_version: int | None
    customers: int
    estimator: clustering.SegmentationKMeans
    sample: np.ndarray
    """The k-selection sample (scaled features): the validation's ground."""
    validation: Validation | None = None
    value: list[segments.SegmentValue] | None = None
    """Each segment's customer value (None: no ``customer_value`` of this date)."""


def record_training(cfg: AppConfig, fitted: Fitted) -> None:
    """Params, the resolved config and the model selection, to the active run."""
    t, sel, model = cfg.training, fitted.selection, fitted.model
    champion = fitted.champion
    transforms = zip(model.scaling.features, model.scaling.transforms, strict=True)
    tracking.log_params(
        {"algorithm": t.algorithm, "k_min": t.k_min, "k_max": t.k_max, "seed": t.seed,
         "max_iter": t.max_iter, "n_init": t.n_init, "selection_seed": sel.chosen.seed,
         "final_fit_seed": restarts.final_start(fitted.final_seed),
         "features": ",".join(t.features),
         "transforms": ",".join(f"{f}:{tr}" for f, tr in transforms),
         "selection_sample_rows": sel.sample_rows, "min_segment_share": t.min_segment_share,
         "silhouette_tolerance": t.silhouette_tolerance, "k_rule": t.k_rule, "k": t.k,
         "stable_jaccard": t.stable_jaccard,
         "selection_bootstrap_samples": t.selection_bootstrap_samples,
         "match_max_distance": t.match_max_distance, "match_min_jaccard": t.match_min_jaccard,
         "scaling": model.scaling.method, "clip": model.scaling.clip,
         "near_constant_share": t.near_constant_share,
         "scaling_fallbacks": ",".join(model.scaling.fallbacks) or "none",
         "previous_model_version": champion.version if champion else "none",
         "as_of": cfg.features.as_of.isoformat(),
         "input.customer_features.path": tables.path(cfg.storage, tables.FEATURES),
         "input.customer_features.version": fitted.features_version}
    )  # fmt: skip
    tracking.log_json(flatten(to_dict(cfg)), "config/resolved_config.json")
    records.record_selection(sel)
    for c in sel.candidates:
        tracking.log_metrics({f"silhouette_k{c.k}": c.silhouette, f"cost_k{c.k}": c.cost})
    tracking.log_metrics({"chosen_k": sel.chosen_k, "customers": fitted.customers})
    for seg in fitted.profiles.segments:
        tracking.log_metrics(
            {
                f"segment_size_{seg.segment_id}": seg.size,
                f"segment_share_{seg.segment_id}": seg.share,
            }
        )
    if fitted.value is not None:
        tracking.log_json([dataclasses.asdict(v) for v in fitted.value], "value/segments.json")
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


def record_matching(fitted: Fitted) -> None:
    """How the new segments matched the champion's: kept, new and retired ids."""
    m, champion = fitted.matched, fitted.champion
    previous = champion.version if champion else None
    tracking.log_metrics(
        {"segments_kept": len(m.kept), "segments_new": len(m.pairs) - len(m.kept),
         "segments_retired": len(m.retired)}
    )  # fmt: skip
    tracking.log_json({"previous_model_version": previous, **m.as_dict()}, "segments/matching.json")
