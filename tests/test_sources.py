"""Reading user events: column mapping, formats, timestamp parsing, and clear errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from segmentation.config import CustomersSourceConfig, EventColumns, EventSourceConfig
from segmentation.errors import InputError
from segmentation.inputs import columns, quality, sources
from segmentation.workflows import build_features
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[1]

CSV = """cust;when;total;kind;cat
c1;31/01/2025 10:30;12.50;Purchase;Home
c1;01/02/2025 08:00;3.00;REFUND;home
c2;15/01/2025 00:00;7.25;page_view;
 ;15/01/2025 00:00;7.25;purchase;home
c3;not a date;5.00;purchase;home
c4;16/01/2025 00:00;abc;purchase;home
"""


def csv_source(**overrides) -> EventSourceConfig:
    columns = EventColumns(
        customer_id="cust", event_time="when", amount="total", event_type="kind",
        category="cat", channel=None, device=None, quantity=None, discount=None, event_id=None,
    )  # fmt: skip
    base = {
        "format": "csv",
        "options": {"header": "true", "sep": ";"},
        "columns": columns,
        "timestamp_format": "dd/MM/yyyy HH:mm",
    }
    base.update(overrides)
    return EventSourceConfig(**base)


@pytest.fixture
def csv_path(tmp_path: Path) -> str:
    path = tmp_path / "events.csv"
    path.write_text(CSV)
    return str(path)


def test_read_events_maps_user_columns_formats_and_types(spark, csv_path):
    src = sources.read_events(spark, csv_source(), csv_path)
    rows = src.events.orderBy("customer_id", "event_time").collect()
    first = [r for r in rows if r["customer_id"] == "c1"]
    assert first[0]["event_time"] == dt.datetime(2025, 1, 31, 10, 30)
    assert first[0]["amount"] == 12.5
    assert first[0]["event_type"] == "order" and first[0]["category"] == "home"
    assert first[1]["event_type"] == "return"
    assert [r["event_type"] for r in rows if r["customer_id"] == "c2"] == ["other"]
    assert src.present == frozenset(
        {"customer_id", "event_time", "amount", "event_type", "category"}
    )


def test_read_events_without_event_type_treats_all_as_orders(spark, csv_path):
    cols = csv_source().columns
    src = sources.read_events(
        spark,
        csv_source(columns=EventColumns(**{**cols.mapped(), "event_type": None,
                                           "channel": None, "device": None, "quantity": None,
                                           "discount": None, "event_id": None})),
        csv_path,
    )  # fmt: skip
    assert {r["event_type"] for r in src.events.collect()} == {"order"}


def test_read_events_parquet_with_epoch_seconds(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame(
        [("x", 1735689600, 9.5)], "user string, epoch long, value double"
    ).write.parquet(path)
    src = EventSourceConfig(
        format="parquet",
        columns=EventColumns(customer_id="user", event_time="epoch", amount="value",
                             event_type=None, category=None, channel=None, device=None,
                             quantity=None, discount=None, event_id=None),
        timestamp_format="epoch_seconds",
    )  # fmt: skip
    row = sources.read_events(spark, src, path).events.first()
    assert row["event_time"] == dt.datetime(2025, 1, 1, 0, 0)
    assert row["amount"] == 9.5


def test_a_parquet_file_whose_column_type_differs_is_a_clear_error(spark, tmp_path):
    """Spark reads every file of a Parquet input with one schema: a file whose amount is text
    where the others hold doubles fails in the read (no raw trace: the file and column)."""
    folder = tmp_path / "events"
    folder.mkdir()
    base = {"customer_id": ["c1"], "event_time": [dt.datetime(2025, 1, 2)], "event_type": ["order"]}
    pq.write_table(pa.table({**base, "amount": [9.5]}), folder / "a.parquet")
    pq.write_table(pa.table({**base, "amount": ["7.25"]}), folder / "b.parquet")
    src = EventSourceConfig(
        format="parquet",
        columns=EventColumns(customer_id="customer_id", event_time="event_time", amount="amount",
                             event_type="event_type", category=None, channel=None, device=None,
                             quantity=None, discount=None, event_id=None),
    )  # fmt: skip
    events = sources.read_events(spark, src, str(folder))
    # Which file gives the schema is Spark's choice: the other one is named.
    with pytest.raises(InputError, match=r"input file .*/(b\.parquet holds column 'amount' as "
                       r"Parquet BINARY where .* has double|a\.parquet holds column 'amount' "
                       r"as Parquet DOUBLE where .* has string)") as raised:  # fmt: skip
        quality.stage_source(events, earliest=dt.date(2020, 1, 1), latest=dt.date(2025, 12, 31))
    assert raised.value.__cause__ is None


def test_check_source_missing_path_names_path(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"input path not found: .*nowhere"):
        columns.check_source(csv_source(), missing)


def test_check_source_missing_parquet_column_names_column_and_key(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame([("x", 1.0)], "customer_id string, amount double").write.parquet(path)
    src = EventSourceConfig(format="parquet")
    with pytest.raises(
        InputError, match=r"column 'event_time' \(config key input.events.columns.event_time\)"
    ):
        columns.check_source(src, path)


def test_read_events_missing_csv_column_names_column(spark, csv_path):
    cols = csv_source().columns
    bad = csv_source(columns=EventColumns(**{**cols.mapped(), "amount": "price",
                                             "channel": None, "device": None, "quantity": None,
                                             "discount": None, "event_id": None}))  # fmt: skip
    with pytest.raises(
        InputError, match=r"column 'price' \(config key input.events.columns.amount\)"
    ):
        sources.read_events(spark, bad, csv_path)


def test_read_events_non_delta_directory_is_a_clear_error(spark, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match=r"is not a Delta table \(no _delta_log; input.events"):
        sources.read_events(spark, EventSourceConfig(format="delta"), str(tmp_path / "plain"))


def test_build_features_job_fails_before_spark_on_missing_path(tmp_path):
    """The job exits 2 naming the path, without starting Spark (no session, no tables)."""
    missing = tmp_path / "no-such-events"
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "build_features.py"),
         "--set", f"input.events.path={missing}",
         "--set", f"storage.warehouse={tmp_path / 'wh'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"input path not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "wh").exists()


def test_check_source_mistyped_column_names_column_and_type(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame(
        [("x", dt.datetime(2025, 1, 1), dt.date(2025, 1, 1))],
        "customer_id string, event_time timestamp, amount date",
    ).write.parquet(path)
    src = EventSourceConfig(
        format="parquet",
        columns=EventColumns(event_type=None, category=None, channel=None, device=None,
                             quantity=None, discount=None, event_id=None),
    )  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"column 'amount' \(input.events.columns.amount\) must be numeric, found date",
    ):
        columns.check_source(src, path)


def test_delta_input_with_deletion_vectors_never_brings_deleted_rows_back(spark, tmp_path):
    """Rows deleted from a Delta input (a deletion vector, files untouched) are gone from the
    features: the input is read through Delta, not as its Parquet files."""
    from segmentation.config import load_config
    from segmentation.storage import delta_tables

    events = str(tmp_path / "events")
    spark.createDataFrame(
        [
            (c, dt.datetime(2025, 12, d, 12, 0), 10.0 * d, "order", f"{c}-{d}")
            for c in ("a", "b", "c")
            for d in (1, 2)
        ],
        "customer_id string, event_time timestamp, amount double, event_type string, "
        "event_id string",
    ).coalesce(1).write.format("delta").option("delta.enableDeletionVectors", "true").save(events)
    spark.sql(f"DELETE FROM delta.`{events}` WHERE customer_id = 'b'")
    log = "".join(p.read_text() for p in sorted((Path(events) / "_delta_log").glob("*.json")))
    assert '"deletionVector":{' in log  # deleted with a deletion vector, not a rewrite
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[f"storage.warehouse={tmp_path / 'wh'}", f"input.events.path={events}",
                   f"tracking.tracking_uri={mlflow_store(tmp_path / 'mlflow.db')}",
                   "features.as_of=2025-12-31", "input.events.columns.category=null",
                   "input.events.columns.channel=null", "input.events.columns.device=null",
                   "input.events.columns.quantity=null", "input.events.columns.discount=null"],
    )  # fmt: skip
    result = build_features.run(spark, cfg)
    assert result.input_rows == 4 and result.customers == 2
    features = delta_tables.read(spark, cfg.storage.table_path("customer_features"))
    got = {r["customer_id"]: r["frequency"] for r in features.collect()}
    assert got == {"a": 2, "c": 2}


def test_delta_increment_reads_only_the_appended_files(spark, tmp_path):
    """An incremental run's new rows of a Delta input come from the appended commit's files
    alone: with the earlier commit's data file gone from disk, reading them still works (a
    scan of every file of the version would fail on it), and they are exactly the appended
    rows, partition values included. A table with column mapping (physical column names
    differ) is read through Delta instead, with the same rows."""
    from segmentation.inputs import increments
    from segmentation.storage import delta_tables

    schema = "customer_id string, event_time timestamp, amount double, region string"
    source = EventSourceConfig(format="delta", columns=EventColumns(
        event_type=None, category=None, channel=None, device=None, quantity=None,
        discount=None, event_id=None))  # fmt: skip
    first = [("a", dt.datetime(2025, 12, 1, 12), 10.0, "eu")]
    later = [("b", dt.datetime(2025, 12, 2, 9), 20.0, "eu"),
             ("c", dt.datetime(2025, 12, 2, 10), 30.0, "us")]  # fmt: skip

    def appended(events: str, **options: str) -> list[tuple]:
        def append(rows: list[tuple]) -> None:
            frame = spark.createDataFrame(rows, schema).coalesce(1).write.format("delta")
            frame.options(**options).mode("append").partitionBy("region").save(events)

        append(first)
        before = increments.marker(spark, source, events)
        append(later)
        if not options:  # the first commit's file gone: only the new files may be read
            (first_file,) = delta_tables.read(spark, events, version=0).inputFiles()
            Path(first_file.removeprefix("file:")).unlink()
        increment = increments.since(
            spark, source, events, before, increments.marker(spark, source, events)
        )
        assert increment.rebuild is None and increment.raw is not None
        assert increment.described == "Delta versions 1-1 (1 append(s))"
        return sorted(tuple(r) for r in increment.raw.select(*schema_names(schema)).collect())

    assert appended(str(tmp_path / "plain")) == later
    mapping = {"delta.columnMapping.mode": "name", "delta.minReaderVersion": "2",
               "delta.minWriterVersion": "5"}  # fmt: skip
    assert appended(str(tmp_path / "mapped"), **mapping) == later


def test_delta_increment_whose_new_files_were_vacuumed_rebuilds(spark, tmp_path):
    """Appends compacted by OPTIMIZE and removed by VACUUM before the next run: their rows are
    only in the compacted files, so the increment cannot read them and says why (a rebuild)."""
    from segmentation.inputs import increments

    events = str(tmp_path / "events")
    source = EventSourceConfig(format="delta", columns=EventColumns(
        event_type=None, category=None, channel=None, device=None, quantity=None,
        discount=None, event_id=None))  # fmt: skip

    def append(day: int) -> None:
        spark.createDataFrame(
            [("a", dt.datetime(2025, 12, day, 12), 10.0)],
            "customer_id string, event_time timestamp, amount double",
        ).write.format("delta").mode("append").save(events)

    append(1)
    before = increments.marker(spark, source, events)
    append(2)
    append(3)
    spark.sql(f"OPTIMIZE delta.`{events}`")
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    spark.conf.set(check, "false")
    try:
        spark.sql(f"VACUUM delta.`{events}` RETAIN 0 HOURS")
    finally:
        spark.conf.unset(check)
    increment = increments.since(
        spark, source, events, before, increments.marker(spark, source, events)
    )
    assert increment.raw is None and increment.rebuild is not None
    assert increment.rebuild.startswith("input version 1's data file part-")
    assert "is gone (compacted, then vacuumed?)" in increment.rebuild


def schema_names(schema: str) -> list[str]:
    return [part.split()[0] for part in schema.split(",")]


def parquet_source(**columns) -> EventSourceConfig:
    mapping = dict(customer_id="customer_id", event_time="event_time", amount="amount",
                   event_type=None, category=None, channel=None, device=None, quantity=None,
                   discount=None, event_id=None)  # fmt: skip
    return EventSourceConfig(format="parquet", columns=EventColumns(**{**mapping, **columns}))


def test_double_customer_ids_join_an_integer_customers_dimension(spark, tmp_path):
    """A Parquet export with DOUBLE ids (17850.0) and a dimension with INT ids (17850): one
    normalisation gives both "17850", so the join finds the customer."""
    from segmentation.inputs import customers

    events, dim = str(tmp_path / "events"), str(tmp_path / "customers")
    spark.createDataFrame(
        [(17850.0, dt.datetime(2025, 1, 5, 10), 10.0), (12346.0, dt.datetime(2025, 1, 6), 5.0)],
        "customer_id double, event_time timestamp, amount double",
    ).write.parquet(events)
    spark.createDataFrame([(17850, "NL")], "customer_id int, country string").write.parquet(dim)
    read = sources.read_events(spark, parquet_source(), events).events
    assert sorted(r["customer_id"] for r in read.collect()) == ["12346", "17850"]
    dimension = customers.read_customers(
        spark, CustomersSourceConfig(path=dim, format="parquet"), dim
    )
    assert dimension is not None
    assert [(r["customer_id"], r["country"]) for r in dimension.collect()] == [("17850", "NL")]
    match = customers.match_dimension(read.select("customer_id"), dimension, min_share=0.9)
    assert (match.customers, match.matched, match.share) == (2, 1, 0.5)  # 12346 is not in it
    assert "WARNING: below input.customers.min_match_share (90%)" in match.text()


def test_read_customers_with_fractional_ids_names_the_column_and_key(spark, tmp_path):
    from segmentation.inputs import customers

    dim = str(tmp_path / "customers")
    spark.createDataFrame([(17850.5,), (1.0,)], "id double").write.parquet(dim)
    source = CustomersSourceConfig(path=dim, format="parquet", customer_id="id")
    with pytest.raises(
        InputError,
        match=r"column 'id' \(input.customers.customer_id\) holds ids that are not whole numbers"
        r".*17850.5 \(non_integral_customer_id\)",
    ):
        customers.read_customers(spark, source, dim)


EXPORT = """Kunde;Zeit;Betrag;Menge
1001;31.01.2025 21:30;12,50;1
1001;01.02.2025 00:30;1.234,50;2
1002;15.01.2025 10:00;-19,99;
1003;15.01.2025 10:00;12.50;1
;15.01.2025 10:00;3,00;x
"""


@pytest.fixture
def export_path(tmp_path: Path) -> str:
    path = tmp_path / "export.csv"
    path.write_text(EXPORT)
    return str(path)


def export_source(**overrides) -> EventSourceConfig:
    columns = EventColumns(
        customer_id="Kunde", event_time="Zeit", amount="Betrag", quantity="Menge",
        event_type=None, category=None, channel=None, device=None, discount=None, event_id=None,
    )  # fmt: skip
    base = {
        "format": "csv", "options": {"header": "true", "sep": ";"}, "columns": columns,
        "timestamp_format": "dd.MM.yyyy HH:mm", "time_zone": "Europe/Berlin",
        "decimal_separator": ",", "thousands_separator": ".", "negative_amounts": "return",
    }  # fmt: skip
    return EventSourceConfig(**{**base, **overrides})


def test_read_events_semicolon_csv_with_decimal_commas_and_local_times(spark, export_path):
    events = sources.read_events(spark, export_source(), export_path).events
    rows = events.select(
        "customer_id", F.date_format("event_time", "yyyy-MM-dd'T'HH:mm'Z'").alias("utc"),
        "amount", "event_type", "quantity", sources.ISSUE,
    ).collect()  # fmt: skip
    got = [tuple(r) for r in rows]
    # Berlin is UTC+1 in winter: 21:30 local is 20:30Z, 00:30 local is 23:30Z the day before.
    assert got == [
        ("1001", "2025-01-31T20:30Z", 12.5, "order", 1.0, None),
        ("1001", "2025-01-31T23:30Z", 1234.5, "order", 2.0, None),
        ("1002", "2025-01-15T09:00Z", -19.99, "return", None, None),  # negative, no type
        ("1003", "2025-01-15T09:00Z", None, "order", 1.0, "unparseable_amount"),  # a point
        (None, "2025-01-15T09:00Z", 3.0, "order", None, "invalid_quantity"),
    ]


def test_read_events_negative_amounts_are_orders_unless_configured(spark, export_path):
    events = sources.read_events(spark, export_source(negative_amounts="reject"), export_path)
    types = {r["customer_id"]: r["event_type"] for r in events.events.collect()}
    assert types["1002"] == "order"  # quality.split_events then rejects it: negative_amount


def test_event_source_counts_values_parsed_null_and_rejected_per_column(spark, export_path):
    counts = sources.read_events(spark, export_source(), export_path).counts()
    got = {c.column: (c.source, c.parsed, c.null, c.rejected) for c in counts.columns}
    assert counts.rows == 5
    assert got == {
        "customer_id": ("Kunde", 4, 1, 0),
        "event_time": ("Zeit", 5, 0, 0),
        "amount": ("Betrag", 4, 0, 1),  # 12.50 does not fit "1.234,50"
        "quantity": ("Menge", 3, 1, 1),  # one empty, one "x"
    }
    assert counts.timed == 5 and not counts.day_level


def test_observed_counts_arrive_with_the_pass_that_fills_the_cache(spark, export_path):
    """The feature job's counts: observed on the staging pass, equal to a pass of their own."""
    source = sources.read_events(spark, export_source(), export_path)
    events, counts = source.observed()
    staged = events.repartition("customer_id").persist()
    try:
        assert staged.count() == 5
        assert counts() == source.counts()
        assert counts().rows == 5 and counts().columns[2].rejected == 1
        # The observed frame is the canonical events, unchanged.
        assert sorted(map(tuple, staged.collect()), key=str) == sorted(
            map(tuple, source.events.collect()), key=str
        )
    finally:
        staged.unpersist()
