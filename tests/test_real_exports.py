"""Real exports, round 3: files written the way pandas, pyarrow, CRMs and survey tools write
them, read by the product with hand-computed expectations."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from segmentation.config import AttitudesConfig, EventSourceConfig
from segmentation.errors import InputError
from segmentation.inputs import columns, quality, sources, survey
from tests.conftest import local_config

UTC = dt.UTC


def _events_config(path, fmt="parquet", **columns):
    mapping = {"customer_id": "customer_id", "event_time": "event_time", "amount": "amount",
               **{c: None for c in ("event_type", "category", "channel", "device", "quantity",
                                    "discount", "event_id")}}  # fmt: skip
    mapping.update(columns)
    return mapping, {"path": str(path), "format": fmt}


def _source(path, fmt="parquet", zone="UTC", options=None, timestamp_format=None, **columns):
    mapping, base = _events_config(path, fmt, **columns)
    return EventSourceConfig(**base, columns=mapping, time_zone=zone, options=options or {},
                             timestamp_format=timestamp_format)  # fmt: skip


def test_parquet_timestamps_of_every_encoding_are_read_as_instants(spark, tmp_path):
    """pandas' default (INT64 TIMESTAMP(NANOS, isAdjustedToUTC=false)), its tz-aware variant
    (NANOS, adjusted), pyarrow's milli- and microsecond units, and Impala's INT96: each read,
    naive times as Berlin wall-clock times, zoned ones as the instants they are."""
    local = pd.to_datetime(["2025-01-01 10:00:00.123456789", "2025-07-01 23:30:00.000000000"])
    cases = {
        "pandas_naive_ns": (pd.DataFrame({"event_time": local}), {}),
        "pandas_utc_ns": (pd.DataFrame({"event_time": local.tz_localize("UTC")}), {}),
        "arrow_ms": (pa.table({"event_time": pa.array(local.as_unit("ms"), pa.timestamp("ms"))}),
                     {}),
        "arrow_us_utc": (pa.table({"event_time": pa.array(
            local.tz_localize("UTC").as_unit("us"), pa.timestamp("us", tz="UTC"))}), {}),
        "int96": (pa.table({"event_time": pa.array(local.as_unit("ns"), pa.timestamp("ns"))}),
                  {"use_deprecated_int96_timestamps": True}),
    }  # fmt: skip
    berlin = [
        dt.datetime(2025, 1, 1, 9, 0, 0, 123456, UTC),
        dt.datetime(2025, 7, 1, 21, 30, 0, 0, UTC),
    ]
    as_utc = [
        dt.datetime(2025, 1, 1, 10, 0, 0, 123456, UTC),
        dt.datetime(2025, 7, 1, 23, 30, 0, 0, UTC),
    ]
    want = {"pandas_naive_ns": berlin, "pandas_utc_ns": as_utc, "arrow_ms": [
        berlin[0].replace(microsecond=123000), berlin[1]], "arrow_us_utc": as_utc,
        "int96": as_utc}  # fmt: skip
    for name, (frame, options) in cases.items():
        path = tmp_path / f"{name}.parquet"
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame)
        table = table.append_column("customer_id", pa.array(["c1", "c2"]))
        table = table.append_column("amount", pa.array([1.0, 2.0]))
        pq.write_table(table, path, **options)
        got = sources.read_events(spark, _source(path, zone="Europe/Berlin"), str(path))
        times = [r.event_time for r in got.events.orderBy("customer_id").collect()]
        assert [t.astimezone(UTC) for t in times] == want[name], name


def test_epoch_values_that_cannot_be_times_are_quarantined_not_an_overflow(spark, tmp_path):
    """A nanosecond value in an epoch-milliseconds column (the long overflow), a number beyond
    year 9999, NaN: quarantined as invalid_event_time with their raw text; the rest is read."""
    ok_ms = 1_735_725_600_123  # 2025-01-01 10:00:00.123 UTC
    frame = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d"],
        "event_time": [ok_ms, ok_ms * 1_000_000, 1e30, math.nan],
        "amount": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    path = tmp_path / "epochs.parquet"
    frame.to_parquet(path)
    source = sources.read_events(spark, _source(path, timestamp_format="epoch_millis"), str(path))
    staged = quality.stage_events(source.events, earliest=dt.date(1990, 1, 1),
                                  latest=dt.date(2026, 1, 1))  # fmt: skip
    rows = {r.customer_id: r for r in staged.collect()}
    assert rows["a"].reason is None
    assert rows["a"].event_time.astimezone(UTC) == dt.datetime(2025, 1, 1, 10, 0, 0, 123000, UTC)
    for cid in "bcd":
        assert rows[cid].reason == quality.INVALID_EVENT_TIME, cid
    # The raw text the user must look for (pandas wrote the NaN as a null).
    assert float(rows["b"].raw_values["event_time"]) == float(ok_ms * 1_000_000)
    assert float(rows["c"].raw_values["event_time"]) == 1e30
    assert rows["d"].raw_values["event_time"] is None


def test_unicode_blanks_in_ids_types_and_levels_are_trimmed_alike(spark, tmp_path):
    """A trailing TAB in an id, a no-break space after an event type, a zero-width space and a
    BOM around a channel: one customer, three orders, all on the web channel."""
    path = tmp_path / "blanks.csv"
    path.write_text(
        "customer_id,event_time,amount,event_type,channel\n"
        "C1\t,2025-01-01 10:00:00,10,order\u00a0,Web\u200b\n"
        "C1,2025-01-02 10:00:00,20,Order,\ufeffweb\n"
        "\u2003C1,2025-01-03 10:00:00,30, order ,WEB\n",
        encoding="utf-8",
    )
    cfg = _source(path, fmt="csv", event_type="event_type", channel="channel")
    rows = sources.read_events(spark, cfg, str(path)).events.collect()
    assert {r.customer_id for r in rows} == {"C1"}
    assert [r.event_type for r in rows] == ["order"] * 3
    assert {r.channel for r in rows} == {"web"}


def test_header_names_with_spaces_are_matched_and_a_wrong_one_is_named_before_spark(tmp_path):
    """A hand-edited header ``customer_id, event_time, amount``: matched after trimming; a
    mapping that names no column fails before Spark starts, the names quoted."""
    path = tmp_path / "spaces.csv"
    path.write_text("customer_id, event_time,\tamount \nc1,2025-01-01,3.5\n")
    columns.check_source(_source(path, fmt="csv"), str(path))  # no error: names match
    with pytest.raises(InputError) as err:
        columns.check_source(_source(path, fmt="csv", amount="total"), str(path))
    message = str(err.value)
    assert "'total'" in message and "input.events.columns.amount" in message
    assert "' event_time'" in message and "whitespace" in message


def test_csv_files_with_headers_in_another_order_are_refused_before_spark(tmp_path):
    """Spark reads every CSV file of a folder with one file's column order: a second export
    with the same columns in another order would be read shifted, silently. Named instead."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "day1.csv").write_text("customer_id,event_time,amount\nc1,2025-01-01,3.5\n")
    (folder / "day2.csv").write_text("event_time,customer_id,amount\n2025-01-02,c1,4.5\n")
    (folder / "empty.csv").write_text("")  # an empty export has no header to compare
    with pytest.raises(InputError) as err:
        columns.check_source(_source(folder, fmt="csv"), str(folder))
    message = str(err.value)
    assert "day1.csv" in message and "day2.csv" in message and "same header" in message
    (folder / "day2.csv").write_text("customer_id,event_time,amount\nc1,2025-01-02,4.5\n")
    columns.check_source(_source(folder, fmt="csv"), str(folder))


def test_header_with_spaces_reads_the_events(spark, tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text("customer_id, event_time,\tamount \nc1,2025-01-01 10:00:00,3.5\n")
    rows = sources.read_events(spark, _source(path, fmt="csv"), str(path)).events.collect()
    assert [(r.customer_id, r.amount) for r in rows] == [("c1", 3.5)]


def _survey_config(**items):
    return AttitudesConfig(
        items={"ordinal": ["q1", "q2", "q3"], "scale": [1, 5], **items},
        attributes={"numeric": [], "categorical": [], "boolean": []},
    )


def test_dont_know_answers_are_missing_answers_counted_per_item(spark):
    """Survey-tool exports: ``Don't know`` (typographic apostrophe too), ``N/A``, ``Prefer not
    to say`` and an item's own code 99 are missing answers, counted; the rest are answers."""
    rows = [
        ("r1", "1", "2", "3"), ("r2", "Don\u2019t know", "4", "5"), ("r3", " N/A ", "3", "2"),
        ("r7", "3", "99", "2"),
        ("r4", "2", "Prefer not to say", "4"), ("r5", "5", "3", "1"), ("r6", "4", "2", "2"),
    ]  # fmt: skip
    raw = spark.createDataFrame(rows, "customer_id string, q1 string, q2 string, q3 string")
    ac = _survey_config(missing_answers_by_item={"q2": ["99"]})
    checked = survey.check(raw, ac)
    assert checked.declined == {"q1": 2, "q2": 2}
    assert checked.invalid_answers == {}
    values = {r.customer_id: r for r in checked.respondents.collect()}
    assert values["r2"].q1 is None and values["r7"].q2 is None and values["r1"].q1 == 1.0


def test_other_text_in_a_likert_item_names_the_item_and_the_way_out(spark):
    rows = [("r1", "1", "2", "3"), ("r2", "Neutral", "4", "5"), ("r3", "2", "3", "4"),
            ("r4", "3", "1", "2")]  # fmt: skip
    raw = spark.createDataFrame(rows, "customer_id string, q1 string, q2 string, q3 string")
    with pytest.raises(InputError, match=r"item 'q1'.*'Neutral'.*missing_answers"):
        survey.check(raw, _survey_config())
    lenient = survey.check(raw, _survey_config(invalid_answers="missing"))
    assert lenient.invalid_answers == {"q1": 1}


def test_crm_text_in_b2b_attributes_is_read_or_counted(spark):
    """Employee counts as a CRM exports them and business flags spelled B2B/yes: ranges count
    as their lower bound, thousands separators are read, words are counted, never cast."""
    from segmentation.config import B2bConfig
    from segmentation.modeling import rulesets

    customers = spark.createDataFrame(
        [("a", "B2B", "51-200"), ("b", "yes", "1,000"), ("c", "no", "5000"),
         ("d", "maybe", "10"), ("e", "Business", "n/a"), ("f", " YES\u00a0", "250+")],
        "customer_id string, is_business string, employee_count string",
    )  # fmt: skip
    features = spark.createDataFrame(
        [(c, 0.0) for c in "abcdef"], "customer_id string, monetary_365d double"
    )
    cfg = B2bConfig(industry_column=None)
    spell = {"true_values": ("yes", "b2b", "business"), "false_values": ("no",)}
    tiers = {r.customer_id: (r.employees, r.segment_name)
             for r in rulesets.b2b_tiers(features, customers, cfg, **spell).collect()}  # fmt: skip
    # Accounts: a (B2B), b (yes), e (Business), f (" YES "); c is not, d cannot be read.
    assert tiers == {"a": (51.0, "Medium"), "b": (1000.0, "Large"), "e": (None, "Small"),
                     "f": (250.0, "Large")}  # fmt: skip
    assert rulesets.b2b_issues(customers, cfg, **spell) == {
        "b2b.business_column (is_business)": 1,
        "b2b.employees_column (employee_count)": 1,
    }


@pytest.mark.slow
@pytest.mark.integration
def test_crm_text_in_every_column_goes_through_every_job_without_an_ansi_error(spark, tmp_path):
    """The sample exported the way CRMs and survey tools write it: amounts with thousands
    separators and stray words, event types with no-break spaces, ids with TABs, employee
    counts as ranges, business flags as B2B/yes, ages as bands, country codes with blanks,
    Likert answers with Don't know. Features, value, training (composition), rules (B2B
    tiers) and attitudes run with ANSI on: each finishes, and what it cannot read it counts."""
    import mlflow

    from segmentation.workflows import attitudes as attitudes_job
    from segmentation.workflows import build_features, generate, rules, train, value

    base = tmp_path
    sample = local_config(base, "generator.customers=400", "generator.events=12000")
    generate.run(spark, sample)
    events = spark.read.format("delta").load(sample.events_path())
    messy = events.select(
        F.concat(F.col("customer_id"), F.when(F.col("event_id").endswith("1"), "\t")
                 .otherwise("")).alias("Customer ID "),
        F.date_format("event_time", "yyyy-MM-dd HH:mm:ss").alias("event_time"),
        F.when(F.col("event_id").endswith("77"), F.lit("n/a"))
        .otherwise(F.format_number("amount", 2)).alias("amount"),  # 1,234.50
        F.concat(F.initcap("event_type"), F.lit("\u00a0")).alias("event_type"),
        "category", "channel", "device", "quantity", "discount", "event_id",
    )  # fmt: skip
    messy.coalesce(1).write.option("header", "true").csv(str(base / "events.csv"))
    customers = spark.read.format("delta").load(sample.storage.table_path("customers"))
    crm = customers.select(
        "customer_id",
        F.concat(F.lit(" "), F.col("country"), F.lit("\t")).alias("country"),
        F.when(F.col("age").isNull(), "unknown").otherwise(
            F.concat((F.floor(F.col("age") / 10) * 10).cast("int").cast("string"), F.lit("-"),
                     (F.floor(F.col("age") / 10) * 10 + 9).cast("int").cast("string"))
        ).alias("age"),
        "gender", "os",
        F.when(F.col("is_business"), "B2B").otherwise("no").alias("is_business"),
        "industry",
        F.when(F.col("employee_count") > 1000, F.format_number("employee_count", 0))
        .when(F.col("employee_count") > 50, F.lit("51-200"))
        .when(F.col("employee_count").isNotNull(), F.lit("many")).alias("employee_count"),
    )  # fmt: skip
    crm.coalesce(1).write.option("header", "true").csv(str(base / "customers.csv"))
    survey_df = spark.read.format("delta").load(sample.survey_path())
    item = survey_generator_items()[0]
    answered = survey_df.withColumn(
        item, F.when(F.col("customer_id").endswith("3"), F.lit("Don't know"))
        .otherwise(F.col(item).cast("string"))
    )  # fmt: skip
    answered.coalesce(1).write.option("header", "true").csv(str(base / "survey.csv"))
    csv = 'options={"header": "true"}'
    cfg = local_config(
        base, f"input.events.path={base / 'events.csv'}", "input.events.format=csv",
        f"input.events.{csv}", "input.events.columns.customer_id=customer id",
        "input.events.thousands_separator=','", f"input.customers.path={base / 'customers.csv'}",
        "input.customers.format=csv", f"input.customers.{csv}",
        f"attitudes.survey.path={base / 'survey.csv'}", "attitudes.survey.format=csv",
        f"attitudes.survey.{csv}", "training.k_max=4", "training.n_init=1",
        "validation.bootstrap_samples=3", "attitudes.clustering.k_max=4",
        "quality.max_reject_share=0.2",
        # Reading the text is what is tested here: the fewest restarts, bootstraps and random
        # data sets the jobs accept, and no outcome backtest (it rereads the same events).
        "training.selection_bootstrap_samples=0", "validation.outcome.mode=none",
        "attitudes.clustering.selection_bootstrap_samples=0",
        "attitudes.factors.parallel_iterations=10", "explain.report=false",
    )  # fmt: skip
    try:
        features = build_features.run(spark, cfg)
        assert features.rejected.get("unparseable_amount", 0) > 0  # the "n/a" amounts
        assert features.customers > 300
        value.run(spark, cfg)
        trained = train.run(spark, cfg)
        assert trained.dimension is not None and trained.dimension.share > 0.9
        ruled = rules.run(spark, cfg)
        assert ruled.unparseable.get("b2b.employees_column (employee_count)", 0) > 0
        assert "b2b_tiers" in ruled.publications
        attitude = attitudes_job.run(spark, cfg)
        assert attitude.declined.get(item, 0) > 0
    finally:
        mlflow.set_tracking_uri(None)


def survey_generator_items() -> tuple[str, ...]:
    from segmentation.sample import survey_generator

    return survey_generator.ITEM_NAMES
