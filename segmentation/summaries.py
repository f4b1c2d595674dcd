"""The terminal summaries every job prints: one place for what a user reads after a run."""

from __future__ import annotations

import shlex

from segmentation import features as feat
from segmentation.config import AppConfig
from segmentation.publishing import Publication
from segmentation.sources import InputCounts
from segmentation.validation import Measure, Validation
from segmentation.workflows.assign import AssignResult
from segmentation.workflows.attitudes import AttitudesResult
from segmentation.workflows.build_features import Duplicates, FeaturesResult, counts_text
from segmentation.workflows.generate import GenerateResult
from segmentation.workflows.maintain import MaintainResult
from segmentation.workflows.promote import PromoteResult
from segmentation.workflows.rules import RuleSegmentsResult
from segmentation.workflows.train import TrainResult

_SUMMARY_FEATURES = (
    feat.RECENCY,
    feat.FREQUENCY,
    feat.MONETARY,
    feat.AOV,
    feat.TENURE,
    feat.DISCOUNT_SHARE,
)


def training(result: TrainResult, cfg: AppConfig) -> str:
    """A readable report of a training run for the terminal."""
    lines = [*_segment_table(result), *[f"Note: {n}" for n in result.notes]]
    lines += [*_validation_lines(result), *_explanation_lines(result)]
    if result.dimension is not None:
        lines.append(f"Composition: {result.dimension.text()}")
    if "report" in result.paths:
        lines.append(f"Report: {result.paths['report']}")
    lines += [_ids_line(result), *_training_outputs(result, cfg)]
    if result.publication is not None:
        lines += _publication_lines(result.publication, cfg)
    if cfg.tracking.tracking_uri.startswith("sqlite:"):
        lines.append(
            f"  open the UI: make mlflow-ui MLFLOW_URI={cfg.tracking.tracking_uri}  (or: "
            f".venv/bin/mlflow ui --backend-store-uri {cfg.tracking.tracking_uri}), then "
            "http://127.0.0.1:5000"
        )
    return "\n".join(lines)


def _segment_table(result: TrainResult) -> list[str]:
    shown = [f for f in _SUMMARY_FEATURES if result.segments and f in result.segments[0].means]
    header = f"{'id':>3}  {'segment':<34} {'customers':>9} {'share':>6}  " + "  ".join(
        f"{f:>15}" for f in shown
    )
    lines = [
        "",
        f"Segmentation as of {result.as_of}: {result.customers} customers, "
        f"k = {result.selection.chosen_k}",
        f"  model selection ({result.selection.rule} rule): {result.selection.reason}",
        *_candidate_table(result),
        "",
        header,
        "-" * len(header),
    ]
    for s in result.segments:
        values = "  ".join(f"{_fmt(s.means.get(f)):>15}" for f in shown)
        lines.append(f"{s.segment_id:>3}  {s.name[:34]:<34} {s.size:>9} {s.share:>6.1%}  {values}")
    lines += ["", "(feature columns show segment means in original units)"]
    if result.ari_vs_truth is not None:
        lines.append(f"Adjusted Rand index vs planted archetypes: {result.ari_vs_truth:.3f}")
    return lines


def _candidate_table(result: TrainResult) -> list[str]:
    """Every candidate k with each criterion; * marks the chosen one."""
    lines = [
        f"  {'':1} {'k':>3} {'silhouette':>10} {'Calinski-H.':>12} {'smallest':>9} "
        f"{'worst Jaccard':>13}"
    ]
    for c in result.selection.candidates:
        mark = "*" if c.k == result.selection.chosen_k else ""
        worst = "-" if c.worst_jaccard is None else f"{c.worst_jaccard:.2f}"
        lines.append(
            f"  {mark:1} {c.k:>3} {c.silhouette:>10.3f} {c.calinski_harabasz:>12.0f} "
            f"{c.min_share:>9.1%} {worst:>13}"
        )
    return lines


def _validation_lines(result: TrainResult) -> list[str]:
    """The validation verdicts: the whole model, then one line per segment."""
    v = result.validation
    if v is None:
        return []
    sil, ari, half = v.get("silhouette_euclidean"), v.get("bootstrap_ari"), v.get("split_half_ari")
    head = "Validation (table segment_validation):"
    if sil is not None and sil.value is not None:
        head += f" {sil.verdict} (Euclidean silhouette {sil.value:.2f});"
    if ari is not None and ari.value is not None:
        head += f" bootstrap ARI {ari.value:.2f};"
    if half is not None and half.value is not None:
        head += f" split-half ARI {half.value:.2f} ({half.verdict})"
    lines = [head.rstrip(";")]
    chi, kw = v.get("outcome_purchase_chi2"), v.get("outcome_revenue_kruskal_h")
    if v.window is not None and chi is not None:
        p_chi, p_kw = v.get("outcome_purchase_p_value"), v.get("outcome_revenue_p_value")
        share = v.get("outcome_customer_share")
        sample = (
            f" (a {share.value:.1%} sample of customers, validation.outcome.max_customers)"
            if share is not None and share.value is not None
            else ""
        )
        lines.append(
            f"Outcomes, {v.window[0]} on ({v.window[1]}, {v.window[2]}]{sample}: purchase share: "
            f"{chi.verdict} (chi-square p={_p(p_chi)}); revenue per customer: "
            f"{kw.verdict if kw else '-'} (Kruskal-Wallis p={_p(p_kw)})"
        )
    lines += [f"Outcome check skipped: {why}" for why in v.skipped.values()]
    overall = v.get("outcome_purchase_share")
    for s in result.segments:
        lines.append(
            f"  {s.segment_id:>3} {s.name[:30]:<30} {_segment_verdicts(v, s.segment_id, overall)}"
        )
    return lines


def _segment_verdicts(v: Validation, sid: int, overall: Measure | None) -> str:
    parts = []
    jac, rep = v.get("bootstrap_jaccard", sid), v.get("split_half_agreement", sid)
    if jac is not None and jac.value is not None:
        parts.append(f"{jac.verdict} (Jaccard {jac.value:.2f})")
    if rep is not None and rep.value is not None:
        parts.append(f"{rep.verdict} ({rep.value:.0%})")
    buy = v.get("outcome_purchase_share", sid)
    if buy is not None and buy.value is not None and buy.ci_lower is not None:
        rest = f" vs {overall.value:.0%} overall" if overall and overall.value is not None else ""
        parts.append(
            f"{buy.verdict}: purchase {buy.value:.0%} [{buy.ci_lower:.0%}, {buy.ci_upper:.0%}]"
            f"{rest}"
        )
    return "; ".join(parts)


def _p(m: Measure | None) -> str:
    if m is None or m.value is None:
        return "-"
    return "<0.001" if m.value < 0.001 else f"{m.value:.3f}"


def _explanation_lines(result: TrainResult) -> list[str]:
    ex = result.explanation
    if ex is None:
        return []
    lines = [
        f"Rules (decision tree, depth {ex.rules.max_depth}) reproduce {ex.rules.fidelity:.1%} "
        "of segments (MLflow artifact explain/rules.json); e.g.:"
    ]
    for s in result.segments:
        top = ex.rules.top(s.segment_id, 1)
        if top:
            lines.append(f"  {s.segment_id:>3} {s.name[:30]:<30} {top[0].text()}")
    if ex.composition is not None and ex.composition.sensitive:
        gaps = ", ".join(f"{a} {ex.composition.max_gap(a):.1%}" for a in ex.composition.sensitive)
        lines.append(f"Sensitive attributes, largest segment-vs-population gap: {gaps}")
    return lines


def _ids_line(result: TrainResult) -> str:
    m = result.matching
    if result.previous_version is None:
        return "Segment ids: first model, numbered by size (1 = largest)."
    new_ids = [p.segment_id for p in m.pairs if p.previous_id is None]
    return (
        f"Segment ids: {len(m.kept)} kept from version {result.previous_version} (same id "
        f"and name), new: {new_ids or 'none'}, retired: {list(m.retired) or 'none'} "
        "(MLflow artifact segments/matching.json)."
    )


def _training_outputs(result: TrainResult, cfg: AppConfig) -> list[str]:
    lines = [
        "",
        f"Tables (Delta) under {cfg.storage.warehouse}/:",
        *[f"  {n:<27} version {v}" for n, v in result.table_versions.items()],
        f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}' "
        f"({cfg.tracking.tracking_uri})",
    ]
    if result.promoted:
        lines.append(
            f"  model {result.model_name} version {result.model_version} is now "
            f"@{cfg.tracking.alias}"
        )
    else:
        promote = make_command(cfg, "promote", VERSION=result.model_version)
        assign = make_command(cfg, "assign", AS_OF=result.as_of)
        lines.append(
            f"  model {result.model_name} version {result.model_version} registered as a "
            f"candidate; @{cfg.tracking.alias} is unchanged (version "
            f"{result.previous_version or 'none'}). Review it, then publish its segments:\n"
            f"    {promote} && {assign}"
        )
    return lines


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
    lines += ["", f"Tables (Delta) under {cfg.storage.warehouse}/:"]
    lines += [f"  {n:<27} version {v}" for n, v in pub.table_versions.items()]
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    lines += _publication_lines(pub, cfg)
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
    for name, reason in result.skipped.items():
        lines.append(f"{name}: skipped ({reason})")
    lines.append(f"MLflow: run {result.run_id} in experiment '{cfg.tracking.experiment}'")
    return "\n".join(lines)


def _publication_lines(pub: Publication, cfg: AppConfig) -> list[str]:
    lines = [f"History (segment_membership_history): {pub.history_mode}."]
    if pub.baseline_as_of is None:
        lines.append("No earlier snapshot: no migration matrix or drift yet.")
        return lines
    moves = pub.moves()
    lines.append(
        f"Since {pub.baseline_as_of}: {moves['stayed']} stayed, {moves['moved']} moved between "
        f"segments, {moves['entered']} entered, {moves['left']} left (table segment_migration)."
    )
    top = sorted(
        (r for r in pub.migration
         if r["from_segment_id"] is not None and r["to_segment_id"] is not None
         and r["from_segment_id"] != r["to_segment_id"]),
        key=lambda r: -r["customers"],
    )[:5]  # fmt: skip
    for r in top:
        lines.append(
            f"  {r['customers']:>7} from {r['from_segment_id']} {r['from_segment_name']} "
            f"-> {r['to_segment_id']} {r['to_segment_name']} ({r['share_of_from']:.1%})"
        )
    psi_parts = [f"segments {pub.segment_psi:.3f}"] if pub.segment_psi is not None else []
    psi_parts += [f"{f} {v:.3f}" for f, v in sorted(pub.feature_psi.items())]
    lines.append(f"PSI vs {pub.baseline_as_of}: {', '.join(psi_parts)}")
    if pub.retrain_recommended:
        lines.append("RETRAIN RECOMMENDED: " + "; ".join(pub.retrain_reasons))
    else:
        lines.append(
            f"Retrain not needed: every PSI <= drift.psi_threshold ({cfg.drift.psi_threshold})."
        )
    return lines


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"


def generation(result: GenerateResult, cfg: AppConfig) -> str:
    """What the sample generator wrote (or kept)."""
    if result.skipped:
        return f"Sample data already present under {cfg.storage.warehouse}/ (kept as is)."
    rows = ", ".join(f"{n}: {r:,} rows" for n, r in result.rows.items())
    kept = f"; kept as they were: {', '.join(result.kept)}" if result.kept else ""
    return f"Sample data written under {cfg.storage.warehouse}/ ({rows}){kept}."


def features(result: FeaturesResult, cfg: AppConfig) -> str:
    """The feature snapshot, how each input column was read, the quarantine, the exact copies
    kept and the customers-dimension match."""
    lines = [
        f"customer_features as of {result.as_of}: {result.customers:,} customers, "
        f"{len(result.feature_columns)} features, table version {result.version} "
        f"(events {result.events_path}"
        f"{'' if result.events_version is None else f' version {result.events_version}'}: "
        f"{result.input_rows:,} rows; MLflow run {result.run_id})",
        *input_lines(result.input_counts, cfg),
        f"  quarantined in rejected_events: {counts_text(result.rejected)}",
    ]
    if result.duplicates is not None:
        lines.append(f"  {duplicates_line(result.duplicates, result.input_rows, cfg)}")
    if result.dimension is not None:
        lines.append(f"  {result.dimension.text()}")
    elif cfg.customers_path() is None:
        lines.append("  no customers dimension (input.customers.path)")
    labelled = {c: lv for c, lv in result.levels.items() if feat.display_name(c, {c: lv}) != c}
    if labelled:
        lines.append("  level columns and their labels: " + ", ".join(
            f"{c} = {lv.text()}" for c, lv in sorted(labelled.items())))  # fmt: skip
    return "\n".join(lines)


def input_lines(counts: InputCounts | None, cfg: AppConfig) -> list[str]:
    """Per mapped input column: values parsed, missing (null or empty) and rejected."""
    if counts is None:
        return []
    lines = [f"  {'input column':<28} {'parsed':>12} {'null':>10} {'rejected':>10}"]
    for c in counts.columns:
        name = f"{c.column} ({c.source})" if c.source != c.column else c.column
        lines.append(f"  {name[:28]:<28} {c.parsed:>12,} {c.null:>10,} {c.rejected:>10,}")
    zone = cfg.input.events.time_zone
    if counts.day_level:
        lines.append(f"  event times carry no time of day: local days of {zone}")
    else:
        lines.append(f"  calendar days are those of {zone} (input.events.time_zone)")
    return lines


def duplicates_line(dup: Duplicates, rows: int, cfg: AppConfig) -> str:
    """Which duplicate rule ran and, where exact copies were kept, how many."""
    line = f"duplicate rule: {dup.rule} (quality.duplicates: {cfg.quality.duplicates})"
    if dup.kept_copies:
        share = dup.kept_copies / rows if rows else 0.0
        why = (
            "the event times carry no time of day, so a copy cannot be told apart from a second "
            "real purchase"
            if dup.day_level
            else "events without an id are never duplicates"
        )
        line += (
            f"; {dup.kept_copies:,} exact copies ({share:.2%} of rows) kept as separate events: "
            f"{why} (set quality.duplicates: exact to drop them)"
        )
    return line


def promotion(result: PromoteResult, cfg: AppConfig) -> str:
    previous = result.previous_version if result.previous_version is not None else "none"
    return (
        f"model {result.model_name} version {result.version} is now @{result.alias} (was "
        f"{previous}); recorded in MLflow run {result.run_id}. Publish its membership with:\n"
        f"    {make_command(cfg, 'assign', AS_OF=cfg.features.as_of)}"
    )


# Overrides the make targets set themselves (AS_OF) or that belong to one run (its run key).
_PER_RUN = ("features.as_of=", "storage.run_key=")


def make_command(cfg: AppConfig, target: str, **variables: object) -> str:
    """A ``make`` command running ``target`` with this run's config file and ``--set``
    overrides (``CONFIG``, ``ARGS``) and ``variables`` (``AS_OF``, ``VERSION``), quoted for
    the shell, so it works as printed."""
    parts = ["make", target]
    origin = cfg.origin
    if origin is not None:
        parts.append(f"CONFIG={shlex.quote(origin.config)}")
    parts += [f"{k}={shlex.quote(str(v))}" for k, v in variables.items()]
    overrides = [o for o in (origin.overrides if origin else ()) if not o.startswith(_PER_RUN)]
    if overrides:
        args = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
        parts.append(f"ARGS={shlex.quote(args)}")
    return " ".join(parts)


def maintenance(result: MaintainResult, cfg: AppConfig) -> str:
    """What VACUUM / OPTIMIZE did to each table, or which tables were upgraded."""
    if result.upgraded is not None:
        lines = [f"{n}: repartitioned, version {v}" for n, v in result.upgraded.items()]
        return "\n".join([*lines, "upgrade done" if result.upgraded else "nothing to upgrade"])
    lines = []
    verb = "deleted" if result.applied else "would delete"
    for t in result.tables:
        if t.compacted is not None:
            lines.append(
                f"{t.name}: OPTIMIZE compacted {t.compacted['files_removed']} file(s) into "
                f"{t.compacted['files_added']}"
            )
        lines.append(f"{t.name}: VACUUM {verb} {len(t.vacuumed)} file(s)")
        lines += [f"  {f}" for f in t.vacuumed]
    return "\n".join(lines) or f"no Delta tables under {cfg.storage.warehouse}"


def attitudes(result: AttitudesResult, cfg: AppConfig) -> str:
    """The attitudinal training: respondents, factors, segments, outputs."""
    an, sel = result.analysis, result.selection
    excluded = ", ".join(f"{n:,} {r}" for r, n in sorted(result.exclusions.items())) or "none"
    lines = [
        "",
        f"Attitudinal segmentation {result.model_name} v{result.model_version} as of "
        f"{result.as_of}: {result.retained:,} of {result.respondents:,} respondents "
        f"(excluded: {excluded})",
        f"  {an.n_factors} factor(s) by {an.rule}; eigenvalue > 1 would keep "
        f"{an.parallel.kaiser}; eigenvalues "
        + ", ".join(f"{v:.2f}" for v in an.parallel.observed[: an.n_factors + 2]),
    ]
    for name, variance in zip(an.names, an.solution.variance, strict=True):
        lines.append(f"    {name.full}: {variance:.1%} of the items' variance")
    if result.congruence is not None:
        lines.append(
            "  Tucker congruence with the planted loadings: "
            + ", ".join(f"{c:.3f}" for c in result.congruence)
        )
    lines += [f"  k = {sel.chosen_k} ({sel.rule} rule): {sel.reason}", ""]
    factors = [f for f in (result.segments[0].means if result.segments else {})]
    header = f"{'id':>3}  {'segment':<40} {'respondents':>11} {'share':>6}  " + "  ".join(
        f"{f[:16]:>16}" for f in factors
    )
    lines += [header, "-" * len(header)]
    for s in result.segments:
        values = "  ".join(f"{_fmt(s.means.get(f)):>16}" for f in factors)
        lines.append(
            f"{s.segment_id:>3}  {s.name[:40]:<40} {s.size:>11,} {s.share:>6.1%}  {values}"
        )
    lines.append("(factor columns: mean regression factor score per segment)")
    if result.ari_vs_truth is not None:
        lines.append(
            f"Adjusted Rand index vs planted attitudinal segments: {result.ari_vs_truth:.3f}"
        )
    outputs = ", ".join(f"{n} v{v}" for n, v in sorted(result.table_versions.items()))
    lines.append(f"Tables written: {outputs}")
    lines.append(f"Model: {result.paths.get('model_uri', '-')}")
    if "report" in result.paths:
        lines.append(f"Report: {result.paths['report']}")
    if not result.promoted:
        lines.append(
            f"Membership not published (tracking.promote=false): version {result.model_version} "
            f"is a candidate; promote it to {cfg.tracking.alias} to publish."
        )
    return "\n".join(lines)
