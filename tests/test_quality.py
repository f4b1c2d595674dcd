"""Quarantine: every unusable row lands in rejected_events with its reason, exactly once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import polars as pl
import pytest
from deltalake import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from segmentation.config import load_config
from segmentation.errors import InputError
from segmentation.features.behaviour import compute_features
from segmentation.identity import stitched
from segmentation.inputs import quality
from segmentation.inputs.sources import CANONICAL_SCHEMA
from segmentation.sample import generator as gen
from segmentation.storage import delta_tables
from segmentation.workflows import build_features, summaries
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.date(2025, 12, 31)


def ts(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC) if text else None


def canonical(spark, rows):
    """rows: (customer, time, amount, type, event_id)."""
    return spark.createDataFrame(
        [(c, ts(t), a, et, None, None, None, None, None, eid) for c, t, a, et, eid in rows],
        CANONICAL_SCHEMA,
    )


def test_split_events_gives_each_bad_row_its_reason_and_keeps_duplicates_once(spark):
    rows = [
        ("a", "2025-01-01T10:00:00", 10.0, "order", "e1"),
        ("a", "2025-01-01T10:00:00", 10.0, "order", "e1"),  # same id: duplicate
        ("a", "2025-01-02T10:00:00", 5.0, "order", None),
        ("a", "2025-01-02T10:00:00", 5.0, "order", None),  # same content, no id: duplicate
        ("a", "2025-01-03T10:00:00", -4.0, "return", "e3"),  # a negative return is fine
        ("a", "2026-06-01T10:00:00", 4.0, "order", "e4"),  # after as_of, plausible: kept
        (None, "2025-01-01T10:00:00", 1.0, "order", "b1"),
        ("", "2025-01-01T10:00:00", 1.0, "order", "b2"),
        ("b", None, 1.0, "order", "b3"),
        ("b", "1899-12-31T23:00:00", 1.0, "order", "b4"),
        ("b", "2027-01-02T00:00:00", 1.0, "order", "b5"),
        ("b", "2025-01-01T10:00:00", float("nan"), "order", "b6"),
        ("b", "2025-01-01T10:00:00", float("inf"), "order", "b7"),
        ("b", "2025-01-01T10:00:00", None, "order", "b8"),
        ("b", "2025-01-01T10:00:00", -3.0, "order", "b9"),
    ]
    split = quality.split_events(
        canonical(spark, rows), earliest=dt.date(1990, 1, 1), latest=dt.date(2026, 12, 31)
    )
    got = sorted((r["event_id"] or "-", r[quality.REASON]) for r in split.rejected.collect())
    assert got == sorted([
        ("e1", "duplicate_event"), ("-", "duplicate_event"),
        ("b1", "missing_customer_id"), ("b2", "missing_customer_id"),
        ("b3", "invalid_event_time"), ("b4", "implausible_event_time"),
        ("b5", "implausible_event_time"), ("b6", "invalid_amount"), ("b7", "invalid_amount"),
        ("b8", "invalid_amount"), ("b9", "negative_amount"),
    ])  # fmt: skip
    assert sorted(r["event_id"] or "-" for r in split.clean.collect()) == ["-", "e1", "e3", "e4"]
    assert split.clean.count() + split.rejected.count() == len(rows)


DEFECTS = {  # reason -> rows added to a clean history
    "missing_customer_id": 5,
    "invalid_event_time": 4,
    "implausible_event_time": 5,
    "invalid_amount": 5,
    "negative_amount": 4,
    "duplicate_event": 6,
}


def dirty_events(clean):
    """The clean history as strings, plus rows with known defects (and 2 plausible later rows)."""
    base = clean.withColumn("event_time", F.date_format("event_time", "yyyy-MM-dd HH:mm:ss"))
    sample = base.where("event_type = 'order'").orderBy("event_id").limit(40).collect()

    def variant(i, **changes):
        row = sample[i].asDict()
        row.update(event_id=f"X{i:03d}", **changes)
        return row

    extra = (
        [variant(i, customer_id=None if i % 2 else "") for i in range(5)]
        + [variant(5 + i, event_time="31-12-2025 25:61") for i in range(4)]
        + [variant(9 + i, event_time="1850-01-01 00:00:00") for i in range(3)]
        + [variant(12 + i, event_time="2031-01-01 00:00:00") for i in range(2)]
        + [variant(14 + i, amount=float("nan")) for i in range(3)]
        + [variant(17 + i, amount=float("inf")) for i in range(2)]
        + [variant(19 + i, amount=-12.5) for i in range(4)]
        + [sample[23 + i].asDict() for i in range(6)]  # exact copies: same event_id
        + [variant(29 + i, event_time="2026-02-01 10:00:00") for i in range(2)]  # after as_of
    )
    nullable = T.StructType([T.StructField(f.name, f.dataType, True) for f in base.schema])
    return base.unionByName(base.sparkSession.createDataFrame(extra, nullable))


def config(base: Path, events_path: str | None, **over):
    overrides = [
        f"storage.warehouse={base / 'wh'}",
        f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
        f"tracking.artifact_location={base / 'mla'}",
        *[f"{k}={v}" for k, v in over.items()],
    ]
    if events_path:
        overrides += [f"input.events.path={events_path}", "input.events.format=parquet"]
    return load_config(ROOT / "conf" / "local.yaml", overrides=overrides)


@pytest.fixture(scope="module")
def histories(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("quality")
    clean = gen.generate(
        spark, customers=200, events=6000, seed=11, start_date=dt.date(2024, 1, 1), end_date=AS_OF
    ).events.cache()
    clean_path, dirty_path = str(base / "clean"), str(base / "dirty")
    clean.write.parquet(clean_path)
    dirty_events(clean).write.parquet(dirty_path)
    yield base, clean_path, dirty_path
    mlflow.set_tracking_uri(None)


def test_build_features_quarantines_exactly_the_defective_rows(spark, histories):
    base, clean_path, dirty_path = histories
    cfg = config(base / "dirty-run", dirty_path, **{"quality.max_reject_share": 0.5})
    result = build_features.run(spark, cfg)
    assert result.rejected == DEFECTS
    rejected = pl.read_delta(cfg.storage.table_path("rejected_events"))
    counts = dict(rejected.group_by("reason").len().iter_rows())
    assert counts == DEFECTS
    assert rejected["run_id"].unique().to_list() == [result.run_id]
    assert rejected["as_of"].unique().to_list() == [AS_OF]
    assert sorted(rejected.filter(pl.col("reason") != "duplicate_event")["event_id"].to_list()) == [
        f"X{i:03d}" for i in range(23)
    ]
    run = mlflow.get_run(result.run_id)
    assert run.data.metrics["rejected_negative_amount"] == 4
    assert run.data.metrics["rejected_rows"] == sum(DEFECTS.values())

    # The features equal those of the clean history: bad rows never count, copies count once.
    clean_cfg = config(base / "clean-run", clean_path)
    build_features.run(spark, clean_cfg)
    read = lambda c: delta_tables.read(  # noqa: E731
        spark, c.storage.table_path("customer_features")
    )
    assertDataFrameEqual(read(cfg), read(clean_cfg))


def test_build_features_fails_over_max_reject_share_without_changing_tables(spark, histories):
    base, _, dirty_path = histories
    cfg = config(base / "strict-run", dirty_path, **{"quality.max_reject_share": 0.001})
    expected = (
        r"29 of \d+ input events .* more than quality.max_reject_share \(0.1%\); "
        r"by reason: duplicate_event: 6"
    )
    with pytest.raises(InputError, match=expected):
        build_features.run(spark, cfg)
    for table in ("customer_features", "rejected_events"):
        assert not delta_tables.exists(spark, cfg.storage.table_path(table))
    wh = Path(cfg.storage.warehouse)
    leftovers = [p for p in wh.rglob("*.parquet")] if wh.exists() else []
    assert leftovers == []


def test_build_features_rerun_replaces_quarantine_snapshot(spark, histories):
    base, _, dirty_path = histories
    cfg = config(base / "rerun", dirty_path, **{"quality.max_reject_share": 0.5})
    build_features.run(spark, cfg)
    build_features.run(spark, cfg)
    path = cfg.storage.table_path("rejected_events")
    assert DeltaTable(path).version() == 1
    assert pl.read_delta(path).height == sum(DEFECTS.values())


def test_build_features_empty_input_is_a_clear_error(spark, tmp_path):
    empty = str(tmp_path / "empty")
    spark.createDataFrame([], CANONICAL_SCHEMA).write.parquet(empty)
    cfg = config(tmp_path, empty)
    with pytest.raises(InputError, match="no usable events on or before 2025-12-31"):
        build_features.run(spark, cfg)
    assert not delta_tables.exists(spark, cfg.storage.table_path("customer_features"))


def test_duplicates_are_per_customer_and_the_clean_events_come_partitioned_by_customer(spark):
    rows = [
        ("a", "2025-01-01T10:00:00", 10.0, "order", "e1"),
        ("a", "2025-01-01T10:00:00", 12.0, "order", "e1"),  # same id, other content: a copy
        ("b", "2025-01-05T10:00:00", 7.0, "order", "e1"),  # another customer's id clash: kept
        ("b", "2025-01-06T10:00:00", 7.0, "order", None),
        ("b", "2025-01-06T10:00:00", 7.0, "visit", None),  # other type: not a copy
    ]
    split = quality.split_events(
        canonical(spark, rows), earliest=dt.date(1990, 1, 1), latest=dt.date(2026, 12, 31)
    )
    kept = sorted((r["customer_id"], r["amount"], r["event_type"]) for r in split.clean.collect())
    assert kept == [("a", 10.0, "order"), ("b", 7.0, "order"), ("b", 7.0, "order"),
                    ("b", 7.0, "visit")]  # fmt: skip
    assert [
        (r["customer_id"], r["amount"], r[quality.REASON]) for r in split.rejected.collect()
    ] == [("a", 12.0, quality.DUPLICATE_EVENT)]
    assert split.valid.count() == len(rows)
    # One exchange, by customer: the per-customer features after it add none of their own.
    features = compute_features(split.clean, as_of=dt.date(2025, 12, 31))
    plan = features._jdf.queryExecution().executedPlan().toString()  # not run: initial plan
    assert plan.count("Exchange") == 1
    assert "Exchange hashpartitioning(customer_id" in plan


def test_split_events_gives_each_unreadable_value_its_own_reason(spark):
    """The reader's issues (sources.ISSUE) become the rows' reasons, after a missing id."""
    from segmentation.inputs.sources import ISSUE

    schema = T.StructType([*CANONICAL_SCHEMA.fields, T.StructField(ISSUE, T.StringType())])
    rows = [
        ("17850.5", ts("2025-01-01T10:00:00"), 1.0, "order", "non_integral_customer_id", "i1"),
        ("9007199254740992", ts("2025-01-01T10:00:00"), 1.0, "order", "inexact_customer_id",
         "i2"),
        ("a", ts("2025-01-01T10:00:00"), None, "order", "unparseable_amount", "i3"),
        (None, ts("2025-01-01T10:00:00"), None, "order", "unparseable_amount", "i4"),
        ("a", ts("2025-01-01T10:00:00"), 2.0, "order", None, "ok"),
    ]  # fmt: skip
    events = spark.createDataFrame(
        [(c, t, a, et, None, None, None, None, None, eid, issue) for c, t, a, et, issue, eid
         in rows], schema,
    )  # fmt: skip
    split = quality.split_events(events, earliest=dt.date(1990, 1, 1), latest=AS_OF)
    got = sorted((r["event_id"], r[quality.REASON]) for r in split.rejected.collect())
    assert got == [("i1", "non_integral_customer_id"), ("i2", "inexact_customer_id"),
                   ("i3", "unparseable_amount"), ("i4", "missing_customer_id")]  # fmt: skip
    assert [r["event_id"] for r in split.clean.collect()] == ["ok"]
    assert ISSUE not in split.rejected.columns and ISSUE not in split.clean.columns


def test_implausible_event_time_counts_local_days(spark):
    # 2026-01-01T03:00Z is still 2025-12-31 in New York (22:00 EST): the latest plausible day.
    rows = [("a", "2026-01-01T03:00:00", 1.0, "order", "e1"),
            ("a", "2026-01-01T06:00:00", 1.0, "order", "e2")]  # fmt: skip
    split = quality.split_events(
        canonical(spark, rows), earliest=dt.date(1990, 1, 1), latest=dt.date(2025, 12, 31),
        time_zone="America/New_York",
    )  # fmt: skip
    assert [r["event_id"] for r in split.clean.collect()] == ["e1"]
    assert [(r["event_id"], r[quality.REASON]) for r in split.rejected.collect()] == [
        ("e2", "implausible_event_time")
    ]


COPIES = [
    ("a", "2025-01-02T00:00:00", 5.0, "order", None),
    ("a", "2025-01-02T00:00:00", 5.0, "order", None),  # an exact copy, no id
    ("a", "2025-01-03T00:00:00", 7.0, "order", "e1"),
    ("a", "2025-01-03T00:00:00", 7.0, "order", "e1"),  # the same id
]


def split_copies(spark, rule, **kwargs):
    return quality.split_events(
        canonical(spark, COPIES), earliest=dt.date(1990, 1, 1), latest=AS_OF, duplicates=rule,
        **kwargs,
    )  # fmt: skip


def test_duplicates_exact_drops_exact_copies_and_repeated_ids(spark):
    split = split_copies(spark, "exact")
    assert split.clean.count() == 2 and split.rejected.count() == 2
    assert split.kept_copies is None


def test_duplicates_event_id_keeps_exact_copies_and_reports_them(spark):
    split = split_copies(spark, "event_id", report_exact_copies=True)
    assert sorted((r["amount"], r["event_id"]) for r in split.clean.collect()) == [
        (5.0, None), (5.0, None), (7.0, "e1"),
    ]  # fmt: skip
    assert [r["event_id"] for r in split.rejected.collect()] == ["e1"]
    assert split.kept_copies is not None and split.kept_copies.count() == 1


def test_duplicates_off_keeps_every_event(spark):
    split = split_copies(spark, "off")
    assert split.clean.count() == 4 and split.rejected.count() == 0


def test_exact_copies_must_agree_on_every_column(spark):
    """Two events of one day, amount and type but other quantities are two purchases."""
    rows = [("a", ts("2025-01-02T00:00:00"), 5.0, "order", None, None, None, q, None, None)
            for q in (1.0, 2.0)]  # fmt: skip
    split = quality.split_events(
        spark.createDataFrame(rows, CANONICAL_SCHEMA), earliest=dt.date(1990, 1, 1), latest=AS_OF
    )
    assert split.clean.count() == 2 and split.rejected.count() == 0


def write_day_level_export(spark, path, *, with_time=False):
    """A retail export with day-level dates (or times of day) and no event id: customer a
    bought the same thing twice on 2025-01-02."""
    time = "2025-01-02 10:15:00" if with_time else "2025-01-02"
    spark.createDataFrame(
        [("a", time, 5.0, 1.0), ("a", time, 5.0, 1.0), ("b", "2025-01-03", 8.0, 2.0)],
        "customer_id string, event_time string, amount double, quantity double",
    ).coalesce(1).write.parquet(path)


def day_level_config(base: Path, path: str, **over):
    columns = {
        f"input.events.columns.{c}": "null"
        for c in ("event_type", "category", "channel", "device", "discount", "event_id")
    }
    return config(base, path, **{**columns, "quality.max_reject_share": 0.5, **over})


def test_build_features_keeps_exact_copies_of_day_level_events_and_reports_them(spark, tmp_path):
    events = str(tmp_path / "export")
    write_day_level_export(spark, events)
    cfg = day_level_config(tmp_path, events)
    result = build_features.run(spark, cfg)
    assert result.duplicates == build_features.Duplicates("event_id", True, kept_copies=1)
    assert result.rejected == {}
    features = delta_tables.read(spark, cfg.storage.table_path("customer_features"))
    assert {r["customer_id"]: r["frequency"] for r in features.collect()} == {"a": 2, "b": 1}
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["exact_copies_kept"] == 1
    assert metrics["exact_copies_kept_share"] == pytest.approx(1 / 3)
    text = summaries.features(result, cfg)
    assert "1 exact copies (33.33% of rows) kept as separate events" in text


def test_build_features_drops_exact_copies_when_times_have_a_time_of_day(spark, tmp_path):
    events = str(tmp_path / "export")
    write_day_level_export(spark, events, with_time=True)
    result = build_features.run(spark, day_level_config(tmp_path, events))
    assert result.duplicates == build_features.Duplicates("exact", False)
    assert result.rejected == {"duplicate_event": 1}


def test_build_features_duplicates_exact_drops_day_level_copies_when_asked(spark, tmp_path):
    events = str(tmp_path / "export")
    write_day_level_export(spark, events)
    cfg = day_level_config(tmp_path, events, **{"quality.duplicates": "exact"})
    assert build_features.run(spark, cfg).rejected == {"duplicate_event": 1}


def test_build_features_reports_input_columns_and_the_dimension_match(spark, tmp_path):
    """Per input column: values parsed, null and rejected; and the share of customers found
    in the customers dimension, in the summary and the MLflow run."""
    events, dim = str(tmp_path / "export"), str(tmp_path / "customers")
    spark.createDataFrame(
        [(1.0, "2025-01-02", "5,00"), (2.0, "2025-01-03", "x"), (3.5, "2025-01-03", "1,00"),
         (4.0, None, "2,00")],
        "customer_id double, event_time string, amount string",
    ).coalesce(1).write.parquet(events)  # fmt: skip
    spark.createDataFrame([(1,), (9,)], "customer_id int").write.parquet(dim)
    cfg = day_level_config(
        tmp_path, events, **{"input.events.columns.quantity": "null",
                             "input.events.decimal_separator": '","',
                             "input.customers.path": dim, "input.customers.format": "parquet",
                             "quality.max_reject_share": 0.8},
    )  # fmt: skip
    result = build_features.run(spark, cfg)
    # Only customer 1 has a usable event; the dimension holds 1 (and 9): 1 of 1 matched.
    assert result.rejected == {"unparseable_amount": 1, "non_integral_customer_id": 1,
                               "invalid_event_time": 1}  # fmt: skip
    counts = {c.column: (c.parsed, c.null, c.rejected) for c in result.input_counts.columns}
    assert counts == {"customer_id": (3, 0, 1), "event_time": (3, 1, 0), "amount": (3, 0, 1)}
    assert (result.dimension.customers, result.dimension.matched) == (1, 1)
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["input_amount_rejected"] == 1 and metrics["input_event_time_null"] == 1
    assert metrics["input_customer_id_parsed"] == 3
    assert metrics["customers_dimension_match_share"] == 1.0
    text = summaries.features(result, cfg)
    assert "amount" in text and "1 of 1 customers (100.0%) found in the customers dimension" in text


@pytest.mark.parametrize(
    ("configured", "day_level", "rule"),
    [("auto", True, "event_id"), ("auto", False, "exact"), ("exact", True, "exact"),
     ("event_id", False, "event_id"), ("off", True, "off")],
)  # fmt: skip
def test_duplicate_rule_auto_keeps_copies_only_of_day_level_events(configured, day_level, rule):
    assert quality.duplicate_rule(configured, day_level=day_level) == rule


def test_staged_events_are_shuffled_once_for_the_quarantine_and_the_features(spark):
    """The quarantine, the de-duplicated events and the per-customer features all read the
    persisted staged rows: no plan after staging shuffles the events again."""
    rows = [
        ("a", "2025-01-01T10:00:00", 10.0, "order", "e1"),
        ("a", "2025-01-01T10:00:00", 10.0, "order", "e1"),  # duplicate
        ("b", "2025-02-01T10:00:00", 7.0, "order", None),
        ("b", None, 1.0, "order", "b3"),  # invalid_event_time
    ]
    staged = quality.stage_events(
        canonical(spark, rows), earliest=dt.date(1990, 1, 1), latest=AS_OF,
        storage_level=StorageLevel.MEMORY_AND_DISK,
    )  # fmt: skip
    try:
        assert staged.count() == len(rows)  # materialises the one shuffle
        split = quality.split_staged(staged)
        features = compute_features(
            split.clean, as_of=AS_OF, windows_days=(30, 90), trend_window_days=90,
            categories=(), channels=(), devices=(), with_discount=False,
        )  # fmt: skip
        for df in (split.rejected, split.clean, features):
            plan = df._jdf.queryExecution().executedPlan().toString()
            outside = _outside_cache(plan)
            assert "InMemoryTableScan" in outside, plan
            assert "Exchange" not in outside, plan
        got = sorted((r["event_id"] or "-", r[quality.REASON]) for r in split.rejected.collect())
        assert got == [("b3", "invalid_event_time"), ("e1", "duplicate_event")]
        # The same result as the unstaged split.
        plain = quality.split_events(
            canonical(spark, rows), earliest=dt.date(1990, 1, 1), latest=AS_OF
        )
        assertDataFrameEqual(split.clean, plain.clean)
        assertDataFrameEqual(split.rejected, plain.rejected)
        assert {r["customer_id"]: r["frequency"] for r in features.collect()} == {"a": 1, "b": 1}
    finally:
        staged.unpersist()


def _outside_cache(plan: str) -> str:
    """The plan's lines without the subtrees printed under each InMemoryRelation (the cached
    plan, computed once when the staged rows were persisted)."""
    kept, skip_deeper_than = [], None
    for line in plan.splitlines():
        depth = len(line) - len(line.lstrip(" :+-"))
        if skip_deeper_than is not None and depth > skip_deeper_than:
            continue
        skip_deeper_than = depth if "InMemoryRelation" in line else None
        kept.append(line)
    return "\n".join(kept)


def test_steps_of_one_date_share_one_staged_read_of_the_events(spark, histories):
    """In ``stitched.sharing`` (make run's steps of one date) the feature job stages the events
    once; customer value's and the outcome backtest's ``clean_events`` (every customer, or a
    sample) reuse those rows and get exactly what their own read gives; the block's end
    releases them."""
    base, _, dirty_path = histories
    cfg = config(base / "shared", dirty_path, **{"quality.max_reject_share": 0.5})
    keep = F.pmod(F.xxhash64("customer_id"), F.lit(2)) == 0
    alone = quality.clean_events(spark, cfg, keep=keep)
    expected = alone.clean.collect()
    alone.release()
    jsc = spark.sparkContext._jsc

    def persisted() -> set[int]:
        """Ids of the persisted RDDs (earlier tests' may be released meanwhile)."""
        return set(jsc.getPersistentRDDs().keySet())

    with stitched.sharing():
        before = persisted()
        build_features.run(spark, cfg)
        staged = persisted() - before
        assert len(staged) == 1  # the staged events stay
        everyone = stitched.clean_events(spark, cfg)
        sample = stitched.clean_events(spark, cfg, keep=keep)
        assert persisted() - before == staged  # and nothing is staged again
        assert everyone.shared and sample.shared
        assertDataFrameEqual(sample.clean, expected)
        assert everyone.clean.count() > sample.clean.count() > 0
        sample.release()  # a step's release leaves the shared rows to the block
        assert everyone.staged.is_cached
    assert not everyone.staged.is_cached
    assert not persisted() & staged
