"""``customer_features`` as of a date, with unusable events quarantined in ``rejected_events``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.errors import InputError
from segmentation.features import behaviour as feat
from segmentation.features.levels import (
    LevelLabel,
    counted_levels,
    level_labels,
    resolve_levels,
)
from segmentation.identity import stitched
from segmentation.inputs import columns, increments, quality, sources
from segmentation.inputs import customers as customers_dim
from segmentation.runtime import timing, tracking
from segmentation.storage import delta_tables, tables
from segmentation.workflows import feature_increment
from segmentation.workflows import feature_state as fs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duplicates:
    """The duplicate rule applied (``quality.duplicates`` resolved) and the exact copies kept."""

    rule: quality.Duplicates
    day_level: bool
    """The event times carry no time of day."""
    kept_copies: int | None = None
    """Exact copies (no event id) kept as separate events; None: not counted."""


@dataclass(frozen=True)
class FeaturesResult:
    as_of: dt.date
    customers: int
    version: int
    events_path: str
    events_version: int | None
    input_rows: int
    rejected: dict[str, int]
    feature_columns: tuple[str, ...]
    run_id: str
    input_counts: sources.InputCounts | None = None
    duplicates: Duplicates | None = None
    dimension: customers_dim.DimensionMatch | None = None
    levels: dict[str, LevelLabel] = field(default_factory=dict)
    mode: str = fs.FULL
    """How the events were read: incremental, rebuild or full (``features.mode``)."""
    mode_reason: str = ""
    new_rows: int | None = None
    """Input rows this run read (None: every row, ``input_rows``)."""


@dataclass
class FeatureSnapshot:
    """A feature snapshot and its quarantined rows, computed and persisted, not yet written."""

    as_of: dt.date
    features: DataFrame
    rejected: DataFrame
    customers: int
    rejected_counts: dict[str, int]
    input_rows: int
    events_path: str
    events_version: int | None
    feature_columns: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]
    """The category, channel and device levels the features use (configured or discovered)."""
    input_counts: sources.InputCounts | None = None
    duplicates: Duplicates | None = None
    dimension: customers_dim.DimensionMatch | None = None
    plan: fs.Plan = field(default_factory=lambda: fs.Plan(fs.FULL, "not kept"))
    state: fs.Update | None = None
    """The incremental state's update (None: no state kept)."""
    cached: list[DataFrame] = field(default_factory=list)
    """Further persisted frames the writes read (released by :meth:`unpersist`)."""

    def writes(
        self, spark: SparkSession, cfg: AppConfig, *, job: str, run_id: str
    ) -> list[tables.Write]:
        """The two snapshot writes, quarantine first, then the state's (``feature_state``),
        in ``tables.write_in_order``. A failed snapshot write leaves the state as it was; a
        run stopped during the state's writes leaves a state the next run rebuilds, and its
        snapshot replaced by that run."""
        snapshot = {tables.AS_OF: self.as_of}
        state = [] if self.state is None else self.state.writes(spark, cfg, run_id=run_id)
        return [*[
            tables.snapshot_write(spark, cfg.storage, table, df, job=job, run_id=run_id,
                                  snapshot=snapshot)
            for table, df in ((tables.REJECTED, self.rejected), (tables.FEATURES, self.features))
        ], *state]  # fmt: skip

    def unpersist(self) -> None:
        self.features.unpersist()
        self.rejected.unpersist()
        for df in [*self.cached, *(self.state.cached if self.state else [])]:
            df.unpersist()


def check_inputs(cfg: AppConfig) -> None:
    """Fail before any Spark work if the events path or a mapped column is missing."""
    columns.check_source(cfg.input.events, cfg.events_path())


def run(spark: SparkSession, cfg: AppConfig, full_refresh: bool = False) -> FeaturesResult:
    """Quarantine unusable events, compute ``customer_features`` as of ``features.as_of``.

    Both tables' snapshots for ``as_of`` are replaced (``rejected_events`` first), and only if
    the share of rejected input rows is within ``quality.max_reject_share``; otherwise no table
    changes. The run is tracked in MLflow with the counts per reject reason. With the
    incremental state (``features.mode``), it is updated first; ``full_refresh`` rebuilds it.
    """
    experiment_id = tracking.configure(cfg.tracking)
    as_of = cfg.features.as_of
    with tracking.run(experiment_id, f"build_features {as_of}") as run_id:
        tracking.set_tags({"job": "build_features"})
        with timing.stage("features: compute (read, quarantine, aggregate)"):
            snapshot = compute(spark, cfg, run_id=run_id, full_refresh=full_refresh)
        try:
            with timing.stage("features: write tables (Delta)"):
                versions = tables.write_in_order(
                    snapshot.writes(spark, cfg, job="build_features", run_id=run_id)
                )
        finally:
            snapshot.unpersist()
        tracking.set_tags({f"output.{name}.version": v for name, v in versions.items()})
    return FeaturesResult(
        as_of=as_of, customers=snapshot.customers, version=versions[tables.FEATURES.name],
        events_path=snapshot.events_path, events_version=snapshot.events_version,
        input_rows=snapshot.input_rows, rejected=snapshot.rejected_counts,
        feature_columns=snapshot.feature_columns, run_id=run_id,
        input_counts=snapshot.input_counts, duplicates=snapshot.duplicates,
        dimension=snapshot.dimension, levels=level_labels(snapshot.features),
        mode=snapshot.plan.mode, mode_reason=snapshot.plan.reason,
        new_rows=None if snapshot.state is None or snapshot.plan.mode != fs.INCREMENTAL
        else snapshot.state.counts.new_rows,
    )  # fmt: skip


def compute(
    spark: SparkSession,
    cfg: AppConfig,
    *,
    run_id: str,
    full_refresh: bool = False,
    keep_state: bool = True,
) -> FeatureSnapshot:
    """The ``customer_features`` and ``rejected_events`` rows of ``features.as_of``, persisted.

    One pass reads, checks and stages the events (persisted) and counts the input rows and,
    per mapped column, the values parsed, missing and rejected (and whether the times carry a
    time of day, which decides the duplicate rule ``auto``); everything after reads the staged
    rows. Logs params, the counts and quality metrics, the level labels and the
    customers-dimension match to the active MLflow run.

    With ``keep_state`` the incremental feature state decides how the events are read
    (``feature_state.plan``): only the new rows (``feature_increment``), or every row with the
    state rebuilt from them; ``full_refresh`` forces the rebuild.

    Raises:
        InputError: too many rows rejected (``quality.max_reject_share``) or no usable event;
            nothing is written.
    """
    ev = cfg.input.events
    events_path = cfg.events_path()
    plan = fs.plan(spark, cfg, full_refresh=full_refresh) if keep_state else None
    if plan is not None and plan.mode == fs.INCREMENTAL:
        done = _incremental(spark, cfg, plan, run_id=run_id)
        if isinstance(done, FeatureSnapshot):
            return done
        log.warning("feature state not usable for this run: %s; rebuilding it from every "
                    "input row", done)  # fmt: skip
        plan = fs.Plan(fs.REBUILD, done, log=plan.log, marker=plan.marker)
    source = _source(spark, cfg, plan)
    events_version = delta_tables.version(spark, events_path) if ev.format == "delta" else None
    _log_params(cfg, events_path, events_version)
    staged = _staged(spark, cfg, source, plan)
    try:
        snapshot = _compute_staged(
            spark, cfg, source, staged.rows, staged.counts, events_version, run_id=run_id,
            plan=plan,
        )  # fmt: skip
    except BaseException:
        staged.release()
        raise
    if snapshot.state is None:
        staged.release()
    else:
        snapshot.cached.append(staged.rows)  # the state's rows are plans over it
    return snapshot


def _staged(
    spark: SparkSession, cfg: AppConfig, source: sources.EventSource, plan: fs.Plan | None
) -> stitched.Staged:
    """One pass over the input: read, check, shuffle by customer and number the copies,
    persisted; filling that cache also yields the input counts (observed metrics). The
    quarantine, the levels and the features all read these rows; in a ``stitched.sharing``
    block, so do the later steps of the same date (a rebuild reads the input as of the
    state's marker: its own rows)."""
    earliest, latest = quality.bounds(cfg)
    rebuild = plan is not None and plan.mode == fs.REBUILD
    return stitched.stage(spark, cfg, source, earliest=earliest, latest=latest, reuse=not rebuild)


def _compute_staged(
    spark: SparkSession,
    cfg: AppConfig,
    source: sources.EventSource,
    staged: DataFrame,
    counts: sources.InputCounts,
    events_version: int | None,
    *,
    run_id: str,
    plan: fs.Plan | None = None,
) -> FeatureSnapshot:
    """:func:`compute` from the staged events (``quality.stage_events``, persisted); with a
    rebuild ``plan``, also the state's rows."""
    fc, q, events_path = cfg.features, cfg.quality, cfg.events_path()
    _log_input_counts(counts)
    duplicates = resolve_duplicates(q.duplicates, day_level=counts.day_level)
    rebuild = plan is not None and plan.mode == fs.REBUILD
    split = quality.split_staged(
        staged, duplicates=duplicates.rule, report_exact_copies=duplicates.rule == "event_id",
        carry=source.extra if rebuild else (),  # the state's raw ids (stitching)
    )  # fmt: skip
    rejected_df = split.rejected.select(
        *tables.CANONICAL_EVENTS.names, quality.REASON,
        F.lit(fc.as_of).alias(tables.AS_OF), F.lit(run_id).alias(tables.RUN_ID), sources.RAW,
    ).persist(StorageLevel.MEMORY_AND_DISK)  # fmt: skip
    rejected = _rejected_counts(rejected_df, counts.rows, max_share=q.max_reject_share)
    duplicates = _count_kept_copies(duplicates, split, counts.rows)
    levels, counted = (counted_levels(split.clean, fc, source.present) if rebuild  # the state's
                       else (resolve_levels(split.clean, fc, source.present), None))  # fmt: skip
    features_df = feat.compute_configured(
        split.clean, fc, as_of=fc.as_of, levels=levels, present=source.present,
        time_zone=cfg.input.events.time_zone,
    ).persist(StorageLevel.MEMORY_AND_DISK)  # fmt: skip
    customers = features_df.count()
    try:
        if customers == 0:
            raise InputError(
                f"no usable events on or before {fc.as_of} in {events_path} "
                f"({counts.rows} input rows; rejected by reason: {quality.counts_text(rejected)}); "
                "check features.as_of and the input. No table was changed."
            )
        dimension = dimension_match(spark, cfg, features_df)
    except InputError:
        for df in filter(None, (features_df, rejected_df, counted)):
            df.unpersist()
        raise
    _log_snapshot(features_df, customers)
    update = (
        feature_increment.rebuild(cfg, plan, split, counts, duplicates.rule, levels=levels,
                                  counted=counted)
        if plan is not None and counted is not None else None
    )  # fmt: skip
    _log_mode(plan)
    return FeatureSnapshot(
        as_of=fc.as_of, features=features_df, rejected=rejected_df, customers=customers,
        rejected_counts=rejected, input_rows=counts.rows, events_path=events_path,
        events_version=events_version, feature_columns=tuple(feat.feature_columns(features_df)),
        levels=levels, input_counts=counts, duplicates=duplicates,
        dimension=dimension, plan=plan or fs.Plan(fs.FULL, "not kept"), state=update,
    )  # fmt: skip


def _log_snapshot(features: DataFrame, customers: int) -> None:
    """The customers and each level column's raw label (``features/levels.json``), to MLflow."""
    tracking.log_metrics({"customers": customers})
    labels = level_labels(features)
    tracking.log_json({c: dataclasses.asdict(lv) for c, lv in labels.items()},
                      "features/levels.json")  # fmt: skip


def _source(spark: SparkSession, cfg: AppConfig, plan: fs.Plan | None) -> sources.EventSource:
    """The events as ``stitched.events`` reads them; for a rebuild exactly as of the state's
    input marker (rows added during the run are the next run's)."""
    if plan is None or plan.mode != fs.REBUILD or plan.marker is None:
        return stitched.events(spark, cfg)
    log.info("feature state: rebuilding from every input row (%s)", plan.reason)
    pinned = increments.pinned(spark, cfg.input.events, cfg.events_path(), plan.marker)
    return stitched.events(spark, cfg, raw=pinned)


def _incremental(
    spark: SparkSession, cfg: AppConfig, plan: fs.Plan, *, run_id: str
) -> FeatureSnapshot | str:
    """:func:`compute` from the incremental state, or why the run must rebuild instead."""
    fc, q = cfg.features, cfg.quality
    events_path = cfg.events_path()
    ev = cfg.input.events
    events_version = delta_tables.version(spark, events_path) if ev.format == "delta" else None
    _log_params(cfg, events_path, events_version)
    done: feature_increment.Computed | str | None = None
    try:
        done = feature_increment.compute(spark, cfg, plan)
        if isinstance(done, str):
            return done
        rejected_df = done.rejected.select(
            *tables.CANONICAL_EVENTS.names, quality.REASON, F.lit(fc.as_of).alias(tables.AS_OF),
            F.lit(run_id).alias(tables.RUN_ID), sources.RAW,
        ).persist(StorageLevel.MEMORY_AND_DISK)  # fmt: skip
        rejected_df.count()  # reads the rest of the state now, before any write
    except (Py4JJavaError, CapturedException) as exc:
        reason = fs.damaged(cfg, exc)
        if reason is None:
            raise
        for df in done.cached if isinstance(done, feature_increment.Computed) else []:
            df.unpersist()
        return reason
    assert plan.log is not None and isinstance(done, feature_increment.Computed)
    snapshot = FeatureSnapshot(
        as_of=fc.as_of, features=done.features, rejected=rejected_df, customers=done.customers,
        rejected_counts=done.rejected_counts, input_rows=done.update.counts.input_rows,
        events_path=events_path, events_version=events_version,
        feature_columns=tuple(feat.feature_columns(done.features)),
        levels=done.levels, input_counts=done.counts,
        duplicates=Duplicates(plan.log.duplicate_rule, False),  # type: ignore[arg-type]
        plan=dataclasses.replace(plan, reason=done.update.reason), state=done.update,
        cached=done.cached,
    )  # fmt: skip
    try:
        tracking.log_metrics({"new_input_rows": done.update.counts.new_rows})
        _check_rejected(done.rejected_counts, snapshot.input_rows, max_share=q.max_reject_share)
        if done.customers == 0:
            raise InputError(f"no usable events on or before {fc.as_of} in {events_path}; "
                             "no table was changed")  # fmt: skip
        snapshot.dimension = dimension_match(spark, cfg, done.features)
    except InputError:
        snapshot.unpersist()
        raise
    tracking.log_metrics({"customers": done.customers})
    _log_mode(plan)
    return snapshot


def _log_mode(plan: fs.Plan | None) -> None:
    """The feature run's mode and its reason, as MLflow tags and in the log."""
    if plan is None:
        return
    tracking.set_tags({"features.mode_used": plan.mode, "features.mode_reason": plan.reason})
    log.info("features: %s (%s)", plan.mode, plan.reason)


def _log_params(cfg: AppConfig, events_path: str, events_version: int | None) -> None:
    fc, q, ev = cfg.features, cfg.quality, cfg.input.events
    tracking.log_params(
        {"as_of": fc.as_of.isoformat(), "input.events.path": events_path,
         "input.events.version": events_version, "input.events.time_zone": ev.time_zone,
         "input.events.decimal_separator": ev.decimal_separator,
         "input.events.thousands_separator": ev.thousands_separator,
         "input.events.negative_amounts": ev.negative_amounts,
         "windows_days": ",".join(map(str, fc.windows_days)),
         "trend_window_days": fc.trend_window_days, "max_reject_share": q.max_reject_share,
         "quality.duplicates": q.duplicates}
    )  # fmt: skip


def resolve_duplicates(rule: str, *, day_level: bool) -> Duplicates:
    """``quality.duplicates`` resolved for this input (:func:`quality.duplicate_rule`)."""
    return Duplicates(quality.duplicate_rule(rule, day_level=day_level), day_level)


def _count_kept_copies(duplicates: Duplicates, split: quality.Split, rows: int) -> Duplicates:
    """Counts the exact copies kept (a pass of its own, only when copies are kept)."""
    if split.kept_copies is None:
        return duplicates
    kept = split.kept_copies.count()
    tracking.log_metrics(
        {"exact_copies_kept": kept, "exact_copies_kept_share": kept / rows if rows else 0.0}
    )
    if kept:
        log.warning(
            "%d exact copies (%.2f%% of input rows) kept as separate events (quality.duplicates "
            "= %s)", kept, 100 * kept / rows, duplicates.rule,
        )  # fmt: skip
    return dataclasses.replace(duplicates, kept_copies=kept)


def _log_input_counts(counts: sources.InputCounts) -> None:
    metrics = {"input_rows": counts.rows, "input_timed_events": counts.timed}
    for c in counts.columns:
        metrics |= {f"input_{c.column}_parsed": c.parsed, f"input_{c.column}_null": c.null,
                    f"input_{c.column}_rejected": c.rejected}  # fmt: skip
    tracking.log_metrics(metrics)


def dimension_match(
    spark: SparkSession, cfg: AppConfig, features: DataFrame
) -> customers_dim.DimensionMatch | None:
    """The share of the snapshot's customers found in the customers dimension (None without
    one), logged as the metric ``customers_dimension_match_share``."""
    dimension = stitched.customers(spark, cfg)
    if dimension is None:
        return None
    match = customers_dim.match_dimension(
        features, dimension, min_share=cfg.input.customers.min_match_share
    )
    tracking.log_metrics({"customers_dimension_match_share": match.share})
    return match


def _rejected_counts(
    rejected_df: DataFrame, input_rows: int, *, max_share: float
) -> dict[str, int]:
    """Counts per reject reason, logged; too large a share unpersists and raises."""
    rejected = quality.reason_counts(rejected_df)
    try:
        _check_rejected(rejected, input_rows, max_share=max_share)
    except InputError:
        rejected_df.unpersist()
        raise
    return rejected


def _check_rejected(rejected: Mapping[str, int], input_rows: int, *, max_share: float) -> None:
    """Log the counts per reject reason; raise when their share of ``input_rows`` is above
    ``quality.max_reject_share`` (nothing is written then)."""
    n_rejected = sum(n for why, n in rejected.items() if why not in quality.NOT_COUNTED)
    tracking.log_metrics({"rejected_rows": n_rejected})
    tracking.log_metrics(
        {f"rejected_{reason}": rejected.get(reason, 0) for reason in quality.REASONS}
    )
    share = n_rejected / input_rows if input_rows else 0.0
    if share > max_share:
        raise InputError(
            f"{n_rejected} of {input_rows} input events ({share:.1%}) were "
            f"rejected, more than quality.max_reject_share ({max_share:.1%}); "
            f"by reason: {quality.counts_text(rejected)}. No table was changed: fix the input, or "
            "raise quality.max_reject_share to write them to rejected_events."
        )
    for why, n in sorted(rejected.items()):
        log.warning("%d input event(s) quarantined in rejected_events: %s", n, why)
