"""A feature run from the incremental state: only the input rows added since the state's run
are read, checked and de-duplicated (against the events already counted too); the state moves
to the new ``as_of`` and the features come from it (``features.state``). Also the state rows
of a rebuild, from the full run's staged events.

Quarantined rows of the state whose reason depends on ``as_of`` (an event implausibly far
after the state's day, an identifier the map did not know: ``feature_recheck``) are staged
again with the new rows. Anything the state cannot answer exactly returns a reason instead,
and the run rebuilds: an event id seen before with other content (a correction), new rows that
flip the ``auto`` duplicate rule, or new rows that change the discovered levels of a mix
column (its daily rows hold sums per level).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.features import levels as mix
from segmentation.features import state
from segmentation.identity import keying
from segmentation.identity.keying import RAW_ID
from segmentation.inputs import parsing, quality, sources
from segmentation.runtime import timing
from segmentation.storage import tables
from segmentation.workflows import feature_keys, feature_recheck
from segmentation.workflows import feature_state as fs

_MEMORY = StorageLevel.MEMORY_AND_DISK
_BROADCAST_ROWS = 1_000_000
"""New input rows up to which their identities are broadcast to the duplicate check."""


@dataclass
class Computed:
    """An incremental run's snapshot rows (persisted) and its state update."""

    features: DataFrame
    rejected: DataFrame
    customers: int
    rejected_counts: dict[str, int]
    counts: sources.InputCounts | None
    levels: dict[str, tuple[str, ...]]
    update: fs.Update
    cached: list[DataFrame]


def identities(clean: DataFrame, rule: str, time_zone: str, increment: int) -> DataFrame:
    """The identities of usable events that a later copy would duplicate under ``rule``:
    events with an id (``event_id``, ``exact``) and, under ``exact``, events without one."""
    if rule == "off":
        clean = clean.where(F.lit(False))
    elif rule == "event_id":
        clean = clean.where(F.col("event_id").isNotNull())
    return clean.select(
        state.CUSTOMER_ID, "event_id", quality.fingerprint().alias("fingerprint"),
        parsing.local_date(F.col("event_time"), time_zone).alias("event_date"),
        F.lit(increment).cast("long").alias(state.INCREMENT),
    )  # fmt: skip


def rejected_rows(rejected: DataFrame, increment: int) -> DataFrame:
    """``quality.Split.rejected`` rows as ``feature_state_rejected`` keeps them (``raw_id``:
    with stitching, else null)."""
    raw_id = F.col(RAW_ID) if RAW_ID in rejected.columns else F.lit(None).cast("string")
    return rejected.select(
        *tables.CANONICAL_EVENTS.names, quality.REASON, sources.RAW, raw_id.alias(RAW_ID),
        F.lit(increment).cast("long").alias(state.INCREMENT),
    )  # fmt: skip


def _by_raw_id(rows: DataFrame) -> DataFrame:
    """Clean rows as the state keeps them: by ``raw_id`` with stitching (``feature_keys``)."""
    return feature_keys.by_raw_id(rows) if RAW_ID in rows.columns else rows


def parsed_times(counts: sources.InputCounts) -> int:
    return next((c.parsed for c in counts.columns if c.column == "event_time"), 0)


def level_rows(counted: DataFrame, increment: int) -> DataFrame:
    """``mix.value_counts`` rows as ``feature_state_levels`` keeps them."""
    return counted.select(
        mix.COLUMN, mix.VALUE, mix.EVENTS, F.lit(increment).cast("long").alias(state.INCREMENT)
    )


def rebuild(
    cfg: AppConfig,
    plan: fs.Plan,
    split: quality.Split,
    counts: sources.InputCounts,
    rule: str,
    *,
    levels: dict[str, tuple[str, ...]],
    counted: DataFrame,
) -> fs.Update:
    """The state rows of a rebuild from the full run's split events (plans over its staged
    rows: the caller keeps them persisted until the writes are done); ``levels`` as the run
    resolved them, ``counted``: the ``mix.value_counts`` they were discovered from."""
    assert plan.marker is not None
    increment = (plan.log.increment if plan.log else 0) + 1
    zone, as_of = cfg.input.events.time_zone, cfg.features.as_of
    # Persisted: the daily rows' write and the customer rows both read them.
    clean = _by_raw_id(split.clean)
    daily = state.daily_rows(clean, levels, zone, increment).persist(_MEMORY)
    keys, cached = None, [daily, counted]
    until = daily.where(F.col(state.DAY) <= F.lit(as_of))
    if RAW_ID in split.clean.columns:  # identity stitching: the state's rows are by raw id
        keys = feature_keys.tuples(split.clean, split.rejected).persist(_MEMORY)
        until, cached = feature_keys.by_key(until, keys), [*cached, keys]
    return fs.Update(
        mode=fs.REBUILD, reason=plan.reason, increment=increment,
        daily=daily, event_ids=identities(clean, rule, zone, increment),
        rejected=rejected_rows(split.rejected, increment), levels=level_rows(counted, increment),
        customers=state.customer_rows(state.summed_days(until, levels), levels),
        counts=fs.Counts(counts.rows, counts.timed, parsed_times(counts), rule, counts.rows),
        marker=plan.marker, keys=keys, cached=cached,
    )  # fmt: skip


@dataclass
class _Batch:
    """The new input rows, checked and de-duplicated against the state."""

    clean: DataFrame
    rejected: DataFrame
    counts: sources.InputCounts | None
    cached: list[DataFrame]
    daily: DataFrame | None = None
    """Their daily rows, as the state keeps them (by raw id with stitching)."""


def compute(spark: SparkSession, cfg: AppConfig, plan: fs.Plan) -> Computed | str:
    """The snapshot of ``features.as_of`` from the state and the new input rows, or why the
    run must rebuild instead."""
    last = plan.log
    assert last is not None and plan.increment is not None and plan.marker is not None
    number = last.increment + 1
    old_rejected = fs.read_state(spark, cfg, fs.REJECTED, last)
    keys = _rekeyed(spark, cfg, last, old_rejected)
    if isinstance(keys, str):
        return keys
    again = feature_recheck.recheck(cfg, old_rejected, last.as_of, keys.keys if keys else None)
    held = [*(keys.persisted if keys else []), *([again.persisted] if again else [])]
    batch = _batch(spark, cfg, plan, number, keys, again)
    found = batch if isinstance(batch, str) else _levels(spark, cfg, last, batch.clean, number)
    if isinstance(found, str):
        for df in [*(batch.cached if isinstance(batch, _Batch) else []), *held]:
            df.unpersist()
        return found
    assert isinstance(batch, _Batch)
    levels, new_levels = found
    batch.cached += [new_levels, *([again.persisted] if again else [])]
    daily_new = state.daily_rows(_by_raw_id(batch.clean), levels, cfg.input.events.time_zone,
                                 number).persist(_MEMORY)  # fmt: skip
    batch.cached.append(daily_new)
    batch.daily = daily_new
    rows = _Rows(fs.read_state(spark, cfg, fs.DAILY, last).unionByName(daily_new), daily_new,
                 old_rejected if again is None else again.kept)  # fmt: skip
    if keys is not None:
        rows = _keyed(rows, keys, batch)
    return _computed(spark, cfg, plan, batch, rows, levels, new_levels, keys=keys, again=again)


def _computed(
    spark: SparkSession,
    cfg: AppConfig,
    plan: fs.Plan,
    batch: _Batch,
    rows: _Rows,
    levels: dict[str, tuple[str, ...]],
    new_levels: DataFrame,
    *,
    keys: feature_keys.Keys | None,
    again: feature_recheck.Recheck | None,
) -> Computed:
    """The customer rows and the features from the state's rows and the batch's."""
    last, fc = plan.log, cfg.features
    assert last is not None and plan.increment is not None and plan.marker is not None
    number = last.increment + 1
    assert batch.daily is not None
    customers = _customers(
        fs.read_state(spark, cfg, fs.CUSTOMERS, last), rows.daily_all, rows.daily_new, levels,
        since=last.as_of, as_of=fc.as_of, moved=None if keys is None else keys.moved,
    ).persist(_MEMORY)  # fmt: skip
    with timing.stage("features: increment: customer rows moved to the new day"):
        customers.count()
    features = state.features(
        customers, rows.daily_all, as_of=fc.as_of, windows_days=fc.windows_days,
        trend_window_days=fc.trend_window_days, levels=levels,
        with_discount="discount" in cfg.input.events.columns.mapped(),
    ).persist(_MEMORY)  # fmt: skip
    new_rejected = rejected_rows(batch.rejected, number).persist(_MEMORY)
    snapshot_rejected = rows.rejected.unionByName(new_rejected).drop(state.INCREMENT, RAW_ID)
    reason = plan.reason
    if again is not None:
        reason += f"; {again.count} quarantined row(s) of the state checked again"
    update = fs.Update(
        mode=fs.INCREMENTAL, reason=reason, increment=number,
        daily=batch.daily, event_ids=identities(
            _by_raw_id(batch.clean), last.duplicate_rule, cfg.input.events.time_zone, number),
        rejected=new_rejected, levels=new_levels, customers=customers,
        counts=_counts(last, batch.counts), marker=plan.marker, keys=rows.keys,
        previous_versions=last.table_versions,
        kept_rejected=None if again is None else again.kept,
    )  # fmt: skip
    with timing.stage("features: increment: features (window sums of the daily rows)"):
        count = features.count()
    return Computed(
        features=features, rejected=snapshot_rejected, customers=count,
        rejected_counts=quality.reason_counts(snapshot_rejected), counts=batch.counts,
        levels=levels, update=update, cached=[*batch.cached, customers, features, new_rejected],
    )  # fmt: skip


def _counts(last: fs.Log, new: sources.InputCounts | None) -> fs.Counts:
    """The state's cumulative input counts with the new rows'."""
    return fs.Counts(
        last.input_rows + (new.rows if new else 0), last.timed_rows + (new.timed if new else 0),
        last.parsed_times + (parsed_times(new) if new else 0), last.duplicate_rule,
        new.rows if new else 0,
    )  # fmt: skip


@dataclass
class _Rows:
    """The state's rows the features read, by customer."""

    daily_all: DataFrame
    daily_new: DataFrame
    rejected: DataFrame
    keys: DataFrame | None = None
    """With stitching: every raw id's stitched key of the new day (``feature_keys``)."""


def _rekeyed(
    spark: SparkSession, cfg: AppConfig, last: fs.Log, rejected: DataFrame
) -> feature_keys.Keys | str | None:
    """With stitching, the state's raw ids keyed by ``identity_map`` of the new day, or why
    the run must rebuild (``feature_keys``); None without stitching."""
    if cfg.stitching() is None:
        return None
    keymap = keying.load(spark, cfg, cfg.features.as_of)
    keys = feature_keys.rekey(spark, cfg, last, keymap)
    if isinstance(keys, str):
        return keys
    why = feature_keys.copies_moved(keys, fs.read_state(spark, cfg, fs.EVENT_IDS, last), rejected)
    if why is not None:
        keys.release()
        return why
    return keys


def _keyed(rows: _Rows, keys: feature_keys.Keys, batch: _Batch) -> _Rows:
    """``rows`` by stitched key: the state's raw ids and the new rows' (persisted, released
    with the batch)."""
    every = keys.keys.unionByName(feature_keys.tuples(batch.clean, batch.rejected)).distinct()
    every = every.persist(_MEMORY)
    batch.cached += [*keys.persisted, every]
    return _Rows(
        feature_keys.by_key(rows.daily_all, every), feature_keys.by_key(rows.daily_new, every),
        feature_keys.rekeyed_rejected(rows.rejected, every), every,
    )  # fmt: skip


_LEVEL_KEYS = {"category": "features.categories", "channel": "features.channels",
               "device": "features.devices"}  # fmt: skip


def _levels(
    spark: SparkSession, cfg: AppConfig, last: fs.Log, clean: DataFrame, number: int
) -> tuple[dict[str, tuple[str, ...]], DataFrame] | str:
    """The state's levels (configured; discovered: the top ``features.max_levels`` values of
    the kept value counts) and the new rows' ``feature_state_levels`` rows (persisted), or why
    the new rows change a discovered column's levels (the daily rows hold sums per level)."""
    configured = fs.configured_levels(cfg)
    discovered = [c for c, lv in configured.items() if lv is None]
    levels = {c: lv for c, lv in configured.items() if lv is not None}
    new = level_rows(mix.value_counts(clean, discovered), number).persist(_MEMORY)
    if not discovered:
        return levels, new
    top = cfg.features.max_levels
    kept = fs.read_state(spark, cfg, fs.LEVELS, last).drop(state.INCREMENT)
    before = mix.top_levels(kept, discovered, max_levels=top)
    after = mix.top_levels(kept.unionByName(new.drop(state.INCREMENT)), discovered, max_levels=top)
    changed = [
        f"{c}: {_listed(set(after[c]) - set(before[c]))} in, "
        f"{_listed(set(before[c]) - set(after[c]))} out of the top {top} ({_LEVEL_KEYS[c]} "
        "is null: discovered)"
        for c in discovered
        if after[c] != before[c]
    ]
    if changed:
        new.unpersist()
        return (f"the new rows (or quarantined rows checked again) change the discovered "
                f"levels ({'; '.join(changed)})")  # fmt: skip
    return {**levels, **before}, new


def _listed(values: set[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values)) or "none"


def _batch(
    spark: SparkSession,
    cfg: AppConfig,
    plan: fs.Plan,
    number: int,
    keys: feature_keys.Keys | None,
    again: feature_recheck.Recheck | None,
) -> _Batch | str:
    """The new rows and the state's rows checked ``again``: read, checked, de-duplicated
    among themselves and against the state (whose identities are by raw id with stitching:
    ``keys``)."""
    last = plan.log
    assert last is not None
    ev, q = cfg.input.events, cfg.quality
    with timing.stage("features: increment: read and stage the new rows"):
        found = feature_recheck.stage(spark, cfg, plan, stitched_rows=keys is not None, again=again)
    if found is None:
        return _nothing(spark, stitched=keys is not None)
    staged, counts, carry = found
    rule = last.duplicate_rule
    if counts is not None:
        timed, parsed = last.timed_rows + counts.timed, last.parsed_times + parsed_times(counts)
        rule = quality.duplicate_rule(q.duplicates, day_level=parsed > 0 and timed == 0)
    if rule != last.duplicate_rule:
        staged.unpersist()
        return (f"the new rows change the auto duplicate rule from {last.duplicate_rule} to "
                f"{rule} (quality.duplicates)")  # fmt: skip
    split = quality.split_staged(staged, duplicates=rule, carry=carry)  # type: ignore[arg-type]
    seen = fs.read_state(spark, cfg, fs.EVENT_IDS, last)
    mine = identities(split.clean, rule, ev.time_zone, number).drop(state.INCREMENT)
    if keys is not None:
        mine = feature_keys.expanded(mine, keys.keys)
    rows = (counts.rows if counts else 0) + (again.count if again else 0)
    with timing.stage("features: increment: the new rows against every event identity seen"):
        seen_again = _seen_before(mine, seen, broadcast=rows <= _BROADCAST_ROWS)
    corrected = seen_again.where(F.col("fingerprint") != F.col("seen_fingerprint")).first()
    if corrected is not None:
        seen_again.unpersist()
        staged.unpersist()
        return (f"event {corrected['event_id']} of customer {corrected[state.CUSTOMER_ID]} "
                "arrived again with other content (a correction, or a quarantined copy checked "
                "again): which copy a full run keeps depends on both")  # fmt: skip
    ids = [state.CUSTOMER_ID, "event_id"]
    copies = seen_again.select(
        *[F.col(k).alias(f"_seen_{k}") for k in (*ids, "fingerprint")]
    ).distinct().persist(_MEMORY)  # fmt: skip
    on = [F.col(k).eqNullSafe(F.col(f"_seen_{k}")) for k in ids]
    on.append(quality.fingerprint() == F.col("_seen_fingerprint"))
    duplicates = split.clean.join(copies, on, "left_semi")
    clean = split.clean.join(copies, on, "left_anti")
    rejected = split.rejected.unionByName(
        duplicates.select(
            *tables.CANONICAL_EVENTS.names, F.lit(quality.DUPLICATE_EVENT).alias(quality.REASON),
            F.lit(None).cast(quality.RAW_TYPE).alias(sources.RAW), *carry,
        )
    )  # fmt: skip
    return _Batch(clean, rejected, counts, [staged, seen_again, copies])


def _nothing(spark: SparkSession, *, stitched: bool) -> _Batch:
    """No new input rows."""
    empty = spark.createDataFrame([], tables.CANONICAL_EVENTS)
    if stitched:
        empty = empty.withColumn(RAW_ID, F.lit(None).cast("string"))
    rejected = empty.select("*", F.lit(None).cast("string").alias(quality.REASON),
                            F.lit(None).cast(quality.RAW_TYPE).alias(sources.RAW))  # fmt: skip
    return _Batch(empty, rejected, None, [])


def _seen_before(mine: DataFrame, seen: DataFrame, *, broadcast: bool) -> DataFrame:
    """The new identities an earlier run counted (same customer and id; without an id, the
    same content), with the content seen then (``seen_fingerprint``), persisted: one scan of
    the seen identities serves both the correction check and the copies."""
    if broadcast:
        # A day's identities against every one seen: ship the day's to the scan of the seen
        # ones instead of shuffling them all (Spark cannot size the staged rows itself).
        mine = F.broadcast(mine)
    keys = [state.CUSTOMER_ID, "event_id"]
    on = [F.col(f"n.{k}").eqNullSafe(F.col(f"s.{k}")) for k in keys]
    on.append(F.col("n.event_id").isNotNull() | (F.col("n.fingerprint") == F.col("s.fingerprint")))
    again = (
        mine.alias("n")
        .join(seen.alias("s"), on)
        .select("n.*", F.col("s.fingerprint").alias("seen_fingerprint"))
    )
    if feature_keys.KEY in mine.columns:  # by raw id (stitching): back to the stitched key
        again = again.withColumn(state.CUSTOMER_ID, F.col(feature_keys.KEY)).drop(feature_keys.KEY)
    again = again.persist(_MEMORY)
    again.count()
    return again


def _customers(
    old: DataFrame,
    daily_all: DataFrame,
    daily_new: DataFrame,
    levels: dict[str, tuple[str, ...]],
    *,
    since: dt.date,
    as_of: dt.date,
    moved: DataFrame | None = None,
) -> DataFrame:
    """The customer rows as of ``as_of``: advanced by the days in ``(since, as_of]``, and
    rebuilt from all their days for customers with new rows on a day up to ``since`` and
    the ``moved`` ones (stitching: their raw ids changed keys)."""
    day = F.col(state.DAY)
    # The months after `since` only (partition pruning): the days that advance customers.
    after = (
        (F.col(state.MONTH) >= F.lit(since.replace(day=1)))
        & (day > F.lit(since))
        & (day <= F.lit(as_of))
    )
    late = daily_new.where(day <= F.lit(since)).select(state.CUSTOMER_ID)
    late = (late if moved is None else late.unionByName(moved)).distinct()
    if late.isEmpty():  # daily_new is persisted: no cache of its own needed
        return state.advance(old, state.summed_days(daily_all.where(after), levels), levels)
    rebuilt = state.customer_rows(
        state.summed_days(daily_all.join(late, state.CUSTOMER_ID, "left_semi")
                          .where(day <= F.lit(as_of)), levels),
        levels,
    )  # fmt: skip
    others = daily_all.where(after).join(late, state.CUSTOMER_ID, "left_anti")
    advanced = state.advance(
        old.join(late, state.CUSTOMER_ID, "left_anti"), state.summed_days(others, levels), levels
    )
    return advanced.unionByName(rebuilt.select(*advanced.columns))
