"""Pieces every summary shares: number formats, the input and duplicate lines, a
publication's history, migration and drift, and the ``make`` command of a next step."""

from __future__ import annotations

import shlex

from segmentation.config import AppConfig
from segmentation.inputs.sources import InputCounts
from segmentation.storage.publishing import Publication
from segmentation.workflows.build_features import Duplicates


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"


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


def publication_lines(pub: Publication, cfg: AppConfig) -> list[str]:
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
    lines.append(psi_line(pub, cfg))
    return lines


def psi_line(pub: Publication, cfg: AppConfig) -> str:
    """The retrain rule's verdict on a publication's drift (PSI)."""
    if pub.retrain_recommended:
        return "RETRAIN RECOMMENDED: " + "; ".join(pub.retrain_reasons)
    worst = max([pub.segment_psi or 0.0, *pub.feature_psi.values()], default=0.0)
    return (
        f"Retrain not needed: every PSI <= drift.psi_threshold ({cfg.drift.psi_threshold}); "
        f"largest {worst:.3f}."
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
