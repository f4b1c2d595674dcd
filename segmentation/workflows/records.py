"""What every clustered training records and writes, in the same formats for both bases.

The behavioural (``train``) and attitudinal (``attitudes``) trainings log their model selection,
the segments artifact the next training matches its ids against, the profiles (and
composition) of the new version, and then either publish the version (``tracking.promote``)
or only write its version tables. One piece each, here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, TrackingConfig
from segmentation.explain import model_report, profiling
from segmentation.modeling import champion as champions
from segmentation.modeling import clustering, matching, model_selection
from segmentation.modeling.evaluation import adjusted_rand_index
from segmentation.runtime import tracking
from segmentation.storage import publishing, tables


@dataclass
class SegmentSummary:
    """One segment as the terminal summary shows it."""

    segment_id: int
    name: str
    size: int
    share: float
    means: dict[str, float | None]


@dataclass
class Trained:
    """What every clustered training has fitted before it records or writes anything."""

    selection: model_selection.KSelection
    model: clustering.SegmentModel
    """Numbered like the champion (``matched``)."""
    final_seed: int | None
    """The kept restart's seed; None: the selection sample's centres refined."""
    matched: matching.Matching
    champion: champions.Champion | None
    assigned: DataFrame
    """``model.transform`` of every row, cached (unpersisted when the run ends)."""
    profiles: profiling.Profiles
    names: dict[int, str]


def champion_members(
    spark: SparkSession,
    cfg: AppConfig,
    model_name: str,
    champion: champions.Champion | None,
) -> DataFrame | None:
    """The champion's members (``customer_id``, ``segment_id``) on the snapshot it was trained
    on, when its membership of that date was published by that version (None otherwise): what
    tells a retrain's matching whether a new segment holds the old one's customers."""
    if champion is None or champion.as_of is None:
        return None
    if not tables.exists(spark, cfg.storage, tables.MEMBERSHIP):
        return None
    members = tables.read(
        spark, cfg.storage, tables.MEMBERSHIP,
        partitions={tables.MODEL_NAME: model_name, tables.AS_OF: champion.as_of},
    ).where(F.col(tables.MODEL_VERSION) == champion.version)  # fmt: skip
    members = members.select(tables.CUSTOMER_ID, tables.SEGMENT_ID).cache()
    if members.isEmpty():
        members.unpersist()
        return None
    return members


def segment_summaries(
    profiles: profiling.Profiles, names: Mapping[int, str], features: Sequence[str]
) -> list[SegmentSummary]:
    """Every segment's size, share and the means of ``features``."""
    return [
        SegmentSummary(
            segment_id=seg.segment_id,
            name=names[seg.segment_id],
            size=seg.size,
            share=seg.share,
            means={f: seg.stats[f].mean for f in features},
        )
        for seg in profiles.segments
    ]


def record_selection(sel: model_selection.KSelection) -> None:
    """Every candidate k's measures (one MLflow step per k), the rule and its reason."""
    for c in sel.candidates:
        per_k = {"silhouette": c.silhouette, "cost": c.cost, "min_segment_share": c.min_share,
                 "calinski_harabasz": c.calinski_harabasz}  # fmt: skip
        if c.worst_jaccard is not None:
            per_k["worst_jaccard"] = c.worst_jaccard
        tracking.log_metrics(per_k, step=c.k)
    tracking.set_tags({"k_selection_reason": sel.reason, "k_selection_rule": sel.rule})


def record_segments(as_of: dt.date, fitted: Trained) -> None:
    """The segments artifact the next training matches its ids and names against, and the
    names."""
    model, matched, names = fitted.model, fitted.matched, fitted.names
    champion = fitted.champion
    centers = model.centers_original()
    features = list(model.scaling.features)
    segments = [
        {"segment_id": s.segment_id, "name": names[s.segment_id], "size": s.size,
         "share": s.share, "center": dict(zip(features, centers[s.segment_id], strict=True))}
        for s in fitted.profiles.segments
    ]  # fmt: skip
    tracking.log_json(
        {"as_of": as_of.isoformat(), "features": features, "max_segment_id": matched.max_segment_id,
         "previous_model_version": champion.version if champion else None,
         "segments": segments},
        matching.SEGMENTS_ARTIFACT,
    )  # fmt: skip
    tracking.log_json({str(k): v for k, v in names.items()}, "profiles/segment_names.json")


def profile_rows(
    spark: SparkSession,
    profiles: profiling.Profiles,
    names: Mapping[int, str],
    lineage: tables.Lineage,
    *,
    label: Any = None,
) -> DataFrame:
    """``segment_profiles`` rows of the new version, also logged as
    ``profiles/segment_profiles.json`` (``label(feature)``: an extra ``feature_label``)."""
    rows = spark.createDataFrame(profiling.profile_rows(profiles, names), tables.PROFILE_ROWS)
    df = tables.with_lineage(rows, lineage, tables.PROFILES)
    tracking.log_json(
        [
            dict(zip(df.columns, r, strict=True))
            | ({} if label is None else {"feature_label": label(r["feature"])})
            for r in df.collect()
        ],
        "profiles/segment_profiles.json",
    )
    return df


def version_writes(
    spark: SparkSession,
    cfg: AppConfig,
    frames: Sequence[tuple[tables.Table, DataFrame]],
    explained: model_report.Explained,
    names: Mapping[int, str],
    lineage: tables.Lineage,
    *,
    job: str,
) -> list[tables.Write]:
    """The writes of a new version's tables partitioned by model and version (``frames``,
    then the composition when there is one), in that order."""
    frames = list(frames)
    if explained.composition is not None:
        rows = model_report.composition_rows(spark, explained.composition, names)
        frames.append((tables.COMPOSITION, tables.with_lineage(rows, lineage, tables.COMPOSITION)))
    snapshot = {tables.MODEL_NAME: lineage.model_name, tables.MODEL_VERSION: lineage.model_version}
    return [
        tables.snapshot_write(spark, cfg.storage, table, df, job=job, run_id=lineage.run_id,
                              snapshot=snapshot)
        for table, df in frames
    ]  # fmt: skip


def publish_or_write(
    spark: SparkSession,
    cfg: AppConfig,
    tc: TrackingConfig,
    scored: publishing.Scored,
    writes: Sequence[tables.Write],
    *,
    job: str,
) -> tuple[dict[str, int], publishing.Publication | None]:
    """With ``tracking.promote``: publish the version (its writes first, then membership,
    history, migration, drift) and move the alias to it, last; otherwise only the version's
    writes. Returns the table versions and the publication."""
    lineage = scored.lineage
    publication = None
    if tc.promote:
        publication = publishing.publish(
            spark, cfg.storage, cfg.drift, scored, job=job, first=writes
        )
        versions = publication.table_versions
        reason = f"{job} run {lineage.run_id} with tracking.promote=true"
        tracking.promote(tc.registered_model, tc.alias, lineage.model_version, reason=reason)
        tracking.set_tags({"promoted_to": tc.alias})
    else:
        versions = tables.write_in_order(writes)
    tracking.set_tags({f"output.{name}.version": v for name, v in versions.items()})
    return versions, publication


def scored_now(
    assigned: DataFrame,
    features: DataFrame,
    names: Mapping[int, str],
    model_features: Sequence[str],
    lineage: tables.Lineage,
) -> publishing.Scored:
    """What a training publishes: its assignment of every row, scored now (UTC, seconds)."""
    return publishing.Scored(
        assigned=assigned, features=features, names=dict(names),
        model_features=tuple(model_features), lineage=lineage,
        scored_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )  # fmt: skip


def ari_vs_truth(assigned: DataFrame, truth: DataFrame | None) -> float | None:
    """The adjusted Rand index of the segments against planted truth (``true_segment``),
    logged; None without truth."""
    if truth is None:
        return None
    joined = assigned.select(tables.CUSTOMER_ID, tables.SEGMENT_ID).join(
        truth, on=tables.CUSTOMER_ID, how="inner"
    )
    ari = adjusted_rand_index(joined, "true_segment", tables.SEGMENT_ID)
    tracking.log_metrics({"ari_vs_truth": ari})
    return ari
