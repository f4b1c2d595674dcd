"""`make run`'s one application end to end on tiny data, then every table it wrote read back
by every independent reader the docs name (delta-rs, Polars, DuckDB's delta extension)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from segmentation.storage import contracts
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
DBT_VENV = ROOT / ".venv-dbt"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> tuple[Path, list[str]]:
    """`make run`'s entry point (one Spark application), then `make promote`: the warehouse
    and both outputs."""
    base = tmp_path_factory.mktemp("pipeline")
    common = [
        "--set", f"storage.warehouse={base / 'wh'}",
        "--set", f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
        "--set", f"tracking.artifact_location={base / 'mla'}",
        "--set", "generator.customers=400",
        "--set", "generator.events=12000",
        "--set", "training.k_max=4",
        "--set", "training.n_init=1",
        "--set", "validation.bootstrap_samples=3",
        "--set", "training.selection_bootstrap_samples=3",
        "--set", "attitudes.factors.parallel_iterations=20",
        "--set", "attitudes.clustering.k_max=4",
        "--set", "attitudes.clustering.selection_bootstrap_samples=3",
        "--set", "spark.master=local[2]",
        "--set", "spark.shuffle_partitions=2",
        # Backtests are tested elsewhere (test_outcomes, test_value): not make run's steps.
        "--set", "validation.outcome.mode=none",
        "--set", "value.holdout_periods=0",
    ]  # fmt: skip
    outputs = []
    for job, extra in (("run_pipeline", ["--train-as-of", "2025-11-30",
                                         "--score-as-of", "2025-12-31"]),
                       ("promote_model", ["--version", "1"])):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, str(ROOT / "jobs" / f"{job}.py"), *extra, *common],
            capture_output=True, text=True, cwd=ROOT, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    return base / "wh", outputs


def test_pipeline_runs_end_to_end_as_one_process(pipeline):
    """The steps in order, the promotion, the snapshots and the history."""
    wh, outputs = pipeline
    out = outputs[0]
    events = pl.read_delta(str(wh / "events"))
    # Customers with an event on or before the training day, counted independently.
    trained = events.filter(pl.col("event_time") < dt.datetime(2025, 12, 1, tzinfo=dt.UTC))[
        "customer_id"
    ].n_unique()
    assert 0 < trained < 400
    # The steps in order, each summary once.
    steps = [
        "Sample data written",
        f"customer_features as of 2025-11-30: {trained} customers",
        f"Segmentation as of 2025-11-30: {trained} customers",
        f"rfm (version 1): {trained} customers",
        "Attitudinal segmentation attitudinal_segments v1 as of 2025-11-30",
        "Segments as of 2025-12-31: 400 customers scored with customer_segments version 1",
        "rfm (version 1): 400 customers",
        "Audiences as of 2025-12-31",
    ]
    at = 0
    for text in steps:
        found = out.find(text, at)
        assert found >= at, f"{text!r} missing or out of order in:\n{out[-4000:]}"
        at = found + len(text)
    assert "model customer_segments version 1 is now @champion" in out
    assert "History (segment_membership_history): merged." in out
    # The example audience's treatment group reviewed on the sensitive attributes.
    assert "treatment group vs all customers, largest gap: age " in out
    assert "Report: " in out and "Rules (decision tree" in out
    timings = out[out.index("Step times: ") :]
    for name in ("generate", "features", "train", "rules", "attitudes", "assign", "audiences"):
        assert f"{name} " in timings
    assert "model customer_segments version 1 is now @champion (was 1)" in outputs[1]
    membership = pl.read_delta(str(wh / "segment_membership"))
    counts = {
        (m, d.isoformat()): n
        for m, d, n in membership.group_by("model_name", "as_of").len().iter_rows()
        if m not in ("b2b_tiers", "attitudinal_segments")
    }
    # The training's snapshot and the scored month, for the model and RFM alike.
    assert counts == {
        ("customer_segments", "2025-11-30"): trained, ("customer_segments", "2025-12-31"): 400,
        ("rfm", "2025-11-30"): trained, ("rfm", "2025-12-31"): 400,
    }  # fmt: skip
    history = pl.read_delta(str(wh / "segment_membership_history"))
    current = history.filter(pl.col("is_current") & (pl.col("model_name") == "customer_segments"))
    assert current.height == 400 and current["customer_id"].n_unique() == 400
    _check_consent(wh)


def _check_consent(wh: Path) -> None:
    """The example audience (conf/local.yaml) read back with Polars: every member's latest
    email consent record is an opt-in, nobody suppressed, the members are the RFM segments
    it names."""
    audience = pl.read_delta(str(wh / "audience_members"))
    assert audience.height > 0 and set(audience["audience"]) == {"winback_email"}
    consent = pl.read_delta(str(wh / "consent")).filter(pl.col("channel") == "email")
    latest = consent.sort("updated_at").group_by("customer_id").agg(pl.col("status").last())
    opted_in = set(latest.filter(pl.col("status") == "opt_in")["customer_id"])
    suppressed = set(pl.read_delta(str(wh / "suppression"))["customer_id"])
    members = set(audience["customer_id"])
    assert members <= opted_in and not members & suppressed
    rfm = pl.read_delta(str(wh / "segment_membership")).filter(
        (pl.col("model_name") == "rfm") & (pl.col("as_of") == dt.date(2025, 12, 31))
        & pl.col("segment_name").is_in(["At risk", "Can't lose them", "About to sleep"])
    )  # fmt: skip
    assert members <= set(rfm["customer_id"])
    assert set(audience["group"]) <= {"treatment", "holdout", "global_holdout"}


DUCKDB_COUNTS = """
import duckdb, json, sys
con = duckdb.connect(config={"extension_directory": sys.argv[1]})
print(json.dumps({p: con.sql(f"SELECT count(*) FROM delta_scan('{p}')").fetchone()[0]
                  for p in sys.argv[2:]}))
"""


def test_every_table_is_described_on_the_readable_protocol_and_every_reader_agrees(pipeline):
    """Each Delta table `make run` wrote: Delta reader 1 / writer 2 (the contract's protocol),
    the contract's description as its table comment and a description on every column; read
    by delta-rs, Polars and DuckDB's delta extension (the one dbt uses), the same rows."""
    wh, _ = pipeline
    found = sorted(p for p in wh.iterdir() if (p / "_delta_log").is_dir())
    names = {p.name for p in found}
    assert {"events", "customer_features", "segment_membership", "segment_membership_history",
            "segment_migration", "segment_profiles", "rfm_scores", "factor_loadings",
            "customer_value", "audience_members", "audience_history", "consent",
            "suppression"} <= names <= set(contracts.BY_NAME)  # fmt: skip
    rows = {}
    for path in found:
        contract, table = contracts.BY_NAME[path.name], DeltaTable(str(path))
        protocol = table.protocol()
        assert (protocol.min_reader_version, protocol.min_writer_version) == (
            int(contract.properties["delta.minReaderVersion"]),
            int(contract.properties["delta.minWriterVersion"]),
        ), path.name
        assert table.metadata().description == contract.table_comment()
        for field in table.schema().fields:
            comment = field.metadata.get("comment")
            assert comment, f"{path.name}.{field.name} has no description"
            if contract.schema is not None:
                assert comment == contracts.description_of(contract.schema[field.name])
        rows[str(path)] = table.to_pyarrow_table().num_rows
        assert pl.read_delta(str(path)).height == rows[str(path)], path.name
    assert (DBT_VENV / "bin" / "python").exists(), "`make dbt-setup` creates .venv-dbt"
    duck = subprocess.run(
        [str(DBT_VENV / "bin" / "python"), "-c", DUCKDB_COUNTS,
         str(DBT_VENV / "duckdb-extensions"), *rows],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert duck.returncode == 0, duck.stderr[-3000:]
    assert json.loads(duck.stdout) == rows
