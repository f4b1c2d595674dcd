"""One customer never changes the segments: robust scaling, near-constant features, clipping;
and a survey whose items make the correlation matrix singular is caught, not scored."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.config import AttitudesConfig, load_config
from segmentation.features import scaling as scaling_mod
from segmentation.modeling.evaluation import adjusted_rand_index
from segmentation.sample import survey_generator
from segmentation.workflows import attitudes, train
from tests.conftest import ROOT

SCHEMA = (
    "customer_id string, recency_days double, tenure_days double, frequency double, "
    "avg_order_value double, discount_share double, truth int"
)


def test_robust_scaling_is_the_median_and_iqr_falling_back_to_the_sd(spark):
    rng = np.random.default_rng(1)
    x = rng.normal(10, 2, 2001)
    flag = np.zeros(2001)
    flag[:30] = 1.0  # 1.5% ones: the IQR is 0
    df = spark.createDataFrame([(float(a), float(b)) for a, b in zip(x, flag, strict=True)],
                               "x double, flag double")  # fmt: skip
    fitted = scaling_mod.fit_scaling(df, ["x", "flag"], default_transform="none",
                                     method="robust", clip=5.0)  # fmt: skip
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    assert fitted.means[0] == pytest.approx(median, abs=0.02)
    assert fitted.stds[0] == pytest.approx((q3 - q1) / 1.3489795, rel=0.01)
    assert fitted.means[1] == 0.0 and fitted.stds[1] == pytest.approx(flag.std())
    assert fitted.fallbacks == ("flag",)
    scaled = fitted.stage().transform(df).select(*fitted.scaled_columns).toPandas().to_numpy()
    assert scaled[:, 1].max() == 5.0  # (1 - 0) / 0.12 = 8.2, clipped
    found = scaling_mod.near_constant(df, ["x", "flag"], share=0.98)
    assert [(n.feature, n.value) for n in found] == [("flag", 0.0)]
    assert found[0].share == pytest.approx(1971 / 2001)


def _groups(seed: int = 0) -> list[tuple]:
    """3,000 customers in four clear behaviours (log-normal around each centre)."""
    rng = np.random.default_rng(seed)
    centres = [(10, 300, 20, 40), (200, 800, 5, 200), (30, 100, 3, 20), (400, 900, 40, 60)]
    rows = []
    for g, (r, t, f, a) in enumerate(centres):
        for i in range(750):
            rows.append((f"c{g}_{i}", float(r * np.exp(rng.normal(0, 0.2))),
                         float(t * np.exp(rng.normal(0, 0.1))),
                         float(max(1, round(f * np.exp(rng.normal(0, 0.2))))),
                         float(a * np.exp(rng.normal(0, 0.2))), 0.0, g))  # fmt: skip
    return rows


def _fit(spark, rows):
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=["training.k_max=6"])
    df = spark.createDataFrame(rows, SCHEMA).cache()
    cfg, notes = train.without_near_constant(cfg, df)
    fitted = train.fit(cfg.training, df, None)
    labels = fitted.assigned.select("customer_id", F.col("segment_id").alias("s"))
    return fitted.selection.chosen_k, labels.cache(), notes


@pytest.mark.slow
@pytest.mark.parametrize("outlier", ["flag", "whale"])
def test_one_customer_changes_neither_the_number_nor_the_shape_of_segments(spark, outlier):
    """A flag nobody else has (discount_share 1, the issue's case: z = 55 under standard
    scaling) or a whale (an order value a million times the rest): the same k and the same
    segments (ARI >= 0.99 on the other customers) as without them."""
    rows = _groups()
    odd = list(rows[0 if outlier == "flag" else 800])
    odd[0] = outlier
    if outlier == "flag":
        odd[5] = 1.0
    else:
        odd[3], odd[4] = 3000.0, 5e7
    k_without, without, _ = _fit(spark, rows)
    k_with, with_, notes = _fit(spark, [*rows, tuple(odd)])
    assert k_without == k_with == 4
    joined = without.join(with_.withColumnRenamed("s", "t"), "customer_id")
    assert joined.count() == 3000
    assert adjusted_rand_index(joined, "s", "t") >= 0.99
    if outlier == "flag":  # left out with a note: 99.97% of customers have 0
        assert any("discount_share left out" in n for n in notes)
    assert with_.where(F.col("customer_id") == outlier).count() == 1  # kept, in a segment


def _attitude_config(**clustering) -> AttitudesConfig:
    base = load_config(ROOT / "conf" / "local.yaml").attitudes
    return base.model_copy(update={"clustering": base.clustering.model_copy(update={
        "k_max": 6, "selection_bootstrap_samples": 3, **clustering})})  # fmt: skip


@pytest.fixture(scope="module")
def respondents(spark) -> DataFrame:
    data = survey_generator.generate_survey(spark, customers=1600, seed=11, share=0.5,
                                            missing_share=0.02)  # fmt: skip
    return spark.createDataFrame(data.responses.collect(), data.responses.schema).cache()


@pytest.mark.slow
def test_an_extreme_respondent_changes_neither_k_nor_the_attitudinal_segments(spark, respondents):
    """A respondent answering 1 to everything, in a region nobody else names: the same k and
    segments (ARI >= 0.99 on the others); the one-respondent region column is left out."""
    ac = _attitude_config()
    first = respondents.first().asDict()
    odd = {**first, "customer_id": "odd", "region": "Atlantis",
           **dict.fromkeys(survey_generator.ITEM_NAMES, 1)}  # fmt: skip
    with_odd = respondents.unionByName(spark.createDataFrame([odd], respondents.schema))
    a = attitudes.fit(ac, respondents, None)
    b = attitudes.fit(ac, with_odd, None)
    assert a.selection.chosen_k == b.selection.chosen_k
    left = a.assigned.select("customer_id", F.col("segment_id").alias("s"))
    right = b.assigned.select("customer_id", F.col("segment_id").alias("t"))
    joined = left.join(right, "customer_id")
    assert joined.count() == a.assigned.count()
    assert adjusted_rand_index(joined, "s", "t") >= 0.99
    assert b.assigned.where(F.col("customer_id") == "odd").count() == 1
    assert not any("Atlantis" in c for c in b.model.scaling.features)
    for df in (a.assigned, b.assigned, a.spaced, b.spaced):
        df.unpersist()


@pytest.mark.slow
def test_a_reverse_coded_copy_is_left_out_and_scores_stay_bounded(spark, respondents):
    """``price_compare_r = 6 - price_compare`` exported beside the original: r = -1, so the
    correlation matrix is singular (score weights of 1.6e7 before); the copy is left out with
    a note naming the pair, and every score weight stays small."""
    ac = _attitude_config()
    items = ac.items.model_copy(update={"ordinal": (*ac.items.ordinal, "price_compare_r")})
    ac = ac.model_copy(update={"items": items})
    raw = respondents.withColumn("price_compare_r", 6 - F.col("price_compare"))
    fitted = attitudes.fit(ac, raw, None)
    notes = fitted.analysis.notes
    assert any("price_compare_r left out" in n and "price_compare is -1.000" in n for n in notes)
    assert "price_compare_r" not in fitted.analysis.items
    assert np.abs(fitted.analysis.solution.weights).max() < 5
    scores = fitted.spaced.select(*fitted.space.factors).toPandas().to_numpy()
    assert np.abs(scores).max() < 10
    for df in (fitted.assigned, fitted.spaced):
        df.unpersist()


def test_a_nearly_singular_item_set_is_named():
    from segmentation.errors import InputError
    from segmentation.features import factors

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=500), rng.normal(size=500)
    c = a + b + rng.normal(scale=1e-6, size=500)  # c is a + b
    corr = np.corrcoef(np.stack([a, b, c, rng.normal(size=500)]))
    with pytest.raises(InputError, match=r"condition number .*c.*linear combination"):
        factors.check_conditioning(corr, ["a", "b", "c", "d"])


@pytest.mark.slow
def test_behaviour_block_joins_features_and_writes_the_excluded_respondents(spark, respondents):
    """``attitudes.blocks.behaviour > 0``: the respondents' behavioural features join the
    space (their own block, log1p); a respondent without features is excluded, counted and
    listed in the exclusions with the reason (``survey_exclusions``)."""
    from segmentation.inputs import survey

    ac = _attitude_config()
    ac = ac.model_copy(update={"blocks": ac.blocks.model_copy(update={"behaviour": 0.5})})
    ids = [r.customer_id for r in respondents.select("customer_id").collect()]
    rng = np.random.default_rng(4)
    with_features = ids[: len(ids) - 7]  # seven respondents have no behaviour
    behaviour = spark.createDataFrame(
        [(cid, float(rng.uniform(1, 400)), float(rng.integers(1, 30))) for cid in with_features],
        "customer_id string, recency_days double, frequency double",
    )
    fitted = attitudes.fit(ac, respondents, None, behaviour=behaviour,
                           behaviour_features=("recency_days", "frequency"))  # fmt: skip
    assert fitted.space.behaviour == ("recency_days", "frequency")
    assert set(fitted.space.behaviour) <= set(fitted.model.scaling.features)
    excluded = fitted.checked.excluded.where(F.col("reason") == survey.NO_BEHAVIOUR)
    missing = {r.customer_id for r in excluded.collect()}
    assert fitted.checked.exclusions[survey.NO_BEHAVIOUR] == len(missing)
    assert missing == set(ids[len(ids) - 7 :]) - {
        r.customer_id for r in fitted.checked.excluded.where(F.col("reason") != survey.NO_BEHAVIOUR)
        .collect()}  # fmt: skip
    assert fitted.assigned.join(excluded, "customer_id").count() == 0
    for df in (fitted.assigned, fitted.spaced):
        df.unpersist()
