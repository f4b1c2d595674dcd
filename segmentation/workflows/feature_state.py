"""The incremental feature state in the warehouse: whether a feature run may use it, what it
records, and its writes (docs/incremental.md).

Six tables (``storage.contracts.feature_state``): the daily and customer aggregates
(``features.state``), the usable event identities (duplicates across runs), the quarantined
rows, the events per value of the mix columns whose levels are discovered, and
``feature_state_log``, one row per run that kept the state. A run writes its snapshot, then
the five state tables one Delta transaction each, then its log row, which
records the versions those writes left: a state whose tables are at other versions (a run
killed half way) is never used, the next run rebuilds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig
from segmentation.errors import InputError, TableError
from segmentation.inputs import increments
from segmentation.storage import delta_tables, tables
from segmentation.storage.contracts import (
    FEATURE_STATE_CUSTOMERS,
    FEATURE_STATE_DAILY,
    FEATURE_STATE_EVENT_IDS,
    FEATURE_STATE_KEYS,
    FEATURE_STATE_LEVELS,
    FEATURE_STATE_LOG,
    FEATURE_STATE_LOG_SCHEMA,
    FEATURE_STATE_REJECTED,
    Table,
)  # fmt: skip

log = logging.getLogger(__name__)

STATE_VERSION = 4
"""The state's format; a code change that alters what the state holds bumps it (rebuild).
2: the value counts of discovered levels (``feature_state_levels``). 3: identity stitching
(rows by ``raw_id``, ``feature_state_keys``). 4: the settings hold the identity settings that
make raw ids only."""
IDENTITY_SETTINGS = ("identifiers", "phone_country_code", "placeholders")
"""The ``identity`` settings a raw id depends on (the events' identifier columns and their
normalisation). The others (the guard, the dimensions' and edges' identifiers, the graph's
limits) change only ``identity_map``, which every run re-keys the state from."""
DAILY, CUSTOMERS, EVENT_IDS, REJECTED, LEVELS, KEYS = (
    FEATURE_STATE_DAILY, FEATURE_STATE_CUSTOMERS, FEATURE_STATE_EVENT_IDS, FEATURE_STATE_REJECTED,
    FEATURE_STATE_LEVELS, FEATURE_STATE_KEYS,
)  # fmt: skip
STATE_TABLES = (DAILY, EVENT_IDS, REJECTED, LEVELS, CUSTOMERS)
"""The state's tables; with identity stitching also ``KEYS`` (:func:`state_tables`)."""
INCREMENTAL, REBUILD, FULL = "incremental", "rebuild", "full"


@dataclass(frozen=True)
class Log:
    """The last ``feature_state_log`` row: what the state holds."""

    increment: int
    as_of: dt.date
    fingerprint: str
    settings: dict[str, Any]
    marker: increments.Marker
    input_rows: int
    timed_rows: int
    parsed_times: int
    duplicate_rule: str
    table_versions: dict[str, int]
    state_version: int


@dataclass(frozen=True)
class Plan:
    """How this feature run reads the events, and why."""

    mode: str
    """incremental, rebuild (every event, state rewritten) or full (every event, no state)."""
    reason: str
    log: Log | None = None
    increment: increments.Increment | None = None
    marker: increments.Marker | None = None
    """The input now (incremental and rebuild)."""


def configured_levels(cfg: AppConfig) -> dict[str, tuple[str, ...] | None]:
    """The levels of each mix column as configured (a column the input does not map has
    none); None for a mapped column whose levels are discovered from the events (the state
    keeps their value counts: ``feature_state_levels``)."""
    fc, mapped = cfg.features, cfg.input.events.columns.mapped()
    out: dict[str, tuple[str, ...] | None] = {}
    for column, levels in (("category", fc.categories), ("channel", fc.channels),
                           ("device", fc.devices)):  # fmt: skip
        out[column] = () if column not in mapped else None if levels is None else tuple(levels)
    return out


def state_tables(cfg: AppConfig) -> tuple[Table, ...]:
    """The state's tables for this configuration: with identity stitching, the stitched key
    of each raw id (``feature_state_keys``) too."""
    return STATE_TABLES if cfg.stitching() is None else (*STATE_TABLES, KEYS)


def settings(cfg: AppConfig) -> dict[str, Any]:
    """Everything the state's rows depend on: reading, time zone, levels, date and duplicate
    rules, how raw ids are made (:data:`IDENTITY_SETTINGS`, with stitching). (Windows are not:
    they are summed from the daily rows at feature time.)"""
    q, top = cfg.quality, cfg.features.max_levels
    levels = {c: {"discovered_top": top} if lv is None else list(lv)
              for c, lv in configured_levels(cfg).items()}  # fmt: skip
    identity = cfg.stitching()
    return {
        "identity": None
        if identity is None
        else identity.model_dump(mode="json", include=set(IDENTITY_SETTINGS)),
        "state_version": STATE_VERSION,
        "input.events": cfg.input.events.model_dump(mode="json", exclude={"path"}),
        "input.events.path": cfg.events_path(),
        "levels": levels,
        "quality.duplicates": q.duplicates,
        "quality.earliest_event_date": q.earliest_event_date.isoformat(),
        "quality.max_days_after_as_of": q.max_days_after_as_of,
    }


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def plan(spark: SparkSession, cfg: AppConfig, *, full_refresh: bool = False) -> Plan:
    """Decide how this run reads the events (``features.mode``, docs/incremental.md)."""
    mode = cfg.features.mode
    if mode == "full":
        if full_refresh:
            raise InputError(
                "--full-refresh rebuilds the incremental feature state, but features.mode is "
                "full (no state is kept): set features.mode to auto or incremental, or drop "
                "--full-refresh"
            )
        return Plan(FULL, "features.mode is full")
    ev, path = cfg.input.events, cfg.events_path()
    marker = increments.marker(spark, ev, path)
    last = read_log(spark, cfg)
    if full_refresh:  # numbered after the last run: the log's last row is the newest
        return Plan(REBUILD, "--full-refresh", log=last, marker=marker)
    versions = (
        {}
        if last is None
        else {t.name: tables.version(spark, cfg.storage, t) for t in state_tables(cfg)}
    )
    why = _unusable(spark, cfg, last, versions)
    if why is not None:
        return Plan(REBUILD, why, log=last, marker=marker)
    assert last is not None
    # Usable: at the logged versions, or only maintenance after them (the same rows; a VACUUM
    # may have removed the older files), so the state is read at its current versions.
    last = dataclasses.replace(last, table_versions={k: int(v) for k, v in versions.items()
                                                     if v is not None})  # fmt: skip
    increment = increments.since(spark, ev, path, last.marker, marker)
    if increment.rebuild is not None:
        return Plan(REBUILD, increment.rebuild, log=last, marker=increment.marker)
    return Plan(INCREMENTAL, f"state as of {last.as_of}; read {increment.described}",
                log=last, increment=increment, marker=increment.marker)  # fmt: skip


def _unusable(
    spark: SparkSession, cfg: AppConfig, last: Log | None, versions: dict[str, int | None]
) -> str | None:
    """Why the state cannot serve this run (None: it can); ``versions``: the state tables'
    current versions (None: missing)."""
    as_of = cfg.features.as_of
    if last is None:
        return "no feature state yet"
    now = settings(cfg)
    if fingerprint(now) != last.fingerprint:
        keys = _changed(now, last.settings)
        return f"the configuration the state depends on changed ({', '.join(keys)})"
    missing = sorted(name for name, v in versions.items() if v is None)
    if missing:
        return f"table(s) {', '.join(missing)} of the feature state are missing"
    if versions != last.table_versions and not all(
        _maintained_since(spark, cfg, t, last.table_versions[t.name], versions[t.name])
        for t in state_tables(cfg)
    ):
        return ("the feature state was half-written or altered (a run stopped during its "
                "update, or a table's rows or columns changed since its last run: table "
                f"versions {versions}, log says {last.table_versions})")  # fmt: skip
    if as_of < last.as_of:
        return f"the state is as of {last.as_of}, after features.as_of {as_of}"
    if cfg.features.mode == "auto" and as_of > last.as_of + dt.timedelta(days=1):
        return (f"the state is as of {last.as_of}, more than a day before {as_of} "
                "(features.mode auto; incremental takes any later day)")  # fmt: skip
    return None


def _changed(now: dict[str, Any], before: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ, as config keys (``input.events.time_zone``, not
    ``input.events``), sorted."""
    out = []
    for key in sorted(set(now) | set(before)):
        a, b = now.get(key), before.get(key)
        if a == b:
            continue
        name = f"{prefix}{key}"
        deeper = _changed(a, b, f"{name}.") if isinstance(a, dict) and isinstance(b, dict) else []
        out.extend(deeper or [name])
    return out


def _maintained_since(
    spark: SparkSession, cfg: AppConfig, table: Table, logged: int, now: int | None
) -> bool:
    """The table is at the logged version, or only maintenance (``make optimize``'s OPTIMIZE,
    VACUUM's log entries, new comments or properties) committed after it: the same rows."""
    if now is None or now < logged:
        return False
    return now == logged or increments.rows_unchanged(
        spark, tables.path(cfg.storage, table), logged, now
    )


_MISSING_FILE = ("FILE_NOT_EXIST", "FileNotFoundException")


def damaged(cfg: AppConfig, error: BaseException) -> str | None:
    """Why the run must rebuild when ``error`` is a data file of a state table gone from
    disk (deleted by hand, or by a VACUUM with a short retention); None for any other error."""
    text = str(error)
    if not any(marker in text for marker in _MISSING_FILE):
        return None
    for table in (*STATE_TABLES, KEYS):
        location = tables.path(cfg.storage, table).removeprefix("file:").rstrip("/")
        if f"{location}/" in text:
            return (f"a data file of the feature state's table {table.name} is missing "
                    f"(under {location})")  # fmt: skip
    return None


def read_log(spark: SparkSession, cfg: AppConfig) -> Log | None:
    """The last log row (None: no state)."""
    if not tables.exists(spark, cfg.storage, FEATURE_STATE_LOG):
        return None
    log_rows = tables.read(spark, cfg.storage, FEATURE_STATE_LOG)
    _check_log_schema(cfg, log_rows)
    row = log_rows.orderBy(F.desc("increment")).first()
    if row is None:
        return None
    return Log(
        increment=int(row["increment"]), as_of=row["as_of"], fingerprint=row["fingerprint"],
        settings=json.loads(row["settings"]),
        marker=increments.Marker.from_json(row["input_kind"], row["input_marker"]),
        input_rows=int(row["input_rows"]), timed_rows=int(row["timed_rows"]),
        parsed_times=int(row["parsed_times"]), duplicate_rule=row["duplicate_rule"],
        table_versions={k: int(v) for k, v in row["table_versions"].items()},
        state_version=int(row["state_version"]),
    )  # fmt: skip


def _check_log_schema(cfg: AppConfig, rows: DataFrame) -> None:
    """Every run appends a row to the log: one whose columns were altered (a type widened,
    a column renamed) could not take it, after the snapshot and the state were written. So
    the run stops first, with the append's own comparison, saying what to do."""
    lacks, extra, changed = delta_tables.schema_changes(rows.schema, FEATURE_STATE_LOG_SCHEMA)
    found = [f"{n} missing" for n in lacks] + [f"{n} added" for n in extra] + changed
    if not found:
        return
    raise TableError(
        f"{tables.path(cfg.storage, FEATURE_STATE_LOG)}: the feature state's log has other "
        f"columns than this release writes ({'; '.join(found)}; types as log -> release), so "
        "no run could record itself: nothing was changed. Restore those columns, or remove "
        "the feature state's tables (feature_state_*) and the next run rebuilds them"
    )


def read_state(spark: SparkSession, cfg: AppConfig, table: Table, last: Log) -> DataFrame:
    """A state table at the version the log recorded."""
    return tables.read(spark, cfg.storage, table, version=last.table_versions[table.name])


@dataclass(frozen=True)
class Counts:
    """The cumulative input counts the state records."""

    input_rows: int
    timed_rows: int
    parsed_times: int
    duplicate_rule: str
    new_rows: int


@dataclass
class Update:
    """A state update: the rows of the five state tables and the log row's content."""

    mode: str
    reason: str
    increment: int
    daily: DataFrame
    event_ids: DataFrame
    rejected: DataFrame
    levels: DataFrame
    """``feature_state_levels`` rows (``features.levels.value_counts`` with the increment)."""
    customers: DataFrame
    counts: Counts
    marker: increments.Marker
    keys: DataFrame | None = None
    """With identity stitching, the ``feature_state_keys`` rows (every raw id, re-keyed)."""
    previous_versions: dict[str, int] | None = None
    """The state tables' versions before this run (incremental runs)."""
    kept_rejected: DataFrame | None = None
    """With quarantined rows checked again (``feature_recheck``): the state's other
    quarantined rows; ``feature_state_rejected`` is rewritten as them and :attr:`rejected`."""
    cached: list[DataFrame] = field(default_factory=list)
    """Frames persisted for these writes (the owner unpersists them after the writes)."""

    def writes(self, spark: SparkSession, cfg: AppConfig, *, run_id: str) -> list[tables.Write]:
        """The state writes (appends, or overwrites for a rebuild; the customers and the keys
        always overwritten; the quarantined rows too when some were checked again), then the
        log row with the versions they left."""
        append = self.mode == INCREMENTAL
        versions: dict[str, int] = {}
        nothing_new = (append and self.counts.new_rows == 0 and self.kept_rejected is None
                       and self.previous_versions)  # fmt: skip
        rejected, add_rejected = self.rejected, append
        if self.kept_rejected is not None:
            rejected, add_rejected = self.kept_rejected.unionByName(self.rejected), False

        def write(table: Table, df: DataFrame, add: bool) -> tables.Write:
            def call() -> int:
                if add and nothing_new and self.previous_versions is not None:
                    # No new rows: the appends would change nothing (and commit nothing).
                    versions[table.name] = self.previous_versions[table.name]
                else:
                    versions[table.name] = _write(spark, cfg, table, df, add=add,
                                                  run_id=run_id)  # fmt: skip
                return versions[table.name]

            return tables.Write(table, call, spark, cfg.storage)

        return [
            write(DAILY, self.daily, append), write(EVENT_IDS, self.event_ids, append),
            write(REJECTED, rejected, add_rejected), write(LEVELS, self.levels, append),
            write(CUSTOMERS, self.customers, False),
            *([] if self.keys is None else [write(KEYS, self.keys, False)]),
            tables.Write(FEATURE_STATE_LOG,
                         lambda: self._write_log(spark, cfg, versions, run_id=run_id),
                         spark, cfg.storage),
        ]  # fmt: skip

    def _write_log(
        self, spark: SparkSession, cfg: AppConfig, versions: dict[str, int], *, run_id: str
    ) -> int:
        tables.fault_point("feature-state-log")  # crash tests: the tables written, no log
        values = settings(cfg)
        c = self.counts
        row = (
            self.increment, cfg.features.as_of, self.mode, self.reason, STATE_VERSION,
            fingerprint(values), json.dumps(values, sort_keys=True), self.marker.kind,
            self.marker.to_json(), c.input_rows, c.timed_rows, c.parsed_times, c.duplicate_rule,
            dict(versions), c.new_rows, run_id, dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )  # fmt: skip
        df = spark.createDataFrame([row], FEATURE_STATE_LOG_SCHEMA)
        return _write(spark, cfg, FEATURE_STATE_LOG, df, add=True, run_id=run_id)


def _write(
    spark: SparkSession, cfg: AppConfig, table: Table, df: DataFrame, *, add: bool, run_id: str
) -> int:
    rows = df if table.schema is None else tables.conform(df, table)
    options = delta_tables.WriteOptions(
        mode="append" if add else "overwrite", partition_by=table.partition_by,
        metadata={"job": "build_features", "run_id": run_id, "as_of": str(cfg.features.as_of)},
        overwrite_schema=not add, contract=tables.contract(table, rows),
    )  # fmt: skip
    return delta_tables.write(spark, rows, tables.path(cfg.storage, table), options).version
