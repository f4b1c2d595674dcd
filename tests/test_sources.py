"""Reading user events: column mapping, formats, timestamp parsing, and clear errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from segmentation import sources
from segmentation.config import EventColumns, EventSourceConfig
from segmentation.errors import InputError
from segmentation.workflows import build_features

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


def test_check_source_missing_path_names_path(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"input path not found: .*nowhere"):
        sources.check_source(csv_source(), missing)


def test_check_source_missing_parquet_column_names_column_and_key(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame([("x", 1.0)], "customer_id string, amount double").write.parquet(path)
    src = EventSourceConfig(format="parquet")
    with pytest.raises(
        InputError, match=r"column 'event_time' \(config key input.events.columns.event_time\)"
    ):
        sources.check_source(src, path)


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
        sources.check_source(src, path)


def test_delta_input_with_deletion_vectors_never_brings_deleted_rows_back(spark, tmp_path):
    """Rows deleted from a Delta input (a deletion vector, files untouched) are gone from the
    features: the input is read through Delta, not as its Parquet files."""
    from segmentation import delta_tables
    from segmentation.config import load_config

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
                   f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                   "features.as_of=2025-12-31", "input.events.columns.category=null",
                   "input.events.columns.channel=null", "input.events.columns.device=null",
                   "input.events.columns.quantity=null", "input.events.columns.discount=null"],
    )  # fmt: skip
    result = build_features.run(spark, cfg)
    assert result.input_rows == 4 and result.customers == 2
    features = delta_tables.read(spark, cfg.storage.table_path("customer_features"))
    got = {r["customer_id"]: r["frequency"] for r in features.collect()}
    assert got == {"a": 2, "c": 2}
