"""End to end on a small generated history: quality, tables, MLflow, idempotency, jobs."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from segmentation.errors import InputError
from segmentation.modeling import clustering
from segmentation.modeling.evaluation import adjusted_rand_index_from_counts
from segmentation.runtime import tracking
from segmentation.storage import delta_tables
from segmentation.workflows import assign, build_features, generate, rules, summaries, train
from tests.conftest import browser_render, local_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    cfg = local_config(
        base,
        "generator.customers=3000",
        "generator.events=150000",
        # The outcome check on a seeded half of the 3,000 customers (the sampled path).
        "validation.outcome.max_customers=1500",
    )
    generated = generate.run(spark, cfg)
    features = build_features.run(spark, cfg)
    trained = train.run(spark, cfg)
    yield cfg, generated, features, trained
    mlflow.set_tracking_uri(None)


def table(cfg, name, model_name: str | None = "customer_segments") -> pl.DataFrame:
    """A table read with Polars; segment_membership only for ``model_name`` (None: all)."""
    df = pl.read_delta(cfg.storage.table_path(name))
    if name == "segment_membership" and model_name is not None:
        df = df.filter(pl.col("model_name") == model_name)
    return df


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
    assert dt_table.metadata().partition_columns == ["model_name", "as_of"]
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


def test_validation_finds_the_planted_segments_stable_replicable_and_different(run):
    cfg, _, _, trained = run
    v = trained.validation
    jaccard = {m.segment_id: m for m in v.measures if m.measure == "bootstrap_jaccard"}
    assert set(jaccard) == {s.segment_id for s in trained.segments}
    assert all(m.value >= 0.75 and m.verdict in ("stable", "highly stable")
               for m in jaccard.values())  # fmt: skip
    assert v.get("split_half_ari").value >= 0.9
    assert v.get("silhouette_euclidean").verdict in ("reasonable structure", "strong structure")
    # Outcomes differ as planted: the backtest window's buyers are the champions and the
    # regulars, hardly the lapsed.
    assert v.window[0] == "backtest" and v.window[2] == dt.date(2025, 12, 31)
    assert v.get("outcome_purchase_chi2").verdict == "segments differ"
    assert v.get("outcome_revenue_kruskal_h").verdict == "segments differ"
    by_name = {s.name: s.segment_id for s in trained.segments}
    share = {n: v.get("outcome_purchase_share", sid).value for n, sid in by_name.items()}
    assert share["Champions"] > 0.95 and share["Loyal regulars"] > 0.9
    assert share["Lapsed customers"] < 0.5 * share["Champions"]
    # On a seeded half of the customers: about half of those with events before the window.
    assert v.get("outcome_customer_share").value == 0.5
    judged = sum(m.value for m in v.measures if m.measure == "outcome_customers")
    events = table(cfg, "events")
    before = events.filter(pl.col("event_time").dt.date() <= dt.date(2025, 10, 2))
    eligible = before["customer_id"].n_unique()
    assert abs(judged - eligible / 2) < 4 * (eligible * 0.25) ** 0.5  # 4 binomial sigmas
    stored = table(cfg, "segment_validation")
    assert set(stored["model_version"]) == {trained.model_version}
    row = stored.filter((pl.col("measure") == "split_half_ari") & pl.col("segment_id").is_null())
    assert row["value"].to_list() == [pytest.approx(v.get("split_half_ari").value)]
    run_data = mlflow.get_run(trained.run_id).data
    assert run_data.metrics["validation_split_half_ari"] == pytest.approx(row["value"][0])
    summary = summaries.training(trained, cfg)
    assert "Validation (table segment_validation):" in summary
    assert "Outcomes, backtest on (2025-10-02, 2025-12-31] (a 50.0% sample of customers" in summary
    # The well-separated sample: the balanced rule chooses the planted six, every one stable.
    assert "model selection (balanced rule): k=6: best mean rank of silhouette" in summary
    assert all(c.worst_jaccard is not None for c in trained.selection.candidates
               if c.min_share >= 0.02)  # fmt: skip


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
    assert "Loyal" in names["loyal_regulars"]


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
    feats = delta_tables.read(spark, cfg.storage.table_path("customer_features"))
    again = clustering.assign(model, feats).select("customer_id", "segment_id")
    stored = (
        delta_tables.read(spark, cfg.storage.table_path("segment_membership"))
        .where("model_name = 'customer_segments'")
        .select("customer_id", "segment_id")
    )
    assert again.exceptAll(stored).count() == 0 and stored.exceptAll(again).count() == 0


def test_rebuilding_features_for_the_same_as_of_replaces_the_snapshot(spark, run):
    cfg, _, features, _ = run
    again = build_features.run(spark, cfg)
    assert again.version == features.version + 1
    f = table(cfg, "customer_features")
    assert f.height == 3000  # replaced, not appended
    # The earlier version is still readable by version.
    old = pl.read_delta(cfg.storage.table_path("customer_features"), version=features.version)
    assert old.height == 3000


def test_generate_if_absent_keeps_existing_sample(spark, run):
    cfg, generated, _, _ = run
    result = generate.run(spark, cfg, if_absent=True)
    assert result.skipped
    assert DeltaTable(cfg.storage.table_path("events")).version() == generated.versions["events"]


def test_pipeline_with_own_events_checks_them_first_and_writes_no_sample(spark, tmp_path):
    from segmentation.workflows import local_pipeline

    missing = tmp_path / "exports" / "events.csv"
    cfg = local_config(tmp_path, f"input.events.path={missing}", "input.events.format=csv")
    with pytest.raises(InputError, match=rf"input path not found: {missing}"):
        local_pipeline.preflight(cfg)  # before Spark starts (the job's preflight)
    echoed: list[str] = []
    with pytest.raises(InputError, match="input path not found"):
        local_pipeline.run(spark, cfg, train_as_of=dt.date(2025, 12, 31), echo=echoed.append)
    assert echoed == [] and not (tmp_path / "wh").exists()  # no sample beside their data
    local_pipeline.preflight(local_config(tmp_path))  # the sample: checked once generated


def test_pipeline_refuses_a_score_date_before_the_training_date(spark, tmp_path):
    from segmentation.workflows import local_pipeline

    with pytest.raises(InputError, match=r"2025-11-30 \(--score-as-of\) is before the training"):
        local_pipeline.run(spark, local_config(tmp_path), train_as_of=dt.date(2025, 12, 31),
                           score_as_of=dt.date(2025, 11, 30))  # fmt: skip
    assert not (tmp_path / "wh").exists()


HELP_EVERY_JOB = """
import contextlib, io, json, runpy, sys
answers = {}
for path in sys.argv[1:]:
    sys.argv, out, code = [path, "--help"], io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    answers[path] = [code, out.getvalue()]
print(json.dumps(answers))
"""


def test_every_job_entry_point_parses_its_options():
    """Each spark-submit entry point runs as ``__main__`` and answers --help (no Spark
    started): all of them in one Python process, one interpreter start instead of one per
    job."""
    jobs = sorted(str(p) for p in (ROOT / "jobs").glob("*.py") if p.stem != "__init__")
    proc = subprocess.run(
        [sys.executable, "-c", HELP_EVERY_JOB, *jobs],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout)
    assert sorted(answers) == jobs and str(ROOT / "jobs" / "run_pipeline.py") in jobs
    for job, (code, text) in answers.items():
        assert code == 0 and "--config" in text and "--set" in text, (job, code, text[-500:])


def test_assign_without_a_champion_is_a_clear_error(spark, run):
    cfg, _, _, _ = run
    other = cfg.model_copy(
        update={"tracking": cfg.tracking.model_copy(update={"registered_model": "nothing_here"})}
    )
    with pytest.raises(InputError, match="no model under nothing_here@champion"):
        assign.run(spark, other)


# --- explainability (issue 5) --------------------------------------------------------------


def artifact_json(cfg, run_id: str, path: str):
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return tracking.load_json(run_id, path)


def test_rules_reproduce_the_planted_segments(run):
    cfg, _, _, trained = run
    rules = trained.explanation.rules
    assert rules.fidelity >= 0.85
    # Stored with the model run: rules, fidelity, importances.
    stored = artifact_json(cfg, trained.run_id, "explain/rules.json")
    assert stored["fidelity"] == pytest.approx(rules.fidelity)
    assert set(stored["rules"]) == {str(s.segment_id) for s in trained.segments}
    for sid, seg_rules in stored["rules"].items():
        assert 1 <= len(seg_rules) <= cfg.explain.rules_per_segment
        assert all(r["segment_id"] == int(sid) and r["rule"] for r in seg_rules)
    importances = artifact_json(cfg, trained.run_id, "explain/feature_importances.json")
    assert set(importances["feature_importances"]) == set(cfg.training.features)
    assert sum(importances["feature_importances"].values()) == pytest.approx(1.0)
    metrics = MlflowClient(cfg.tracking.tracking_uri).get_run(trained.run_id).data.metrics
    assert metrics["rules_fidelity"] == pytest.approx(rules.fidelity)
    # Fidelity recomputed independently: apply each segment's stored top rule to the features
    # in Polars; the customers it selects are (nearly all) in that segment.
    f = table(cfg, "customer_features").join(
        table(cfg, "segment_membership").select("customer_id", "segment_id"), on="customer_id"
    )
    for sid, seg_rules in stored["rules"].items():
        cond = pl.lit(True)
        for c in seg_rules[0]["conditions"]:
            x = pl.col(c["feature"]).cast(pl.Float64)
            cond = cond & (x <= c["threshold"] if c["op"] == "<=" else x > c["threshold"])
        chosen = f.filter(cond)
        assert chosen.height == seg_rules[0]["customers"]
        hit = chosen.filter(pl.col("segment_id") == int(sid)).height / chosen.height
        assert hit == pytest.approx(seg_rules[0]["precision"])


def test_lapsed_segment_rule_speaks_of_recency(run):
    _, _, _, trained = run
    lapsed = next(s for s in trained.segments if "Lapsed" in s.name)
    rule = trained.explanation.rules.top(lapsed.segment_id, 1)[0]
    assert any(c.feature == "recency_days" and c.op == ">" for c in rule.conditions)


def test_sensitive_attributes_never_reach_the_model(run):
    cfg, _, _, trained = run
    sensitive = set(cfg.explain.sensitive_attributes)
    segments = artifact_json(cfg, trained.run_id, "segments/segments.json")
    assert not sensitive & set(segments["features"])
    params = MlflowClient(cfg.tracking.tracking_uri).get_run(trained.run_id).data.params
    assert not sensitive & set(params["features"].split(","))
    # ... and the model's pipeline reads no sensitive column (its scaling SQL names its inputs).
    model = tracking.load_model("customer_segments", trained.model_version)
    sql = model.stages[0].getStatement()
    assert all(f"`{a}`" not in sql and f" {a} " not in sql for a in sensitive)


def test_composition_table_matches_an_independent_count(run):
    cfg, _, _, trained = run
    comp = table(cfg, "segment_composition")
    assert set(comp["model_version"].unique()) == {trained.model_version}
    assert {"age", "gender", "country", "os", "is_business"} <= set(comp["attribute"])
    assert comp.filter(pl.col("sensitive"))["attribute"].unique().sort().to_list() == [
        "age", "gender",
    ]  # fmt: skip
    # Gender shares per segment, recomputed from membership and the customers dimension.
    m = table(cfg, "segment_membership").join(table(cfg, "customers"), on="customer_id")
    expected = (
        m.with_columns(pl.col("gender").fill_null("(missing)"))
        .group_by("segment_id", "gender").len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("segment_id")).alias("share"))
    )  # fmt: skip
    got = comp.filter(pl.col("attribute") == "gender").join(
        expected, left_on=["segment_id", "value"], right_on=["segment_id", "gender"]
    )
    assert got.height == expected.height
    assert (got["customers"] == got["len"]).all()
    assert ((got["share_of_segment"] - got["share"]).abs() < 1e-9).all()


def test_pictures_and_report_are_logged_and_written(run):
    cfg, _, _, trained = run
    client = MlflowClient(cfg.tracking.tracking_uri)
    plots = {Path(a.path).name for a in client.list_artifacts(trained.run_id, "plots")}
    assert plots == {"k_selection.png", "segment_sizes.png", "profile_heatmap.png", "pca.png",
                     "validation.png"}  # fmt: skip
    report_path = Path(trained.paths["report"])
    assert report_path.parent == Path(cfg.storage.warehouse) / "reports"
    logged = [a.path for a in client.list_artifacts(trained.run_id, "report")]
    assert logged == [f"report/{report_path.name}"]
    html = report_path.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    for s in trained.segments:
        assert s.name in html


def test_report_opens_in_headless_chromium(run, tmp_path):
    """Debian's chromium (installed by `make test`) renders the report: no errors, every
    picture decoded, one table row per segment; the screenshot shows table and pictures."""
    _, _, _, trained = run
    shot = browser_render(
        Path(trained.paths["report"]), tmp_path / "report.png",
        rows=("#segments", "#validation"), boxes=("#segments", "#pictures"),
    )  # fmt: skip
    assert shot["errors"] == []
    assert shot["rows"]["#segments"] == len(trained.segments)
    assert shot["images"] == {"k_selection", "segment_sizes", "profile_heatmap", "pca",
                              "validation"}  # fmt: skip
    assert shot["rows"]["#validation"] == len(trained.segments)
    # The screenshot's first screen holds the segment table and the first pictures.
    table_box, pictures_box = shot["boxes"]["#segments"], shot["boxes"]["#pictures"]
    assert table_box["y"] < pictures_box["y"] < shot["viewport_height"]
    png = shot["png"]
    assert png.startswith(b"\x89PNG") and len(png) > 50_000


@pytest.fixture(scope="module")
def rules_run(spark, run):
    cfg, _, _, _ = run
    return cfg, rules.run(spark, cfg)


def test_rule_segmentations_share_the_membership_table(rules_run):
    cfg, result = rules_run
    m = table(cfg, "segment_membership", model_name=None)
    sizes = dict(m.group_by("model_name").len().iter_rows())
    customers = table(cfg, "customers")
    accounts = customers.filter(pl.col("is_business")).height
    assert sizes == {"customer_segments": 3000, "rfm": 3000, "b2b_tiers": accounts}
    rfm = m.filter(pl.col("model_name") == "rfm")
    names = {s.name for s in cfg.rfm.segments} | {cfg.rfm.no_purchase_segment}
    assert set(rfm["segment_name"]) <= names
    assert rfm["model_version"].unique().to_list() == [cfg.rfm.version]
    # Scores and segments agree with the map (first match) for every buyer; customers without
    # a purchase have no scores and their own segment.
    scores = table(cfg, "rfm_scores").join(rfm.select("customer_id", "segment_name"),
                                           on="customer_id")  # fmt: skip
    assert scores.height == 3000
    for r in scores.iter_rows(named=True):
        if r["f_score"] is None:
            assert r["segment_name"] == cfg.rfm.no_purchase_segment == r["segment_name_right"]
            continue
        first = next(
            s.name for s in cfg.rfm.segments
            if s.r[0] <= r["r_score"] <= s.r[1] and s.f[0] <= r["f_score"] <= s.f[1]
            and s.m[0] <= r["m_score"] <= s.m[1]
        )  # fmt: skip
        assert r["segment_name"] == first == r["segment_name_right"]
    # Quintiles: every score holds about a fifth of customers unless ties merge them.
    buyers = scores.filter(pl.col("m_score").is_not_null())
    shares = buyers.group_by("m_score").len()["len"] / buyers.height
    assert shares.min() > 0.15 and shares.max() < 0.25
    # The history carries each segmentation separately.
    h = table(cfg, "segment_membership_history")
    assert h.filter(pl.col("model_name") == "rfm").height == 3000
    assert h.filter(pl.col("model_name") == "customer_segments").height == 3000
    assert result.publications["b2b_tiers"].customers == accounts
    # One parent run, and a child run per segmentation in the same experiment.
    client = MlflowClient(cfg.tracking.tracking_uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert sorted(c.data.tags["segmentation"] for c in children) == ["b2b_tiers", "rfm"]
    rfm_run = next(c for c in children if c.data.tags["segmentation"] == "rfm")
    assert set(rfm["run_id"]) == {rfm_run.info.run_id}
    assert tracking.load_json(rfm_run.info.run_id, "rfm/cuts.json")["recency"]


def test_b2b_tiers_follow_spend_and_company_size(rules_run):
    cfg, _ = rules_run
    tiers = (
        table(cfg, "segment_membership", model_name="b2b_tiers")
        .join(table(cfg, "customers"), on="customer_id")
        .join(table(cfg, "customer_features"), on="customer_id", how="left")
    )
    assert tiers["is_business"].all()
    for r in tiers.iter_rows(named=True):
        spend, staff = r["monetary_365d"] or 0.0, r["employee_count"]
        expected = next(
            t.name for t in cfg.b2b.tiers
            if (t.min_spend is None or spend >= t.min_spend)
            and (t.min_employees is None or (staff is not None and staff >= t.min_employees))
        )  # fmt: skip
        assert r["segment_name"] == expected
    assert tiers["segment_name"].n_unique() >= 3
