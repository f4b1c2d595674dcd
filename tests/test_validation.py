"""Validation: Hennig's and Kaufman & Rousseeuw's readings, bootstrap stability and split-half
replication on planted and on structureless data, and a training on structureless features."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from segmentation.config import ValidationConfig, load_config
from segmentation.modeling import sample_fit, validation
from segmentation.storage import tables
from segmentation.workflows import train
from tests.conftest import ROOT, mlflow_store

CUTS = (0.5, 0.6, 0.75, 0.85)


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(0.5, "dissolved"), (0.59, "not to be trusted"), (0.6, "pattern, members doubtful"),
     (0.749, "pattern, members doubtful"), (0.75, "stable"), (0.85, "highly stable")],
)  # fmt: skip
def test_jaccard_verdict_follows_hennig(value, verdict):
    assert validation.jaccard_verdict(value, CUTS) == verdict


@pytest.mark.parametrize(
    ("value", "verdict"),
    [(0.25, "no substantial structure"), (0.26, "weak structure"), (0.5, "weak structure"),
     (0.51, "reasonable structure"), (0.7, "reasonable structure"), (0.71, "strong structure")],
)  # fmt: skip
def test_structure_verdict_follows_kaufman_and_rousseeuw(value, verdict):
    assert validation.structure_verdict(value) == verdict


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = {1: np.array([0.0, 0.0]), 2: np.array([6.0, 0.0]), 3: np.array([0.0, 6.0])}
    x = np.vstack([rng.normal(c, 0.6, (200, 2)) for c in centres.values()])
    labels = np.repeat([1, 2, 3], 200)
    return x, labels, centres


def test_planted_segments_are_highly_stable_and_replicate():
    x, labels, centres = planted()
    measures = validation.stability_measures(
        x, labels, centres, ValidationConfig(bootstrap_samples=10), algorithm="kmeans",
        seed=1, n_init=2, max_iter=50,
    )  # fmt: skip
    jac = {m.segment_id: m for m in measures if m.measure == "bootstrap_jaccard"}
    assert set(jac) == {1, 2, 3}
    assert all(m.value > 0.97 and m.verdict == "highly stable" for m in jac.values())
    assert all(m.ci_lower <= m.value <= m.ci_upper for m in jac.values())
    half = next(m for m in measures if m.measure == "split_half_ari")
    assert half.value > 0.97 and half.verdict == "replicates"
    sil = next(m for m in measures if m.measure == "silhouette_euclidean")
    assert sil.verdict == "strong structure"


def test_structureless_data_is_called_so():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (1500, 5))
    labels_fit = sample_fit.fit(x, 4, algorithm="kmeans", seeds=[1], max_iter=40)
    centres = {i + 1: c for i, c in enumerate(labels_fit.centers)}
    labels = labels_fit.labels + 1
    measures = validation.stability_measures(
        x, labels, centres, ValidationConfig(bootstrap_samples=10), algorithm="kmeans",
        seed=1, n_init=2, max_iter=40,
    )  # fmt: skip
    jac = [m.value for m in measures if m.measure == "bootstrap_jaccard"]
    assert sum(v < 0.75 for v in jac) >= len(jac) / 2
    sil = next(m for m in measures if m.measure == "silhouette_euclidean")
    assert sil.verdict in ("no substantial structure", "weak structure")


def test_jaccard_of_sets():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert validation._jaccard(a, b) == pytest.approx(1 / 3)


@pytest.mark.integration
def test_training_on_structureless_features_says_so(spark, tmp_path):
    """A customer_features snapshot whose clustering features are independent draws from one
    isotropic Gaussian (no transform): the run reports no (or weak) structure."""
    as_of = dt.date(2025, 12, 31)
    rng = np.random.default_rng(11)
    names = ["f1", "f2", "f3", "f4", "f5"]
    rows = [(f"c{i}", as_of, *map(float, rng.normal(0, 1, 5))) for i in range(2000)]
    schema = "customer_id string, as_of date, " + ", ".join(f"{n} double" for n in names)
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[f"storage.warehouse={tmp_path / 'wh'}",
                   f"tracking.tracking_uri={mlflow_store(tmp_path / 'mlflow.db')}",
                   f"tracking.artifact_location={tmp_path / 'mla'}",
                   f"training.features=[{', '.join(names)}]", "training.default_transform=none",
                   "training.k_min=3", "training.k_max=5", "validation.bootstrap_samples=10",
                   "validation.outcome.mode=none", "tracking.promote=false", "explain.report=false",
                   "input.customers.path=null", "b2b.enabled=false"],
    )  # fmt: skip
    snapshot = spark.createDataFrame(rows, schema)
    tables.snapshot_write(spark, cfg.storage, tables.FEATURES, snapshot, job="test",
                          run_id="r", snapshot={"as_of": as_of}).call()  # fmt: skip
    result = train.run(spark, cfg)
    v = result.validation
    assert v is not None and v.skipped == {"outcome": "validation.outcome.mode is none"}
    assert v.get("silhouette_euclidean").verdict in ("no substantial structure", "weak structure")
    jac = [m.value for m in v.measures if m.measure == "bootstrap_jaccard"]
    assert len(jac) == result.selection.chosen_k and sum(j < 0.75 for j in jac) >= len(jac) / 2
    stored = pl.read_delta(tables.path(cfg.storage, tables.VALIDATION))
    assert stored.filter(pl.col("measure") == "bootstrap_jaccard").height == len(jac)
    assert set(stored["model_version"]) == {result.model_version}
