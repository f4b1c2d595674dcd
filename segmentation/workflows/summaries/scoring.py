"""Summaries of the scoring jobs: the champion's assignment of a date and the rule-based
segmentations."""

from __future__ import annotations

from segmentation.config import AppConfig
from segmentation.inputs.quality import counts_text
from segmentation.workflows.assign import AssignResult
from segmentation.workflows.rules import RuleSegmentsResult
from segmentation.workflows.summaries.common import psi_line, publication_lines
from segmentation.workflows.summaries.value import by_segment_lines


def assignment(result: AssignResult, cfg: AppConfig) -> str:
    """A readable report of an assignment run for the terminal."""
    pub = result.publication
    features = (
        "reused the stored customer_features snapshot"
        if result.features_reused
        else "computed customer_features from the events (quarantined: "
        + (counts_text(result.rejected) if result.rejected else "none")
        + ")"
    )
    lines = [
        "",
        f"Segments as of {pub.as_of}: {pub.customers} customers scored with "
        f"{result.model_name} version {result.model_version} (@{cfg.tracking.alias}); "
        f"{features}",
        "",
        f"{'id':>3}  {'segment':<40} {'customers':>9} {'share':>6}",
    ]
    for sid in sorted(pub.names):
        n = pub.sizes.get(sid, 0)
        share = n / pub.customers if pub.customers else 0.0
        lines.append(f"{sid:>3}  {pub.names[sid][:40]:<40} {n:>9} {share:>6.1%}")
    if result.value is not None:
        lines += by_segment_lines({result.model_name: result.value})
    lines += ["", f"Tables (Delta) under {cfg.storage.warehouse}/:"]
    lines += [f"  {n:<27} version {v}" for n, v in pub.table_versions.items()]
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    lines += publication_lines(pub, cfg)
    return "\n".join(lines)


def rules(result: RuleSegmentsResult, cfg: AppConfig) -> str:
    """A readable report of a rule_segments run for the terminal."""
    lines = ["", f"Rule-based segmentations as of {result.as_of}:"]
    if result.rfm_cuts is not None:
        c = result.rfm_cuts
        lines.append(
            f"  RFM quintile cuts of the buyers ({cfg.rfm.monetary_feature} for M): recency "
            f"{list(c.recency)}, frequency {list(c.frequency)}, "
            f"monetary {[round(v, 2) for v in c.monetary]}"
        )
        lines.append(
            f"  {result.rfm_no_purchases} customer(s) without a purchase up to {result.as_of}: "
            f"segment '{cfg.rfm.no_purchase_segment}', no scores"
        )
        if result.rfm_empty_scores:
            lines.append("  RFM scores given to no one (ties share a score):")
            lines += [f"    {e.text()}" for e in result.rfm_empty_scores]
    if result.dimension is not None:
        lines.append(f"  B2B tiers: {result.dimension.text()}")
    for what, n in sorted(result.unparseable.items()):
        lines.append(
            f"  {n:,} value(s) of {what} cannot be read (e.g. 'n/a', 'many'): not counted as "
            "such; ranges like 51-200 count as their lower bound, 1,000 as 1000"
        )
    for name, pub in result.publications.items():
        lines += ["", f"{name} (version {pub.model_version}): {pub.customers} customers"]
        for sid in sorted(pub.names):
            n = pub.sizes.get(sid, 0)
            share = n / pub.customers if pub.customers else 0.0
            lines.append(f"  {sid:>3}  {pub.names[sid][:32]:<32} {n:>9} {share:>6.1%}")
        if pub.baseline_as_of is not None:
            moves = pub.moves()
            lines.append(
                f"  since {pub.baseline_as_of}: {moves['stayed']} stayed, {moves['moved']} "
                f"moved, {moves['entered']} entered, {moves['left']} left"
            )
            lines.append(f"  {psi_line(pub, cfg)}")
    for name, reason in result.skipped.items():
        lines.append(f"{name}: skipped ({reason})")
    lines += by_segment_lines(result.value)
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    return "\n".join(lines)
