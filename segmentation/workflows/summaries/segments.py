"""Summaries of the trainings: the behavioural segments (k selection, segments, validation,
explanation, ids, outputs) and the attitudinal ones (factors and segments)."""

from __future__ import annotations

from segmentation.config import AppConfig
from segmentation.features import behaviour as feat
from segmentation.modeling.validation import Measure, Validation
from segmentation.workflows.attitudes import AttitudesResult
from segmentation.workflows.summaries.common import fmt, make_command, publication_lines
from segmentation.workflows.summaries.value import by_segment_lines
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
    if result.value is not None:
        lines += by_segment_lines({result.model_name: result.value})
    lines += [*_validation_lines(result), *_explanation_lines(result)]
    if result.dimension is not None:
        lines.append(f"Composition: {result.dimension.text()}")
    if "report" in result.paths:
        lines.append(f"Report: {result.paths['report']}")
    lines += [_ids_line(result), *_training_outputs(result, cfg)]
    if result.publication is not None:
        lines += publication_lines(result.publication, cfg)
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
        values = "  ".join(f"{fmt(s.means.get(f)):>15}" for f in shown)
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
    why = "".join(
        f"\n    {p.segment_id:>3} {'kept' if p.previous_id is not None else 'new '}: {p.reason}"
        for p in sorted(m.pairs, key=lambda p: p.segment_id)
    )
    return (
        f"Segment ids: {len(m.kept)} kept from version {result.previous_version} (same id "
        f"and name), new: {new_ids or 'none'}, retired: {list(m.retired) or 'none'} "
        f"(MLflow artifact segments/matching.json):{why}"
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
    if result.declined:
        lines.append(
            "  no-answer labels read as missing answers (attitudes.items.missing_answers): "
            + ", ".join(f"{i} {n:,}" for i, n in sorted(result.declined.items()))
        )
    if result.invalid_answers:
        lines.append(
            "  invalid answers read as missing (attitudes.items.invalid_answers: "
            "missing): "
            + ", ".join(f"{i} {n:,}" for i, n in sorted(result.invalid_answers.items()))
        )
    lines += [f"  note: {n}" for n in an.notes]
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
        values = "  ".join(f"{fmt(s.means.get(f)):>16}" for f in factors)
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
