"""Build the configured audiences as of ``features.as_of`` (``jobs/build_audiences.py``).

Every audience is selected and checked first (segments, condition, consent, suppression, the
date against its history), so a bad audience changes no table; then, per audience, one MERGE
into ``audience_members`` (change data feed) and one into ``audience_history`` (SCD2), and the
optional export of its treatment group. One MLflow run with every count; the composition review
of sensitive attributes runs on each audience's treatment group.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.activation import consent, members, selection
from segmentation.activation.groups import expected_holdout_share
from segmentation.config import AppConfig, join_path
from segmentation.errors import InputError
from segmentation.explain import composition
from segmentation.identity import stitched
from segmentation.runtime import timing, tracking
from segmentation.storage import tables
from segmentation.storage.tables import AUDIENCE, CUSTOMER_ID, GROUP, SEGMENT_ID, SEGMENT_NAME
from segmentation.value.segments import VALUE_COLUMNS
from segmentation.workflows import value

log = logging.getLogger(__name__)
JOB = "build_audiences"


@dataclass
class AudienceCounts:
    """One audience's outcome: who was selected, excluded (per reason) and in each group."""

    name: str
    model_name: str
    channel: str
    holdout_share: float
    segments: tuple[tuple[int, str], ...]
    candidates: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    by_segment: dict[str, dict[str, int]] = field(default_factory=dict)
    sensitive_gaps: dict[str, float] = field(default_factory=dict)
    export: str | None = None

    @property
    def members(self) -> int:
        return sum(self.groups.values())


@dataclass
class AudiencesResult:
    as_of: object
    run_id: str
    audiences: list[AudienceCounts]
    consent_path: str | None
    suppression_path: str | None
    global_holdout_share: float
    versions: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unmatched: dict[str, tuple[int, int, list[str]]] = field(default_factory=dict)
    """Per input (consent, suppression): its customer ids, how many match no customer of the
    audiences' segmentations at as_of, and a few of those."""


def run(spark: SparkSession, cfg: AppConfig) -> AudiencesResult:
    """Select, check, then write every configured audience.

    Raises:
        InputError: no audience configured; an unknown segment or column, a predicate that is
            not true/false, no membership snapshot of the date, a consent or suppression input
            that cannot be read, a date before an audience's latest build.
    """
    ac, as_of = cfg.audiences, cfg.features.as_of
    if not ac.definitions:
        raise InputError("audiences.definitions lists no audience: define one (docs: Act on the "
                         "segments)")  # fmt: skip
    perms = consent.permissions(spark, cfg)
    history = _history(spark, cfg)
    for audience in ac.definitions:
        members.check_forward(history, audience.name, as_of)
    columns = _columns(spark, cfg) if any(a.condition for a in ac.definitions) else None
    chosen = [selection.select(spark, cfg, a, columns) for a in ac.definitions]
    decided = [selection.decided(s, perms, salt=ac.salt, global_share=ac.global_holdout_share)
               for s in chosen]  # fmt: skip
    everyone = decided[0]
    for d in decided[1:]:
        everyone = everyone.unionByName(d)
    everyone = everyone.cache()
    try:
        counts = _counts(everyone, chosen)
        _review(spark, cfg, everyone, counts)
        unmatched = _unmatched(spark, cfg, perms, {s.model_name for s in chosen})
        experiment_id = tracking.configure(cfg.tracking)
        with tracking.run(experiment_id, f"{JOB} {as_of}") as run_id:
            result = AudiencesResult(as_of, run_id, counts, perms.consent_path,
                                     perms.suppression_path, ac.global_holdout_share,
                                     unmatched=unmatched)  # fmt: skip
            _record(cfg, result)
            _write(spark, cfg, everyone, history, result)
            result.warnings += _stale(spark, cfg)
        return result
    finally:
        everyone.unpersist()


def _history(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    if not tables.exists(spark, cfg.storage, tables.AUDIENCE_HISTORY):
        return None
    return tables.read(spark, cfg.storage, tables.AUDIENCE_HISTORY)


def _columns(spark: SparkSession, cfg: AppConfig) -> DataFrame | None:
    """What conditions may name: the feature snapshot of the date, and customer value."""
    out = None
    if tables.exists(spark, cfg.storage, tables.FEATURES):
        features = tables.read(spark, cfg.storage, tables.FEATURES,
                               partitions={tables.AS_OF: cfg.features.as_of})  # fmt: skip
        lineage = {tables.AS_OF, tables.RUN_ID, SEGMENT_ID, SEGMENT_NAME, "model_name",
                   "model_version"}  # fmt: skip
        out = features.select(*[c for c in features.columns if c not in lineage])
    valued = value.values(spark, cfg) if cfg.value.enabled else None
    if valued is not None:
        valued = valued.select(CUSTOMER_ID, *VALUE_COLUMNS)
        out = valued if out is None else out.drop(*VALUE_COLUMNS).join(valued, CUSTOMER_ID, "left")
    return out


def _counts(everyone: DataFrame, chosen: list[selection.Selected]) -> list[AudienceCounts]:
    """Per audience and segment: candidates, exclusions per reason, members per group."""
    label = F.coalesce(F.col(selection.REASON), F.col(GROUP))
    rows = everyone.groupBy(AUDIENCE, SEGMENT_ID, label.alias("what")).count().collect()
    out = []
    for s in chosen:
        a = s.audience
        c = AudienceCounts(a.name, s.model_name, a.channel.strip().lower(), a.holdout_share,
                           s.segments)  # fmt: skip
        for r in (r for r in rows if r[AUDIENCE] == a.name):
            n, what = int(r["count"]), str(r["what"])
            c.candidates += n
            bucket = c.groups if what in (tables.TREATMENT, tables.HOLDOUT,
                                          tables.GLOBAL_HOLDOUT) else c.excluded  # fmt: skip
            bucket[what] = bucket.get(what, 0) + n
            per = c.by_segment.setdefault(str(r[SEGMENT_ID]), {})
            per[what] = per.get(what, 0) + n
        out.append(c)
    return out


def _unmatched(
    spark: SparkSession, cfg: AppConfig, perms: consent.Permissions, models: set[str]
) -> dict[str, tuple[int, int, list[str]]]:
    """Consent and suppression ids that match no scored customer: written differently from the
    events' ids (``17850.0`` for ``17850``), or customers never scored."""
    known = None
    for model in sorted(models):
        ids = selection.membership(spark, cfg, model, "model_name").select(CUSTOMER_ID)
        known = ids if known is None else known.unionByName(ids)
    assert known is not None
    out = {}
    for name, rows in (("consent", perms.consent), ("suppression", perms.suppression)):
        if rows is None:
            continue
        ids = rows.select(CUSTOMER_ID).distinct()
        missing = ids.join(known.distinct(), CUSTOMER_ID, "left_anti").cache()
        examples = [r[0] for r in missing.limit(3).collect()]
        out[name] = (ids.count(), missing.count(), examples)
        missing.unpersist()
    return out


def _stale(spark: SparkSession, cfg: AppConfig) -> list[str]:
    """Audiences still in audience_members that the configuration no longer defines."""
    rows = tables.read(spark, cfg.storage, tables.AUDIENCE_MEMBERS).select(AUDIENCE).distinct()
    defined = {a.name for a in cfg.audiences.definitions}
    stale = sorted(r[0] for r in rows.collect() if r[0] not in defined)
    if not stale:
        return []
    path = tables.path(cfg.storage, tables.AUDIENCE_MEMBERS)
    return [
        f"audience_members still holds {stale}, which audiences.definitions no longer lists: "
        "their rows stay and an activation tool keeps syncing them. Retire one with DELETE "
        f"FROM delta.`{path}` WHERE audience = '<name>' (the change feed then deletes its "
        "members)"
    ]


def _review(
    spark: SparkSession, cfg: AppConfig, everyone: DataFrame, counts: list[AudienceCounts]
) -> None:
    """The composition of each treatment group on the sensitive attributes, against every
    customer of the segmentation: the largest gap per attribute (``sensitive_gaps``)."""
    sensitive = cfg.explain.sensitive_attributes
    dimension = stitched.customers(spark, cfg) if sensitive else None
    if dimension is None:
        return
    for c in counts:
        base = selection.membership(spark, cfg, c.model_name, "model_name").select(CUSTOMER_ID)
        treated = everyone.where((F.col(AUDIENCE) == c.name) & (F.col(GROUP) == tables.TREATMENT))
        flagged = base.join(treated.select(CUSTOMER_ID, F.lit(1).alias("_t")), CUSTOMER_ID, "left")
        assigned = flagged.select(CUSTOMER_ID, F.coalesce("_t", F.lit(0)).alias(SEGMENT_ID))
        review = composition.composition(
            assigned, dimension, (), sensitive=sensitive, bins=cfg.explain.bins,
            max_levels=cfg.explain.max_levels,
        )  # fmt: skip
        for attribute in review.sensitive:
            gaps = [abs(r[4] - r[5]) for r in review.rows if r[1] == attribute and r[0] == 1]
            c.sensitive_gaps[attribute] = max(gaps, default=0.0)


def _record(cfg: AppConfig, result: AudiencesResult) -> None:
    ac = cfg.audiences
    tracking.set_tags({"job": JOB, "consent_input": result.consent_path or "none",
                       "suppression_input": result.suppression_path or "none"})  # fmt: skip
    tracking.log_params({"as_of": result.as_of, "audiences": len(result.audiences),
                         "global_holdout_share": ac.global_holdout_share,
                         "require_consent": ac.require_consent})  # fmt: skip
    metrics: dict[str, float] = {}
    for c in result.audiences:
        metrics[f"{c.name}.candidates"] = c.candidates
        for what, n in {**c.groups, **c.excluded}.items():
            metrics[f"{c.name}.{what}"] = n
        for attribute, gap in c.sensitive_gaps.items():
            metrics[f"{c.name}.sensitive_gap.{attribute}"] = gap
            if gap > ac.max_sensitive_gap:
                result.warnings.append(
                    f"audience {c.name}: its treatment group's {attribute} differs from all "
                    f"customers' by {gap:.0%} in one value (audiences.max_sensitive_gap "
                    f"{ac.max_sensitive_gap:.0%}): review it before the campaign"
                )
        expected = expected_holdout_share(c.holdout_share, ac.global_holdout_share)
        metrics[f"{c.name}.expected_holdout_share"] = expected
    for name, (ids, missing, examples) in result.unmatched.items():
        metrics[f"{name}.ids"], metrics[f"{name}.ids_unmatched"] = ids, missing
        if missing and (name == "suppression" or missing > ids / 2):
            result.warnings.append(
                f"{missing:,} of {ids:,} {name} customer ids match no scored customer as of "
                f"{result.as_of} (e.g. {examples}): check they are written as the events' ids "
                f"(audiences.{name}.customer_id; 17850.0 is not 17850); an unmatched "
                f"{name} id {'suppresses' if name == 'suppression' else 'consents'} nobody"
            )
    if result.consent_path is None:
        result.warnings.append(
            "NO CONSENT INPUT: audiences.consent.path is not set, so nobody was excluded for "
            "consent. Set it (or audiences.require_consent: true to make this an error)."
        )
    tracking.log_metrics(metrics)
    tracking.log_json([c.__dict__ for c in result.audiences], "audiences/counts.json")


def _write(
    spark: SparkSession,
    cfg: AppConfig,
    everyone: DataFrame,
    history: DataFrame | None,
    result: AudiencesResult,
) -> None:
    """Per audience: its MERGEs (members, history) and its export."""
    as_of, storage = cfg.features.as_of, cfg.storage
    for c in result.audiences:
        mine = everyone.where((F.col(AUDIENCE) == c.name) & F.col(GROUP).isNotNull())
        lineage = tables.Lineage(as_of, c.model_name, 0, result.run_id)
        rows = members.member_rows(mine, lineage)
        past = None if history is None else history.where(F.col(AUDIENCE) == c.name)
        stays = members.history_rows(past, mine, as_of).cache()
        txn = tables.txn(storage.run_key or result.run_id, job=JOB,
                         parts={AUDIENCE: c.name, tables.AS_OF: as_of})  # fmt: skip
        meta = {"job": JOB, "run_id": result.run_id, AUDIENCE: c.name, "as_of": str(as_of)}
        writes = [
            tables.Write(tables.AUDIENCE_MEMBERS, functools.partial(
                members.merge_members, spark, storage, rows, c.name, txn, meta), spark, storage),
            tables.Write(tables.AUDIENCE_HISTORY, functools.partial(
                members.merge_history, spark, storage, stays, c.name, txn, meta), spark, storage),
        ]  # fmt: skip
        with timing.stage(f"audiences: write {c.name} (Delta MERGE)"):
            for name, version in tables.write_in_order(writes).items():
                result.versions[f"{name}.{c.name}"] = version
        stays.unpersist()
        c.export = _export(cfg, mine, c.name)
    tracking.set_tags({f"output.{k}.version": v for k, v in result.versions.items()})


def _export(cfg: AppConfig, mine: DataFrame, audience: str) -> str | None:
    """The treatment group as one CSV or Parquet file set (ids, segment, channel only)."""
    export = cfg.audiences.export
    if export.format is None:
        return None
    root = export.path or cfg.storage.table_path("exports")
    location = join_path(join_path(root, audience), f"as_of={cfg.features.as_of}")
    treated = mine.where(F.col(GROUP) == tables.TREATMENT).select(
        CUSTOMER_ID, SEGMENT_ID, SEGMENT_NAME, "channel",
        F.lit(cfg.features.as_of).cast("date").alias(tables.AS_OF),
    )  # fmt: skip
    writer = treated.coalesce(1).write.mode("overwrite")
    if export.format == "csv":
        writer.option("header", "true").csv(location)
    else:
        writer.parquet(location)
    return location
