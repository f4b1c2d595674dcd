"""Attitudinal segments: survey checks, factor analysis, the clustering space, the workflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.config import AppConfig, AttitudesConfig, load_config
from segmentation.errors import InputError
from segmentation.features import attitude_space, factors
from segmentation.features import scaling as scaling_mod
from segmentation.inputs import survey
from segmentation.sample import survey_generator
from segmentation.storage import tables
from segmentation.workflows import attitudes, summaries
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[1]
ITEMS = survey_generator.ITEM_NAMES


def _config(base: Path, *extra: str) -> AppConfig:
    return load_config(
        ROOT / "conf" / "local.yaml",
        overrides=[
            f"storage.warehouse={base / 'warehouse'}",
            f"tracking.tracking_uri={mlflow_store(base / 'mlflow.db')}",
            f"tracking.artifact_location={base / 'mlartifacts'}",
            "explain.plot_sample_rows=500",
            *extra,
        ],
    )


def _local(df: DataFrame) -> DataFrame:
    """``df`` computed once, as a local relation (the generator's draws are not recomputed)."""
    return df.sparkSession.createDataFrame(df.collect(), df.schema)


@pytest.fixture(scope="module")
def small(spark: SparkSession) -> DataFrame:
    """About 400 respondents of the sample survey."""
    return _local(
        survey_generator.generate_survey(
            spark, customers=800, seed=3, share=0.5, missing_share=0.05
        ).responses
    )


# --- the end-to-end training on the generated sample ---------------------------------------


@pytest.fixture(scope="module")
def trained(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppConfig, attitudes.AttitudesResult]]:
    base = tmp_path_factory.mktemp("attitudes")
    cfg = _config(base)
    data = survey_generator.generate_survey(
        spark, customers=5000, seed=7, share=0.5, missing_share=0.05
    )
    _local(data.responses).write.format("delta").save(tables.path(cfg.storage, tables.SURVEY))
    _local(data.truth).write.format("delta").save(tables.path(cfg.storage, tables.ATTITUDE_TRUTH))
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    try:
        yield cfg, attitudes.run(spark, cfg)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_run_recovers_planted_segments(trained: tuple[AppConfig, attitudes.AttitudesResult]):
    _, result = trained
    print(f"ARI {result.ari_vs_truth:.3f}, k {result.selection.chosen_k}")
    assert result.selection.chosen_k == len(survey_generator.SEGMENTS)
    assert result.ari_vs_truth is not None and result.ari_vs_truth >= 0.8


@pytest.mark.slow
def test_run_finds_planted_factors(trained: tuple[AppConfig, attitudes.AttitudesResult]):
    _, result = trained
    print(f"factors {result.analysis.n_factors}, congruence {result.congruence}")
    assert result.analysis.n_factors == len(survey_generator.FACTORS)
    assert result.congruence is not None and min(result.congruence) >= 0.9
    assert {n.label for n in result.analysis.names} == {"price", "brand", "digital"}


@pytest.mark.slow
def test_run_counts_exclusions_and_writes_tables(
    spark: SparkSession, trained: tuple[AppConfig, attitudes.AttitudesResult]
):
    cfg, result = trained
    assert result.exclusions.get(survey.TOO_MANY_MISSING, 0) > 0
    assert result.retained + sum(result.exclusions.values()) == result.respondents
    membership = tables.read(spark, cfg.storage, tables.MEMBERSHIP).where(
        F.col(tables.MODEL_NAME) == "attitudinal_segments"
    )
    assert membership.count() == result.retained
    loadings = tables.read(spark, cfg.storage, tables.FACTOR_LOADINGS)
    assert loadings.count() == len(ITEMS) * result.analysis.n_factors
    excluded = tables.read(spark, cfg.storage, tables.EXCLUSIONS)
    assert excluded.count() == sum(result.exclusions.values())
    profiles = tables.read(spark, cfg.storage, tables.PROFILES).where(
        F.col(tables.MODEL_NAME) == "attitudinal_segments"
    )
    assert profiles.where(F.col("feature") == ITEMS[0]).count() == result.selection.chosen_k
    text = summaries.attitudes(result, cfg)
    assert "3 factor(s) by parallel analysis" in text and "eigenvalue > 1 would keep" in text
    html = Path(result.paths["report"]).read_text()
    assert 'alt="scree"' in html and 'alt="loadings"' in html


@pytest.mark.slow
def test_registered_model_scores_new_respondent_as_training(
    spark: SparkSession, trained: tuple[AppConfig, attitudes.AttitudesResult]
):
    cfg, _result = trained
    raw = tables.read(spark, cfg.storage, tables.SURVEY)
    membership = tables.read(spark, cfg.storage, tables.MEMBERSHIP).where(
        F.col(tables.MODEL_NAME) == "attitudinal_segments"
    )
    chosen = membership.orderBy(tables.CUSTOMER_ID).limit(20)
    respondents = raw.join(chosen.select(tables.CUSTOMER_ID), on=tables.CUSTOMER_ID, how="inner")
    model = mlflow.spark.load_model(f"models:/attitudinal_segments@{cfg.tracking.alias}")
    scored = model.transform(respondents).select(tables.CUSTOMER_ID, "segment_id")
    expected = {r[tables.CUSTOMER_ID]: r["segment_id"] for r in chosen.collect()}
    got = {r[tables.CUSTOMER_ID]: r["segment_id"] for r in scored.collect()}
    assert got == expected


# --- single-node equality -------------------------------------------------------------------


def test_moments_and_factor_scores_equal_numpy_and_factor_analyzer(small: DataFrame):
    from factor_analyzer import FactorAnalyzer

    ac = AttitudesConfig()
    checked = survey.check(small, ac)
    analysis = attitudes.analyse(checked.respondents, checked, ac)
    rows = checked.respondents.orderBy(tables.CUSTOMER_ID).collect()
    x = np.array([[r[c] if r[c] is not None else checked.impute[c] for c in ITEMS] for r in rows])
    np.testing.assert_allclose(analysis.moments.corr, np.corrcoef(x, rowvar=False), atol=1e-9)
    space = attitude_space.build_space(
        ac, checked, solution=analysis.solution, means=analysis.moments.means,
        stds=analysis.moments.stds, factor_names=analysis.names, levels={},
    )  # fmt: skip
    scored = space.transform(checked.respondents).orderBy(tables.CUSTOMER_ID).collect()
    spark_scores = np.array([[r[c] for c in space.factors] for r in scored])
    # The library's own scoring (regression method) of the same solution on the numpy data:
    # fitted on the Spark correlations (an iterative fit of two matrices equal to 1e-15 may
    # differ by 1e-9), then scoring with numpy's means, standard deviations and correlations.
    fa = FactorAnalyzer(
        n_factors=analysis.n_factors, rotation="varimax", method="minres", is_corr_matrix=True
    )
    with factors._library_compatible():
        fa.fit(analysis.moments.corr)
        fa.corr_ = np.corrcoef(x, rowvar=False)
        expected = fa.transform(x)
    # Same solution up to factor order and sign: match columns on the loadings.
    for k in range(analysis.n_factors):
        c = factors.congruence(analysis.solution.loadings[:, [k]], fa.loadings_)[0]
        j = int(np.argmax(np.abs(c)))
        np.testing.assert_allclose(spark_scores[:, k], np.sign(c[j]) * expected[:, j], atol=1e-9)


# --- bad input ------------------------------------------------------------------------------


def _one_column_bad(good: DataFrame, column: str, value: object) -> DataFrame:
    return good.withColumn(
        column,
        F.when(
            F.col(tables.CUSTOMER_ID) == good.first()[tables.CUSTOMER_ID], F.lit(value)
        ).otherwise(F.col(column).cast(type(value).__name__ if value is not None else "int")),
    )


def test_check_ordinal_outside_scale_names_column_and_key(small: DataFrame):
    bad = _one_column_bad(small, "price_compare", 9)
    with pytest.raises(InputError, match=r"price_compare.*attitudes\.items\.scale"):
        survey.check(bad, AttitudesConfig())


def test_check_outside_scale_counted_as_missing_when_configured(small: DataFrame):
    bad = _one_column_bad(small, "price_compare", 9)
    ac = AttitudesConfig(items={"ordinal": ITEMS, "invalid_answers": "missing"})
    assert survey.check(bad, ac).invalid_answers == {"price_compare": 1}


def test_check_categorical_mapped_as_numeric_names_column(small: DataFrame):
    ac = AttitudesConfig(attributes={"numeric": ["region"]})
    with pytest.raises(InputError, match=r"'region'.*attitudes\.attributes\.numeric.*categorical"):
        survey.check(small, ac)


def test_check_all_missing_item_names_column(small: DataFrame):
    bad = small.withColumn("brand_trust_known", F.lit(None))
    with pytest.raises(InputError, match=r"brand_trust_known.*attitudes\.items\.ordinal"):
        survey.check(bad, AttitudesConfig())


def test_check_excludes_sparse_respondents_with_count(small: DataFrame):
    sample = small
    first = sample.first()[tables.CUSTOMER_ID]
    sparse = sample.select(
        tables.CUSTOMER_ID,
        *[F.when(F.col(tables.CUSTOMER_ID) == first, F.lit(None)).otherwise(F.col(c)).alias(c)
          for c in ITEMS],
    )  # fmt: skip
    checked = survey.check(sparse, AttitudesConfig())
    assert checked.exclusions[survey.TOO_MANY_MISSING] >= 1
    assert checked.excluded.where(F.col(tables.CUSTOMER_ID) == first).count() == 1


def test_config_rejects_scale_for_unknown_item():
    with pytest.raises(ValueError, match=r"attitudes\.items\.scales"):
        AttitudesConfig(items={"ordinal": ITEMS, "scales": {"nps": [0, 10]}})


# --- pieces -----------------------------------------------------------------------------------


def test_weighted_scaling_gives_each_attribute_equal_variance(small: DataFrame):
    ac = AttitudesConfig(attributes={"categorical": ["region"], "boolean": ["is_business"]},
                         blocks={"attributes": 1.0})  # fmt: skip
    checked = survey.check(small, ac)
    analysis = attitudes.analyse(checked.respondents, checked, ac)
    levels = {"region": attitude_space.category_levels(checked.respondents, "region", 8)}
    space = attitude_space.build_space(
        ac, checked, solution=analysis.solution, means=analysis.moments.means,
        stds=analysis.moments.stds, factor_names=analysis.names, levels=levels,
    )  # fmt: skip

    spaced = space.transform(checked.respondents)
    plain = scaling_mod.fit_scaling(spaced, space.columns, default_transform="none")
    variances = dict(zip(plain.features, (s * s for s in plain.stds), strict=True))
    scaling = attitude_space.weighted_scaling(ac, space, plain, variances)
    var = {f: variances[f] / s**2 for f, s in zip(scaling.features, scaling.stds, strict=True)}
    region = sum(v for f, v in var.items() if f.startswith("region:"))
    assert region == pytest.approx(0.5, rel=1e-9)
    assert var["is_business"] == pytest.approx(0.5, rel=1e-9)
    assert sum(var[f] for f in space.factors) == pytest.approx(1.0, rel=1e-9)


def _planted_corr() -> np.ndarray:
    loadings = np.array(survey_generator.planted_loadings())
    corr = loadings @ loadings.T
    np.fill_diagonal(corr, 1.0)
    return corr


def test_parallel_analysis_keeps_planted_factors_and_reports_kaiser():
    pa = factors.parallel_analysis(_planted_corr(), 2000, iterations=50, percentile=95, seed=1)
    assert pa.n_factors == 3
    assert pa.kaiser == 3
    assert len(pa.threshold) == len(ITEMS)


def test_extract_oblique_rotation_reports_structure_and_factor_correlations():
    oblique = factors.extract(_planted_corr(), 3, method="minres", rotation="oblimin")
    assert oblique.phi.shape == (3, 3)
    np.testing.assert_allclose(oblique.structure, oblique.loadings @ oblique.phi, atol=1e-9)
    varimax = factors.extract(_planted_corr(), 3, method="minres", rotation="varimax")
    congruence = factors.matched_congruence(np.array(survey_generator.planted_loadings()),
                                            varimax.loadings)  # fmt: skip
    assert min(congruence) > 0.99
    np.testing.assert_allclose(varimax.phi, np.eye(3))


def test_dummy_column_names_are_valid_mlflow_names():
    assert attitude_space.dummy_column("region", "north") == "region:north"
    assert attitude_space.dummy_column("industry", attitude_space.MISSING) == "industry:missing"
    assert attitude_space.dummy_column("plan", "B2B / pro+") == "plan:B2B_pro"
