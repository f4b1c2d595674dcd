"""One SparkSession for the whole suite, built by the product's own session factory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import SparkSession

from segmentation.config import AppConfig, load_config
from segmentation.runtime.session import build_session

ROOT = Path(__file__).resolve().parents[1]


def local_config(base: Path, *overrides: str) -> AppConfig:
    """``conf/local.yaml`` with its tables (``base/wh``), MLflow store (``base/mlflow.db``)
    and artifacts (``base/mla``) under ``base``, then ``overrides``."""
    return load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[
            f"storage.warehouse={base / 'wh'}",
            f"tracking.tracking_uri=sqlite:///{base / 'mlflow.db'}",
            f"tracking.artifact_location={base / 'mla'}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=["spark.master=local[2]", "spark.shuffle_partitions=2"],
    )
    session = build_session(cfg)
    yield session
    session.stop()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite MLflow store per test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
