"""End to end on a small generated history: quality, tables, MLflow, idempotency, jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from segmentation import clustering, delta_tables, pipeline, tracking
from segmentation.config import load_config
from segmentation.errors import InputError
from segmentation.evaluation import adjusted_rand_index_from_counts

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[
            f"storage.warehouse={base / 'warehouse'}",
            f"tracking.tracking_uri=sqlite:///{base / 'mlflow.db'}",
            f"tracking.artifact_location={base / 'mlartifacts'}",
            "generator.customers=3000",
            "generator.events=150000",
        ],
    )
    generated = pipeline.generate(spark, cfg)
    features = pipeline.build_features(spark, cfg)
    trained = pipeline.train_segments(spark, cfg)
    yield cfg, generated, features, trained
    mlflow.set_tracking_uri(None)


def table(cfg, name) -> pl.DataFrame:
    return pl.read_delta(cfg.storage.table_path(name))


def test_segments_recover_planted_archetypes(run):
    cfg, _, _, trained = run
    joined = table(cfg, "segment_membership").join(
        table(cfg, "segment_truth"), on="customer_id", how="inner"
    )
    counts = joined.group_by("true_segment", "segment_id").len()
    ari = adjusted_rand_index_from_counts(
        {(r["true_segment"], r["segment_id"]): r["len"] for r in counts.to_dicts()}
    )
    assert ari >= 0.8
    assert trained.ari_vs_truth == pytest.approx(ari)
    assert trained.selection.chosen_k == 6


def test_membership_has_contract_schema_and_one_row_per_customer(run):
    cfg, _, features, trained = run
    dt_table = DeltaTable(cfg.storage.table_path("segment_membership"))
    schema = pa.schema(dt_table.schema().to_arrow())
    assert {f.name: str(f.type) for f in schema} == {
        "customer_id": "string",
        "as_of": "date32[day]",
        "segment_id": "int32",
        "segment_name": "string",
        "distance": "double",
        "model_name": "string",
        "model_version": "int32",
        "run_id": "string",
        "scored_at": "timestamp[us, tz=UTC]",
    }
    assert dt_table.metadata().partition_columns == ["as_of"]
    m = table(cfg, "segment_membership")
    assert m.height == features.customers == 3000
    assert m["customer_id"].n_unique() == m.height
    assert m["as_of"].unique().to_list() == [dt.date(2025, 12, 31)]
    assert m["model_version"].unique().to_list() == [trained.model_version]
    assert m["run_id"].unique().to_list() == [trained.run_id]
    assert m["distance"].min() >= 0
    assert m["segment_name"].null_count() == 0
    assert m.select("segment_id", "segment_name").unique().height == trained.selection.chosen_k


def test_customer_features_table_is_partitioned_by_as_of(run):
    cfg, _, _, _ = run
    t = DeltaTable(cfg.storage.table_path("customer_features"))
    assert t.metadata().partition_columns == ["as_of"]
    f = table(cfg, "customer_features")
    assert f.height == 3000 and f["customer_id"].n_unique() == 3000
    assert {"recency_days", "frequency", "monetary_total", "category_share_home"} <= set(f.columns)
    shares = f.filter(pl.col("monetary_total") > 0).select(
        pl.sum_horizontal(pl.col("^category_share_.*$")).alias("s")
    )
    assert shares["s"].min() == pytest.approx(1.0) and shares["s"].max() == pytest.approx(1.0)


def test_profiles_match_membership_in_original_units(run):
    cfg, _, _, _ = run
    p = table(cfg, "segment_profiles")
    m = table(cfg, "segment_membership")
    f = table(cfg, "customer_features")
    sizes = p.select("segment_id", "size", "share").unique().sort("segment_id")
    counted = m.group_by("segment_id").len().sort("segment_id")
    assert sizes["size"].to_list() == counted["len"].to_list()
    assert sizes["share"].sum() == pytest.approx(1.0)
    # Mean monetary_total of segment 1, recomputed independently from the two tables.
    seg1 = m.filter(pl.col("segment_id") == 1).join(f, on="customer_id")
    row = p.filter((pl.col("segment_id") == 1) & (pl.col("feature") == "monetary_total"))
    assert row["mean"][0] == pytest.approx(seg1["monetary_total"].mean())


def test_names_fit_planted_behaviour(run):
    cfg, _, _, _ = run
    joined = table(cfg, "segment_membership").join(table(cfg, "segment_truth"), on="customer_id")
    majority = (
        joined.group_by("true_segment", "segment_name").len()
        .sort("len", descending=True).unique("true_segment", keep="first")
    )  # fmt: skip
    names = dict(zip(majority["true_segment"], majority["segment_name"], strict=True))
    assert "Lapsed" in names["lapsed"]
    assert "New" in names["new_customers"]
    assert "Champions" in names["champions"]
    assert "Bargain" in names["bargain_hunters"]
    assert "Big-ticket" in names["big_ticket"]


def test_mlflow_run_has_params_metrics_and_registered_model(run):
    cfg, _, features, trained = run
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    r = client.get_run(trained.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["algorithm"] == "kmeans"
    assert r.data.params["seed"] == "42"
    assert r.data.params["input.customer_features.version"] == str(features.version)
    assert r.data.metrics["chosen_k"] == trained.selection.chosen_k
    history = client.get_metric_history(trained.run_id, "silhouette")
    assert sorted(m.step for m in history) == list(range(2, 11))
    assert sum(r.data.metrics[f"segment_size_{i}"] for i in range(1, 7)) == 3000
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"k_selection.json", "plots", "profiles", "config"} <= artifacts
    version = client.get_model_version_by_alias("customer_segments", "champion")
    assert int(version.version) == trained.model_version
    assert version.run_id == trained.run_id


def test_registered_model_loads_and_assigns_the_same_segments(spark, run):
    cfg, _, _, _ = run
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    champion = tracking.alias_version("customer_segments", "champion")
    assert champion is not None
    model = tracking.load_model("customer_segments", champion.version)
    feats = delta_tables.read_table(
        spark, cfg.storage.table_path("customer_features"), backend="embedded"
    )
    again = clustering.assign(model, feats).select("customer_id", "segment_id")
    stored = delta_tables.read_table(
        spark, cfg.storage.table_path("segment_membership"), backend="embedded"
    ).select("customer_id", "segment_id")
    assert again.exceptAll(stored).count() == 0 and stored.exceptAll(again).count() == 0


def test_rebuilding_features_for_the_same_as_of_replaces_the_snapshot(spark, run):
    cfg, _, features, _ = run
    again = pipeline.build_features(spark, cfg)
    assert again.version == features.version + 1
    f = table(cfg, "customer_features")
    assert f.height == 3000  # replaced, not appended
    # The earlier version is still readable by version.
    old = pl.read_delta(cfg.storage.table_path("customer_features"), version=features.version)
    assert old.height == 3000


def test_generate_if_absent_keeps_existing_sample(spark, run):
    cfg, generated, _, _ = run
    result = pipeline.generate(spark, cfg, if_absent=True)
    assert result.skipped
    assert DeltaTable(cfg.storage.table_path("events")).version() == generated.versions["events"]


def test_jobs_run_end_to_end_as_processes(tmp_path):
    """The three spark-submit entry points, as `make run` calls them, on tiny data."""
    common = [
        "--set", f"storage.warehouse={tmp_path / 'wh'}",
        "--set", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--set", f"tracking.artifact_location={tmp_path / 'mla'}",
        "--set", "generator.customers=400",
        "--set", "generator.events=12000",
        "--set", "training.k_max=4",
        "--set", "training.n_init=1",
        "--set", "spark.master=local[2]",
    ]  # fmt: skip
    outputs = []
    for job, extra in (("generate_events", ["--if-absent"]), ("build_features", []),
                       ("train_segments", []), ("promote_model", ["--version", "1"]),
                       ("assign_segments", ["--set", "assign.reuse_features=true"])):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, str(ROOT / "jobs" / f"{job}.py"), *extra, *common],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    assert "Sample data written" in outputs[0]
    assert "customer_features as of 2025-12-31: 400 customers" in outputs[1]
    summary = outputs[2]
    assert "Segmentation as of 2025-12-31: 400 customers" in summary
    assert "model customer_segments version 1 is now @champion" in summary
    assert "make mlflow-ui" in summary
    assert "model customer_segments version 1 is now @champion (was 1)" in outputs[3]
    assigned = outputs[4]
    assert "Segments as of 2025-12-31: 400 customers scored with customer_segments version 1" in (
        assigned
    )
    assert "reused the stored customer_features snapshot" in assigned
    assert "History (segment_membership_history): merged." in assigned
    membership = pl.read_delta(str(tmp_path / "wh" / "segment_membership"))
    assert membership.height == 400  # the training's snapshot, replaced by the assignment
    history = pl.read_delta(str(tmp_path / "wh" / "segment_membership_history"))
    assert history.height == 400 and history["is_current"].all()


def test_assign_without_a_champion_is_a_clear_error(spark, run):
    cfg, _, _, _ = run
    other = dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, registered_model="nothing_here")
    )
    with pytest.raises(InputError, match="no model under nothing_here@champion"):
        pipeline.assign_segments(spark, other)
