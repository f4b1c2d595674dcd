"""Summaries of the data jobs: the sample generator, the feature snapshot, promotion and table
maintenance."""

from __future__ import annotations

from segmentation.config import AppConfig
from segmentation.features.levels import display_name
from segmentation.inputs.quality import counts_text
from segmentation.workflows.build_features import FeaturesResult
from segmentation.workflows.generate import GenerateResult
from segmentation.workflows.maintain import MaintainResult
from segmentation.workflows.promote import PromoteResult
from segmentation.workflows.summaries.common import duplicates_line, input_lines, make_command


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
    if result.mode != "full" or cfg.features.mode != "full":
        read = "" if result.new_rows is None else f", {result.new_rows:,} new input rows read"
        lines.insert(1, f"  features.mode: {result.mode}{read} ({result.mode_reason})")
    if result.duplicates is not None:
        lines.append(f"  {duplicates_line(result.duplicates, result.input_rows, cfg)}")
    if result.dimension is not None:
        lines.append(f"  {result.dimension.text()}")
    elif cfg.customers_path() is None:
        lines.append("  no customers dimension (input.customers.path)")
    labelled = {c: lv for c, lv in result.levels.items() if display_name(c, {c: lv}) != c}
    if labelled:
        lines.append("  level columns and their labels: " + ", ".join(
            f"{c} = {lv.text()}" for c, lv in sorted(labelled.items())))  # fmt: skip
    return "\n".join(lines)


def promotion(result: PromoteResult, cfg: AppConfig) -> str:
    previous = result.previous_version if result.previous_version is not None else "none"
    return (
        f"model {result.model_name} version {result.version} is now @{result.alias} (was "
        f"{previous}); recorded in MLflow run {result.run_id}. Publish its membership with:\n"
        f"    {make_command(cfg, 'assign', AS_OF=cfg.features.as_of)}"
    )


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
