"""What explains a trained model, and where it goes: rules, composition, pictures, the HTML
report (MLflow artifacts, and a file next to the tables)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from segmentation.config import ExplainConfig, StorageConfig, join_path
from segmentation.explain import composition as composition_mod
from segmentation.explain import pictures, profiling, report
from segmentation.explain import rules as rules_mod
from segmentation.features.levels import LevelLabel
from segmentation.modeling import clustering, model_selection
from segmentation.modeling.validation import Validation
from segmentation.runtime import tracking
from segmentation.storage import files, tables
from segmentation.value.segments import SegmentValue

log = logging.getLogger(__name__)


@dataclass
class Explained:
    """What explains a trained model: rules, composition and pictures (PNG bytes)."""

    rules: rules_mod.RuleExplanation
    composition: composition_mod.Composition | None
    pictures: dict[str, bytes]
    notes: list[str] = field(default_factory=list)


def explain_model(
    spark: SparkSession,
    ec: ExplainConfig,
    *,
    customers: DataFrame | None,
    model: clustering.SegmentModel,
    assigned: DataFrame,
    profiles: profiling.Profiles,
    names: Mapping[int, str],
    selection: model_selection.KSelection,
    seed: int,
) -> Explained:
    """Decision-tree rules, composition on the customers dimension and the pictures.

    Raises:
        ConfigError: a sensitive attribute is among the model's features.
    """
    features = model.scaling.features
    composition_mod.check_not_sensitive(features, ec.sensitive_attributes)
    rules = rules_mod.explain_with_rules(
        assigned, features, [s.segment_id for s in profiles.segments],
        max_depth=ec.rules_max_depth, seed=seed,
    )  # fmt: skip
    notes = []
    if rules.fidelity < ec.min_rule_fidelity:
        notes.append(
            f"The rules reproduce only {rules.fidelity:.1%} of customers' segments (below "
            f"explain.min_rule_fidelity {ec.min_rule_fidelity:.0%}): read them as hints."
        )
        log.warning(notes[-1])
    composition = None
    if customers is None:
        notes.append("No customers dimension (input.customers): composition not reported.")
        log.info(notes[-1])
    else:
        composition = composition_mod.composition(
            assigned, customers, ec.composition_attributes, sensitive=ec.sensitive_attributes,
            bins=ec.bins, max_levels=ec.max_levels,
        )  # fmt: skip
    projection = pictures.pca_projection(
        assigned, model.scaling, sample_rows=ec.plot_sample_rows, seed=seed
    )
    drawn = {
        "k_selection": pictures.k_selection_png(selection),
        "segment_sizes": pictures.sizes_png(profiles, names),
        "profile_heatmap": pictures.heatmap_png(profiles, names, profiles.features),
        "pca": pictures.pca_png(projection, names),
    }
    return Explained(rules=rules, composition=composition, pictures=drawn, notes=notes)


def log_explanation(explained: Explained, ec: ExplainConfig) -> None:
    """Rules, importances, composition and pictures as MLflow metrics, tags and artifacts."""
    rules = explained.rules
    tracking.log_metrics({"rules_fidelity": rules.fidelity})
    tracking.set_tags({"rules_fidelity_ok": str(rules.fidelity >= ec.min_rule_fidelity).lower()})
    tracking.log_metrics({f"rules_fidelity_{sid}": v for sid, v in rules.segment_fidelity.items()})
    tracking.log_metrics({f"feature_importance_{f}": v for f, v in rules.importances.items()})
    tracking.log_json(rules.as_dict(ec.rules_per_segment), "explain/rules.json")
    tracking.log_json(
        {"feature_importances": rules.importances, "features": list(rules.features)},
        "explain/feature_importances.json",
    )
    tracking.log_text(rules.tree, "explain/decision_tree.txt")
    comp = explained.composition
    if comp is not None:
        rows = [dict(zip(tables.COMPOSITION_ROWS.names, r, strict=True)) for r in comp.rows]
        tracking.log_json(
            {"attributes": list(comp.attributes), "sensitive": list(comp.sensitive),
             "not_in_customers_dimension": list(comp.missing), "rows": rows},
            "explain/composition.json",
        )  # fmt: skip
        tracking.log_metrics({f"sensitive_max_gap_{a}": comp.max_gap(a) for a in comp.sensitive})
    tracking.log_files({f"{name}.png": png for name, png in explained.pictures.items()}, "plots")


def composition_rows(
    spark: SparkSession, comp: composition_mod.Composition, names: Mapping[int, str]
) -> DataFrame:
    """The composition rows with segment names (``segment_composition`` without lineage)."""
    rows = [(r[0], names[r[0]], *r[1:]) for r in comp.rows]
    without_lineage = tables.COMPOSITION_SCHEMA.fields[len(tables.LINEAGE) :]
    return spark.createDataFrame(rows, T.StructType(without_lineage))


@dataclass(frozen=True)
class ReportContext:
    """Which model a report is about."""

    model_name: str
    model_version: int
    run_id: str
    as_of: dt.date
    customers: int


def write_report(
    storage: StorageConfig,
    ec: ExplainConfig,
    explained: Explained,
    context: ReportContext,
    *,
    selection: model_selection.KSelection,
    features: Sequence[str],
    profiles: profiling.Profiles,
    names: Mapping[int, str],
    validation: Validation | None = None,
    labels: Mapping[str, LevelLabel] | None = None,
    value: Sequence[SegmentValue] | None = None,
) -> str:
    """The HTML report, logged to MLflow and written under ``<warehouse>/reports/``.

    ``labels``: the raw labels of level columns (``features.level_labels``), shown with their
    column names.
    """
    html = report.render_html(
        report.ReportData(
            model_name=context.model_name, model_version=context.model_version,
            run_id=context.run_id, as_of=context.as_of, customers=context.customers,
            chosen_k=selection.chosen_k, k_reason=selection.reason, features=tuple(features),
            profiles=profiles, names=names, rules=explained.rules,
            rules_per_segment=ec.rules_per_segment, composition=explained.composition,
            pictures=explained.pictures,
            created_at=dt.datetime.now(dt.UTC).replace(microsecond=0), notes=explained.notes,
            validation=validation, selection=selection, labels=dict(labels or {}),
            value=value,
        )
    )  # fmt: skip
    name = (
        f"segment_report_{context.model_name}_v{context.model_version}_"
        f"{context.as_of.isoformat()}.html"
    )
    tracking.log_text(html, f"report/{name}")
    location = join_path(storage.table_path(tables.REPORTS_DIR), name)
    path = files.write_file(location, html.encode("utf-8"))
    tracking.set_tags({"report_path": path})
    return path
