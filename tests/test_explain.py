"""Decision-tree rules and segment composition on small inline data with known answers."""

from __future__ import annotations

import pytest

from segmentation.errors import InputError
from segmentation.explain import composition
from segmentation.explain import rules as explain


def test_rules_recover_known_thresholds(spark):
    # Segment 7: x <= 10; segment 9: x > 10 and y > 5; segment 8: x > 10 and y <= 5.
    rows = []
    for i in range(400):
        x, y = (i % 20) + 0.5, (i // 20) % 10 + 0.5
        seg = 7 if x <= 10 else (9 if y > 5 else 8)
        rows.append((f"c{i}", x, y, seg))
    df = spark.createDataFrame(rows, "customer_id string, x double, y double, segment_id int")
    rules = explain.explain_with_rules(df, ["x", "y"], [7, 8, 9], max_depth=3, seed=1)
    assert rules.fidelity == 1.0
    assert rules.segment_fidelity == {7: 1.0, 8: 1.0, 9: 1.0}
    top = {sid: rules.top(sid, 1)[0] for sid in (7, 8, 9)}
    assert top[7].text() == "x <= 10.5" or top[7].text() == "x <= 10"
    assert {c.feature for c in top[9].conditions} == {"x", "y"}
    x_bound = next(c for c in top[9].conditions if c.feature == "x")
    y_bound = next(c for c in top[9].conditions if c.feature == "y")
    assert (x_bound.op, y_bound.op) == (">", ">")
    assert 10 <= x_bound.threshold < 11 and 5 <= y_bound.threshold < 6
    assert top[7].customers == 200 and top[7].precision == 1.0 and top[7].recall == 1.0
    assert sum(r.customers for rs in rules.rules.values() for r in rs) == 400
    assert rules.importances["x"] > rules.importances["y"] > 0
    assert sum(rules.importances.values()) == pytest.approx(1.0)


def test_rules_fidelity_is_below_one_when_a_shallow_tree_cannot_separate(spark):
    # Four bands of 50 along x: one split sends two bands each way, and each side can predict
    # only one of its two: 100 of 200 customers.
    rows = [(f"c{i}", float(i), 1.0 + i // 50) for i in range(200)]
    df = spark.createDataFrame(rows, "customer_id string, x double, segment_id double")
    df = df.selectExpr("customer_id", "x", "cast(segment_id as int) segment_id")
    rules = explain.explain_with_rules(df, ["x"], [1, 2, 3, 4], max_depth=1, seed=1)
    assert rules.fidelity == pytest.approx(0.5)
    assert rules.leaves == 2


def test_simplify_keeps_the_tightest_bound_per_feature():
    conds = [
        explain.Condition("a", "<=", 10.0),
        explain.Condition("b", ">", 1.0),
        explain.Condition("a", "<=", 5.0),
        explain.Condition("a", ">", 2.0),
        explain.Condition("b", ">", 3.0),
    ]
    text = " and ".join(c.text() for c in explain._simplify(conds))
    assert text == "a > 2 and a <= 5 and b > 3"


def test_format_threshold_is_readable():
    assert explain.format_threshold(118.33333) == "118"
    assert explain.format_threshold(0.52777) == "0.528"
    assert explain.format_threshold(22437.6) == "22,438"


def test_composition_shares_with_bins_missing_and_sensitive_flags(spark):
    assigned = spark.createDataFrame(
        [("a", 1), ("b", 1), ("c", 1), ("d", 2), ("e", 2), ("z", 2)],
        "customer_id string, segment_id int",
    )
    customers = spark.createDataFrame(
        [("a", 20, "F", "DE"), ("b", 30, "M", "DE"), ("c", 70, None, "FR"),
         ("d", 30, "F", "US"), ("e", None, "F", "US")],
        "customer_id string, age int, gender string, country string",
    )  # fmt: skip
    comp = composition.composition(
        assigned,
        customers,
        ["country", "os"],
        sensitive=["age", "gender"],
        bins={"age": [25, 65]},
        max_levels=2,
    )
    assert comp.attributes == ("country", "age", "gender")
    assert comp.sensitive == ("age", "gender")
    assert comp.missing == ("os",)
    got = {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6]) for r in comp.rows}
    # Segment 1: a (20, F, DE), b (30, M, DE), c (70, -, FR); segment 2: d (30, F, US),
    # e (-, F, US), z (not in the dimension: missing everywhere).
    assert got[(1, "age", "<25")] == (1, pytest.approx(1 / 3), pytest.approx(1 / 6), True)
    assert got[(1, "age", "25-65")] == (1, pytest.approx(1 / 3), pytest.approx(2 / 6), True)
    assert got[(1, "age", ">=65")] == (1, pytest.approx(1 / 3), pytest.approx(1 / 6), True)
    assert got[(2, "age", "(missing)")] == (2, pytest.approx(2 / 3), pytest.approx(2 / 6), True)
    assert got[(2, "gender", "F")] == (2, pytest.approx(2 / 3), pytest.approx(3 / 6), True)
    # max_levels=2 keeps the two most frequent countries (DE, US); FR is pooled as other,
    # and (missing) is always kept.
    assert got[(1, "country", "other")] == (1, pytest.approx(1 / 3), pytest.approx(1 / 6), False)
    assert got[(2, "country", "(missing)")][0] == 1
    assert {k[2] for k in got if k[1] == "country"} == {"DE", "US", "other", "(missing)"}
    for seg in (1, 2):
        for attr in comp.attributes:
            assert sum(v[1] for k, v in got.items() if k[:2] == (seg, attr)) == pytest.approx(1)
    assert comp.max_gap("gender") == pytest.approx(abs(2 / 3 - 3 / 6))


def test_composition_bins_numeric_attributes_without_edges_at_quartiles(spark):
    assigned = spark.createDataFrame(
        [(str(i), 1) for i in range(8)], "customer_id string, segment_id int"
    )
    customers = spark.createDataFrame(
        [(str(i), float(i)) for i in range(8)], "customer_id string, employees double"
    )
    comp = composition.composition(
        assigned, customers, ["employees"], sensitive=[], bins={}, max_levels=10
    )
    counts = {r[2]: r[3] for r in comp.rows}
    # Quartiles of 0..7 are 1, 3, 5: bins <1, 1-3, 3-5, >=5.
    assert counts == {"<1": 1, "1-3": 2, "3-5": 2, ">=5": 3}


def test_a_sensitive_model_feature_is_refused():
    composition.check_not_sensitive(["recency_days"], ["age"])
    with pytest.raises(InputError, match=r"\['Age'\] are sensitive"):
        composition.check_not_sensitive(["recency_days", "Age"], ["age", "gender"])
