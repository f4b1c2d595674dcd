"""A training's validation: runs the stability checks on the selection sample and the outcome
check on the events, records them in MLflow and as ``segment_validation`` rows."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from segmentation.config import AppConfig
from segmentation.modeling import backtest, clustering, sample_fit, validation
from segmentation.modeling.validation import Validation
from segmentation.runtime import tracking
from segmentation.storage import tables

log = logging.getLogger(__name__)


def validate(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    sample: np.ndarray,
    estimator: clustering.SegmentationKMeans,
    model: clustering.SegmentModel,
    features: DataFrame,
) -> Validation:
    """Bootstrap stability, split-half replication, structure and outcomes of ``model``.

    Args:
        sample: the k-selection sample (rows of scaled features, the model's space).
        estimator: the training's estimator (restarts, algorithm; the backtest refits it).
        model: the trained model with its final segment ids.
        features: the training snapshot's customer features.
    """
    t, vc = cfg.training, cfg.validation
    ids = sorted(model.centers_scaled)
    centers = np.array([model.centers_scaled[s] for s in ids])
    labels = np.array(ids)[sample_fit.nearest(sample, centers)]
    result = Validation()
    result.measures += validation.stability_measures(
        sample, labels, {s: model.centers_scaled[s] for s in ids}, vc,
        algorithm=t.algorithm, seed=t.seed, n_init=t.n_init, max_iter=t.max_iter,
    )  # fmt: skip
    check = backtest.run(spark, cfg, estimator=estimator, model=model, features=features)
    result.measures += check.measures
    if check.skipped:
        result.skipped["outcome"] = check.skipped
        log.warning("outcome validation skipped: %s", check.skipped)
    elif check.window is not None:
        result.window = (check.window.mode, check.window.start, check.window.end)
    return result


def log_validation(v: Validation) -> None:
    """Every measure as an MLflow metric, the verdicts as tags, the rows as an artifact."""
    for m in v.measures:
        if m.value is None:
            continue
        suffix = "" if m.segment_id is None else f"_{m.segment_id}"
        tracking.log_metrics({f"validation_{m.measure}{suffix}": m.value})
    structure = v.get("silhouette_euclidean")
    if structure is not None and structure.verdict:
        tracking.set_tags({"validation_structure": structure.verdict})
    tracking.set_tags({f"validation_skipped_{k}": why for k, why in v.skipped.items()})
    tracking.log_json(
        {"measures": [dataclasses.asdict(m) for m in v.measures], "skipped": v.skipped,
         "outcome_window": v.window},
        "validation/segment_validation.json",
    )  # fmt: skip


def rows(spark: SparkSession, v: Validation, lineage: tables.Lineage) -> DataFrame:
    """The ``segment_validation`` rows of one model version (long format)."""
    data = [
        (m.segment_id, m.measure, m.value, m.ci_lower, m.ci_upper, m.verdict) for m in v.measures
    ]
    body = spark.createDataFrame(data, tables.VALIDATION_ROWS)
    return tables.with_lineage(body, lineage, tables.VALIDATION)
