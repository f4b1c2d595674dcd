"""The MLflow registry against real stores: "no champion" only when there is none; any other
registry error stops the job, naming the store, before anything is written."""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from segmentation.config import load_config
from segmentation.errors import SegmentationError
from segmentation.runtime import tracking
from segmentation.storage import delta_tables, tables
from segmentation.workflows import assign, train
from tests.conftest import ROOT

MODEL = "customer_segments"


def registered(uri: str, *, alias: str | None = None) -> str:
    """A SQLite store holding MODEL version 1 (from a real run), optionally under ``alias``."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("{}", "segments/segments.json")
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    if alias:
        client.set_registered_model_alias(MODEL, alias, "1")
    return run.info.run_id


def damage_aliases(uri: str) -> None:
    """A store whose alias table is gone: every alias lookup fails inside the store."""
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.execute("DROP TABLE registered_model_aliases")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alias_version_without_the_model_is_no_champion(mlflow_uri):
    assert tracking.alias_version(MODEL, "champion") is None


def test_alias_version_without_the_alias_is_no_champion(mlflow_uri):
    registered(mlflow_uri)
    assert tracking.alias_version(MODEL, "champion") is None


def test_alias_version_finds_the_version_and_its_run(mlflow_uri):
    run_id = registered(mlflow_uri, alias="champion")
    assert tracking.alias_version(MODEL, "champion") == tracking.AliasVersion(1, run_id)


def test_alias_version_on_a_damaged_store_stops_with_its_message_and_uri(mlflow_uri):
    registered(mlflow_uri, alias="champion")
    damage_aliases(mlflow_uri)
    with pytest.raises(SegmentationError) as err:
        tracking.alias_version(MODEL, "champion")
    message = str(err.value)
    assert f"the MLflow registry at {mlflow_uri} (tracking.tracking_uri)" in message
    assert "no such table: registered_model_aliases" in message
    assert "Nothing was written" in message


def test_alias_version_on_an_unreachable_server_stops_with_the_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{closed_port()}"
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(SegmentationError, match=rf"the MLflow registry at {uri} .*failed"):
            tracking.alias_version(MODEL, "champion")
    finally:
        mlflow.set_tracking_uri(None)


def test_version_run_id_of_a_missing_version_names_the_registry(mlflow_uri):
    registered(mlflow_uri)
    expected = rf"model {MODEL} has no version 7 in the registry at {mlflow_uri} \(tracking"
    with pytest.raises(SegmentationError, match=expected):
        tracking.version_run_id(MODEL, 7)


def test_load_json_of_a_missing_artifact_is_none(mlflow_uri):
    run_id = registered(mlflow_uri)
    assert tracking.load_json(run_id, "segments/segments.json") == {}
    assert tracking.load_json(run_id, "segments/other.json") is None


def job_config(tmp_path: Path, uri: str):
    return load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[f"storage.warehouse={tmp_path / 'wh'}", f"tracking.tracking_uri={uri}",
                   f"tracking.artifact_location={tmp_path / 'mla'}",
                   f"input.events.path={tmp_path / 'no-events'}", "features.as_of=2025-12-31"],
    )  # fmt: skip


def test_train_stops_on_a_registry_error_before_writing(spark, tmp_path, mlflow_uri):
    """Not "no champion" (a new model would restart segment ids at 1): the run stops, and no
    table or model version is written."""
    cfg = job_config(tmp_path, mlflow_uri)
    names = cfg.training.features  # every clustering feature, none near-constant
    features = spark.createDataFrame(
        [(f"c{i}", dt.date(2025, 12, 31), *(float((i * (j + 2)) % 7) for j in range(len(names))))
         for i in range(12)],
        ", ".join(["customer_id string", "as_of date", *(f"{n} double" for n in names)]),
    )  # fmt: skip
    tables.write_in_order([tables.snapshot_write(
        spark, cfg.storage, tables.FEATURES, features, job="test", run_id="r",
        snapshot={tables.AS_OF: dt.date(2025, 12, 31)},
    )])  # fmt: skip
    registered(mlflow_uri, alias="champion")
    damage_aliases(mlflow_uri)
    with pytest.raises(SegmentationError, match=f"the MLflow registry at {mlflow_uri}"):
        train.run(spark, cfg)
    assert not delta_tables.exists(spark, cfg.storage.table_path("segment_profiles"))
    assert [v.version for v in MlflowClient().search_model_versions(f"name = '{MODEL}'")] == [1]


def test_assign_stops_on_a_registry_error_before_writing(spark, tmp_path, mlflow_uri):
    cfg = job_config(tmp_path, mlflow_uri)
    registered(mlflow_uri, alias="champion")
    damage_aliases(mlflow_uri)
    with pytest.raises(SegmentationError, match=f"the MLflow registry at {mlflow_uri}"):
        assign.run(spark, cfg)
    assert not Path(cfg.storage.warehouse).exists()
