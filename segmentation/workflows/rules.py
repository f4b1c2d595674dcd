"""Rule-based segmentations beside clustering: RFM segments and B2B tiers, each published like
a model (membership, history, migration, drift) under its own ``model_name``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.identity import stitched
from segmentation.inputs import customers as customers_dim
from segmentation.modeling import rulesets
from segmentation.runtime import tracking
from segmentation.storage import drift, publishing, tables
from segmentation.value import segments as value_segments
from segmentation.workflows import value

log = logging.getLogger(__name__)
JOB = "rule_segments"


@dataclass
class RuleSegmentsResult:
    run_id: str
    as_of: dt.date
    publications: dict[str, publishing.Publication] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    rfm_cuts: rulesets.RfmCuts | None = None
    rfm_empty_scores: list[rulesets.EmptyScore] = field(default_factory=list)
    rfm_no_purchases: int = 0
    """Customers without a purchase up to as_of (segment ``rfm.no_purchase_segment``)."""
    dimension: customers_dim.DimensionMatch | None = None
    """How many of the snapshot's customers the customers dimension holds (B2B tiers)."""
    value: dict[str, list[value_segments.SegmentValue]] = field(default_factory=dict)
    unparseable: dict[str, int] = field(default_factory=dict)
    """Customers-dimension values the B2B tiers could not read, per config key and column."""
    """Each segment's customer value, per segmentation (when ``customer_value`` has the date)."""


@dataclass(frozen=True)
class RuleSet:
    """One rule-based segmentation of the snapshot, computed, not yet published."""

    model_name: str
    version: int
    assigned: DataFrame
    names: dict[int, str]
    model_features: tuple[str, ...]
    scores: DataFrame | None = None
    """Per-customer RFM scores (``rfm_scores``), written before the membership."""


def run(spark: SparkSession, cfg: AppConfig) -> RuleSegmentsResult:
    """RFM segments and B2B tiers of the stored ``customer_features`` snapshot of
    ``features.as_of``.

    Both segmentations are computed and checked before either is written; each is then
    published under its own ``model_name`` in a nested MLflow run, RFM with its per-customer
    scores (``rfm_scores``).

    Raises:
        InputError: no feature snapshot for the date, or a rule needs a missing column.
    """
    as_of = cfg.features.as_of
    publishing.check_layout(spark, cfg.storage)
    features = tables.read_snapshot(
        spark, cfg.storage, tables.FEATURES, as_of, key="features.as_of"
    ).cache()
    experiment_id = tracking.configure(cfg.tracking)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with tracking.run(experiment_id, f"{JOB} {as_of}") as run_id:
        result = RuleSegmentsResult(run_id=run_id, as_of=as_of)
        tracking.set_tags({"job": JOB})
        tracking.log_params({"as_of": as_of.isoformat(), "rfm.enabled": cfg.rfm.enabled,
                             "b2b.enabled": cfg.b2b.enabled})  # fmt: skip
        todo = [s for s in (_rfm(cfg, features, result), _b2b(spark, cfg, features, result)) if s]
        # Both segmentations bin the same features against a baseline: measured once.
        shared_psi: drift.FeaturePsiCache = {}
        try:
            for model_name, reason in result.skipped.items():
                log.info("%s skipped: %s", model_name, reason)
                tracking.set_tags({f"skipped.{model_name}": reason})
            for rule_set in todo:
                result.publications[rule_set.model_name] = _publish(
                    spark, cfg, rule_set, features, experiment_id, scored_at, result, shared_psi
                )
            values = value.values(spark, cfg)
            if values is not None:
                result.value = {
                    r.model_name: value_segments.segment_values(
                        r.assigned, r.names, r.model_name, values)
                    for r in todo
                }  # fmt: skip
        finally:
            for df in [features, *[r.assigned for r in todo]]:
                df.unpersist()
    return result


def _rfm(cfg: AppConfig, features: DataFrame, result: RuleSegmentsResult) -> RuleSet | None:
    rc = cfg.rfm
    if not rc.enabled:
        result.skipped[rc.model_name] = "rfm.enabled is false"
        return None
    result.rfm_cuts = rulesets.rfm_cuts(features, rc)
    scored = rulesets.score_rfm(features, rc, result.rfm_cuts).cache()
    counts = rulesets.score_counts(scored)
    result.rfm_empty_scores = rulesets.empty_scores(counts, result.rfm_cuts)
    result.rfm_no_purchases = features.count() - sum(counts["F"].values())
    for empty in result.rfm_empty_scores:
        log.warning("RFM score %s is given to no customer: %s", empty.score, empty.text())
    cell = F.concat(*[F.col(c).cast("string") for c in rulesets.SCORES])  # null without scores
    scores = scored.select(
        F.lit(cfg.features.as_of).alias(tables.AS_OF),
        F.lit(rc.model_name).alias(tables.MODEL_NAME),
        F.lit(rc.version).alias(tables.MODEL_VERSION), tables.CUSTOMER_ID,
        rulesets.R_SCORE, rulesets.F_SCORE, rulesets.M_SCORE, cell.alias("rfm_cell"),
        tables.SEGMENT_ID, tables.SEGMENT_NAME, F.lit(result.run_id).alias(tables.RUN_ID),
    )  # fmt: skip
    return RuleSet(
        model_name=rc.model_name, version=rc.version, assigned=scored,
        names=rulesets.rfm_segment_names(rc),
        model_features=(rc.recency_feature, rc.frequency_feature, rc.monetary_feature),
        scores=scores,
    )  # fmt: skip


def _b2b(
    spark: SparkSession, cfg: AppConfig, features: DataFrame, result: RuleSegmentsResult
) -> RuleSet | None:
    bc = cfg.b2b
    if not bc.enabled:
        result.skipped[bc.model_name] = "b2b.enabled is false"
        return None
    customers = stitched.customers(spark, cfg)
    if customers is None:
        result.skipped[bc.model_name] = "no customers dimension (input.customers)"
        return None
    result.dimension = customers_dim.match_dimension(
        features, customers, min_share=cfg.input.customers.min_match_share
    )
    spell = {"true_values": cfg.input.customers.true_values,
             "false_values": cfg.input.customers.false_values}  # fmt: skip
    result.unparseable = rulesets.b2b_issues(customers, bc, **spell)
    for what, n in result.unparseable.items():
        log.warning("%d value(s) of %s cannot be read (not counted as such)", n, what)
        tracking.log_metrics({f"unparseable_{what.split(' ')[0]}": n})
    tiers = rulesets.b2b_tiers(features, customers, bc, **spell).cache()
    if tiers.isEmpty():
        tiers.unpersist()
        result.skipped[bc.model_name] = f"no business accounts ({bc.business_column} is never true)"
        return None
    return RuleSet(
        model_name=bc.model_name, version=bc.version, assigned=tiers,
        names=rulesets.segment_names([t.name for t in bc.tiers]),
        model_features=(bc.spend_feature,),
    )  # fmt: skip


def _record_rfm(result: RuleSegmentsResult) -> None:
    """The cuts, the empty scores and why, and the customers without purchases, to MLflow."""
    assert result.rfm_cuts is not None
    tracking.log_json(dataclasses.asdict(result.rfm_cuts), "rfm/cuts.json")
    tracking.log_json([dataclasses.asdict(e) for e in result.rfm_empty_scores],
                      "rfm/empty_scores.json")  # fmt: skip
    tracking.log_metrics({"rfm_empty_scores": len(result.rfm_empty_scores),
                          "rfm_no_purchase_customers": result.rfm_no_purchases})  # fmt: skip
    empty = "; ".join(e.text() for e in result.rfm_empty_scores) or "none"
    tracking.set_tags({"rfm_empty_scores": empty})


def _publish(
    spark: SparkSession,
    cfg: AppConfig,
    rule_set: RuleSet,
    features: DataFrame,
    experiment_id: str,
    scored_at: dt.datetime,
    result: RuleSegmentsResult,
    shared_psi: drift.FeaturePsiCache,
) -> publishing.Publication:
    """One segmentation's publication, in its own nested MLflow run."""
    as_of = cfg.features.as_of
    with tracking.run(experiment_id, f"{rule_set.model_name} {as_of}", nested=True) as child:
        tracking.set_tags({"job": JOB, "segmentation": rule_set.model_name})
        first = []
        if rule_set.scores is not None:
            first.append(tables.snapshot_write(
                spark, cfg.storage, tables.RFM_SCORES, rule_set.scores, job=JOB, run_id=child,
                snapshot={tables.AS_OF: as_of},
            ))  # fmt: skip
        if rule_set.model_name == cfg.rfm.model_name and result.rfm_cuts is not None:
            _record_rfm(result)
        if rule_set.model_name == cfg.b2b.model_name and result.dimension is not None:
            tracking.log_metrics({"customers_dimension_match_share": result.dimension.share})
        scored = publishing.Scored(
            assigned=rulesets.as_assignment(rule_set.assigned), features=features,
            names=rule_set.names, model_features=rule_set.model_features,
            lineage=tables.Lineage(as_of, rule_set.model_name, rule_set.version, child),
            scored_at=scored_at,
        )  # fmt: skip
        pub = publishing.publish(
            spark, cfg.storage, cfg.drift, scored, job=JOB, first=first, shared_psi=shared_psi
        )
        tracking.log_metrics({f"segment_size_{sid}": n for sid, n in pub.sizes.items()})
    return pub
