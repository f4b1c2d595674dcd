"""Summaries of the audiences build and of a campaign's measurement."""

from __future__ import annotations

import datetime as dt
import math

from segmentation.activation.measurement import ALL
from segmentation.config import AppConfig
from segmentation.storage.tables import GLOBAL_HOLDOUT, HOLDOUT, TREATMENT
from segmentation.workflows.audiences import AudiencesResult
from segmentation.workflows.campaigns import CampaignResult


def audiences(result: AudiencesResult, cfg: AppConfig) -> str:
    """The audiences built, their groups and exclusions, for the terminal."""
    lines = [
        f"Audiences as of {result.as_of} (MLflow run {result.run_id}): "
        f"{len(result.audiences)} built into audience_members and audience_history"
    ]
    lines.append(
        f"  consent: {result.consent_path or 'NONE CONFIGURED'}; suppression: "
        f"{result.suppression_path or 'none'}; global holdout share "
        f"{result.global_holdout_share:.1%}"
    )
    for name, (ids, missing, _) in sorted(result.unmatched.items()):
        lines.append(f"  {name}: {ids:,} customer ids, {missing:,} match no scored customer")
    for c in result.audiences:
        segments = ", ".join(f"{sid} {name}" for sid, name in c.segments)
        excluded = ", ".join(f"{k} {v:,}" for k, v in sorted(c.excluded.items())) or "none"
        lines += [
            f"  {c.name} ({c.channel}; {c.model_name}: {segments}): {c.candidates:,} selected, "
            f"{c.members:,} members: treatment {c.groups.get(TREATMENT, 0):,}, holdout "
            f"{c.groups.get(HOLDOUT, 0):,}, global holdout {c.groups.get(GLOBAL_HOLDOUT, 0):,}"
            f" (holdout_share {c.holdout_share:.0%}); excluded: {excluded}",
        ]
        if c.sensitive_gaps:
            gaps = ", ".join(f"{a} {g:.0%}" for a, g in sorted(c.sensitive_gaps.items()))
            lines.append(f"    treatment group vs all customers, largest gap: {gaps}")
        if c.export:
            lines.append(f"    treatment group exported to {c.export}")
    lines += [f"WARNING: {w}" for w in result.warnings]
    versions = ", ".join(f"{k} v{v}" for k, v in sorted(result.versions.items()))
    lines.append(f"  versions: {versions}")
    lines.append("  an activation tool reads the increments with readChangeFeed on "
                 "audience_members (docs: Act on the segments)")  # fmt: skip
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:+.2%}"


def _pp(x: float) -> str:
    """An absolute difference of two shares, in percentage points."""
    return "-" if math.isnan(x) else f"{100 * x:+.2f} pp"


def campaign(result: CampaignResult, cfg: AppConfig) -> str:
    """Lift per segment with its interval, for the terminal."""
    end = result.launch + dt.timedelta(days=result.days)
    lines = [
        f"Campaign {result.audience} launched {result.launch}, {result.days} days (groups as "
        f"built on {result.scored_as_of}; MLflow run {result.run_id}); window ends "
        f"{end}",
        f"  {'segment':<28} {'treated':>8} {'held out':>8} "
        f"{'conversion lift, points (95% CI); relative':>52} "
        f"{'revenue/customer lift (95% CI)':>36}  notes",
    ]
    for r in result.results:
        name = "all segments" if r.segment_name == ALL else f"{r.segment_id} {r.segment_name}"
        conv, rev = r.conversion, r.revenue
        conv_text = (f"{_pp(conv.absolute)} [{_pp(conv.absolute_lower)}, "
                     f"{_pp(conv.absolute_upper)}]; {_pct(conv.relative)}")  # fmt: skip
        rev_text = (f"{rev.absolute:+,.2f} [{rev.absolute_lower:+,.2f}, "
                    f"{rev.absolute_upper:+,.2f}]")  # fmt: skip
        lines.append(f"  {name[:28]:<28} {r.treatment.n:>8,} {r.holdout.n:>8,} "
                     f"{conv_text:>52} {rev_text:>36}  {', '.join(r.notes)}")  # fmt: skip
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines.append(f"  campaign_results version {result.versions.get('campaign_results')}; page: "
                 f"{result.paths.get('page')}")  # fmt: skip
    return "\n".join(lines)
