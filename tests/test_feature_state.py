"""The incremental feature state (issue 31): a run that reads only the new input rows gives
every feature of every customer exactly as the full recomputation does, and falls back to a
rebuild, saying why, whenever it could not.

The full recomputation is the job's own full path (``build_features.compute`` without the
state); the incremental path shares none of its aggregation code past the daily rows
(``features.state``). Feature tables are read back with Polars (delta-rs).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from segmentation.config import AppConfig
from segmentation.errors import InputError, TableError
from segmentation.runtime import tracking
from segmentation.storage import delta_tables
from segmentation.workflows import build_features, maintain
from segmentation.workflows import feature_state as fs
from tests.conftest import local_config, mlflow_store

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("event_time", pa.timestamp("us", tz="UTC")),
    ("event_type", pa.string()), ("amount", pa.float64()), ("category", pa.string()),
    ("channel", pa.string()), ("device", pa.string()), ("quantity", pa.float64()),
    ("discount", pa.float64()), ("event_id", pa.string()),
])  # fmt: skip
KEYS = {"customer_id", "as_of"}


@pytest.fixture(scope="module", autouse=True)
def _release_caches(spark):
    """This module creates dozens of small Delta tables: drop Spark's and Delta's caches of
    them afterwards, so the session's later modules have the driver's memory."""
    yield
    spark.catalog.clearCache()
    spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


def event(cid: str | None, day: str, kind: str, amount: float, eid: str, **kw: Any) -> dict:
    time = dt.datetime.fromisoformat(day).replace(hour=kw.pop("hour", 12), tzinfo=dt.UTC)
    return {"customer_id": cid, "event_time": time, "event_type": kind, "amount": amount,
            "category": kw.get("category", "home"), "channel": kw.get("channel", "web"),
            "device": kw.get("device", "mobile"), "quantity": 1.0,
            "discount": kw.get("discount", 0.0), "event_id": eid}  # fmt: skip


def add_file(base: Path, name: str, rows: list[dict]) -> None:
    folder = base / "events"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), folder / f"{name}.parquet")


def config(base: Path, as_of: str, *extra: str) -> AppConfig:
    return local_config(
        base, f"input.events.path={base / 'events'}", "input.events.format=parquet",
        "features.mode=auto", f"features.as_of={as_of}", "quality.max_reject_share=0.5",
        *extra,
    )  # fmt: skip


def table(cfg: AppConfig, name: str, as_of: dt.date) -> pl.DataFrame:
    return pl.read_delta(cfg.storage.table_path(name)).filter(pl.col("as_of") == as_of)


def full_recomputation(spark, cfg: AppConfig) -> tuple[dict, list]:
    """Every feature by the job's full path (no state), and the quarantined rows."""
    with tracking.run(tracking.configure(cfg.tracking), "full recomputation") as run_id:
        snap = build_features.compute(spark, cfg, run_id=run_id, keep_state=False)
    try:
        features = {r["customer_id"]: r.asDict() for r in snap.features.collect()}
        rejected = sorted(
            (str(r["event_id"]), str(r["customer_id"]), r["reason"])
            for r in snap.rejected.collect()
        )
    finally:
        snap.unpersist()
    return features, rejected


def assert_same(spark, cfg: AppConfig) -> dict[str, dict]:
    """The written snapshot of ``features.as_of`` equals the full recomputation: same
    customers, every feature isclose (relative 1e-12, absolute 1e-9), same quarantine."""
    as_of = cfg.features.as_of
    written = {r["customer_id"]: r for r in table(cfg, "customer_features", as_of).to_dicts()}
    expected, rejected = full_recomputation(spark, cfg)
    assert written.keys() == expected.keys()
    for cid, row in expected.items():
        for column, want in row.items():
            got = written[cid][column]
            if column in KEYS:
                continue
            if isinstance(want, float):
                assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9), (cid, column)
            else:
                assert got == want, (cid, column, got, want)
    quarantined = sorted(
        (str(r["event_id"]), str(r["customer_id"]), r["reason"])
        for r in table(cfg, "rejected_events", as_of).to_dicts()
    )
    assert quarantined == rejected
    return written


def state_log(cfg: AppConfig) -> list[dict]:
    return pl.read_delta(cfg.storage.table_path("feature_state_log")).sort("increment").to_dicts()


@pytest.mark.slow
def test_worked_example_late_rows_copies_returns_new_customers_and_fallbacks(
    spark, tmp_path, mlflow_uri
):
    add_file(tmp_path, "day1", [
        event("a", "2026-01-10", "order", 100.0, "e1"),
        event("a", "2026-02-20", "order", 50.0, "e2", category="toys"),
        event("b", "2026-02-28", "visit", 0.0, "e3", channel="app"),
        event("b", "2026-03-01", "order", 30.0, "e4"),
        event("c", "2026-03-01", "order", 20.0, "e5"),
        event(None, "2026-03-01", "order", 5.0, "e6"),
    ])  # fmt: skip
    day1 = config(tmp_path, "2026-03-01")
    first = build_features.run(spark, day1)
    assert (first.mode, first.mode_reason) == (fs.REBUILD, "no feature state yet")
    assert_same(spark, day1)
    check_fallbacks(spark, tmp_path)
    # The state keeps no per-file statistics but the daily rows' day (cheaper writes); an
    # independent reader still reads it: the five usable events' identities.
    ids = day1.storage.table_path("feature_state_event_ids")
    assert DeltaTable(ids).metadata().configuration["delta.dataSkippingNumIndexedCols"] == "0"
    daily = DeltaTable(day1.storage.table_path("feature_state_daily")).metadata()
    assert daily.configuration["delta.dataSkippingStatsColumns"] == "event_date"
    assert sorted(pl.read_delta(ids)["event_id"].to_list()) == ["e1", "e2", "e3", "e4", "e5"]

    add_file(tmp_path, "day2", [
        event("a", "2026-03-02", "order", 25.0, "e7"),
        event("b", "2026-02-25", "order", 40.0, "e8"),  # late: a day the state holds
        event("c", "2026-03-02", "return", 20.0, "e9"),
        event("d", "2026-03-02", "order", 10.0, "e10"),  # a new customer, one order
        event("a", "2026-02-20", "order", 50.0, "e2", category="toys"),  # a copy of day 1's
        event("a", "2026-03-06", "order", 70.0, "e11"),  # after as_of: kept for later
    ])  # fmt: skip
    # An empty export as pandas writes it: every column of Arrow type null.
    empty = pa.table({name: pa.array([], pa.null()) for name in SCHEMA.names})
    pq.write_table(empty, tmp_path / "events" / "day2-empty.parquet")
    day2 = config(tmp_path, "2026-03-02")
    second = build_features.run(spark, day2)
    assert second.mode == fs.INCREMENTAL and second.new_rows == 6, second.mode_reason
    got = assert_same(spark, day2)
    # By hand. a: order days 01-10, 02-20, 03-02: gaps 41 and 10.
    a = got["a"]
    assert (a["frequency"], a["monetary_total"], a["recency_days"], a["tenure_days"]) == (
        3,
        175.0,
        0,
        51,
    )
    assert (a["ipi_mean_days"], a["ipi_std_days"], a["ipi_max_days"]) == (25.5, 15.5, 41.0)
    assert (a["orders_30d"], a["monetary_30d"]) == (2, 75.0)
    # b: the late order (02-25) is his first event; order days 02-25 and 03-01 (gap 4).
    b = got["b"]
    assert (b["frequency"], b["tenure_days"], b["active_days"], b["ipi_mean_days"]) == (
        2,
        5,
        3,
        4.0,
    )
    assert b["channel_share_app"] == pytest.approx(1 / 3)
    # c: one order returned in full; d: one order today (censored gap: 0 days).
    assert (got["c"]["monetary_net"], got["c"]["return_rate"]) == (0.0, 1.0)
    assert (got["d"]["frequency"], got["d"]["ipi_mean_days"]) == (1, 0.0)
    reasons = table(day2, "rejected_events", day2.features.as_of)["reason"].to_list()
    assert sorted(reasons) == ["duplicate_event", "missing_customer_id"]

    # `make optimize` compacts the state's files (commits that change no rows): the state is
    # still usable, read at its new versions. A re-run of the same day reads nothing and
    # writes the same snapshot (signal 9 during the state's update: tests/test_crash.py).
    # So do a catalog's comments and properties on a state table (as do this job's own, when
    # a new release's contract differs): they change no rows.
    logged = state_log(day2)[-1]["table_versions"]
    maintain.run(spark, day2, optimize=True)
    levels = f"delta.`{day2.storage.table_path('feature_state_levels')}`"
    spark.sql(f"COMMENT ON TABLE {levels} IS 'owned by the CRM team'")
    spark.sql(f"ALTER TABLE {levels} SET TBLPROPERTIES ('owner.team' = 'crm')")
    spark.sql(f"ALTER TABLE {levels} ALTER COLUMN value COMMENT 'a level'")
    now = {name: delta_tables.version(spark, day2.storage.table_path(name)) for name in logged}
    assert any(now[name] > logged[name] for name in logged), (now, logged)
    assert now["feature_state_levels"] >= logged["feature_state_levels"] + 3
    again = build_features.run(spark, day2)
    assert again.mode == fs.INCREMENTAL and again.new_rows == 0, again.mode_reason
    assert assert_same(spark, day2) == got

    # The next day: e11 is still ahead; a copy of e7 with another amount is a correction,
    # which the state cannot answer exactly: the run rebuilds and says why.
    add_file(tmp_path, "day3", [event("a", "2026-03-02", "order", 26.0, "e7")])
    day3 = config(tmp_path, "2026-03-03")
    third = build_features.run(spark, day3)
    assert third.mode == fs.REBUILD and "e7 of customer a" in third.mode_reason
    assert_same(spark, day3)
    assert [r["mode"] for r in state_log(day3)] == [
        fs.REBUILD,
        fs.INCREMENTAL,
        fs.INCREMENTAL,
        fs.REBUILD,
    ]

    # A data file of the state deleted by hand: the run rebuilds, naming the table.
    ids = DeltaTable(day3.storage.table_path("feature_state_event_ids"))
    Path(ids.file_uris()[0].removeprefix("file://")).unlink()
    add_file(tmp_path, "day4", [event("b", "2026-03-04", "order", 8.0, "e13")])
    day4 = config(tmp_path, "2026-03-04")
    assert fs.plan(spark, day4).mode == fs.INCREMENTAL
    fourth = build_features.run(spark, day4)
    assert fourth.mode == fs.REBUILD, fourth.mode_reason
    assert "feature_state_event_ids is missing" in fourth.mode_reason
    assert table(day4, "customer_features", day4.features.as_of).height == 4

    # A replaced input file: its rows may have changed, so only a rebuild is exact.
    add_file(tmp_path, "day1", [event("a", "2026-03-01", "order", 11.0, "e1")])
    assert "replaced" in fs.plan(spark, config(tmp_path, "2026-03-05")).reason
    # A column added to a state table is no maintenance: the state is rebuilt.
    spark.sql(f"ALTER TABLE {levels} ADD COLUMNS (note STRING)")
    assert "half-written" in fs.plan(spark, config(tmp_path, "2026-03-05")).reason
    # A state table deleted whole is named as missing (not as a stopped run).
    shutil.rmtree(day4.storage.table_path("feature_state_rejected"))
    reason = fs.plan(spark, config(tmp_path, "2026-03-05")).reason
    assert reason == "table(s) feature_state_rejected of the feature state are missing"
    # A log whose columns were altered could not record the next run (after its writes):
    # the run stops before anything, naming the column.
    log = f"delta.`{day4.storage.table_path('feature_state_log')}`"
    spark.sql(f"ALTER TABLE {log} ADD COLUMNS (note STRING)")
    with pytest.raises(TableError, match=r"feature state's log has other columns .*note added"):
        fs.plan(spark, config(tmp_path, "2026-03-05"))


def check_fallbacks(spark, base: Path) -> None:
    """On a state as of 2026-03-01: what makes a run rebuild or run in full, and why."""

    def reason(as_of: str, *extra: str) -> str:
        plan = fs.plan(spark, config(base, as_of, *extra))
        assert plan.mode == fs.REBUILD
        return plan.reason

    assert reason("2026-03-02", "input.events.time_zone=Europe/Paris").endswith(
        "changed (input.events.time_zone)"
    )  # the key itself, not its section
    assert reason("2026-03-02", "features.channels=[web]").endswith("changed (levels.channel)")
    assert "more than a day before" in reason("2026-03-05")
    assert "after features.as_of" in reason("2026-02-27")
    assert fs.plan(spark, config(base, "2026-03-05", "features.mode=incremental")).mode == (
        fs.INCREMENTAL
    )
    assert fs.plan(spark, config(base, "2026-03-02"), full_refresh=True).reason == (
        "--full-refresh"
    )
    assert "levels.device" in reason("2026-03-02", "features.devices=null")  # discovered now
    # --full-refresh with features.mode full would rebuild nothing: an error, not a no-op.
    with pytest.raises(InputError, match=r"features\.mode is full"):
        fs.plan(spark, config(base, "2026-03-02", "features.mode=full"), full_refresh=True)


@pytest.mark.slow
def test_discovered_levels_are_kept_and_a_new_top_level_rebuilds(
    spark, tmp_path, mlflow_uri, caplog
):
    """Devices discovered from the events (``features.devices`` null, the top 2): the state
    keeps the events per device; a day that leaves the top 2 as it was runs incrementally
    (a copy of an earlier event counts once) and equals the full recomputation; a day that
    brings another device in rebuilds, naming the device in and the one out."""
    discovered = ("features.devices=null", "features.max_levels=2")
    add_file(tmp_path, "day1", [
        event("a", "2026-03-01", "order", 10.0, "e1", device="mobile"),
        event("a", "2026-02-27", "visit", 0.0, "e2", device="mobile"),
        event("b", "2026-03-01", "order", 20.0, "e3", device="desktop"),
        event("b", "2026-02-28", "order", 5.0, "e4", device="desktop"),
        event("c", "2026-03-01", "order", 7.0, "e5", device="tablet"),
    ])  # fmt: skip
    day1 = config(tmp_path, "2026-03-01", *discovered)
    assert build_features.run(spark, day1).mode == fs.REBUILD
    assert_same(spark, day1)

    # tablet 2 (its copy of e5 is a duplicate): a three-way tie at 2, broken by the value as
    # a full run breaks it: desktop and mobile stay.
    add_file(tmp_path, "day2", [
        event("c", "2026-03-02", "order", 3.0, "e6", device="tablet"),
        event("c", "2026-03-01", "order", 7.0, "e5", device="tablet"),
    ])  # fmt: skip
    day2 = config(tmp_path, "2026-03-02", *discovered)
    second = build_features.run(spark, day2)
    assert second.mode == fs.INCREMENTAL, second.mode_reason
    got = assert_same(spark, day2)
    assert {c for c in got["a"] if c.startswith("device_share_")} == {
        "device_share_desktop", "device_share_mobile"
    }  # fmt: skip
    counts = (
        pl.read_delta(day2.storage.table_path("feature_state_levels"))
        .group_by("column", "value").agg(pl.col("events").sum()).sort("value").rows()
    )  # fmt: skip
    assert counts == [("device", "desktop", 2), ("device", "mobile", 2), ("device", "tablet", 2)]

    # tablet 3: in the top 2, mobile out (desktop wins the tie at 2): only a rebuild is exact,
    # and its device_share_tablet column is one customer_features cannot take, as for a full
    # run whose discovered levels changed. Nothing is written: the state stays as of day 2.
    add_file(tmp_path, "day3", [event("d", "2026-03-03", "order", 4.0, "e7", device="tablet")])
    day3 = config(tmp_path, "2026-03-03", *discovered)
    with caplog.at_level(logging.WARNING), pytest.raises(TableError, match="device_share_tablet"):
        build_features.run(spark, day3)
    assert "device: 'tablet' in, 'mobile' out of the top 2" in caplog.text
    assert [r["mode"] for r in state_log(day3)] == [fs.REBUILD, fs.INCREMENTAL]


@pytest.mark.slow
@settings(max_examples=1, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(rnd=st.randoms(use_true_random=True))
def test_incremental_equals_full_recomputation_on_random_histories(spark, tmp_path_factory, rnd):
    """A random history over four runs (one derandomized example, a seeded generator: each
    day's runs cost the suite about 15 s; Hypothesis' own zero example drew one order a day):
    new, late and duplicate events, returns, visits, discounts, unknown levels, new
    customers, events implausibly far after as_of that the next day brings within bounds.
    After each day the incremental run's snapshot equals the full recomputation.

    Short windows (2, 7 and 30 days, a trend of 3), so the 40 days of history cross each
    boundary as the days move: over one day, then three (``features.mode: incremental``), then
    a week. A customer's two orders of 6e17 give sums far beyond any other customer's."""
    base = tmp_path_factory.mktemp("history")
    customers = [f"c{i}" for i in range(20)]  # each customer's history is one random case
    start = dt.date(2026, 3, 1)
    sent: list[dict] = []
    windows = ("features.windows_days=[2,7,30]", "features.trend_window_days=3",
               "features.mode=incremental")  # fmt: skip
    for step, offset in enumerate([0, 1, 4, 11]):
        as_of = start + dt.timedelta(days=offset)
        rows = []
        for i in range(rnd.randint(1, 30)):
            if sent and rnd.random() < 0.2:
                rows.append(dict(rnd.choice(sent)))
                continue
            back = rnd.randint(-2, 40)  # < 0: after as_of
            rows.append(event(
                rnd.choice(customers), (as_of - dt.timedelta(days=back)).isoformat(),
                rnd.choice(["order", "order", "return", "visit"]), round(rnd.uniform(0.01, 500), 2),
                f"s{step}e{i}", hour=rnd.randint(0, 23),
                category=rnd.choice(["home", "toys", "garden"]), discount=rnd.choice([0.0, 2.5]),
            ))  # fmt: skip
        if step == 0:
            rows += [event("whale", (as_of - dt.timedelta(days=back)).isoformat(), "order",
                           6e17, f"w{back}") for back in (25, 27)]  # fmt: skip
        sent += rows
        add_file(base, f"day{step}", rows)
        store = mlflow_store(base / "m.db")
        # Events two days after as_of are implausible (max 1 day after), and the next day's
        # run checks them again: they count then.
        cfg = config(base, as_of.isoformat(), f"tracking.tracking_uri={store}",
                     "quality.max_days_after_as_of=1", *windows)  # fmt: skip
        result = build_features.run(spark, cfg)
        assert result.mode == (fs.REBUILD if step == 0 else fs.INCREMENTAL), result.mode_reason
        assert_same(spark, cfg)
