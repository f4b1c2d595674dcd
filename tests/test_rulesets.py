"""RFM scores, the named RFM map and B2B tiers on small inline data, against hand computation."""

from __future__ import annotations

import pytest

from segmentation.config import B2bConfig, B2bTier, RfmConfig, RfmSegment, load_config
from segmentation.errors import ConfigError, InputError
from segmentation.modeling import rulesets
from tests.conftest import ROOT

# Ten customers. Recency 1..10 days: quintile cuts 2, 4, 6, 8 (the 20/40/60/80th percentiles),
# so R = 5 for 1-2 days, 4 for 3-4, 3 for 5-6, 2 for 7-8, 1 for 9-10 (fewer days is better).
# Frequencies sorted: 1 1 1 5 5 20 20 20 50 50 -> cuts 1, 5, 20, 20: F = 1 + cuts strictly
# below, so 1 -> 1, 5 -> 2, 20 -> 3, 50 -> 5 (ties share a score; nobody gets 4).
# Monetary 10..100 (shuffled): cuts 20, 40, 60, 80 -> 10-20: 1, 30-40: 2, ..., 90-100: 5.
ROWS = [
    # customer, recency, frequency, monetary, expected (R, F, M), expected named segment
    ("c1", 1, 50, 100.0, (5, 5, 5), "Champions"),
    ("c2", 2, 1, 10.0, (5, 1, 1), "New"),
    ("c3", 3, 20, 60.0, (4, 3, 3), "Potential loyalists"),
    ("c4", 4, 1, 30.0, (4, 1, 2), "Promising"),
    ("c5", 5, 20, 70.0, (3, 3, 4), "Need attention"),
    ("c6", 6, 5, 20.0, (3, 2, 1), "About to sleep"),
    ("c7", 7, 50, 90.0, (2, 5, 5), "Can't lose them"),
    ("c8", 8, 20, 80.0, (2, 3, 4), "At risk"),
    ("c9", 9, 1, 40.0, (1, 1, 2), "Lost"),
    ("c10", 10, 5, 50.0, (1, 2, 3), "Hibernating"),
]


@pytest.fixture(scope="module")
def features(spark):
    # No returns here: net spend (monetary_net, the default M) equals gross spend.
    return spark.createDataFrame(
        [(c, r, f, m, m, m * 0.5) for c, r, f, m, _, _ in ROWS],
        "customer_id string, recency_days int, frequency long, monetary_total double, "
        "monetary_net double, monetary_365d double",
    )


def test_rfm_quintile_cuts_match_hand_computation(features):
    cuts = rulesets.rfm_cuts(features, RfmConfig())
    assert cuts.recency == (2, 4, 6, 8)
    assert cuts.frequency == (1, 5, 20, 20)
    assert cuts.monetary == (20, 40, 60, 80)


def test_rfm_scores_and_named_segments_match_hand_computation(features):
    cfg = load_config(ROOT / "conf" / "base.yaml").rfm
    scored = {r["customer_id"]: r for r in rulesets.score_rfm(features, cfg).collect()}
    for customer, _, _, _, (r, f, m), name in ROWS:
        row = scored[customer]
        assert (row["r_score"], row["f_score"], row["m_score"]) == (r, f, m), customer
        assert row["segment_name"] == name, customer
    ids = {row["segment_name"]: row["segment_id"] for row in scored.values()}
    # Ids follow the map's order: Champions 1, ..., Hibernating 11.
    assert ids["Champions"] == 1 and ids["Hibernating"] == 11 and ids["Lost"] == 10


def test_rfm_ties_leave_a_score_empty_and_the_run_says_why(features):
    # Frequency cuts 1, 5, 20, 20: the 60% and 80% cuts coincide, so F = 4 is never given.
    cfg = RfmConfig()
    cuts = rulesets.rfm_cuts(features, cfg)
    empty = rulesets.empty_scores(rulesets.score_counts(rulesets.score_rfm(features, cfg)), cuts)
    assert [e.text() for e in empty] == [
        "F4: the 60% and 80% quintile cuts coincide at 20; tied customers share one score "
        "(equal values always get equal scores)"
    ]


def test_empty_scores_when_most_customers_bought_once():
    # Frequencies 1 x7, 2, 3, 5: cuts 1, 1, 1, 2. F1 = 1, F4 = 2, F5 = 3 and 5; F2 and F3 are
    # empty. Recency and monetary have every score.
    counts = {"R": dict.fromkeys(range(1, 6), 2), "M": dict.fromkeys(range(1, 6), 2),
              "F": {1: 7, 2: 0, 3: 0, 4: 1, 5: 2}}  # fmt: skip
    cuts = rulesets.RfmCuts((2, 4, 6, 8), (1, 1, 1, 2), (20, 40, 60, 80))
    assert [(e.measure, e.score, e.reason) for e in rulesets.empty_scores(counts, cuts)] == [
        ("F", 2, "the 20% and 40% quintile cuts coincide at 1; tied customers share one score "
                 "(equal values always get equal scores)"),
        ("F", 3, "the 40% and 60% quintile cuts coincide at 1; tied customers share one score "
                 "(equal values always get equal scores)"),
    ]  # fmt: skip


def test_empty_top_score_when_no_one_is_above_the_last_cut():
    counts = {"R": {1: 0, 2: 1, 3: 1, 4: 1, 5: 1}, "F": dict.fromkeys(range(1, 6), 1),
              "M": dict.fromkeys(range(1, 6), 1)}  # fmt: skip
    cuts = rulesets.RfmCuts((2, 4, 6, 8), (1, 2, 3, 4), (1, 2, 3, 4))
    # R = 1 holds recencies above the 80% cut (8 days): nobody.
    assert [e.text() for e in rulesets.empty_scores(counts, cuts)] == [
        "R1: no customer is above the 80% quintile cut 8"
    ]


def test_rfm_customers_without_purchases_get_their_own_segment(spark, features):
    """Only returns or visits: no scores, segment "No purchases", and the buyers' cuts are
    unchanged by them (the 10 buyers above, plus two non-buyers)."""
    extra = spark.createDataFrame(
        [("r1", 3, 0, -50.0, 0.0, 0.0), ("v1", 1, 0, 0.0, 0.0, 0.0)], features.schema
    )
    everyone = features.unionByName(extra)
    cfg = load_config(ROOT / "conf" / "base.yaml").rfm
    assert rulesets.rfm_cuts(everyone, cfg) == rulesets.rfm_cuts(features, cfg)
    scored = {r["customer_id"]: r for r in rulesets.score_rfm(everyone, cfg).collect()}
    for customer in ("r1", "v1"):
        row = scored[customer]
        assert (row["r_score"], row["f_score"], row["m_score"]) == (None, None, None)
        assert (row["segment_id"], row["segment_name"]) == (12, "No purchases")
    assert scored["c2"]["segment_name"] == "New"  # a one-order buyer is still New
    assert rulesets.rfm_segment_names(cfg)[12] == "No purchases"


def test_rfm_scores_net_spend_by_default(spark):
    """A customer who orders 1000 and returns 1000 is not a top spender."""
    rows = [("refunder", 1, 1, 1000.0, 0.0)] + [
        (f"b{i}", 1, 1, float(m), float(m)) for i, m in enumerate((100, 200, 300, 400))
    ]
    df = spark.createDataFrame(
        rows, "customer_id string, recency_days int, frequency long, monetary_total double, "
        "monetary_net double",
    )  # fmt: skip
    gross = RfmConfig(monetary_feature="monetary_total")
    by_net = {r["customer_id"]: r["m_score"] for r in rulesets.score_rfm(df, RfmConfig()).collect()}
    by_gross = {r["customer_id"]: r["m_score"] for r in rulesets.score_rfm(df, gross).collect()}
    # Net 0, 100, 200, 300, 400: cuts 0, 100, 200, 300 -> refunder M1. Gross: refunder M5.
    assert (by_net["refunder"], by_gross["refunder"]) == (1, 5)


def test_rfm_map_is_configurable_and_first_match_wins(features):
    cfg = RfmConfig().model_copy(
        update={
            "segments": (
                RfmSegment("Big spenders", m=(5, 5)),
                RfmSegment("Recent", r=(4, 5)),
                RfmSegment("Everyone else"),
            )
        }
    )
    scored = {
        r["customer_id"]: r["segment_name"] for r in rulesets.score_rfm(features, cfg).collect()
    }
    # M = 5 for monetary 90-100 (c1, c7) wins over "Recent" for c1; R >= 4 for c2-c4.
    assert scored == {
        "c1": "Big spenders", "c7": "Big spenders",
        "c2": "Recent", "c3": "Recent", "c4": "Recent",
        **{c: "Everyone else" for c in ("c5", "c6", "c8", "c9", "c10")},
    }  # fmt: skip


def test_rfm_map_must_cover_every_score_cell():
    with pytest.raises(ConfigError, match=r"rfm.segments leave 100 score cell\(s\).*r=1 f=1 m=1"):
        load_config(
            ROOT / "conf" / "base.yaml",
            overrides=["rfm.segments=[{name: Recent, r: [5, 5]}]"],
        )
    with pytest.raises(ConfigError, match=r"rfm.segments\[0\].f \(Bad\) must be \[low, high\]"):
        load_config(
            ROOT / "conf" / "base.yaml", overrides=["rfm.segments=[{name: Bad, f: [0, 6]}]"]
        )


def test_rfm_names_a_missing_feature_column(spark):
    df = spark.createDataFrame([("a", 1)], "customer_id string, recency_days int")
    with pytest.raises(InputError, match=r"no column\(s\) \['frequency', 'monetary_net'\]"):
        rulesets.rfm_cuts(df, RfmConfig())


CUSTOMERS = [
    # customer, is_business, employees, industry
    ("c1", True, 5, "retail"),  # spend 50: Small
    ("c2", True, 2000, "health"),  # spend 5: not Strategic; health with 10+ staff: Public sector
    ("c3", True, 60, "retail"),  # 60 employees: Medium
    ("c4", False, None, None),  # not an account
    ("c5", True, None, None),  # spend 35, no firmographics: Small
    ("c6", True, 10, "education"),  # education with 10+ employees: Public sector
    ("cx", True, 300, "retail"),  # no features (no events): spend 0, 300 employees: Large
]


def test_b2b_tiers_by_spend_and_firmographics(spark, features):
    customers = spark.createDataFrame(
        CUSTOMERS, "customer_id string, is_business boolean, employee_count int, industry string"
    )
    cfg = B2bConfig(
        tiers=(
            B2bTier("Strategic", min_spend=48.0, min_employees=1000),
            B2bTier("Key", min_spend=49.0),
            B2bTier("Public sector", industries=("Education", "health"), min_employees=10),
            B2bTier("Large", min_employees=250),
            B2bTier("Medium", min_employees=50),
            B2bTier("Small"),
        )
    )
    # monetary_365d is half of monetary_total: c1 50, c2 5, c3 30, c5 35, c6 10.
    tiers = {
        r["customer_id"]: r["segment_name"]
        for r in rulesets.b2b_tiers(features, customers, cfg).collect()
    }
    assert tiers == {
        "c1": "Key",
        "c2": "Public sector",
        "c3": "Medium",
        "c5": "Small",
        "c6": "Public sector",
        "cx": "Large",
    }


def test_b2b_names_a_missing_dimension_column(spark, features):
    customers = spark.createDataFrame([("c1", True)], "customer_id string, is_business boolean")
    with pytest.raises(InputError, match=r"b2b.employees_column 'employee_count' is not a column"):
        rulesets.b2b_tiers(features, customers, B2bConfig())


def test_b2b_last_tier_must_be_a_catch_all():
    with pytest.raises(
        ConfigError, match=r"b2b.tiers: the last tier \(Big\) must have no criteria"
    ):
        load_config(
            ROOT / "conf" / "base.yaml", overrides=["b2b.tiers=[{name: Big, min_spend: 1}]"]
        )


def test_sensitive_attributes_are_never_clustering_features():
    with pytest.raises(ConfigError, match=r"training.features \['age'\] are listed in explain"):
        load_config(
            ROOT / "conf" / "base.yaml",
            overrides=["training.features=[recency_days, age]"],
        )
