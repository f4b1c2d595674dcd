"""Drift of one membership snapshot against a baseline snapshot, and the retrain rule.

PSI (population stability index, ``history.psi``) of the segment shares and of every numeric
feature, with the baseline's deciles as bins; the clustering features decide.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from segmentation.config import DriftConfig, StorageConfig
from segmentation.storage import history, tables

log = logging.getLogger(__name__)


@dataclass
class Drift:
    """PSI against the baseline snapshot and the reasons to retrain (empty: none)."""

    baseline_as_of: dt.date
    segment_psi: float
    feature_psi: dict[str, float] = field(default_factory=dict)
    other_feature_psi: dict[str, float] = field(default_factory=dict)
    retrain_reasons: list[str] = field(default_factory=list)


def retrain_reasons(
    segment_psi: float, feature_psi: Mapping[str, float], threshold: float
) -> list[str]:
    """The retrain rule: every PSI above ``threshold`` (``drift.psi_threshold``) is a reason.

    Args:
        segment_psi: PSI of the segment shares.
        feature_psi: PSI of each clustering feature (other features never decide).
        threshold: usual reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift.
    """
    reasons = []
    if segment_psi > threshold:
        reasons.append(
            f"segment shares moved: PSI {segment_psi:.3f} > drift.psi_threshold {threshold}"
        )
    for feature, value in feature_psi.items():
        if value > threshold:
            reasons.append(
                f"feature {feature} drifted: PSI {value:.3f} > drift.psi_threshold {threshold}"
            )
    return reasons


def measure(
    spark: SparkSession,
    storage: StorageConfig,
    dc: DriftConfig,
    *,
    baseline_as_of: dt.date,
    baseline_sizes: Mapping[int, int],
    sizes: Mapping[int, int],
    features: DataFrame,
    model_features: Sequence[str],
    shared: FeaturePsiCache | None = None,
) -> Drift:
    """PSI of segment shares and of each numeric feature against the baseline snapshot.

    Every numeric feature is measured (and logged); only ``model_features`` decide. Without a
    stored ``customer_features`` snapshot for the baseline there is no feature PSI (logged).

    Args:
        shared: feature PSI already measured for the same ``features`` frame, by baseline
            date; a job publishing several segmentations of one snapshot (RFM and B2B tiers)
            passes the same dict, so the features are binned once per baseline.
    """
    segment_psi = history.psi(baseline_sizes, sizes)
    drift = Drift(baseline_as_of=baseline_as_of, segment_psi=segment_psi)
    measured = _feature_psi(spark, storage, dc, baseline_as_of, features, model_features, shared)
    for d in measured:
        target = drift.feature_psi if d.feature in model_features else drift.other_feature_psi
        target[d.feature] = d.psi
    drift.retrain_reasons = retrain_reasons(segment_psi, drift.feature_psi, dc.psi_threshold)
    return drift


FeaturePsiCache = dict[tuple[dt.date, int], dict[str, history.FeatureDrift]]
"""Feature PSI by (baseline date, bins), then by feature: see ``measure``'s ``shared``."""


def _feature_psi(
    spark: SparkSession,
    storage: StorageConfig,
    dc: DriftConfig,
    baseline_as_of: dt.date,
    features: DataFrame,
    model_features: Sequence[str],
    shared: FeaturePsiCache | None,
) -> list[history.FeatureDrift]:
    """The PSI of ``model_features`` and every other numeric feature (``shared`` first)."""
    key = (baseline_as_of, dc.psi_bins)
    known = shared.get(key, {}) if shared is not None else {}
    base = tables.read(spark, storage, tables.FEATURES, partitions={tables.AS_OF: baseline_as_of})
    numeric = [f for f in numeric_features(features) if f in base.columns]
    wanted = [*model_features, *[f for f in numeric if f not in model_features]]
    todo = [f for f in wanted if f not in known]
    if todo and base.isEmpty():
        log.warning("no customer_features snapshot for %s: no feature PSI", baseline_as_of)
        return []
    if todo:
        known = {**known, **{d.feature: d for d in history.feature_psi(
            base, features, todo, bins=dc.psi_bins)}}  # fmt: skip
        if shared is not None:
            shared[key] = known
    return [known[f] for f in wanted if f in known]


def numeric_features(features: DataFrame) -> list[str]:
    """The numeric feature columns of a customer_features frame (not its keys)."""
    from pyspark.sql import types as T

    return [
        f.name
        for f in features.schema.fields
        if f.name not in (tables.CUSTOMER_ID, tables.AS_OF)
        and isinstance(f.dataType, T.NumericType)
    ]
